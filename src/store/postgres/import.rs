//! Imports on PostgreSQL ([`ImportStore`]): one `UNNEST` statement per table, whatever the
//! number of rows, in one transaction.

use super::*;
use crate::core::domain::Subscription;
use crate::store::shared::import::{items, licences, refuse_existing};

/// JSON as text, for the `::jsonb` casts of `UNNEST`ed text arrays.
fn json_str<T: serde::Serialize + ?Sized>(v: &T) -> String {
    json(v).0
}

#[async_trait]
impl ImportStore for PgStore {
    async fn import(&self, batch: &ImportBatch, now: DateTime<Utc>) -> Result<()> {
        written(self.import_rows(batch, now)).await
    }
}

impl PgStore {
    async fn import_rows(&self, batch: &ImportBatch, now: DateTime<Utc>) -> Result<(), Fail> {
        let mut tx = self.write_tx().await?;
        let accounts = &batch.accounts;
        if !accounts.is_empty() {
            let a = |f: fn(&Account) -> String| -> Vec<String> {
                accounts.iter().map(|n| f(&n.account)).collect()
            };
            let discounts: Vec<Option<String>> = accounts
                .iter()
                .map(|n| n.account.discount.as_ref().map(json_str))
                .collect();
            let credits: Vec<Money> = accounts.iter().map(|n| money(n.opening_credit)).collect();
            let inserted = sqlx::query_scalar(
                "INSERT INTO accounts (id, name, email, currency, timezone, taxes, discount, status, balance, created_at, identity) \
                 SELECT u.id, u.name, u.email, u.currency, u.timezone, u.taxes::jsonb, u.discount::jsonb, 'active', u.balance, $9, u.identity \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::numeric[], $10::text[]) \
                 AS u(id, name, email, currency, timezone, taxes, discount, balance, identity) \
                 ON CONFLICT (id) DO NOTHING RETURNING id",
            )
            .bind(a(|x| x.id.as_str().to_string()))
            .bind(a(|x| x.name.clone()))
            .bind(a(|x| x.email.clone()))
            .bind(a(|x| x.currency.code().to_string()))
            .bind(a(|x| x.timezone.clone()))
            .bind(a(|x| json_str(&x.taxes)))
            .bind(discounts)
            .bind(credits)
            .bind(now)
            .bind(
                accounts
                    .iter()
                    .map(|n| n.account.identity_json())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *tx)
            .await?;
            refuse_existing(
                "account",
                accounts.iter().map(|n| n.account.id.as_str()),
                inserted,
            )?;
            let credited: Vec<&crate::input::NewAccount> = accounts
                .iter()
                .filter(|n| !n.opening_credit.is_zero())
                .collect();
            if !credited.is_empty() {
                sqlx::query(
                    "INSERT INTO balance_ledger (account_id, at, amount, reason) \
                     SELECT u.account_id, $3, u.amount, 'opening_credit' \
                     FROM UNNEST($1::text[], $2::numeric[]) WITH ORDINALITY AS u(account_id, amount, ord) ORDER BY u.ord",
                )
                .bind(
                    credited
                        .iter()
                        .map(|n| n.account.id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    credited
                        .iter()
                        .map(|n| money(n.opening_credit))
                        .collect::<Vec<_>>(),
                )
                .bind(now.date_naive())
                .execute(&mut *tx)
                .await?;
            }
        }
        let subs = &batch.subscriptions;
        if !subs.is_empty() {
            let s = |f: fn(&Subscription) -> String| -> Vec<String> {
                subs.iter().map(|n| f(&n.subscription)).collect()
            };
            let d = |f: fn(&Subscription) -> NaiveDate| -> Vec<NaiveDate> {
                subs.iter().map(|n| f(&n.subscription)).collect()
            };
            let discounts: Vec<Option<String>> = subs
                .iter()
                .map(|n| n.subscription.discount.as_ref().map(json_str))
                .collect();
            let inserted = sqlx::query_scalar(
                "INSERT INTO subscriptions (id, account_id, policy, cycle, discount, start_date, anchor, next_bill_date, \
                 periods_billed, status, created_at, period_start, period_end) \
                 SELECT u.id, u.account_id, u.policy, u.cycle, u.discount::jsonb, u.start_date, u.anchor, u.next_bill_date, \
                 u.periods_billed, 'active', $9, u.period_start, u.period_end \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::date[], $7::date[], $8::date[], \
                             $10::date[], $11::date[], $12::bigint[]) \
                 AS u(id, account_id, policy, cycle, discount, start_date, anchor, next_bill_date, period_start, period_end, periods_billed) \
                 ON CONFLICT (id) DO NOTHING RETURNING id",
            )
            .bind(s(|x| x.id.as_str().to_string()))
            .bind(s(|x| x.account.as_str().to_string()))
            .bind(s(|x| x.policy.clone()))
            .bind(s(|x| x.cycle.clone()))
            .bind(discounts)
            .bind(d(|x| x.start))
            .bind(d(|x| x.anchor))
            .bind(d(|x| x.next_bill_date))
            .bind(now)
            .bind(
                subs.iter()
                    .map(|n| n.subscription.current_period.map(|p| p.start))
                    .collect::<Vec<_>>(),
            )
            .bind(
                subs.iter()
                    .map(|n| n.subscription.current_period.map(|p| p.end))
                    .collect::<Vec<_>>(),
            )
            .bind(
                subs.iter()
                    .map(|n| i64::from(n.subscription.periods_billed))
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *tx)
            .await?;
            let ids = subs.iter().map(|n| n.subscription.id.as_str());
            refuse_existing("subscription", ids, inserted)?;
            insert_items(&mut tx, &items(batch)).await?;
            let licences = licences(batch);
            if !licences.is_empty() {
                sqlx::query(
                    "INSERT INTO licences (subscription_id, plan, status, assigned_to, created_at) \
                     SELECT u.subscription_id, u.plan, \
                     CASE WHEN u.assigned_to IS NULL THEN 'available' ELSE 'assigned' END, u.assigned_to, $4 \
                     FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(subscription_id, plan, assigned_to, ord) \
                     ORDER BY u.ord",
                )
                .bind(licences.iter().map(|l| l.0).collect::<Vec<_>>())
                .bind(licences.iter().map(|l| l.1).collect::<Vec<_>>())
                .bind(licences.iter().map(|l| l.2).collect::<Vec<_>>())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        let queued = &batch.queued_changes;
        if !queued.is_empty() {
            sqlx::query(
                "INSERT INTO scheduled_changes (subscription_id, kind, target, change_key, requested_at, effective_at) \
                 SELECT u.subscription_id, u.kind, u.target::jsonb, u.change_key, u.requested_at, u.effective_at \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::date[], $6::date[]) WITH ORDINALITY \
                 AS u(subscription_id, kind, target, change_key, requested_at, effective_at, ord) ORDER BY u.ord",
            )
            .bind(queued.iter().map(|c| c.subscription.as_str()).collect::<Vec<_>>())
            .bind(queued.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>())
            .bind(queued.iter().map(|c| json_str(&c.target)).collect::<Vec<_>>())
            .bind(queued.iter().map(|c| c.key.as_str()).collect::<Vec<_>>())
            .bind(queued.iter().map(|c| c.requested_at).collect::<Vec<_>>())
            .bind(queued.iter().map(|c| c.effective_at).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        let pending = &batch.pending_items;
        if !pending.is_empty() {
            sqlx::query(
                "INSERT INTO pending_items (subscription_id, description, amount, discountable, created_at, source_key) \
                 SELECT u.subscription_id, u.description, u.amount, u.discountable, $5, u.source_key \
                 FROM UNNEST($1::text[], $2::text[], $3::numeric[], $4::bool[], $6::text[]) WITH ORDINALITY \
                 AS u(subscription_id, description, amount, discountable, source_key, ord) ORDER BY u.ord",
            )
            .bind(pending.iter().map(|p| p.subscription.as_str()).collect::<Vec<_>>())
            .bind(pending.iter().map(|p| p.description.as_str()).collect::<Vec<_>>())
            .bind(pending.iter().map(|p| money(p.amount)).collect::<Vec<_>>())
            .bind(pending.iter().map(|p| p.discountable).collect::<Vec<_>>())
            .bind(now)
            .bind(pending.iter().map(|p| p.key.as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        audit_import(&mut tx, now, batch).await?;
        tx.commit().await?;
        Ok(())
    }
}
