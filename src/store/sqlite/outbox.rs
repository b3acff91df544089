//! The outbox on SQLite ([`OutboxStore`], shared).

use super::*;

shared::outbox::outbox_store!(SqliteStore);

impl SqliteStore {
    /// The depth metric as SQLite has always counted it: the messages due by the last
    /// representable time. Beware: that time is written `+262142-…`, which sorts before every
    /// stored `YYYY-…` timestamp, so this counts none and the metric reads 0 on SQLite.
    /// Counting `status = 'pending'` rows, as PostgreSQL does, would fix it; the split of
    /// the store into concerns changed no behaviour, so it is left for its own change.
    async fn pending_count(&self) -> Result<u64, StoreError> {
        let far = DateTime::<Utc>::MAX_UTC;
        Ok(self.due_outbox(far, u32::MAX).await?.len() as u64)
    }
}
