//! `billrun status [--json]`: the state of things in one look — the database (backend, URL
//! without its password, schema version), the next scheduled close in the billing timezone,
//! the last runs, the outbox by state, and the parked accounts. It opens the database
//! read-only and never migrates: on a database without a current schema it says so and shows
//! what it can; a database it cannot read at all is one error line and exit 1. It needs no
//! `[seller]`.

use super::{Exit, print_either};
use crate::config::Config;
use crate::schedule::Schedule;
use crate::store::prelude::*;
use crate::store::{self, OutboxHolds, OutboxWaiting, ParkStatus, RunRecord, StoreError};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt;

/// Runs shown, newest first (`billrun runs` lists every one).
const RUNS_SHOWN: usize = 10;
/// Parked account ids named in the text output (`--json` and `billrun parked` have all).
const IDS_SHOWN: usize = 20;

/// What `billrun status --json` prints. Sections the schema does not allow to read (none, or
/// not this build's) are `null`.
#[derive(Debug, Serialize)]
struct Status {
    /// When this was read.
    at: DateTime<Utc>,
    /// `sqlite` or `postgres`.
    backend: &'static str,
    /// The database URL as billrun shows it: never a password, never the query.
    database: String,
    schema: SchemaStatus,
    /// The daemon's next scheduled close; `null` if the schedule never fires again.
    next_close: Option<NextClose>,
    /// The last runs, newest first.
    runs: Option<Vec<RunStatus>>,
    outbox: Option<OutboxStatus>,
    parked: Option<ParkedStatus>,
}

#[derive(Debug, Serialize)]
struct SchemaStatus {
    /// The latest migration applied; `null`: no billrun schema.
    applied: Option<i64>,
    /// The latest migration this billrun carries.
    expected: i64,
    current: bool,
    /// Why the schema is not usable and what to do; `null` when it is current.
    problem: Option<String>,
}

#[derive(Debug, Serialize)]
struct NextClose {
    at: DateTime<Utc>,
    /// The same instant in the billing timezone (RFC 3339 with its offset).
    local: String,
    timezone: String,
    schedule: String,
}

#[derive(Debug, Serialize)]
struct RunStatus {
    #[serde(flatten)]
    run: RunRecord,
    /// Accounts the run parked (released since or not). Accounts it could not close are not
    /// stored: its close output and the logs named them.
    parked: u64,
}

/// Unsent messages by state; `unsent` = `due` + `in_backoff` + `claimed` + `held_review` +
/// `held_operator` (up to a message held while claimed), and is what the daemon's
/// `billrun_outbox_depth` shows.
#[derive(Debug, Serialize)]
struct OutboxStatus {
    unsent: u64,
    /// Sendable now: the next outbox pass (or `billrun send`) takes them.
    due: u64,
    /// Failed before, waiting for their next attempt (`billrun send --retry-now` sends them).
    in_backoff: u64,
    next_attempt: Option<DateTime<Utc>>,
    /// Being sent by a worker (or by a dead one until its lease ends).
    claimed: u64,
    claimed_until: Option<DateTime<Utc>>,
    /// Customer emails in their run's review window; they go when it ends.
    held_review: u64,
    review_until: Option<DateTime<Utc>>,
    /// Customer emails held by an operator until `billrun release RUN`.
    held_operator: u64,
    /// Never sent: their invoice was voided while they waited. Not in `unsent`.
    withdrawn: u64,
}

#[derive(Debug, Serialize)]
struct ParkedStatus {
    /// Accounts parked and not released.
    count: u64,
    accounts: Vec<String>,
    /// Released by `billrun unpark`: the next close bills them once without the bounds.
    released: Vec<String>,
}

pub(super) async fn status(config: &Config, json: bool) -> Result<Exit> {
    let now = Utc::now();
    let url = &config.database_url;
    let shown = crate::display_url(url);
    let read = || format!("cannot read the database {shown}");
    let store = store::open_read_only(url).await.with_context(read)?;
    let version = store.schema_version().await.with_context(read)?;
    let problem = version.require_current().err().map(|e| match e {
        StoreError::Migrate(why) => why,
        other => other.to_string(),
    });
    let schedule =
        Schedule::parse(&config.schedule, &config.timezone).map_err(anyhow::Error::msg)?;
    let next_close = schedule.next_after(now).map(|at| NextClose {
        at,
        local: at.with_timezone(&schedule.timezone()).to_rfc3339(),
        timezone: config.timezone.clone(),
        schedule: config.schedule.clone(),
    });
    let mut status = Status {
        at: now,
        backend: if url.starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgres"
        },
        database: shown.clone(),
        schema: SchemaStatus {
            applied: version.applied,
            expected: version.expected,
            current: problem.is_none(),
            problem,
        },
        next_close,
        runs: None,
        outbox: None,
        parked: None,
    };
    // On a schema not this build's, the queries below may fail or mislead: say so instead.
    if status.schema.current {
        let store = store.as_ref();
        status.runs = Some(runs(store, now).await.with_context(read)?);
        status.outbox = Some(outbox(store, now).await.with_context(read)?);
        status.parked = Some(parked(store).await.with_context(read)?);
    }
    print_either(json, &status, StatusText(&status))
}

async fn runs(store: &dyn Store, now: DateTime<Utc>) -> Result<Vec<RunStatus>, StoreError> {
    let mut runs = store.runs(now).await?;
    runs.truncate(RUNS_SHOWN);
    let first = runs.iter().map(|r| r.run).min().unwrap_or(0);
    let parks = store.parks_per_run(first).await?;
    Ok(runs
        .into_iter()
        .map(|run| RunStatus {
            parked: parks.get(&run.run).copied().unwrap_or(0),
            run,
        })
        .collect())
}

async fn outbox(store: &dyn Store, now: DateTime<Utc>) -> Result<OutboxStatus, StoreError> {
    let depth = store.outbox_depth().await?;
    let OutboxWaiting {
        in_backoff,
        next_attempt,
        claimed,
        claimed_until,
        review_until,
        ..
    } = store.outbox_waiting(now).await?;
    let OutboxHolds {
        review,
        operator,
        withdrawn,
    } = store.outbox_holds(now).await?;
    let unsent = depth.saturating_sub(withdrawn);
    Ok(OutboxStatus {
        unsent,
        due: unsent.saturating_sub(in_backoff + claimed + review + operator),
        in_backoff,
        next_attempt,
        claimed,
        claimed_until,
        held_review: review,
        review_until,
        held_operator: operator,
        withdrawn,
    })
}

async fn parked(store: &dyn Store) -> Result<ParkedStatus, StoreError> {
    let all = store.parked().await?;
    let ids = |status: ParkStatus| -> Vec<String> {
        all.iter()
            .filter(|p| p.status == status)
            .map(|p| p.account.to_string())
            .collect()
    };
    let accounts = ids(ParkStatus::Parked);
    Ok(ParkedStatus {
        count: accounts.len() as u64,
        accounts,
        released: ids(ParkStatus::Released),
    })
}

/// The status for people.
struct StatusText<'a>(&'a Status);

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// At most [`IDS_SHOWN`] ids, then how many more.
fn id_list(ids: &[String]) -> String {
    let mut out = ids
        .iter()
        .take(IDS_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > IDS_SHOWN {
        out.push_str(&format!(" and {} more", ids.len() - IDS_SHOWN));
    }
    out
}

impl fmt::Display for StatusText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        writeln!(f, "billrun status at {}", time(s.at))?;
        write!(f, "Database:    {} ({}), ", s.database, s.backend)?;
        match (s.schema.applied, &s.schema.problem) {
            (Some(v), None) => writeln!(f, "schema version {v} (current)")?,
            (Some(v), Some(why)) => writeln!(
                f,
                "schema version {v}, this billrun expects {}\n             {why}",
                s.schema.expected
            )?,
            (None, why) => writeln!(
                f,
                "no billrun schema (this billrun expects version {})\n             {}",
                s.schema.expected,
                why.as_deref().unwrap_or("")
            )?,
        }
        match &s.next_close {
            Some(n) => {
                let local = DateTime::parse_from_rfc3339(&n.local)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S %:z").to_string())
                    .unwrap_or_else(|_| n.local.clone());
                writeln!(
                    f,
                    "Next close:  {local} {} ({}), schedule \"{}\"",
                    n.timezone,
                    time(n.at),
                    n.schedule
                )?
            }
            None => writeln!(f, "Next close:  never (the schedule does not fire again)")?,
        }
        let (Some(runs), Some(outbox), Some(parked)) = (&s.runs, &s.outbox, &s.parked) else {
            return writeln!(
                f,
                "Runs, outbox and parked accounts not read: the schema is not current."
            );
        };
        let when = |label: &str, t: Option<DateTime<Utc>>| {
            t.map(|t| format!(" ({label} {})", time(t)))
                .unwrap_or_default()
        };
        writeln!(f, "Outbox:      {} unsent", outbox.unsent)?;
        writeln!(f, "             {:>6} due now", outbox.due)?;
        writeln!(
            f,
            "             {:>6} in backoff after a failure{} — `billrun send --retry-now` sends them",
            outbox.in_backoff,
            when("next attempt", outbox.next_attempt)
        )?;
        writeln!(
            f,
            "             {:>6} being sent by a worker{}",
            outbox.claimed,
            when("claimed until", outbox.claimed_until)
        )?;
        writeln!(
            f,
            "             {:>6} held for review{}",
            outbox.held_review,
            when("until", outbox.review_until)
        )?;
        writeln!(
            f,
            "             {:>6} held by an operator — `billrun release RUN` sends them",
            outbox.held_operator
        )?;
        if outbox.withdrawn > 0 {
            writeln!(
                f,
                "             and {} withdrawn (invoice voided while waiting; never sent)",
                outbox.withdrawn
            )?;
        }
        if parked.count == 0 {
            writeln!(f, "Parked:      none")?;
        } else {
            writeln!(
                f,
                "Parked:      {} account(s): {} — `billrun parked` says why, `billrun unpark ACCOUNT` releases one",
                parked.count,
                id_list(&parked.accounts)
            )?;
        }
        if !parked.released.is_empty() {
            writeln!(
                f,
                "             {} released for the next close: {}",
                parked.released.len(),
                id_list(&parked.released)
            )?;
        }
        if runs.is_empty() {
            return writeln!(f, "Runs:        none yet");
        }
        writeln!(f, "Last runs (newest first; `billrun runs` lists all):")?;
        super::runs::write_run_table(
            f,
            "parked",
            runs.iter().map(|r| (&r.run, r.parked.to_string())),
        )
    }
}
