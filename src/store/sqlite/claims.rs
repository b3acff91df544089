//! How SQLite claims a close's work: the due accounts found and their claims written inside
//! the one write transaction, so nobody can take one in between; the active subscriptions
//! walked in account order through `subscriptions_active_by_account` (`INDEXED BY`: without
//! statistics SQLite would rather sort every due one).

use super::*;

/// Claim the next chunk first, then read it while this one is written (see [`Pipelining`]).
const PIPELINING: Pipelining = Pipelining::ReadNext;

shared::runs::run_store!(SqliteStore);

impl SqliteStore {
    /// SQLite has no sessions to watch: a dead worker is told by its process (see
    /// `crate::worker`), never by the database.
    pub(super) async fn gone_sessions(&self, _workers: &[String]) -> Result<BTreeSet<String>> {
        Ok(BTreeSet::new())
    }

    /// Nothing to register (see `gone_sessions`).
    pub(super) async fn register_worker(&self, _worker: &str) -> Result<()> {
        Ok(())
    }

    /// The accounts claimed, in no particular order.
    async fn claim(&self, c: &AccountClaim<'_>) -> Result<Vec<String>> {
        self.register_worker(c.worker).await?;
        let mut tx = self.write_tx().await?;
        // Walk the active subscriptions in account order from `after` (see the index's
        // migration), rather than sort every due one for each chunk. The accounts come back
        // as one JSON array rather than a RETURNING row each; the claims are then written in
        // the same write transaction, so nobody can take one in between.
        let found: String = sqlx::query_scalar(
            "SELECT json_group_array(account_id) FROM ( \
               SELECT DISTINCT s.account_id FROM subscriptions s INDEXED BY subscriptions_active_by_account \
               WHERE s.status = 'active' AND s.account_id > $1 AND s.next_bill_date <= $2 \
               AND NOT EXISTS (SELECT 1 FROM close_claims c WHERE c.account_id = s.account_id AND c.claimed_until > $3) \
               ORDER BY s.account_id LIMIT $4)",
        )
        .bind(c.due.after_key())
        .bind(day(c.due.as_of))
        .bind(ts(c.now))
        .bind(i64::from(c.due.limit))
        .fetch_one(&mut *tx)
        .await?;
        let ids: Vec<String> = json_rows("claimed accounts", &found)?;
        if !ids.is_empty() {
            // An account found has no claim or an expired one: take it over.
            sqlx::query(
                "INSERT INTO close_claims (account_id, worker, claimed_until) \
                 SELECT value, $2, $3 FROM json_each($1) WHERE true \
                 ON CONFLICT (account_id) DO UPDATE SET worker = excluded.worker, claimed_until = excluded.claimed_until",
            )
            .bind(&found)
            .bind(c.worker)
            .bind(ts(c.lease_until))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Up to `limit` due accounts after `after`, in id order.
    async fn due(&self, page: &DuePage<'_>) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT account_id FROM subscriptions INDEXED BY subscriptions_active_by_account \
             WHERE status = 'active' AND next_bill_date <= $1 AND account_id > $2 ORDER BY account_id LIMIT $3",
        )
        .bind(day(page.as_of))
        .bind(page.after_key())
        .bind(i64::from(page.limit))
        .fetch_all(&self.pool)
        .await?)
    }
}
