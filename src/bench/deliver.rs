//! `billrun bench --deliver URL|DIR`: after the benchmark's close, every queued message —
//! one invoice with its PDF per subscription, and the finance batch — delivered through the
//! real pipeline (`Billing::deliver_due`) to an SMTP server (`smtp://`, `smtps://`) or into a
//! folder of `.eml` files, timed, with the delivery's own peak memory.

use crate::clock::Clock;
use crate::close::CloseSettings;
use crate::context::Billing;
use crate::core::catalog::Catalog;
use crate::core::party::Seller;
use crate::mail::{EmlDir, SmtpSettings, SmtpTransport, Transport};
use crate::store::prelude::*;
use serde::Serialize;
use std::time::Instant;

use super::BenchError;

/// Where the benchmark delivers.
#[derive(Debug, Clone)]
pub struct DeliverTo {
    /// `smtp://…` / `smtps://…`, or a folder (created; it must not hold `.eml` files yet).
    pub target: String,
    /// Connections to an SMTP server at once.
    pub smtp_connections: u32,
}

/// What the delivery did and cost.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryBench {
    /// `smtp` or `eml`.
    pub transport: &'static str,
    /// The server (without a password) or the folder.
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_connections: Option<u32>,
    /// Messages sent: the documents and the finance batch.
    pub messages: u64,
    pub deliver_seconds: f64,
    pub per_second: f64,
    /// Peak RSS during the delivery alone (the high-water mark reset just before it), when
    /// the kernel allows the reset; else the process's.
    pub peak_rss_bytes: Option<u64>,
}

/// The transport the target names.
fn transport(to: &DeliverTo) -> Result<(Box<dyn Transport>, &'static str, String), BenchError> {
    let setup = |e: String| BenchError::Setup(e);
    if to.target.starts_with("smtp://") || to.target.starts_with("smtps://") {
        crate::register_url_secrets(&to.target);
        let settings = SmtpSettings {
            url: to.target.clone(),
            user: None,
            password: None,
            ca_file: None,
            timeout: crate::mail::smtp::SEND_TIMEOUT,
            connections: to.smtp_connections as usize,
        };
        let smtp = SmtpTransport::new(&settings).map_err(|e| setup(e.to_string()))?;
        return Ok((Box::new(smtp), "smtp", crate::display_url(&to.target)));
    }
    let dir = std::path::PathBuf::from(&to.target);
    if let Ok(entries) = std::fs::read_dir(&dir)
        && entries
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".eml"))
    {
        return Err(setup(format!(
            "{} already holds .eml files; the benchmark needs an empty or new folder",
            dir.display()
        )));
    }
    crate::mail::eml::create_private_dir(&dir)
        .map_err(|e| setup(format!("{}: {e}", dir.display())))?;
    Ok((Box::new(EmlDir::new(&dir)), "eml", to.target.clone()))
}

/// Reset this process's peak RSS (`VmHWM`) to its current RSS: Linux's `clear_refs` 5.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The seller on the benchmark's documents when the configuration names none.
fn bench_seller() -> Seller {
    Seller {
        legal_name: "Benchmark Software Ltd".into(),
        address: vec!["1 Example Street".into(), "London EC1A 1AA".into()],
        country: "GB".into(),
        tax_id: Some("GB123456789".into()),
        email: Some("billing@billrun.test".into()),
        payment_instructions: Some("IBAN GB00 TEST 0000 0000 0000 00".into()),
    }
}

/// Deliver every queued message of the benchmark's database and check that all went.
pub(super) async fn deliver(
    store: &dyn Store,
    settings: &CloseSettings,
    clock: &dyn Clock,
    to: &DeliverTo,
    expected: u64,
) -> Result<DeliveryBench, BenchError> {
    let (transport, kind, target) = transport(to)?;
    let mut settings = settings.clone();
    if settings.seller.legal_name.is_empty() {
        settings.seller = bench_seller();
    }
    let catalog = Catalog::empty();
    let billing = Billing {
        store,
        catalog: &catalog,
        settings: &settings,
        clock,
        transport: Some(transport.as_ref()),
    };
    let reset = reset_peak_rss();
    let t = Instant::now();
    let delivery = billing.deliver_due().await?;
    let deliver_seconds = t.elapsed().as_secs_f64();
    let peak_rss_bytes = super::peak_rss_bytes();
    if !reset {
        tracing::warn!("cannot reset the peak RSS; the delivery's figure is the process's");
    }
    if delivery.sent != expected || delivery.failed != 0 {
        return Err(BenchError::Verify(format!(
            "{} message(s) sent and {} failed of {expected}",
            delivery.sent, delivery.failed
        )));
    }
    if kind == "eml" {
        let files = std::fs::read_dir(&to.target)
            .map_err(|e| BenchError::Setup(format!("{}: {e}", to.target)))?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
            .count() as u64;
        if files != expected {
            return Err(BenchError::Verify(format!(
                "{files} .eml files for {expected} messages"
            )));
        }
    }
    Ok(DeliveryBench {
        transport: kind,
        target,
        smtp_connections: (kind == "smtp").then_some(to.smtp_connections),
        messages: delivery.sent,
        deliver_seconds,
        per_second: delivery.sent as f64 / deliver_seconds,
        peak_rss_bytes,
    })
}
