//! `billrun run`: the daemon. It owns the schedule, the outbox drain, the HTTP endpoints
//! (`/healthz`, Prometheus `/metrics`) and graceful shutdown; every close it runs is the same
//! [`close`] the CLI runs.
//!
//! Scheduling: tokio-cron-scheduler's timezone jobs freeze the zone's UTC offset when created
//! and fire an hour off after a daylight-saving change. So the next fire time is computed
//! here, in the billing timezone, with croner and chrono-tz ([`Schedule::next_after`]), and
//! handed to the scheduler as a one-shot job; each firing schedules the next. Ticks feed one
//! loop, so two closes never overlap: ticks that arrive during a long run collapse into one.
//!
//! HTTP: an accept loop of its own (`serve_http`) instead of `axum::serve`, which keeps a
//! connection open for as long as the client likes and, out of file descriptors, sleeps a
//! second per failed accept: a few dozen idle connections then locked `/healthz` out. Here a
//! client has [`HEADER_READ_TIMEOUT`] to send its request's headers (also the idle limit
//! between requests on a kept-alive connection), no connection lives longer than
//! [`CONNECTION_LIFETIME`] (a scrape takes milliseconds), at most [`MAX_CONNECTIONS`] are
//! open (half the file limit if that is lower, leaving descriptors to the database and SMTP),
//! and when that many are open or `accept` fails with EMFILE/ENFILE the oldest connection is
//! closed and the accept retried at once: connections held open by a client can delay a fresh
//! `/healthz` by milliseconds, never lock it out.

use crate::clock::Clock;
use crate::close::{CloseOptions, CloseSettings};
use crate::context::Billing;
use crate::core::catalog::Catalog;
use crate::mail::Transport;
use crate::store::prelude::*;
use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How long a client has to send a request's headers, from the moment the connection is
/// accepted or the previous response was written.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any HTTP connection may stay open, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Most HTTP connections open at once (fewer under a low file limit: `connection_cap`).
pub const MAX_CONNECTIONS: usize = 64;
/// Connections the kernel may queue before `accept` takes them.
const LISTEN_BACKLOG: u32 = 1024;
/// Pause before retrying an `accept` that failed for want of anything to close.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);
/// At shutdown, how long open connections get to finish their response.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot serve HTTP on {addr}: {error}")]
    Http { addr: String, error: String },
    #[error("scheduler: {0}")]
    Scheduler(String),
}

pub use crate::schedule::Schedule;

/// Declares [`Metrics`] from one list, so that a metric's field, its initial value and the
/// name and help it is registered under are written once, side by side.
macro_rules! metrics {
    ($($(#[$doc:meta])* $field:ident: $ty:ty = $init:expr => $name:literal, $help:literal;)*) => {
        /// What `/metrics` exposes. The alert rules (`deploy/prometheus/billrun-alerts.yml`) and
        /// the dashboard (`deploy/grafana/billrun-dashboard.json`) use these names; a test
        /// checks that they name nothing else.
        pub struct Metrics {
            registry: Registry,
            $($(#[$doc])* pub $field: $ty,)*
        }

        impl Metrics {
            pub fn new() -> Metrics {
                let mut registry = Registry::with_prefix("billrun");
                $(
                    let $field: $ty = $init;
                    registry.register($name, $help, $field.clone());
                )*
                Metrics { registry, $($field,)* }
            }
        }
    };
}

// Names as operators' dashboards know them.
metrics! {
    documents_issued: Counter = Counter::default()
        => "documents_issued", "Documents issued by close runs";
    close_runs: Counter = Counter::default() => "close_runs", "Close runs finished";
    close_failures: Counter = Counter::default() => "close_failures", "Close runs that failed";
    close_duration: Histogram = Histogram::new([
        0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0,
    ]) => "close_duration_seconds", "Duration of close runs";
    /// Messages not sent yet and not withdrawn (held ones included).
    outbox_depth: Gauge = Gauge::default()
        => "outbox_depth", "Messages waiting in the outbox (not sent, not withdrawn; held ones included)";
    /// Customer emails held back: in their run's review window, or by an operator.
    outbox_held: Gauge = Gauge::default()
        => "outbox_held", "Customer emails held for review or by an operator (`billrun release RUN`)";
    emails_sent: Counter = Counter::default() => "email_sent", "Messages delivered";
    email_send_failures: Counter = Counter::default()
        => "email_send_failures", "Message deliveries that failed (retried later)";
    /// Accounts parked by a sanity bound and not released.
    parked_accounts: Gauge = Gauge::default()
        => "parked_accounts", "Accounts parked by a sanity bound, waiting for `billrun unpark`";
    /// When the last close that ended without error finished (Unix seconds); read from the
    /// store at start, so a restart does not reset it. 0: never.
    last_successful_close: Gauge = Gauge::default()
        => "last_successful_close_timestamp_seconds", "When the last close without error finished (Unix time; 0: never)";
    /// 1 when this daemon's last close ended in an error, else 0.
    last_close_failed: Gauge = Gauge::default()
        => "last_close_failed", "1 when this daemon's last close ended in an error";
    /// Accounts this daemon's last close could not close (they stay due).
    last_close_accounts_failed: Gauge = Gauge::default()
        => "last_close_accounts_failed", "Accounts this daemon's last close could not close (they stay due)";
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The last run, for `/healthz`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LastRun {
    pub as_of: Option<String>,
    pub finished_at: Option<String>,
    pub documents: u64,
    pub error: Option<String>,
}

struct Shared {
    metrics: Metrics,
    last_run: Mutex<LastRun>,
}

/// Everything the daemon runs with.
pub struct Daemon {
    pub store: Arc<dyn Store>,
    pub catalog: Catalog,
    pub settings: CloseSettings,
    pub transport: Arc<dyn Transport>,
    pub clock: Arc<dyn Clock>,
    pub schedule: Schedule,
    pub http_addr: SocketAddr,
    /// How often the outbox is retried between closes.
    pub outbox_interval: Duration,
}

impl Daemon {
    /// Run until `shutdown` resolves: then stop after the chunk in flight and return.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DaemonError> {
        let shared = Arc::new(Shared {
            metrics: Metrics::new(),
            last_run: Mutex::new(LastRun::default()),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown requested; finishing the chunk in flight");
            let _ = stop_tx.send(true);
        });

        let listener = listen(self.http_addr).map_err(|e| DaemonError::Http {
            addr: self.http_addr.to_string(),
            error: e.to_string(),
        })?;
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(healthz))
            .route("/metrics", axum::routing::get(metrics))
            .with_state(shared.clone());
        let http = tokio::spawn(serve_http(listener, app, stop_rx.clone()));
        tracing::info!(addr = %self.http_addr, "serving /healthz and /metrics");

        let mut scheduler = tokio_cron_scheduler::JobScheduler::new()
            .await
            .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
        scheduler
            .start()
            .await
            .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
        let (tick_tx, mut ticks) = mpsc::channel::<()>(4);

        // What the store knows, before the first close: a restart must not look like a
        // daemon that never closed.
        match last_successful_close(self.store.as_ref(), self.clock.now()).await {
            Ok(Some(at)) => {
                shared.metrics.last_successful_close.set(at.timestamp());
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the last successful close"),
        }
        self.update_gauges(&shared).await;

        // Catch up first: whatever came due while the daemon was down.
        let mut stop = stop_rx.clone();
        self.close_now(&shared, &stop_rx).await;
        let mut next = self.schedule_next(&scheduler, &tick_tx).await?;
        let mut outbox = tokio::time::interval(self.outbox_interval);
        outbox.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                Some(()) = ticks.recv() => {
                    while ticks.try_recv().is_ok() {}
                    self.close_now(&shared, &stop_rx).await;
                    if *stop_rx.borrow() {
                        break;
                    }
                    next = self.schedule_next(&scheduler, &tick_tx).await?;
                }
                _ = outbox.tick() => self.drain_outbox(&shared).await,
            }
        }
        tracing::info!(next_close = ?next, "stopping");
        let _ = scheduler.shutdown().await;
        let _ = http.await;
        Ok(())
    }

    fn billing(&self) -> Billing<'_> {
        Billing {
            store: self.store.as_ref(),
            catalog: &self.catalog,
            settings: &self.settings,
            clock: self.clock.as_ref(),
            transport: Some(self.transport.as_ref()),
        }
    }

    async fn schedule_next(
        &self,
        scheduler: &tokio_cron_scheduler::JobScheduler,
        ticks: &mpsc::Sender<()>,
    ) -> Result<Option<DateTime<Utc>>, DaemonError> {
        let now = self.clock.now();
        let Some(at) = self.schedule.next_after(now) else {
            tracing::warn!("the schedule never fires again");
            return Ok(None);
        };
        let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
        let tx = ticks.clone();
        let job = tokio_cron_scheduler::Job::new_one_shot_async(wait, move |_, _| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send(()).await;
            })
        })
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
        scheduler
            .add(job)
            .await
            .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
        tracing::info!(next_close = %at, "next close scheduled");
        Ok(Some(at))
    }

    async fn close_now(&self, shared: &Shared, stop: &watch::Receiver<bool>) {
        let now = self.clock.now();
        let as_of = self.schedule.today(now);
        // Each account is closed at its own local date; `as_of` (the billing timezone's
        // date) dates the run and its deletions.
        let options = CloseOptions {
            stop: Some(stop.clone()),
            instant: Some(now),
            // A long close tells the log how far it is, every half minute.
            progress: Some(crate::progress::Watcher(std::sync::Arc::new(
                crate::progress::LogProgress::new(std::time::Duration::from_secs(30)),
            ))),
            ..Default::default()
        };
        let started = Instant::now();
        let result = crate::catch_panic(self.billing().close(as_of, &options))
            .await
            .unwrap_or_else(|panic| Err(crate::close::CloseError::Panicked(panic)));
        let m = &shared.metrics;
        m.close_runs.inc();
        m.close_duration.observe(started.elapsed().as_secs_f64());
        let mut last = LastRun {
            as_of: Some(as_of.to_string()),
            finished_at: Some(self.clock.now().to_rfc3339()),
            ..Default::default()
        };
        match result {
            Ok(r) => {
                let issued = r.invoices + r.credit_notes;
                m.documents_issued.inc_by(issued);
                m.emails_sent.inc_by(r.emails_sent);
                m.email_send_failures.inc_by(r.emails_failed);
                m.last_close_failed.set(0);
                m.last_close_accounts_failed.set(r.failed.len() as i64);
                // A close stopped by a shutdown left work due: not a success to alert on.
                if !r.stopped {
                    m.last_successful_close.set(self.clock.now().timestamp());
                }
                last.documents = issued;
                if !r.failed.is_empty() {
                    last.error = Some(format!("{} account(s) could not be closed", r.failed.len()));
                }
            }
            Err(e) => {
                m.close_failures.inc();
                m.last_close_failed.set(1);
                tracing::error!(%as_of, error = %e, "close failed; the next run picks up where it stopped");
                last.error = Some(e.to_string());
            }
        }
        *shared.last_run.lock().unwrap_or_else(|p| p.into_inner()) = last;
        self.update_gauges(shared).await;
    }

    async fn drain_outbox(&self, shared: &Shared) {
        let pass = crate::catch_panic(self.billing().deliver_due()).await;
        match pass {
            Ok(Ok(d)) => {
                shared.metrics.emails_sent.inc_by(d.sent);
                shared.metrics.email_send_failures.inc_by(d.failed);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "outbox pass failed"),
            // A bug, not a reason to stop billing: the next pass tries again.
            Err(panic) => tracing::error!(error = %panic, "outbox pass failed (internal error)"),
        }
        self.update_gauges(shared).await;
    }

    /// The gauges read from the store — the outbox, held mail, parked accounts — after each
    /// close and outbox pass, so an `unpark` or a `release` shows within one pass. A gauge
    /// whose query fails keeps its last value (the failing pass has logged why).
    async fn update_gauges(&self, shared: &Shared) {
        let m = &shared.metrics;
        let depth = self.store.outbox_depth().await;
        let holds = self.store.outbox_holds(self.clock.now()).await;
        match (depth, holds) {
            (Ok(depth), Ok(holds)) => {
                m.outbox_depth
                    .set(depth.saturating_sub(holds.withdrawn) as i64);
                m.outbox_held.set((holds.review + holds.operator) as i64);
            }
            (Err(e), _) | (_, Err(e)) => tracing::debug!(error = %e, "could not count the outbox"),
        }
        match self.store.parked().await {
            Ok(parked) => {
                let waiting = parked
                    .iter()
                    .filter(|p| p.status == crate::store::ParkStatus::Parked)
                    .count();
                m.parked_accounts.set(waiting as i64);
            }
            Err(e) => tracing::debug!(error = %e, "could not count parked accounts"),
        }
    }
}

/// When the latest run that completed (ended without error) finished, as the store's run
/// list says; `None` if none has.
pub async fn last_successful_close(
    store: &dyn Store,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, crate::store::StoreError> {
    Ok(store
        .runs(now)
        .await?
        .iter()
        .filter(|r| r.status == "completed")
        .filter_map(|r| r.finished_at)
        .max())
}

/// A listening socket with a queue of [`LISTEN_BACKLOG`]: `TcpListener::bind` asks for 128,
/// and a burst of connections overflowed it; a connection the kernel drops there waits a
/// second for its retransmission, even while `serve_http` has room.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restart need not wait for old connections to time out.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// At most [`MAX_CONNECTIONS`], and at most half the soft limit on open files.
fn connection_cap() -> usize {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only the struct it is handed.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            let half = usize::try_from(limit.rlim_cur / 2).unwrap_or(usize::MAX);
            return half.clamp(1, MAX_CONNECTIONS);
        }
    }
    MAX_CONNECTIONS
}

/// Serve `app` on `listener` until `stop` turns true (see the module header for the rules).
async fn serve_http(listener: TcpListener, app: axum::Router, mut stop: watch::Receiver<bool>) {
    let cap = connection_cap();
    // Open connections, oldest first.
    let mut open: VecDeque<JoinHandle<()>> = VecDeque::new();
    let mut warned: Option<Instant> = None;
    let mut warn_full = |why: &str| {
        if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            warned = Some(Instant::now());
            tracing::warn!(
                cap,
                "HTTP: {why}; closing the oldest connections to make room (logged once a minute)"
            );
        }
    };
    loop {
        open.retain(|c| !c.is_finished());
        if open.len() >= cap {
            warn_full("connection limit reached");
            close_oldest(&mut open).await;
        }
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                open.push_back(tokio::spawn(serve_connection(
                    stream,
                    app.clone(),
                    stop.clone(),
                )));
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                warn_full("out of file descriptors");
                if !close_oldest(&mut open).await {
                    // Nothing of ours to close: the descriptors are held elsewhere.
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            }
            // A connection that failed before it was accepted (reset, aborted) or a passing
            // shortage of memory: retry soon, without spinning.
            Err(e) => {
                tracing::debug!(error = %e, "HTTP accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
    drop(listener);
    // Every connection saw `stop` too and is finishing its response; then they close.
    let grace = tokio::time::sleep(SHUTDOWN_GRACE);
    let mut grace = std::pin::pin!(grace);
    for mut connection in open {
        tokio::select! {
            _ = &mut connection => {}
            _ = &mut grace => connection.abort(),
        }
    }
}

/// Close the oldest open connection; false if none is open. Returns once its socket is
/// closed, so the descriptor is free for the next `accept`.
async fn close_oldest(open: &mut VecDeque<JoinHandle<()>>) -> bool {
    while let Some(oldest) = open.pop_front() {
        if oldest.is_finished() {
            continue;
        }
        oldest.abort();
        // An aborted task's future (and the socket it owns) is dropped before this resolves.
        let _ = tokio::time::timeout(Duration::from_millis(100), oldest).await;
        return true;
    }
    false
}

/// One HTTP/1.1 connection, with the header timeout, the lifetime and graceful shutdown.
async fn serve_connection(stream: TcpStream, app: axum::Router, mut stop: watch::Receiver<bool>) {
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(app),
        );
    let mut connection = std::pin::pin!(connection);
    let lifetime = tokio::time::sleep(CONNECTION_LIFETIME);
    let mut lifetime = std::pin::pin!(lifetime);
    // Errors (a client that went away, a header timeout) concern that client only.
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = &mut lifetime => return,
        _ = stop.wait_for(|s| *s) => connection.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = &mut lifetime => {}
    }
}

async fn healthz(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    let last = shared
        .last_run
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"status": "ok", "last_close": last}).to_string(),
    )
}

async fn metrics(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_prometheus_text() {
        let m = Metrics::new();
        m.documents_issued.inc_by(3);
        let text = m.render();
        assert!(text.contains("billrun_documents_issued_total 3"), "{text}");
        assert!(text.contains("billrun_outbox_depth"), "{text}");
        m.parked_accounts.set(2);
        assert!(m.render().contains("billrun_parked_accounts 2"));
        m.last_successful_close.set(1_772_323_200);
        m.outbox_held.set(4);
        let text = m.render();
        for line in [
            "billrun_last_successful_close_timestamp_seconds 1772323200",
            "billrun_outbox_held 4",
            "billrun_last_close_failed 0",
            "billrun_last_close_accounts_failed 0",
            "billrun_close_failures_total 0",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}
