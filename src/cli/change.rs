//! `billrun quote`, `billrun change` and `billrun cancel`: price a change of plan, cycle or
//! quantity (writing nothing), make it (or queue it for the period end), and cancel a
//! subscription at its period end or withdraw that. Quotes and changes print
//! `change::ChangeJson`, as text or as JSON.

use super::{Exit, Mail, Session, TargetArgs, configured_catalog, print_json};
use crate::change::ChangeJson;
use crate::config::Config;
use crate::core::catalog::Catalog;
use anyhow::Result;
use chrono::NaiveDate;

pub(super) async fn quote(
    config: &Config,
    subscription: &str,
    target: &TargetArgs,
    json: bool,
) -> Result<Exit> {
    // A quote sends nothing, so it opens no mail transport.
    let session = Session::open(config, configured_catalog(config)?, Mail::Queued).await?;
    let outcome = session
        .billing()
        .quote_change(target.order(subscription))
        .await?;
    print_change(&ChangeJson::new(&outcome, &[]), "Quote for", json)
}

pub(super) async fn change(
    config: &Config,
    subscription: &str,
    target: &TargetArgs,
    json: bool,
) -> Result<Exit> {
    let session = Session::open(config, configured_catalog(config)?, Mail::Send).await?;
    let (outcome, issued) = session.billing().change(target.order(subscription)).await?;
    print_change(&ChangeJson::new(&outcome, &issued), "Changed", json)
}

fn print_change(view: &ChangeJson, verb: &str, json: bool) -> Result<Exit> {
    if json {
        print_json(view)?;
    } else {
        print!("{}", view.human(verb));
    }
    Ok(Exit::Ok)
}

pub(super) async fn cancel(
    config: &Config,
    subscription: &str,
    at: Option<NaiveDate>,
    undo: bool,
) -> Result<Exit> {
    // A cancellation prices nothing and sends nothing.
    let session = Session::open(config, Catalog::empty(), Mail::Queued).await?;
    let billing = session.billing();
    let outcome = if undo {
        billing.undo_cancel(subscription).await?
    } else {
        billing.cancel(subscription, at).await?
    };
    match outcome.cancel_at {
        Some(end) => println!(
            "Subscription {subscription} is canceled; it ends on {end} (undo before then with --undo)."
        ),
        None => println!("Cancellation of {subscription} withdrawn; it renews as before."),
    }
    Ok(Exit::Ok)
}
