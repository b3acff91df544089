//! Message rendering: customer document emails (text + HTML, the document as a PDF
//! attachment) and the finance batch (summary + CSV). Pure apart from lettre's builder; the
//! date comes from the caller's clock.
//!
//! Every value from the data that goes into a subject or a body (an account's name, a line's
//! description with its plan or tax name, ids, park reasons) passes through [`clean`] first:
//! line breaks and tabs become a space, and every other control character (C0, DEL, C1) and
//! the bidirectional override and isolate marks become U+FFFD, so what was there stays visible
//! while nothing in a name can start a line, a header, or a terminal escape. The templates' own
//! line breaks are the only ones in a body. Bodies are `String`s and lettre chooses their
//! Content-Transfer-Encoding: 7bit only for short-lined ASCII, else quoted-printable or base64
//! (a name with "ë" or a U+FFFD is never sent as 7bit). The CSV attachment keeps every value
//! exactly as stored (finance matches on them) and is always base64, the one encoding any
//! byte survives.

use super::{MailError, document_subject, message_id};
use crate::core::document::{Document, DocumentKind};
use crate::core::domain::Account;
use crate::core::money::Total;
use crate::store::{BatchExtras, StoredDocument};
use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use std::collections::BTreeMap;
use std::fmt::Write;

fn mailbox(addr: &str, what: &str) -> Result<Mailbox, MailError> {
    addr.parse()
        .map_err(|_| MailError::Build(format!("{what} address {addr:?} is not valid")))
}

/// `s` without control characters (see the module header): line breaks and tabs become a
/// space, the rest U+FFFD.
fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    let unfit = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            )
    };
    if !s.chars().any(unfit) {
        return std::borrow::Cow::Borrowed(s);
    }
    s.chars()
        .map(|c| match c {
            c if !unfit(c) => c,
            c if c.is_whitespace() => ' ',
            _ => char::REPLACEMENT_CHARACTER,
        })
        .collect()
}

/// `s` cleaned, then escaped for HTML text and attribute values.
fn escape(s: &str) -> String {
    clean(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A document as plain text: title, dates, lines, totals.
pub fn document_text(doc: &Document) -> String {
    let d = &doc.draft;
    let cur = d.currency;
    let mut text = format!(
        "{} {}\nAccount {}",
        d.kind.title(),
        clean(&doc.number),
        clean(d.account.as_str())
    );
    if let Some(s) = &d.subscription {
        let _ = write!(text, ", subscription {}", clean(s.as_str()));
    }
    let _ = writeln!(text, "\nIssued {}, due {}.", d.issued_at, d.due_at);
    if let Some(p) = d.period {
        let _ = writeln!(text, "Period: {p}.");
    }
    text.push('\n');
    let descriptions: Vec<_> = d.lines.iter().map(|l| clean(&l.description)).collect();
    let width = descriptions
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .max(14);
    for (l, description) in d.lines.iter().zip(&descriptions) {
        let _ = writeln!(
            text,
            "  {:<width$}  {:>12}",
            description,
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
        clean(&account.name),
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
        .subject(clean(&document_subject(d.kind, &doc.number)))
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
    let subject = clean(subject);
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
            let _ = writeln!(text, "  {}: {amount} {}", clean(account), clean(cur));
        }
    }
    if !extras.deleted_accounts.is_empty() {
        text.push_str("\nAccounts whose data was deleted (documents kept):\n");
        for account in &extras.deleted_accounts {
            let _ = writeln!(text, "  {}", clean(account));
        }
    }
    if !extras.parked.is_empty() {
        text.push_str(
            "\nAccounts parked (nothing issued: their close failed a sanity bound; `billrun unpark ACCOUNT` releases one):\n",
        );
        for (account, reason) in &extras.parked {
            let _ = writeln!(text, "  {}: {}", clean(account), clean(reason));
        }
    }
    text.push_str("\nEvery document is listed in the attached CSV.\n");
    let key = super::finance_batch_key(batch);
    let csv = finance_csv(docs)?;
    Message::builder()
        .from(mailbox(from, "sender")?)
        .to(mailbox(to, "finance")?)
        .subject(subject.into_owned())
        .message_id(Some(message_id(&key, from)))
        .date(date.into())
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain(text))
                .singlepart(
                    Attachment::new(format!("{key}.csv")).body(
                        lettre::message::Body::new_with_encoding(
                            csv.into_bytes(),
                            ContentTransferEncoding::Base64,
                        )
                        .expect("base64 carries any bytes"),
                        ContentType::parse("text/csv").expect("valid content type"),
                    ),
                ),
        )
        .map_err(|e| MailError::Build(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::document::{DocumentBuilder, LineKind};
    use crate::core::domain::{AccountId, AccountStatus, SubscriptionId};
    use crate::core::money::Currency;
    use crate::core::period::Period;
    use rust_decimal::Decimal;
    use std::borrow::Cow;

    /// A name as an attacker would write it: NUL, a terminal escape, a header injection,
    /// DEL, NEL, a right-to-left override, and a real non-ASCII letter.
    const NAME: &str = "Zoë\0 \x1b[31mRed\x1b[0m\r\nBcc: evil@example.com\x7f\u{85}\u{202e}x";
    /// What is left of it.
    const CLEANED: &str =
        "Zoë\u{fffd} \u{fffd}[31mRed\u{fffd}[0m  Bcc: evil@example.com\u{fffd} \u{fffd}x";
    /// All ASCII, so lettre would have sent it as 7bit, raw bytes and all.
    const ASCII_NAME: &str = "Mallory\0\x1b[31m\r\nBcc: evil@example.com";
    const ASCII_CLEANED: &str = "Mallory\u{fffd}\u{fffd}[31m  Bcc: evil@example.com";

    fn document() -> Document {
        let usd = Currency::new("USD").unwrap();
        let mut b = DocumentBuilder::new(usd);
        b.line(
            LineKind::Recurring,
            "Pro\rplan\x07\n",
            Decimal::new(1234, 2),
            true,
        );
        let day: chrono::NaiveDate = "2026-02-01".parse().unwrap();
        let draft = b
            .finish(
                "k".into(),
                AccountId::new("a1").unwrap(),
                Some(SubscriptionId::new("s1").unwrap()),
                day,
                day,
                Some(Period {
                    start: day,
                    end: "2026-03-01".parse().unwrap(),
                }),
                None,
                &[],
            )
            .unwrap();
        Document {
            number: "INV-2026-000042".into(),
            draft,
        }
    }

    fn account(name: &str) -> Account {
        Account {
            id: AccountId::new("a1").unwrap(),
            name: name.into(),
            email: "zoe@example.com".into(),
            currency: Currency::new("USD").unwrap(),
            timezone: "UTC".into(),
            taxes: Vec::new(),
            discount: None,
            status: AccountStatus::Active,
        }
    }

    fn quoted_printable(s: &str) -> Vec<u8> {
        let s = s.replace("=\r\n", "");
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'=' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).expect("=XX"));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    fn base64(s: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let digits: Vec<u32> = s
            .bytes()
            .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
            .map(|c| ALPHABET.iter().position(|&a| a == c).expect("base64") as u32)
            .collect();
        let mut out = Vec::new();
        for chunk in digits.chunks(4) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0, |n, (i, d)| n | d << (18 - 6 * i));
            for i in 0..chunk.len() - 1 {
                out.push((n >> (16 - 8 * i)) as u8);
            }
        }
        out
    }

    /// The raw message, checked to be 7-bit with CRLF line ends and no control bytes, and
    /// no `Bcc` anywhere at the start of a line; then each text part (content type,
    /// transfer encoding, decoded text).
    fn text_parts(message: &Message) -> Vec<(String, String, String)> {
        let raw = String::from_utf8(message.formatted()).expect("ASCII");
        assert!(raw.is_ascii(), "8-bit bytes in the message:\n{raw}");
        let bytes = raw.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at {i}:\n{raw}"),
                b'\n' => assert_eq!(bytes[i - 1], b'\r', "bare LF at {i}:\n{raw}"),
                b'\t' => {}
                _ => assert!(
                    !b.is_ascii_control(),
                    "control byte {b:#04x} at {i}:\n{raw}"
                ),
            }
        }
        for line in raw.split("\r\n") {
            assert!(
                !line.to_ascii_lowercase().starts_with("bcc:"),
                "injected header {line:?}:\n{raw}"
            );
        }

        let mut parts = Vec::new();
        for chunk in raw.split("\r\n--").skip(1) {
            let Some((head, body)) = chunk.split_once("\r\n\r\n") else {
                continue;
            };
            let header = |name: &str| {
                head.split("\r\n")
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                    .unwrap_or_default()
            };
            let content_type = header("content-type");
            if !content_type.starts_with("text/") {
                continue;
            }
            let encoding = header("content-transfer-encoding");
            let decoded = match encoding.as_str() {
                "quoted-printable" => quoted_printable(body),
                "base64" => base64(body),
                _ => body.as_bytes().to_vec(),
            };
            parts.push((
                content_type,
                encoding,
                String::from_utf8(decoded).expect("UTF-8 text"),
            ));
        }
        parts
    }

    #[test]
    fn clean_keeps_text_and_marks_what_it_replaces() {
        assert!(matches!(clean("Zoë Müller-Łukasz"), Cow::Borrowed(_)));
        assert_eq!(clean(NAME), CLEANED);
        assert_eq!(
            clean("a\tb\u{2028}c\u{2066}d\u{9b}e"),
            "a b c\u{fffd}d\u{fffd}e"
        );
    }

    #[test]
    fn control_characters_in_a_name_reach_no_body_or_header() {
        for (name, cleaned) in [(NAME, CLEANED), (ASCII_NAME, ASCII_CLEANED)] {
            let date = "2026-02-01T00:00:00Z".parse().unwrap();
            let message =
                document_email(&document(), &account(name), 0, "billing@billrun.test", date)
                    .unwrap();
            let parts = text_parts(&message);
            let kinds: Vec<&str> = parts.iter().map(|(t, _, _)| t.as_str()).collect();
            assert_eq!(kinds.len(), 2, "{kinds:?}");
            for (content_type, encoding, text) in &parts {
                assert!(
                    encoding == "quoted-printable" || encoding == "base64",
                    "{content_type}: non-ASCII text sent as {encoding:?}"
                );
                let bad: Vec<char> = text
                    .chars()
                    .filter(|&c| c.is_control() && c != '\r' && c != '\n' || c == '\u{202e}')
                    .collect();
                assert!(bad.is_empty(), "{content_type}: {bad:?} in {text:?}");
                // The name is still there, on the greeting's line, recognisable.
                let greeting = if content_type.starts_with("text/html") {
                    format!("<p>Hello {cleaned},</p>")
                } else {
                    format!("Hello {cleaned},\r\n")
                };
                assert!(text.contains(&greeting), "{content_type}: {text:?}");
                assert!(
                    text.contains("Pro plan\u{fffd} "),
                    "{content_type}: {text:?}"
                );
            }
        }
    }

    #[test]
    fn the_finance_batch_cleans_reasons_and_keeps_its_csv_exact() {
        let extras = BatchExtras {
            parked: vec![("a1".into(), "plan \"Pro\x1b[2J\" \r\nBcc: x@y.z".into())],
            ..Default::default()
        };
        let date = "2026-02-01T00:00:00Z".parse().unwrap();
        let message = finance_batch_email(
            1,
            "Billing run\r\nBcc: evil@example.com",
            &[],
            &extras,
            "billing@billrun.test",
            "finance@billrun.test",
            date,
        )
        .unwrap();
        let parts = text_parts(&message);
        let summary = &parts[0].2;
        assert!(
            summary.contains("a1: plan \"Pro\u{fffd}[2J\"   Bcc: x@y.z"),
            "{summary:?}"
        );
        assert!(summary.starts_with("Billing run  Bcc: evil@example.com"));
        let csv = parts
            .iter()
            .find(|(t, _, _)| t.starts_with("text/csv"))
            .unwrap();
        assert_eq!(csv.1, "base64");
        assert!(csv.2.starts_with("number,kind,account"), "{:?}", csv.2);
    }
}
