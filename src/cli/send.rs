//! `billrun send`: deliver the outbox (what is due, or with `--retry-now` everything
//! waiting), say what was sent and what is left waiting, and exit 4 when mail is not all
//! sent. `Waiting` renders what is left; `close` prints it too.

use super::{Exit, Mail, Session};
use crate::config::Config;
use crate::core::catalog::Catalog;
use crate::store::OutboxWaiting;
use anyhow::Result;
use std::fmt;

pub(super) async fn send(config: &Config, retry_now: bool) -> Result<Exit> {
    // Sending prices nothing.
    let session = Session::open(config, Catalog::empty(), Mail::Send).await?;
    let billing = session.billing();
    let progress = super::progress::on_terminal(false);
    let delivery = billing
        .deliver_watched(retry_now, progress.as_ref())
        .await?;
    println!(
        "Sent {} message(s); {} failed and stay queued for a retry.",
        delivery.sent, delivery.failed
    );
    print!("{}", Waiting(&delivery.waiting));
    let waiting = delivery.waiting.in_backoff + delivery.waiting.claimed;
    Ok(if delivery.failed > 0 || waiting > 0 {
        Exit::MailNotSent
    } else {
        Exit::Ok
    })
}

/// What a send left behind, one line each, only when there is something.
pub(super) struct Waiting<'a>(pub(super) &'a OutboxWaiting);

impl fmt::Display for Waiting<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.0;
        let at = |t: &Option<chrono::DateTime<chrono::Utc>>| {
            t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default()
        };
        if w.in_backoff > 0 {
            writeln!(
                f,
                "{} message(s) wait for their next attempt after a failure (the first at {}); `billrun send --retry-now` tries them now.",
                w.in_backoff,
                at(&w.next_attempt)
            )?;
        }
        if w.claimed > 0 {
            writeln!(
                f,
                "{} message(s) are being sent by another worker, or were claimed by one that stopped: they are free again by {} at the latest.",
                w.claimed,
                at(&w.claimed_until)
            )?;
        }
        if w.held > 0 {
            let until = match &w.review_until {
                Some(_) => format!("the review window ends by {}", at(&w.review_until)),
                None => "released".into(),
            };
            writeln!(
                f,
                "{} customer email(s) held for review until {until}; `billrun runs` lists them, `billrun release RUN` sends them now.",
                w.held
            )?;
        }
        Ok(())
    }
}
