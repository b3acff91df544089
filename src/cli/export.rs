//! `billrun export --from DATE --to DATE --out DIR`: the finance files (documents.csv,
//! lines.csv, refunds.csv) of the documents issued in `[from, to)`, the same files a finance
//! batch carries (docs/invoices.md), written page by page (any size in bounded memory), with a
//! progress bar on a terminal.

use super::{Exit, open_store};
use crate::config::Config;
use crate::core::document::Document;
use crate::mail::finance::FinanceFilesWriter;
use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use std::path::Path;

/// Documents read and written per page: an export of any size in bounded memory.
const PAGE: u32 = 1_000;

pub(super) async fn export(
    config: &Config,
    from: NaiveDate,
    to: NaiveDate,
    out: &Path,
) -> Result<Exit> {
    if from >= to {
        bail!("--from {from} must be before --to {to} (the range is [from, to))");
    }
    let store = open_store(config).await?;
    let cannot_write = || format!("cannot write the finance files into {}", out.display());
    let progress = super::progress::on_terminal(false);
    if let Some(p) = &progress {
        p.0.start("documents", Some(store.count_issued(from..to).await?));
    }
    let mut files = FinanceFilesWriter::create(out).with_context(cannot_write)?;
    let (mut after, mut exported) = (0, 0);
    loop {
        let mut page = store.documents_issued(from..to, after, PAGE).await?;
        let Some(last) = page.last().map(|d| d.id) else {
            break;
        };
        crate::delivery::with_customer(store.as_ref(), &mut page).await?;
        let documents: Vec<&Document> = page.iter().map(|d| &d.document).collect();
        files.append(&documents).with_context(cannot_write)?;
        exported += page.len();
        if let Some(p) = &progress {
            p.0.advance(page.len() as u64);
        }
        after = last;
    }
    if let Some(p) = &progress {
        p.0.finish();
    }
    let refunds = store.refunds_recorded(from..to).await?;
    let written = files.finish(&refunds).with_context(cannot_write)?;
    println!(
        "Exported {exported} document(s) and {} refund(s) recorded from {from} to {to} (not included):",
        refunds.len()
    );
    for path in written {
        println!("  {}", path.display());
    }
    Ok(Exit::Ok)
}
