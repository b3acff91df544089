//! The outbox ([`OutboxStore`](crate::store::OutboxStore)): the same statements on both
//! backends. A claim walks the outbox in id order from where the pass's last claim ended
//! (`outbox_walk!()`: the primary key, never a sort of everything pending) and takes the
//! backend's `skip_locked!()` (PostgreSQL skips rows another worker is claiming; SQLite's
//! write lock already excludes them). Messages are marked sent in bulk, one statement per
//! group of ids (`in_list!`), and failed one at a time (each its own error and backoff).

/// `impl OutboxStore for $store`.
macro_rules! outbox_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl OutboxStore for $store {
            async fn due_outbox(
                &self,
                now: DateTime<Utc>,
                limit: u32,
            ) -> Result<Vec<OutboxEntry>> {
                let query = sqlx::query(
                    "SELECT id, message_key, kind, document_id, finance_batch_id, recipient, subject, attempts, status \
                     FROM outbox WHERE status = 'pending' AND hold IS NULL AND next_attempt_at <= $1 ORDER BY id LIMIT $2",
                );
                let query = query.bind(ts(now)).bind(i64::from(limit));
                all(&self.pool, query, rows::outbox_from_row).await
            }

            async fn claim_outbox(&self, c: &OutboxClaim<'_>) -> Result<Vec<OutboxEntry>> {
                // The usual queue pattern: an expired claim (a crashed sender) is claimable
                // again. `due_before` may reach past now (`send --retry-now`) for messages that
                // failed before, never for those still in their review window (no attempt
                // yet) or held.
                self.register_worker(c.worker).await?;
                // An ordered walk of the primary key from `after`, whatever the statistics
                // say: planned on a count taken before the close filled the outbox, a claim
                // read every pending message into a bitmap and sorted it, per batch.
                let mut tx = self.ordered_walk_tx().await?;
                let rows = sqlx::query(concat!(
                    "UPDATE outbox SET claimed_by = $1, claimed_until = $2 WHERE id IN ( \
                       SELECT id FROM ",
                    outbox_walk!(),
                    " WHERE id > $6 AND status = 'pending' AND hold IS NULL \
                       AND (next_attempt_at <= $4 OR (attempts > 0 AND next_attempt_at <= $3)) \
                       AND (claimed_until IS NULL OR claimed_until <= $4) ORDER BY id LIMIT $5",
                    skip_locked!(),
                    ") RETURNING id, message_key, kind, document_id, finance_batch_id, recipient, subject, attempts, status",
                ))
                .bind(c.worker)
                .bind(ts(c.lease_until))
                .bind(ts(c.due_before))
                .bind(ts(c.now))
                .bind(i64::from(c.limit))
                .bind(c.after)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                let mut out = rows
                    .iter()
                    .map(rows::outbox_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                out.sort_by_key(|e| e.id);
                Ok(out)
            }

            async fn renew_outbox_claims(
                &self,
                worker: &str,
                ids: &[i64],
                lease_until: DateTime<Utc>,
            ) -> Result<Vec<i64>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut held: Vec<i64> = sqlx::query_scalar(concat!(
                    "UPDATE outbox SET claimed_until = $1 WHERE claimed_by = $2 AND status = 'pending' AND id ",
                    in_list!(3),
                    " RETURNING id"
                ))
                .bind(ts(lease_until))
                .bind(worker)
                .bind(row_ids(ids))
                .fetch_all(&self.pool)
                .await?;
                held.sort_unstable();
                Ok(held)
            }

            async fn outbox(&self) -> Result<Vec<OutboxEntry>> {
                let query = sqlx::query(
                    "SELECT id, message_key, kind, document_id, finance_batch_id, recipient, subject, attempts, status \
                     FROM outbox ORDER BY id",
                );
                all(&self.pool, query, rows::outbox_from_row).await
            }

            async fn mark_sent(&self, ids: &[i64], now: DateTime<Utc>) -> Result<()> {
                if ids.is_empty() {
                    return Ok(());
                }
                sqlx::query(concat!(
                    "UPDATE outbox SET status = 'sent', sent_at = $1, attempts = attempts + 1, last_error = NULL, \
                     claimed_by = NULL, claimed_until = NULL WHERE id ",
                    in_list!(2)
                ))
                .bind(ts(now))
                .bind(row_ids(ids))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn outbox_waiting(&self, now: DateTime<Utc>) -> Result<OutboxWaiting> {
                let r = sqlx::query(
                    "SELECT \
                       COUNT(*) FILTER (WHERE hold IS NULL AND attempts > 0 AND next_attempt_at > $1 \
                         AND (claimed_until IS NULL OR claimed_until <= $1)) AS in_backoff, \
                       MIN(next_attempt_at) FILTER (WHERE hold IS NULL AND attempts > 0 AND next_attempt_at > $1 \
                         AND (claimed_until IS NULL OR claimed_until <= $1)) AS next_attempt, \
                       COUNT(*) FILTER (WHERE claimed_until > $1) AS claimed, \
                       MAX(claimed_until) FILTER (WHERE claimed_until > $1) AS claimed_until, \
                       COUNT(*) FILTER (WHERE hold = 'operator' OR (hold IS NULL AND attempts = 0 AND next_attempt_at > $1)) \
                         AS held, \
                       MAX(next_attempt_at) FILTER (WHERE hold IS NULL AND attempts = 0 AND next_attempt_at > $1) \
                         AS review_until \
                     FROM outbox WHERE status = 'pending'",
                )
                .bind(ts(now))
                .fetch_one(&self.pool)
                .await?;
                Ok(OutboxWaiting {
                    in_backoff: r.int("in_backoff")? as u64,
                    next_attempt: r.opt_ts("next_attempt")?,
                    claimed: r.int("claimed")? as u64,
                    claimed_until: r.opt_ts("claimed_until")?,
                    held: r.int("held")? as u64,
                    review_until: r.opt_ts("review_until")?,
                })
            }

            async fn outbox_depth(&self) -> Result<u64> {
                // Counted in the database rather than by loading every pending message.
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n as u64)
            }

            async fn mark_failed(
                &self,
                id: i64,
                error: &str,
                next_attempt: DateTime<Utc>,
            ) -> Result<()> {
                sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, \
                     claimed_by = NULL, claimed_until = NULL WHERE id = $3",
                )
                .bind(crate::redact(error))
                .bind(ts(next_attempt))
                .bind(id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }
    };
}
pub(crate) use outbox_store;
