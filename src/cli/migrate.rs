//! `billrun migrate`: create or upgrade the database schema, and say so.

use super::Exit;
use crate::config::Config;
use anyhow::Result;

pub(super) async fn migrate(config: &Config) -> Result<Exit> {
    let store = crate::store::open(&config.database_url).await?;
    store.migrate().await?;
    println!(
        "Schema is up to date ({}).",
        crate::display_url(&config.database_url)
    );
    Ok(Exit::Ok)
}
