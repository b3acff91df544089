//! The write steps several concerns share (a close's chunk, a change, a licence operation, a
//! finance batch, a deletion, an import), as free functions a backend expands with
//! `write_helpers!()`: numbering, the run's finance batch, issuing documents (in a chunk or
//! outside a run), guarded subscription updates, moving balances, replacing items, applying queued changes, a change's
//! pending items, new licences, releasing a chunk's claims, audit rows, purging module tables.
//! Each takes the open transaction's connection and leaves the bulk statements to the
//! backend's own `write_documents`, `insert_items`, `move_balances` and `mark_applied`.

use crate::core::billing::AccountClose;
use crate::core::document::{DocumentKind, DraftDocument, Line};
use crate::store::RunId;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

/// An account balance to move: (account, from, to).
pub(crate) type Move<'a> = (&'a str, Decimal, Decimal);

/// A queued change applied by a chunk: (change, the period start it took effect at).
pub(crate) type Applied = (i64, Option<NaiveDate>);

/// Documents to write, numbered, with where they belong (a backend's `write_documents`).
pub(crate) struct Issue<'a> {
    pub docs: &'a [&'a DraftDocument],
    /// One per document, in the same order.
    pub numbers: &'a [String],
    pub run: Option<RunId>,
    /// The run's finance batch, for documents issued by a run.
    pub batch: Option<i64>,
    pub now: DateTime<Utc>,
    /// When the customer emails may go: `now`, or the end of a run's review window.
    pub mail_at: DateTime<Utc>,
}

impl<'a> Issue<'a> {
    /// (document id, position, line) of every line, in order.
    pub fn lines(&self, ids: &[i64]) -> Vec<(i64, i64, &'a Line)> {
        self.docs
            .iter()
            .zip(ids)
            .flat_map(|(d, id)| {
                d.lines
                    .iter()
                    .enumerate()
                    .map(move |(pos, l)| (*id, pos as i64, l))
            })
            .collect()
    }

    /// The ledger entries the documents make: (document, id, amount, reason). An invoice
    /// takes the credit it applied; a credit note adds its total.
    pub fn ledger(&self, ids: &[i64]) -> Vec<(&'a DraftDocument, i64, Decimal, &'static str)> {
        self.docs
            .iter()
            .zip(ids)
            .filter_map(|(d, id)| match d.kind {
                DocumentKind::Invoice if !d.credit_applied.is_zero() => {
                    Some((*d, *id, -d.credit_applied, "credit_applied"))
                }
                DocumentKind::CreditNote => Some((*d, *id, -d.total, "credit_note")),
                _ => None,
            })
            .collect()
    }

    /// (pending item, document id) of each pending item a document consumes.
    pub fn consumed(&self, ids: &[i64]) -> Vec<(i64, i64)> {
        self.docs
            .iter()
            .zip(ids)
            .flat_map(|(d, id)| d.consumes_pending.iter().map(move |p| (*p, *id)))
            .collect()
    }
}

/// (account, canceled at, delete after, refund) of each account a chunk canceled: its data
/// may be deleted `retention_days` after.
pub(crate) fn cancellations(
    closes: &[AccountClose],
    retention_days: u32,
) -> Vec<(&str, NaiveDate, NaiveDate, Decimal)> {
    closes
        .iter()
        .filter_map(|c| {
            let at = c.canceled_at?;
            let delete_after = at + chrono::Days::new(u64::from(retention_days));
            Some((c.account.as_str(), at, delete_after, c.refund))
        })
        .collect()
}

/// The write helpers, as free functions of the backend module that expands this.
macro_rules! write_helpers {
    () => {
        /// Reserve one block of numbers per series and year for these documents and number
        /// them, in order. Series are taken in key order, so two issuers lock them in the same
        /// order.
        async fn number_documents(
            conn: &mut Conn,
            numbering: &Numbering,
            docs: &[&DraftDocument],
        ) -> Result<Vec<String>, Fail> {
            let mut wanted: BTreeMap<(String, i32), i64> = BTreeMap::new();
            for doc in docs {
                *wanted
                    .entry((numbering.prefix(doc.kind).to_string(), doc.issued_at.year()))
                    .or_default() += 1;
            }
            let mut next = BTreeMap::new();
            for ((prefix, year), n) in wanted {
                let last: i64 = sqlx::query_scalar(
                    "INSERT INTO number_series AS ns (prefix, year, last_number) VALUES ($1, $2, $3) \
                     ON CONFLICT (prefix, year) DO UPDATE SET last_number = ns.last_number + EXCLUDED.last_number \
                     RETURNING last_number",
                )
                .bind(&prefix)
                .bind(year)
                .bind(n)
                .fetch_one(&mut *conn)
                .await?;
                next.insert((prefix, year), last - n + 1);
            }
            let mut numbers = Vec::with_capacity(docs.len());
            for doc in docs {
                let key = (numbering.prefix(doc.kind).to_string(), doc.issued_at.year());
                let n = next.get_mut(&key).ok_or_else(|| {
                    StoreError::Database("no number reserved for a document".into())
                })?;
                numbers.push(Numbering::format(&key.0, key.1, *n));
                *n += 1;
            }
            Ok(numbers)
        }

        /// The finance batch of a run, made by the run's first issuing chunk (inside that
        /// chunk's transaction, so a chunk that rolls back leaves no empty batch). A run's
        /// documents carry their batch from the start: sealing the batch never rewrites them.
        pub(crate) async fn run_batch(
            conn: &mut Conn,
            run: RunId,
            now: DateTime<Utc>,
        ) -> Result<i64, Fail> {
            sqlx::query(
                "INSERT INTO finance_batches (run_id, created_at) VALUES ($1, $2) ON CONFLICT (run_id) DO NOTHING",
            )
            .bind(run)
            .bind(ts(now))
            .execute(&mut *conn)
            .await?;
            Ok(
                sqlx::query_scalar("SELECT id FROM finance_batches WHERE run_id = $1")
                    .bind(run)
                    .fetch_one(&mut *conn)
                    .await?,
            )
        }

        /// Number and insert documents with their lines, ledger entries, consumed pending
        /// items and one outbox message each (`write_documents`: a handful of statements
        /// whatever the count). Documents listed in id order come out in issue order.
        pub(crate) async fn insert_documents(
            conn: &mut Conn,
            numbering: &Numbering,
            run: Option<RunId>,
            docs: &[&DraftDocument],
            (now, mail_at): (DateTime<Utc>, DateTime<Utc>),
        ) -> Result<Vec<StoredDocument>, Fail> {
            if docs.is_empty() {
                return Ok(Vec::new());
            }
            let batch = match run {
                Some(run) => Some(run_batch(conn, run, now).await?),
                None => None,
            };
            let numbers = number_documents(conn, numbering, docs).await?;
            let issue = Issue {
                docs,
                numbers: &numbers,
                run,
                batch,
                now,
                mail_at,
            };
            let ids = write_documents(conn, &issue).await?;
            Ok(docs
                .iter()
                .zip(ids)
                .zip(numbers)
                .map(|((d, id), number)| StoredDocument {
                    id,
                    document: Document {
                        number,
                        draft: (*d).clone(),
                    },
                    finance_batch: None,
                })
                .collect())
        }

        /// Issue one document outside a run: its number, lines, ledger entry and outbox message.
        pub(crate) async fn issue_one(
            conn: &mut Conn,
            numbering: &Numbering,
            doc: &DraftDocument,
            now: DateTime<Utc>,
        ) -> Result<StoredDocument, Fail> {
            let mut issued = insert_documents(conn, numbering, None, &[doc], (now, now)).await?;
            issued
                .pop()
                .ok_or_else(|| StoreError::Database("no document written".into()).into())
        }

        /// A credit note's amount to its account: to the balance, or — when the account has no
        /// active subscription left — paid back as a refund owed, the balance as it was.
        /// Records what it corrects and why. Returns whether it was a refund.
        pub(crate) async fn credit_or_refund(
            conn: &mut Conn,
            note: &DraftDocument,
            id: i64,
            now: DateTime<Utc>,
        ) -> Result<bool, Fail> {
            let account = note.account.as_str();
            if let (true, Some(invoice)) = (note.key.starts_with("void/"), note.corrects.as_deref()) {
                // An invoice voided while its email still waits for review (or is held) never
                // reaches the customer, and neither does the credit note that voids it.
                let withdrawn = sqlx::query(
                    "UPDATE outbox SET hold = 'withdrawn' WHERE status = 'pending' AND kind = 'document' \
                     AND document_id = (SELECT id FROM documents WHERE number = $1) \
                     AND (hold IS NOT NULL OR (attempts = 0 AND next_attempt_at > $2))",
                )
                .bind(invoice)
                .bind(ts(now))
                .execute(&mut *conn)
                .await?;
                if withdrawn.rows_affected() > 0 {
                    sqlx::query("UPDATE outbox SET hold = 'withdrawn' WHERE document_id = $1")
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            sqlx::query("UPDATE documents SET corrects = $1, reason = $2 WHERE id = $3")
                .bind(note.corrects.as_deref())
                .bind(note.reason.as_deref())
                .bind(id)
                .execute(&mut *conn)
                .await?;
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM subscriptions WHERE account_id = $1 AND status = 'active') \
                 AS active, balance FROM accounts WHERE id = $1",
            )
            .bind(account)
            .fetch_one(&mut *conn)
            .await?;
            let (active, before) = (row.int("active")?, row.money("balance")?);
            let credit = -note.total;
            if active > 0 {
                update_balances(conn, &[(account, before, before + credit)]).await?;
                return Ok(false);
            }
            // Nothing left to bill: the credit is paid back, not kept.
            sqlx::query(
                "INSERT INTO balance_ledger (account_id, at, amount, reason, document_id) \
                 VALUES ($1, $2, $3, 'refund', $4)",
            )
            .bind(account)
            .bind(day(note.issued_at))
            .bind(money(-credit))
            .bind(id)
            .execute(&mut *conn)
            .await?;
            Ok(true)
        }

        /// A chunk's writes once its subscriptions advanced: the queued changes it applied,
        /// its documents (in the run's batch), its balances. Returns the documents as issued.
        pub(crate) async fn issue_chunk(
            conn: &mut Conn,
            ctx: &ChunkContext<'_>,
            closes: &[AccountClose],
            updates: &[&SubscriptionUpdate],
        ) -> Result<Vec<StoredDocument>, Fail> {
            apply_queued(conn, updates).await?;
            let docs: Vec<&DraftDocument> = closes.iter().flat_map(|c| &c.documents).collect();
            let at = (ctx.now, ctx.mail_at);
            let issued = insert_documents(conn, ctx.numbering, Some(ctx.run), &docs, at).await?;
            let moves: Vec<Move> = closes
                .iter()
                .map(|c| (c.account.as_str(), c.balance_before, c.balance_after))
                .collect();
            update_balances(conn, &moves).await?;
            Ok(issued)
        }

        /// Issue documents made outside a close run (a change, a licence operation) and move
        /// the account's balance from what they were computed from.
        pub(crate) async fn issue_out_of_run(
            conn: &mut Conn,
            ctx: &ChangeContext<'_>,
            outcome: &impl Issues,
        ) -> Result<Vec<StoredDocument>, Fail> {
            let docs: Vec<&DraftDocument> = outcome.documents().iter().collect();
            let issued = insert_documents(conn, ctx.numbering, None, &docs, (ctx.now, ctx.now)).await?;
            let (before, after) = outcome.balance();
            update_balances(conn, &[(ctx.account.as_str(), before, after)]).await?;
            Ok(issued)
        }

        /// Update subscription `sub` only from the version it was computed from: `update`
        /// binds all but its last two parameters, the subscription's id and that version. A
        /// subscription another writer moved on since is the conflict.
        pub(crate) async fn update_subscription(
            conn: &mut Conn,
            update: sqlx::query::Query<'_, Db, <Db as sqlx::Database>::Arguments>,
            sub: &str,
            version: i64,
        ) -> Result<(), Fail> {
            let done = update.bind(sub).bind(version).execute(&mut *conn).await?;
            guarded(done.rows_affected(), || format!("subscription {sub}"))?;
            Ok(())
        }

        /// Move account balances, each only from the value it was computed from:
        /// (account, before, after).
        pub(crate) async fn update_balances(conn: &mut Conn, moves: &[Move<'_>]) -> Result<(), Fail> {
            let moves: Vec<&Move> = moves.iter().filter(|m| m.1 != m.2).collect();
            if moves.is_empty() {
                return Ok(());
            }
            let moved = move_balances(conn, &moves).await?;
            if moved.len() != moves.len() {
                let missed = moves
                    .iter()
                    .find(|m| !moved.contains(m.0))
                    .map_or(moves[0].0, |m| m.0);
                return Err(StoreError::Conflict(format!("balance of account {missed}")).into());
            }
            Ok(())
        }

        /// Replace the items of these subscriptions (one or a whole chunk's).
        pub(crate) async fn replace_items(
            conn: &mut Conn,
            subs: &[(&str, &[Item])],
        ) -> Result<(), Fail> {
            if subs.is_empty() {
                return Ok(());
            }
            sqlx::query(concat!(
                "DELETE FROM subscription_items WHERE subscription_id ",
                in_list!(1)
            ))
            .bind(ids(subs.iter().map(|(sub, _)| *sub)))
            .execute(&mut *conn)
            .await?;
            let rows: Vec<(&str, &Item)> = subs
                .iter()
                .flat_map(|(sub, items)| items.iter().map(move |i| (*sub, i)))
                .collect();
            insert_items(conn, &rows).await
        }

        /// Queued changes a chunk applied at their boundary: the subscriptions' items replaced
        /// and the changes marked applied (`mark_applied`), a statement each for the chunk.
        pub(crate) async fn apply_queued(
            conn: &mut Conn,
            updates: &[&SubscriptionUpdate],
        ) -> Result<(), Fail> {
            let changed: Vec<_> = updates
                .iter()
                .filter(|u| !u.applied_changes.is_empty())
                .collect();
            if changed.is_empty() {
                return Ok(());
            }
            let new_items: Vec<(&str, &[Item])> = changed
                .iter()
                .map(|u| (u.id.as_str(), u.items.as_slice()))
                .collect();
            replace_items(conn, &new_items).await?;
            let applied: Vec<Applied> = changed
                .iter()
                .flat_map(|u| {
                    u.applied_changes
                        .iter()
                        .map(|id| (*id, u.current_period.map(|p| p.start)))
                })
                .collect();
            let done = mark_applied(conn, &applied).await?;
            if let Some((id, _)) = applied.iter().find(|(id, _)| !done.contains(id)) {
                return Err(StoreError::Conflict(format!("scheduled change {id}")).into());
            }
            Ok(())
        }

        /// The end of a chunk's transaction: its accounts' claims released, its documents
        /// counted in its run.
        pub(crate) async fn finish_chunk(
            conn: &mut Conn,
            run: RunId,
            closes: &[AccountClose],
            issued: usize,
        ) -> Result<(), Fail> {
            if !closes.is_empty() {
                sqlx::query(concat!(
                    "DELETE FROM close_claims WHERE account_id ",
                    in_list!(1)
                ))
                .bind(ids(closes.iter().map(|c| c.account.as_str())))
                .execute(&mut *conn)
                .await?;
            }
            sqlx::query("UPDATE runs SET documents = documents + $1 WHERE id = $2")
                .bind(issued as i64)
                .bind(run)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        /// The audit row of an import, by the CLI: how many accounts and subscriptions it
        /// stored, as JSON text in the form PostgreSQL prints JSONB.
        pub(crate) async fn audit_import(
            conn: &mut Conn,
            now: DateTime<Utc>,
            batch: &ImportBatch,
        ) -> Result<(), Fail> {
            let details = format!(
                "{{\"accounts\": {}, \"subscriptions\": {}}}",
                batch.accounts.len(),
                batch.subscriptions.len()
            );
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, details) VALUES ($1, 'cli', 'import', $2)",
            )
            .bind(ts(now))
            .bind(json_text(details))
            .execute(conn)
            .await?;
            Ok(())
        }

        /// The pending items a change queues for the subscription's next invoice, in order.
        pub(crate) async fn insert_pending(
            conn: &mut Conn,
            sub: &str,
            pending: &[NewPending],
            now: DateTime<Utc>,
        ) -> Result<(), Fail> {
            for p in pending {
                sqlx::query(
                    "INSERT INTO pending_items (subscription_id, description, amount, discountable, created_at, \
                     source_key) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(sub)
                .bind(&p.description)
                .bind(money(p.amount))
                .bind(p.discountable)
                .bind(ts(now))
                .bind(&p.key)
                .execute(&mut *conn)
                .await
                .map_err(conflict_as(format!("pending item {}", p.key)))?;
            }
            Ok(())
        }

        /// `count` new available licences of `plan`, in one statement.
        pub(crate) async fn add_licences(
            conn: &mut Conn,
            sub: &str,
            plan: &str,
            count: u32,
            now: DateTime<Utc>,
        ) -> Result<(), Fail> {
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 WHERE $4 > 0 UNION ALL SELECT i + 1 FROM n WHERE i < $4) \
                 INSERT INTO licences (subscription_id, plan, status, created_at) \
                 SELECT $1, $2, 'available', $3 FROM n",
            )
            .bind(sub)
            .bind(plan)
            .bind(ts(now))
            .bind(i64::from(count))
            .execute(conn)
            .await?;
            Ok(())
        }

        /// One audit row of billrun's: `action` on an account (and one of its subscriptions).
        pub(crate) async fn audit<T: serde::Serialize + ?Sized>(
            conn: &mut Conn,
            now: DateTime<Utc>,
            action: &str,
            subject: (&str, Option<&str>),
            details: &T,
        ) -> Result<(), Fail> {
            audit_by(conn, now, "billrun", action, subject, details).await
        }

        /// One audit row naming who asked for it (an operator's OS user).
        pub(crate) async fn audit_by<T: serde::Serialize + ?Sized>(
            conn: &mut Conn,
            now: DateTime<Utc>,
            actor: &str,
            action: &str,
            (account, subscription): (&str, Option<&str>),
            details: &T,
        ) -> Result<(), Fail> {
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, account_id, subscription_id, details) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(ts(now))
            .bind(actor)
            .bind(action)
            .bind(account)
            .bind(subscription)
            .bind(json(details))
            .execute(conn)
            .await?;
            Ok(())
        }

        /// Delete one module table's rows of an account. Identifiers were validated as plain
        /// SQL identifiers when the configuration was loaded, and are quoted here as well.
        pub(crate) async fn purge_table(
            conn: &mut Conn,
            t: &ModuleTable,
            account: &str,
        ) -> Result<u64, Fail> {
            if !is_identifier(&t.table) || !is_identifier(&t.account_column) {
                return Err(StoreError::Rejected(format!(
                    "module table {:?} is not a plain identifier",
                    t.table
                ))
                .into());
            }
            let sql = format!(
                "DELETE FROM \"{}\" WHERE \"{}\" = $1",
                t.table, t.account_column
            );
            Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(account)
                .execute(conn)
                .await?
                .rows_affected())
        }
    };
}
pub(crate) use write_helpers;
