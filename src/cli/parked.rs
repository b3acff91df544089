//! `billrun parked` and `billrun unpark`: the accounts parked by a sanity bound (as text,
//! or as JSON: the store's `ParkedAccount` list), and releasing one for the next close.

use super::{Exit, open_store, print_json};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::store::{ParkStatus, ParkedAccount};
use anyhow::Result;
use std::fmt;

pub(super) async fn parked(config: &Config, json: bool) -> Result<Exit> {
    let store = open_store(config).await?;
    let parked = store.parked().await?;
    if json {
        print_json(&parked)?;
    } else {
        print!("{}", ParkedText(&parked));
    }
    Ok(Exit::Ok)
}

pub(super) async fn unpark(config: &Config, account: &str) -> Result<Exit> {
    let store = open_store(config).await?;
    let p = store
        .unpark(account, &crate::context::operator(), SystemClock.now())
        .await?;
    println!(
        "Account {account} released (parked since {}: {}).",
        p.since.format("%Y-%m-%d %H:%M:%S UTC"),
        p.reason
    );
    println!(
        "The next close (the daemon's, or `billrun close --as-of DATE`) bills it once without the sanity bounds; \
         a negative balance would still park it."
    );
    Ok(Exit::Ok)
}

/// Parked and released accounts for people: one line each, then the count of each.
struct ParkedText<'a>(&'a [ParkedAccount]);

impl fmt::Display for ParkedText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parked = self.0;
        if parked.is_empty() {
            return writeln!(f, "No parked accounts.");
        }
        for p in parked {
            writeln!(
                f,
                "{:<16} {:<8} since {}{}  {}",
                p.account.as_str(),
                p.status.as_str(),
                p.since.format("%Y-%m-%d %H:%M:%S UTC"),
                p.run.map(|r| format!(" (run {r})")).unwrap_or_default(),
                p.reason
            )?;
        }
        let waiting = parked
            .iter()
            .filter(|p| p.status == ParkStatus::Parked)
            .count();
        writeln!(
            f,
            "{waiting} parked (release one with `billrun unpark ACCOUNT`), {} released (billed once without the sanity bounds by the next close).",
            parked.len() - waiting
        )
    }
}
