//! `billrun runs [--json]`: every close run, newest first — as-of date, started, finished,
//! outcome, documents, its finance batch, and its customer emails sent and waiting.

use super::{Exit, Mail, Session, configured_catalog, open_store, print_either};
use crate::config::Config;
use crate::correction::operator;
use crate::store::RunRecord;
use anyhow::Result;
use std::fmt;

pub(super) async fn runs(config: &Config, json: bool) -> Result<Exit> {
    let store = open_store(config).await?;
    let runs = store.runs(chrono::Utc::now()).await?;
    print_either(json, &runs, RunsText(&runs))
}

pub(super) async fn hold(config: &Config, run: i64) -> Result<Exit> {
    let session = Session::open(config, configured_catalog(config)?, Mail::Queued).await?;
    let held = session.billing().hold(run, &operator()).await?;
    println!("Held {held} customer email(s) of run {run}; `billrun release {run}` sends them.");
    Ok(Exit::Ok)
}

pub(super) async fn release(config: &Config, run: i64) -> Result<Exit> {
    let session = Session::open(config, configured_catalog(config)?, Mail::Send).await?;
    let released = session.billing().release(run, &operator()).await?;
    println!("Released {released} customer email(s) of run {run}.");
    Ok(Exit::Ok)
}

struct RunsText<'a>(&'a [RunRecord]);

impl fmt::Display for RunsText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return writeln!(f, "No runs yet.");
        }
        let batch = |r: &RunRecord| {
            r.finance_batch
                .map_or_else(|| "-".into(), |b| b.to_string())
        };
        write_run_table(f, "batch", self.0.iter().map(|r| (r, batch(r))))
    }
}

/// Runs as a table for people, a row each and its error under it. The seventh column is the
/// caller's: `runs` shows each run's finance batch, `status` the accounts it parked.
pub(super) fn write_run_table<'a>(
    f: &mut fmt::Formatter<'_>,
    seventh: &str,
    runs: impl IntoIterator<Item = (&'a RunRecord, String)>,
) -> fmt::Result {
    let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let row = |f: &mut fmt::Formatter<'_>, cells: [&dyn fmt::Display; 10]| {
        let [
            run,
            as_of,
            started,
            finished,
            status,
            documents,
            seventh,
            sent,
            waiting,
            held,
        ] = cells;
        writeln!(
            f,
            "{run:>5}  {as_of:<10}  {started:<19}  {finished:<19}  {status:<9}  {documents:>9}  \
             {seventh:>6}  {sent:>6}  {waiting:>7}  {held:>4}"
        )
    };
    row(
        f,
        [
            &"run",
            &"as of",
            &"started",
            &"finished",
            &"status",
            &"documents",
            &seventh,
            &"sent",
            &"waiting",
            &"held",
        ],
    )?;
    for (r, seventh) in runs {
        let finished = r.finished_at.map_or_else(|| "-".into(), time);
        row(
            f,
            [
                &r.run,
                &r.as_of,
                &time(r.started_at),
                &finished,
                &r.status,
                &r.documents,
                &seventh,
                &r.emails_sent,
                &r.emails_waiting,
                &r.emails_held,
            ],
        )?;
        if let Some(e) = &r.error {
            writeln!(f, "       error: {e}")?;
        }
    }
    Ok(())
}
