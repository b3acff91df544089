//! Parked accounts on SQLite ([`ParkingStore`], shared but for these): a chunk's parks
//! written as multi-row `VALUES`, the releases it used up deleted and audited, and each
//! subscription's latest period invoice found by `MAX(id)` per subscription.

use super::*;

shared::parking::parking_store!(SqliteStore);

impl SqliteStore {
    /// Each subscription's latest period invoice: `subscription_id, total, period_start,
    /// period_end`.
    async fn previous_invoices(&self, subscriptions: &[&str]) -> Result<Vec<DbRow>> {
        // One bound parameter whatever the chunk size (json_each), and the partial index
        // documents_subscription_invoices makes each MAX(id) an index lookup.
        Ok(sqlx::query(concat!(
            "SELECT subscription_id, total, period_start, period_end FROM documents WHERE id IN ( \
               SELECT MAX(id) FROM documents WHERE kind = 'invoice' AND period_start IS NOT NULL \
               AND subscription_id ",
            in_list!(1),
            " GROUP BY subscription_id)"
        ))
        .bind(ids(subscriptions.iter().copied()))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Park these accounts for `run`: rows upserted, events and audit rows written.
    async fn park(&self, run: RunId, parked: &Parks, now: DateTime<Utc>) -> Result<()> {
        let now = ts(now);
        let mut tx = self.write_tx().await?;
        let mut q = QueryBuilder::<Db>::new(
            "INSERT INTO parked_accounts (account_id, reason, parked_at, run_id, status, released_at) ",
        );
        q.push_values(parked, |mut b, (account, reason)| {
            b.push_bind(account.as_str())
                .push_bind(reason.as_str())
                .push_bind(&now)
                .push_bind(run)
                .push("'parked'")
                .push("NULL");
        });
        q.push(
            " ON CONFLICT (account_id) DO UPDATE SET reason = excluded.reason, parked_at = excluded.parked_at, \
             run_id = excluded.run_id, status = 'parked', released_at = NULL",
        );
        q.build().execute(&mut *tx).await?;
        let mut q = QueryBuilder::<Db>::new(
            "INSERT INTO parked_events (account_id, run_id, reason, parked_at) ",
        );
        q.push_values(parked, |mut b, (account, reason)| {
            b.push_bind(account.as_str())
                .push_bind(run)
                .push_bind(reason.as_str())
                .push_bind(&now);
        });
        q.push(" ON CONFLICT (run_id, account_id) DO NOTHING");
        q.build().execute(&mut *tx).await?;
        let mut q = QueryBuilder::<Db>::new(
            "INSERT INTO audit_log (at, actor, action, account_id, details) ",
        );
        q.push_values(parked, |mut b, (account, reason)| {
            b.push_bind(&now)
                .push("'billrun'")
                .push("'account_parked'")
                .push_bind(account.as_str())
                .push_bind(json(&serde_json::json!({"run": run, "reason": reason})));
        });
        q.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Delete the released rows of these accounts, auditing each one deleted.
    async fn use_releases(&self, accounts: &[AccountId], now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let gone: Vec<String> = sqlx::query_scalar(concat!(
            "DELETE FROM parked_accounts WHERE status = 'released' AND account_id ",
            in_list!(1),
            " RETURNING account_id"
        ))
        .bind(ids(accounts.iter().map(|a| a.as_str())))
        .fetch_all(&mut *tx)
        .await?;
        if !gone.is_empty() {
            let now = ts(now);
            let mut q =
                QueryBuilder::<Db>::new("INSERT INTO audit_log (at, actor, action, account_id) ");
            q.push_values(&gone, |mut b, account| {
                b.push_bind(&now)
                    .push("'billrun'")
                    .push("'account_release_used'")
                    .push_bind(account);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
