//! `billrun export --from DATE --to DATE --out DIR`: the finance files (documents.csv,
//! lines.csv, refunds.csv) of the documents issued in `[from, to)`, the same files a finance
//! batch carries (docs/invoices.md).

use super::{Exit, open_store};
use crate::config::Config;
use crate::core::document::Document;
use crate::mail::finance::finance_files;
use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use std::path::Path;

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
    let mut docs = store.documents_issued(from, to).await?;
    crate::delivery::with_customer(store.as_ref(), &mut docs).await?;
    let refunds = store.refunds_recorded(from, to).await?;
    let documents: Vec<&Document> = docs.iter().map(|d| &d.document).collect();
    let written = finance_files(&documents, &refunds)?
        .write_to(out)
        .with_context(|| format!("cannot write the finance files into {}", out.display()))?;
    println!(
        "Exported {} document(s) and {} refund(s) recorded from {from} to {to} (not included):",
        docs.len(),
        refunds.len()
    );
    for path in written {
        println!("  {}", path.display());
    }
    Ok(Exit::Ok)
}
