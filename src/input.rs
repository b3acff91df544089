//! Input files: the accounts and subscriptions of `import FILE.json` and of a scenario's
//! `[[accounts]]` / `[[subscriptions]]` (same fields), validated against the catalog.
//!
//! Validation is complete before anything is written: [`validate`] either returns a batch
//! that the store can insert in one transaction, or the first problem, naming the record.

use crate::core::catalog::Catalog;
use crate::core::domain::{
    Account, AccountId, AccountStatus, Discount, DiscountValue, Item, Subscription, SubscriptionId,
    TaxRate,
};
use crate::core::limits;
use crate::core::money::{Currency, parse_amount};
use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub id: String,
    pub name: Option<String>,
    pub email: String,
    pub currency: String,
    pub timezone: Option<String>,
    #[serde(default)]
    pub taxes: Vec<RawTax>,
    pub discount: Option<RawDiscount>,
    /// Opening credit, added to the balance.
    pub credit: Option<String>,
    /// Postal address lines, printed on documents (SPEC §11).
    #[serde(default)]
    pub address: Vec<String>,
    /// ISO 3166 alpha-2.
    pub country: Option<String>,
    pub tax_id: Option<String>,
    /// The customer accounts for the VAT; needs `tax_id`.
    #[serde(default)]
    pub reverse_charge: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTax {
    pub name: String,
    pub percent: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscount {
    pub percent: Option<String>,
    pub amount: Option<String>,
    pub until: Option<String>,
    pub periods: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubscription {
    pub id: String,
    pub account: String,
    pub policy: String,
    pub cycle: String,
    pub start: String,
    pub items: Vec<RawItem>,
    pub discount: Option<RawDiscount>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawItem {
    pub plan: String,
    #[serde(default = "one")]
    pub quantity: u32,
    #[serde(default)]
    pub assigned: Vec<String>,
}

fn one() -> u32 {
    1
}

/// The JSON file of `billrun import`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportFile {
    #[serde(default)]
    pub accounts: Vec<RawAccount>,
    #[serde(default)]
    pub subscriptions: Vec<RawSubscription>,
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub account: Account,
    pub opening_credit: Decimal,
}

#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub subscription: Subscription,
    /// One entry per licence of each per-seat item: (plan, holder email if assigned).
    pub licences: Vec<(String, Option<String>)>,
}

/// A change queued for a subscription's period end, carried over from another system.
#[derive(Debug, Clone)]
pub struct NewQueuedChange {
    pub subscription: SubscriptionId,
    /// Unique per change (`scheduled_changes.change_key`).
    pub key: String,
    pub kind: String,
    pub target: crate::core::domain::Target,
    pub requested_at: NaiveDate,
    pub effective_at: NaiveDate,
}

/// A charge or credit waiting for the subscription's next invoice.
#[derive(Debug, Clone)]
pub struct NewPendingItem {
    pub subscription: SubscriptionId,
    /// Unique per item (`pending_items.source_key`).
    pub key: String,
    pub description: String,
    pub amount: Decimal,
    pub discountable: bool,
}

/// A validated import, ready to be written in one transaction.
///
/// The JSON import fills accounts and subscriptions; queued changes and pending items come
/// from `billrun bench`'s generator (and from a migration tool, when one exists).
#[derive(Debug, Clone, Default)]
pub struct ImportBatch {
    pub accounts: Vec<NewAccount>,
    pub subscriptions: Vec<NewSubscription>,
    pub queued_changes: Vec<NewQueuedChange>,
    pub pending_items: Vec<NewPendingItem>,
}

pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .ok()
        // Four-digit years only: stored dates compare as text, and date arithmetic must stay
        // far from the ends of chrono's calendar.
        .filter(|d| (1..=9999).contains(&d.year()))
        .ok_or_else(|| format!("{s:?} is not a date (expected YYYY-MM-DD)"))
}

pub fn check_email(s: &str) -> Result<(), String> {
    s.parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|_| format!("{s:?} is not an email address"))
}

pub fn check_timezone(s: &str) -> Result<(), String> {
    s.parse::<chrono_tz::Tz>()
        .map(|_| ())
        .map_err(|_| format!("{s:?} is not an IANA time zone (e.g. UTC, America/Toronto)"))
}

fn discount(raw: &RawDiscount) -> Result<Discount, String> {
    let value = match (&raw.percent, &raw.amount) {
        (Some(p), None) => DiscountValue::Percent(parse_amount(p)?),
        (None, Some(a)) => DiscountValue::Amount(parse_amount(a)?),
        _ => return Err("discount: give exactly one of `percent` or `amount`".into()),
    };
    let until = raw.until.as_deref().map(parse_date).transpose()?;
    Discount::new(value, until, raw.periods)
}

/// Validate raw records against the catalog. `existing` holds accounts already stored that
/// subscriptions in this batch may belong to; ids already stored are rejected by the store.
pub fn validate(
    accounts: &[RawAccount],
    subscriptions: &[RawSubscription],
    catalog: &Catalog,
    default_timezone: &str,
    existing: &BTreeMap<String, Account>,
) -> Result<ImportBatch, String> {
    let mut batch = ImportBatch::default();
    let mut currencies: BTreeMap<String, Currency> = existing
        .iter()
        .map(|(id, a)| (id.clone(), a.currency))
        .collect();
    let mut seen = BTreeSet::new();

    for raw in accounts {
        let ctx = |e: String| format!("account {:?}: {e}", raw.id);
        let id = AccountId::new(&raw.id).map_err(ctx)?;
        if !seen.insert(raw.id.clone()) {
            return Err(format!("duplicate account id {:?} in the input", raw.id));
        }
        check_email(&raw.email).map_err(ctx)?;
        let currency = Currency::new(&raw.currency).map_err(ctx)?;
        let timezone = raw
            .timezone
            .clone()
            .unwrap_or_else(|| default_timezone.to_string());
        check_timezone(&timezone).map_err(ctx)?;
        if let Some(name) = &raw.name
            && name.chars().count() > limits::MAX_NAME_CHARS
        {
            return Err(ctx(format!(
                "name is {} characters, over the limit of {}",
                name.chars().count(),
                limits::MAX_NAME_CHARS
            )));
        }
        if raw.taxes.len() > limits::MAX_TAX_RATES_PER_ACCOUNT {
            return Err(ctx(format!(
                "{} tax rates is over the limit of {}",
                raw.taxes.len(),
                limits::MAX_TAX_RATES_PER_ACCOUNT
            )));
        }
        let mut taxes = Vec::new();
        for t in &raw.taxes {
            taxes.push(TaxRate::new(&t.name, parse_amount(&t.percent).map_err(ctx)?).map_err(ctx)?);
        }
        let discount = raw
            .discount
            .as_ref()
            .map(discount)
            .transpose()
            .map_err(ctx)?;
        let opening_credit = match &raw.credit {
            Some(c) => parse_amount(c).map_err(ctx)?,
            None => Decimal::ZERO,
        };
        if opening_credit.is_sign_negative() || !currency.is_whole_minor(opening_credit) {
            return Err(ctx(format!(
                "credit {opening_credit} must be a non-negative amount in whole {currency} minor units"
            )));
        }
        let opening_credit = currency.round(opening_credit);
        currencies.insert(raw.id.clone(), currency);
        let account = Account {
            timezone,
            taxes,
            discount,
            address: raw.address.clone(),
            country: raw.country.clone(),
            tax_id: raw.tax_id.clone(),
            reverse_charge: raw.reverse_charge,
            ..Account::new(
                id,
                raw.name.as_deref().unwrap_or(&raw.id),
                &raw.email,
                currency,
            )
        };
        account.identity().check().map_err(ctx)?;
        batch.accounts.push(NewAccount {
            account,
            opening_credit,
        });
    }

    let mut seen = BTreeSet::new();
    for raw in subscriptions {
        let ctx = |e: String| format!("subscription {:?}: {e}", raw.id);
        let id = SubscriptionId::new(&raw.id).map_err(ctx)?;
        if !seen.insert(raw.id.clone()) {
            return Err(format!(
                "duplicate subscription id {:?} in the input",
                raw.id
            ));
        }
        let currency = *currencies
            .get(&raw.account)
            .ok_or_else(|| ctx(format!("unknown account {:?}", raw.account)))?;
        if let Some(a) = existing
            .get(&raw.account)
            .filter(|a| a.status != AccountStatus::Active)
        {
            return Err(ctx(format!(
                "account {:?} is {}; it takes no new subscriptions",
                raw.account,
                a.status.as_str()
            )));
        }
        catalog
            .policy(&raw.policy)
            .map_err(|e| ctx(e.to_string()))?;
        catalog.cycle(&raw.cycle).map_err(|e| ctx(e.to_string()))?;
        let start = parse_date(&raw.start).map_err(ctx)?;
        if raw.items.is_empty() {
            return Err(ctx("has no items".into()));
        }
        if raw.items.len() > limits::MAX_ITEMS_PER_SUBSCRIPTION {
            return Err(ctx(format!(
                "{} items is over the limit of {}",
                raw.items.len(),
                limits::MAX_ITEMS_PER_SUBSCRIPTION
            )));
        }
        let mut items = Vec::new();
        let mut assigned: Vec<(String, String)> = Vec::new();
        let mut licences = Vec::new();
        let mut plans = BTreeSet::new();
        for item in &raw.items {
            let plan = catalog.plan(&item.plan).map_err(|e| ctx(e.to_string()))?;
            catalog
                .price(&item.plan, currency, &raw.cycle)
                .map_err(|e| ctx(e.to_string()))?;
            if !plans.insert(item.plan.clone()) {
                return Err(ctx(format!("plan {:?} listed twice in items", item.plan)));
            }
            if item.quantity == 0 {
                return Err(ctx(format!(
                    "item {:?}: quantity must be at least 1",
                    item.plan
                )));
            }
            limits::check_quantity(&item.plan, plan.per_seat, item.quantity).map_err(ctx)?;
            if !item.assigned.is_empty() && !plan.per_seat {
                return Err(ctx(format!(
                    "item {:?}: only per-seat plans have assigned users",
                    item.plan
                )));
            }
            if item.assigned.len() > item.quantity as usize {
                return Err(ctx(format!(
                    "item {:?}: {} users assigned but only {} licences",
                    item.plan,
                    item.assigned.len(),
                    item.quantity
                )));
            }
            for user in &item.assigned {
                check_email(user).map_err(ctx)?;
                if assigned.iter().any(|(_, u)| u == user) {
                    return Err(ctx(format!("user {user:?} is assigned twice")));
                }
                assigned.push((item.plan.clone(), user.clone()));
            }
            if plan.per_seat {
                for k in 0..item.quantity as usize {
                    licences.push((item.plan.clone(), item.assigned.get(k).cloned()));
                }
            }
            items.push(Item {
                plan: item.plan.clone(),
                quantity: item.quantity,
            });
        }
        let discount = raw
            .discount
            .as_ref()
            .map(discount)
            .transpose()
            .map_err(ctx)?;
        batch.subscriptions.push(NewSubscription {
            subscription: Subscription {
                discount,
                ..Subscription::new(
                    id,
                    AccountId::new(&raw.account).map_err(ctx)?,
                    &raw.policy,
                    &raw.cycle,
                    items,
                    start,
                )
            },
            licences,
        });
    }
    Ok(batch)
}

/// Account ids that subscriptions refer to but the batch does not define.
pub fn referenced_accounts(
    accounts: &[RawAccount],
    subscriptions: &[RawSubscription],
) -> Vec<String> {
    let defined: BTreeSet<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
    let refs: BTreeSet<String> = subscriptions
        .iter()
        .filter(|s| !defined.contains(s.account.as_str()))
        .map(|s| s.account.clone())
        .collect();
    refs.into_iter().collect()
}
