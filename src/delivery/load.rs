//! What a claimed batch needs to be rendered, read in bulk: the batch's documents in two
//! queries (`documents_by_ids`: the documents, then their lines), the customers of documents
//! issued before customers were copied onto documents in one more, the unassigned licences
//! of their subscriptions in one; a finance batch (one message per run) reads its own
//! documents and extras.

use crate::core::document::Document;
use crate::mail::MailError;
use crate::mail::finance::BatchReport;
use crate::store::prelude::*;
use crate::store::{BatchExtras, OutboxEntry, OutboxKind, StoreError, StoredDocument};
use std::collections::HashMap;

/// A claimed message and what it carries, owned: rendered on another thread.
pub(super) struct Job {
    pub(super) entry: OutboxEntry,
    pub(super) content: Content,
}

// Nearly every job is a document: boxing it would cost an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Content {
    Document {
        document: Document,
        /// Licences on its subscription nobody is assigned (the invoice says so).
        unassigned: u32,
    },
    Finance(Finance),
}

/// A finance batch's documents and what else its runs did.
pub(super) struct Finance {
    batch: i64,
    documents: Vec<Document>,
    extras: BatchExtras,
}

impl Finance {
    pub(super) fn email(
        &self,
        entry: &OutboxEntry,
        from: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<lettre::Message, MailError> {
        let docs: Vec<&Document> = self.documents.iter().collect();
        let report = BatchReport {
            batch: self.batch,
            subject: &entry.subject,
            documents: &docs,
            refunds: &self.extras.refunds,
            deleted_accounts: &self.extras.deleted_accounts,
            parked: &self.extras.parked,
        };
        crate::mail::finance_batch_email(&report, from, &entry.recipient, now)
    }
}

/// The jobs of a claimed batch, in its order.
pub(super) async fn load(
    store: &dyn Store,
    entries: Vec<OutboxEntry>,
) -> Result<Vec<Job>, StoreError> {
    let ids: Vec<i64> = entries
        .iter()
        .filter_map(|e| match e.kind {
            OutboxKind::Document(id) => Some(id),
            OutboxKind::FinanceBatch(_) => None,
        })
        .collect();
    let mut docs = store.documents_by_ids(&ids).await?;
    with_customer(store, &mut docs).await?;
    let subscriptions: Vec<&str> = docs
        .iter()
        .filter_map(|d| d.document.draft.subscription.as_ref().map(|s| s.as_str()))
        .collect();
    let available = store.available_licences(&subscriptions).await?;
    let mut docs: HashMap<i64, Document> = docs.into_iter().map(|d| (d.id, d.document)).collect();
    let mut jobs = Vec::with_capacity(entries.len());
    for entry in entries {
        let content = match entry.kind {
            OutboxKind::Document(id) => {
                let document = docs.remove(&id).ok_or_else(|| {
                    StoreError::Corrupt(format!("outbox names missing document {id}"))
                })?;
                let unassigned = document
                    .draft
                    .subscription
                    .as_ref()
                    .and_then(|s| available.get(s.as_str()).copied())
                    .unwrap_or(0);
                Content::Document {
                    document,
                    unassigned,
                }
            }
            OutboxKind::FinanceBatch(batch) => {
                let mut docs = store.batch_documents(batch).await?;
                with_customer(store, &mut docs).await?;
                let mut extras = store.batch_extras(batch).await?;
                extras.parked = store.batch_parked(batch).await?;
                Content::Finance(Finance {
                    batch,
                    documents: docs.into_iter().map(|d| d.document).collect(),
                    extras,
                })
            }
        };
        jobs.push(Job { entry, content });
    }
    Ok(jobs)
}

/// Documents issued before customers were copied onto documents name the customer as their
/// account does now.
pub async fn with_customer(
    store: &dyn Store,
    docs: &mut [StoredDocument],
) -> Result<(), StoreError> {
    let missing: Vec<String> = docs
        .iter()
        .filter(|d| d.document.draft.customer.name.is_empty())
        .map(|d| d.document.draft.account.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let accounts = store.accounts(&missing).await?;
    for d in docs {
        let draft = &mut d.document.draft;
        if draft.customer.name.is_empty()
            && let Some(a) = accounts.iter().find(|a| a.id == draft.account)
        {
            draft.customer = a.customer();
        }
    }
    Ok(())
}
