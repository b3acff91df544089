//! Accounts, subscriptions and what hangs off them: ids, tax rates, discounts, items.
//!
//! Constructors check their input, so a value of these types is valid by construction; the
//! import and scenario loaders turn raw files into them and report the first problem.

use super::money::Currency;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use std::fmt;

macro_rules! id_type {
    ($name:ident, $what:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Ids are 1–64 characters of letters, digits, `-`, `_`, `.`, `@` — safe in file
            /// names, logs and email headers.
            pub fn new(s: &str) -> Result<Self, String> {
                let ok = !s.is_empty()
                    && s.len() <= 64
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
                if ok {
                    Ok(Self(s.to_string()))
                } else {
                    Err(format!(
                        "{} id {s:?} must be 1-64 letters, digits, '-', '_', '.' or '@'",
                        $what
                    ))
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(AccountId, "account");
id_type!(SubscriptionId, "subscription");

/// A tax applied on top of the discounted subtotal, rounded per rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TaxRate {
    pub name: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub percent: Decimal,
}

impl TaxRate {
    pub fn new(name: &str, percent: Decimal) -> Result<Self, String> {
        if name.trim().is_empty() || name.len() > 40 {
            return Err("a tax needs a name of 1-40 characters".into());
        }
        if percent.is_sign_negative() || percent > Decimal::from(100) {
            return Err(format!(
                "tax {name}: percent {percent} must be between 0 and 100"
            ));
        }
        Ok(TaxRate {
            name: name.to_string(),
            percent,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscountValue {
    /// Percent of the discountable lines.
    Percent(#[serde(with = "rust_decimal::serde::str")] Decimal),
    /// A fixed amount per document, never more than the discountable lines.
    Amount(#[serde(with = "rust_decimal::serde::str")] Decimal),
}

/// A discount on an account or a subscription, optionally ending at a date (periods starting
/// on or after it are not discounted) or after a number of billed periods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Discount {
    pub value: DiscountValue,
    pub until: Option<NaiveDate>,
    pub periods: Option<u32>,
}

impl Discount {
    pub fn new(
        value: DiscountValue,
        until: Option<NaiveDate>,
        periods: Option<u32>,
    ) -> Result<Self, String> {
        match value {
            DiscountValue::Percent(p) if p.is_sign_negative() || p > Decimal::from(100) => {
                return Err(format!("discount percent {p} must be between 0 and 100"));
            }
            DiscountValue::Amount(a) if a.is_sign_negative() => {
                return Err(format!("discount amount {a} cannot be negative"));
            }
            _ => {}
        }
        if periods == Some(0) {
            return Err("discount periods must be at least 1".into());
        }
        Ok(Discount {
            value,
            until,
            periods,
        })
    }

    /// Whether the discount applies to a document dated `on`, for a subscription that has
    /// already had `periods_billed` discounted-or-not recurring periods.
    pub fn applies(&self, on: NaiveDate, periods_billed: u32) -> bool {
        self.until.is_none_or(|u| on < u) && self.periods.is_none_or(|n| periods_billed < n)
    }

    pub fn label(&self) -> String {
        match self.value {
            DiscountValue::Percent(p) => format!("Discount {}%", p.normalize()),
            DiscountValue::Amount(a) => format!("Discount {a}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Canceled,
    Deleted,
}

impl AccountStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Canceled => "canceled",
            AccountStatus::Deleted => "deleted",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => AccountStatus::Active,
            "canceled" => AccountStatus::Canceled,
            "deleted" => AccountStatus::Deleted,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub email: String,
    pub currency: Currency,
    /// IANA zone in which this account's period boundaries fall at 00:00.
    pub timezone: String,
    pub taxes: Vec<TaxRate>,
    pub discount: Option<Discount>,
    pub status: AccountStatus,
    /// Postal address lines, printed on documents.
    pub address: Vec<String>,
    /// ISO 3166 alpha-2.
    pub country: Option<String>,
    pub tax_id: Option<String>,
    /// The customer accounts for the VAT: no tax lines on its documents (SPEC §11).
    pub reverse_charge: bool,
}

impl Account {
    /// An active account with no taxes, discount or address: the fields the store and the
    /// import fill in after.
    pub fn new(id: AccountId, name: &str, email: &str, currency: Currency) -> Account {
        Account {
            id,
            name: name.into(),
            email: email.into(),
            currency,
            timezone: "UTC".into(),
            taxes: Vec::new(),
            discount: None,
            status: AccountStatus::Active,
            address: Vec::new(),
            country: None,
            tax_id: None,
            reverse_charge: false,
        }
    }

    /// Address, country, tax ID and reverse charge.
    pub fn identity(&self) -> super::party::Identity {
        super::party::Identity {
            address: self.address.clone(),
            country: self.country.clone(),
            tax_id: self.tax_id.clone(),
            reverse_charge: self.reverse_charge,
        }
    }

    /// The identity as stored (`None`: it has none).
    pub fn identity_json(&self) -> Option<String> {
        let identity = self.identity();
        (!identity.is_empty()).then(|| serde_json::to_string(&identity).unwrap_or_default())
    }

    /// Take address, country, tax ID and reverse charge from what [`Self::identity_json`]
    /// stored.
    pub fn set_identity_json(&mut self, json: Option<&str>) -> Result<(), String> {
        let identity: super::party::Identity = match json {
            Some(j) => serde_json::from_str(j).map_err(|e| e.to_string())?,
            None => Default::default(),
        };
        self.address = identity.address;
        self.country = identity.country;
        self.tax_id = identity.tax_id;
        self.reverse_charge = identity.reverse_charge;
        Ok(())
    }

    /// The tax rates its documents carry: none under reverse charge.
    pub fn taxes_due(&self) -> &[TaxRate] {
        if self.reverse_charge {
            &[]
        } else {
            &self.taxes
        }
    }

    /// The customer as a document issued now names them.
    pub fn customer(&self) -> super::party::Customer {
        super::party::Customer {
            name: self.name.clone(),
            identity: self.identity(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Active,
    Ended,
}

impl SubscriptionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Ended => "ended",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => SubscriptionStatus::Active,
            "ended" => SubscriptionStatus::Ended,
            _ => return None,
        })
    }
}

/// One priced line of a subscription: a plan and how many of it (licences, for per-seat plans).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub plan: String,
    pub quantity: u32,
}

/// What a line of a document is (kept here, beside the pending items that carry one, so the
/// domain needs nothing of the documents built from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A period's price of an item, billed in advance.
    Recurring,
    /// Credit or charge for part of a period after a change.
    Proration,
    /// Used time re-rated at another cycle's price, or a shortfall.
    Adjustment,
    /// Proration carried from a change to this (the next) invoice.
    Pending,
    /// A one-off charge (SPEC §10).
    OneOff,
    /// A partial credit against an invoice (SPEC §10).
    Credit,
    Discount,
    Tax,
}

impl LineKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            LineKind::Recurring => "recurring",
            LineKind::Proration => "proration",
            LineKind::Adjustment => "adjustment",
            LineKind::Pending => "pending",
            LineKind::OneOff => "one_off",
            LineKind::Credit => "credit",
            LineKind::Discount => "discount",
            LineKind::Tax => "tax",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "recurring" => LineKind::Recurring,
            "proration" => LineKind::Proration,
            "adjustment" => LineKind::Adjustment,
            "pending" => LineKind::Pending,
            "one_off" => LineKind::OneOff,
            "credit" => LineKind::Credit,
            "discount" => LineKind::Discount,
            "tax" => LineKind::Tax,
            _ => return None,
        })
    }
    /// The kind finance books a line under (`lines.csv`, SPEC §11).
    pub fn finance_kind(&self) -> &'static str {
        match self {
            LineKind::Recurring => "charge",
            LineKind::Proration | LineKind::Adjustment => "proration",
            LineKind::Pending => "pending",
            LineKind::OneOff => "one_off",
            LineKind::Credit => "credit",
            LineKind::Discount => "discount",
            LineKind::Tax => "tax",
        }
    }
}

/// Proration (or a one-off charge) waiting for the next renewal or final invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingItem {
    pub id: i64,
    pub description: String,
    pub amount: Decimal,
    pub discountable: bool,
    /// `Pending` for proration, `OneOff` for a charge.
    #[serde(skip)]
    pub kind: LineKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub account: AccountId,
    pub policy: String,
    pub cycle: String,
    pub items: Vec<Item>,
    pub discount: Option<Discount>,
    pub start: NaiveDate,
    /// Boundaries of calendar-month cycles are counted from here.
    pub anchor: NaiveDate,
    /// The period last invoiced, if any.
    pub current_period: Option<super::period::Period>,
    /// Start of the next period to invoice: `start` before the first invoice, then the end of
    /// the current period. A subscription is due when this is on or before `as_of`.
    pub next_bill_date: NaiveDate,
    /// Recurring periods invoiced so far (drives discounts limited to N periods).
    pub periods_billed: u32,
    pub status: SubscriptionStatus,
    /// Scheduled end: the subscription ends at the first boundary on or after this date.
    pub cancel_at: Option<NaiveDate>,
    pub pending: Vec<PendingItem>,
    /// Date of the last applied or queued change; a change may not be dated before it.
    pub last_change_at: Option<NaiveDate>,
    /// Bumped by every write; writes are guarded by the version they were computed from.
    pub version: i64,
    /// Changes waiting for a period boundary.
    pub queued: Vec<QueuedChange>,
}

impl Subscription {
    /// A new active subscription, not billed yet: its first period starts at `start`.
    pub fn new(
        id: SubscriptionId,
        account: AccountId,
        policy: &str,
        cycle: &str,
        items: Vec<Item>,
        start: NaiveDate,
    ) -> Subscription {
        Subscription {
            id,
            account,
            policy: policy.into(),
            cycle: cycle.into(),
            items,
            discount: None,
            start,
            anchor: start,
            current_period: None,
            next_bill_date: start,
            periods_billed: 0,
            status: SubscriptionStatus::Active,
            cancel_at: None,
            pending: Vec::new(),
            last_change_at: None,
            version: 0,
            queued: Vec::new(),
        }
    }

    /// The discount of a document dated `on` for this subscription: its own discount, else
    /// the account's, if still running. `period_index` is the number of recurring periods
    /// billed before the one the document belongs to.
    pub fn discount_on<'a>(
        &'a self,
        account: &'a Account,
        on: NaiveDate,
        period_index: u32,
    ) -> Option<&'a Discount> {
        self.discount
            .as_ref()
            .or(account.discount.as_ref())
            .filter(|d| d.applies(on, period_index))
    }
}

/// What a change asks for: any of a plan, a cycle, a quantity (absent = unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Target {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
}

impl Target {
    pub fn is_empty(&self) -> bool {
        self.plan.is_none() && self.cycle.is_none() && self.quantity.is_none()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(p) = &self.plan {
            parts.push(format!("plan {p}"));
        }
        if let Some(c) = &self.cycle {
            parts.push(format!("cycle {c}"));
        }
        if let Some(q) = self.quantity {
            parts.push(format!("quantity {q}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// A change queued for the end of a period; applied by the close that bills that boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuedChange {
    pub id: i64,
    pub effective_at: NaiveDate,
    pub kind: String,
    pub target: Target,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(AccountId::new("acme-1").is_ok());
        assert!(AccountId::new("").is_err());
        assert!(AccountId::new("a b").is_err());
        assert!(SubscriptionId::new(&"x".repeat(65)).is_err());
    }

    #[test]
    fn discounts_end_by_date_or_count() {
        let d = Discount::new(
            DiscountValue::Percent(Decimal::TEN),
            "2026-03-01".parse().ok(),
            Some(2),
        )
        .unwrap();
        assert!(d.applies("2026-01-01".parse().unwrap(), 0));
        assert!(!d.applies("2026-01-01".parse().unwrap(), 2));
        assert!(!d.applies("2026-03-01".parse().unwrap(), 0));
        assert!(Discount::new(DiscountValue::Percent(Decimal::from(101)), None, None).is_err());
    }
}
