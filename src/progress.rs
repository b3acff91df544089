//! Progress of long work — a close's accounts, a send's messages, an export's documents —
//! told to whoever watches: a bar on a person's terminal (the CLI's, `cli::progress`), lines
//! in the daemon's log at intervals ([`LogProgress`]), or nobody. The work itself only counts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Someone watching a piece of work.
pub trait Progress: Send + Sync {
    /// The work begins: what is counted, and how many there are if known.
    fn start(&self, what: &'static str, total: Option<u64>);
    /// `n` more done.
    fn advance(&self, n: u64);
    /// The work is over (whether or not the count reached the total).
    fn finish(&self);
}

/// A watcher handed to long work (in `CloseOptions`, to delivery and export).
#[derive(Clone)]
pub struct Watcher(pub Arc<dyn Progress>);

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

/// Progress as log lines, at most one per `every`, with the rate and what is left: for the
/// daemon, whose output is a journal, not a terminal.
pub struct LogProgress {
    every: Duration,
    state: Mutex<LogState>,
}

struct LogState {
    what: &'static str,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_told: Instant,
}

impl LogProgress {
    pub fn new(every: Duration) -> Self {
        let now = Instant::now();
        LogProgress {
            every,
            state: Mutex::new(LogState {
                what: "",
                total: None,
                done: 0,
                started: now,
                last_told: now,
            }),
        }
    }
}

impl Progress for LogProgress {
    fn start(&self, what: &'static str, total: Option<u64>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        *s = LogState {
            what,
            total,
            done: 0,
            started: now,
            last_told: now,
        };
    }

    fn advance(&self, n: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.done += n;
        if s.last_told.elapsed() < self.every {
            return;
        }
        s.last_told = Instant::now();
        let line = describe(s.what, s.done, s.total, s.started.elapsed());
        tracing::info!(what = s.what, done = s.done, total = s.total, "{line}");
    }

    fn finish(&self) {}
}

/// "12000 of 20000 accounts (60%), 8000/s, about 1 s left".
pub fn describe(what: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = done as f64 / secs;
    match total {
        Some(total) if total > 0 => {
            let left = total.saturating_sub(done);
            let eta = if rate > 0.0 {
                format!(", about {:.0} s left", left as f64 / rate)
            } else {
                String::new()
            };
            format!(
                "{done} of {total} {what} ({}%), {rate:.0}/s{eta}",
                done.min(total) * 100 / total
            )
        }
        _ => format!("{done} {what}, {rate:.0}/s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_share_rate_and_time_left() {
        let check = |done, total, secs, expected: &str| {
            assert_eq!(
                describe("accounts", done, total, Duration::from_secs(secs)),
                expected
            );
        };
        check(
            12_000,
            Some(20_000),
            2,
            "12000 of 20000 accounts (60%), 6000/s, about 1 s left",
        );
        check(0, Some(10), 1, "0 of 10 accounts (0%), 0/s");
        check(
            30,
            Some(20),
            1,
            "30 of 20 accounts (100%), 30/s, about 0 s left",
        );
        check(500, None, 2, "500 accounts, 250/s");
    }
}
