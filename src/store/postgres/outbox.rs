//! The outbox on PostgreSQL ([`OutboxStore`], shared): several workers drain it at once,
//! each claim skipping the rows another is claiming (`skip_locked!`).

use super::*;

shared::outbox::outbox_store!(PgStore);

impl PgStore {
    /// Counted in the database rather than by loading every pending message.
    async fn pending_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }
}
