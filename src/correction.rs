//! Corrections (SPEC §10): `Billing::void` and `Billing::credit` load the invoice and the
//! credit notes already against it, apply the core's rules (`core::correction`), write the
//! credit note in one transaction (`ChangeStore::issue_correction`) and send it.

use crate::clock::today_in;
use crate::context::Billing;
use crate::core::correction::{CorrectionRefusal, plan_credit, plan_void};
use crate::core::document::{Document, DraftDocument};
use crate::store::{StoreError, StoredDocument};
use chrono::NaiveDate;
use rust_decimal::Decimal;

#[derive(Debug, thiserror::Error)]
pub enum CorrectionError {
    #[error(transparent)]
    Refused(#[from] CorrectionRefusal),
    #[error("no document numbered {0:?}")]
    UnknownDocument(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who asks for a correction, for the audit log: the OS user running the command.
pub fn operator() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }))
}

impl Billing<'_> {
    /// Void invoice `number` in full with a credit note dated `at` (default: today in the
    /// account's timezone).
    pub async fn void(
        &self,
        number: &str,
        reason: &str,
        at: Option<NaiveDate>,
        actor: &str,
    ) -> Result<StoredDocument, CorrectionError> {
        let (invoice, earlier) = self.invoice_and_corrections(number).await?;
        let earlier: Vec<&Document> = earlier.iter().map(|d| &d.document).collect();
        let at = self.date(&invoice, at).await?;
        let note = plan_void(&invoice, &earlier, at, reason)?;
        self.issue(note, actor).await
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
        let (invoice, earlier) = self.invoice_and_corrections(number).await?;
        let earlier: Vec<&Document> = earlier.iter().map(|d| &d.document).collect();
        let at = self.date(&invoice, at).await?;
        let note = plan_credit(&invoice, &earlier, net, at, reason)?;
        self.issue(note, actor).await
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

    async fn issue(
        &self,
        note: DraftDocument,
        actor: &str,
    ) -> Result<StoredDocument, CorrectionError> {
        let issued = self
            .store
            .issue_correction(&note, &self.settings.numbering, actor, self.clock.now())
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
