//! Imports on SQLite ([`ImportStore`]): multi-row `VALUES` statements of at most a chunk's
//! rows each, in one write transaction.

use super::*;
use crate::store::shared::import::{items, licences, refuse_existing};

/// The most bound parameters one statement may carry (SQLite's limit is 32766).
const MAX_PARAMS: usize = 32_000;
/// Rows per multi-row statement: a chunk's worth, no more. Multi-row statements are built
/// per call and not kept in the statement cache (`persistent(false)`): a cached statement
/// with thousands of parameters holds megabytes of compiled program per connection.
const MAX_ROWS: usize = 200;

/// Rows of `cols` parameters each that fit in one statement.
fn rows_per_statement(cols: usize) -> usize {
    (MAX_PARAMS / cols).min(MAX_ROWS)
}

#[async_trait]
impl ImportStore for SqliteStore {
    async fn import(&self, batch: &ImportBatch, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let created = ts(now);
        let today = day(now.date_naive());
        for part in batch.accounts.chunks(rows_per_statement(10)) {
            let mut q = QueryBuilder::<Db>::new(
                "INSERT INTO accounts (id, name, email, currency, timezone, taxes, discount, balance, status, created_at, identity) ",
            );
            q.push_values(part, |mut b, new| {
                let a = &new.account;
                b.push_bind(a.id.as_str())
                    .push_bind(a.name.as_str())
                    .push_bind(a.email.as_str())
                    .push_bind(a.currency.code())
                    .push_bind(a.timezone.as_str())
                    .push_bind(json(&a.taxes))
                    .push_bind(a.discount.as_ref().map(json))
                    .push_bind(money(new.opening_credit))
                    .push("'active'")
                    .push_bind(created.as_str())
                    .push_bind(a.identity_json());
            });
            q.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
            let inserted = q.build_query_scalar().persistent(false);
            let inserted = inserted.fetch_all(&mut *tx).await?;
            refuse_existing(
                "account",
                part.iter().map(|n| n.account.id.as_str()),
                inserted,
            )?;
        }
        let credited: Vec<_> = batch
            .accounts
            .iter()
            .filter(|n| !n.opening_credit.is_zero())
            .collect();
        for part in credited.chunks(rows_per_statement(3)) {
            let mut q = QueryBuilder::<Db>::new(
                "INSERT INTO balance_ledger (account_id, at, amount, reason) ",
            );
            q.push_values(part, |mut b, new| {
                b.push_bind(new.account.id.as_str())
                    .push_bind(today.as_str())
                    .push_bind(money(new.opening_credit))
                    .push("'opening_credit'");
            });
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        for part in batch.subscriptions.chunks(rows_per_statement(12)) {
            let mut q = QueryBuilder::<Db>::new(
                "INSERT INTO subscriptions (id, account_id, policy, cycle, discount, start_date, anchor, period_start, \
                 period_end, next_bill_date, periods_billed, status, created_at) ",
            );
            q.push_values(part, |mut b, new| {
                let s = &new.subscription;
                b.push_bind(s.id.as_str())
                    .push_bind(s.account.as_str())
                    .push_bind(s.policy.as_str())
                    .push_bind(s.cycle.as_str())
                    .push_bind(s.discount.as_ref().map(json))
                    .push_bind(day(s.start))
                    .push_bind(day(s.anchor))
                    .push_bind(s.current_period.map(|p| day(p.start)))
                    .push_bind(s.current_period.map(|p| day(p.end)))
                    .push_bind(day(s.next_bill_date))
                    .push_bind(i64::from(s.periods_billed))
                    .push("'active'")
                    .push_bind(created.as_str());
            });
            q.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
            let inserted = q.build_query_scalar().persistent(false);
            let inserted = inserted.fetch_all(&mut *tx).await?;
            let ids = part.iter().map(|n| n.subscription.id.as_str());
            refuse_existing("subscription", ids, inserted)?;
        }
        insert_items(&mut tx, &items(batch)).await?;
        for part in licences(batch).chunks(rows_per_statement(5)) {
            let mut q = QueryBuilder::<Db>::new(
                "INSERT INTO licences (subscription_id, plan, status, assigned_to, created_at) ",
            );
            q.push_values(part, |mut b, (sub, plan, holder)| {
                b.push_bind(*sub)
                    .push_bind(*plan)
                    .push_bind(if holder.is_some() {
                        "assigned"
                    } else {
                        "available"
                    })
                    .push_bind(*holder)
                    .push_bind(created.as_str());
            });
            q.build().persistent(false).execute(&mut *tx).await?;
        }
        for part in batch.queued_changes.chunks(rows_per_statement(6)) {
            let mut q = QueryBuilder::<Db>::new(
                "INSERT INTO scheduled_changes (subscription_id, kind, target, change_key, requested_at, effective_at) ",
            );
            q.push_values(part, |mut b, c| {
                b.push_bind(c.subscription.as_str())
                    .push_bind(c.kind.as_str())
                    .push_bind(json(&c.target))
                    .push_bind(c.key.as_str())
                    .push_bind(day(c.requested_at))
                    .push_bind(day(c.effective_at));
            });
            q.build()
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(conflict_as("a queued change key already stored"))?;
        }
        for part in batch.pending_items.chunks(rows_per_statement(6)) {
            let mut q = QueryBuilder::<Db>::new(
                "INSERT INTO pending_items (subscription_id, description, amount, discountable, created_at, source_key) ",
            );
            q.push_values(part, |mut b, p| {
                b.push_bind(p.subscription.as_str())
                    .push_bind(p.description.as_str())
                    .push_bind(money(p.amount))
                    .push_bind(p.discountable)
                    .push_bind(created.as_str())
                    .push_bind(p.key.as_str());
            });
            q.build()
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(conflict_as("a pending item key already stored"))?;
        }
        audit_import(&mut tx, now, batch).await?;
        tx.commit().await?;
        Ok(())
    }
}
