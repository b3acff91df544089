//! Corrections (SPEC §10): `Billing::void` and `Billing::credit` load the invoice and the
//! credit notes already against it, apply the core's rules (`core::correction`), write the
//! credit note in one transaction (`ChangeStore::issue_requested`) and send it;
//! `Billing::charge` adds a one-off charge to a subscription's next invoice, or invoices it
//! at once.

use crate::clock::today_in;
use crate::context::Billing;
use crate::core::correction::{
    CorrectionRefusal, plan_charge_later, plan_charge_now, plan_credit, plan_void,
};
use crate::core::document::{Document, DraftDocument};
use crate::core::domain::AccountId;
use crate::store::{RequestContext, Requested, StoreError, StoredDocument};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

#[derive(Debug, thiserror::Error)]
pub enum CorrectionError {
    #[error(transparent)]
    Refused(#[from] CorrectionRefusal),
    #[error("no document numbered {0:?}")]
    UnknownDocument(String),
    #[error("unknown account {0:?}")]
    UnknownAccount(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub use crate::context::operator;

/// A one-off charge as asked (SPEC §10).
#[derive(Debug, Clone)]
pub struct Charge {
    pub account: String,
    pub net: Decimal,
    pub description: String,
    /// The subscription whose next invoice carries it (default: the one renewing first).
    pub subscription: Option<String>,
    /// Invoice it at once rather than on the next invoice.
    pub now: bool,
    pub at: Option<NaiveDate>,
}

/// What a charge did: an invoice issued now, or a line waiting for a subscription's next
/// invoice.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "charged")]
pub enum Charged {
    Invoiced {
        invoice: Box<crate::output::DocumentJson>,
    },
    OnNextInvoice {
        subscription: String,
    },
}

impl Billing<'_> {
    /// Add a one-off charge: as a line of the next invoice of a subscription, or (`now`) as
    /// an invoice issued at once, dated `at`, with the balance applied.
    pub async fn charge(&self, c: &Charge, actor: &str) -> Result<Charged, CorrectionError> {
        let id = AccountId::new(&c.account)
            .map_err(|_| CorrectionError::UnknownAccount(c.account.clone()))?;
        let state = self
            .store
            .load_accounts(std::slice::from_ref(&id))
            .await?
            .pop()
            .ok_or_else(|| CorrectionError::UnknownAccount(c.account.clone()))?;
        let now = self.clock.now();
        // A charge has no natural key: time, process and a counter make each one unique
        // (a simulated clock gives two charges of one day the same time).
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!(
            "charge/{}/{}/{}-{seq}",
            c.account,
            now.timestamp_nanos_opt().unwrap_or_default(),
            std::process::id()
        );
        if c.now {
            let at =
                c.at.unwrap_or_else(|| today_in(self.clock, &state.account.timezone));
            let (invoice, after) =
                plan_charge_now(&state, c.net, &c.description, key, at, self.settings.terms)?;
            let issued = self
                .store
                .issue_requested(
                    &invoice,
                    Requested::Charge {
                        before: state.balance,
                        after,
                    },
                    &self.request(actor, now),
                )
                .await?;
            tracing::info!(invoice = %issued.document.number, account = %c.account, "one-off charge invoiced");
            self.deliver_due().await?;
            return Ok(Charged::Invoiced {
                invoice: Box::new(crate::output::DocumentJson::from(&issued.document)),
            });
        }
        let sub = plan_charge_later(&state, c.net, &c.description, c.subscription.as_deref())?;
        self.store
            .add_charge(
                &id,
                sub.id.as_str(),
                c.description.trim(),
                c.net,
                &key,
                actor,
                now,
            )
            .await?;
        tracing::info!(subscription = %sub.id, account = %c.account, "one-off charge queued");
        Ok(Charged::OnNextInvoice {
            subscription: sub.id.to_string(),
        })
    }

    /// Void invoice `number` in full with a credit note dated `at` (default: today in the
    /// account's timezone).
    pub async fn void(
        &self,
        number: &str,
        reason: &str,
        at: Option<NaiveDate>,
        actor: &str,
    ) -> Result<StoredDocument, CorrectionError> {
        self.correct(number, at, actor, |invoice, earlier, at| {
            plan_void(invoice, earlier, at, reason)
        })
        .await
    }

    /// Credit `net` (before tax) against invoice `number`, dated `at`.
    pub async fn credit(
        &self,
        number: &str,
        net: Decimal,
        reason: &str,
        at: Option<NaiveDate>,
        actor: &str,
    ) -> Result<StoredDocument, CorrectionError> {
        self.correct(number, at, actor, |invoice, earlier, at| {
            plan_credit(invoice, earlier, net, at, reason)
        })
        .await
    }

    /// A credit note against invoice `number` as `plan` computes it from the invoice, the
    /// credit notes already against it and the date; issued and sent.
    async fn correct(
        &self,
        number: &str,
        at: Option<NaiveDate>,
        actor: &str,
        plan: impl FnOnce(
            &Document,
            &[&Document],
            NaiveDate,
        ) -> Result<DraftDocument, CorrectionRefusal>,
    ) -> Result<StoredDocument, CorrectionError> {
        let (invoice, earlier) = self.invoice_and_corrections(number).await?;
        let earlier: Vec<&Document> = earlier.iter().map(|d| &d.document).collect();
        let at = self.date(&invoice, at).await?;
        let note = plan(&invoice, &earlier, at)?;
        self.issue(note, actor).await
    }

    /// Hold run `run`'s unsent customer emails until released; returns how many.
    pub async fn hold(&self, run: i64, actor: &str) -> Result<u64, CorrectionError> {
        let held = self.store.hold_run(run, actor, self.clock.now()).await?;
        tracing::info!(run, held, "customer emails held");
        Ok(held)
    }

    /// Send run `run`'s held customer emails now (those a void withdrew stay unsent);
    /// returns how many were released.
    pub async fn release(&self, run: i64, actor: &str) -> Result<u64, CorrectionError> {
        let released = self.store.release_run(run, actor, self.clock.now()).await?;
        tracing::info!(run, released, "customer emails released");
        self.deliver_due().await?;
        Ok(released)
    }

    async fn invoice_and_corrections(
        &self,
        number: &str,
    ) -> Result<(Document, Vec<StoredDocument>), CorrectionError> {
        let invoice = self
            .store
            .document(number)
            .await?
            .ok_or_else(|| CorrectionError::UnknownDocument(number.into()))?;
        let mut docs = [invoice];
        crate::delivery::with_customer(self.store, &mut docs).await?;
        let [invoice] = docs;
        let earlier = self.store.credit_notes_against(number).await?;
        Ok((invoice.document, earlier))
    }

    /// `at`, or today in the account's billing timezone.
    async fn date(
        &self,
        invoice: &Document,
        at: Option<NaiveDate>,
    ) -> Result<NaiveDate, CorrectionError> {
        if let Some(at) = at {
            return Ok(at);
        }
        let account = invoice.draft.account.to_string();
        let timezone = self
            .store
            .accounts(&[account])
            .await?
            .pop()
            .map_or_else(|| "UTC".to_string(), |a| a.timezone);
        Ok(today_in(self.clock, &timezone))
    }

    /// What a document `actor` asks for at `now` is issued with.
    fn request<'a>(&'a self, actor: &'a str, now: DateTime<Utc>) -> RequestContext<'a> {
        RequestContext {
            numbering: &self.settings.numbering,
            actor,
            now,
        }
    }

    async fn issue(
        &self,
        note: DraftDocument,
        actor: &str,
    ) -> Result<StoredDocument, CorrectionError> {
        let issued = self
            .store
            .issue_requested(
                &note,
                Requested::Correction,
                &self.request(actor, self.clock.now()),
            )
            .await?;
        tracing::info!(
            credit_note = %issued.document.number,
            corrects = note.corrects.as_deref().unwrap_or_default(),
            "correction issued"
        );
        self.deliver_due().await?;
        Ok(issued)
    }
}
