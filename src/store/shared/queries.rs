//! Documents, balances and accounts as stored ([`QueryStore`](crate::store::QueryStore)):
//! the same queries on both backends, but for how a page of documents finds its lines (the
//! backend's `page_lines`) and how a list of document ids is bound (`id_in`).

/// The columns of `accounts` that [`AccountRow`](crate::store::rows::AccountRow) reads.
macro_rules! account_cols {
    () => {
        "id, name, email, currency, timezone, taxes, discount, status, balance, identity"
    };
}
pub(crate) use account_cols;

/// `all(pool, query, read)`: every row a query returns, each read by `read` — a function of
/// the backend module that expands this.
macro_rules! read_helpers {
    () => {
        pub(crate) async fn all<T>(
            pool: &sqlx::Pool<Db>,
            query: sqlx::query::Query<'_, Db, <Db as sqlx::Database>::Arguments>,
            read: impl Fn(&<Db as sqlx::Database>::Row) -> Result<T>,
        ) -> Result<Vec<T>> {
            query.fetch_all(pool).await?.iter().map(read).collect()
        }
    };
}
pub(crate) use read_helpers;

/// Which documents a query reads.
#[derive(Clone, Copy)]
pub(crate) enum DocFilter<'a> {
    All,
    Account(&'a str),
    Number(&'a str),
    Id(i64),
    /// Of the first batch, ids above the second, at most the third many.
    Batch(i64, i64, u32),
    /// The credit notes correcting an invoice.
    Corrects(&'a str),
    /// Issued on or after the first date and before the second, ids above the third, at most
    /// the fourth many.
    Issued(chrono::NaiveDate, chrono::NaiveDate, i64, u32),
    /// Ids above the first, at most the second many.
    Page(i64, u32),
    /// These ids.
    Ids(&'a [i64]),
}

/// `impl QueryStore for $store`, and its `fetch_documents`.
macro_rules! query_store {
    ($store:ty) => {
        impl $store {
            /// The documents a filter selects, in id order, each with its lines.
            async fn fetch_documents(&self, filter: DocFilter<'_>) -> Result<Vec<StoredDocument>> {
                let where_clause = |q: &mut QueryBuilder<Db>| match filter {
                    DocFilter::All => {}
                    DocFilter::Account(a) => {
                        q.push(" WHERE account_id = ").push_bind(a.to_string());
                    }
                    DocFilter::Number(n) => {
                        q.push(" WHERE number = ").push_bind(n.to_string());
                    }
                    DocFilter::Id(id) => {
                        q.push(" WHERE id = ").push_bind(id);
                    }
                    DocFilter::Batch(b, after, limit) => {
                        q.push(" WHERE finance_batch_id = ")
                            .push_bind(b)
                            .push(" AND id > ")
                            .push_bind(after)
                            .push(" ORDER BY id LIMIT ")
                            .push_bind(i64::from(limit));
                    }
                    DocFilter::Corrects(n) => {
                        q.push(" WHERE corrects = ").push_bind(n.to_string());
                    }
                    DocFilter::Issued(from, to, after, limit) => {
                        q.push(" WHERE issued_at >= ")
                            .push_bind(day(from))
                            .push(" AND issued_at < ")
                            .push_bind(day(to))
                            .push(" AND id > ")
                            .push_bind(after)
                            .push(" ORDER BY id LIMIT ")
                            .push_bind(i64::from(limit));
                    }
                    DocFilter::Ids(ids) => {
                        q.push(" WHERE id ");
                        id_in(q, ids);
                    }
                    DocFilter::Page(after, limit) => {
                        q.push(" WHERE id > ")
                            .push_bind(after)
                            .push(" ORDER BY id LIMIT ")
                            .push_bind(i64::from(limit));
                    }
                };
                let mut q = QueryBuilder::<Db>::new(
                    "SELECT id, number, doc_key, kind, account_id, subscription_id, finance_batch_id, issued_at, \
                     due_at, period_start, period_end, currency, subtotal, discount, tax, total, credit_applied, \
                     amount_due, customer, corrects, reason FROM documents",
                );
                where_clause(&mut q);
                let page = matches!(
                    filter,
                    DocFilter::Page(..) | DocFilter::Issued(..) | DocFilter::Batch(..)
                );
                if !page {
                    q.push(" ORDER BY id");
                }
                let rows = q.build().fetch_all(&self.pool).await?;

                let mut lq = QueryBuilder::<Db>::new(
                    "SELECT document_id, kind, description, amount, detail FROM document_lines WHERE document_id",
                );
                // Lines by the ids of the documents just read wherever those are few (a page,
                // or documents asked for by id) and the backend binds them (`page_lines`): a
                // join through `documents`, planned on statistics that undercount a table just
                // written, became a scan of every line per delivery batch.
                let few = page || matches!(filter, DocFilter::Ids(_) | DocFilter::Id(_));
                if !(few && page_lines(&mut lq, &rows)?) {
                    lq.push(" IN (SELECT id FROM documents");
                    where_clause(&mut lq);
                    lq.push(")");
                }
                lq.push(" ORDER BY document_id, position");
                let mut lines: BTreeMap<i64, Vec<Line>> = BTreeMap::new();
                for r in lq.build().fetch_all(&self.pool).await? {
                    let (document, line) = rows::line_from_row(&r)?;
                    lines.entry(document).or_default().push(line);
                }
                rows.iter()
                    .map(|r| rows::document_from_row(r, &mut lines))
                    .collect()
            }
        }

        #[async_trait::async_trait]
        impl QueryStore for $store {
            async fn accounts(&self, wanted: &[String]) -> Result<Vec<Account>> {
                if wanted.is_empty() {
                    return Ok(Vec::new());
                }
                let query = sqlx::query(concat!(
                    "SELECT ",
                    crate::store::shared::queries::account_cols!(),
                    " FROM accounts WHERE id ",
                    in_list!(1),
                    " ORDER BY id"
                ));
                let query = query.bind(ids(wanted.iter().map(String::as_str)));
                all(&self.pool, query, |r| rows::account_from_row(r).map(|(a, _)| a)).await
            }

            async fn document(&self, number: &str) -> Result<Option<StoredDocument>> {
                Ok(self.fetch_documents(DocFilter::Number(number)).await?.pop())
            }

            async fn document_by_id(&self, id: i64) -> Result<Option<StoredDocument>> {
                Ok(self.fetch_documents(DocFilter::Id(id)).await?.pop())
            }

            async fn documents_by_ids(&self, ids: &[i64]) -> Result<Vec<StoredDocument>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                self.fetch_documents(DocFilter::Ids(ids)).await
            }

            async fn available_licences(
                &self,
                subscriptions: &[&str],
            ) -> Result<BTreeMap<String, u32>> {
                if subscriptions.is_empty() {
                    return Ok(BTreeMap::new());
                }
                let query = sqlx::query(concat!(
                    "SELECT subscription_id, COUNT(*) AS n FROM licences \
                     WHERE status = 'available' AND subscription_id ",
                    in_list!(1),
                    " GROUP BY subscription_id"
                ));
                let query = query.bind(ids(subscriptions.iter().copied()));
                Ok(all(&self.pool, query, |r| {
                    Ok((r.text("subscription_id")?, r.int("n")? as u32))
                })
                .await?
                .into_iter()
                .collect())
            }

            async fn documents(&self, account: Option<&str>) -> Result<Vec<StoredDocument>> {
                self.fetch_documents(account.map_or(DocFilter::All, DocFilter::Account))
                    .await
            }

            async fn batch_documents(
                &self,
                batch: i64,
                after: i64,
                limit: u32,
            ) -> Result<Vec<StoredDocument>> {
                self.fetch_documents(DocFilter::Batch(batch, after, limit)).await
            }

            async fn audit_log(&self, account: Option<&str>) -> Result<Vec<AuditEntry>> {
                let query = sqlx::query(
                    "SELECT at, actor, action, account_id, subscription_id, details FROM audit_log \
                     WHERE CAST($1 AS TEXT) IS NULL OR account_id = $1 ORDER BY id",
                );
                all(&self.pool, query.bind(account), rows::audit_from_row).await
            }

            async fn credit_notes_against(&self, number: &str) -> Result<Vec<StoredDocument>> {
                self.fetch_documents(DocFilter::Corrects(number)).await
            }

            async fn documents_issued(
                &self,
                days: std::ops::Range<NaiveDate>,
                after: i64,
                limit: u32,
            ) -> Result<Vec<StoredDocument>> {
                self.fetch_documents(DocFilter::Issued(days.start, days.end, after, limit))
                    .await
            }

            async fn count_issued(&self, days: std::ops::Range<NaiveDate>) -> Result<u64> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM documents WHERE issued_at >= $1 AND issued_at < $2",
                )
                .bind(day(days.start))
                .bind(day(days.end))
                .fetch_one(&self.pool)
                .await?;
                Ok(n as u64)
            }

            async fn refunds_recorded(
                &self,
                days: std::ops::Range<NaiveDate>,
            ) -> Result<Vec<RefundOwed>> {
                let query = sqlx::query(concat!(
                    crate::store::shared::finance::refunds_select!(),
                    "l.at >= $1 AND l.at < $2 ORDER BY l.id"
                ));
                let query = query.bind(day(days.start)).bind(day(days.end));
                all(&self.pool, query, rows::refund_from_row).await
            }

            async fn documents_page(
                &self,
                after: i64,
                limit: u32,
            ) -> Result<Vec<StoredDocument>> {
                self.fetch_documents(DocFilter::Page(after, limit)).await
            }

            async fn balance(&self, account: &str) -> Result<Option<BalanceReport>> {
                let Some(row) = sqlx::query(concat!(
                    "SELECT ",
                    crate::store::shared::queries::account_cols!(),
                    " FROM accounts WHERE id = $1"
                ))
                .bind(account)
                .fetch_optional(&self.pool)
                .await?
                else {
                    return Ok(None);
                };
                let (account_row, balance) = rows::account_from_row(&row)?;
                let query = sqlx::query(
                    "SELECT l.at, l.amount, l.reason, d.number FROM balance_ledger l \
                     LEFT JOIN documents d ON d.id = l.document_id WHERE l.account_id = $1 ORDER BY l.id",
                );
                let entries = all(&self.pool, query.bind(account), rows::ledger_from_row).await?;
                Ok(Some(BalanceReport {
                    account: account_row,
                    balance,
                    entries,
                }))
            }

            async fn balances(&self) -> Result<Vec<(AccountId, Decimal)>> {
                let query = sqlx::query("SELECT id, balance FROM accounts ORDER BY id");
                all(&self.pool, query, |r| {
                    Ok((account_id(&r.text("id")?)?, r.money("balance")?))
                })
                .await
            }

            async fn outbox_holds(&self, now: DateTime<Utc>) -> Result<OutboxHolds> {
                // The review window as `outbox_waiting` counts it: never attempted, first
                // attempt still ahead.
                let r = sqlx::query(
                    "SELECT \
                       COUNT(*) FILTER (WHERE hold IS NULL AND attempts = 0 AND next_attempt_at > $1) AS review, \
                       COUNT(*) FILTER (WHERE hold = 'operator') AS operator, \
                       COUNT(*) FILTER (WHERE hold = 'withdrawn') AS withdrawn \
                     FROM outbox WHERE status = 'pending'",
                )
                .bind(ts(now))
                .fetch_one(&self.pool)
                .await?;
                let count = |col: &str| r.int(col).map(|n| n.max(0) as u64);
                Ok(OutboxHolds {
                    review: count("review")?,
                    operator: count("operator")?,
                    withdrawn: count("withdrawn")?,
                })
            }

            async fn parks_per_run(&self, first: RunId) -> Result<BTreeMap<RunId, u64>> {
                let query = sqlx::query(
                    "SELECT run_id, COUNT(*) AS parked FROM parked_events WHERE run_id >= $1 GROUP BY run_id",
                );
                let rows = all(&self.pool, query.bind(first), |r| {
                    Ok((r.int("run_id")?, r.int("parked")?.max(0) as u64))
                })
                .await?;
                Ok(rows.into_iter().collect())
            }
        }
    };
}
pub(crate) use query_store;
