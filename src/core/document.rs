//! Documents — invoices and credit notes — and the pure arithmetic that builds them.
//!
//! A document is a list of rounded lines: charges (recurring, proration, pending items),
//! then one discount line computed on the discountable charges, then one tax line per rate
//! computed on the discounted subtotal. `subtotal`, `discount`, `tax` and `total` are sums of
//! those lines, so `total == Σ lines` always holds. A negative total makes a credit note,
//! whose amount goes to the account balance; on an invoice the available balance is applied
//! (`credit_applied`) and `amount_due = total − credit_applied`.

pub use super::domain::LineKind;
use super::domain::{Account, AccountId, Discount, DiscountValue, SubscriptionId, TaxRate};
use super::money::{self, AmountOverflow, Currency};
use super::party::Customer;
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    #[serde(skip)]
    pub kind: LineKind,
    pub description: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    #[serde(skip)]
    pub discountable: bool,
    /// How many of a priced item (charge lines); `None` where a line is one amount.
    #[serde(skip)]
    pub quantity: Option<u32>,
    /// The price of one, before rounding the line (charge lines).
    #[serde(skip)]
    pub unit_price: Option<Decimal>,
    /// The rate a tax line applies, on the document's taxable base.
    #[serde(skip)]
    pub tax: Option<TaxRate>,
}

/// What a line stores besides kind, description and amount (`document_lines.detail`).
#[derive(Debug, Default, Serialize, serde::Deserialize)]
struct LineDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quantity: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    unit_price: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tax: Option<TaxRate>,
}

impl Line {
    /// Quantity, unit price and tax rate as stored (`None`: the line is one amount).
    pub fn detail_json(&self) -> Option<String> {
        if self.quantity.is_none() && self.unit_price.is_none() && self.tax.is_none() {
            return None;
        }
        let detail = LineDetail {
            quantity: self.quantity,
            unit_price: self.unit_price,
            tax: self.tax.clone(),
        };
        Some(serde_json::to_string(&detail).unwrap_or_default())
    }

    /// Take quantity, unit price and tax rate from what [`Self::detail_json`] stored.
    pub fn set_detail_json(&mut self, json: Option<&str>) -> Result<(), String> {
        let d: LineDetail = match json {
            Some(j) => serde_json::from_str(j).map_err(|e| e.to_string())?,
            None => LineDetail::default(),
        };
        self.quantity = d.quantity;
        self.unit_price = d.unit_price;
        self.tax = d.tax;
        Ok(())
    }

    /// A line that is one amount: no quantity, no unit price, no rate.
    pub fn amount(
        kind: LineKind,
        description: String,
        amount: Decimal,
        discountable: bool,
    ) -> Line {
        Line {
            kind,
            description,
            amount,
            discountable,
            quantity: None,
            unit_price: None,
            tax: None,
        }
    }
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
    /// The customer as they were when the document was issued.
    #[serde(skip)]
    pub customer: Customer,
    /// For a credit note against an invoice: that invoice's number (SPEC §10).
    #[serde(skip)]
    pub corrects: Option<String>,
    /// Why a correction was made.
    #[serde(skip)]
    pub reason: Option<String>,
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

impl DraftDocument {
    /// The amount taxes are computed on: the subtotal after the discount (finance's "net").
    pub fn net(&self) -> Decimal {
        self.subtotal + self.discount
    }
}

/// Why a canceled account is owed its balance.
pub const REFUND_ON_CANCEL: &str = "balance of a canceled account";

/// A balance owed back to a customer: what is left on an account when it is canceled (and,
/// with corrections, a void of a paid invoice). Reported to finance, who pay it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundOwed {
    pub account: String,
    pub customer_name: String,
    pub currency: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub reason: String,
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
        self.lines.push(Line::amount(
            kind,
            description.into(),
            self.currency.round(exact),
            discountable,
        ));
        self
    }

    /// Add `quantity` of an item at `unit_price` each, rounded once as a whole.
    pub fn priced(
        &mut self,
        kind: LineKind,
        description: impl Into<String>,
        quantity: u32,
        unit_price: Decimal,
        discountable: bool,
    ) -> &mut Self {
        let exact = unit_price * Decimal::from(quantity);
        self.lines.push(Line {
            quantity: Some(quantity),
            unit_price: Some(unit_price),
            ..Line::amount(
                kind,
                description.into(),
                self.currency.round(exact),
                discountable,
            )
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Close the document: discount line, one tax line per rate (none under reverse
    /// charge), totals. Balance is applied separately ([`apply_balance`]) because it depends
    /// on the order documents are issued in.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        self,
        key: String,
        account: &Account,
        subscription: Option<SubscriptionId>,
        issued_at: NaiveDate,
        due_at: NaiveDate,
        period: Option<Period>,
        discount: Option<&Discount>,
    ) -> Result<DraftDocument, AmountOverflow> {
        let taxes = account.taxes_due();
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
                lines.push(Line::amount(LineKind::Discount, d.label(), amount, false));
                discount_total = amount;
            }
        }

        let taxable = money::add(subtotal, discount_total, "taxable amount")?;
        let mut tax_total = cur.zero();
        for rate in taxes {
            let amount =
                cur.round(money::mul(taxable, rate.percent, "tax")? / Decimal::ONE_HUNDRED);
            lines.push(Line {
                tax: Some(rate.clone()),
                ..Line::amount(
                    LineKind::Tax,
                    format!("{} {}%", rate.name, rate.percent.normalize()),
                    amount,
                    false,
                )
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
            account: account.id.clone(),
            customer: account.customer(),
            corrects: None,
            reason: None,
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

/// Documents for other modules' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::core::domain::Account;

    /// `b` finished as subscription s1's invoice INV-2026-000042 for February 2026.
    pub(crate) fn february_invoice(b: DocumentBuilder, account: &Account) -> Document {
        let day: NaiveDate = "2026-02-01".parse().unwrap();
        let period = Period {
            start: day,
            end: "2026-03-01".parse().unwrap(),
        };
        let sub = SubscriptionId::new("s1").unwrap();
        let draft = b
            .finish("k".into(), account, Some(sub), day, day, Some(period), None)
            .unwrap();
        Document {
            number: "INV-2026-000042".into(),
            draft,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    fn account(taxes: &[TaxRate]) -> Account {
        Account {
            taxes: taxes.to_vec(),
            ..Account::new(
                AccountId::new("a").unwrap(),
                "A",
                "a@example.com",
                Currency::new("USD").unwrap(),
            )
        }
    }

    #[test]
    fn reverse_charge_issues_no_tax_lines_and_keeps_the_customer() {
        let usd = Currency::new("USD").unwrap();
        let mut b = DocumentBuilder::new(usd);
        b.priced(LineKind::Recurring, "Seat", 3, dec("10.005"), true);
        let mut acct = account(&[TaxRate::new("VAT", dec("20")).unwrap()]);
        acct.tax_id = Some("FR12345678901".into());
        acct.reverse_charge = true;
        let day: NaiveDate = "2026-01-31".parse().unwrap();
        let doc = b
            .finish("k".into(), &acct, None, day, day, None, None)
            .unwrap();
        assert_eq!(doc.lines.len(), 1);
        assert_eq!(doc.lines[0].amount.to_string(), "30.02");
        assert_eq!(doc.lines[0].quantity, Some(3));
        assert_eq!(doc.lines[0].unit_price, Some(dec("10.005")));
        assert_eq!((doc.tax, doc.total), (Decimal::ZERO, dec("30.02")));
        assert!(doc.customer.reverse_charge);
        assert_eq!(doc.customer.tax_id.as_deref(), Some("FR12345678901"));
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
                &account(&taxes),
                None,
                day,
                day,
                None,
                Some(&disc),
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
            .finish("k".into(), &account(&[]), None, day, day, None, None)
            .unwrap();
        assert_eq!(doc.kind, DocumentKind::CreditNote);
        assert_eq!(
            apply_balance(&mut doc, Decimal::ZERO).unwrap().to_string(),
            "49.00"
        );
    }
}
