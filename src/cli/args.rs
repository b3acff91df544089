//! The command line's arguments: `Cli`, its `Command`s and their option groups, as clap
//! derives them (names, help text, value checks). Parsing only; `cli::run` acts on them.

use crate::core::domain::Target;
use crate::input;
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
        /// With --dry-run: write the finance files the run would issue (documents.csv,
        /// lines.csv, refunds.csv) into DIR, and nothing else.
        #[arg(long, value_name = "DIR", requires = "dry_run")]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Close runs, newest first: as-of date, times, outcome, documents, finance batch, and
    /// their customer emails sent and waiting.
    Runs {
        #[arg(long)]
        json: bool,
    },
    /// The state of things: the database and its schema, the next scheduled close, the last
    /// runs, the outbox by state, parked accounts. Reads only (never migrates).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Keep a run's customer emails from going until `release RUN`.
    Hold { run: i64 },
    /// Send a run's held customer emails now.
    Release { run: i64 },
    /// The audit log: corrections, changes, cancellations, deletions, unparks; who and why.
    Audit {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Void an invoice in full with a credit note (every line negated).
    Void {
        number: String,
        #[command(flatten)]
        note: CreditNoteArgs,
    },
    /// Credit part of an invoice: NET before tax, the invoice's taxes on it.
    Credit {
        number: String,
        #[arg(long, value_name = "NET")]
        amount: String,
        #[command(flatten)]
        note: CreditNoteArgs,
    },
    /// A one-off charge of NET: on the next invoice of a subscription, or (--now) invoiced at
    /// once with the account's taxes and its balance applied.
    Charge {
        account: String,
        #[arg(long, value_name = "NET")]
        amount: String,
        #[arg(long)]
        description: String,
        /// The subscription whose next invoice carries it (default: the one renewing first).
        #[arg(long, conflicts_with = "now")]
        subscription: Option<String>,
        /// Invoice it now instead.
        #[arg(long)]
        now: bool,
        /// The invoice's date with --now (default: today in the account's timezone).
        #[arg(long, value_name = "DATE", value_parser = date_arg, requires = "now")]
        at: Option<NaiveDate>,
        #[arg(long)]
        json: bool,
    },
    /// The finance files (documents.csv, lines.csv, refunds.csv) of the documents issued in
    /// [from, to).
    Export {
        #[arg(long, value_name = "DATE", value_parser = date_arg)]
        from: NaiveDate,
        /// The first day not included.
        #[arg(long, value_name = "DATE", value_parser = date_arg)]
        to: NaiveDate,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
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
    /// the result, print the close time and peak memory; with --deliver, then deliver every
    /// message and print that too.
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
        /// Then deliver every message: to an SMTP server (smtp://HOST:PORT, smtps://…) or
        /// into a new folder of .eml files.
        #[arg(long, value_name = "URL|DIR")]
        deliver: Option<String>,
        /// Connections to the SMTP server at once (default: the configured smtp_connections).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
        smtp_connections: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Catalog commands.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
}

impl Command {
    /// Whether the command issues, sends or shows documents, which name the seller.
    pub fn issues_or_shows_documents(&self) -> bool {
        matches!(
            self,
            Command::Run
                | Command::Close { .. }
                | Command::Change { .. }
                | Command::Licences { .. }
                | Command::Send { .. }
                | Command::Invoice { .. }
                | Command::Void { .. }
                | Command::Credit { .. }
                | Command::Charge { .. }
                | Command::Release { .. }
        )
    }
}

/// What `void` and `credit` say of the credit note they issue.
#[derive(Debug, clap::Args)]
pub struct CreditNoteArgs {
    /// Why, for the credit note and the audit log.
    #[arg(long)]
    pub reason: String,
    /// The credit note's date (default: today in the account's timezone).
    #[arg(long, value_name = "DATE", value_parser = date_arg)]
    pub at: Option<NaiveDate>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
#[group(id = "target", required = true, multiple = true, args = ["plan", "cycle", "quantity"])]
pub struct TargetArgs {
    /// The plan to change to.
    #[arg(long)]
    pub(super) plan: Option<String>,
    /// The billing cycle to change to.
    #[arg(long)]
    pub(super) cycle: Option<String>,
    /// The quantity (seats, licences) to change to.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) quantity: Option<u32>,
    /// Date of the change (default: today in the account's timezone).
    #[arg(long, value_name = "DATE", value_parser = date_arg)]
    pub(super) at: Option<NaiveDate>,
}

impl TargetArgs {
    /// The change these arguments ask of `subscription`.
    pub(super) fn order(&self, subscription: &str) -> crate::change::Order<Target> {
        let target = Target {
            plan: self.plan.clone(),
            cycle: self.cycle.clone(),
            quantity: self.quantity,
        };
        crate::change::Order::new(subscription, target, self.at)
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
