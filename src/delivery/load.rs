//! What a claimed batch needs to be rendered, read in bulk: the batch's documents in two
//! queries (`documents_by_ids`: the documents, then their lines), the customers of documents
//! issued before customers were copied onto documents in one more, the unassigned licences
//! of their subscriptions in one. A finance batch (one message per run, carrying every
//! document of the run) is built here, page by page, into a spool file (`BatchSpool`): its
//! size never sits in memory.

use crate::core::document::Document;
use crate::mail::batch::{BatchReport, BatchSpool};
use crate::mail::{EmlDir, MailError};
use crate::store::prelude::*;
use crate::store::{OutboxEntry, OutboxKind, StoreError, StoredDocument};
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
    /// A finance batch, already written whole to a spool file (or why it could not be).
    Finance(Result<SpooledBatch, MailError>),
}

/// A finance batch message in a private temporary file, deleted when dropped.
pub(super) struct SpooledBatch {
    pub(super) file: tempfile::NamedTempFile,
    pub(super) envelope: lettre::address::Envelope,
}

/// Documents of a finance batch read (and spooled) at a time.
const BATCH_PAGE: u32 = 1000;

/// How a finance batch is addressed and where its spool file goes: into the `.eml` folder
/// (then renamed to its final name) or the system's temporary folder (then streamed to the
/// server).
pub(super) struct SpoolTarget<'a> {
    pub(super) from: &'a str,
    pub(super) now: chrono::DateTime<chrono::Utc>,
    pub(super) folder: Option<&'a EmlDir>,
}

/// The jobs of a claimed batch, in its order.
pub(super) async fn load(
    store: &dyn Store,
    entries: Vec<OutboxEntry>,
    target: &SpoolTarget<'_>,
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
                Content::Finance(spool_batch(store, batch, &entry, target).await?)
            }
        };
        jobs.push(Job { entry, content });
    }
    Ok(jobs)
}

/// Finance batch `batch` written whole to a spool file, its documents read a page at a time
/// and written off the async threads. A store error fails the pass; anything else (a full
/// disk) fails this message, retried later.
async fn spool_batch(
    store: &dyn Store,
    batch: i64,
    entry: &OutboxEntry,
    target: &SpoolTarget<'_>,
) -> Result<Result<SpooledBatch, MailError>, StoreError> {
    let mut spool = match BatchSpool::new() {
        Ok(spool) => spool,
        Err(e) => return Ok(Err(e)),
    };
    let mut after = 0;
    loop {
        let mut page = store.batch_documents(batch, after, BATCH_PAGE).await?;
        let Some(last) = page.last().map(|d| d.id) else {
            break;
        };
        after = last;
        with_customer(store, &mut page).await?;
        let added = off_thread(move || {
            let docs: Vec<&Document> = page.iter().map(|d| &d.document).collect();
            spool.add(&docs).map(|()| spool)
        });
        spool = match added.await {
            Ok(spool) => spool,
            Err(e) => return Ok(Err(e)),
        };
    }
    let mut extras = store.batch_extras(batch).await?;
    extras.parked = store.batch_parked(batch).await?;
    let (subject, recipient) = (entry.subject.clone(), entry.recipient.clone());
    let (from, now) = (target.from.to_string(), target.now);
    let dir = target
        .folder
        .map_or_else(std::env::temp_dir, |f| f.path().to_path_buf());
    Ok(off_thread(move || {
        let report = BatchReport {
            batch,
            subject: &subject,
            refunds: &extras.refunds,
            deleted_accounts: &extras.deleted_accounts,
            parked: &extras.parked,
        };
        let (file, envelope) = spool.finish_in(&dir, &report, &from, &recipient, now)?;
        Ok(SpooledBatch { file, envelope })
    })
    .await)
}

/// `f` on the blocking pool; a panic there fails the message.
async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MailError> + Send + 'static,
) -> Result<T, MailError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| MailError::Build(format!("finance batch: {e}")))?
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
