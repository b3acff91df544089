//! `billrun invoices`, `billrun invoice` and `billrun balance`: issued documents (a listing,
//! or one in full) and an account's credit balance with its ledger, as text or as JSON.

use super::{Exit, open_store, print_json};
use crate::config::Config;
use crate::output::{DocumentJson, document_header, document_row};
use crate::store::{BalanceReport, StoredDocument};
use anyhow::{Result, bail};
use serde::Serialize;
use std::fmt;

pub(super) async fn invoices(config: &Config, account: Option<&str>, json: bool) -> Result<Exit> {
    let store = open_store(config).await?;
    let docs = store.documents(account).await?;
    if json {
        let v: Vec<DocumentJson> = docs
            .iter()
            .map(|d| DocumentJson::from(&d.document))
            .collect();
        print_json(&v)?;
    } else {
        print!("{}", Listing(&docs));
    }
    Ok(Exit::Ok)
}

pub(super) async fn invoice(config: &Config, number: &str, json: bool) -> Result<Exit> {
    let store = open_store(config).await?;
    let Some(doc) = store.document(number).await? else {
        bail!("no document numbered {number:?}");
    };
    let mut docs = [doc];
    crate::delivery::with_customer(store.as_ref(), &mut docs).await?;
    let [doc] = docs;
    if json {
        print_json(&DocumentJson::from(&doc.document))?;
    } else {
        print!(
            "{}",
            crate::mail::document_text(&doc.document, config.seller()?)
        );
    }
    Ok(Exit::Ok)
}

pub(super) async fn balance(config: &Config, account: &str, json: bool) -> Result<Exit> {
    let store = open_store(config).await?;
    let Some(report) = store.balance(account).await? else {
        bail!("unknown account {account:?}");
    };
    let view = BalanceView::new(account, &report);
    if json {
        print_json(&view)?;
    } else {
        print!("{view}");
    }
    Ok(Exit::Ok)
}

/// A document listing for people: a header and one row per document.
struct Listing<'a>(&'a [StoredDocument]);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return writeln!(f, "No documents.");
        }
        writeln!(f, "{}", document_header())?;
        for d in self.0 {
            writeln!(f, "{}", document_row(&d.document))?;
        }
        Ok(())
    }
}

/// An account's balance (rounded to its currency) and every ledger entry. Fields in
/// alphabetical order, the order this output has always had.
#[derive(Debug, Serialize)]
struct BalanceView {
    account: String,
    balance: String,
    currency: String,
    entries: Vec<EntryView>,
}

/// One ledger entry: a credit (positive) or a debit, why, and the document behind it.
#[derive(Debug, Serialize)]
struct EntryView {
    amount: String,
    at: String,
    document: Option<String>,
    reason: String,
}

impl BalanceView {
    fn new(account: &str, report: &BalanceReport) -> BalanceView {
        let cur = report.account.currency;
        BalanceView {
            account: account.to_string(),
            balance: cur.round(report.balance).to_string(),
            currency: cur.to_string(),
            entries: report
                .entries
                .iter()
                .map(|e| EntryView {
                    amount: e.amount.to_string(),
                    at: e.at.to_string(),
                    document: e.document.clone(),
                    reason: e.reason.clone(),
                })
                .collect(),
        }
    }
}

impl fmt::Display for BalanceView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: balance {} {}",
            self.account, self.balance, self.currency
        )?;
        for e in &self.entries {
            writeln!(
                f,
                "  {}  {:>12}  {}{}",
                e.at,
                e.amount,
                e.reason,
                e.document
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}
