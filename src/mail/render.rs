//! Message rendering: customer document emails (text + HTML, the document as a PDF
//! attachment) and the finance batch (summary + CSV). Pure apart from lettre's builder; the
//! date comes from the caller's clock.

use super::{MailError, document_subject, message_id};
use crate::core::document::{Document, DocumentKind};
use crate::core::domain::Account;
use crate::core::money::Total;
use crate::store::{BatchExtras, StoredDocument};
use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use std::collections::BTreeMap;
use std::fmt::Write;

fn mailbox(addr: &str, what: &str) -> Result<Mailbox, MailError> {
    addr.parse()
        .map_err(|_| MailError::Build(format!("{what} address {addr:?} is not valid")))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A document as plain text: title, dates, lines, totals.
pub fn document_text(doc: &Document) -> String {
    let d = &doc.draft;
    let cur = d.currency;
    let mut text = format!("{} {}\nAccount {}", d.kind.title(), doc.number, d.account);
    if let Some(s) = &d.subscription {
        let _ = write!(text, ", subscription {s}");
    }
    let _ = writeln!(text, "\nIssued {}, due {}.", d.issued_at, d.due_at);
    if let Some(p) = d.period {
        let _ = writeln!(text, "Period: {p}.");
    }
    text.push('\n');
    let width = d
        .lines
        .iter()
        .map(|l| l.description.chars().count())
        .max()
        .unwrap_or(0)
        .max(14);
    for l in &d.lines {
        let _ = writeln!(
            text,
            "  {:<width$}  {:>12}",
            l.description,
            l.amount.to_string()
        );
    }
    let _ = writeln!(
        text,
        "\n  {:<width$}  {:>12} {cur}",
        "Total",
        d.total.to_string()
    );
    match d.kind {
        DocumentKind::Invoice => {
            if !d.credit_applied.is_zero() {
                let _ = writeln!(
                    text,
                    "  {:<width$}  {:>12} {cur}",
                    "Credit applied",
                    (-d.credit_applied).to_string()
                );
            }
            let _ = writeln!(
                text,
                "  {:<width$}  {:>12} {cur}",
                "Amount due",
                d.amount_due.to_string()
            );
        }
        DocumentKind::CreditNote => {
            let _ = writeln!(
                text,
                "\n{} {cur} has been added to your account balance.",
                -d.total
            );
        }
    }
    text
}

/// The customer's email for one document.
pub fn document_email(
    doc: &Document,
    account: &Account,
    unassigned_licences: u32,
    from: &str,
    date: DateTime<Utc>,
) -> Result<Message, MailError> {
    let d = &doc.draft;
    let cur = d.currency;
    let title = format!("{} {}", d.kind.title(), doc.number);
    // Source 001: licences nobody uses still renew; say so on every invoice until removed.
    let licence_note = (unassigned_licences > 0).then(|| {
        format!(
            "{unassigned_licences} licence(s) on this subscription are not assigned to anyone and are still billed. \
             Remove them if you no longer need them."
        )
    });
    let text = format!(
        "Hello {},\n\n{}\n{}Thank you.\n",
        account.name,
        document_text(doc),
        licence_note
            .as_ref()
            .map(|n| format!("{n}\n\n"))
            .unwrap_or_default()
    );
    let mut html = format!(
        "<html><body><p>Hello {},</p><h2>{}</h2><p>Issued {}, due {}.</p>",
        escape(&account.name),
        escape(&title),
        d.issued_at,
        d.due_at
    );
    if let Some(p) = d.period {
        let _ = write!(html, "<p>Period: {p}.</p>");
    }
    html.push_str("<table>");
    for l in &d.lines {
        let _ = write!(
            html,
            "<tr><td>{}</td><td align=\"right\">{}</td></tr>",
            escape(&l.description),
            l.amount
        );
    }
    let _ = write!(
        html,
        "<tr><th>Total</th><th align=\"right\">{} {cur}</th></tr>",
        d.total
    );
    match d.kind {
        DocumentKind::Invoice => {
            if !d.credit_applied.is_zero() {
                let _ = write!(
                    html,
                    "<tr><td>Credit applied</td><td align=\"right\">{} {cur}</td></tr>",
                    -d.credit_applied
                );
            }
            let _ = write!(
                html,
                "<tr><th>Amount due</th><th align=\"right\">{} {cur}</th></tr>",
                d.amount_due
            );
        }
        DocumentKind::CreditNote => {
            let _ = write!(
                html,
                "<tr><td colspan=\"2\">{} {cur} has been added to your account balance.</td></tr>",
                -d.total
            );
        }
    }
    html.push_str("</table>");
    if let Some(n) = &licence_note {
        let _ = write!(html, "<p>{}</p>", escape(n));
    }
    html.push_str("<p>Thank you.</p></body></html>");

    Message::builder()
        .from(mailbox(from, "sender")?)
        .to(mailbox(&account.email, "customer")?)
        .subject(document_subject(d.kind, &doc.number))
        .message_id(Some(message_id(&doc.number, from)))
        .date(date.into())
        .multipart(
            MultiPart::mixed()
                .multipart(MultiPart::alternative_plain_html(text, html))
                .singlepart(Attachment::new(format!("{}.pdf", doc.number)).body(
                    super::pdf::document_pdf(doc),
                    ContentType::parse("application/pdf").expect("valid content type"),
                )),
        )
        .map_err(|e| MailError::Build(e.to_string()))
}

/// CSV of a batch: one row per document (SPEC §7 columns).
pub fn finance_csv(docs: &[StoredDocument]) -> Result<String, MailError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| MailError::Build(e.to_string());
    w.write_record([
        "number",
        "kind",
        "account",
        "subscription",
        "issue_date",
        "period",
        "subtotal",
        "discount",
        "tax",
        "total",
        "credit_applied",
        "amount_due",
        "currency",
    ])
    .map_err(fail)?;
    for s in docs {
        let d = &s.document.draft;
        w.write_record([
            s.document.number.clone(),
            d.kind.as_str().to_string(),
            d.account.to_string(),
            d.subscription
                .as_ref()
                .map(|x| x.to_string())
                .unwrap_or_default(),
            d.issued_at.to_string(),
            d.period
                .map(|p| format!("{}/{}", p.start, p.end))
                .unwrap_or_default(),
            d.subtotal.to_string(),
            d.discount.to_string(),
            d.tax.to_string(),
            d.total.to_string(),
            d.credit_applied.to_string(),
            d.amount_due.to_string(),
            d.currency.to_string(),
        ])
        .map_err(fail)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| MailError::Build(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| MailError::Build(e.to_string()))
}

/// Totals per currency: (documents, invoiced, credited, credit applied, amount due), as
/// [`Total`]s: a batch may hold more than `Decimal` can sum.
type CurrencyTotals = (u64, Total, Total, Total, Total);

/// The finance batch: a summary per currency and the CSV.
pub fn finance_batch_email(
    batch: i64,
    subject: &str,
    docs: &[StoredDocument],
    extras: &BatchExtras,
    from: &str,
    to: &str,
    date: DateTime<Utc>,
) -> Result<Message, MailError> {
    let mut totals: BTreeMap<String, CurrencyTotals> = BTreeMap::new();
    for s in docs {
        let d = &s.document.draft;
        let cur = d.currency;
        let t = totals.entry(cur.to_string()).or_insert_with(|| {
            (
                0,
                Total::new(cur),
                Total::new(cur),
                Total::new(cur),
                Total::new(cur),
            )
        });
        t.0 += 1;
        match d.kind {
            DocumentKind::Invoice => t.1.add(d.total),
            DocumentKind::CreditNote => t.2.add(-d.total),
        }
        t.3.add(d.credit_applied);
        t.4.add(d.amount_due);
    }
    let mut text = format!("{subject}\n\n");
    for (cur, (n, invoiced, credited, applied, due)) in &totals {
        let _ = writeln!(
            text,
            "{cur}: {n} document(s); invoiced {invoiced}, credit notes {credited}, credit applied {applied}, amount due {due}"
        );
    }
    if !extras.refunds.is_empty() {
        text.push_str("\nRefunds owed (balances of canceled accounts):\n");
        for (account, cur, amount) in &extras.refunds {
            let _ = writeln!(text, "  {account}: {amount} {cur}");
        }
    }
    if !extras.deleted_accounts.is_empty() {
        text.push_str("\nAccounts whose data was deleted (documents kept):\n");
        for account in &extras.deleted_accounts {
            let _ = writeln!(text, "  {account}");
        }
    }
    if !extras.parked.is_empty() {
        text.push_str(
            "\nAccounts parked (nothing issued: their close failed a sanity bound; `billrun unpark ACCOUNT` releases one):\n",
        );
        for (account, reason) in &extras.parked {
            let _ = writeln!(text, "  {account}: {reason}");
        }
    }
    text.push_str("\nEvery document is listed in the attached CSV.\n");
    let key = super::finance_batch_key(batch);
    let csv = finance_csv(docs)?;
    Message::builder()
        .from(mailbox(from, "sender")?)
        .to(mailbox(to, "finance")?)
        .subject(subject)
        .message_id(Some(message_id(&key, from)))
        .date(date.into())
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain(text))
                .singlepart(Attachment::new(format!("{key}.csv")).body(
                    csv,
                    ContentType::parse("text/csv").expect("valid content type"),
                )),
        )
        .map_err(|e| MailError::Build(e.to_string()))
}
