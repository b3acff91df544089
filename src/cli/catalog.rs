//! `billrun catalog check`: validate a catalog file (by default the configured one) and
//! count its plans and cycles.

use super::{Exit, load_catalog};
use crate::config::Config;
use anyhow::Result;
use std::path::PathBuf;

pub(super) fn check(config: &Config, file: Option<PathBuf>) -> Result<Exit> {
    let path = file.unwrap_or_else(|| PathBuf::from(&config.catalog));
    let catalog = load_catalog(&path)?;
    println!(
        "{}: ok — {} plan(s), {} cycle(s)",
        path.display(),
        catalog.plans.len(),
        catalog.cycles.len()
    );
    Ok(Exit::Ok)
}
