//! Sanity bounds: whether an account's close is plausible enough to issue unattended.
//!
//! Pure: the close the billing core computed, the previous period invoice of each of its
//! subscriptions and the configured bounds in; the reasons to park the account out (none:
//! issue it). The shell parks an account with a reason instead of issuing anything for it,
//! and an operator releases it (`billrun unpark`) when the close is legitimate.
//!
//! The bounds:
//! - more than `max_documents_per_subscription` documents for one subscription in one close
//!   (a year of monthly catch-up is legitimate, more is suspicious);
//! - an invoice more than `max_increase` times the subscription's previous period invoice,
//!   when that one exists and is above zero. When the two invoices cover periods of
//!   different cycles (a monthly subscription moved to annual: lengths more than 25% apart),
//!   their daily rates are compared, so a change of cycle is not mistaken for a price jump;
//! - an invoice above an absolute bound in its currency (`max_invoice`): the only bound a
//!   subscription's first invoice meets, since the increase needs a previous one;
//! - a balance that would go negative (the core never produces one; this is the belt to its
//!   braces). That one is an invariant, not a plausibility bound: it holds even for an
//!   account an operator released.

use super::billing::AccountClose;
use super::document::DocumentKind;
use super::domain::SubscriptionId;
use super::money::Currency;
use super::period::Period;
use rust_decimal::{Decimal, RoundingStrategy};
use std::collections::BTreeMap;
use std::fmt;

/// The limits, from configuration. Zero disables a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanityBounds {
    /// At most this many documents for one subscription in one close (0: no limit).
    pub max_documents_per_subscription: u32,
    /// An invoice at most this many times the subscription's previous one (0: no limit).
    pub max_increase: Decimal,
    /// An invoice's total at most this, in its currency's units.
    pub max_invoice: MaxInvoice,
}

/// The absolute bound on one invoice: one per currency, and a default for the others. Zero
/// disables it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxInvoice {
    pub default: Decimal,
    pub per_currency: BTreeMap<Currency, Decimal>,
}

impl MaxInvoice {
    /// Ten million of any currency's units unless configured: far above any plausible
    /// subscription invoice in the currencies that have cents, and stops an absurd first
    /// invoice (a quantity typed with four digits too many) from leaving unattended.
    pub const DEFAULT: Decimal = Decimal::from_parts(10_000_000, 0, 0, false, 0);

    pub const NONE: MaxInvoice = MaxInvoice {
        default: Decimal::ZERO,
        per_currency: BTreeMap::new(),
    };

    pub fn for_currency(&self, currency: Currency) -> Decimal {
        self.per_currency
            .get(&currency)
            .copied()
            .unwrap_or(self.default)
    }
}

impl Default for MaxInvoice {
    fn default() -> Self {
        MaxInvoice {
            default: Self::DEFAULT,
            per_currency: BTreeMap::new(),
        }
    }
}

impl SanityBounds {
    pub const DEFAULT_MAX_DOCUMENTS: u32 = 12;
    pub const DEFAULT_MAX_INCREASE: Decimal = Decimal::TEN;

    /// No limits at all.
    pub const NONE: SanityBounds = SanityBounds {
        max_documents_per_subscription: 0,
        max_increase: Decimal::ZERO,
        max_invoice: MaxInvoice::NONE,
    };
}

impl Default for SanityBounds {
    fn default() -> Self {
        SanityBounds {
            max_documents_per_subscription: Self::DEFAULT_MAX_DOCUMENTS,
            max_increase: Self::DEFAULT_MAX_INCREASE,
            max_invoice: MaxInvoice::default(),
        }
    }
}

/// The latest period invoice (a renewal) a subscription was issued before this close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousInvoice {
    pub total: Decimal,
    pub period: Option<Period>,
}

/// Why an account is parked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParkReason {
    TooManyDocuments {
        subscription: SubscriptionId,
        documents: usize,
        limit: u32,
    },
    TooLargeIncrease {
        subscription: SubscriptionId,
        currency: Currency,
        total: Decimal,
        previous: Decimal,
        /// Days of both periods, when they are of different cycles (the factor compares daily
        /// rates then).
        days: Option<(i64, i64)>,
        factor: Decimal,
        limit: Decimal,
    },
    TooLargeInvoice {
        subscription: Option<SubscriptionId>,
        currency: Currency,
        total: Decimal,
        limit: Decimal,
    },
    NegativeBalance {
        balance: Decimal,
        currency: Currency,
    },
}

impl ParkReason {
    /// Whether an operator's release lets the close through (every bound but the invariant).
    pub fn releasable(&self) -> bool {
        !matches!(self, ParkReason::NegativeBalance { .. })
    }
}

/// A factor for display: rounded up at two decimals, so a factor just above its limit never
/// reads as equal to it.
fn shown(factor: Decimal) -> Decimal {
    factor
        .round_dp_with_strategy(2, RoundingStrategy::ToPositiveInfinity)
        .normalize()
}

impl fmt::Display for ParkReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParkReason::TooManyDocuments {
                subscription,
                documents,
                limit,
            } => write!(
                f,
                "subscription {subscription} would get {documents} documents in one run (limit {limit})"
            ),
            ParkReason::TooLargeIncrease {
                subscription,
                currency,
                total,
                previous,
                days,
                factor,
                limit,
            } => match days {
                None => write!(
                    f,
                    "invoice of {subscription} would be {total} {currency}, {}× its previous {previous} (limit {}×)",
                    shown(*factor),
                    limit.normalize()
                ),
                Some((new_days, previous_days)) => write!(
                    f,
                    "invoice of {subscription} would be {total} {currency} for {new_days} days, {}× the daily rate of its previous {previous} for {previous_days} days (limit {}×)",
                    shown(*factor),
                    limit.normalize()
                ),
            },
            ParkReason::TooLargeInvoice {
                subscription,
                currency,
                total,
                limit,
            } => match subscription {
                Some(sub) => write!(
                    f,
                    "invoice of {sub} would be {total} {currency}, above the limit of {limit} {currency} for one invoice"
                ),
                None => write!(
                    f,
                    "an invoice would be {total} {currency}, above the limit of {limit} {currency} for one invoice"
                ),
            },
            ParkReason::NegativeBalance { balance, currency } => {
                write!(f, "balance would go negative ({balance} {currency})")
            }
        }
    }
}

/// The reasons, joined, as stored and shown.
pub fn describe(reasons: &[ParkReason]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// How many times `prev` the invoice `total` over `period` is: daily rates when both periods
/// are known and of clearly different lengths (another cycle), totals otherwise. `prev.total` must be positive.
fn increase(
    total: Decimal,
    period: Option<Period>,
    prev: &PreviousInvoice,
) -> (Decimal, Option<(i64, i64)>) {
    let days = match (period, prev.period) {
        // Periods of one cycle differ by a few days (28 to 31 for a month): compare totals.
        // Periods of different cycles (a month and a year) differ by far more.
        (Some(p), Some(q))
            if p.days() > 0
                && q.days() > 0
                && p.days().max(q.days()) * 4 > p.days().min(q.days()) * 5 =>
        {
            Some((p.days(), q.days()))
        }
        _ => None,
    };
    let factor = match days {
        Some((new_days, prev_days)) => total.checked_mul(Decimal::from(prev_days)).and_then(|a| {
            prev.total
                .checked_mul(Decimal::from(new_days))
                .and_then(|b| a.checked_div(b))
        }),
        None => total.checked_div(prev.total),
    };
    // Only an absurd amount overflows; that is as implausible as it gets.
    (factor.unwrap_or(Decimal::MAX), days)
}

/// Check one account's close against the bounds. `previous` holds the latest period invoice
/// issued before this close to each subscription that has one; `currency` is the account's.
/// Empty: the close is plausible.
pub fn check(
    close: &AccountClose,
    currency: Currency,
    previous: &BTreeMap<SubscriptionId, PreviousInvoice>,
    bounds: &SanityBounds,
) -> Vec<ParkReason> {
    let mut reasons = Vec::new();

    if bounds.max_documents_per_subscription > 0 {
        let mut counts: BTreeMap<&SubscriptionId, usize> = BTreeMap::new();
        for sub in close
            .documents
            .iter()
            .filter_map(|d| d.subscription.as_ref())
        {
            *counts.entry(sub).or_default() += 1;
        }
        for (sub, n) in counts {
            if n > bounds.max_documents_per_subscription as usize {
                reasons.push(ParkReason::TooManyDocuments {
                    subscription: sub.clone(),
                    documents: n,
                    limit: bounds.max_documents_per_subscription,
                });
            }
        }
    }

    if bounds.max_increase > Decimal::ZERO {
        // Documents come in issue order: each invoice is compared with the period invoice
        // before it, the stored one first, then those of this close (a catch-up).
        let mut last: BTreeMap<&SubscriptionId, PreviousInvoice> = BTreeMap::new();
        let mut flagged: Vec<&SubscriptionId> = Vec::new();
        for doc in &close.documents {
            let Some(sub) = doc.subscription.as_ref() else {
                continue;
            };
            if doc.kind != DocumentKind::Invoice {
                continue;
            }
            let prev = last.get(sub).or_else(|| previous.get(sub)).copied();
            if let Some(prev) = prev
                && prev.total > Decimal::ZERO
                && !flagged.contains(&sub)
            {
                let (factor, days) = increase(doc.total, doc.period, &prev);
                if factor > bounds.max_increase {
                    flagged.push(sub);
                    reasons.push(ParkReason::TooLargeIncrease {
                        subscription: sub.clone(),
                        currency: doc.currency,
                        total: doc.total,
                        previous: prev.total,
                        days,
                        factor,
                        limit: bounds.max_increase,
                    });
                }
            }
            if doc.period.is_some() {
                last.insert(
                    sub,
                    PreviousInvoice {
                        total: doc.total,
                        period: doc.period,
                    },
                );
            }
        }
    }

    let max_invoice = bounds.max_invoice.for_currency(currency);
    if max_invoice > Decimal::ZERO
        && let Some(doc) = close
            .documents
            .iter()
            .filter(|d| d.kind == DocumentKind::Invoice)
            .find(|d| d.total > max_invoice)
    {
        reasons.push(ParkReason::TooLargeInvoice {
            subscription: doc.subscription.clone(),
            currency,
            total: doc.total,
            limit: max_invoice,
        });
    }

    if close.balance_after < Decimal::ZERO {
        reasons.push(ParkReason::NegativeBalance {
            balance: close.balance_after,
            currency,
        });
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::document::{DocumentBuilder, DraftDocument, LineKind};
    use crate::core::domain::{Account, AccountId};
    use chrono::NaiveDate;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    fn usd() -> Currency {
        Currency::new("USD").unwrap()
    }

    fn sub(s: &str) -> SubscriptionId {
        SubscriptionId::new(s).unwrap()
    }

    /// A document of `total` for `sub`; `period` as (start, end), None for a final invoice.
    fn doc(s: &str, total: &str, period: Option<(&str, &str)>) -> DraftDocument {
        let mut b = DocumentBuilder::new(usd());
        b.line(LineKind::Recurring, "x", dec(total), true);
        let period = period.map(|(a, b)| Period {
            start: d(a),
            end: d(b),
        });
        let start = period.map_or(d("2026-01-01"), |p| p.start);
        let account = Account::new(AccountId::new("a1").unwrap(), "A", "a@example.com", usd());
        b.finish(
            format!("k/{s}/{start}"),
            &account,
            Some(sub(s)),
            start,
            start,
            period,
            None,
        )
        .unwrap()
    }

    fn monthly(s: &str, total: &str, n: usize) -> Vec<DraftDocument> {
        (0..n)
            .map(|i| {
                let start = NaiveDate::from_ymd_opt(2020 + (i / 12) as i32, 1 + (i % 12) as u32, 1)
                    .unwrap();
                let end = start.checked_add_months(chrono::Months::new(1)).unwrap();
                doc(s, total, Some((&start.to_string(), &end.to_string())))
            })
            .collect()
    }

    fn close(documents: Vec<DraftDocument>, balance_after: &str) -> AccountClose {
        AccountClose {
            account: AccountId::new("a1").unwrap(),
            documents,
            updates: Vec::new(),
            balance_before: Decimal::ZERO,
            balance_after: dec(balance_after),
            canceled_at: None,
            refund: Decimal::ZERO,
        }
    }

    fn prev(total: &str, period: Option<(&str, &str)>) -> PreviousInvoice {
        PreviousInvoice {
            total: dec(total),
            period: period.map(|(a, b)| Period {
                start: d(a),
                end: d(b),
            }),
        }
    }

    const JAN: Option<(&str, &str)> = Some(("2026-01-01", "2026-02-01"));
    const FEB: Option<(&str, &str)> = Some(("2026-02-01", "2026-03-01"));
    const DEC: Option<(&str, &str)> = Some(("2025-12-01", "2026-01-01"));
    const YEAR: Option<(&str, &str)> = Some(("2026-01-01", "2027-01-01"));

    /// A case of `sanity_cases.toml` (its header says how documents are written).
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Case {
        name: String,
        documents: Vec<String>,
        #[serde(default = "zero")]
        balance_after: String,
        #[serde(default)]
        previous: Vec<String>,
        #[serde(default)]
        bounds: Bounds,
        /// Expected reasons, as displayed.
        #[serde(default)]
        want: Vec<String>,
    }

    fn zero() -> String {
        "0".into()
    }

    #[derive(Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Bounds {
        #[serde(default)]
        none: bool,
        max_increase: Option<String>,
        max_documents_per_subscription: Option<u32>,
        max_invoice: Option<BTreeMap<String, String>>,
    }

    impl Bounds {
        fn get(&self) -> SanityBounds {
            let mut b = if self.none {
                SanityBounds::NONE
            } else {
                SanityBounds::default()
            };
            if let Some(x) = &self.max_increase {
                b.max_increase = dec(x);
            }
            if let Some(n) = self.max_documents_per_subscription {
                b.max_documents_per_subscription = n;
            }
            if let Some(table) = &self.max_invoice {
                b.max_invoice = MaxInvoice::default();
                for (key, amount) in table {
                    match key.as_str() {
                        "default" => b.max_invoice.default = dec(amount),
                        code => {
                            b.max_invoice
                                .per_currency
                                .insert(Currency::new(code).unwrap(), dec(amount));
                        }
                    }
                }
            }
            b
        }
    }

    fn named_period(name: &str) -> Option<(&'static str, &'static str)> {
        match name {
            "JAN" => JAN,
            "FEB" => FEB,
            "DEC" => DEC,
            "YEAR" => YEAR,
            "FINAL" => None,
            other => panic!("unknown period {other}"),
        }
    }

    /// "SUB TOTAL PERIOD", or "SUB TOTAL monthly*N".
    fn documents(spec: &str) -> Vec<DraftDocument> {
        let [s, total, period] = spec.split(' ').collect::<Vec<_>>()[..] else {
            panic!("a document is \"SUB TOTAL PERIOD\", not {spec:?}");
        };
        match period.strip_prefix("monthly*") {
            Some(n) => monthly(s, total, n.parse().unwrap()),
            None => vec![doc(s, total, named_period(period))],
        }
    }

    #[test]
    fn the_cases_of_sanity_cases_toml() {
        #[derive(serde::Deserialize)]
        struct File {
            case: Vec<Case>,
        }
        let file: File = toml::from_str(include_str!("sanity_cases.toml")).unwrap();
        assert!(file.case.len() >= 20);
        for case in file.case {
            let previous: BTreeMap<SubscriptionId, PreviousInvoice> = case
                .previous
                .iter()
                .map(|spec| {
                    let [s, total, period] = spec.split(' ').collect::<Vec<_>>()[..] else {
                        panic!("a previous invoice is \"SUB TOTAL PERIOD\", not {spec:?}");
                    };
                    (sub(s), prev(total, named_period(period)))
                })
                .collect();
            let docs = case.documents.iter().flat_map(|d| documents(d)).collect();
            let got: Vec<String> = check(
                &close(docs, &case.balance_after),
                usd(),
                &previous,
                &case.bounds.get(),
            )
            .iter()
            .map(ToString::to_string)
            .collect();
            assert_eq!(got, case.want, "{}", case.name);
        }
    }

    #[test]
    fn only_the_balance_invariant_is_not_releasable() {
        let r = check(
            &close(monthly("S1", "10.00", 13), "-1.00"),
            usd(),
            &BTreeMap::new(),
            &SanityBounds::default(),
        );
        assert_eq!(
            r.iter().map(ParkReason::releasable).collect::<Vec<_>>(),
            [true, false]
        );
        assert_eq!(
            describe(&r),
            "subscription S1 would get 13 documents in one run (limit 12); balance would go negative (-1.00 USD)"
        );
    }
}
