//! The command line: argument parsing and one handler per command. Handlers load what they
//! need, call the library, and print; errors travel up to `main` as `anyhow` errors with one
//! clear sentence.

use crate::change::ChangeJson;
use crate::clock::{Clock, SystemClock};
use crate::close::{CloseOptions, CloseReport, CloseSettings};
use crate::config::Config;
use crate::context::Billing;
use crate::core::catalog::Catalog;
use crate::core::domain::Target;
use crate::core::licence::LicenceOp;
use crate::input::{self, ImportFile};
use crate::output::{DocumentJson, document_header, document_row};
use crate::scenario::{Scenario, simulate};
use crate::store::{self, Store};
use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Parser)]
#[command(
    name = "billrun",
    version,
    about = "Scheduled batch invoicing for subscription businesses"
)]
pub struct Cli {
    /// Configuration file (default: config/billrun.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

fn date_arg(s: &str) -> Result<NaiveDate, String> {
    input::parse_date(s)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the database schema.
    Migrate,
    /// The daemon: a catch-up close at start, then closes on the schedule, the outbox retried,
    /// /healthz and /metrics served; stops cleanly on SIGTERM or SIGINT.
    Run,
    /// Close every period due at a date: renew, invoice, queue and send emails.
    Close {
        /// The date to close at (YYYY-MM-DD, 00:00 in each account's timezone).
        #[arg(long, value_name = "DATE", value_parser = date_arg)]
        as_of: NaiveDate,
        /// Compute and print everything, write nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Accounts parked because their close failed a sanity bound (nothing was issued for
    /// them), and why.
    Parked {
        #[arg(long)]
        json: bool,
    },
    /// Release a parked account: the next close bills it once without the sanity bounds.
    Unpark { account: String },
    /// Preview a plan change: what is due now, what goes to the balance, the next renewal.
    /// Writes nothing.
    Quote {
        subscription: String,
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        json: bool,
    },
    /// Apply a plan change (or queue it for the period end, as the policy says).
    Change {
        subscription: String,
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a subscription at the end of its current period, or undo that.
    Cancel {
        subscription: String,
        /// Date of the request (default: today in the account's timezone).
        #[arg(long, value_name = "DATE", value_parser = date_arg)]
        at: Option<NaiveDate>,
        /// Withdraw a cancellation that has not taken effect.
        #[arg(long, conflicts_with = "at")]
        undo: bool,
    },
    /// Licences of per-seat plans: list, buy, assign, unassign, remove, upgrade.
    Licences {
        subscription: String,
        #[command(subcommand)]
        op: LicenceCommand,
        /// Date of the operation (default: today in the account's timezone).
        #[arg(long, global = true, value_name = "DATE", value_parser = date_arg)]
        at: Option<NaiveDate>,
        /// Show what buy or upgrade would cost (due now, renewal); write nothing.
        #[arg(long, global = true)]
        quote: bool,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Send the outbox: every queued message whose next attempt is due.
    Send {
        /// Also send messages waiting for a retry (after a mail server outage).
        #[arg(long)]
        retry_now: bool,
    },
    /// Import accounts and subscriptions from a JSON file (all or nothing).
    Import { file: PathBuf },
    /// List issued documents.
    Invoices {
        #[arg(long, value_name = "ACCOUNT")]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one document.
    Invoice {
        number: String,
        #[arg(long)]
        json: bool,
    },
    /// An account's credit balance and its ledger.
    Balance {
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a scenario on a throwaway in-memory store.
    Simulate {
        scenario: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Benchmark: close one period for N generated subscriptions on a fresh database, verify
    /// the result, print the close time and peak memory.
    Bench {
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        subscriptions: u64,
        /// A PostgreSQL server (a fresh database is created and dropped) or a new SQLite
        /// file; default: a temporary SQLite file.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Also time the same close with one transaction per subscription, on this many.
        #[arg(long, value_name = "N", default_value_t = 0)]
        baseline: u64,
        /// Subscriptions per chunk (default: the configured chunk_size).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
        chunk_size: Option<u32>,
        /// Seed of the generated dataset.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Keep the benchmark database afterwards.
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        json: bool,
    },
    /// Catalog commands.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
}

#[derive(Debug, clap::Args)]
#[group(id = "target", required = true, multiple = true, args = ["plan", "cycle", "quantity"])]
pub struct TargetArgs {
    /// The plan to change to.
    #[arg(long)]
    plan: Option<String>,
    /// The billing cycle to change to.
    #[arg(long)]
    cycle: Option<String>,
    /// The quantity (seats, licences) to change to.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    quantity: Option<u32>,
    /// Date of the change (default: today in the account's timezone).
    #[arg(long, value_name = "DATE", value_parser = date_arg)]
    at: Option<NaiveDate>,
}

impl TargetArgs {
    fn target(&self) -> Target {
        Target {
            plan: self.plan.clone(),
            cycle: self.cycle.clone(),
            quantity: self.quantity,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum LicenceCommand {
    /// Every licence and who holds it.
    List,
    /// Buy N licences of a per-seat plan (prorated to the period end, invoiced now).
    Buy {
        plan: String,
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        quantity: u32,
    },
    /// Give an unassigned licence of PLAN to a user.
    Assign { plan: String, email: String },
    /// Take a user's licence back; it stays owned and billed until removed.
    Unassign { email: String },
    /// Remove N unassigned licences for good (no refund; billing stops at the next renewal).
    Remove {
        plan: String,
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        quantity: u32,
    },
    /// Move a user's licence to a higher plan (prorated, invoiced now).
    Upgrade { email: String, plan: String },
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Validate a catalog file (default: the configured one).
    Check { file: Option<PathBuf> },
}

/// Read an input file of at most `limit` bytes (see `core::limits`).
fn read(path: &Path, limit: u64) -> Result<String> {
    crate::config::read_limited(path, limit)
        .with_context(|| format!("cannot read {}", path.display()))
}

fn load_catalog(path: &Path) -> Result<Catalog> {
    let src = read(path, crate::core::limits::MAX_CATALOG_BYTES)?;
    Catalog::from_toml_str(&src).with_context(|| format!("catalog {}", path.display()))
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", crate::redact(&serde_json::to_string_pretty(value)?));
    Ok(())
}

async fn open_store(config: &Config) -> Result<Box<dyn Store>> {
    let store = store::open(&config.database_url).await?;
    // The embedded store sets itself up: a fresh clone needs no separate step.
    store.migrate().await?;
    Ok(store)
}

pub async fn run(cli: Cli) -> Result<i32> {
    Config::check_environment(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))?;
    let config = Config::load(cli.config.as_deref(), |k| std::env::var(k).ok())?;
    let clock = SystemClock;
    match cli.command {
        Command::Run => {
            let catalog = load_catalog(Path::new(&config.catalog))?;
            let store: std::sync::Arc<dyn Store> = std::sync::Arc::from(open_store(&config).await?);
            let transport: std::sync::Arc<dyn crate::mail::Transport> =
                std::sync::Arc::from(crate::mail::transport_from_config(&config)?);
            let daemon = crate::daemon::Daemon {
                store,
                catalog,
                settings: CloseSettings::from_config(&config),
                transport,
                clock: std::sync::Arc::new(SystemClock),
                schedule: crate::schedule::Schedule::parse(&config.schedule, &config.timezone)
                    .map_err(anyhow::Error::msg)?,
                http_addr: config.http_addr.parse()?,
                outbox_interval: std::time::Duration::from_secs(30),
            };
            daemon.run(shutdown_signal()).await?;
            tracing::info!("stopped");
        }
        Command::Bench {
            subscriptions,
            database_url,
            baseline,
            chunk_size,
            seed,
            keep,
            json,
        } => {
            if let Some(url) = &database_url {
                crate::register_url_secrets(url);
            }
            let mut settings = CloseSettings::from_config(&config);
            if let Some(n) = chunk_size {
                settings.chunk_size = n;
            }
            let options = crate::bench::BenchOptions {
                subscriptions,
                database_url,
                baseline,
                seed,
                keep,
            };
            let report = crate::bench::run(&options, &settings).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{} subscriptions on {}: close {:.2} s ({:.0}/s), peak RSS {}, {} documents verified",
                    report.subscriptions,
                    report.backend,
                    report.close_seconds,
                    report.per_second,
                    report.peak_rss_bytes.map_or("unknown".into(), |b| format!(
                        "{:.1} MiB",
                        b as f64 / 1048576.0
                    )),
                    report.documents
                );
                println!(
                    "  generation {:.2} s, verification {:.2} s, chunk size {}",
                    report.seed_seconds, report.verify_seconds, report.chunk_size
                );
                if let Some(b) = &report.baseline {
                    println!(
                        "  baseline (one transaction per subscription) on {}: {:.2} s ({:.0}/s); speed-up {:.1}x",
                        b.subscriptions, b.close_seconds, b.per_second, b.speedup
                    );
                }
            }
        }
        Command::Migrate => {
            let store = store::open(&config.database_url).await?;
            store.migrate().await?;
            println!(
                "Schema is up to date ({}).",
                crate::display_url(&config.database_url)
            );
        }
        Command::Catalog {
            command: CatalogCommand::Check { file },
        } => {
            let path = file.unwrap_or_else(|| PathBuf::from(&config.catalog));
            let catalog = load_catalog(&path)?;
            println!(
                "{}: ok — {} plan(s), {} cycle(s)",
                path.display(),
                catalog.plans.len(),
                catalog.cycles.len()
            );
        }
        Command::Import { file } => {
            let catalog = load_catalog(Path::new(&config.catalog))?;
            let src = read(&file, crate::core::limits::MAX_IMPORT_BYTES)?;
            let raw: ImportFile = serde_json::from_str(&src)
                .with_context(|| format!("{} is not a valid import file", file.display()))?;
            let store = open_store(&config).await?;
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
            store.import(&batch, clock.now()).await?;
            println!(
                "Imported {} account(s) and {} subscription(s) from {}.",
                batch.accounts.len(),
                batch.subscriptions.len(),
                file.display()
            );
        }
        Command::Close {
            as_of,
            dry_run,
            json,
        } => {
            let catalog = load_catalog(Path::new(&config.catalog))?;
            let store = open_store(&config).await?;
            let settings = CloseSettings::from_config(&config);
            let transport = crate::mail::transport_from_config(&config)?;
            let options = CloseOptions {
                keep_documents: json || dry_run,
                ..Default::default()
            };
            let billing = Billing {
                store: store.as_ref(),
                catalog: &catalog,
                settings: &settings,
                clock: &clock,
                transport: Some(transport.as_ref()),
            };
            let report = if dry_run {
                billing.dry_run(as_of, &options).await?
            } else {
                billing.close(as_of, &options).await?
            };
            if json {
                print_json(&CloseJson::from(&report))?;
            } else {
                print_close(&report, &config);
            }
            if !report.failed.is_empty() {
                return Ok(EXIT_ACCOUNTS_NOT_CLOSED);
            }
            if report.emails_failed > 0 {
                return Ok(EXIT_MAIL_NOT_SENT);
            }
        }
        Command::Parked { json } => {
            let store = open_store(&config).await?;
            let parked = store.parked().await?;
            if json {
                print_json(&parked)?;
            } else if parked.is_empty() {
                println!("No parked accounts.");
            } else {
                for p in &parked {
                    println!(
                        "{:<16} {:<8} since {}{}  {}",
                        p.account.as_str(),
                        p.status.as_str(),
                        p.since.format("%Y-%m-%d %H:%M:%S UTC"),
                        p.run.map(|r| format!(" (run {r})")).unwrap_or_default(),
                        p.reason
                    );
                }
                let waiting = parked
                    .iter()
                    .filter(|p| p.status == crate::store::ParkStatus::Parked)
                    .count();
                println!(
                    "{waiting} parked (release one with `billrun unpark ACCOUNT`), {} released (billed once without the sanity bounds by the next close).",
                    parked.len() - waiting
                );
            }
        }
        Command::Unpark { account } => {
            let store = open_store(&config).await?;
            let p = store.unpark(&account, clock.now()).await?;
            println!(
                "Account {account} released (parked since {}: {}).",
                p.since.format("%Y-%m-%d %H:%M:%S UTC"),
                p.reason
            );
            println!(
                "The next close (the daemon's, or `billrun close --as-of DATE`) bills it once without the sanity bounds; \
                 a negative balance would still park it."
            );
        }
        Command::Quote {
            subscription,
            target,
            json,
        } => {
            change_command(&config, &clock, &subscription, &target, json, false).await?;
        }
        Command::Change {
            subscription,
            target,
            json,
        } => {
            change_command(&config, &clock, &subscription, &target, json, true).await?;
        }
        Command::Cancel {
            subscription,
            at,
            undo,
        } => {
            let store = open_store(&config).await?;
            let settings = CloseSettings::from_config(&config);
            let catalog = Catalog::empty();
            let billing = Billing {
                store: store.as_ref(),
                catalog: &catalog,
                settings: &settings,
                clock: &clock,
                transport: None,
            };
            let outcome = if undo {
                billing.undo_cancel(&subscription).await?
            } else {
                billing.cancel(&subscription, at).await?
            };
            match outcome.cancel_at {
                Some(end) => println!(
                    "Subscription {subscription} is canceled; it ends on {end} (undo before then with --undo)."
                ),
                None => println!("Cancellation of {subscription} withdrawn; it renews as before."),
            }
        }
        Command::Licences {
            subscription,
            op,
            at,
            quote,
            json,
        } => {
            licence_command(&config, &clock, &subscription, op, at, quote, json).await?;
        }
        Command::Send { retry_now } => {
            let store = open_store(&config).await?;
            let transport = crate::mail::transport_from_config(&config)?;
            let settings = CloseSettings::from_config(&config);
            let catalog = Catalog::empty();
            let billing = Billing {
                store: store.as_ref(),
                catalog: &catalog,
                settings: &settings,
                clock: &clock,
                transport: Some(transport.as_ref()),
            };
            let delivery = if retry_now {
                billing.deliver_all().await?
            } else {
                billing.deliver_due().await?
            };
            println!(
                "Sent {} message(s); {} failed and stay queued for a retry.",
                delivery.sent, delivery.failed
            );
            print_waiting(&delivery.waiting);
            if delivery.failed > 0 || delivery.waiting.in_backoff + delivery.waiting.claimed > 0 {
                return Ok(EXIT_MAIL_NOT_SENT);
            }
        }
        Command::Invoices { account, json } => {
            let store = open_store(&config).await?;
            let docs = store.documents(account.as_deref()).await?;
            if json {
                let v: Vec<DocumentJson> = docs
                    .iter()
                    .map(|d| DocumentJson::from(&d.document))
                    .collect();
                print_json(&v)?;
            } else if docs.is_empty() {
                println!("No documents.");
            } else {
                println!("{}", document_header());
                for d in &docs {
                    println!("{}", document_row(&d.document));
                }
            }
        }
        Command::Invoice { number, json } => {
            let store = open_store(&config).await?;
            let Some(doc) = store.document(&number).await? else {
                bail!("no document numbered {number:?}");
            };
            if json {
                print_json(&DocumentJson::from(&doc.document))?;
            } else {
                print!("{}", crate::mail::document_text(&doc.document));
            }
        }
        Command::Balance { account, json } => {
            let store = open_store(&config).await?;
            let Some(report) = store.balance(&account).await? else {
                bail!("unknown account {account:?}");
            };
            let cur = report.account.currency;
            if json {
                let entries: Vec<_> = report
                    .entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({"at": e.at.to_string(), "amount": e.amount.to_string(),
                                           "reason": e.reason, "document": e.document})
                    })
                    .collect();
                print_json(&serde_json::json!({
                    "account": account, "currency": cur.to_string(),
                    "balance": cur.round(report.balance).to_string(), "entries": entries,
                }))?;
            } else {
                println!("{account}: balance {} {cur}", cur.round(report.balance));
                for e in &report.entries {
                    println!(
                        "  {}  {:>12}  {}{}",
                        e.at,
                        e.amount.to_string(),
                        e.reason,
                        e.document
                            .as_deref()
                            .map(|d| format!(" ({d})"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        Command::Simulate { scenario, json } => {
            let src = read(&scenario, crate::core::limits::MAX_SCENARIO_BYTES)?;
            let parsed =
                Scenario::parse(&src).with_context(|| format!("{}", scenario.display()))?;
            let out = simulate(&parsed).await?;
            if json {
                print_json(&out)?;
            } else {
                for d in &out.documents {
                    println!(
                        "{:<18} {:<11} {:<16} {}  {:>12} {:>12} {}",
                        d.number.as_deref().unwrap_or("-"),
                        d.kind,
                        d.account,
                        d.issued_at,
                        d.total,
                        d.amount_due,
                        d.currency
                    );
                }
                for (a, b) in &out.balances {
                    println!("balance {a}: {b}");
                }
                for r in &out.refused {
                    println!("refused at {}: {} — {}", r.at, r.action, r.error);
                }
                for p in &out.parked {
                    println!("parked {}: {}", p.account, p.reason);
                }
            }
        }
    }
    Ok(0)
}

async fn change_command(
    config: &Config,
    clock: &dyn Clock,
    subscription: &str,
    target: &TargetArgs,
    json: bool,
    apply: bool,
) -> Result<()> {
    let catalog = load_catalog(Path::new(&config.catalog))?;
    let store = open_store(config).await?;
    let transport = crate::mail::transport_from_config(config)?;
    let settings = CloseSettings::from_config(config);
    let billing = Billing {
        store: store.as_ref(),
        catalog: &catalog,
        settings: &settings,
        clock,
        transport: Some(transport.as_ref()),
    };
    let (outcome, issued) = if apply {
        billing
            .change(subscription, target.target(), target.at)
            .await?
    } else {
        let quote = billing
            .quote_change(subscription, target.target(), target.at)
            .await?;
        (quote, Vec::new())
    };
    let view = ChangeJson::new(&outcome, &issued);
    if json {
        print_json(&view)?;
    } else {
        print!(
            "{}",
            view.human(if apply { "Changed" } else { "Quote for" })
        );
    }
    Ok(())
}

async fn licence_command(
    config: &Config,
    clock: &dyn Clock,
    subscription: &str,
    op: LicenceCommand,
    at: Option<NaiveDate>,
    quote: bool,
    json: bool,
) -> Result<()> {
    let store = open_store(config).await?;
    let op = match op {
        LicenceCommand::List => {
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
            return Ok(());
        }
        LicenceCommand::Buy { plan, quantity } => LicenceOp::Buy { plan, quantity },
        LicenceCommand::Assign { plan, email } => LicenceOp::Assign { plan, user: email },
        LicenceCommand::Unassign { email } => LicenceOp::Unassign { user: email },
        LicenceCommand::Remove { plan, quantity } => LicenceOp::Remove { plan, quantity },
        LicenceCommand::Upgrade { email, plan } => LicenceOp::Upgrade { user: email, plan },
    };
    let catalog = load_catalog(Path::new(&config.catalog))?;
    let transport = crate::mail::transport_from_config(config)?;
    let settings = CloseSettings::from_config(config);
    let billing = Billing {
        store: store.as_ref(),
        catalog: &catalog,
        settings: &settings,
        clock,
        transport: Some(transport.as_ref()),
    };
    let (outcome, issued) = if quote {
        (
            billing.quote_licence_op(subscription, op, at).await?,
            Vec::new(),
        )
    } else {
        billing.licence_op(subscription, op, at).await?
    };
    let cur = outcome.currency.to_string();
    let view = serde_json::json!({
        "subscription": subscription,
        "op": outcome.op,
        "at": outcome.at.to_string(),
        "applied": !quote,
        "currency": cur,
        "due_now": outcome.due_now().to_string(),
        "documents": if issued.is_empty() {
            outcome.documents.iter().map(|d| DocumentJson::new(None, d)).collect::<Vec<_>>()
        } else {
            issued.iter().map(|d| DocumentJson::from(&d.document)).collect()
        },
        "next_renewal": outcome.next_renewal.as_ref().map(|r| serde_json::json!({
            "date": r.issued_at.to_string(), "total": r.total.to_string(), "amount_due": r.amount_due.to_string()})),
    });
    if json {
        print_json(&view)?;
    } else {
        println!(
            "{} licence operation on {subscription} at {}",
            if quote { "Quote for a" } else { "Applied a" },
            outcome.at
        );
        println!(
            "  Due now:       {} {cur}",
            view["due_now"].as_str().unwrap_or_default()
        );
        for d in view["documents"].as_array().into_iter().flatten() {
            println!(
                "  {} {}: total {} {cur}",
                d["kind"].as_str().unwrap_or_default(),
                d["number"].as_str().unwrap_or("(not issued)"),
                d["total"].as_str().unwrap_or_default()
            );
        }
        match &outcome.next_renewal {
            Some(r) => println!("  Next renewal:  {}, {} {cur}", r.issued_at, r.total),
            None => println!("  Next renewal:  none"),
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[derive(serde::Serialize)]
struct CloseJson<'a> {
    #[serde(flatten)]
    report: &'a CloseReport,
}

impl<'a> From<&'a CloseReport> for CloseJson<'a> {
    fn from(report: &'a CloseReport) -> Self {
        CloseJson { report }
    }
}

/// Exit codes (README, Commands): 0 done; 1 an error, nothing written half way; 2 unusable
/// arguments; 3 `close` finished but could not close some accounts; 4 mail not all sent
/// (`close`: some of its messages failed; `send`: some failed, or wait in backoff or under
/// another worker's claim). 3 wins over 4.
pub const EXIT_ACCOUNTS_NOT_CLOSED: i32 = 3;
pub const EXIT_MAIL_NOT_SENT: i32 = 4;

/// What a send left behind, one line each, only when there is something.
fn print_waiting(w: &crate::store::OutboxWaiting) {
    let at = |t: &Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default()
    };
    if w.in_backoff > 0 {
        println!(
            "{} message(s) wait for their next attempt after a failure (the first at {}); `billrun send --retry-now` tries them now.",
            w.in_backoff,
            at(&w.next_attempt)
        );
    }
    if w.claimed > 0 {
        println!(
            "{} message(s) are being sent by another worker, or were claimed by one that stopped: they are free again by {} at the latest.",
            w.claimed,
            at(&w.claimed_until)
        );
    }
}

fn print_close(r: &CloseReport, config: &Config) {
    let verb = if r.dry_run {
        "Dry run — nothing written. Would issue"
    } else {
        "Issued"
    };
    println!(
        "Close as of {}: {verb} {} invoice(s) and {} credit note(s).",
        r.as_of, r.invoices, r.credit_notes
    );
    for (cur, s) in &r.per_currency {
        println!(
            "  {cur}: invoiced {}, credited {}, amount due {}",
            s.invoiced, s.credited, s.amount_due
        );
    }
    if r.dry_run {
        for d in &r.documents {
            let doc = &d.document;
            println!(
                "  would issue {:<11} {:<16} {}  total {} {}",
                doc.kind.as_str(),
                doc.account.as_str(),
                doc.issued_at,
                doc.total,
                doc.currency
            );
        }
    } else {
        match r.finance_batch {
            Some(b) => println!("Finance batch {b} queued for {}.", config.finance_to),
            None => println!("Nothing new to report to finance."),
        }
        let via = match &config.smtp_url {
            Some(url) => crate::display_url(url),
            None => config.mail_dir.clone(),
        };
        println!(
            "Emails: {} sent via {}{}.",
            r.emails_sent,
            via,
            if r.emails_failed > 0 {
                format!(", {} failed (queued for retry)", r.emails_failed)
            } else {
                String::new()
            }
        );
        print_waiting(&r.emails_waiting);
    }
    if !r.refunds.is_empty() {
        let refunds: Vec<String> = r
            .refunds
            .iter()
            .map(|(a, c, x)| format!("{a} {x} {c}"))
            .collect();
        println!(
            "{} {}",
            if r.dry_run {
                "Would refund:"
            } else {
                "Refunds owed:"
            },
            refunds.join(", ")
        );
    }
    if !r.deleted_accounts.is_empty() {
        println!(
            "{} {}",
            if r.dry_run {
                "Would delete the data of:"
            } else {
                "Deleted the data of:"
            },
            r.deleted_accounts.join(", ")
        );
    }
    for f in &r.failed {
        println!("  NOT CLOSED: account {}: {}", f.account, f.error);
    }
    for p in &r.parked {
        println!(
            "  {}: account {}: {}",
            if r.dry_run { "WOULD PARK" } else { "PARKED" },
            p.account,
            p.reason
        );
    }
    for p in &r.still_parked {
        println!(
            "  STILL PARKED: account {} (since {}): {}",
            p.account,
            p.since.format("%Y-%m-%d"),
            p.reason
        );
    }
    let parked = r.parked.len() + r.still_parked.len();
    if parked > 0 {
        println!(
            "{parked} account(s) {} — nothing issued for them; see `billrun parked`, release one with `billrun unpark ACCOUNT`.",
            if r.dry_run {
                "would be parked"
            } else {
                "parked"
            }
        );
    }
}
