//! `billrun close`: a period-close run (or a dry run) as of a date, its report printed as
//! text or as JSON (the `CloseReport` itself), and its exit code (3 accounts not closed, 4
//! mail not all sent).

use super::send::Waiting;
use super::{Exit, Mail, Session, configured_catalog, print_json};
use crate::close::{CloseOptions, CloseReport};
use crate::config::Config;
use crate::core::document::Document;
use crate::mail::finance::{FinanceFiles, finance_files};
use anyhow::{Context, Result};
use chrono::NaiveDate;
use std::fmt;
use std::path::Path;

pub(super) async fn close(
    config: &Config,
    as_of: NaiveDate,
    dry_run: bool,
    out: Option<&Path>,
    json: bool,
) -> Result<Exit> {
    let catalog = configured_catalog(config)?;
    let session = if dry_run {
        Session::open_read_only(config, catalog).await?
    } else {
        Session::open(config, catalog, Mail::Send).await?
    };
    let billing = session.billing();
    let options = CloseOptions {
        keep_documents: json || dry_run,
        progress: super::progress::on_terminal(json),
        ..Default::default()
    };
    let report = if dry_run {
        billing.dry_run(as_of, &options).await?
    } else {
        billing.close(as_of, &options).await?
    };
    if let Some(dir) = out {
        let written = preview_files(&report)?
            .write_to(dir)
            .with_context(|| format!("cannot write the finance files into {}", dir.display()))?;
        if !json {
            for path in written {
                println!("Wrote {}", path.display());
            }
        }
    }
    if json {
        print_json(&report)?;
    } else {
        let via = match &config.smtp_url {
            Some(url) => crate::display_url(url),
            None => config.mail_dir.clone(),
        };
        print!(
            "{}",
            CloseText {
                report: &report,
                finance_to: &config.finance_to,
                via: &via,
            }
        );
    }
    Ok(exit(&report))
}

/// The finance files of what a dry run would issue. Documents have no numbers until they
/// are issued, so they are called DRAFT-000001… in issue order.
fn preview_files(report: &CloseReport) -> Result<FinanceFiles> {
    let docs: Vec<Document> = report
        .documents
        .iter()
        .enumerate()
        .map(|(i, d)| Document {
            number: d
                .number
                .clone()
                .unwrap_or_else(|| format!("DRAFT-{:06}", i + 1)),
            draft: d.document.clone(),
        })
        .collect();
    let docs: Vec<&Document> = docs.iter().collect();
    Ok(finance_files(&docs, &report.refunds)?)
}

/// 3 when accounts failed (it wins), 4 when messages failed, 0 otherwise.
fn exit(report: &CloseReport) -> Exit {
    if !report.failed.is_empty() {
        Exit::AccountsNotClosed
    } else if report.emails_failed > 0 {
        Exit::MailNotSent
    } else {
        Exit::Ok
    }
}

/// A close report for people: the counts, the totals per currency, what went to finance
/// and by mail, and every account refunded, deleted, not closed or parked.
struct CloseText<'a> {
    report: &'a CloseReport,
    /// Where the finance batch goes.
    finance_to: &'a str,
    /// Where emails go: the mail server (password masked) or the mail folder.
    via: &'a str,
}

impl fmt::Display for CloseText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        let verb = if r.dry_run {
            "Dry run — nothing written. Would issue"
        } else {
            "Issued"
        };
        writeln!(
            f,
            "Close as of {}: {verb} {} invoice(s) and {} credit note(s).",
            r.as_of, r.invoices, r.credit_notes
        )?;
        for (cur, s) in &r.per_currency {
            writeln!(
                f,
                "  {cur}: invoiced {}, credited {}, amount due {}",
                s.invoiced, s.credited, s.amount_due
            )?;
        }
        if r.dry_run {
            for d in &r.documents {
                let doc = &d.document;
                writeln!(
                    f,
                    "  would issue {:<11} {:<16} {}  total {} {}",
                    doc.kind.as_str(),
                    doc.account.as_str(),
                    doc.issued_at,
                    doc.total,
                    doc.currency
                )?;
            }
        } else {
            match r.finance_batch {
                Some(b) => writeln!(f, "Finance batch {b} queued for {}.", self.finance_to)?,
                None => writeln!(f, "Nothing new to report to finance.")?,
            }
            writeln!(
                f,
                "Emails: {} sent via {}{}.",
                r.emails_sent,
                self.via,
                if r.emails_failed > 0 {
                    format!(", {} failed (queued for retry)", r.emails_failed)
                } else {
                    String::new()
                }
            )?;
            write!(f, "{}", Waiting(&r.emails_waiting))?;
        }
        if !r.refunds.is_empty() {
            let refunds: Vec<String> = r
                .refunds
                .iter()
                .map(|r| format!("{} {} {}", r.account, r.amount, r.currency))
                .collect();
            writeln!(
                f,
                "{} {}",
                if r.dry_run {
                    "Would refund:"
                } else {
                    "Refunds owed:"
                },
                refunds.join(", ")
            )?;
        }
        if !r.deleted_accounts.is_empty() {
            writeln!(
                f,
                "{} {}",
                if r.dry_run {
                    "Would delete the data of:"
                } else {
                    "Deleted the data of:"
                },
                r.deleted_accounts.join(", ")
            )?;
        }
        for a in &r.failed {
            writeln!(f, "  NOT CLOSED: account {}: {}", a.account, a.error)?;
        }
        for p in &r.parked {
            writeln!(
                f,
                "  {}: account {}: {}",
                if r.dry_run { "WOULD PARK" } else { "PARKED" },
                p.account,
                p.reason
            )?;
        }
        for p in &r.still_parked {
            writeln!(
                f,
                "  STILL PARKED: account {} (since {}): {}",
                p.account,
                p.since.format("%Y-%m-%d"),
                p.reason
            )?;
        }
        let parked = r.parked.len() + r.still_parked.len();
        if parked > 0 {
            writeln!(
                f,
                "{parked} account(s) {} — nothing issued for them; see `billrun parked`, release one with `billrun unpark ACCOUNT`.",
                if r.dry_run {
                    "would be parked"
                } else {
                    "parked"
                }
            )?;
        }
        Ok(())
    }
}
