//! Plan changes, licence operations and cancellations, the shell: load the account, let the
//! core price the request and — for `change`, not `quote` — write it in one transaction and
//! send its documents. The CLI and the simulator both go through these [`Billing`] methods.

use crate::clock::today_in;
use crate::context::Billing;
use crate::core::billing::AccountState;
use crate::core::change::{ChangeOutcome, ChangeRequest, Refusal, plan_change};
use crate::core::domain::{AccountId, SubscriptionId, Target};
use crate::core::licence::{LicenceOp, LicenceOutcome, plan_licence_op};
use crate::output::DocumentJson;
use crate::store::prelude::*;
use crate::store::{ChangeContext, StoreError, StoredDocument};
use chrono::NaiveDate;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    // Not a `#[source]`: the message already says it, and error chains must not repeat it.
    #[error("change refused: {0}")]
    Refused(Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Refusal> for ChangeError {
    fn from(r: Refusal) -> Self {
        ChangeError::Refused(r)
    }
}

/// What an operator asks of a subscription: a change (`Target`) or a licence operation
/// (`LicenceOp`), dated `at` (default: today in the account's timezone).
#[derive(Debug, Clone)]
pub struct Order<T> {
    pub subscription: String,
    pub what: T,
    pub at: Option<NaiveDate>,
}

impl<T> Order<T> {
    pub fn new(subscription: &str, what: T, at: Option<NaiveDate>) -> Order<T> {
        Order {
            subscription: subscription.into(),
            what,
            at,
        }
    }
}

impl Billing<'_> {
    /// Price a change of plan, cycle or quantity; write nothing.
    pub async fn quote_change(&self, order: Order<Target>) -> Result<ChangeOutcome, ChangeError> {
        Ok(self.plan_change(order).await?.0)
    }

    /// Make a change (or queue it, as its policy says): written in one transaction, its
    /// documents sent. Returns the outcome and the documents issued.
    pub async fn change(
        &self,
        order: Order<Target>,
    ) -> Result<(ChangeOutcome, Vec<StoredDocument>), ChangeError> {
        let subscription = order.subscription.clone();
        let (outcome, account) = self.plan_change(order).await?;
        let issued = self
            .store
            .apply_change(&outcome, &self.context(&account), &self.settings.modules)
            .await?;
        tracing::info!(%subscription, kind = %outcome.kind, documents = issued.len(), "change applied");
        self.deliver_due().await?;
        Ok((outcome, issued))
    }

    /// What a change or licence operation of `account` is written with, now.
    fn context<'a>(&'a self, account: &'a AccountId) -> ChangeContext<'a> {
        ChangeContext {
            account,
            numbering: &self.settings.numbering,
            now: self.clock.now(),
        }
    }

    async fn plan_change(
        &self,
        order: Order<Target>,
    ) -> Result<(ChangeOutcome, AccountId), ChangeError> {
        let (subscription, account, state, at) = self.subject(&order).await?;
        let request = ChangeRequest {
            subscription,
            target: order.what,
            at,
        };
        let outcome = plan_change(&state, self.catalog, self.settings.terms, &request)?;
        Ok((outcome, account))
    }

    /// Price a licence operation; write nothing.
    pub async fn quote_licence_op(
        &self,
        order: Order<LicenceOp>,
    ) -> Result<LicenceOutcome, ChangeError> {
        Ok(self.plan_licence_op(order).await?.0)
    }

    /// Make a licence operation: written in one transaction, its documents sent.
    pub async fn licence_op(
        &self,
        order: Order<LicenceOp>,
    ) -> Result<(LicenceOutcome, Vec<StoredDocument>), ChangeError> {
        let subscription = order.subscription.clone();
        let (outcome, account) = self.plan_licence_op(order).await?;
        let issued = self
            .store
            .apply_licence_op(&outcome, &self.context(&account))
            .await?;
        tracing::info!(
            %subscription,
            documents = issued.len(),
            "licence operation applied"
        );
        self.deliver_due().await?;
        Ok((outcome, issued))
    }

    async fn plan_licence_op(
        &self,
        order: Order<LicenceOp>,
    ) -> Result<(LicenceOutcome, AccountId), ChangeError> {
        let (id, account, state, at) = self.subject(&order).await?;
        let licences = self.store.licences(id.as_str()).await?;
        let outcome = plan_licence_op(
            &state,
            &licences,
            self.catalog,
            self.settings.terms,
            &id,
            &order.what,
            at,
        )?;
        Ok((outcome, account))
    }

    /// What an order is about: the subscription, its account and its state, and the date
    /// (today in the account's timezone unless the order names one).
    async fn subject<T>(
        &self,
        order: &Order<T>,
    ) -> Result<(SubscriptionId, AccountId, AccountState, NaiveDate), ChangeError> {
        let subscription = order.subscription.as_str();
        let id = SubscriptionId::new(subscription)
            .map_err(|_| Refusal::UnknownSubscription(subscription.into()))?;
        let (account, state) = load(self.store, subscription).await?;
        let at = order
            .at
            .unwrap_or_else(|| today_in(self.clock, &state.account.timezone));
        Ok((id, account, state, at))
    }

    /// Cancel a subscription at the end of its period.
    pub async fn cancel(
        &self,
        subscription: &str,
        at: Option<NaiveDate>,
    ) -> Result<crate::core::change::CancelOutcome, ChangeError> {
        self.set_cancel(subscription, at, false).await
    }

    /// Withdraw a cancellation that has not taken effect.
    pub async fn undo_cancel(
        &self,
        subscription: &str,
    ) -> Result<crate::core::change::CancelOutcome, ChangeError> {
        self.set_cancel(subscription, None, true).await
    }

    async fn set_cancel(
        &self,
        subscription: &str,
        at: Option<NaiveDate>,
        undo: bool,
    ) -> Result<crate::core::change::CancelOutcome, ChangeError> {
        let (account, state) = load(self.store, subscription).await?;
        let at = at.unwrap_or_else(|| today_in(self.clock, &state.account.timezone));
        let id = SubscriptionId::new(subscription)
            .map_err(|_| Refusal::UnknownSubscription(subscription.into()))?;
        let outcome = crate::core::change::plan_cancel(&state, &id, at, undo)?;
        self.store
            .set_cancel(&outcome, &account, &self.settings.actor, self.clock.now())
            .await?;
        tracing::info!(subscription, undo, "cancellation recorded");
        Ok(outcome)
    }
}

/// What `quote --json` and `change --json` print.
#[derive(Debug, Serialize)]
pub struct ChangeJson {
    pub subscription: String,
    pub kind: String,
    pub timing: crate::core::policy::Timing,
    pub method: crate::core::policy::Method,
    pub settle: crate::core::policy::Settle,
    pub at: String,
    pub currency: String,
    pub due_now: String,
    pub to_balance: String,
    pub balance_after: String,
    pub next_invoice_items: Vec<crate::core::change::NewPending>,
    pub queued_for: Option<String>,
    pub documents: Vec<DocumentJson>,
    pub next_renewal: Option<RenewalJson>,
}

#[derive(Debug, Serialize)]
pub struct RenewalJson {
    pub date: String,
    pub total: String,
    pub amount_due: String,
}

impl ChangeJson {
    pub fn new(o: &ChangeOutcome, issued: &[StoredDocument]) -> Self {
        let currency = o.currency;
        let documents = crate::output::documents_json(&o.documents, issued);
        ChangeJson {
            subscription: o.subscription.to_string(),
            kind: o.kind.to_string(),
            timing: o.timing,
            method: o.method,
            settle: o.settle,
            at: o.at.to_string(),
            currency: currency.to_string(),
            due_now: currency.round(o.due_now()).to_string(),
            to_balance: currency.round(o.to_balance()).to_string(),
            balance_after: currency.round(o.balance_after).to_string(),
            next_invoice_items: o.pending.clone(),
            queued_for: o.queued_for.map(|d| d.to_string()),
            documents,
            next_renewal: o.next_renewal.as_ref().map(|r| RenewalJson {
                date: r.issued_at.to_string(),
                total: r.total.to_string(),
                amount_due: r.amount_due.to_string(),
            }),
        }
    }

    pub fn human(&self, verb: &str) -> String {
        let c = &self.currency;
        let mut s = format!(
            "{verb} {}: {} on {} ({} / {} / {})\n",
            self.subscription, self.kind, self.at, self.timing, self.method, self.settle,
        );
        if let Some(q) = &self.queued_for {
            s.push_str(&format!("  Takes effect at the period end: {q}\n"));
        }
        s.push_str(&format!("  Due now:             {} {c}\n", self.due_now));
        s.push_str(&format!(
            "  Credit to balance:   {} {c} (balance after: {} {c})\n",
            self.to_balance, self.balance_after
        ));
        for p in &self.next_invoice_items {
            s.push_str(&format!(
                "  On the next invoice: {} {c}  {}\n",
                p.amount, p.description
            ));
        }
        for d in &self.documents {
            s.push_str(&format!(
                "  {} {}: total {} {c}, amount due {} {c}\n",
                d.kind,
                d.number.as_deref().unwrap_or("(not issued)"),
                d.total,
                d.amount_due
            ));
        }
        match &self.next_renewal {
            Some(r) => s.push_str(&format!(
                "  Next renewal:        {}, {} {c} (amount due {} {c})\n",
                r.date, r.total, r.amount_due
            )),
            None => s.push_str("  Next renewal:        none\n"),
        }
        s
    }
}

async fn load(
    store: &dyn Store,
    subscription: &str,
) -> Result<(AccountId, crate::core::billing::AccountState), ChangeError> {
    let unknown = || Refusal::UnknownSubscription(subscription.to_string());
    let account = store
        .subscription_account(subscription)
        .await?
        .ok_or_else(unknown)?;
    let state = store
        .load_accounts(std::slice::from_ref(&account))
        .await?
        .pop()
        .ok_or_else(unknown)?;
    Ok((account, state))
}
