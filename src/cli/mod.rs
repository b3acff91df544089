//! The command line: `run` dispatches each parsed [`Command`] to its handler (one file per
//! command or small family of commands), and owns what the handlers share — the exit codes,
//! reading capped input files, loading the catalog, opening the store, the [`Billing`]
//! context a billing command works with, and JSON printing. Handlers load what they need,
//! call the library and print: a `--json` output is a serializable type, its text for
//! people that type's (or a companion's) `Display`. Errors travel up to `main` as `anyhow`
//! errors with one clear sentence.

mod args;
mod audit;
mod bench;
mod catalog;
mod change;
mod close;
mod correction;
mod daemon;
mod documents;
mod export;
mod import;
mod licences;
mod migrate;
mod parked;
mod progress;
mod runs;
mod send;
mod simulate;
mod status;

pub use args::{CatalogCommand, Cli, Command, LicenceCommand, TargetArgs};

use crate::clock::SystemClock;
use crate::close::CloseSettings;
use crate::config::Config;
use crate::context::Billing;
use crate::core::catalog::Catalog;
use crate::mail::Transport;
use crate::store;
use crate::store::prelude::*;
use anyhow::{Context, Result};
use std::path::Path;

/// How `billrun` exits (README.md, "Commands"). When both 3 and 4 apply, 3 wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// 0: done.
    Ok = 0,
    /// 1: an error, reported on stderr in one sentence; nothing was written half way.
    /// (`main` exits with it for every error `run` returns.)
    Error = 1,
    /// 2: unusable arguments (clap reports them and exits with this code itself).
    Usage = 2,
    /// 3: `close` finished but could not close some accounts: it names them and why; every
    /// other account was closed.
    AccountsNotClosed = 3,
    /// 4: mail not all sent — `close`: some of its messages failed and are queued for a
    /// retry; `send`: some failed, or wait in backoff or under another worker's claim (it
    /// says how many and until when).
    MailNotSent = 4,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

/// Check the environment, load the configuration and run one command.
pub async fn run(cli: Cli) -> Result<Exit> {
    Config::check_environment(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))?;
    let config = Config::load(cli.config.as_deref(), |k| std::env::var(k).ok())?;
    if cli.command.issues_or_shows_documents() {
        config.seller()?;
    }
    match cli.command {
        Command::Migrate => migrate::migrate(&config).await,
        Command::Run => daemon::run(&config).await,
        Command::Close {
            as_of,
            dry_run,
            out,
            json,
        } => close::close(&config, as_of, dry_run, out.as_deref(), json).await,
        Command::Runs { json } => runs::runs(&config, json).await,
        Command::Status { json } => status::status(&config, json).await,
        Command::Hold { run } => runs::hold(&config, run).await,
        Command::Release { run } => runs::release(&config, run).await,
        Command::Audit { account, json } => audit::audit(&config, account.as_deref(), json).await,
        Command::Void { number, note } => correction::void(&config, &number, &note).await,
        Command::Credit {
            number,
            amount,
            note,
        } => correction::credit(&config, &number, &amount, &note).await,
        Command::Charge {
            account,
            amount,
            description,
            subscription,
            now,
            at,
            json,
        } => {
            let net = crate::core::money::parse_amount(&amount)
                .map_err(|e| anyhow::anyhow!("--amount {amount:?}: {e}"))?;
            let charge = crate::correction::Charge {
                account,
                net,
                description,
                subscription,
                now,
                at,
            };
            correction::charge(&config, &charge, json).await
        }
        Command::Export { from, to, out } => export::export(&config, from, to, &out).await,
        Command::Parked { json } => parked::parked(&config, json).await,
        Command::Unpark { account } => parked::unpark(&config, &account).await,
        Command::Quote {
            subscription,
            target,
            json,
        } => change::quote(&config, &subscription, &target, json).await,
        Command::Change {
            subscription,
            target,
            json,
        } => change::change(&config, &subscription, &target, json).await,
        Command::Cancel {
            subscription,
            at,
            undo,
        } => change::cancel(&config, &subscription, at, undo).await,
        Command::Licences {
            subscription,
            op,
            at,
            quote,
            json,
        } => licences::licences(&config, &subscription, op, at, quote, json).await,
        Command::Send { retry_now } => send::send(&config, retry_now).await,
        Command::Import { file } => import::import(&config, &file).await,
        Command::Invoices { account, json } => {
            documents::invoices(&config, account.as_deref(), json).await
        }
        Command::Invoice { number, json } => documents::invoice(&config, &number, json).await,
        Command::Balance { account, json } => documents::balance(&config, &account, json).await,
        Command::Simulate { scenario, json } => simulate::simulate(&scenario, json).await,
        Command::Bench {
            subscriptions,
            database_url,
            baseline,
            chunk_size,
            seed,
            keep,
            deliver,
            smtp_connections,
            json,
        } => {
            let options = crate::bench::BenchOptions {
                subscriptions,
                database_url,
                baseline,
                seed,
                keep,
                deliver: deliver.map(|target| crate::bench::deliver::DeliverTo {
                    target,
                    smtp_connections: smtp_connections.unwrap_or(config.smtp_connections),
                }),
            };
            bench::bench(&config, options, chunk_size, json).await
        }
        Command::Catalog {
            command: CatalogCommand::Check { file },
        } => catalog::check(&config, file),
    }
}

/// Read an input file of at most `limit` bytes (see `core::limits`).
fn read(path: &Path, limit: u64) -> Result<String> {
    crate::config::read_limited(path, limit)
        .with_context(|| format!("cannot read {}", path.display()))
}

/// Load and validate a catalog file (at most `core::limits::MAX_CATALOG_BYTES`).
fn load_catalog(path: &Path) -> Result<Catalog> {
    let src = read(path, crate::core::limits::MAX_CATALOG_BYTES)?;
    Catalog::from_toml_str(&src).with_context(|| format!("catalog {}", path.display()))
}

/// The configured catalog.
fn configured_catalog(config: &Config) -> Result<Catalog> {
    load_catalog(Path::new(&config.catalog))
}

/// Print a value as pretty JSON, with every registered secret masked.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", crate::redact(&serde_json::to_string_pretty(value)?));
    Ok(())
}

/// A command's result: as JSON (`--json`, secrets masked) or as its text for people.
fn print_either(
    json: bool,
    value: &impl serde::Serialize,
    text: impl std::fmt::Display,
) -> Result<Exit> {
    if json {
        print_json(value)?;
    } else {
        print!("{text}");
    }
    Ok(Exit::Ok)
}

/// Open the configured store, its schema brought up to date.
async fn open_store(config: &Config) -> Result<Box<dyn Store>> {
    let store = store::open(&config.database_url).await?;
    // The embedded store sets itself up: a fresh clone needs no separate step.
    store.migrate().await?;
    Ok(store)
}

/// Whether a command's messages leave now.
#[derive(Clone, Copy)]
enum Mail {
    /// Through the configured transport (SMTP or the mail folder).
    Send,
    /// Not at all: the command sends nothing, and what it queues waits for the outbox.
    Queued,
}

/// What a billing command holds while it runs — the store, the catalog, the settings, the
/// clock and the transport — lent out as the library's [`Billing`] context.
struct Session {
    store: Box<dyn Store>,
    catalog: Catalog,
    settings: CloseSettings,
    clock: SystemClock,
    transport: Option<Box<dyn Transport>>,
}

impl Session {
    /// Open the store, then (for `Mail::Send`) the transport.
    async fn open(config: &Config, catalog: Catalog, mail: Mail) -> Result<Session> {
        let store = open_store(config).await?;
        Session::with_store(config, store, catalog, mail)
    }

    /// For a dry run: the store read-only, on a schema already current; no transport.
    async fn open_read_only(config: &Config, catalog: Catalog) -> Result<Session> {
        let store = store::open_read_only(&config.database_url).await?;
        store.schema_version().await?.require_current()?;
        Session::with_store(config, store, catalog, Mail::Queued)
    }

    /// Around a store already open: the transport (for `Mail::Send`) and the settings.
    fn with_store(
        config: &Config,
        store: Box<dyn Store>,
        catalog: Catalog,
        mail: Mail,
    ) -> Result<Session> {
        let transport = match mail {
            Mail::Send => Some(config.transport()?),
            Mail::Queued => None,
        };
        Ok(Session {
            store,
            catalog,
            settings: CloseSettings::from_config(config),
            clock: SystemClock,
            transport,
        })
    }

    fn billing(&self) -> Billing<'_> {
        Billing {
            store: self.store.as_ref(),
            catalog: &self.catalog,
            settings: &self.settings,
            clock: &self.clock,
            transport: self.transport.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn clap_exits_with_the_usage_code() {
        let err = Cli::try_parse_from(["billrun", "close"]).unwrap_err();
        assert_eq!(err.exit_code(), Exit::Usage as i32);
    }
}
