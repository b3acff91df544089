//! Delivery: the outbox drained through a transport. Messages are claimed (several workers
//! never send one twice), rendered from what the store holds — the document and its account,
//! or a finance batch — sent, and marked sent or failed with an exponential backoff. The
//! summary says what was left waiting and why.

use crate::clock::Clock;
use crate::context::{Billing, CloseSettings};
use crate::mail::{MailError, Transport};
use crate::store::prelude::*;
use crate::store::{OutboxEntry, OutboxKind, OutboxWaiting, StoreError};
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
            let outcome = match render(store, &entry, from, clock).await? {
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
    clock: &dyn Clock,
) -> Result<Result<lettre::Message, MailError>, StoreError> {
    let recipient = &entry.recipient;
    match &entry.kind {
        OutboxKind::Document(id) => {
            let Some(doc) = store.document_by_id(*id).await? else {
                return Err(StoreError::Corrupt(format!(
                    "outbox names missing document {id}"
                )));
            };
            let mut account = store
                .accounts(&[doc.document.draft.account.to_string()])
                .await?
                .pop()
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("document {} has no account", doc.document.number))
                })?;
            // The address captured when the document was issued.
            account.email = recipient.to_string();
            let unassigned = match &doc.document.draft.subscription {
                Some(sub) => store.licence_counts(sub.as_str()).await?.1,
                None => 0,
            };
            Ok(crate::mail::document_email(
                &doc.document,
                &account,
                unassigned,
                from,
                clock.now(),
            ))
        }
        OutboxKind::FinanceBatch(batch) => {
            let docs = store.batch_documents(*batch).await?;
            let mut extras = store.batch_extras(*batch).await?;
            extras.parked = store.batch_parked(*batch).await?;
            Ok(crate::mail::finance_batch_email(
                *batch,
                &entry.subject,
                &docs,
                &extras,
                from,
                recipient,
                clock.now(),
            ))
        }
    }
}
