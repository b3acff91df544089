//! `billrun import`: accounts and subscriptions from a JSON file (at most
//! `core::limits::MAX_IMPORT_BYTES`), validated against the catalog and the accounts
//! already stored, written all or nothing.

use super::{Exit, configured_catalog, open_store, read};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::input::{self, ImportFile};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

pub(super) async fn import(config: &Config, file: &Path) -> Result<Exit> {
    let catalog = configured_catalog(config)?;
    let src = read(file, crate::core::limits::MAX_IMPORT_BYTES)?;
    let raw: ImportFile = serde_json::from_str(&src)
        .with_context(|| format!("{} is not a valid import file", file.display()))?;
    let store = open_store(config).await?;
    let refs = input::referenced_accounts(&raw.accounts, &raw.subscriptions);
    let existing: BTreeMap<String, _> = store
        .accounts(&refs)
        .await?
        .into_iter()
        .map(|a| (a.id.to_string(), a))
        .collect();
    let batch = input::validate(
        &raw.accounts,
        &raw.subscriptions,
        &catalog,
        &config.timezone,
        &existing,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    store.import(&batch, SystemClock.now()).await?;
    println!(
        "Imported {} account(s) and {} subscription(s) from {}.",
        batch.accounts.len(),
        batch.subscriptions.len(),
        file.display()
    );
    Ok(Exit::Ok)
}
