//! Delivery: the outbox drained through a transport. Messages are claimed (several workers
//! never send one twice), rendered from what the store holds — the document and its account,
//! or a finance batch — sent, and marked sent or failed with an exponential backoff. The
//! summary says what was left waiting and why.

use crate::clock::Clock;
use crate::context::{Billing, CloseSettings};
use crate::core::document::Document;
use crate::core::party::Seller;
use crate::mail::finance::BatchReport;
use crate::mail::{MailError, Transport};
use crate::store::prelude::*;
use crate::store::{OutboxEntry, OutboxKind, OutboxWaiting, StoreError, StoredDocument};
use chrono::Duration;
use serde::Serialize;

/// What one pass over the outbox did, and what it left waiting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub sent: u64,
    /// Failed in this pass; queued again with a backoff.
    pub failed: u64,
    /// Not taken by this pass: in backoff (from earlier failures) or claimed by another worker.
    pub waiting: OutboxWaiting,
}

impl Billing<'_> {
    /// Send every due outbox message; failures are retried later with exponential backoff.
    /// Without a transport nothing leaves and nothing is claimed.
    pub async fn deliver_due(&self) -> Result<Delivery, StoreError> {
        self.deliver(false).await
    }

    /// Send every queued message, those waiting out a backoff too (an operator's `billrun
    /// send --retry-now` once the mail server is back).
    pub async fn deliver_all(&self) -> Result<Delivery, StoreError> {
        self.deliver(true).await
    }

    async fn deliver(&self, ignore_backoff: bool) -> Result<Delivery, StoreError> {
        match self.transport {
            Some(transport) => {
                deliver(
                    self.store,
                    transport,
                    self.clock,
                    self.settings,
                    ignore_backoff,
                )
                .await
            }
            None => Ok(Delivery::default()),
        }
    }
}

/// Send outbox messages; `ignore_backoff` also sends those waiting for their next attempt
/// (an operator's `billrun send --retry-now` once the mail server is back).
async fn deliver(
    store: &dyn Store,
    transport: &dyn Transport,
    clock: &dyn Clock,
    settings: &CloseSettings,
    ignore_backoff: bool,
) -> Result<Delivery, StoreError> {
    let from = settings.mail_from.as_str();
    let (mut sent, mut failed) = (0, 0);
    let mut seen = std::collections::HashSet::new();
    loop {
        let now = clock.now();
        let horizon = if ignore_backoff {
            now + Duration::days(36_500)
        } else {
            now
        };
        // Claimed, not just read: a message is sent by the one worker that claimed it, so
        // several workers draining one outbox never send a message twice.
        let lease = now + Duration::seconds(i64::from(settings.lease_seconds));
        let due = store
            .claim_outbox(&settings.worker, horizon, now, lease, 50)
            .await?;
        let due: Vec<_> = due.into_iter().filter(|e| seen.insert(e.id)).collect();
        if due.is_empty() {
            break;
        }
        for entry in due {
            let outcome = match render(store, &entry, from, &settings.seller, clock).await? {
                Ok(message) => transport.send(&entry.key, &message).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {
                    store.mark_sent(entry.id, clock.now()).await?;
                    sent += 1;
                }
                Err(e) => {
                    let backoff =
                        Duration::seconds(30 * 2_i64.pow(entry.attempts.clamp(0, 10) as u32));
                    tracing::warn!(message = %entry.key, attempts = entry.attempts + 1, error = %e, "send failed; will retry");
                    store
                        .mark_failed(entry.id, &e.to_string(), clock.now() + backoff)
                        .await?;
                    failed += 1;
                }
            }
        }
    }
    let waiting = store.outbox_waiting(clock.now()).await?;
    Ok(Delivery {
        sent,
        failed,
        waiting,
    })
}

async fn render(
    store: &dyn Store,
    entry: &OutboxEntry,
    from: &str,
    seller: &Seller,
    clock: &dyn Clock,
) -> Result<Result<lettre::Message, MailError>, StoreError> {
    let recipient = &entry.recipient;
    match &entry.kind {
        OutboxKind::Document(id) => {
            let Some(mut doc) = store.document_by_id(*id).await? else {
                return Err(StoreError::Corrupt(format!(
                    "outbox names missing document {id}"
                )));
            };
            with_customer(store, std::slice::from_mut(&mut doc)).await?;
            let unassigned = match &doc.document.draft.subscription {
                Some(sub) => store.licence_counts(sub.as_str()).await?.1,
                None => 0,
            };
            // Sent to the address captured when the document was issued.
            Ok(crate::mail::document_email(
                &doc.document,
                seller,
                unassigned,
                from,
                recipient,
                clock.now(),
            ))
        }
        OutboxKind::FinanceBatch(batch) => {
            let mut docs = store.batch_documents(*batch).await?;
            with_customer(store, &mut docs).await?;
            let mut extras = store.batch_extras(*batch).await?;
            extras.parked = store.batch_parked(*batch).await?;
            let docs: Vec<&Document> = docs.iter().map(|d| &d.document).collect();
            let report = BatchReport {
                batch: *batch,
                subject: &entry.subject,
                documents: &docs,
                refunds: &extras.refunds,
                deleted_accounts: &extras.deleted_accounts,
                parked: &extras.parked,
            };
            Ok(crate::mail::finance_batch_email(
                &report,
                from,
                recipient,
                clock.now(),
            ))
        }
    }
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
