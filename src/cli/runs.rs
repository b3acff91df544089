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
        writeln!(
            f,
            "{:>5}  {:<10}  {:<19}  {:<19}  {:<9}  {:>9}  {:>5}  {:>6}  {:>7}  {:>4}",
            "run",
            "as of",
            "started",
            "finished",
            "outcome",
            "documents",
            "batch",
            "sent",
            "waiting",
            "held"
        )?;
        for r in self.0 {
            let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
            writeln!(
                f,
                "{:>5}  {:<10}  {:<19}  {:<19}  {:<9}  {:>9}  {:>5}  {:>6}  {:>7}  {:>4}",
                r.run,
                r.as_of,
                time(r.started_at),
                r.finished_at.map(time).unwrap_or_else(|| "-".into()),
                r.status,
                r.documents,
                r.finance_batch
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.emails_sent,
                r.emails_waiting,
                r.emails_held
            )?;
            if let Some(e) = &r.error {
                writeln!(f, "       error: {e}")?;
            }
        }
        Ok(())
    }
}
