//! The PostgreSQL implementation of [`Store`]: the production mode, where several workers
//! share one database. It owns the PostgreSQL schema (`migrations/postgres/`) and keeps the
//! semantics of the SQLite store method for method.
//!
//! SQLite serialises every writer with `BEGIN IMMEDIATE`; PostgreSQL runs writers side by side
//! under READ COMMITTED. What keeps them apart here: writes guarded by the version (or
//! balance) they were computed from, unique keys, the row lock of the `number_series` upsert
//! (held to commit, so numbering stays gapless), `ON CONFLICT` for work claims, and one table
//! lock where a write first counts what it is about to take (`create_finance_batch`).
//! Row locks are taken in one order in every write — subscriptions, then `number_series`, then
//! accounts — so writers queue behind each other instead of deadlocking; a deadlock or
//! serialisation failure that still happens is reported as `Conflict`, which callers retry.
//!
//! Rows that belong together go in one statement (`UNNEST` of arrays, one parameter per
//! column whatever the row count) rather than one round trip per row.

use super::*;
use crate::core::billing::AccountState;
use crate::core::change::{CancelOutcome, ChangeOutcome};
use crate::core::document::{DraftDocument, Line, LineKind, REFUND_ON_CANCEL, RefundOwed};
use crate::core::domain::{
    AccountStatus, Discount, Item, PendingItem, Subscription, SubscriptionId, SubscriptionStatus,
    TaxRate,
};
use crate::core::domain::{QueuedChange, Target};
use crate::core::licence::{Licence, LicenceMutation, LicenceOutcome, LicenceStatus};
use crate::core::money::Currency;
use crate::core::period::Period;
use chrono::Datelike;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{
    PgArgumentBuffer, PgConnectOptions, PgConnection, PgHasArrayType, PgPoolOptions, PgRow,
    PgTypeInfo, PgValueFormat, PgValueRef,
};
use sqlx::{Decode, Encode, PgPool, Postgres, QueryBuilder, Row, Transaction, Type};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Connections per process: a close uses one at a time; the daemon adds its HTTP handlers
/// and the outbox drain.
const MAX_CONNECTIONS: u32 = 5;

pub struct PgStore {
    pool: PgPool,
}

/// Money as NUMERIC, keeping its scale both ways. sqlx's `rust_decimal` support writes and
/// reads every zero as a bare `0`, so an invoice with nothing due would print `0` where
/// SQLite prints `0.00`; zero is therefore encoded and decoded here, anything else by sqlx.
#[derive(Debug, Clone, Copy)]
struct Money(Decimal);

impl Type<Postgres> for Money {
    fn type_info() -> PgTypeInfo {
        <Decimal as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <Decimal as Type<Postgres>>::compatible(ty)
    }
}

impl PgHasArrayType for Money {
    fn array_type_info() -> PgTypeInfo {
        <Decimal as PgHasArrayType>::array_type_info()
    }
    fn array_compatible(ty: &PgTypeInfo) -> bool {
        <Decimal as PgHasArrayType>::array_compatible(ty)
    }
}

impl Encode<'_, Postgres> for Money {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        if !self.0.is_zero() {
            return <Decimal as Encode<Postgres>>::encode_by_ref(&self.0, buf);
        }
        // Binary NUMERIC: digit count, weight, sign, display scale (all big-endian i16/u16).
        let scale = i16::try_from(self.0.scale())?;
        buf.extend_from_slice(&0i16.to_be_bytes());
        buf.extend_from_slice(&0i16.to_be_bytes());
        buf.extend_from_slice(&0u16.to_be_bytes());
        buf.extend_from_slice(&scale.to_be_bytes());
        Ok(IsNull::No)
    }
}

impl Decode<'_, Postgres> for Money {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => {
                let bytes = value.as_bytes()?;
                // No digits and a positive sign is zero; its display scale is bytes 6..8.
                if bytes.len() == 8 && bytes[..6] == [0, 0, 0, 0, 0, 0] {
                    let scale = i16::from_be_bytes([bytes[6], bytes[7]]);
                    return Ok(Money(Decimal::new(0, u32::try_from(scale)?)));
                }
                Ok(Money(<Decimal as Decode<Postgres>>::decode(value)?))
            }
            PgValueFormat::Text => Ok(Money(Decimal::from_str_exact(value.as_str()?)?)),
        }
    }
}

fn money(d: Decimal) -> Money {
    Money(d)
}

/// A failure inside a write: the driver's error, still carrying its SQLSTATE so that
/// deadlocks and unique violations can be told apart, or the store's own verdict.
#[derive(Debug, thiserror::Error)]
enum Fail {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Fail> for StoreError {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Store(e) => e,
            Fail::Sql(e) => classify(e),
        }
    }
}

/// Another writer got there first: a unique key already taken, or PostgreSQL aborting one of
/// two transactions (deadlock, serialisation failure). All of these mean "reload and retry".
fn classify(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        match db.code().as_deref() {
            Some("23505") => {
                let what = match (db.table(), db.constraint()) {
                    (_, Some("balance_ledger_one_refund")) => "refund of account",
                    (Some("documents"), _) => "document",
                    (Some("outbox"), _) => "outbox message",
                    (Some("scheduled_changes"), _) => "change",
                    (Some("pending_items"), _) => "pending item",
                    (Some("finance_batches"), _) => "finance batch of run",
                    (Some(t), _) => t,
                    (None, _) => "a unique key",
                };
                return StoreError::Conflict(format!("{what} {}", key_value(&e)));
            }
            Some("40P01") | Some("40001") => {
                return StoreError::Conflict(crate::redact(db.message()));
            }
            _ => {}
        }
    }
    e.into()
}

/// The value in a unique violation's detail, `Key (doc_key)=(renewal/s1/2026-01-01) already
/// exists.`, or empty.
fn key_value(e: &sqlx::Error) -> String {
    let detail = match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.detail())
            .unwrap_or_default(),
        _ => "",
    };
    detail
        .split_once("=(")
        .and_then(|(_, rest)| rest.rsplit_once(") already exists"))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default()
}

fn corrupt(what: &str) -> impl Fn(String) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

/// JSON for a JSONB column. The values serialised here (tax rates, discounts, targets,
/// licence operations) are plain data that always serialise; `null` is only a fallback.
fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| corrupt(what)(e.to_string()))
}

fn account_id(s: &str) -> Result<AccountId, StoreError> {
    AccountId::new(s).map_err(corrupt("account id"))
}

const ACCOUNT_COLS: &str = "id, name, email, currency, timezone, taxes::text AS taxes, \
     discount::text AS discount, status, balance, identity";
const DOCUMENT_COLS: &str = "id, number, doc_key, kind, account_id, subscription_id, finance_batch_id, issued_at, \
     due_at, period_start, period_end, currency, subtotal, discount, tax, total, credit_applied, amount_due, customer";

fn account_from_row(r: &PgRow) -> Result<(Account, Decimal), StoreError> {
    let taxes: Vec<TaxRate> = from_json("taxes", &r.try_get::<String, _>("taxes")?)?;
    let discount: Option<Discount> = r
        .try_get::<Option<String>, _>("discount")?
        .map(|j| from_json("discount", &j))
        .transpose()?;
    let status: String = r.try_get("status")?;
    let mut account = Account {
        id: account_id(&r.try_get::<String, _>("id")?)?,
        name: r.try_get("name")?,
        email: r.try_get("email")?,
        currency: Currency::new(&r.try_get::<String, _>("currency")?)
            .map_err(corrupt("currency"))?,
        timezone: r.try_get("timezone")?,
        taxes,
        discount,
        status: AccountStatus::parse(&status).ok_or_else(|| corrupt("status")(status.clone()))?,
        address: Vec::new(),
        country: None,
        tax_id: None,
        reverse_charge: false,
    };
    account
        .set_identity_json(r.try_get::<Option<String>, _>("identity")?.as_deref())
        .map_err(corrupt("identity"))?;
    Ok((account, r.try_get::<Money, _>("balance")?.0))
}

fn period(start: Option<NaiveDate>, end: Option<NaiveDate>) -> Option<Period> {
    match (start, end) {
        (Some(start), Some(end)) => Some(Period { start, end }),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum DocFilter<'a> {
    All,
    Account(&'a str),
    Number(&'a str),
    Id(i64),
    Batch(i64),
    /// Issued on or after the first date and before the second.
    Issued(NaiveDate, NaiveDate),
    /// Ids above the first, at most the second many.
    Page(i64, u32),
}

/// Which refunds owed to read: those a finance batch reports, or those recorded in a range
/// of dates.
enum RefundFilter {
    Batch(i64),
    Recorded(NaiveDate, NaiveDate),
}

impl PgStore {
    async fn fetch_refunds(&self, filter: RefundFilter) -> Result<Vec<RefundOwed>, StoreError> {
        let select = "SELECT l.account_id, a.name, a.currency, l.amount FROM balance_ledger l \
                      JOIN accounts a ON a.id = l.account_id WHERE l.reason = 'refund' AND ";
        let rows = match filter {
            RefundFilter::Batch(batch) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{select}l.finance_batch_id = $1 ORDER BY l.id"
                )))
                .bind(batch)
                .fetch_all(&self.pool)
                .await?
            }
            RefundFilter::Recorded(from, to) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{select}l.at >= $1 AND l.at < $2 ORDER BY l.id"
                )))
                .bind(from)
                .bind(to)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(RefundOwed {
                    account: r.try_get("account_id")?,
                    customer_name: r.try_get("name")?,
                    currency: r.try_get("currency")?,
                    amount: -r.try_get::<Money, _>("amount")?.0,
                    reason: REFUND_ON_CANCEL.into(),
                })
            })
            .collect()
    }
}

impl PgStore {
    /// `postgres://user:password@host:port/database`; the database must exist.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let connect = |e: sqlx::Error| StoreError::Connect(crate::redact(&e.to_string()));
        let opts = PgConnectOptions::from_str(url).map_err(connect)?;
        // One connection first: an unreachable server fails at once, naming the server and
        // the reason, where the pool would retry until its timeout and say only that.
        use sqlx::{ConnectOptions, Connection};
        let server = format!("{}:{}", opts.get_host(), opts.get_port());
        let first = opts.connect().await.map_err(|e| {
            StoreError::Connect(format!("{server}: {}", crate::redact(&e.to_string())))
        })?;
        let _ = first.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(opts)
            .await
            .map_err(connect)?;
        Ok(PgStore { pool })
    }

    async fn fetch_documents(
        &self,
        filter: DocFilter<'_>,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        let where_clause = |q: &mut QueryBuilder<Postgres>| match filter {
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
            DocFilter::Batch(b) => {
                q.push(" WHERE finance_batch_id = ").push_bind(b);
            }
            DocFilter::Issued(from, to) => {
                q.push(" WHERE issued_at >= ")
                    .push_bind(from)
                    .push(" AND issued_at < ")
                    .push_bind(to);
            }
            DocFilter::Page(after, limit) => {
                q.push(" WHERE id > ")
                    .push_bind(after)
                    .push(" ORDER BY id LIMIT ")
                    .push_bind(i64::from(limit));
            }
        };
        let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {DOCUMENT_COLS} FROM documents"));
        where_clause(&mut q);
        if !matches!(filter, DocFilter::Page(..)) {
            q.push(" ORDER BY id");
        }
        let rows = q.build().fetch_all(&self.pool).await?;

        let mut lq = QueryBuilder::<Postgres>::new(
            "SELECT document_id, kind, description, amount, detail FROM document_lines WHERE document_id",
        );
        if matches!(filter, DocFilter::Page(..)) {
            // A page's own ids: index probes whatever the statistics say (a subquery with a
            // LIMIT, misjudged, became a scan of every line per page).
            let ids: Vec<i64> = rows
                .iter()
                .map(|r| r.try_get("id"))
                .collect::<Result<_, _>>()?;
            lq.push(" = ANY(").push_bind(ids).push(")");
        } else {
            lq.push(" IN (SELECT id FROM documents");
            where_clause(&mut lq);
            lq.push(")");
        }
        lq.push(" ORDER BY document_id, position");
        let mut lines: BTreeMap<i64, Vec<Line>> = BTreeMap::new();
        for r in lq.build().fetch_all(&self.pool).await? {
            let kind: String = r.try_get("kind")?;
            let mut line = Line::amount(
                LineKind::parse(&kind).ok_or_else(|| corrupt("line kind")(kind.clone()))?,
                r.try_get("description")?,
                r.try_get::<Money, _>("amount")?.0,
                false,
            );
            line.set_detail_json(r.try_get::<Option<String>, _>("detail")?.as_deref())
                .map_err(corrupt("line detail"))?;
            lines
                .entry(r.try_get("document_id")?)
                .or_default()
                .push(line);
        }

        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.try_get("id")?;
            let kind: String = r.try_get("kind")?;
            let sub: Option<String> = r.try_get("subscription_id")?;
            let m =
                |col: &str| -> Result<Decimal, StoreError> { Ok(r.try_get::<Money, _>(col)?.0) };
            let customer = match r.try_get::<Option<String>, _>("customer")? {
                Some(j) => from_json("customer", &j)?,
                None => Default::default(),
            };
            let draft = DraftDocument {
                key: r.try_get("doc_key")?,
                customer,
                kind: DocumentKind::parse(&kind)
                    .ok_or_else(|| corrupt("document kind")(kind.clone()))?,
                account: account_id(&r.try_get::<String, _>("account_id")?)?,
                subscription: sub
                    .as_deref()
                    .map(SubscriptionId::new)
                    .transpose()
                    .map_err(corrupt("subscription id"))?,
                issued_at: r.try_get("issued_at")?,
                due_at: r.try_get("due_at")?,
                period: period(r.try_get("period_start")?, r.try_get("period_end")?),
                currency: Currency::new(&r.try_get::<String, _>("currency")?)
                    .map_err(corrupt("currency"))?,
                lines: lines.remove(&id).unwrap_or_default(),
                subtotal: m("subtotal")?,
                discount: m("discount")?,
                tax: m("tax")?,
                total: m("total")?,
                credit_applied: m("credit_applied")?,
                amount_due: m("amount_due")?,
                consumes_pending: Vec::new(),
            };
            out.push(StoredDocument {
                id,
                document: Document {
                    number: r.try_get("number")?,
                    draft,
                },
                finance_batch: r.try_get("finance_batch_id")?,
            });
        }
        Ok(out)
    }

    async fn fetch_outbox(
        &self,
        due: Option<(DateTime<Utc>, u32)>,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT id, message_key, kind, document_id, finance_batch_id, recipient, subject, attempts, status FROM outbox",
        );
        if let Some((now, limit)) = due {
            q.push(" WHERE status = 'pending' AND next_attempt_at <= ")
                .push_bind(now)
                .push(" ORDER BY id LIMIT ")
                .push_bind(i64::from(limit));
        } else {
            q.push(" ORDER BY id");
        }
        q.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(outbox_from_row)
            .collect()
    }

    /// A transaction whose queries walk an index in order rather than collect and sort: for
    /// the claims, which take the next `limit` due accounts after a key (see claim_accounts).
    async fn ordered_walk_tx(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_sort', 'off', true)",
        )
        .execute(&mut *tx)
        .await?;
        Ok(tx)
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Postgres>, Fail> {
        Ok(self.pool.begin().await?)
    }

    async fn import_tx(&self, batch: &ImportBatch, now: DateTime<Utc>) -> Result<(), Fail> {
        let mut tx = self.write_tx().await?;
        let accounts = &batch.accounts;
        if !accounts.is_empty() {
            let a = |f: fn(&Account) -> String| -> Vec<String> {
                accounts.iter().map(|n| f(&n.account)).collect()
            };
            let discounts: Vec<Option<String>> = accounts
                .iter()
                .map(|n| n.account.discount.as_ref().map(json))
                .collect();
            let credits: Vec<Money> = accounts.iter().map(|n| money(n.opening_credit)).collect();
            // DO NOTHING rather than an error, so the first id already stored (in file order)
            // is the one named, as on SQLite.
            let inserted: BTreeSet<String> = sqlx::query_scalar(
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
            .bind(a(|x| json(&x.taxes)))
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
            .await?
            .into_iter()
            .collect();
            if let Some(dup) = accounts
                .iter()
                .find(|n| !inserted.contains(n.account.id.as_str()))
            {
                return Err(StoreError::Rejected(format!(
                    "account {:?} already exists",
                    dup.account.id.as_str()
                ))
                .into());
            }
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
                .map(|n| n.subscription.discount.as_ref().map(json))
                .collect();
            let inserted: BTreeSet<String> = sqlx::query_scalar(
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
            .await?
            .into_iter()
            .collect();
            if let Some(dup) = subs
                .iter()
                .find(|n| !inserted.contains(n.subscription.id.as_str()))
            {
                return Err(StoreError::Rejected(format!(
                    "subscription {:?} already exists",
                    dup.subscription.id.as_str()
                ))
                .into());
            }
            let items: Vec<(&str, &Item)> = subs
                .iter()
                .flat_map(|n| {
                    n.subscription
                        .items
                        .iter()
                        .map(|i| (n.subscription.id.as_str(), i))
                })
                .collect();
            insert_items(&mut tx, &items).await?;
            let licences: Vec<(&str, &str, Option<&str>)> = subs
                .iter()
                .flat_map(|n| {
                    n.licences.iter().map(|(plan, holder)| {
                        (n.subscription.id.as_str(), plan.as_str(), holder.as_deref())
                    })
                })
                .collect();
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
            .bind(queued.iter().map(|c| json(&c.target)).collect::<Vec<_>>())
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
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, details) VALUES ($1, 'cli', 'import', $2::jsonb)",
        )
        .bind(now)
        .bind(
            serde_json::json!({"accounts": batch.accounts.len(), "subscriptions": batch.subscriptions.len()})
                .to_string(),
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn commit_chunk_tx(
        &self,
        ctx: &ChunkContext<'_>,
        closes: &[AccountClose],
    ) -> Result<Vec<StoredDocument>, Fail> {
        let mut tx = self.write_tx().await?;
        // Every join in a chunk's writes is a few hundred array rows against a big table by
        // its primary key. Planned with the arrays' real sizes, PostgreSQL picks a hash join
        // over a scan of the whole table — per chunk, so a close would grow with the square
        // of its size. Index nested loops are right for all of them; say so for this
        // transaction only.
        sqlx::query(
            "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)",
        )
        .execute(&mut *tx)
        .await?;
        // Subscriptions first, numbers next, accounts last: the lock order of every write.
        let updates: Vec<_> = closes.iter().flat_map(|c| &c.updates).collect();
        if !updates.is_empty() {
            let advanced: BTreeSet<String> = sqlx::query_scalar(
                "UPDATE subscriptions s SET cycle = u.cycle, anchor = u.anchor, period_start = u.period_start, \
                 period_end = u.period_end, next_bill_date = u.next_bill_date, periods_billed = u.periods_billed, \
                 status = u.status, ended_at = u.ended_at, version = s.version + 1 \
                 FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::date[], $5::date[], $6::date[], $7::date[], \
                             $8::bigint[], $9::text[], $10::date[]) \
                 AS u(id, expected_version, cycle, anchor, period_start, period_end, next_bill_date, periods_billed, status, ended_at) \
                 WHERE s.id = u.id AND s.version = u.expected_version AND s.status = 'active' \
                 RETURNING s.id",
            )
            .bind(updates.iter().map(|u| u.id.as_str()).collect::<Vec<_>>())
            .bind(updates.iter().map(|u| u.expected_version).collect::<Vec<_>>())
            .bind(updates.iter().map(|u| u.cycle.as_str()).collect::<Vec<_>>())
            .bind(updates.iter().map(|u| u.anchor).collect::<Vec<_>>())
            .bind(updates.iter().map(|u| u.current_period.map(|p| p.start)).collect::<Vec<_>>())
            .bind(updates.iter().map(|u| u.current_period.map(|p| p.end)).collect::<Vec<_>>())
            .bind(updates.iter().map(|u| u.next_bill_date).collect::<Vec<_>>())
            .bind(updates.iter().map(|u| i64::from(u.periods_billed)).collect::<Vec<_>>())
            .bind(updates.iter().map(|u| u.status.as_str()).collect::<Vec<_>>())
            .bind(updates.iter().map(|u| u.ended_at).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            if advanced.len() != updates.len() {
                let missed = updates
                    .iter()
                    .find(|u| !advanced.contains(u.id.as_str()))
                    .map_or_else(|| updates[0].id.to_string(), |u| u.id.to_string());
                return Err(StoreError::Conflict(format!("subscription {missed}")).into());
            }
            // Queued changes applied at their boundary: the subscriptions' items replaced and
            // the changes marked applied, a statement each for the whole chunk.
            let changed: Vec<_> = updates
                .iter()
                .filter(|u| !u.applied_changes.is_empty())
                .collect();
            if !changed.is_empty() {
                let new_items: Vec<(&str, &[Item])> = changed
                    .iter()
                    .map(|u| (u.id.as_str(), u.items.as_slice()))
                    .collect();
                replace_items(&mut tx, &new_items).await?;
                let applied: Vec<(i64, Option<NaiveDate>)> = changed
                    .iter()
                    .flat_map(|u| {
                        u.applied_changes
                            .iter()
                            .map(|id| (*id, u.current_period.map(|p| p.start)))
                    })
                    .collect();
                let done: BTreeSet<i64> = sqlx::query_scalar(
                    "UPDATE scheduled_changes c SET status = 'applied', applied_at = u.at \
                     FROM UNNEST($1::bigint[], $2::date[]) AS u(id, at) \
                     WHERE c.id = u.id AND c.status = 'queued' RETURNING c.id",
                )
                .bind(applied.iter().map(|a| a.0).collect::<Vec<_>>())
                .bind(applied.iter().map(|a| a.1).collect::<Vec<_>>())
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
                if let Some((id, _)) = applied.iter().find(|(id, _)| !done.contains(id)) {
                    return Err(StoreError::Conflict(format!("scheduled change {id}")).into());
                }
            }
        }
        let docs: Vec<&DraftDocument> = closes.iter().flat_map(|c| &c.documents).collect();
        let issued =
            insert_documents(&mut tx, ctx.numbering, Some(ctx.run), &docs, ctx.now).await?;

        let moves: Vec<(&str, Decimal, Decimal)> = closes
            .iter()
            .map(|c| (c.account.as_str(), c.balance_before, c.balance_after))
            .collect();
        update_balances(&mut tx, &moves).await?;

        let canceled: Vec<(&AccountClose, NaiveDate)> = closes
            .iter()
            .filter_map(|c| c.canceled_at.map(|d| (c, d)))
            .collect();
        if !canceled.is_empty() {
            sqlx::query(
                "UPDATE accounts a SET status = 'canceled', canceled_at = u.canceled_at, delete_after = u.delete_after \
                 FROM UNNEST($1::text[], $2::date[], $3::date[]) AS u(id, canceled_at, delete_after) \
                 WHERE a.id = u.id AND a.status = 'active'",
            )
            .bind(canceled.iter().map(|(c, _)| c.account.as_str()).collect::<Vec<_>>())
            .bind(canceled.iter().map(|(_, d)| *d).collect::<Vec<_>>())
            .bind(
                canceled
                    .iter()
                    .map(|(_, d)| *d + chrono::Days::new(u64::from(ctx.retention_days)))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
            let refunds: Vec<(&AccountClose, NaiveDate)> = canceled
                .into_iter()
                .filter(|(c, _)| !c.refund.is_zero())
                .collect();
            if !refunds.is_empty() {
                sqlx::query(
                    "INSERT INTO balance_ledger (account_id, at, amount, reason) \
                     SELECT u.account_id, u.at, u.amount, 'refund' \
                     FROM UNNEST($1::text[], $2::date[], $3::numeric[]) WITH ORDINALITY AS u(account_id, at, amount, ord) \
                     ORDER BY u.ord",
                )
                .bind(refunds.iter().map(|(c, _)| c.account.as_str()).collect::<Vec<_>>())
                .bind(refunds.iter().map(|(_, d)| *d).collect::<Vec<_>>())
                .bind(refunds.iter().map(|(c, _)| money(-c.refund)).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("DELETE FROM close_claims WHERE account_id = ANY($1)")
            .bind(
                closes
                    .iter()
                    .map(|c| c.account.as_str())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE runs SET documents = documents + $1 WHERE id = $2")
            .bind(issued.len() as i64)
            .bind(ctx.run)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(issued)
    }

    async fn apply_change_tx(
        &self,
        outcome: &ChangeOutcome,
        account: &AccountId,
        numbering: &Numbering,
        modules: &ModuleMap,
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredDocument>, Fail> {
        let mut tx = self.write_tx().await?;
        let sub = outcome.subscription.as_str();
        let key = format!("change/{sub}/v{}", outcome.expected_version);
        let c = outcome.changed.as_ref();
        let done = sqlx::query(
            "UPDATE subscriptions SET period_start = COALESCE($1, period_start), period_end = COALESCE($2, period_end), \
             next_bill_date = COALESCE($3, next_bill_date), anchor = COALESCE($4, anchor), cycle = COALESCE($5, cycle), \
             periods_billed = COALESCE($6, periods_billed), last_change_at = $7, version = version + 1 \
             WHERE id = $8 AND version = $9 AND status = 'active'",
        )
        .bind(c.map(|c| c.current_period.start))
        .bind(c.map(|c| c.current_period.end))
        .bind(c.map(|c| c.next_bill_date))
        .bind(c.map(|c| c.anchor))
        .bind(c.map(|c| c.cycle.as_str()))
        .bind(c.map(|c| i64::from(c.periods_billed)))
        .bind(outcome.at)
        .bind(sub)
        .bind(outcome.expected_version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!("subscription {sub}")).into());
        }
        if let Some(c) = c {
            replace_items(&mut tx, &[(sub, c.items.as_slice())]).await?;
        }
        // A new request supersedes whatever was waiting for the period end.
        sqlx::query(
            "UPDATE scheduled_changes SET status = 'withdrawn' WHERE subscription_id = $1 AND status = 'queued'",
        )
        .bind(sub)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO scheduled_changes (subscription_id, kind, target, change_key, requested_at, effective_at, status, applied_at) \
             VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8)",
        )
        .bind(sub)
        .bind(outcome.kind.as_str())
        .bind(json(&outcome.target))
        .bind(&key)
        .bind(outcome.at)
        .bind(outcome.queued_for.unwrap_or(outcome.at))
        .bind(if outcome.queued_for.is_some() {
            "queued"
        } else {
            "applied"
        })
        .bind(outcome.queued_for.is_none().then_some(outcome.at))
        .execute(&mut *tx)
        .await?;
        if !outcome.pending.is_empty() {
            let p = &outcome.pending;
            sqlx::query(
                "INSERT INTO pending_items (subscription_id, description, amount, discountable, created_at, source_key) \
                 SELECT $1, u.description, u.amount, u.discountable, $2, u.source_key \
                 FROM UNNEST($3::text[], $4::numeric[], $5::boolean[], $6::text[]) WITH ORDINALITY \
                 AS u(description, amount, discountable, source_key, ord) ORDER BY u.ord",
            )
            .bind(sub)
            .bind(now)
            .bind(p.iter().map(|p| p.description.as_str()).collect::<Vec<_>>())
            .bind(p.iter().map(|p| money(p.amount)).collect::<Vec<_>>())
            .bind(p.iter().map(|p| p.discountable).collect::<Vec<_>>())
            .bind(p.iter().map(|p| p.key.as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        let docs: Vec<&DraftDocument> = outcome.documents.iter().collect();
        let issued = insert_documents(&mut tx, numbering, None, &docs, now).await?;
        update_balances(
            &mut tx,
            &[(
                account.as_str(),
                outcome.balance_before,
                outcome.balance_after,
            )],
        )
        .await?;
        if !outcome.purge_modules.is_empty() {
            let mut purged = BTreeMap::new();
            for module in &outcome.purge_modules {
                for t in modules.get(module).map(Vec::as_slice).unwrap_or_default() {
                    let n = purge_table(&mut tx, t, account.as_str()).await?;
                    purged.insert(format!("{module}:{}", t.table), n);
                }
            }
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, account_id, subscription_id, details) \
                 VALUES ($1, 'billrun', 'module_data_purged', $2, $3, $4::jsonb)",
            )
            .bind(now)
            .bind(account.as_str())
            .bind(sub)
            .bind(serde_json::json!({"modules": outcome.purge_modules, "rows": purged}).to_string())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, account_id, subscription_id, details) \
             VALUES ($1, 'billrun', 'change', $2, $3, $4::jsonb)",
        )
        .bind(now)
        .bind(account.as_str())
        .bind(sub)
        .bind(
            serde_json::json!({"kind": outcome.kind.as_str(), "at": outcome.at.to_string(), "target": outcome.target,
                               "documents": issued.iter().map(|d| d.document.number.clone()).collect::<Vec<_>>()})
            .to_string(),
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(issued)
    }

    async fn set_cancel_tx(
        &self,
        outcome: &CancelOutcome,
        account: &AccountId,
        now: DateTime<Utc>,
    ) -> Result<(), Fail> {
        let mut tx = self.write_tx().await?;
        let sub = outcome.subscription.as_str();
        let done = sqlx::query(
            "UPDATE subscriptions SET cancel_at = $1, version = version + 1 WHERE id = $2 AND version = $3 AND status = 'active'",
        )
        .bind(outcome.cancel_at)
        .bind(sub)
        .bind(outcome.expected_version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!("subscription {sub}")).into());
        }
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, account_id, subscription_id, details) \
             VALUES ($1, 'billrun', $2, $3, $4, $5::jsonb)",
        )
        .bind(now)
        .bind(if outcome.cancel_at.is_some() {
            "cancel"
        } else {
            "cancel_undone"
        })
        .bind(account.as_str())
        .bind(sub)
        .bind(serde_json::json!({"at": outcome.at.to_string(), "ends": outcome.cancel_at.map(|d| d.to_string())}).to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn apply_licence_op_tx(
        &self,
        outcome: &LicenceOutcome,
        account: &AccountId,
        numbering: &Numbering,
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredDocument>, Fail> {
        let mut tx = self.write_tx().await?;
        let sub = outcome.subscription.as_str();
        let dated = !outcome.documents.is_empty() || outcome.items.is_some();
        let done = sqlx::query(
            "UPDATE subscriptions SET last_change_at = CASE WHEN $1 THEN $2 ELSE last_change_at END, version = version + 1 \
             WHERE id = $3 AND version = $4 AND status = 'active'",
        )
        .bind(dated)
        .bind(outcome.at)
        .bind(sub)
        .bind(outcome.expected_version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!("subscription {sub}")).into());
        }
        if let Some(items) = &outcome.items {
            replace_items(&mut tx, &[(sub, items)]).await?;
        }
        // In order: an operation may unassign a licence and assign it again.
        for m in &outcome.mutations {
            let (sql, id, text): (&'static str, i64, Option<&str>) = match m {
                LicenceMutation::Add { plan, count } => {
                    sqlx::query(
                        "INSERT INTO licences (subscription_id, plan, status, created_at) \
                         SELECT $1, $2, 'available', $3 FROM generate_series(1, $4)",
                    )
                    .bind(sub)
                    .bind(plan)
                    .bind(now)
                    .bind(i64::from(*count))
                    .execute(&mut *tx)
                    .await?;
                    continue;
                }
                LicenceMutation::Assign { id, user } => (
                    "UPDATE licences SET status = 'assigned', assigned_to = $1 WHERE id = $2 AND status = 'available'",
                    *id,
                    Some(user.as_str()),
                ),
                LicenceMutation::Unassign { id } => (
                    "UPDATE licences SET status = 'available', assigned_to = NULL WHERE id = $1 AND status = 'assigned'",
                    *id,
                    None,
                ),
                LicenceMutation::Remove { id } => {
                    let done = sqlx::query(
                        "UPDATE licences SET status = 'removed', removed_at = $1 WHERE id = $2 AND status = 'available'",
                    )
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() != 1 {
                        return Err(StoreError::Conflict(format!("licence {id}")).into());
                    }
                    continue;
                }
                LicenceMutation::Replan { id, plan } => (
                    "UPDATE licences SET plan = $1 WHERE id = $2 AND status = 'assigned'",
                    *id,
                    Some(plan.as_str()),
                ),
            };
            let mut q = sqlx::query(sql);
            if let Some(t) = text {
                q = q.bind(t);
            }
            let done = q.bind(id).execute(&mut *tx).await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Conflict(format!("licence {id}")).into());
            }
        }
        let docs: Vec<&DraftDocument> = outcome.documents.iter().collect();
        let issued = insert_documents(&mut tx, numbering, None, &docs, now).await?;
        update_balances(
            &mut tx,
            &[(
                account.as_str(),
                outcome.balance_before,
                outcome.balance_after,
            )],
        )
        .await?;
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, account_id, subscription_id, details) \
             VALUES ($1, 'billrun', 'licence', $2, $3, $4::jsonb)",
        )
        .bind(now)
        .bind(account.as_str())
        .bind(sub)
        .bind(json(&outcome.op))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(issued)
    }

    async fn delete_account_tx(
        &self,
        account: &AccountId,
        as_of: NaiveDate,
        modules: &ModuleMap,
        now: DateTime<Utc>,
    ) -> Result<Deletion, Fail> {
        let mut tx = self.write_tx().await?;
        let id = account.as_str();
        // The guard lives in the statement: only a canceled account past its date, with no
        // active subscription, can be marked deleted.
        let done = sqlx::query(
            "UPDATE accounts SET status = 'deleted', deleted_at = $1, name = '', email = '' \
             WHERE id = $2 AND status = 'canceled' AND delete_after <= $1 \
             AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.account_id = accounts.id AND s.status = 'active')",
        )
        .bind(as_of)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Rejected(format!(
                "account {id} is not canceled and past its retention date; nothing was deleted"
            ))
            .into());
        }
        let mut deletion = Deletion {
            account: id.to_string(),
            ..Default::default()
        };
        deletion.licence_assignments = sqlx::query(
            "UPDATE licences SET assigned_to = NULL, status = CASE WHEN status = 'assigned' THEN 'available' ELSE status END \
             WHERE assigned_to IS NOT NULL AND subscription_id IN (SELECT id FROM subscriptions WHERE account_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        for (module, tables) in modules {
            for t in tables {
                let n = purge_table(&mut tx, t, id).await?;
                deletion
                    .module_rows
                    .insert(format!("{module}:{}", t.table), n);
            }
        }
        // Addresses of messages already sent are personal data too; unsent ones still go out.
        sqlx::query(
            "UPDATE outbox SET recipient = '' WHERE status = 'sent' \
             AND document_id IN (SELECT id FROM documents WHERE account_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, account_id, details) VALUES ($1, 'billrun', 'account_deleted', $2, $3::jsonb)",
        )
        .bind(now)
        .bind(id)
        .bind(json(&deletion))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deletion)
    }

    async fn create_finance_batch_tx(
        &self,
        run: RunId,
        as_of: NaiveDate,
        recipient: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, Fail> {
        let mut tx = self.write_tx().await?;
        // Two workers finishing together would otherwise both count the same unreported
        // documents and one would queue a batch message for documents the other took. The
        // lock conflicts only with itself and with writes to finance_batches; each statement
        // after it sees everything committed before it was granted.
        sqlx::query("LOCK TABLE finance_batches IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        // A run that issued nothing has no batch yet; it makes one only when there is
        // something to report, so batch numbers stay consecutive.
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT id FROM finance_batches WHERE run_id = $1")
                .bind(run)
                .fetch_optional(&mut *tx)
                .await?;
        let others: i64 = sqlx::query_scalar(UNREPORTED_EXTRAS)
            .fetch_one(&mut *tx)
            .await?;
        if existing.is_none() && others == 0 {
            let waiting: i64 = sqlx::query_scalar(UNREPORTED_DOCUMENTS)
                .fetch_one(&mut *tx)
                .await?;
            if waiting == 0 {
                return Ok(None);
            }
        }
        let batch = match existing {
            Some(b) => b,
            None => run_batch(&mut tx, run, now).await?,
        };
        // Adopt what is not reported yet: documents issued outside a run, and those of
        // batches never sealed (a run that died; or, with several workers, one still going —
        // it seals whatever it issues after this).
        sqlx::query("UPDATE documents SET finance_batch_id = $1 WHERE finance_batch_id IS NULL")
            .bind(batch)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE documents SET finance_batch_id = $1 WHERE finance_batch_id IN \
             (SELECT b.id FROM finance_batches b WHERE b.id <> $1 \
              AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.finance_batch_id = b.id))",
        )
        .bind(batch)
        .execute(&mut *tx)
        .await?;
        // The batches emptied so are gone; a worker still running makes a new one for what
        // it issues next.
        sqlx::query(
            "DELETE FROM finance_batches WHERE id <> $1 \
             AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.finance_batch_id = finance_batches.id) \
             AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.finance_batch_id = finance_batches.id)",
        )
        .bind(batch)
        .execute(&mut *tx)
        .await?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM documents WHERE finance_batch_id = $1")
                .bind(batch)
                .fetch_one(&mut *tx)
                .await?;
        if count == 0 && others == 0 {
            sqlx::query("DELETE FROM finance_batches WHERE id = $1")
                .bind(batch)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(None);
        }
        for sql in [
            "UPDATE balance_ledger SET finance_batch_id = $1 WHERE reason = 'refund' AND finance_batch_id IS NULL",
            "UPDATE accounts SET finance_batch_id = $1 WHERE status = 'deleted' AND finance_batch_id IS NULL",
            "UPDATE parked_events SET finance_batch_id = $1 WHERE finance_batch_id IS NULL",
        ] {
            sqlx::query(sql).bind(batch).execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO outbox (message_key, kind, finance_batch_id, recipient, subject, next_attempt_at, created_at) \
             VALUES ($1, 'finance_batch', $2, $3, $4, $5, $5)",
        )
        .bind(crate::core::messages::finance_batch_key(batch))
        .bind(batch)
        .bind(recipient)
        .bind(crate::core::messages::finance_batch_subject(batch, as_of, count as u64))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(batch))
    }
}

async fn insert_items(conn: &mut PgConnection, items: &[(&str, &Item)]) -> Result<(), Fail> {
    if items.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO subscription_items (subscription_id, plan, quantity) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])",
    )
    .bind(items.iter().map(|(s, _)| *s).collect::<Vec<_>>())
    .bind(
        items
            .iter()
            .map(|(_, i)| i.plan.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        items
            .iter()
            .map(|(_, i)| i64::from(i.quantity))
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Replace the items of these subscriptions (one or a whole chunk's).
async fn replace_items(conn: &mut PgConnection, subs: &[(&str, &[Item])]) -> Result<(), Fail> {
    if subs.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM subscription_items WHERE subscription_id = ANY($1)")
        .bind(subs.iter().map(|(sub, _)| *sub).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    let rows: Vec<(&str, &Item)> = subs
        .iter()
        .flat_map(|(sub, items)| items.iter().map(move |i| (*sub, i)))
        .collect();
    insert_items(conn, &rows).await
}

/// Reserve one block of numbers per series and year for these documents; returns the next
/// number to give in each. Series are taken in key order, so two issuers lock them in the
/// same order.
async fn reserve_numbers(
    conn: &mut PgConnection,
    numbering: &Numbering,
    docs: &[&DraftDocument],
) -> Result<BTreeMap<(String, i32), i64>, Fail> {
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
    Ok(next)
}

/// The finance batch of a run, made by the run's first issuing chunk (inside that chunk's
/// transaction, so a chunk that rolls back leaves no empty batch). A run's documents carry
/// their batch from the start: sealing the batch never rewrites them.
async fn run_batch(conn: &mut PgConnection, run: RunId, now: DateTime<Utc>) -> Result<i64, Fail> {
    sqlx::query(
        "INSERT INTO finance_batches (run_id, created_at) VALUES ($1, $2) ON CONFLICT (run_id) DO NOTHING",
    )
    .bind(run)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT id FROM finance_batches WHERE run_id = $1")
            .bind(run)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Number and insert documents with their lines, ledger entries, consumed pending items and
/// one outbox message each; a handful of statements whatever the count.
async fn insert_documents(
    conn: &mut PgConnection,
    numbering: &Numbering,
    run: Option<RunId>,
    docs: &[&DraftDocument],
    now: DateTime<Utc>,
) -> Result<Vec<StoredDocument>, Fail> {
    if docs.is_empty() {
        return Ok(Vec::new());
    }
    let batch = match run {
        Some(run) => Some(run_batch(conn, run, now).await?),
        None => None,
    };
    let mut next = reserve_numbers(conn, numbering, docs).await?;
    let mut numbers = Vec::with_capacity(docs.len());
    for doc in docs {
        let key = (numbering.prefix(doc.kind).to_string(), doc.issued_at.year());
        let n = next
            .get_mut(&key)
            .ok_or_else(|| StoreError::Database("no number reserved for a document".into()))?;
        numbers.push(Numbering::format(&key.0, key.1, *n));
        *n += 1;
    }

    let m = |f: fn(&DraftDocument) -> Decimal| -> Vec<Money> {
        docs.iter().map(|d| money(f(d))).collect()
    };
    // Ids follow the order given, as one insert per document would: documents are listed
    // in id order and must come out in issue order.
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO documents (number, doc_key, kind, account_id, subscription_id, run_id, issued_at, due_at, \
         period_start, period_end, currency, subtotal, discount, tax, total, credit_applied, amount_due, created_at, \
         finance_batch_id, customer) \
         SELECT u.number, u.doc_key, u.kind, u.account_id, u.subscription_id, $1, u.issued_at, u.due_at, \
         u.period_start, u.period_end, u.currency, u.subtotal, u.discount, u.tax, u.total, u.credit_applied, \
         u.amount_due, $2, $19, u.customer \
         FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::date[], $9::date[], $10::date[], \
                     $11::date[], $12::text[], $13::numeric[], $14::numeric[], $15::numeric[], $16::numeric[], \
                     $17::numeric[], $18::numeric[], $20::text[]) WITH ORDINALITY \
         AS u(number, doc_key, kind, account_id, subscription_id, issued_at, due_at, period_start, period_end, \
              currency, subtotal, discount, tax, total, credit_applied, amount_due, customer, ord) \
         ORDER BY u.ord \
         RETURNING id, doc_key",
    )
    .bind(run)
    .bind(now)
    .bind(&numbers)
    .bind(docs.iter().map(|d| d.key.as_str()).collect::<Vec<_>>())
    .bind(docs.iter().map(|d| d.kind.as_str()).collect::<Vec<_>>())
    .bind(docs.iter().map(|d| d.account.as_str()).collect::<Vec<_>>())
    .bind(
        docs.iter()
            .map(|d| d.subscription.as_ref().map(|s| s.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(docs.iter().map(|d| d.issued_at).collect::<Vec<_>>())
    .bind(docs.iter().map(|d| d.due_at).collect::<Vec<_>>())
    .bind(docs.iter().map(|d| d.period.map(|p| p.start)).collect::<Vec<_>>())
    .bind(docs.iter().map(|d| d.period.map(|p| p.end)).collect::<Vec<_>>())
    .bind(docs.iter().map(|d| d.currency.code()).collect::<Vec<_>>())
    .bind(m(|d| d.subtotal))
    .bind(m(|d| d.discount))
    .bind(m(|d| d.tax))
    .bind(m(|d| d.total))
    .bind(m(|d| d.credit_applied))
    .bind(m(|d| d.amount_due))
    .bind(batch)
    .bind(
        docs.iter()
            .map(|d| serde_json::to_string(&d.customer).unwrap_or_default())
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let by_key: BTreeMap<String, i64> = rows.into_iter().map(|(id, key)| (key, id)).collect();
    let ids: Vec<i64> = docs
        .iter()
        .map(|d| {
            by_key
                .get(&d.key)
                .copied()
                .ok_or_else(|| StoreError::Conflict(format!("document {}", d.key)))
        })
        .collect::<Result<_, _>>()?;

    let lines: Vec<(i64, i64, &Line)> = docs
        .iter()
        .zip(&ids)
        .flat_map(|(d, id)| {
            d.lines
                .iter()
                .enumerate()
                .map(move |(pos, l)| (*id, pos as i64, l))
        })
        .collect();
    if !lines.is_empty() {
        sqlx::query(
            "INSERT INTO document_lines (document_id, position, kind, description, amount, detail) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::numeric[], $6::text[])",
        )
        .bind(lines.iter().map(|l| l.0).collect::<Vec<_>>())
        .bind(lines.iter().map(|l| l.1).collect::<Vec<_>>())
        .bind(lines.iter().map(|l| l.2.kind.as_str()).collect::<Vec<_>>())
        .bind(
            lines
                .iter()
                .map(|l| l.2.description.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(lines.iter().map(|l| money(l.2.amount)).collect::<Vec<_>>())
        .bind(lines.iter().map(|l| l.2.detail_json()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }

    let ledger: Vec<(&DraftDocument, i64, Decimal, &str)> = docs
        .iter()
        .zip(&ids)
        .filter_map(|(d, id)| match d.kind {
            DocumentKind::Invoice if !d.credit_applied.is_zero() => {
                Some((*d, *id, -d.credit_applied, "credit_applied"))
            }
            DocumentKind::CreditNote => Some((*d, *id, -d.total, "credit_note")),
            _ => None,
        })
        .collect();
    if !ledger.is_empty() {
        sqlx::query(
            "INSERT INTO balance_ledger (account_id, at, amount, reason, document_id) \
             SELECT u.account_id, u.at, u.amount, u.reason, u.document_id \
             FROM UNNEST($1::text[], $2::date[], $3::numeric[], $4::text[], $5::bigint[]) WITH ORDINALITY \
             AS u(account_id, at, amount, reason, document_id, ord) ORDER BY u.ord",
        )
        .bind(ledger.iter().map(|l| l.0.account.as_str()).collect::<Vec<_>>())
        .bind(ledger.iter().map(|l| l.0.issued_at).collect::<Vec<_>>())
        .bind(ledger.iter().map(|l| money(l.2)).collect::<Vec<_>>())
        .bind(ledger.iter().map(|l| l.3).collect::<Vec<_>>())
        .bind(ledger.iter().map(|l| l.1).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }

    let consumed: Vec<(i64, i64)> = docs
        .iter()
        .zip(&ids)
        .flat_map(|(d, id)| d.consumes_pending.iter().map(move |p| (*p, *id)))
        .collect();
    if !consumed.is_empty() {
        let taken: Vec<i64> = sqlx::query_scalar(
            "UPDATE pending_items p SET document_id = u.document_id \
             FROM UNNEST($1::bigint[], $2::bigint[]) AS u(id, document_id) \
             WHERE p.id = u.id AND p.document_id IS NULL RETURNING p.id",
        )
        .bind(consumed.iter().map(|c| c.0).collect::<Vec<_>>())
        .bind(consumed.iter().map(|c| c.1).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        if taken.len() != consumed.len() {
            // Name the first one not taken; a pending item listed twice is taken once.
            let mut left: Vec<i64> = taken;
            let missing = consumed
                .iter()
                .find(|(p, _)| match left.iter().position(|t| t == p) {
                    Some(i) => {
                        left.swap_remove(i);
                        false
                    }
                    None => true,
                })
                .map_or(0, |(p, _)| *p);
            return Err(StoreError::Conflict(format!("pending item {missing}")).into());
        }
    }

    sqlx::query(
        "INSERT INTO outbox (message_key, kind, document_id, recipient, subject, next_attempt_at, created_at) \
         SELECT u.number, 'document', u.document_id, a.email, u.subject, $1, $1 \
         FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[]) WITH ORDINALITY \
         AS u(number, document_id, subject, account_id, ord) \
         JOIN accounts a ON a.id = u.account_id ORDER BY u.ord",
    )
    .bind(now)
    .bind(&numbers)
    .bind(&ids)
    .bind(
        docs.iter()
            .zip(&numbers)
            .map(|(d, n)| crate::core::messages::document_subject(d.kind, n))
            .collect::<Vec<_>>(),
    )
    .bind(docs.iter().map(|d| d.account.as_str()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;

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

/// Move account balances, each only from the value it was computed from.
async fn update_balances(
    conn: &mut PgConnection,
    moves: &[(&str, Decimal, Decimal)],
) -> Result<(), Fail> {
    let moves: Vec<&(&str, Decimal, Decimal)> = moves.iter().filter(|m| m.1 != m.2).collect();
    if moves.is_empty() {
        return Ok(());
    }
    let moved: BTreeSet<String> = sqlx::query_scalar(
        "UPDATE accounts a SET balance = u.after \
         FROM UNNEST($1::text[], $2::numeric[], $3::numeric[]) AS u(id, before, after) \
         WHERE a.id = u.id AND a.balance = u.before RETURNING a.id",
    )
    .bind(moves.iter().map(|m| m.0).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| money(m.1)).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| money(m.2)).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    if moved.len() != moves.len() {
        let missed = moves
            .iter()
            .find(|m| !moved.contains(m.0))
            .map_or(moves[0].0, |m| m.0);
        return Err(StoreError::Conflict(format!("balance of account {missed}")).into());
    }
    Ok(())
}

/// Delete one module table's rows of an account. Identifiers were validated as plain SQL
/// identifiers when the configuration was loaded, and are quoted here as well.
async fn purge_table(
    conn: &mut PgConnection,
    t: &super::modules::ModuleTable,
    account: &str,
) -> Result<u64, Fail> {
    if !super::modules::is_identifier(&t.table) || !super::modules::is_identifier(&t.account_column)
    {
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

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        // The migrator holds an advisory lock, so workers starting together migrate once.
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migrate(crate::redact(&e.to_string())))
    }

    async fn accounts(&self, ids: &[String]) -> Result<Vec<Account>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ANY($1) ORDER BY id"
        )))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| account_from_row(r).map(|(a, _)| a))
            .collect()
    }

    async fn import(&self, batch: &ImportBatch, now: DateTime<Utc>) -> Result<(), StoreError> {
        Ok(self.import_tx(batch, now).await?)
    }

    async fn begin_run(&self, as_of: NaiveDate, now: DateTime<Utc>) -> Result<RunId, StoreError> {
        Ok(
            sqlx::query_scalar("INSERT INTO runs (as_of, started_at) VALUES ($1, $2) RETURNING id")
                .bind(as_of)
                .bind(now)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn finish_run(
        &self,
        run: RunId,
        now: DateTime<Utc>,
        documents: u64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE runs SET finished_at = $1, status = $2, documents = $3, error = $4 WHERE id = $5",
        )
        .bind(now)
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

    async fn release_claims(&self, worker: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM close_claims WHERE worker = $1")
            .bind(worker)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn claim_accounts(
        &self,
        as_of: NaiveDate,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
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
        .bind(worker)
        .bind(lease_until)
        .bind(as_of)
        .bind(now)
        .bind(i64::from(limit))
        .bind(after.map_or("", |a| a.as_str()))
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        let mut ids: Vec<AccountId> = ids
            .iter()
            .map(|s| account_id(s))
            .collect::<Result<_, _>>()?;
        ids.sort();
        Ok(ids)
    }

    async fn due_accounts(
        &self,
        as_of: NaiveDate,
        after: Option<&AccountId>,
        limit: u32,
    ) -> Result<Vec<AccountId>, StoreError> {
        // Walks the index in order like a claim (see claim_accounts).
        let mut tx = self.ordered_walk_tx().await?;
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT account_id FROM subscriptions WHERE status = 'active' AND next_bill_date <= $1 \
             AND account_id > $2 ORDER BY account_id LIMIT $3",
        )
        .bind(as_of)
        .bind(after.map(|a| a.as_str()).unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(|s| account_id(s)).collect()
    }

    async fn load_accounts(&self, ids: &[AccountId]) -> Result<Vec<AccountState>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(|i| i.as_str()).collect();
        let mut states: BTreeMap<String, AccountState> = BTreeMap::new();
        for r in sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ANY($1)"
        )))
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?
        {
            let (account, balance) = account_from_row(&r)?;
            states.insert(
                account.id.as_str().to_string(),
                AccountState {
                    account,
                    balance,
                    subscriptions: Vec::new(),
                },
            );
        }

        let mut items: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        for r in sqlx::query(
            "SELECT subscription_id, plan, quantity FROM subscription_items WHERE subscription_id IN \
             (SELECT id FROM subscriptions WHERE status = 'active' AND account_id = ANY($1)) \
             ORDER BY subscription_id, plan",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?
        {
            let quantity: i64 = r.try_get("quantity")?;
            items
                .entry(r.try_get("subscription_id")?)
                .or_default()
                .push(Item {
                    plan: r.try_get("plan")?,
                    quantity: u32::try_from(quantity)
                        .map_err(|e| corrupt("quantity")(e.to_string()))?,
                });
        }
        let mut pending: BTreeMap<String, Vec<PendingItem>> = BTreeMap::new();
        for r in sqlx::query(
            "SELECT id, subscription_id, description, amount, discountable FROM pending_items \
             WHERE document_id IS NULL AND subscription_id IN \
             (SELECT id FROM subscriptions WHERE status = 'active' AND account_id = ANY($1)) ORDER BY id",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?
        {
            pending
                .entry(r.try_get("subscription_id")?)
                .or_default()
                .push(PendingItem {
                    id: r.try_get("id")?,
                    description: r.try_get("description")?,
                    amount: r.try_get::<Money, _>("amount")?.0,
                    discountable: r.try_get("discountable")?,
                });
        }
        let mut queued: BTreeMap<String, Vec<QueuedChange>> = BTreeMap::new();
        for r in sqlx::query(
            "SELECT id, subscription_id, effective_at, kind, target::text AS target FROM scheduled_changes \
             WHERE status = 'queued' AND subscription_id IN \
             (SELECT id FROM subscriptions WHERE status = 'active' AND account_id = ANY($1)) \
             ORDER BY effective_at, id",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?
        {
            let target: Target = from_json("change target", &r.try_get::<String, _>("target")?)?;
            queued
                .entry(r.try_get("subscription_id")?)
                .or_default()
                .push(QueuedChange {
                    id: r.try_get("id")?,
                    effective_at: r.try_get("effective_at")?,
                    kind: r.try_get("kind")?,
                    target,
                });
        }

        for r in sqlx::query(
            "SELECT id, account_id, policy, cycle, discount::text AS discount, start_date, anchor, period_start, \
             period_end, next_bill_date, periods_billed, status, cancel_at, last_change_at, version FROM subscriptions \
             WHERE status = 'active' AND account_id = ANY($1) ORDER BY id",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?
        {
            let id: String = r.try_get("id")?;
            let account: String = r.try_get("account_id")?;
            let status: String = r.try_get("status")?;
            let discount: Option<Discount> = r
                .try_get::<Option<String>, _>("discount")?
                .map(|j| from_json("discount", &j))
                .transpose()?;
            let periods_billed: i64 = r.try_get("periods_billed")?;
            let sub = Subscription {
                id: SubscriptionId::new(&id).map_err(corrupt("subscription id"))?,
                account: account_id(&account)?,
                policy: r.try_get("policy")?,
                cycle: r.try_get("cycle")?,
                items: items.remove(&id).unwrap_or_default(),
                discount,
                start: r.try_get("start_date")?,
                anchor: r.try_get("anchor")?,
                current_period: period(r.try_get("period_start")?, r.try_get("period_end")?),
                next_bill_date: r.try_get("next_bill_date")?,
                periods_billed: u32::try_from(periods_billed).unwrap_or(u32::MAX),
                status: SubscriptionStatus::parse(&status)
                    .ok_or_else(|| corrupt("status")(status.clone()))?,
                cancel_at: r.try_get("cancel_at")?,
                pending: pending.remove(&id).unwrap_or_default(),
                last_change_at: r.try_get("last_change_at")?,
                version: r.try_get("version")?,
                queued: queued.remove(&id).unwrap_or_default(),
            };
            if let Some(state) = states.get_mut(&account) {
                state.subscriptions.push(sub);
            }
        }
        Ok(states.into_values().collect())
    }

    async fn commit_chunk(
        &self,
        ctx: &ChunkContext<'_>,
        closes: &[AccountClose],
    ) -> Result<Vec<StoredDocument>, StoreError> {
        Ok(self.commit_chunk_tx(ctx, closes).await?)
    }

    async fn apply_change(
        &self,
        outcome: &ChangeOutcome,
        account: &AccountId,
        numbering: &Numbering,
        modules: &ModuleMap,
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        Ok(self
            .apply_change_tx(outcome, account, numbering, modules, now)
            .await?)
    }

    async fn subscription_account(
        &self,
        subscription: &str,
    ) -> Result<Option<AccountId>, StoreError> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM subscriptions WHERE id = $1")
                .bind(subscription)
                .fetch_optional(&self.pool)
                .await?;
        id.map(|a| account_id(&a)).transpose()
    }

    async fn set_cancel(
        &self,
        outcome: &CancelOutcome,
        account: &AccountId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Ok(self.set_cancel_tx(outcome, account, now).await?)
    }

    async fn licences(&self, subscription: &str) -> Result<Vec<Licence>, StoreError> {
        let mut out = Vec::new();
        for r in sqlx::query(
            "SELECT id, plan, status, assigned_to FROM licences WHERE subscription_id = $1 ORDER BY id",
        )
        .bind(subscription)
        .fetch_all(&self.pool)
        .await?
        {
            let status: String = r.try_get("status")?;
            out.push(Licence {
                id: r.try_get("id")?,
                plan: r.try_get("plan")?,
                status: LicenceStatus::parse(&status)
                    .ok_or_else(|| corrupt("licence status")(status.clone()))?,
                assigned_to: r.try_get("assigned_to")?,
            });
        }
        Ok(out)
    }

    async fn apply_licence_op(
        &self,
        outcome: &LicenceOutcome,
        account: &AccountId,
        numbering: &Numbering,
        now: DateTime<Utc>,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        Ok(self
            .apply_licence_op_tx(outcome, account, numbering, now)
            .await?)
    }

    async fn check_module_tables(&self, modules: &ModuleMap) -> Result<(), StoreError> {
        for (module, tables) in modules {
            for t in tables {
                // Exact names: the purge quotes them, so case matters as it does there.
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
                )
                .bind(&t.table)
                .bind(&t.account_column)
                .fetch_one(&self.pool)
                .await?;
                if n != 1 {
                    return Err(StoreError::Rejected(format!(
                        "modules.{module}: table {:?} with column {:?} does not exist",
                        t.table, t.account_column
                    )));
                }
            }
        }
        Ok(())
    }

    async fn deletable_accounts(&self, as_of: NaiveDate) -> Result<Vec<AccountId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM accounts a WHERE status = 'canceled' AND delete_after <= $1 \
             AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.account_id = a.id AND s.status = 'active') ORDER BY id",
        )
        .bind(as_of)
        .fetch_all(&self.pool)
        .await?;
        ids.iter().map(|s| account_id(s)).collect()
    }

    async fn delete_account(
        &self,
        account: &AccountId,
        as_of: NaiveDate,
        modules: &ModuleMap,
        now: DateTime<Utc>,
    ) -> Result<Deletion, StoreError> {
        Ok(self.delete_account_tx(account, as_of, modules, now).await?)
    }

    async fn deleted_accounts(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM accounts WHERE status = 'deleted' ORDER BY deleted_at, id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn batch_extras(&self, batch: i64) -> Result<BatchExtras, StoreError> {
        let mut extras = BatchExtras {
            refunds: self.fetch_refunds(RefundFilter::Batch(batch)).await?,
            ..Default::default()
        };
        extras.deleted_accounts =
            sqlx::query_scalar("SELECT id FROM accounts WHERE finance_batch_id = $1 ORDER BY id")
                .bind(batch)
                .fetch_all(&self.pool)
                .await?;
        Ok(extras)
    }

    async fn licence_counts(&self, subscription: &str) -> Result<(u32, u32), StoreError> {
        let r = sqlx::query(
            "SELECT COUNT(*) FILTER (WHERE status = 'assigned') AS assigned, \
             COUNT(*) FILTER (WHERE status = 'available') AS available \
             FROM licences WHERE subscription_id = $1",
        )
        .bind(subscription)
        .fetch_one(&self.pool)
        .await?;
        let (a, b): (i64, i64) = (r.try_get("assigned")?, r.try_get("available")?);
        Ok((a as u32, b as u32))
    }

    async fn changes(&self) -> Result<Vec<ChangeRecord>, StoreError> {
        let mut out = Vec::new();
        for r in sqlx::query(
            "SELECT subscription_id, kind, target::text AS target, requested_at, effective_at, status \
             FROM scheduled_changes ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?
        {
            out.push(ChangeRecord {
                subscription: r.try_get("subscription_id")?,
                kind: r.try_get("kind")?,
                target: from_json("change target", &r.try_get::<String, _>("target")?)?,
                requested_at: r.try_get("requested_at")?,
                effective_at: r.try_get("effective_at")?,
                status: r.try_get("status")?,
            });
        }
        Ok(out)
    }

    async fn create_finance_batch(
        &self,
        run: RunId,
        as_of: NaiveDate,
        recipient: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        Ok(self
            .create_finance_batch_tx(run, as_of, recipient, now)
            .await?)
    }

    async fn due_outbox(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.fetch_outbox(Some((now, limit))).await
    }

    async fn claim_outbox(
        &self,
        worker: &str,
        due_before: DateTime<Utc>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        // The usual queue pattern: rows another worker is claiming right now are skipped, not
        // waited for; an expired claim (a crashed sender) is claimable again.
        let rows = sqlx::query(
            "UPDATE outbox SET claimed_by = $1, claimed_until = $2 WHERE id IN ( \
               SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= $3 \
               AND (claimed_until IS NULL OR claimed_until <= $4) ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED) \
             RETURNING id, message_key, kind, document_id, finance_batch_id, recipient, subject, attempts, status",
        )
        .bind(worker)
        .bind(lease_until)
        .bind(due_before)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(outbox_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    async fn outbox_waiting(&self, now: DateTime<Utc>) -> Result<OutboxWaiting, StoreError> {
        let (in_backoff, next_attempt, claimed, claimed_until): (
            i64,
            Option<DateTime<Utc>>,
            i64,
            Option<DateTime<Utc>>,
        ) = sqlx::query_as(
            "SELECT \
               COUNT(*) FILTER (WHERE next_attempt_at > $1 AND (claimed_until IS NULL OR claimed_until <= $1)), \
               MIN(next_attempt_at) FILTER (WHERE next_attempt_at > $1 AND (claimed_until IS NULL OR claimed_until <= $1)), \
               COUNT(*) FILTER (WHERE claimed_until > $1), \
               MAX(claimed_until) FILTER (WHERE claimed_until > $1) \
             FROM outbox WHERE status = 'pending'",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(OutboxWaiting {
            in_backoff: in_backoff as u64,
            next_attempt,
            claimed: claimed as u64,
            claimed_until,
        })
    }

    async fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.fetch_outbox(None).await
    }

    async fn mark_sent(&self, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET status = 'sent', sent_at = $1, attempts = attempts + 1, last_error = NULL, \
             claimed_by = NULL, claimed_until = NULL WHERE id = $2",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn pipelining(&self) -> Pipelining {
        Pipelining::ClaimAndReadNext
    }

    /// Counted in the database rather than by loading every pending message (the default).
    async fn outbox_depth(&self) -> Result<u64, StoreError> {
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
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, \
             claimed_by = NULL, claimed_until = NULL WHERE id = $3",
        )
        .bind(crate::redact(error))
        .bind(next_attempt)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn document(&self, number: &str) -> Result<Option<StoredDocument>, StoreError> {
        Ok(self.fetch_documents(DocFilter::Number(number)).await?.pop())
    }

    async fn document_by_id(&self, id: i64) -> Result<Option<StoredDocument>, StoreError> {
        Ok(self.fetch_documents(DocFilter::Id(id)).await?.pop())
    }

    async fn documents(&self, account: Option<&str>) -> Result<Vec<StoredDocument>, StoreError> {
        self.fetch_documents(account.map_or(DocFilter::All, DocFilter::Account))
            .await
    }

    async fn batch_documents(&self, batch: i64) -> Result<Vec<StoredDocument>, StoreError> {
        self.fetch_documents(DocFilter::Batch(batch)).await
    }

    async fn documents_issued(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        self.fetch_documents(DocFilter::Issued(from, to)).await
    }

    async fn refunds_recorded(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<RefundOwed>, StoreError> {
        self.fetch_refunds(RefundFilter::Recorded(from, to)).await
    }

    async fn documents_page(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        self.fetch_documents(DocFilter::Page(after, limit)).await
    }

    async fn balance(&self, account: &str) -> Result<Option<BalanceReport>, StoreError> {
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE id = $1"
        )))
        .bind(account)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let (account_row, balance) = account_from_row(&row)?;
        let mut entries = Vec::new();
        for r in sqlx::query(
            "SELECT l.at, l.amount, l.reason, d.number FROM balance_ledger l LEFT JOIN documents d ON d.id = l.document_id \
             WHERE l.account_id = $1 ORDER BY l.id",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?
        {
            entries.push(LedgerEntry {
                at: r.try_get("at")?,
                amount: r.try_get::<Money, _>("amount")?.0,
                reason: r.try_get("reason")?,
                document: r.try_get("number")?,
            });
        }
        Ok(Some(BalanceReport {
            account: account_row,
            balance,
            entries,
        }))
    }

    async fn balances(&self) -> Result<Vec<(AccountId, Decimal)>, StoreError> {
        let mut out = Vec::new();
        for r in sqlx::query("SELECT id, balance FROM accounts ORDER BY id")
            .fetch_all(&self.pool)
            .await?
        {
            out.push((
                account_id(&r.try_get::<String, _>("id")?)?,
                r.try_get::<Money, _>("balance")?.0,
            ));
        }
        Ok(out)
    }

    async fn previous_invoice_totals(
        &self,
        subscriptions: &[&str],
    ) -> Result<BTreeMap<SubscriptionId, PreviousInvoice>, StoreError> {
        let mut out = BTreeMap::new();
        if subscriptions.is_empty() {
            return Ok(out);
        }
        // One index lookup per subscription (documents_subscription_invoices), one query.
        for r in sqlx::query(
            "SELECT d.subscription_id, d.total, d.period_start, d.period_end \
             FROM UNNEST($1::text[]) AS s(id) CROSS JOIN LATERAL ( \
               SELECT subscription_id, total, period_start, period_end FROM documents \
               WHERE subscription_id = s.id AND kind = 'invoice' AND period_start IS NOT NULL \
               ORDER BY id DESC LIMIT 1) d",
        )
        .bind(subscriptions)
        .fetch_all(&self.pool)
        .await?
        {
            let sub = SubscriptionId::new(&r.try_get::<String, _>("subscription_id")?)
                .map_err(corrupt("subscription id"))?;
            out.insert(
                sub,
                PreviousInvoice {
                    total: r.try_get::<Money, _>("total")?.0,
                    period: period(r.try_get("period_start")?, r.try_get("period_end")?),
                },
            );
        }
        Ok(out)
    }

    async fn park_status(
        &self,
        accounts: &[AccountId],
    ) -> Result<BTreeMap<AccountId, ParkedAccount>, StoreError> {
        if accounts.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ids: Vec<&str> = accounts.iter().map(|a| a.as_str()).collect();
        let rows = sqlx::query(
            "SELECT account_id, reason, status, parked_at, run_id, released_at FROM parked_accounts \
             WHERE account_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| parked_from_row(r).map(|p| (p.account.clone(), p)))
            .collect()
    }

    async fn park_accounts(
        &self,
        run: RunId,
        parked: &[(AccountId, String)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if parked.is_empty() {
            return Ok(());
        }
        let accounts: Vec<&str> = parked.iter().map(|(a, _)| a.as_str()).collect();
        let reasons: Vec<&str> = parked.iter().map(|(_, r)| r.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        for sql in [
            "INSERT INTO parked_accounts (account_id, reason, parked_at, run_id, status, released_at) \
             SELECT a, r, $3, $4, 'parked', NULL FROM UNNEST($1::text[], $2::text[]) AS u(a, r) \
             ON CONFLICT (account_id) DO UPDATE SET reason = EXCLUDED.reason, parked_at = EXCLUDED.parked_at, \
             run_id = EXCLUDED.run_id, status = 'parked', released_at = NULL",
            "INSERT INTO parked_events (account_id, run_id, reason, parked_at) \
             SELECT a, $4, r, $3 FROM UNNEST($1::text[], $2::text[]) AS u(a, r) \
             ON CONFLICT (run_id, account_id) DO NOTHING",
            "INSERT INTO audit_log (at, actor, action, account_id, details) \
             SELECT $3, 'billrun', 'account_parked', a, jsonb_build_object('run', $4::bigint, 'reason', r) \
             FROM UNNEST($1::text[], $2::text[]) AS u(a, r)",
        ] {
            sqlx::query(sql)
                .bind(&accounts)
                .bind(&reasons)
                .bind(now)
                .bind(run)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(())
    }

    async fn consume_releases(
        &self,
        accounts: &[AccountId],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if accounts.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = accounts.iter().map(|a| a.as_str()).collect();
        // One statement: the rows go and their audit rows are written together.
        sqlx::query(
            "WITH gone AS (DELETE FROM parked_accounts WHERE status = 'released' AND account_id = ANY($1) \
             RETURNING account_id) \
             INSERT INTO audit_log (at, actor, action, account_id) \
             SELECT $2, 'billrun', 'account_release_used', account_id FROM gone",
        )
        .bind(&ids)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn parked(&self) -> Result<Vec<ParkedAccount>, StoreError> {
        let rows = sqlx::query(
            "SELECT account_id, reason, status, parked_at, run_id, released_at FROM parked_accounts ORDER BY account_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(parked_from_row).collect()
    }

    async fn unpark(&self, account: &str, now: DateTime<Utc>) -> Result<ParkedAccount, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE parked_accounts SET status = 'released', released_at = $1 \
             WHERE account_id = $2 AND status = 'parked' \
             RETURNING account_id, reason, status, parked_at, run_id, released_at",
        )
        .bind(now)
        .bind(account)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)")
                    .bind(account)
                    .fetch_one(&mut *tx)
                    .await?;
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM parked_accounts WHERE account_id = $1")
                    .bind(account)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Err(unpark_refusal(
                account,
                exists,
                status.as_deref().and_then(ParkStatus::parse),
            ));
        };
        let parked = parked_from_row(&row)?;
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, account_id, details) \
             VALUES ($1, 'billrun', 'account_unparked', $2, jsonb_build_object('reason', $3::text, 'run', $4::bigint))",
        )
        .bind(now)
        .bind(account)
        .bind(&parked.reason)
        .bind(parked.run)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(parked)
    }

    async fn batch_parked(&self, batch: i64) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for r in sqlx::query(
            "SELECT account_id, reason FROM parked_events WHERE finance_batch_id = $1 ORDER BY account_id, id",
        )
        .bind(batch)
        .fetch_all(&self.pool)
        .await?
        {
            out.push((r.try_get("account_id")?, r.try_get("reason")?));
        }
        Ok(out)
    }
}

fn parked_from_row(r: &PgRow) -> Result<ParkedAccount, StoreError> {
    let status: String = r.try_get("status")?;
    Ok(ParkedAccount {
        account: account_id(&r.try_get::<String, _>("account_id")?)?,
        reason: r.try_get("reason")?,
        status: ParkStatus::parse(&status).ok_or_else(|| corrupt("park status")(status.clone()))?,
        since: r.try_get("parked_at")?,
        run: r.try_get("run_id")?,
        released_at: r.try_get("released_at")?,
    })
}

fn outbox_from_row(r: &sqlx::postgres::PgRow) -> Result<OutboxEntry, StoreError> {
    let kind: String = r.try_get("kind")?;
    let kind = match kind.as_str() {
        "document" => OutboxKind::Document(r.try_get("document_id")?),
        _ => OutboxKind::FinanceBatch(r.try_get("finance_batch_id")?),
    };
    Ok(OutboxEntry {
        id: r.try_get("id")?,
        key: r.try_get("message_key")?,
        kind,
        recipient: r.try_get("recipient")?,
        subject: r.try_get("subject")?,
        attempts: r.try_get("attempts")?,
        sent: r.try_get::<String, _>("status")? == "sent",
    })
}
