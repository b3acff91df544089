//! Finance batches on PostgreSQL ([`FinanceStore`], shared): workers finishing side by side
//! take turns sealing.

use super::*;

shared::finance::finance_store!(PgStore);

/// Two workers finishing together would otherwise both count the same unreported documents
/// and one would queue a batch message for documents the other took. The lock conflicts only
/// with itself and with writes to finance_batches; each statement after it sees everything
/// committed before it was granted.
async fn lock_finance_batches(conn: &mut Conn) -> Result<(), Fail> {
    sqlx::query("LOCK TABLE finance_batches IN SHARE ROW EXCLUSIVE MODE")
        .execute(conn)
        .await?;
    Ok(())
}
