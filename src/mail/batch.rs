//! The finance batch email (SPEC §7, §11): the run's totals per currency and tax per rate,
//! what else the run did (refunds owed, deleted accounts, parked accounts), and the finance
//! files attached in base64.
//!
//! A batch carries every document of its run, so it can be as large as the run: 100,000
//! documents make a message of about 100 MB. [`BatchSpool`] builds it in bounded memory:
//! documents are added page by page — their rows go to the CSV files in a private temporary
//! folder, their amounts to the running totals — and `finish` writes the whole message to a
//! file: the headers and text part as lettre formats them, each attachment encoded straight
//! from its file. [`finance_batch_email`] builds the same message in memory (tests, small
//! batches).

use super::finance::{DOCUMENTS_CSV, FinanceFilesWriter, LINES_CSV, REFUNDS_CSV, finance_files};
use super::render::{clean, mailbox};
use super::{MailError, message_id};
use crate::core::document::{Document, DocumentKind, LineKind, RefundOwed};
use crate::core::money::Total;
use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Attachment, MultiPart, SinglePart};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Totals of one currency in a batch, each a [`Total`]: a batch may hold more than
/// `Decimal` can sum.
struct CurrencyTotals {
    documents: u64,
    net: Total,
    tax: Total,
    total: Total,
    credit_applied: Total,
    amount_due: Total,
    /// Tax per (name, rate).
    per_rate: BTreeMap<(String, String), Total>,
}

/// A batch's totals, summed document by document.
#[derive(Default)]
pub struct BatchTotals {
    by_currency: BTreeMap<String, CurrencyTotals>,
    credit_notes: u64,
}

impl BatchTotals {
    pub fn add(&mut self, doc: &Document) {
        let d = &doc.draft;
        let cur = d.currency;
        if d.kind == DocumentKind::CreditNote {
            self.credit_notes += 1;
        }
        let t = self
            .by_currency
            .entry(cur.to_string())
            .or_insert_with(|| CurrencyTotals {
                documents: 0,
                net: Total::new(cur),
                tax: Total::new(cur),
                total: Total::new(cur),
                credit_applied: Total::new(cur),
                amount_due: Total::new(cur),
                per_rate: BTreeMap::new(),
            });
        t.documents += 1;
        t.net.add(d.net());
        t.tax.add(d.tax);
        t.total.add(d.total);
        t.credit_applied.add(d.credit_applied);
        t.amount_due.add(d.amount_due);
        for l in d.lines.iter().filter(|l| l.kind == LineKind::Tax) {
            let (name, rate) = match &l.tax {
                Some(r) => (r.name.clone(), r.percent.normalize().to_string()),
                None => (l.description.clone(), String::new()),
            };
            t.per_rate
                .entry((name, rate))
                .or_insert_with(|| Total::new(cur))
                .add(l.amount);
        }
    }

    /// Per currency the documents, net, tax, total, credit applied and amount due, then its
    /// tax per rate.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        for (cur, t) in &self.by_currency {
            let _ = writeln!(
                text,
                "{cur}: {} document(s); net {}, tax {}, total {}, credit applied {}, amount due {}",
                t.documents, t.net, t.tax, t.total, t.credit_applied, t.amount_due
            );
            for ((name, rate), amount) in &t.per_rate {
                let _ = writeln!(text, "  tax {} {rate}%: {amount}", clean(name));
            }
        }
        if text.is_empty() {
            text.push_str("No documents.\n");
        }
        text
    }
}

/// The batch summary of these documents (see [`BatchTotals::summary`]).
pub fn finance_summary(docs: &[&Document]) -> String {
    let mut totals = BatchTotals::default();
    for doc in docs {
        totals.add(doc);
    }
    totals.summary()
}

/// What a finance batch reports besides its documents: what else its runs did.
pub struct BatchReport<'a> {
    pub batch: i64,
    pub subject: &'a str,
    pub refunds: &'a [RefundOwed],
    pub deleted_accounts: &'a [String],
    /// (account, reason) of each account the batch's runs parked.
    pub parked: &'a [(String, String)],
}

/// The batch's text part: the summary, then what else the run did.
fn batch_text(report: &BatchReport<'_>, totals: &BatchTotals) -> String {
    let subject = clean(report.subject);
    let mut text = format!("{subject}\n\n{}", totals.summary());
    if totals.credit_notes > 0 {
        let _ = writeln!(
            text,
            "\n{} of the documents are credit notes (negative totals).",
            totals.credit_notes
        );
    }
    if !report.refunds.is_empty() {
        text.push_str("\nRefunds owed (see refunds.csv):\n");
        for r in report.refunds {
            let _ = writeln!(
                text,
                "  {}: {} {}",
                clean(&r.account),
                r.amount,
                clean(&r.currency)
            );
        }
    }
    if !report.deleted_accounts.is_empty() {
        text.push_str("\nAccounts whose data was deleted (documents kept):\n");
        for account in report.deleted_accounts {
            let _ = writeln!(text, "  {}", clean(account));
        }
    }
    if !report.parked.is_empty() {
        text.push_str(
            "\nAccounts parked (nothing issued: their close failed a sanity bound; `billrun unpark ACCOUNT` releases one):\n",
        );
        for (account, reason) in report.parked {
            let _ = writeln!(text, "  {}: {}", clean(account), clean(reason));
        }
    }
    text.push_str(
        "\nEvery document is a row of documents.csv and every line a row of lines.csv.\n",
    );
    text
}

/// The batch message with these attachments (name, content), each in base64.
fn batch_message(
    report: &BatchReport<'_>,
    text: String,
    attachments: Vec<(&str, Vec<u8>)>,
    from: &str,
    to: &str,
    date: DateTime<Utc>,
) -> Result<Message, MailError> {
    let key = super::finance_batch_key(report.batch);
    let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(text));
    for (name, content) in attachments {
        parts = parts.singlepart(
            Attachment::new(name.to_string()).body(
                lettre::message::Body::new_with_encoding(content, ContentTransferEncoding::Base64)
                    .expect("base64 carries any bytes"),
                ContentType::parse("text/csv; charset=utf-8").expect("valid content type"),
            ),
        );
    }
    Message::builder()
        .from(mailbox(from, "sender")?)
        .to(mailbox(to, "finance")?)
        .subject(clean(report.subject).into_owned())
        .message_id(Some(message_id(&key, from)))
        .date(date.into())
        .multipart(parts)
        .map_err(|e| MailError::Build(e.to_string()))
}

/// The finance batch of these documents, in memory.
pub fn finance_batch_email(
    report: &BatchReport<'_>,
    docs: &[&Document],
    from: &str,
    to: &str,
    date: DateTime<Utc>,
) -> Result<Message, MailError> {
    let mut totals = BatchTotals::default();
    for doc in docs {
        totals.add(doc);
    }
    let text = batch_text(report, &totals);
    let attachments = finance_files(docs, report.refunds)?
        .files
        .into_iter()
        .map(|(name, content)| (name, content.into_bytes()))
        .collect();
    batch_message(report, text, attachments, from, to, date)
}

fn io_error(e: std::io::Error) -> MailError {
    MailError::Build(format!("finance batch spool: {e}"))
}

/// A finance batch being built in bounded memory (see the module header). Its temporary
/// folder (owner-only) goes with it.
pub struct BatchSpool {
    dir: tempfile::TempDir,
    files: FinanceFilesWriter,
    totals: BatchTotals,
}

/// Raw bytes read from an attachment's file at a time: whole base64 lines (57 bytes each).
const SPOOL_READ: usize = 57 * 1024;

impl BatchSpool {
    /// An empty batch, its files in a new private folder under the system's temporary folder.
    pub fn new() -> Result<Self, MailError> {
        let dir = tempfile::Builder::new()
            .prefix("billrun-batch-")
            .tempdir()
            .map_err(io_error)?;
        let files = FinanceFilesWriter::create(dir.path()).map_err(io_error)?;
        Ok(BatchSpool {
            dir,
            files,
            totals: BatchTotals::default(),
        })
    }

    /// Add a page of the batch's documents.
    pub fn add(&mut self, docs: &[&Document]) -> Result<(), MailError> {
        self.files.append(docs).map_err(io_error)?;
        for doc in docs {
            self.totals.add(doc);
        }
        Ok(())
    }

    /// Write the whole message to a new private temporary file in `dir` (`.finance-batch-…
    /// .tmp`, deleted when dropped unless persisted); returns it and the message's envelope.
    pub fn finish_in(
        self,
        dir: &std::path::Path,
        report: &BatchReport<'_>,
        from: &str,
        to: &str,
        date: DateTime<Utc>,
    ) -> Result<(tempfile::NamedTempFile, lettre::address::Envelope), MailError> {
        let mut file = tempfile::Builder::new()
            .prefix(".finance-batch-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(io_error)?;
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, file.as_file_mut());
        let envelope = self.finish(report, from, to, date, &mut out)?;
        drop(out);
        Ok((file, envelope))
    }

    /// Write the whole message to `out`; returns its envelope.
    pub fn finish(
        self,
        report: &BatchReport<'_>,
        from: &str,
        to: &str,
        date: DateTime<Utc>,
        out: &mut impl std::io::Write,
    ) -> Result<lettre::address::Envelope, MailError> {
        let paths = self.files.finish(report.refunds).map_err(io_error)?;
        let names = [DOCUMENTS_CSV, LINES_CSV, REFUNDS_CSV];
        // Each attachment's body is first a marker unique to this message; the formatted
        // message is then copied with each marker's encoding replaced by the file's.
        let nonce = format!(
            "{}-{}",
            std::process::id(),
            date.timestamp_nanos_opt().unwrap_or_default()
        );
        let markers: Vec<String> = names
            .iter()
            .take(paths.len())
            .map(|name| format!("billrun-spooled-attachment:{name}:{nonce}"))
            .collect();
        let attachments = names
            .iter()
            .zip(&markers)
            .map(|(name, marker)| (*name, marker.clone().into_bytes()))
            .collect();
        let text = batch_text(report, &self.totals);
        let message = batch_message(report, text, attachments, from, to, date)?;
        let formatted = message.formatted();
        let mut copied = 0;
        for (marker, path) in markers.iter().zip(&paths) {
            let mut encoded = String::new();
            email_encoding::body::base64::encode(marker.as_bytes(), &mut encoded)
                .map_err(|e| MailError::Build(e.to_string()))?;
            // The attachments follow the text part: the last occurrence is the body.
            let at = find_last(&formatted[copied..], encoded.as_bytes())
                .map(|i| copied + i)
                .ok_or_else(|| MailError::Build("finance batch: attachment marker lost".into()))?;
            out.write_all(&formatted[copied..at]).map_err(io_error)?;
            encode_file(path, out)?;
            copied = at + encoded.len();
        }
        out.write_all(&formatted[copied..]).map_err(io_error)?;
        out.flush().map_err(io_error)?;
        drop(self.dir);
        Ok(message.envelope().clone())
    }
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// The file in base64 as lettre encodes a body: lines of 76 characters joined by CRLF.
fn encode_file(path: &std::path::Path, out: &mut impl std::io::Write) -> Result<(), MailError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let mut raw = vec![0u8; SPOOL_READ];
    let mut encoded = String::with_capacity(SPOOL_READ / 57 * 78);
    let mut first = true;
    loop {
        // Fill the buffer (a short read is not the end) so lines stay whole.
        let mut filled = 0;
        while filled < raw.len() {
            match file.read(&mut raw[filled..]).map_err(io_error)? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        encoded.clear();
        email_encoding::body::base64::encode(&raw[..filled], &mut encoded)
            .map_err(|e| MailError::Build(e.to_string()))?;
        if !first {
            out.write_all(b"\r\n").map_err(io_error)?;
        }
        out.write_all(encoded.as_bytes()).map_err(io_error)?;
        first = false;
        if filled < raw.len() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
