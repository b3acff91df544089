//! The names of the messages the outbox carries: their keys and subjects. Pure, and here
//! rather than in `mail` because the store writes them into the outbox in the transaction
//! that issues the documents.

use super::document::DocumentKind;
use chrono::NaiveDate;

pub fn document_subject(kind: DocumentKind, number: &str) -> String {
    format!("{} {number}", kind.title())
}

pub fn finance_batch_key(batch: i64) -> String {
    format!("finance-batch-{batch:06}")
}

pub fn finance_batch_subject(batch: i64, as_of: NaiveDate, documents: u64) -> String {
    format!("Billing run as of {as_of}: {documents} document(s) (batch {batch})")
}
