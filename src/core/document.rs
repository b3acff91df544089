//! Documents — invoices and credit notes — and the pure arithmetic that builds them.
//!
//! A document is a list of rounded lines: charges (recurring, proration, pending items),
//! then one discount line computed on the discountable charges, then one tax line per rate
//! computed on the discounted subtotal. `subtotal`, `discount`, `tax` and `total` are sums of
//! those lines, so `total == Σ lines` always holds. A negative total makes a credit note,
//! whose amount goes to the account balance; on an invoice the available balance is applied
//! (`credit_applied`) and `amount_due = total − credit_applied`.

use super::domain::{AccountId, Discount, DiscountValue, SubscriptionId, TaxRate};
use super::money::{self, AmountOverflow, Currency};
use super::period::Period;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Invoice,
    CreditNote,
}

impl DocumentKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            DocumentKind::Invoice => "invoice",
            DocumentKind::CreditNote => "credit_note",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "invoice" => Some(DocumentKind::Invoice),
            "credit_note" => Some(DocumentKind::CreditNote),
            _ => None,
        }
    }
    pub fn title(&self) -> &'static str {
        match self {
            DocumentKind::Invoice => "Invoice",
            DocumentKind::CreditNote => "Credit note",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A period's price of an item, billed in advance.
    Recurring,
    /// Credit or charge for part of a period after a change.
    Proration,
    /// Used time re-rated at another cycle's price, or a shortfall.
    Adjustment,
    Discount,
    Tax,
}

impl LineKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            LineKind::Recurring => "recurring",
            LineKind::Proration => "proration",
            LineKind::Adjustment => "adjustment",
            LineKind::Discount => "discount",
            LineKind::Tax => "tax",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "recurring" => LineKind::Recurring,
            "proration" => LineKind::Proration,
            "adjustment" => LineKind::Adjustment,
            "discount" => LineKind::Discount,
            "tax" => LineKind::Tax,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    #[serde(skip)]
    pub kind: LineKind,
    pub description: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    #[serde(skip)]
    pub discountable: bool,
}

/// A document computed by the billing core, before the store gives it a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DraftDocument {
    /// What makes this document unique (e.g. `renewal/SUB/2026-02-01`); the schema holds a
    /// unique index on it, so the same document can never be issued twice.
    #[serde(skip)]
    pub key: String,
    pub kind: DocumentKind,
    pub account: AccountId,
    pub subscription: Option<SubscriptionId>,
    pub issued_at: NaiveDate,
    pub due_at: NaiveDate,
    #[serde(skip)]
    pub period: Option<Period>,
    pub currency: Currency,
    pub lines: Vec<Line>,
    #[serde(with = "rust_decimal::serde::str")]
    pub subtotal: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub discount: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub tax: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub credit_applied: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount_due: Decimal,
    /// Pending items this document consumed.
    #[serde(skip)]
    pub consumes_pending: Vec<i64>,
}

/// An issued document: a draft with its gapless number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub number: String,
    pub draft: DraftDocument,
}

/// Collects charge lines, then closes the document with discount and taxes.
pub struct DocumentBuilder {
    currency: Currency,
    lines: Vec<Line>,
}

impl DocumentBuilder {
    pub fn new(currency: Currency) -> Self {
        DocumentBuilder {
            currency,
            lines: Vec::new(),
        }
    }

    /// Add a charge (positive) or credit (negative) line, rounded with the one rule.
    pub fn line(
        &mut self,
        kind: LineKind,
        description: impl Into<String>,
        exact: Decimal,
        discountable: bool,
    ) -> &mut Self {
        self.lines.push(Line {
            kind,
            description: description.into(),
            amount: self.currency.round(exact),
            discountable,
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Close the document: discount line, one tax line per rate, totals. Balance is applied
    /// separately ([`apply_balance`]) because it depends on the order documents are issued in.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        self,
        key: String,
        account: AccountId,
        subscription: Option<SubscriptionId>,
        issued_at: NaiveDate,
        due_at: NaiveDate,
        period: Option<Period>,
        discount: Option<&Discount>,
        taxes: &[TaxRate],
    ) -> Result<DraftDocument, AmountOverflow> {
        let cur = self.currency;
        let mut lines = self.lines;
        let subtotal = money::sum(lines.iter().map(|l| l.amount), "document subtotal")?;
        let discountable = money::sum(
            lines.iter().filter(|l| l.discountable).map(|l| l.amount),
            "discountable amount",
        )?;

        let mut discount_total = cur.zero();
        if let Some(d) = discount {
            let exact = match d.value {
                DiscountValue::Percent(p) => {
                    money::mul(discountable, p, "discount")? / Decimal::ONE_HUNDRED
                }
                // A fixed discount never turns the discountable part negative, and never
                // grows a credit.
                DiscountValue::Amount(a) => a.min(discountable.max(Decimal::ZERO)),
            };
            let amount = cur.round(-exact);
            if !amount.is_zero() {
                lines.push(Line {
                    kind: LineKind::Discount,
                    description: d.label(),
                    amount,
                    discountable: false,
                });
                discount_total = amount;
            }
        }

        let taxable = money::add(subtotal, discount_total, "taxable amount")?;
        let mut tax_total = cur.zero();
        for rate in taxes {
            let amount =
                cur.round(money::mul(taxable, rate.percent, "tax")? / Decimal::ONE_HUNDRED);
            lines.push(Line {
                kind: LineKind::Tax,
                description: format!("{} {}%", rate.name, rate.percent.normalize()),
                amount,
                discountable: false,
            });
            tax_total = money::add(tax_total, amount, "tax total")?;
        }

        let total = cur.round(money::add(taxable, tax_total, "document total")?);
        let kind = if total.is_sign_negative() && !total.is_zero() {
            DocumentKind::CreditNote
        } else {
            DocumentKind::Invoice
        };
        Ok(DraftDocument {
            key,
            kind,
            account,
            subscription,
            issued_at,
            due_at,
            period,
            currency: cur,
            lines,
            subtotal: cur.round(subtotal),
            discount: discount_total,
            tax: tax_total,
            total,
            credit_applied: cur.zero(),
            amount_due: if kind == DocumentKind::Invoice {
                total
            } else {
                cur.zero()
            },
            consumes_pending: Vec::new(),
        })
    }
}

/// Apply the account balance to a document in issue order and return the balance after it:
/// an invoice consumes up to its total, a credit note adds its amount.
pub fn apply_balance(doc: &mut DraftDocument, balance: Decimal) -> Result<Decimal, AmountOverflow> {
    match doc.kind {
        DocumentKind::Invoice => {
            let applied = balance.max(Decimal::ZERO).min(doc.total);
            doc.credit_applied = doc.currency.round(applied);
            doc.amount_due = doc
                .currency
                .round(money::sub(doc.total, applied, "amount due")?);
            money::sub(balance, applied, "balance")
        }
        DocumentKind::CreditNote => {
            doc.credit_applied = doc.currency.zero();
            doc.amount_due = doc.currency.zero();
            money::sub(balance, doc.total, "balance")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    #[test]
    fn discount_then_tax_per_rate() {
        let usd = Currency::new("USD").unwrap();
        let mut b = DocumentBuilder::new(usd);
        b.line(LineKind::Recurring, "Plan", dec("49.99"), true);
        let disc = Discount::new(DiscountValue::Percent(dec("10")), None, None).unwrap();
        let taxes = [
            TaxRate::new("GST", dec("5")).unwrap(),
            TaxRate::new("QST", dec("9.975")).unwrap(),
        ];
        let day: NaiveDate = "2026-01-31".parse().unwrap();
        let mut doc = b
            .finish(
                "k".into(),
                AccountId::new("a").unwrap(),
                None,
                day,
                day,
                None,
                Some(&disc),
                &taxes,
            )
            .unwrap();
        let amounts: Vec<String> = doc.lines.iter().map(|l| l.amount.to_string()).collect();
        assert_eq!(amounts, ["49.99", "-5.00", "2.25", "4.49"]);
        assert_eq!(doc.total.to_string(), "51.73");
        assert_eq!(
            doc.total,
            doc.lines.iter().map(|l| l.amount).sum::<Decimal>()
        );
        let left = apply_balance(&mut doc, dec("20.00")).unwrap();
        assert_eq!(
            (
                doc.credit_applied.to_string(),
                doc.amount_due.to_string(),
                left.to_string()
            ),
            ("20.00".into(), "31.73".into(), "0.00".into())
        );
    }

    #[test]
    fn negative_total_is_a_credit_note_and_feeds_the_balance() {
        let usd = Currency::new("USD").unwrap();
        let mut b = DocumentBuilder::new(usd);
        b.line(LineKind::Proration, "Unused", dec("-49"), true);
        let day: NaiveDate = "2026-03-01".parse().unwrap();
        let mut doc = b
            .finish(
                "k".into(),
                AccountId::new("a").unwrap(),
                None,
                day,
                day,
                None,
                None,
                &[],
            )
            .unwrap();
        assert_eq!(doc.kind, DocumentKind::CreditNote);
        assert_eq!(
            apply_balance(&mut doc, Decimal::ZERO).unwrap().to_string(),
            "49.00"
        );
    }
}
