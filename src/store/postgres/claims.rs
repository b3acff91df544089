//! How PostgreSQL claims a close's work: one `INSERT … ON CONFLICT DO UPDATE` takes the next
//! due accounts nobody holds, walking `subscriptions_active_by_account` in order from where
//! this worker's last claim ended, whatever the statistics say (`ordered_walk_tx`).

use super::*;

/// Claim and read the next chunk while this one is written (see [`Pipelining`]).
const PIPELINING: Pipelining = Pipelining::ClaimAndReadNext;

shared::runs::run_store!(PgStore);

impl PgStore {
    /// The accounts claimed, in no particular order.
    async fn claim(&self, c: &Claim<'_>) -> Result<Vec<String>, StoreError> {
        // One statement does the claim. A claim another worker is inserting at the same
        // moment makes this insert wait for it; once it commits, the DO UPDATE's WHERE sees
        // its live lease and leaves the row alone, so no account is handed out twice.
        // The claim must walk subscriptions_active_by_account in order from `after` and stop
        // after `limit` accounts. Statistics that undercount due subscriptions (a table just
        // loaded, or just renewed, before autovacuum analyzed it) make the planner read every
        // due subscription past `after` into a bitmap and sort them — per chunk, so a close
        // would grow with the square of its size. Ruled out for this transaction only.
        let mut tx = self.ordered_walk_tx().await.map_err(classify)?;
        let ids: Vec<String> = sqlx::query_scalar(
            "INSERT INTO close_claims (account_id, worker, claimed_until) \
             SELECT DISTINCT s.account_id, $1, $2 FROM subscriptions s \
             WHERE s.status = 'active' AND s.account_id > $6 AND s.next_bill_date <= $3 \
             AND NOT EXISTS (SELECT 1 FROM close_claims c WHERE c.account_id = s.account_id AND c.claimed_until > $4) \
             ORDER BY s.account_id LIMIT $5 \
             ON CONFLICT (account_id) DO UPDATE SET worker = EXCLUDED.worker, claimed_until = EXCLUDED.claimed_until \
             WHERE close_claims.claimed_until <= $4 \
             RETURNING account_id",
        )
        .bind(c.worker)
        .bind(c.lease_until)
        .bind(c.as_of)
        .bind(c.now)
        .bind(c.limit)
        .bind(c.after)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(ids)
    }

    /// Up to `limit` due accounts after `after`, in id order; the index walked in order like
    /// a claim.
    async fn due(
        &self,
        as_of: NaiveDate,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.ordered_walk_tx().await?;
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT account_id FROM subscriptions WHERE status = 'active' AND next_bill_date <= $1 \
             AND account_id > $2 ORDER BY account_id LIMIT $3",
        )
        .bind(as_of)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }
}
