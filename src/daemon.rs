//! `billrun run`: the daemon. It owns the schedule, the outbox drain, the HTTP endpoints
//! (`/healthz`, Prometheus `/metrics`) and graceful shutdown; every close it runs is the same
//! [`close`] the CLI runs.
//!
//! Scheduling: tokio-cron-scheduler's timezone jobs freeze the zone's UTC offset when created
//! and fire an hour off after a daylight-saving change. So the next fire time is computed
//! here, in the billing timezone, with croner and chrono-tz ([`Schedule::next_after`]), and
//! handed to the scheduler as a one-shot job; each firing schedules the next. Ticks feed one
//! loop, so two closes never overlap: ticks that arrive during a long run collapse into one.

use crate::clock::Clock;
use crate::close::{CloseOptions, CloseSettings};
use crate::context::Billing;
use crate::core::catalog::Catalog;
use crate::mail::Transport;
use crate::store::Store;
use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot serve HTTP on {addr}: {error}")]
    Http { addr: String, error: String },
    #[error("scheduler: {0}")]
    Scheduler(String),
}

pub use crate::schedule::Schedule;

/// What `/metrics` exposes.
pub struct Metrics {
    registry: Registry,
    pub documents_issued: Counter,
    pub close_runs: Counter,
    pub close_failures: Counter,
    pub close_duration: Histogram,
    pub outbox_depth: Gauge,
    pub emails_sent: Counter,
    pub email_send_failures: Counter,
    /// Accounts parked by a sanity bound and not released, after the last close.
    pub parked_accounts: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("billrun");
        let m = Metrics {
            documents_issued: Counter::default(),
            close_runs: Counter::default(),
            close_failures: Counter::default(),
            close_duration: Histogram::new([
                0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0,
            ]),
            outbox_depth: Gauge::default(),
            emails_sent: Counter::default(),
            email_send_failures: Counter::default(),
            parked_accounts: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "documents_issued",
            "Documents issued by close runs",
            m.documents_issued.clone(),
        );
        registry.register("close_runs", "Close runs finished", m.close_runs.clone());
        registry.register(
            "close_failures",
            "Close runs that failed",
            m.close_failures.clone(),
        );
        registry.register(
            "close_duration_seconds",
            "Duration of close runs",
            m.close_duration.clone(),
        );
        registry.register(
            "outbox_depth",
            "Messages waiting in the outbox",
            m.outbox_depth.clone(),
        );
        registry.register("email_sent", "Messages delivered", m.emails_sent.clone());
        registry.register(
            "email_send_failures",
            "Message deliveries that failed (retried later)",
            m.email_send_failures.clone(),
        );
        registry.register(
            "parked_accounts",
            "Accounts parked by a sanity bound, waiting for `billrun unpark`",
            m.parked_accounts.clone(),
        );
        Metrics { registry, ..m }
    }

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

        let listener = tokio::net::TcpListener::bind(self.http_addr)
            .await
            .map_err(|e| DaemonError::Http {
                addr: self.http_addr.to_string(),
                error: e.to_string(),
            })?;
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(healthz))
            .route("/metrics", axum::routing::get(metrics))
            .with_state(shared.clone());
        let mut http_stop = stop_rx.clone();
        let http = tokio::spawn(async move {
            let graceful = async move {
                let _ = http_stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(graceful)
                .await
            {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });
        tracing::info!(addr = %self.http_addr, "serving /healthz and /metrics");

        let mut scheduler = tokio_cron_scheduler::JobScheduler::new()
            .await
            .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
        scheduler
            .start()
            .await
            .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
        let (tick_tx, mut ticks) = mpsc::channel::<()>(4);

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
                last.documents = issued;
                if !r.failed.is_empty() {
                    last.error = Some(format!("{} account(s) could not be closed", r.failed.len()));
                }
            }
            Err(e) => {
                m.close_failures.inc();
                tracing::error!(%as_of, error = %e, "close failed; the next run picks up where it stopped");
                last.error = Some(e.to_string());
            }
        }
        *shared.last_run.lock().unwrap_or_else(|p| p.into_inner()) = last;
        match self.store.parked().await {
            Ok(parked) => {
                let waiting = parked
                    .iter()
                    .filter(|p| p.status == crate::store::ParkStatus::Parked)
                    .count();
                m.parked_accounts.set(waiting as i64);
            }
            Err(e) => tracing::warn!(error = %e, "could not count parked accounts"),
        }
        self.update_depth(shared).await;
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
        self.update_depth(shared).await;
    }

    async fn update_depth(&self, shared: &Shared) {
        if let Ok(depth) = self.store.outbox_depth().await {
            shared.metrics.outbox_depth.set(depth as i64);
        }
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
    }
}
