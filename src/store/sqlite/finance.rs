//! Finance batches on SQLite ([`FinanceStore`], shared): the write transaction that seals a
//! batch is the only writer, so nothing more is locked.

use super::*;

shared::finance::finance_store!(SqliteStore);

async fn lock_finance_batches(_: &mut Conn) -> Result<(), Fail> {
    Ok(())
}
