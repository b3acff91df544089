//! How PostgreSQL claims a close's work: one `INSERT … ON CONFLICT DO UPDATE` takes the next
//! due accounts nobody holds, walking `subscriptions_active_by_account` in order from where
//! this worker's last claim ended, whatever the statistics say (`ordered_walk_tx`).
//!
//! A worker that claims anything first registers in `workers` with a session of its own: a
//! connection outside the pool, held for the worker's life, on which it holds an advisory
//! lock under a random key. The lock lives exactly as long as that session, so when a
//! worker's process dies — on whatever host — its lock disappears from `pg_locks` at once
//! and its claims can be taken over (`gone_sessions`) instead of waiting out their lease.

use super::*;

/// Claim and read the next chunk while this one is written (see [`Pipelining`]).
const PIPELINING: Pipelining = Pipelining::ClaimAndReadNext;

shared::runs::run_store!(PgStore);

/// This worker's own session, on which it holds its advisory lock.
pub(super) struct WorkerSession {
    worker: String,
    connection: sqlx::PgConnection,
}

/// A registered worker whose advisory lock no session holds: gone.
const SESSION_GONE: &str = "NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory'      AND l.granted AND l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = w.session)";

impl PgStore {
    /// Of these workers, the registered ones whose session has ended.
    pub(super) async fn gone_sessions(&self, workers: &[String]) -> Result<BTreeSet<String>> {
        let gone: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT w.name FROM workers w WHERE w.name = ANY($1) AND {SESSION_GONE}"
        )))
        .bind(workers)
        .fetch_all(&self.pool)
        .await?;
        Ok(gone.into_iter().collect())
    }

    /// Make sure `worker` holds its advisory lock on a live session of its own and is
    /// registered under that lock's key; a session lost (a server restart, a cut) is
    /// replaced and the registration moved to the new key.
    pub(super) async fn register_worker(&self, worker: &str) -> Result<()> {
        use sqlx::{ConnectOptions, Connection};
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_mut()
            && s.worker == worker
            && s.connection.ping().await.is_ok()
        {
            return Ok(());
        }
        *session = None;
        let mut connection = self
            .options
            .connect()
            .await
            .map_err(|e| StoreError::Connect(crate::redact(&e.to_string())))?;
        // A random key in 1..2^62: positive, so pg_locks' (classid, objid) give it back.
        let key = {
            use std::hash::BuildHasher;
            let seed = std::collections::hash_map::RandomState::new()
                .hash_one((worker, std::time::SystemTime::now()));
            (seed >> 2).max(1) as i64
        };
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut connection)
            .await?;
        if !locked {
            return Err(StoreError::Conflict(format!(
                "worker session key {key} is taken; try again"
            )));
        }
        sqlx::query(
            "INSERT INTO workers (name, session, registered_at) VALUES ($1, $2, now())              ON CONFLICT (name) DO UPDATE SET session = EXCLUDED.session, registered_at = EXCLUDED.registered_at",
        )
        .bind(worker)
        .bind(key)
        .execute(&self.pool)
        .await?;
        // Workers that ended and hold nothing are forgotten.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM workers w WHERE w.name <> $1 AND {SESSION_GONE}              AND NOT EXISTS (SELECT 1 FROM close_claims c WHERE c.worker = w.name)              AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.claimed_by = w.name AND o.status = 'pending')"
        )))
        .bind(worker)
        .execute(&self.pool)
        .await?;
        *session = Some(WorkerSession {
            worker: worker.to_string(),
            connection,
        });
        Ok(())
    }

    /// The accounts claimed, in no particular order.
    async fn claim(&self, c: &AccountClaim<'_>) -> Result<Vec<String>> {
        self.register_worker(c.worker).await?;
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
        .bind(c.due.as_of)
        .bind(c.now)
        .bind(i64::from(c.due.limit))
        .bind(c.due.after_key())
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(ids)
    }

    /// Up to `limit` due accounts after `after`, in id order; the index walked in order like
    /// a claim.
    async fn due(&self, page: &DuePage<'_>) -> Result<Vec<String>> {
        let mut tx = self.ordered_walk_tx().await?;
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT account_id FROM subscriptions WHERE status = 'active' AND next_bill_date <= $1 \
             AND account_id > $2 ORDER BY account_id LIMIT $3",
        )
        .bind(page.as_of)
        .bind(page.after_key())
        .bind(i64::from(page.limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }
}
