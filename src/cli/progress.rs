//! The progress bar of `close`, `send` and `export` on a person's terminal (indicatif, on
//! stderr): done of total, percentage, rate and time left. Nothing of it when stderr is not a
//! terminal (a pipe, a file, a journal) or the output is JSON, so scripts see only the
//! summary.

use crate::progress::{Progress, Watcher};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

/// A bar on stderr.
#[derive(Default)]
struct TerminalBar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for TerminalBar {
    fn start(&self, what: &'static str, total: Option<u64>) {
        let bar = match total {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let template = if total.is_some() {
            "{msg} [{bar:30}] {pos}/{len} ({percent}%) {per_sec} ETA {eta}"
        } else {
            "{msg} {pos} {per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what);
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = &*self.bar.lock().unwrap_or_else(|e| e.into_inner()) {
            bar.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

/// A bar when a person watches stderr and the output is for people; else none.
pub(super) fn on_terminal(json: bool) -> Option<Watcher> {
    (!json && std::io::stderr().is_terminal()).then(|| Watcher(Arc::new(TerminalBar::default())))
}
