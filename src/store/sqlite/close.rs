//! A close's chunks on SQLite ([`CloseStore`]): each table's rows for the chunk read in one
//! statement as JSON arrays, and the chunk's writes bound as JSONB rows (`jsonb.rs`), with
//! the planner held to lookups by id where SQLite without statistics would scan. After each
//! commit the WAL is checkpointed beside the writer (`SqliteStore::checkpoint_behind`).

use super::*;
use sqlx::Row;

#[async_trait]
impl CloseStore for SqliteStore {
    async fn load_accounts(&self, ids: &[AccountId]) -> Result<Vec<AccountState>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One statement, one result row: each table's rows for the chunk aggregated into one
        // JSON array. sqlx hands a result over row by row and value by value (a message and
        // a copy each), which cost far more than SQLite's reading; this is five values. One
        // statement also reads the five tables in one snapshot.
        // The chunk's subscriptions are looked up once (MATERIALIZED) and joined to their
        // items, pending items and queued changes. Without statistics SQLite would rather scan
        // whole tables (every active subscription, every item) than look up a few thousand
        // rows: INDEXED BY and CROSS JOIN (which keeps the chunk's subscriptions the outer
        // loop) hold it to the lookups.
        let row = sqlx::query(
            "WITH subs AS MATERIALIZED ( \
               SELECT * FROM subscriptions INDEXED BY subscriptions_account \
               WHERE status = 'active' AND account_id IN (SELECT value FROM json_each($1))) \
             SELECT \
             (SELECT json_group_array(json_array(id, name, email, currency, timezone, taxes, discount, status, balance, identity)) \
              FROM accounts WHERE id IN (SELECT value FROM json_each($1))), \
             (SELECT json_group_array(json_array(id, account_id, policy, cycle, discount, start_date, anchor, \
               period_start, period_end, next_bill_date, periods_billed, status, cancel_at, last_change_at, version) \
               ORDER BY id) FROM subs), \
             (SELECT json_group_array(json_array(i.subscription_id, i.plan, i.quantity) ORDER BY i.subscription_id, i.plan) \
              FROM subs CROSS JOIN subscription_items i ON i.subscription_id = subs.id), \
             (SELECT json_group_array(json_array(p.id, p.subscription_id, p.description, p.amount, p.discountable, p.kind) ORDER BY p.id) \
              FROM subs CROSS JOIN pending_items p ON p.subscription_id = subs.id AND p.document_id IS NULL), \
             (SELECT json_group_array(json_array(c.id, c.subscription_id, c.effective_at, c.kind, c.target) ORDER BY c.effective_at, c.id) \
              FROM subs CROSS JOIN scheduled_changes c INDEXED BY scheduled_changes_queued \
              ON c.subscription_id = subs.id AND c.status = 'queued')",
        )
        .bind(cols::ids(ids.iter().map(|i| i.as_str())))
        .fetch_one(&self.pool)
        .await?;
        let accounts = json_rows("accounts", row.try_get(0)?)?;
        let items = json_rows("items", row.try_get(2)?)?;
        let mut pending = Vec::new();
        for (id, sub, description, amount, discountable, kind) in
            json_rows::<(i64, String, String, String, i64, String)>(
                "pending items",
                row.try_get(3)?,
            )?
        {
            let amount = rows::text::amount(&amount)?;
            let discountable = discountable != 0;
            pending.push((
                sub,
                PendingItem {
                    id,
                    description,
                    amount,
                    discountable,
                    kind: rows::pending_kind(&kind)?,
                },
            ));
        }
        let mut queued = Vec::new();
        for (id, sub, effective_at, kind, target) in
            json_rows::<(i64, String, String, String, String)>("queued changes", row.try_get(4)?)?
        {
            let target = rows::from_json("change target", &target)?;
            let effective_at = rows::text::date(&effective_at)?;
            queued.push((
                sub,
                QueuedChange {
                    id,
                    effective_at,
                    kind,
                    target,
                },
            ));
        }
        let subscriptions = json_rows("subscriptions", row.try_get(1)?)?;
        rows::assemble(accounts, subscriptions, items, pending, queued)
    }

    async fn commit_chunk(
        &self,
        ctx: &ChunkContext<'_>,
        closes: &[AccountClose],
    ) -> Result<Vec<StoredDocument>> {
        let issued = written(async {
            let mut tx = self.write_tx().await?;
            let updates: Vec<_> = closes.iter().flat_map(|c| &c.updates).collect();
            if !updates.is_empty() {
                let rows = advanced_rows(&updates);
                // `+status`: without it SQLite may walk an index on status (every active row)
                // instead of looking the chunk's subscriptions up by id.
                let done = sqlx::query(
                    "UPDATE subscriptions SET cycle = u.value->>2, anchor = u.value->>3, period_start = u.value->>4, \
                     period_end = u.value->>5, next_bill_date = u.value->>6, periods_billed = u.value->>7, \
                     status = u.value->>8, ended_at = u.value->>9, version = subscriptions.version + 1 \
                     FROM jsonb_each($1) AS u \
                     WHERE subscriptions.id = u.value->>0 AND subscriptions.version = u.value->>1 \
                     AND +subscriptions.status = 'active'",
                )
                .bind(&rows)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != updates.len() as u64 {
                    // Some subscription moved on since the chunk was read. Which one is looked
                    // up only now (the update returns no row per subscription), after the
                    // rollback: versions only grow, so one stale then is still stale in a
                    // fresh read.
                    tx.rollback().await?;
                    let stale: Option<String> = sqlx::query_scalar(
                        "SELECT u.value->>0 FROM jsonb_each($1) AS u WHERE NOT EXISTS ( \
                           SELECT 1 FROM subscriptions s WHERE s.id = u.value->>0 AND s.version = u.value->>1 \
                           AND +s.status = 'active') \
                         ORDER BY u.rowid LIMIT 1",
                    )
                    .bind(&rows)
                    .fetch_optional(&self.pool)
                    .await?;
                    return Err(StoreError::Conflict(match stale {
                        Some(id) => format!("subscription {id}"),
                        None => "a subscription of this chunk".into(),
                    })
                    .into());
                }
            }
            let issued = issue_chunk(&mut tx, ctx, closes, &updates).await?;

            // Canceled accounts and their refunds, in bulk like the rest.
            let (mut canceled, mut refunds) = (JsonRows::new(), JsonRows::new());
            for (account, at, delete_after, refund) in cancellations(closes, ctx.retention_days) {
                canceled.row().cell(account).cell(at).cell(delete_after);
                if !refund.is_zero() {
                    refunds.row().cell(account).cell(at).cell(-refund);
                }
            }
            write_rows(
                &mut tx,
                "UPDATE accounts SET status = 'canceled', canceled_at = u.value->>1, delete_after = u.value->>2 \
                 FROM jsonb_each($1) AS u WHERE accounts.id = u.value->>0 AND accounts.status = 'active'",
                canceled,
            )
            .await?;
            write_rows(
                &mut tx,
                "INSERT INTO balance_ledger (account_id, at, amount, reason) \
                 SELECT value->>0, value->>1, value->>2, 'refund' FROM jsonb_each($1) ORDER BY rowid",
                refunds,
            )
            .await
            .map_err(conflict_as("refund of an account of this chunk"))?;
            finish_chunk(&mut tx, ctx.run, closes, issued.len()).await?;
            tx.commit().await?;
            Ok(issued)
        })
        .await?;
        self.checkpoint_behind();
        Ok(issued)
    }

    /// SQLite keeps no statistics unless asked; billrun's statements name their index
    /// (`INDEXED BY`, `NOT INDEXED`) where the default plan would be wrong.
    async fn refresh_statistics(&self) -> Result<()> {
        Ok(())
    }
}

/// The subscriptions' new state, as the JSONB rows of the guarded update.
fn advanced_rows(updates: &[&SubscriptionUpdate]) -> Vec<u8> {
    let mut rows = JsonRows::new();
    for u in updates {
        rows.row()
            .cell(u.id.as_str())
            .cell(u.expected_version)
            .cell(u.cycle.as_str())
            .cell(u.anchor)
            .cell(u.current_period.map(|p| p.start))
            .cell(u.current_period.map(|p| p.end))
            .cell(u.next_bill_date)
            .cell(i64::from(u.periods_billed))
            .cell(u.status.as_str())
            .cell(u.ended_at);
    }
    rows.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::domain::Subscription;
    use crate::core::money::Currency;
    use crate::core::period::Period;

    /// A subscription another writer moved on since the chunk was read: the whole chunk rolls
    /// back and the conflict names that subscription.
    #[tokio::test]
    async fn stale_subscription_rolls_the_chunk_back_and_is_named() {
        use crate::input::{ImportBatch, NewAccount, NewSubscription};
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let as_of = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 1, 6, 0, 0).unwrap();
        let account = AccountId::new("acct1").unwrap();
        let mut batch = ImportBatch::default();
        batch.accounts.push(NewAccount {
            account: Account::new(
                account.clone(),
                "Customer",
                "billing@acct1.example",
                Currency::new("USD").unwrap(),
            ),
            opening_credit: Decimal::ZERO,
        });
        let start = NaiveDate::from_ymd_opt(2025, 12, 1).unwrap();
        for id in ["sub1", "sub2"] {
            batch.subscriptions.push(NewSubscription {
                subscription: Subscription {
                    current_period: Some(Period { start, end: as_of }),
                    next_bill_date: as_of,
                    periods_billed: 1,
                    ..Subscription::new(
                        SubscriptionId::new(id).unwrap(),
                        account.clone(),
                        "deferred",
                        "monthly",
                        vec![Item {
                            plan: "basic".into(),
                            quantity: 1,
                        }],
                        start,
                    )
                },
                licences: Vec::new(),
            });
        }
        store.import(&batch, now).await.unwrap();

        let catalog = crate::core::catalog::Catalog::from_toml_str(crate::bench::CATALOG).unwrap();
        let states = store
            .load_accounts(std::slice::from_ref(&account))
            .await
            .unwrap();
        let terms = crate::core::billing::Terms {
            payment_terms_days: 14,
        };
        let close =
            crate::core::billing::close_account(&states[0], &catalog, terms, as_of).unwrap();
        assert_eq!(close.documents.len(), 2);
        sqlx::query("UPDATE subscriptions SET version = version + 1 WHERE id = 'sub2'")
            .execute(&store.pool)
            .await
            .unwrap();

        let numbering = Numbering {
            invoice_prefix: "INV".into(),
            credit_note_prefix: "CN".into(),
        };
        let ctx = ChunkContext {
            run: store.begin_run(as_of, now, "test").await.unwrap(),
            numbering: &numbering,
            now,
            mail_at: now,
            retention_days: 30,
        };
        match store.commit_chunk(&ctx, &[close]).await {
            Err(StoreError::Conflict(what)) => assert_eq!(what, "subscription sub2"),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(store.documents(None).await.unwrap().is_empty());
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM subscriptions ORDER BY id")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(versions, [0, 1]);
    }
}
