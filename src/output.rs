//! JSON views shared by the CLI and the simulator (SPEC §8 document shape).

use crate::core::document::Document;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct LineJson {
    pub description: String,
    pub amount: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DocumentJson {
    pub number: Option<String>,
    pub kind: &'static str,
    /// The invoice a credit note corrects (SPEC §10).
    pub corrects: Option<String>,
    pub reason: Option<String>,
    pub account: String,
    pub subscription: Option<String>,
    pub issued_at: String,
    pub due_at: String,
    pub period_start: Option<String>,
    pub period_end: Option<String>,
    pub currency: String,
    pub lines: Vec<LineJson>,
    pub subtotal: String,
    pub discount: String,
    pub tax: String,
    pub total: String,
    pub credit_applied: String,
    pub amount_due: String,
}

impl DocumentJson {
    pub fn new(number: Option<&str>, d: &crate::core::document::DraftDocument) -> Self {
        DocumentJson {
            number: number.map(str::to_string),
            kind: d.kind.as_str(),
            corrects: d.corrects.clone(),
            reason: d.reason.clone(),
            account: d.account.to_string(),
            subscription: d.subscription.as_ref().map(|s| s.to_string()),
            issued_at: d.issued_at.to_string(),
            due_at: d.due_at.to_string(),
            period_start: d.period.map(|p| p.start.to_string()),
            period_end: d.period.map(|p| p.end.to_string()),
            currency: d.currency.to_string(),
            lines: d
                .lines
                .iter()
                .map(|l| LineJson {
                    description: l.description.clone(),
                    amount: l.amount.to_string(),
                })
                .collect(),
            subtotal: d.subtotal.to_string(),
            discount: d.discount.to_string(),
            tax: d.tax.to_string(),
            total: d.total.to_string(),
            credit_applied: d.credit_applied.to_string(),
            amount_due: d.amount_due.to_string(),
        }
    }
}

/// What an operation reports: the documents it issued (numbered), or, when it issued none (a
/// quote, a dry run), the drafts it computed.
pub fn documents_json(
    drafts: &[crate::core::document::DraftDocument],
    issued: &[crate::store::StoredDocument],
) -> Vec<DocumentJson> {
    if issued.is_empty() {
        drafts.iter().map(|d| DocumentJson::new(None, d)).collect()
    } else {
        issued
            .iter()
            .map(|d| DocumentJson::from(&d.document))
            .collect()
    }
}

impl From<&Document> for DocumentJson {
    fn from(doc: &Document) -> Self {
        DocumentJson::new(Some(&doc.number), &doc.draft)
    }
}

/// One row of a document listing.
pub fn document_row(doc: &Document) -> String {
    let d = &doc.draft;
    format!(
        "{:<18} {:<11} {:<16} {}  {:>12} {:>12} {}",
        doc.number,
        d.kind.as_str(),
        d.account.as_str(),
        d.issued_at,
        d.total.to_string(),
        d.amount_due.to_string(),
        d.currency
    )
}

pub fn document_header() -> String {
    format!(
        "{:<18} {:<11} {:<16} {:<10}  {:>12} {:>12} {}",
        "number", "kind", "account", "issued", "total", "amount due", "cur"
    )
}
