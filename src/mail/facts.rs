//! What a document says, decided once: the facts SPEC §11 requires on an invoice or credit
//! note, as labelled strings in reading order. The PDF, the email's text part and its HTML
//! part all lay out these same facts, so they cannot disagree.

use crate::core::document::{Document, DocumentKind, Line, LineKind};
use crate::core::party::{REVERSE_CHARGE_NOTE, Seller};

/// One row of the lines table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub description: String,
    pub quantity: String,
    pub unit_price: String,
    pub amount: String,
}

/// One row of the totals block; `strong` rows (total, amount due) stand out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalRow {
    pub label: String,
    pub amount: String,
    pub strong: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentFacts {
    /// "Invoice" or "Credit note".
    pub title: &'static str,
    pub number: String,
    pub currency: String,
    pub seller_name: String,
    /// Address lines, country, tax ID, email.
    pub seller_lines: Vec<String>,
    pub customer_name: String,
    pub customer_lines: Vec<String>,
    /// Number, dates, period, account, subscription; for a credit note what it corrects.
    pub references: Vec<(&'static str, String)>,
    pub rows: Vec<Row>,
    pub totals: Vec<TotalRow>,
    /// Reverse charge, the credit note's effect, payment terms and instructions.
    pub notes: Vec<Note>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub strong: bool,
}

impl DocumentFacts {
    pub fn of(doc: &Document, seller: &Seller) -> DocumentFacts {
        let d = &doc.draft;
        let cur = d.currency;
        let money = |x: rust_decimal::Decimal| format!("{x} {cur}");

        let mut seller_lines = seller.address.clone();
        seller_lines.push(seller.country.clone());
        seller_lines.extend(seller.tax_id.iter().map(|id| format!("Tax ID {id}")));
        seller_lines.extend(seller.email.iter().cloned());

        let cu = &d.customer;
        let mut customer_lines = cu.address.clone();
        customer_lines.extend(cu.country.iter().cloned());
        customer_lines.extend(cu.tax_id.iter().map(|id| format!("Tax ID {id}")));

        let mut references = vec![
            ("Number", doc.number.clone()),
            ("Issue date", d.issued_at.to_string()),
            ("Due date", d.due_at.to_string()),
        ];
        references.extend(d.period.map(|p| ("Period", p.to_string())));
        references.extend(d.corrects.iter().map(|n| ("Corrects invoice", n.clone())));
        references.extend(d.reason.iter().map(|r| ("Reason", r.clone())));
        references.push(("Account", d.account.to_string()));
        references.extend(
            d.subscription
                .as_ref()
                .map(|s| ("Subscription", s.to_string())),
        );

        let rows = d
            .lines
            .iter()
            .filter(|l| !matches!(l.kind, LineKind::Discount | LineKind::Tax))
            .map(|l| Row {
                description: l.description.clone(),
                quantity: l.quantity.unwrap_or(1).to_string(),
                unit_price: cur.price(l.unit_price.unwrap_or(l.amount)),
                amount: l.amount.to_string(),
            })
            .collect();

        let row = |label: String, amount, strong| TotalRow {
            label,
            amount: money(amount),
            strong,
        };
        let mut totals = vec![row("Subtotal".into(), d.subtotal, false)];
        for l in d.lines.iter().filter(|l| l.kind == LineKind::Discount) {
            totals.push(row(l.description.clone(), l.amount, false));
        }
        let taxes: Vec<&Line> = d.lines.iter().filter(|l| l.kind == LineKind::Tax).collect();
        if !taxes.is_empty() || !d.discount.is_zero() {
            totals.push(row("Net".into(), d.net(), false));
        }
        for l in taxes {
            let label = match &l.tax {
                Some(rate) => format!(
                    "{} {}% on {}",
                    rate.name,
                    rate.percent.normalize(),
                    money(d.net())
                ),
                None => l.description.clone(),
            };
            totals.push(row(label, l.amount, false));
        }
        totals.push(row("Total".into(), d.total, true));

        let mut notes = Vec::new();
        let note = |text: String, strong| Note { text, strong };
        if cu.reverse_charge {
            notes.push(note(REVERSE_CHARGE_NOTE.into(), true));
            notes.push(note(
                format!(
                    "Seller's tax ID: {}. Customer's tax ID: {}.",
                    seller.tax_id.as_deref().unwrap_or("none"),
                    cu.tax_id.as_deref().unwrap_or("none")
                ),
                false,
            ));
        }
        match d.kind {
            DocumentKind::Invoice => {
                // Shown as a deduction; a zero stays "0.00", not "-0.00".
                let applied = if d.credit_applied.is_zero() {
                    d.credit_applied
                } else {
                    -d.credit_applied
                };
                totals.push(row("Credit applied".into(), applied, false));
                totals.push(row("Amount due".into(), d.amount_due, true));
                let terms = if d.due_at == d.issued_at {
                    "Payment terms: due on receipt.".to_string()
                } else {
                    format!(
                        "Payment terms: {} days; please pay by {}.",
                        (d.due_at - d.issued_at).num_days(),
                        d.due_at
                    )
                };
                notes.push(note(terms, false));
                notes.extend(
                    seller
                        .payment_instructions
                        .iter()
                        .map(|p| note(p.clone(), false)),
                );
            }
            DocumentKind::CreditNote => notes.push(note(
                format!(
                    "{} has been added to your account balance.",
                    money(-d.total)
                ),
                false,
            )),
        }

        DocumentFacts {
            title: d.kind.title(),
            number: doc.number.clone(),
            currency: cur.to_string(),
            seller_name: seller.legal_name.clone(),
            seller_lines,
            customer_name: cu.name.clone(),
            customer_lines,
            references,
            rows,
            totals,
            notes,
        }
    }
}
