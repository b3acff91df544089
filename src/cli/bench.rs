//! `billrun bench`: close one period for N generated subscriptions on a fresh database,
//! verify it (and with `--deliver` deliver every message), and print the timings and peak
//! memory — as text, or as one line of JSON (the `BenchReport` itself).

use super::{Exit, print_either};
use crate::bench::{BenchOptions, BenchReport};
use crate::close::CloseSettings;
use crate::config::Config;
use anyhow::Result;
use std::fmt;

pub(super) async fn bench(
    config: &Config,
    options: BenchOptions,
    chunk_size: Option<u32>,
    json: bool,
) -> Result<Exit> {
    if let Some(url) = &options.database_url {
        crate::register_url_secrets(url);
    }
    let mut settings = CloseSettings::from_config(config);
    if let Some(n) = chunk_size {
        settings.chunk_size = n;
    }
    let report = crate::bench::run(&options, &settings).await?;
    print_either(json, &report, BenchText(&report))
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("unknown".into(), |b| {
        format!("{:.1} MiB", b as f64 / 1048576.0)
    })
}

/// A benchmark for people: the close, then generation and verification, then the baseline
/// (when one was run).
struct BenchText<'a>(&'a BenchReport);

impl fmt::Display for BenchText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let report = self.0;
        writeln!(
            f,
            "{} subscriptions on {}: close {:.2} s ({:.0}/s), peak RSS {}, {} documents verified",
            report.subscriptions,
            report.backend,
            report.close_seconds,
            report.per_second,
            mib(report.peak_rss_bytes),
            report.documents
        )?;
        writeln!(
            f,
            "  generation {:.2} s, verification {:.2} s, chunk size {}",
            report.seed_seconds, report.verify_seconds, report.chunk_size
        )?;
        if let Some(d) = &report.delivery {
            writeln!(
                f,
                "  delivery of {} messages to {} ({}{}): {:.2} s ({:.0}/s), peak RSS {}",
                d.messages,
                d.target,
                d.transport,
                d.smtp_connections
                    .map_or(String::new(), |n| format!(", {n} connections")),
                d.deliver_seconds,
                d.per_second,
                mib(d.peak_rss_bytes)
            )?;
        }
        if let Some(b) = &report.baseline {
            writeln!(
                f,
                "  baseline (one transaction per subscription) on {}: {:.2} s ({:.0}/s); speed-up {:.1}x",
                b.subscriptions, b.close_seconds, b.per_second, b.speedup
            )?;
        }
        Ok(())
    }
}
