//! Parked accounts on PostgreSQL ([`ParkingStore`], shared but for these): a chunk's parks
//! and used-up releases written with `UNNEST` and a data-modifying CTE, and each
//! subscription's latest period invoice found by one index lookup (`LATERAL`).

use super::*;

shared::parking::parking_store!(PgStore);

impl PgStore {
    /// Each subscription's latest period invoice: `subscription_id, total, period_start,
    /// period_end`.
    async fn previous_invoices(&self, subscriptions: &[&str]) -> Result<Vec<DbRow>> {
        // One index lookup per subscription (documents_subscription_invoices), one query.
        Ok(sqlx::query(
            "SELECT d.subscription_id, d.total, d.period_start, d.period_end \
             FROM UNNEST($1::text[]) AS s(id) CROSS JOIN LATERAL ( \
               SELECT subscription_id, total, period_start, period_end FROM documents \
               WHERE subscription_id = s.id AND kind = 'invoice' AND period_start IS NOT NULL \
               ORDER BY id DESC LIMIT 1) d",
        )
        .bind(subscriptions)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Park these accounts for `run`: rows upserted, events and audit rows written.
    async fn park(&self, run: RunId, parked: &Parks, now: DateTime<Utc>) -> Result<()> {
        let accounts: Vec<&str> = parked.iter().map(|(a, _)| a.as_str()).collect();
        let reasons: Vec<&str> = parked.iter().map(|(_, r)| r.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        for sql in [
            "INSERT INTO parked_accounts (account_id, reason, parked_at, run_id, status, released_at) \
             SELECT a, r, $3, $4, 'parked', NULL FROM UNNEST($1::text[], $2::text[]) AS u(a, r) \
             ON CONFLICT (account_id) DO UPDATE SET reason = EXCLUDED.reason, parked_at = EXCLUDED.parked_at, \
             run_id = EXCLUDED.run_id, status = 'parked', released_at = NULL",
            "INSERT INTO parked_events (account_id, run_id, reason, parked_at) \
             SELECT a, $4, r, $3 FROM UNNEST($1::text[], $2::text[]) AS u(a, r) \
             ON CONFLICT (run_id, account_id) DO NOTHING",
            "INSERT INTO audit_log (at, actor, action, account_id, details) \
             SELECT $3, 'billrun', 'account_parked', a, jsonb_build_object('run', $4::bigint, 'reason', r) \
             FROM UNNEST($1::text[], $2::text[]) AS u(a, r)",
        ] {
            sqlx::query(sql)
                .bind(&accounts)
                .bind(&reasons)
                .bind(now)
                .bind(run)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(())
    }

    /// Delete the released rows of these accounts, auditing each one deleted: one statement,
    /// the rows go and their audit rows are written together.
    async fn use_releases(&self, accounts: &[AccountId], now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "WITH gone AS (DELETE FROM parked_accounts WHERE status = 'released' AND account_id = ANY($1) \
             RETURNING account_id) \
             INSERT INTO audit_log (at, actor, action, account_id) \
             SELECT $2, 'billrun', 'account_release_used', account_id FROM gone",
        )
        .bind(ids(accounts.iter().map(|a| a.as_str())))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }
}
