//! The outbox on SQLite ([`OutboxStore`], shared).

use super::*;

shared::outbox::outbox_store!(SqliteStore);

impl SqliteStore {
    /// The depth metric as the store always counted it on SQLite: the messages due by the
    /// last representable time. That time is written `+262142-…`, which sorts before every
    /// stored `YYYY-…` timestamp, so this counts none (see the report of the store split).
    async fn pending_count(&self) -> Result<u64, StoreError> {
        let far = DateTime::<Utc>::MAX_UTC;
        Ok(self.due_outbox(far, u32::MAX).await?.len() as u64)
    }
}
