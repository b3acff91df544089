//! Stored rows read into domain types, once for both backends. A backend's result row reads
//! its columns through [`Cols`] (each backend decodes its own column types: SQLite's TEXT
//! dates, timestamps and amounts, PostgreSQL's DATE, TIMESTAMPTZ and NUMERIC); everything
//! after that — ids checked, enums parsed, JSON columns taken apart, rows grouped into
//! accounts — is here. [`text`] is the text form of dates, timestamps and amounts (SQLite's
//! columns, and the JSON rows its bulk reads return).

use super::{ChangeRecord, LedgerEntry};
use super::{OutboxEntry, OutboxKind, ParkStatus, ParkedAccount, StoreError, StoredDocument};
use crate::core::billing::AccountState;
use crate::core::document::{
    Document, DocumentKind, DraftDocument, Line, LineKind, REFUND_ON_CANCEL, RefundOwed,
};
use crate::core::domain::{
    Account, AccountId, AccountStatus, Discount, Item, PendingItem, QueuedChange, Subscription,
    SubscriptionId, SubscriptionStatus, TaxRate,
};
use crate::core::licence::{Licence, LicenceStatus};
use crate::core::money::Currency;
use crate::core::period::Period;
use crate::core::sanity::PreviousInvoice;
use crate::store::Result;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// A result row's columns, by name, as the store's types.
pub(crate) trait Cols {
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn flag(&self, col: &str) -> Result<bool>;
    fn day(&self, col: &str) -> Result<NaiveDate>;
    fn opt_day(&self, col: &str) -> Result<Option<NaiveDate>>;
    fn ts(&self, col: &str) -> Result<DateTime<Utc>>;
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>>;
    fn money(&self, col: &str) -> Result<Decimal>;
    /// A JSON column (TEXT on SQLite, JSONB on PostgreSQL) as JSON text.
    fn json_text(&self, col: &str) -> Result<String>;
    fn opt_json_text(&self, col: &str) -> Result<Option<String>>;
}

/// The [`Cols`] methods whose column types both backends decode alike.
macro_rules! plain_cols {
    () => {
        fn text(&self, col: &str) -> Result<String> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn opt_text(&self, col: &str) -> Result<Option<String>> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn int(&self, col: &str) -> Result<i64> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn opt_int(&self, col: &str) -> Result<Option<i64>> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
        fn flag(&self, col: &str) -> Result<bool> {
            Ok(sqlx::Row::try_get(self, col)?)
        }
    };
}
pub(crate) use plain_cols;

pub(crate) fn corrupt(what: &str) -> impl Fn(String) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| corrupt(what)(e.to_string()))
}

pub(crate) fn account_id(s: &str) -> Result<AccountId> {
    AccountId::new(s).map_err(corrupt("account id"))
}

/// Stored account ids, checked.
pub(crate) fn account_ids(ids: &[String]) -> Result<Vec<AccountId>> {
    ids.iter().map(|s| account_id(s)).collect()
}

fn subscription_id(s: &str) -> Result<SubscriptionId> {
    SubscriptionId::new(s).map_err(corrupt("subscription id"))
}

fn currency(s: &str) -> Result<Currency> {
    Currency::new(s).map_err(corrupt("currency"))
}

pub(crate) fn period(start: Option<NaiveDate>, end: Option<NaiveDate>) -> Option<Period> {
    match (start, end) {
        (Some(start), Some(end)) => Some(Period { start, end }),
        _ => None,
    }
}

/// Dates, timestamps and amounts as text: how SQLite stores them, and how JSON rows carry
/// them.
pub(crate) mod text {
    use super::*;

    pub(crate) fn amount(s: &str) -> Result<Decimal> {
        Decimal::from_str_exact(s).map_err(|_| StoreError::Corrupt(format!("amount {s:?}")))
    }

    pub(crate) fn date(s: &str) -> Result<NaiveDate> {
        // The form dates are stored in, read without chrono's general parser (a chunk reads a
        // dozen thousand dates); anything else goes through it.
        if let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = *s.as_bytes()
            && [y0, y1, y2, y3, m0, m1, d0, d1]
                .iter()
                .all(u8::is_ascii_digit)
        {
            let n = |ds: &[u8]| ds.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
            let year = n(&[y0, y1, y2, y3]) as i32;
            if let Some(d) = NaiveDate::from_ymd_opt(year, n(&[m0, m1]), n(&[d0, d1])) {
                return Ok(d);
            }
        }
        s.parse()
            .map_err(|_| StoreError::Corrupt(format!("date {s:?}")))
    }

    pub(crate) fn timestamp(s: &str) -> Result<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| StoreError::Corrupt(format!("timestamp {s:?}")))
    }

    /// serde's view of [`date`], for JSON rows.
    pub(super) fn de_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        date(&s).map_err(serde::de::Error::custom)
    }

    pub(super) fn de_opt_date<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<NaiveDate>, D::Error> {
        let s: Option<String> = serde::Deserialize::deserialize(d)?;
        s.as_deref()
            .map(date)
            .transpose()
            .map_err(serde::de::Error::custom)
    }

    pub(super) fn de_amount<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        amount(&s).map_err(serde::de::Error::custom)
    }
}

/// An `accounts` row as stored: read from a result row, or from a JSON array of these
/// columns in this order (dates and amounts as [`text`]).
#[derive(serde::Deserialize)]
pub(crate) struct AccountRow {
    id: String,
    name: String,
    email: String,
    currency: String,
    timezone: String,
    taxes: String,
    discount: Option<String>,
    status: String,
    #[serde(deserialize_with = "text::de_amount")]
    balance: Decimal,
    /// Address, country, tax ID, reverse charge (`Account::identity_json`).
    identity: Option<String>,
}

impl AccountRow {
    pub(crate) fn read(r: &impl Cols) -> Result<Self> {
        Ok(AccountRow {
            id: r.text("id")?,
            name: r.text("name")?,
            email: r.text("email")?,
            currency: r.text("currency")?,
            timezone: r.text("timezone")?,
            taxes: r.json_text("taxes")?,
            discount: r.opt_json_text("discount")?,
            status: r.text("status")?,
            balance: r.money("balance")?,
            identity: r.opt_text("identity")?,
        })
    }

    /// The account and its balance.
    pub(crate) fn parse(self) -> Result<(Account, Decimal)> {
        let taxes: Vec<TaxRate> = from_json("taxes", &self.taxes)?;
        let discount: Option<Discount> = self
            .discount
            .map(|j| from_json("discount", &j))
            .transpose()?;
        let status = self.status;
        let mut account = Account {
            timezone: self.timezone,
            taxes,
            discount,
            status: AccountStatus::parse(&status)
                .ok_or_else(|| corrupt("status")(status.clone()))?,
            ..Account::new(
                account_id(&self.id)?,
                &self.name,
                &self.email,
                currency(&self.currency)?,
            )
        };
        account
            .set_identity_json(self.identity.as_deref())
            .map_err(corrupt("identity"))?;
        Ok((account, self.balance))
    }
}

pub(crate) fn account_from_row(r: &impl Cols) -> Result<(Account, Decimal)> {
    AccountRow::read(r)?.parse()
}

/// What `load_accounts` reads of a subscription: from a result row, or from a JSON array of
/// these columns in this order (dates as [`text`]).
#[derive(serde::Deserialize)]
pub(crate) struct SubscriptionRow {
    id: String,
    account_id: String,
    policy: String,
    cycle: String,
    discount: Option<String>,
    #[serde(deserialize_with = "text::de_date")]
    start_date: NaiveDate,
    #[serde(deserialize_with = "text::de_date")]
    anchor: NaiveDate,
    #[serde(deserialize_with = "text::de_opt_date")]
    period_start: Option<NaiveDate>,
    #[serde(deserialize_with = "text::de_opt_date")]
    period_end: Option<NaiveDate>,
    #[serde(deserialize_with = "text::de_date")]
    next_bill_date: NaiveDate,
    periods_billed: i64,
    status: String,
    #[serde(deserialize_with = "text::de_opt_date")]
    cancel_at: Option<NaiveDate>,
    #[serde(deserialize_with = "text::de_opt_date")]
    last_change_at: Option<NaiveDate>,
    version: i64,
}

impl SubscriptionRow {
    pub(crate) fn read(r: &impl Cols) -> Result<Self> {
        Ok(SubscriptionRow {
            id: r.text("id")?,
            account_id: r.text("account_id")?,
            policy: r.text("policy")?,
            cycle: r.text("cycle")?,
            discount: r.opt_json_text("discount")?,
            start_date: r.day("start_date")?,
            anchor: r.day("anchor")?,
            period_start: r.opt_day("period_start")?,
            period_end: r.opt_day("period_end")?,
            next_bill_date: r.day("next_bill_date")?,
            periods_billed: r.int("periods_billed")?,
            status: r.text("status")?,
            cancel_at: r.opt_day("cancel_at")?,
            last_change_at: r.opt_day("last_change_at")?,
            version: r.int("version")?,
        })
    }
}

/// The accounts of a chunk with their active subscriptions, those with their items, pending
/// items and queued changes (each list keyed by subscription id, in the order read).
pub(crate) fn assemble(
    accounts: Vec<AccountRow>,
    subscriptions: Vec<SubscriptionRow>,
    items: Vec<(String, String, i64)>,
    pending: Vec<(String, PendingItem)>,
    queued: Vec<(String, QueuedChange)>,
) -> Result<Vec<AccountState>> {
    let mut states: BTreeMap<String, AccountState> = BTreeMap::new();
    for a in accounts {
        let (account, balance) = a.parse()?;
        states.insert(
            account.id.as_str().to_string(),
            AccountState {
                account,
                balance,
                subscriptions: Vec::new(),
            },
        );
    }
    let mut items_of: BTreeMap<String, Vec<Item>> = BTreeMap::new();
    for (sub, plan, quantity) in items {
        items_of.entry(sub).or_default().push(Item {
            plan,
            quantity: u32::try_from(quantity).map_err(|e| corrupt("quantity")(e.to_string()))?,
        });
    }
    let mut pending_of: BTreeMap<String, Vec<PendingItem>> = BTreeMap::new();
    for (sub, p) in pending {
        pending_of.entry(sub).or_default().push(p);
    }
    let mut queued_of: BTreeMap<String, Vec<QueuedChange>> = BTreeMap::new();
    for (sub, c) in queued {
        queued_of.entry(sub).or_default().push(c);
    }
    for r in subscriptions {
        let discount: Option<Discount> =
            r.discount.map(|j| from_json("discount", &j)).transpose()?;
        let sub = Subscription {
            id: subscription_id(&r.id)?,
            account: account_id(&r.account_id)?,
            policy: r.policy,
            cycle: r.cycle,
            items: items_of.remove(&r.id).unwrap_or_default(),
            discount,
            start: r.start_date,
            anchor: r.anchor,
            current_period: period(r.period_start, r.period_end),
            next_bill_date: r.next_bill_date,
            periods_billed: u32::try_from(r.periods_billed).unwrap_or(u32::MAX),
            status: SubscriptionStatus::parse(&r.status)
                .ok_or_else(|| corrupt("status")(r.status.clone()))?,
            cancel_at: r.cancel_at,
            pending: pending_of.remove(&r.id).unwrap_or_default(),
            last_change_at: r.last_change_at,
            version: r.version,
            queued: queued_of.remove(&r.id).unwrap_or_default(),
        };
        if let Some(state) = states.get_mut(&r.account_id) {
            state.subscriptions.push(sub);
        }
    }
    Ok(states.into_values().collect())
}

/// A `document_lines` row: its document's id and the line.
pub(crate) fn line_from_row(r: &impl Cols) -> Result<(i64, Line)> {
    let kind = r.text("kind")?;
    let mut line = Line::amount(
        LineKind::parse(&kind).ok_or_else(|| corrupt("line kind")(kind.clone()))?,
        r.text("description")?,
        r.money("amount")?,
        false,
    );
    line.set_detail_json(r.opt_text("detail")?.as_deref())
        .map_err(corrupt("line detail"))?;
    Ok((r.int("document_id")?, line))
}

/// A `documents` row, with its lines taken from `lines`.
pub(crate) fn document_from_row(
    r: &impl Cols,
    lines: &mut BTreeMap<i64, Vec<Line>>,
) -> Result<StoredDocument> {
    let id = r.int("id")?;
    let kind = r.text("kind")?;
    // The customer as issued; documents from before that was kept name none here, and
    // `delivery::with_customer` names the account as it is.
    let customer = match r.opt_text("customer")? {
        Some(j) => from_json("customer", &j)?,
        None => Default::default(),
    };
    let draft = DraftDocument {
        key: r.text("doc_key")?,
        customer,
        corrects: r.opt_text("corrects")?,
        reason: r.opt_text("reason")?,
        kind: DocumentKind::parse(&kind).ok_or_else(|| corrupt("document kind")(kind.clone()))?,
        account: account_id(&r.text("account_id")?)?,
        subscription: r
            .opt_text("subscription_id")?
            .as_deref()
            .map(subscription_id)
            .transpose()?,
        issued_at: r.day("issued_at")?,
        due_at: r.day("due_at")?,
        period: period(r.opt_day("period_start")?, r.opt_day("period_end")?),
        currency: currency(&r.text("currency")?)?,
        lines: lines.remove(&id).unwrap_or_default(),
        subtotal: r.money("subtotal")?,
        discount: r.money("discount")?,
        tax: r.money("tax")?,
        total: r.money("total")?,
        credit_applied: r.money("credit_applied")?,
        amount_due: r.money("amount_due")?,
        consumes_pending: Vec::new(),
    };
    Ok(StoredDocument {
        id,
        document: Document {
            number: r.text("number")?,
            draft,
        },
        finance_batch: r.opt_int("finance_batch_id")?,
    })
}

/// The line kind of a pending item's `kind` column.
pub(crate) fn pending_kind(kind: &str) -> Result<LineKind> {
    match LineKind::parse(kind) {
        Some(k @ (LineKind::Pending | LineKind::OneOff)) => Ok(k),
        _ => Err(corrupt("pending item kind")(kind.to_string())),
    }
}

/// An `audit_log` row.
pub(crate) fn audit_from_row(r: &impl Cols) -> Result<super::AuditEntry> {
    Ok(super::AuditEntry {
        at: r.ts("at")?,
        actor: r.text("actor")?,
        action: r.text("action")?,
        account: r.opt_text("account_id")?,
        subscription: r.opt_text("subscription_id")?,
        details: from_json("audit details", &r.json_text("details")?)?,
    })
}

/// A refund owed, from `shared::finance::refunds_select!` (the ledger holds it as a debit).
pub(crate) fn refund_from_row(r: &impl Cols) -> Result<RefundOwed> {
    Ok(RefundOwed {
        account: r.text("account_id")?,
        customer_name: r.text("name")?,
        currency: r.text("currency")?,
        amount: -r.money("amount")?,
        reason: REFUND_ON_CANCEL.into(),
    })
}

pub(crate) fn outbox_from_row(r: &impl Cols) -> Result<OutboxEntry> {
    let kind = match r.text("kind")?.as_str() {
        "document" => OutboxKind::Document(r.int("document_id")?),
        _ => OutboxKind::FinanceBatch(r.int("finance_batch_id")?),
    };
    Ok(OutboxEntry {
        id: r.int("id")?,
        key: r.text("message_key")?,
        kind,
        recipient: r.text("recipient")?,
        subject: r.text("subject")?,
        attempts: r.int("attempts")?,
        sent: r.text("status")? == "sent",
    })
}

pub(crate) fn parked_from_row(r: &impl Cols) -> Result<ParkedAccount> {
    let status = r.text("status")?;
    Ok(ParkedAccount {
        account: account_id(&r.text("account_id")?)?,
        reason: r.text("reason")?,
        status: ParkStatus::parse(&status).ok_or_else(|| corrupt("park status")(status.clone()))?,
        since: r.ts("parked_at")?,
        run: r.opt_int("run_id")?,
        released_at: r.opt_ts("released_at")?,
    })
}

pub(crate) fn licence_from_row(r: &impl Cols) -> Result<Licence> {
    let status = r.text("status")?;
    Ok(Licence {
        id: r.int("id")?,
        plan: r.text("plan")?,
        status: LicenceStatus::parse(&status)
            .ok_or_else(|| corrupt("licence status")(status.clone()))?,
        assigned_to: r.opt_text("assigned_to")?,
    })
}

pub(crate) fn change_from_row(r: &impl Cols) -> Result<ChangeRecord> {
    Ok(ChangeRecord {
        subscription: r.text("subscription_id")?,
        kind: r.text("kind")?,
        target: from_json("change target", &r.json_text("target")?)?,
        requested_at: r.day("requested_at")?,
        effective_at: r.day("effective_at")?,
        status: r.text("status")?,
    })
}

pub(crate) fn ledger_from_row(r: &impl Cols) -> Result<LedgerEntry> {
    Ok(LedgerEntry {
        at: r.day("at")?,
        amount: r.money("amount")?,
        reason: r.text("reason")?,
        document: r.opt_text("number")?,
    })
}

/// A subscription's latest period invoice (`subscription_id, total, period_start, period_end`).
pub(crate) fn previous_invoice_from_row(
    r: &impl Cols,
) -> Result<(SubscriptionId, PreviousInvoice)> {
    Ok((
        subscription_id(&r.text("subscription_id")?)?,
        PreviousInvoice {
            total: r.money("total")?,
            period: period(r.opt_day("period_start")?, r.opt_day("period_end")?),
        },
    ))
}
