//! Runs and claims ([`RunStore`](crate::store::RunStore)). The run rows and releasing a
//! worker's claims are the same statements on both backends; how accounts are claimed and
//! walked in order is each backend's own `claim` and `due` (locking and planner hints differ).

/// `impl RunStore for $store`, over the backend's `claim`, `due` and `PIPELINING`.
macro_rules! run_store {
    ($store:ty) => {
        impl $store {
            /// Hold or release a run's customer emails (`sql` binds the run and now), with an
            /// audit row naming `actor`. An unknown run is an error, not zero messages.
            async fn mark_run_mail(
                &self,
                run: RunId,
                actor: &str,
                now: DateTime<Utc>,
                action: &str,
                sql: &'static str,
                binds_now: bool,
            ) -> Result<u64> {
                written(async {
                    let mut tx = self.write_tx().await?;
                    let known: Option<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE id = $1")
                        .bind(run)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if known.is_none() {
                        return Err(StoreError::Rejected(format!("no run {run}")).into());
                    }
                    let query = sqlx::query(sql).bind(run);
                    let query = if binds_now { query.bind(ts(now)) } else { query };
                    let done = query.execute(&mut *tx).await?;
                    let details = serde_json::json!({ "run": run, "messages": done.rows_affected() });
                    sqlx::query(
                        "INSERT INTO audit_log (at, actor, action, details) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(ts(now))
                    .bind(actor)
                    .bind(action)
                    .bind(json(&details))
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(done.rows_affected())
                })
                .await
            }
        }

        #[async_trait::async_trait]
        impl RunStore for $store {
            async fn hold_run(
                &self,
                run: RunId,
                actor: &str,
                now: DateTime<Utc>,
            ) -> Result<u64> {
                self.mark_run_mail(run, actor, now, "hold",
                    "UPDATE outbox SET hold = 'operator' WHERE status = 'pending' AND hold IS NULL \
                     AND kind = 'document' AND document_id IN (SELECT id FROM documents WHERE run_id = $1)",
                    false).await
            }

            async fn release_run(
                &self,
                run: RunId,
                actor: &str,
                now: DateTime<Utc>,
            ) -> Result<u64> {
                self.mark_run_mail(run, actor, now, "release",
                    "UPDATE outbox SET hold = NULL, next_attempt_at = $2 WHERE status = 'pending' \
                     AND kind = 'document' AND document_id IN (SELECT id FROM documents WHERE run_id = $1) \
                     AND (hold = 'operator' OR (hold IS NULL AND attempts = 0 AND next_attempt_at > $2))",
                    true).await
            }

            async fn runs(&self, now: DateTime<Utc>) -> Result<Vec<RunRecord>> {
                let query = sqlx::query(
                    "SELECT r.id, r.as_of, r.started_at, r.finished_at, r.status, r.documents, r.error, \
                     (SELECT b.id FROM finance_batches b WHERE b.run_id = r.id) AS batch, \
                     (SELECT COUNT(*) FROM outbox o JOIN documents d ON d.id = o.document_id \
                      WHERE d.run_id = r.id AND o.status = 'sent') AS sent, \
                     (SELECT COUNT(*) FROM outbox o JOIN documents d ON d.id = o.document_id \
                      WHERE d.run_id = r.id AND o.status = 'pending') AS waiting, \
                     (SELECT COUNT(*) FROM outbox o JOIN documents d ON d.id = o.document_id \
                      WHERE d.run_id = r.id AND o.status = 'pending' AND (o.hold = 'operator' \
                      OR (o.hold IS NULL AND o.attempts = 0 AND o.next_attempt_at > $1))) AS held \
                     , r.worker, r.abandoned_by FROM runs r ORDER BY r.id DESC",
                );
                let query = query.bind(ts(now));
                let mut runs = all(&self.pool, query, |r| {
                    Ok(RunRecord {
                        run: r.int("id")?,
                        as_of: r.day("as_of")?,
                        started_at: r.ts("started_at")?,
                        finished_at: r.opt_ts("finished_at")?,
                        status: r.text("status")?,
                        documents: r.int("documents")?,
                        finance_batch: r.opt_int("batch")?,
                        emails_sent: r.int("sent")?,
                        emails_waiting: r.int("waiting")?,
                        emails_held: r.int("held")?,
                        error: r.opt_text("error")?,
                        worker: r.opt_text("worker")?,
                        abandoned_by: r.opt_int("abandoned_by")?,
                    })
                })
                .await?;
                let running: Vec<String> = runs
                    .iter()
                    .filter(|r| r.status == "running")
                    .filter_map(|r| r.worker.clone())
                    .collect();
                let gone = self.sessions_gone(&running).await?;
                for r in runs.iter_mut() {
                    let abandoned = r.abandoned_by.is_some()
                        || (r.status == "running"
                            && r.worker
                                .as_ref()
                                .is_some_and(|w| crate::worker::is_gone(w, gone.contains(w))));
                    if abandoned {
                        r.status = "abandoned".into();
                    }
                }
                Ok(runs)
            }

            async fn running_runs(
                &self,
                except: Option<RunId>,
            ) -> Result<Vec<(RunId, Option<String>, bool)>> {
                let rows: Vec<(RunId, Option<String>)> = sqlx::query_as(
                    "SELECT id, worker FROM runs WHERE status = 'running' AND id <> $1 ORDER BY id",
                )
                .bind(except.unwrap_or(-1))
                .fetch_all(&self.pool)
                .await?;
                let workers: Vec<String> = rows.iter().filter_map(|(_, w)| w.clone()).collect();
                let gone = self.sessions_gone(&workers).await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, w)| {
                        let session_gone = w.as_ref().is_some_and(|w| gone.contains(w));
                        (id, w, session_gone)
                    })
                    .collect())
            }

            async fn abandon_run(
                &self,
                run: RunId,
                by: RunId,
                now: DateTime<Utc>,
            ) -> Result<()> {
                sqlx::query(
                    "UPDATE runs SET status = 'failed', finished_at = $1, abandoned_by = $3, \
                     error = 'abandoned: its worker died; a later run finished its work' \
                     WHERE id = $2 AND status = 'running'",
                )
                .bind(ts(now))
                .bind(run)
                .bind(by)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn claim_holders(&self, now: DateTime<Utc>) -> Result<Vec<ClaimHolder>> {
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                    "SELECT worker, CAST(SUM(accounts) AS BIGINT), CAST(SUM(messages) AS BIGINT) FROM ( \
                       SELECT worker, COUNT(*) AS accounts, 0 AS messages FROM close_claims \
                       WHERE claimed_until > $1 GROUP BY worker \
                       UNION ALL \
                       SELECT claimed_by, 0, COUNT(*) FROM outbox \
                       WHERE status = 'pending' AND claimed_until > $1 GROUP BY claimed_by \
                     ) h GROUP BY worker ORDER BY worker",
                )
                .bind(ts(now))
                .fetch_all(&self.pool)
                .await?;
                let workers: Vec<String> = rows.iter().map(|(w, _, _)| w.clone()).collect();
                let gone = self.sessions_gone(&workers).await?;
                let mut out = Vec::with_capacity(rows.len());
                for (worker, accounts, messages) in rows {
                    // The latest lease, read apart: MAX over a timestamp comes back as text
                    // on SQLite and as a timestamp on PostgreSQL; the row helpers read both.
                    let query = sqlx::query(
                        "SELECT MAX(until) AS until FROM ( \
                           SELECT claimed_until AS until FROM close_claims WHERE worker = $1 \
                           UNION ALL \
                           SELECT claimed_until FROM outbox WHERE claimed_by = $1 AND status = 'pending' \
                         ) l",
                    )
                    .bind(&worker);
                    let until = all(&self.pool, query, |r| r.opt_ts("until"))
                        .await?
                        .pop()
                        .flatten()
                        .unwrap_or(now);
                    out.push(ClaimHolder {
                        session_gone: gone.contains(&worker),
                        worker,
                        accounts: accounts as u64,
                        messages: messages as u64,
                        until,
                    });
                }
                Ok(out)
            }

            async fn take_over(&self, worker: &str) -> Result<(u64, u64)> {
                let mut tx = self.write_tx().await?;
                let accounts = sqlx::query("DELETE FROM close_claims WHERE worker = $1")
                    .bind(worker)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let messages = sqlx::query(
                    "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL \
                     WHERE claimed_by = $1 AND status = 'pending'",
                )
                .bind(worker)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok((accounts, messages))
            }

            async fn sessions_gone(&self, workers: &[String]) -> Result<BTreeSet<String>> {
                if workers.is_empty() {
                    return Ok(BTreeSet::new());
                }
                self.gone_sessions(workers).await
            }

            async fn begin_run(
                &self,
                as_of: NaiveDate,
                now: DateTime<Utc>,
                worker: &str,
            ) -> Result<RunId> {
                Ok(sqlx::query_scalar(
                    "INSERT INTO runs (as_of, started_at, worker) VALUES ($1, $2, $3) RETURNING id",
                )
                .bind(day(as_of))
                .bind(ts(now))
                .bind(worker)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn finish_run(&self, run: RunId, end: &RunEnd<'_>) -> Result<()> {
                let RunEnd {
                    at: now,
                    documents,
                    error,
                } = *end;
                sqlx::query(
                    "UPDATE runs SET finished_at = $1, status = $2, documents = $3, error = $4 WHERE id = $5",
                )
                .bind(ts(now))
                .bind(if error.is_some() {
                    "failed"
                } else {
                    "completed"
                })
                .bind(documents as i64)
                .bind(error)
                .bind(run)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn claim_accounts(&self, claim: &AccountClaim<'_>) -> Result<Vec<AccountId>> {
                let mut ids = rows::account_ids(&self.claim(claim).await?)?;
                ids.sort();
                Ok(ids)
            }

            async fn release_claims(&self, worker: &str) -> Result<()> {
                sqlx::query("DELETE FROM close_claims WHERE worker = $1")
                    .bind(worker)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn due_accounts(&self, page: &DuePage<'_>) -> Result<Vec<AccountId>> {
                rows::account_ids(&self.due(page).await?)
            }

            async fn count_due(&self, as_of: NaiveDate) -> Result<u64> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(DISTINCT account_id) FROM subscriptions \
                     WHERE status = 'active' AND next_bill_date <= $1",
                )
                .bind(day(as_of))
                .fetch_one(&self.pool)
                .await?;
                Ok(n as u64)
            }

            fn pipelining(&self) -> Pipelining {
                PIPELINING
            }
        }
    };
}
pub(crate) use run_store;
