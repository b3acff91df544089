//! `billrun void NUMBER --reason TEXT` and `billrun credit NUMBER --amount NET --reason
//! TEXT`: a credit note against an invoice (SPEC §10), printed as a line or as the document's
//! JSON. A refusal is one line on stderr, exit 1, and nothing written.

use super::args::CreditNoteArgs;
use super::{Exit, Mail, Session, configured_catalog, print_either};
use crate::config::Config;
use crate::core::money::parse_amount;
use crate::correction::{Charge, Charged, operator};
use crate::output::DocumentJson;
use crate::store::StoredDocument;
use anyhow::{Result, anyhow};
use std::fmt;

pub(super) async fn void(config: &Config, number: &str, note: &CreditNoteArgs) -> Result<Exit> {
    let session = Session::open(config, configured_catalog(config)?, Mail::Send).await?;
    let issued = session
        .billing()
        .void(number, &note.reason, note.at, &operator())
        .await?;
    print_either(
        note.json,
        &DocumentJson::from(&issued.document),
        Issued(&issued),
    )
}

pub(super) async fn credit(
    config: &Config,
    number: &str,
    amount: &str,
    note: &CreditNoteArgs,
) -> Result<Exit> {
    let net = parse_amount(amount).map_err(|e| anyhow!("--amount {amount:?}: {e}"))?;
    let session = Session::open(config, configured_catalog(config)?, Mail::Send).await?;
    let issued = session
        .billing()
        .credit(number, net, &note.reason, note.at, &operator())
        .await?;
    print_either(
        note.json,
        &DocumentJson::from(&issued.document),
        Issued(&issued),
    )
}

pub(super) async fn charge(config: &Config, charge: &Charge, json: bool) -> Result<Exit> {
    let session = Session::open(config, configured_catalog(config)?, Mail::Send).await?;
    let charged = session.billing().charge(charge, &operator()).await?;
    let text = match &charged {
        Charged::Invoiced { invoice } => format!(
            "Invoiced {} at once: {} {}.\n",
            invoice.number.as_deref().unwrap_or("?"),
            invoice.total,
            invoice.currency
        ),
        Charged::OnNextInvoice { subscription } => format!(
            "Charge of {} added to the next invoice of {subscription}.\n",
            charge.net
        ),
    };
    print_either(json, &charged, text)
}

/// "Issued credit note CN-… against INV-…: -12.34 USD."
struct Issued<'a>(&'a StoredDocument);

impl fmt::Display for Issued<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0.document;
        writeln!(
            f,
            "Issued credit note {} against {}: {} {}.",
            d.number,
            d.draft.corrects.as_deref().unwrap_or("?"),
            d.draft.total,
            d.draft.currency
        )
    }
}
