//! `billrun licences`: list a per-seat subscription's licences, or buy, assign, unassign,
//! remove or upgrade them — applied, or with `--quote` only priced. An operation prints a
//! `LicenceView`, as text or as JSON.

use super::{Exit, LicenceCommand, Mail, Session, configured_catalog, open_store, print_json};
use crate::change::{Order, RenewalJson};
use crate::config::Config;
use crate::core::licence::{LicenceOp, LicenceOutcome};
use crate::output::DocumentJson;
use crate::store::StoredDocument;
use crate::store::prelude::*;
use anyhow::{Result, bail};
use chrono::NaiveDate;
use serde::Serialize;
use std::fmt;

pub(super) async fn licences(
    config: &Config,
    subscription: &str,
    op: LicenceCommand,
    at: Option<NaiveDate>,
    quote: bool,
    json: bool,
) -> Result<Exit> {
    let store = open_store(config).await?;
    let op = match op {
        LicenceCommand::List => return list(store.as_ref(), subscription, json).await,
        LicenceCommand::Buy { plan, quantity } => LicenceOp::Buy { plan, quantity },
        LicenceCommand::Assign { plan, email } => LicenceOp::Assign { plan, user: email },
        LicenceCommand::Unassign { email } => LicenceOp::Unassign { user: email },
        LicenceCommand::Remove { plan, quantity } => LicenceOp::Remove { plan, quantity },
        LicenceCommand::Upgrade { email, plan } => LicenceOp::Upgrade { user: email, plan },
    };
    let catalog = configured_catalog(config)?;
    let session = Session::with_store(config, store, catalog, Mail::Send)?;
    let billing = session.billing();
    let order = Order::new(subscription, op, at);
    let (outcome, issued) = if quote {
        (billing.quote_licence_op(order).await?, Vec::new())
    } else {
        billing.licence_op(order).await?
    };
    let view = LicenceView::new(subscription, &outcome, &issued, !quote);
    if json {
        // This output has always had its keys in alphabetical order, at every level.
        print_json(&serde_json::to_value(&view)?)?;
    } else {
        print!("{view}");
    }
    Ok(Exit::Ok)
}

/// Every licence and who holds it, then how many are assigned; or the licences as JSON.
async fn list(store: &dyn Store, subscription: &str, json: bool) -> Result<Exit> {
    if store.subscription_account(subscription).await?.is_none() {
        bail!("unknown subscription {subscription:?}");
    }
    let licences = store.licences(subscription).await?;
    if json {
        print_json(&licences)?;
    } else {
        for l in &licences {
            println!(
                "{:>6}  {:<16} {:<10} {}",
                l.id,
                l.plan,
                l.status.as_str(),
                l.assigned_to.as_deref().unwrap_or("")
            );
        }
        let (assigned, available) = store.licence_counts(subscription).await?;
        println!(
            "{assigned} assigned, {available} unassigned (unassigned licences are still billed)."
        );
    }
    Ok(Exit::Ok)
}

/// What a licence operation costs now and at the next renewal, and the documents it
/// issued (applied) or would issue (quoted).
#[derive(Debug, Serialize)]
struct LicenceView {
    subscription: String,
    op: LicenceOp,
    at: String,
    /// False for a quote.
    applied: bool,
    currency: String,
    due_now: String,
    documents: Vec<DocumentJson>,
    next_renewal: Option<RenewalJson>,
}

impl LicenceView {
    fn new(
        subscription: &str,
        outcome: &LicenceOutcome,
        issued: &[StoredDocument],
        applied: bool,
    ) -> LicenceView {
        let documents = crate::output::documents_json(&outcome.documents, issued);
        LicenceView {
            subscription: subscription.to_string(),
            op: outcome.op.clone(),
            at: outcome.at.to_string(),
            applied,
            currency: outcome.currency.to_string(),
            due_now: outcome.due_now().to_string(),
            documents,
            next_renewal: outcome.next_renewal.as_ref().map(|r| RenewalJson {
                date: r.issued_at.to_string(),
                total: r.total.to_string(),
                amount_due: r.amount_due.to_string(),
            }),
        }
    }
}

impl fmt::Display for LicenceView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cur = &self.currency;
        writeln!(
            f,
            "{} licence operation on {} at {}",
            if self.applied {
                "Applied a"
            } else {
                "Quote for a"
            },
            self.subscription,
            self.at
        )?;
        writeln!(f, "  Due now:       {} {cur}", self.due_now)?;
        for d in &self.documents {
            writeln!(
                f,
                "  {} {}: total {} {cur}",
                d.kind,
                d.number.as_deref().unwrap_or("(not issued)"),
                d.total
            )?;
        }
        match &self.next_renewal {
            Some(r) => writeln!(f, "  Next renewal:  {}, {} {cur}", r.date, r.total),
            None => writeln!(f, "  Next renewal:  none"),
        }
    }
}
