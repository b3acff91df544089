//! Finance batches ([`FinanceStore`](crate::store::FinanceStore)): sealing a run's batch —
//! adopting what no batch reports yet, queueing its message — is the same statements on both
//! backends, after the backend's `lock_finance_batches` (a table lock on PostgreSQL, where
//! workers finish side by side; nothing on SQLite, whose write transaction is alone).

/// How many refunds, deletions and parks no finance batch has reported yet.
pub(crate) const UNREPORTED_EXTRAS: &str = "SELECT (SELECT COUNT(*) FROM balance_ledger WHERE reason = 'refund' AND finance_batch_id IS NULL) + \
     (SELECT COUNT(*) FROM accounts WHERE status = 'deleted' AND finance_batch_id IS NULL) + \
     (SELECT COUNT(*) FROM parked_events WHERE finance_batch_id IS NULL)";

/// How many documents wait for a batch: issued outside a run, or in a batch never sealed.
pub(crate) const UNREPORTED_DOCUMENTS: &str = "SELECT (SELECT COUNT(*) FROM documents WHERE finance_batch_id IS NULL) + \
     (SELECT COUNT(*) FROM finance_batches b \
      WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.finance_batch_id = b.id))";

/// The start of a query for refunds owed (`rows::refund_from_row` reads its rows); a
/// condition on `l` follows.
macro_rules! refunds_select {
    () => {
        "SELECT l.account_id, a.name, a.currency, l.amount FROM balance_ledger l \
         JOIN accounts a ON a.id = l.account_id WHERE l.reason = 'refund' AND "
    };
}
pub(crate) use refunds_select;

/// `impl FinanceStore for $store`.
macro_rules! finance_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl FinanceStore for $store {
            async fn create_finance_batch(&self, request: &BatchRequest<'_>) -> Result<Option<i64>> {
                let BatchRequest { run, as_of, recipient, now } = *request;
                use crate::store::shared::finance::{UNREPORTED_DOCUMENTS, UNREPORTED_EXTRAS};
                written(async {
                    let mut tx = self.write_tx().await?;
                    lock_finance_batches(&mut tx).await?;
                    // A run that issued nothing has no batch yet; it makes one only when there
                    // is something to report, so batch numbers stay consecutive.
                    let existing: Option<i64> =
                        sqlx::query_scalar("SELECT id FROM finance_batches WHERE run_id = $1")
                            .bind(run)
                            .fetch_optional(&mut *tx)
                            .await?;
                    let others: i64 = sqlx::query_scalar(UNREPORTED_EXTRAS)
                        .fetch_one(&mut *tx)
                        .await?;
                    if existing.is_none() && others == 0 {
                        let waiting: i64 = sqlx::query_scalar(UNREPORTED_DOCUMENTS)
                            .fetch_one(&mut *tx)
                            .await?;
                        if waiting == 0 {
                            return Ok(None);
                        }
                    }
                    let batch = match existing {
                        Some(b) => b,
                        None => run_batch(&mut tx, run, now).await?,
                    };
                    // Adopt what is not reported yet: documents issued outside a run, and those
                    // of batches never sealed (a run that died; or, with several workers, one
                    // still going — it seals whatever it issues after this).
                    sqlx::query(
                        "UPDATE documents SET finance_batch_id = $1 WHERE finance_batch_id IS NULL",
                    )
                    .bind(batch)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "UPDATE documents SET finance_batch_id = $1 WHERE finance_batch_id IN \
                         (SELECT b.id FROM finance_batches b WHERE b.id <> $1 \
                          AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.finance_batch_id = b.id))",
                    )
                    .bind(batch)
                    .execute(&mut *tx)
                    .await?;
                    // The batches emptied so are gone; a worker still running makes a new one
                    // for what it issues next.
                    sqlx::query(
                        "DELETE FROM finance_batches WHERE id <> $1 \
                         AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.finance_batch_id = finance_batches.id) \
                         AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.finance_batch_id = finance_batches.id)",
                    )
                    .bind(batch)
                    .execute(&mut *tx)
                    .await?;
                    let count: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM documents WHERE finance_batch_id = $1",
                    )
                    .bind(batch)
                    .fetch_one(&mut *tx)
                    .await?;
                    if count == 0 && others == 0 {
                        sqlx::query("DELETE FROM finance_batches WHERE id = $1")
                            .bind(batch)
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await?;
                        return Ok(None);
                    }
                    for sql in [
                        "UPDATE balance_ledger SET finance_batch_id = $1 WHERE reason = 'refund' AND finance_batch_id IS NULL",
                        "UPDATE accounts SET finance_batch_id = $1 WHERE status = 'deleted' AND finance_batch_id IS NULL",
                        "UPDATE parked_events SET finance_batch_id = $1 WHERE finance_batch_id IS NULL",
                    ] {
                        sqlx::query(sql).bind(batch).execute(&mut *tx).await?;
                    }
                    sqlx::query(
                        "INSERT INTO outbox (message_key, kind, finance_batch_id, recipient, subject, next_attempt_at, \
                         created_at) VALUES ($1, 'finance_batch', $2, $3, $4, $5, $5)",
                    )
                    .bind(crate::core::messages::finance_batch_key(batch))
                    .bind(batch)
                    .bind(recipient)
                    .bind(crate::core::messages::finance_batch_subject(
                        batch,
                        as_of,
                        count as u64,
                    ))
                    .bind(ts(now))
                    .execute(&mut *tx)
                    .await
                    .map_err(conflict_as(format!("finance batch of run {run}")))?;
                    tx.commit().await?;
                    Ok(Some(batch))
                })
                .await
            }

            async fn batch_extras(&self, batch: i64) -> Result<BatchExtras> {
                let query = sqlx::query(concat!(
                    crate::store::shared::finance::refunds_select!(),
                    "l.finance_batch_id = $1 ORDER BY l.id"
                ));
                let refunds = all(&self.pool, query.bind(batch), rows::refund_from_row).await?;
                let deleted_accounts = sqlx::query_scalar(
                    "SELECT id FROM accounts WHERE finance_batch_id = $1 ORDER BY id",
                )
                .bind(batch)
                .fetch_all(&self.pool)
                .await?;
                Ok(BatchExtras {
                    refunds,
                    deleted_accounts,
                    ..Default::default()
                })
            }
        }
    };
}
pub(crate) use finance_store;
