//! Delivery: the outbox drained through a transport, in one pipeline that `close`, `send`,
//! the daemon and every change use (`Billing::deliver_due` / `deliver_all`). Four stages run
//! at once on the caller's task, joined by bounded channels, so memory stays bounded
//! whatever the outbox holds:
//!
//! 1. claim a batch of messages in id order ([`BATCH`]; several workers never send one
//!    twice: only the claimant sends) and read what rendering needs in bulk (`load`): the
//!    documents, their customers and licence counts in a few queries per batch;
//! 2. renew the claims of a slice of it ([`SLICE`]) just before rendering, and keep only the
//!    messages still claimed by this worker, so a message that waited in the pipeline past
//!    its lease is never sent by two workers;
//! 3. render on the blocking pool, as many at once as the machine has cores (the PDF is
//!    most of the CPU); the `.eml` transport writes its file right there;
//! 4. send over the transport, as many at once as it takes (`smtp_connections`), and mark
//!    what was accepted as sent in bulk — one statement per group of ids, flushed every
//!    [`MARK_GROUP`] messages or [`MARK_WAIT`] — and each failure with its own exponential
//!    backoff.
//!
//! A message is marked sent only after the transport accepted it. Between the two a crash
//! loses the mark, and the message goes out again on the next pass, with the same
//! Message-ID: delivery is at least once, and the window is one mark group. The summary says
//! what was left waiting and why.

mod load;

use crate::clock::Clock;
use crate::context::{Billing, CloseSettings};
use crate::core::party::Seller;
use crate::mail::{EmlDir, Formatted, MailError, Transport};
use crate::progress::Watcher;
use crate::store::prelude::*;
use crate::store::{OutboxClaim, OutboxWaiting, StoreError};
use crate::takeover::take_over_gone;
use chrono::Duration;
use futures_util::stream::{self, BoxStream, StreamExt};
use load::{Content, Job, SpoolTarget};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::{Receiver, Sender};

pub use load::with_customer;

/// Messages claimed (and read) at a time; the next batch is claimed while this one is sent.
pub const BATCH: u32 = 256;

/// Messages whose claims are renewed together, just before they are rendered.
pub const SLICE: usize = 64;

/// Accepted messages marked sent in one statement, at most; a group is flushed when full,
/// when [`MARK_WAIT`] has passed since its first message, or at the end.
pub const MARK_GROUP: usize = 256;
const MARK_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

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

    /// `deliver_due` or (with `ignore_backoff`) `deliver_all`, telling `progress` how many
    /// messages are to go and each one done (`billrun send` on a terminal).
    pub async fn deliver_watched(
        &self,
        ignore_backoff: bool,
        progress: Option<&Watcher>,
    ) -> Result<Delivery, StoreError> {
        let Some(transport) = self.transport else {
            return Ok(Delivery::default());
        };
        if let Some(p) = progress {
            p.0.start("messages", Some(self.messages_to_go(ignore_backoff).await?));
        }
        let pass = Pass {
            store: self.store,
            transport,
            clock: self.clock,
            settings: self.settings,
            ignore_backoff,
            progress,
        };
        let mut delivery = pass.run().await?;
        if delivery.waiting.claimed > 0 {
            // Messages under another worker's claim: if that worker is gone, they are free
            // now, and one more pass sends them instead of leaving them to its lease.
            let others =
                take_over_gone(self.store, &self.settings.worker, self.clock.now()).await?;
            if others.taken_messages > 0 {
                let again = pass.run().await?;
                delivery = Delivery {
                    sent: delivery.sent + again.sent,
                    failed: delivery.failed + again.failed,
                    waiting: again.waiting,
                };
            }
        }
        if let Some(p) = progress {
            p.0.finish();
        }
        Ok(delivery)
    }

    async fn deliver(&self, ignore_backoff: bool) -> Result<Delivery, StoreError> {
        self.deliver_watched(ignore_backoff, None).await
    }

    /// About how many messages a pass will send: those not sent, less those held, withdrawn,
    /// under another worker's claim, or (unless `ignore_backoff`) waiting out a backoff.
    async fn messages_to_go(&self, ignore_backoff: bool) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let waiting = self.store.outbox_waiting(now).await?;
        let holds = self.store.outbox_holds(now).await?;
        let backoff = if ignore_backoff {
            0
        } else {
            waiting.in_backoff
        };
        Ok(self
            .store
            .outbox_depth()
            .await?
            .saturating_sub(holds.review + holds.operator + holds.withdrawn)
            .saturating_sub(waiting.claimed + backoff))
    }
}

/// What rendering needs besides the message: the same for every message of a pass.
struct RenderContext {
    seller: Seller,
    from: String,
    /// The `.eml` folder, written on the rendering threads.
    folder: Option<EmlDir>,
}

/// A message on its way: what is left of its job once rendering took the content.
struct Sent {
    id: i64,
    key: String,
    attempts: i64,
}

/// The first store error of a pass; once set, the pass claims nothing more.
#[derive(Default)]
struct Failure(Mutex<Option<StoreError>>);

impl Failure {
    fn set(&self, e: StoreError) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    }

    fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn take(&self) -> Option<StoreError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A message that went through rendering and sending.
struct Outcome {
    id: i64,
    key: String,
    attempts: i64,
    result: Result<(), MailError>,
}

/// A rendered message: what the network transport sends, or nothing more to do (written to
/// the folder already).
type Rendered = Result<Option<(lettre::address::Envelope, Outgoing)>, MailError>;

/// A message's bytes on their way: in memory, or (a finance batch) in a spool file, deleted
/// once sent or failed.
enum Outgoing {
    Bytes(Vec<u8>),
    Spooled(tempfile::NamedTempFile),
}

/// One pass over the outbox.
struct Pass<'a> {
    store: &'a dyn Store,
    transport: &'a dyn Transport,
    clock: &'a dyn Clock,
    settings: &'a CloseSettings,
    /// Also send messages waiting out a backoff (`send --retry-now`).
    ignore_backoff: bool,
    /// Told each message done.
    progress: Option<&'a Watcher>,
}

impl Pass<'_> {
    fn lease_until(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now() + Duration::seconds(i64::from(self.settings.lease_seconds))
    }

    async fn run(&self) -> Result<Delivery, StoreError> {
        let context = Arc::new(RenderContext {
            seller: self.settings.seller.clone(),
            from: self.settings.mail_from.clone(),
            folder: self.transport.folder().cloned(),
        });
        if let Some(folder) = &context.folder {
            // Made once per pass, not per message; a failure fails each message as before.
            let _ = folder.prepare();
        }
        let failure = Failure::default();
        let (batches_tx, batches_rx) = tokio::sync::mpsc::channel::<Vec<Job>>(1);
        let (done_tx, done_rx) = tokio::sync::mpsc::channel::<Outcome>(MARK_GROUP);
        let claim = self.claim_stage(batches_tx, &failure);
        let send = self.send_stage(batches_rx, done_tx, context, &failure);
        // Returning (on an error too) drops the receiver: sending stops, then claiming.
        let mark = self.mark(done_rx);

        let ((), (), marked) = tokio::join!(claim, send, mark);
        let marked = marked?;
        if let Some(e) = failure.take() {
            return Err(e);
        }
        let (sent, failed) = marked;
        let waiting = self.store.outbox_waiting(self.clock.now()).await?;
        Ok(Delivery {
            sent,
            failed,
            waiting,
        })
    }

    /// Stage 1: claim and read batch after batch until nothing is left, the next stage is
    /// gone, or a store error.
    async fn claim_stage(&self, batches: Sender<Vec<Job>>, failure: &Failure) {
        let mut after = 0;
        while !failure.is_set() {
            match self.claim_batch(after).await {
                Ok(Some((last, jobs))) => {
                    after = last;
                    if batches.send(jobs).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => failure.set(e),
            }
        }
    }

    /// Stages 2 and 3, and the sending of stage 4: slices renewed, rendered on the blocking
    /// pool (one message per core at once), sent (as many at once as the transport takes),
    /// each outcome passed on to be marked.
    async fn send_stage(
        &self,
        batches: Receiver<Vec<Job>>,
        done: Sender<Outcome>,
        context: Arc<RenderContext>,
        failure: &Failure,
    ) {
        let renderers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let senders = self.transport.parallelism().max(1);
        let slices = stream::unfold((batches, Vec::new()), move |state| {
            self.next_slice(state, failure)
        });
        let mut outcomes: BoxStream<'_, Outcome> = slices
            .flatten()
            .chunks(RENDER_GROUP)
            .map(move |jobs| render_on_pool(jobs, context.clone(), self.clock.now()))
            .buffered(renderers)
            .flat_map(stream::iter)
            .map(move |(job, rendered)| self.send_one(job, rendered))
            .buffer_unordered(senders)
            .boxed();
        while let Some(outcome) = outcomes.next().await {
            if done.send(outcome).await.is_err() {
                break;
            }
        }
    }

    /// The next slice of jobs still claimed (renewed), taking batches as they come; None at
    /// the end or on a store error.
    async fn next_slice(
        &self,
        (mut batches, mut pending): (Receiver<Vec<Job>>, Vec<Job>),
        failure: &Failure,
    ) -> Option<(
        stream::Iter<std::vec::IntoIter<Job>>,
        (Receiver<Vec<Job>>, Vec<Job>),
    )> {
        loop {
            if pending.is_empty() {
                pending = batches.recv().await?;
                continue;
            }
            let rest = pending.split_off(pending.len().min(SLICE));
            let slice = std::mem::replace(&mut pending, rest);
            match self.still_claimed(slice).await {
                Ok(slice) if slice.is_empty() => {}
                Ok(slice) => return Some((stream::iter(slice), (batches, pending))),
                Err(e) => {
                    failure.set(e);
                    return None;
                }
            }
        }
    }

    /// Send a rendered message (unless rendering failed or already delivered it).
    async fn send_one(&self, job: Sent, rendered: Rendered) -> Outcome {
        let result = match rendered {
            Ok(Some((envelope, outgoing))) => {
                let message = match &outgoing {
                    Outgoing::Bytes(bytes) => Formatted::Bytes(bytes),
                    Outgoing::Spooled(file) => Formatted::File(file.path()),
                };
                self.transport.send_raw(&job.key, &envelope, message).await
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        Outcome {
            id: job.id,
            key: job.key,
            attempts: job.attempts,
            result,
        }
    }

    /// The next batch after id `after`, claimed and read: its last id and its jobs, or None
    /// when nothing is left.
    async fn claim_batch(&self, after: i64) -> Result<Option<(i64, Vec<Job>)>, StoreError> {
        let now = self.clock.now();
        let horizon = if self.ignore_backoff {
            now + Duration::days(36_500)
        } else {
            now
        };
        // Claimed, not just read: a message is sent by the one worker that claimed it, so
        // several workers draining one outbox never send a message twice.
        let due = self
            .store
            .claim_outbox(&OutboxClaim {
                worker: &self.settings.worker,
                after,
                due_before: horizon,
                now,
                lease_until: self.lease_until(),
                limit: BATCH,
            })
            .await?;
        let Some(last) = due.last().map(|e| e.id) else {
            return Ok(None);
        };
        let target = SpoolTarget {
            from: &self.settings.mail_from,
            now,
            folder: self.transport.folder(),
        };
        Ok(Some((last, load::load(self.store, due, &target).await?)))
    }

    /// The jobs of `slice` whose messages this worker still holds, their claims renewed.
    async fn still_claimed(&self, slice: Vec<Job>) -> Result<Vec<Job>, StoreError> {
        let ids: Vec<i64> = slice.iter().map(|j| j.entry.id).collect();
        let held = self
            .store
            .renew_outbox_claims(&self.settings.worker, &ids, self.lease_until())
            .await?;
        if held.len() < slice.len() {
            tracing::warn!(
                lost = slice.len() - held.len(),
                "claims ran out before sending; those messages are left to the worker that took them"
            );
        }
        Ok(slice
            .into_iter()
            .filter(|j| held.binary_search(&j.entry.id).is_ok())
            .collect())
    }

    /// Record outcomes as they come: failures one by one with their backoff, successes in
    /// groups. Returns (sent, failed).
    async fn mark(&self, mut done: Receiver<Outcome>) -> Result<(u64, u64), StoreError> {
        let (mut sent, mut failed) = (0u64, 0u64);
        let mut group: Vec<Outcome> = Vec::with_capacity(MARK_GROUP);
        let mut ids: Vec<i64> = Vec::with_capacity(MARK_GROUP);
        loop {
            if done.recv_many(&mut group, MARK_GROUP).await == 0 {
                break;
            }
            let deadline = tokio::time::Instant::now() + MARK_WAIT;
            while group.len() < MARK_GROUP {
                let more = MARK_GROUP - group.len();
                match tokio::time::timeout_at(deadline, done.recv_many(&mut group, more)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let failed_before = failed;
            for outcome in group.drain(..) {
                match outcome.result {
                    Ok(()) => ids.push(outcome.id),
                    Err(e) => {
                        let backoff =
                            Duration::seconds(30 * 2_i64.pow(outcome.attempts.clamp(0, 10) as u32));
                        tracing::warn!(message = %outcome.key, attempts = outcome.attempts + 1, error = %e, "send failed; will retry");
                        self.store
                            .mark_failed(outcome.id, &e.to_string(), self.clock.now() + backoff)
                            .await?;
                        failed += 1;
                    }
                }
            }
            self.store.mark_sent(&ids, self.clock.now()).await?;
            sent += ids.len() as u64;
            if let Some(p) = self.progress {
                p.0.advance(ids.len() as u64 + (failed - failed_before));
            }
            ids.clear();
        }
        Ok((sent, failed))
    }
}

/// Messages rendered one after another by one task on the blocking pool: a handful, so the
/// threads hand over work (and wake each other) less often.
const RENDER_GROUP: usize = 8;

/// Render `jobs` on the blocking pool, one after another; a panic there fails the group's
/// messages, not the pass.
async fn render_on_pool(
    jobs: Vec<Job>,
    context: Arc<RenderContext>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<(Sent, Rendered)> {
    let sent: Vec<Sent> = jobs
        .iter()
        .map(|job| Sent {
            id: job.entry.id,
            key: job.entry.key.clone(),
            attempts: job.entry.attempts,
        })
        .collect();
    let rendered = tokio::task::spawn_blocking(move || {
        jobs.into_iter()
            .map(|job| render(job, &context, now))
            .collect::<Vec<_>>()
    })
    .await;
    match rendered {
        Ok(rendered) => sent.into_iter().zip(rendered).collect(),
        Err(e) => sent
            .into_iter()
            .map(|s| (s, Err(MailError::Build(format!("rendering failed: {e}")))))
            .collect(),
    }
}

/// Render one message (the customer's email with its PDF; a finance batch is spooled
/// already); for the folder transport, write it too. Runs on the blocking pool.
fn render(job: Job, context: &RenderContext, now: chrono::DateTime<chrono::Utc>) -> Rendered {
    let recipient = &job.entry.recipient;
    let (document, unassigned) = match job.content {
        Content::Document {
            document,
            unassigned,
        } => (document, unassigned),
        Content::Finance(spooled) => {
            let spooled = spooled?;
            return match &context.folder {
                Some(folder) => folder.place(&job.entry.key, spooled.file).map(|()| None),
                None => Ok(Some((spooled.envelope, Outgoing::Spooled(spooled.file)))),
            };
        }
    };
    // Sent to the address captured when the document was issued.
    let message = crate::mail::document_email(
        &document,
        &context.seller,
        unassigned,
        &context.from,
        recipient,
        now,
    )?;
    drop(document);
    let bytes = message.formatted();
    match &context.folder {
        Some(folder) => {
            folder.write(&job.entry.key, &bytes)?;
            Ok(None)
        }
        None => Ok(Some((message.envelope().clone(), Outgoing::Bytes(bytes)))),
    }
}

#[cfg(test)]
mod tests;
