//! `billrun run`: the daemon — the configured catalog, store, transport, schedule and HTTP
//! address handed to `daemon::Daemon`, which runs until SIGTERM or SIGINT.

use super::{Exit, configured_catalog, open_store};
use crate::clock::SystemClock;
use crate::close::CloseSettings;
use crate::config::Config;
use crate::daemon::Daemon;
use crate::mail::Transport;
use crate::schedule::Schedule;
use crate::store::prelude::*;
use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn run(config: &Config) -> Result<Exit> {
    let catalog = configured_catalog(config)?;
    let store: Arc<dyn Store> = Arc::from(open_store(config).await?);
    let transport: Arc<dyn Transport> = Arc::from(config.transport()?);
    let daemon = Daemon {
        store,
        catalog,
        settings: CloseSettings {
            actor: "daemon".into(),
            ..CloseSettings::from_config(config)
        },
        transport,
        clock: Arc::new(SystemClock),
        schedule: Schedule::parse(&config.schedule, &config.timezone)
            .map_err(anyhow::Error::msg)?,
        http_addr: config.http_addr.parse()?,
        outbox_interval: Duration::from_secs(30),
    };
    daemon.run(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(Exit::Ok)
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
