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

use super::facts::DocumentFacts;
use super::{MailError, document_subject, message_id};
use crate::core::document::Document;
use crate::core::party::Seller;
use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use std::fmt::Write;

pub(super) fn mailbox(addr: &str, what: &str) -> Result<Mailbox, MailError> {
    addr.parse()
        .map_err(|_| MailError::Build(format!("{what} address {addr:?} is not valid")))
}

/// `s` without control characters (see the module header): line breaks and tabs become a
/// space, the rest U+FFFD.
pub(super) fn clean(s: &str) -> std::borrow::Cow<'_, str> {
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

/// A document as plain text: every fact the PDF shows (see [`DocumentFacts`]).
pub fn document_text(doc: &Document, seller: &Seller) -> String {
    let f = DocumentFacts::of(doc, seller);
    let mut text = format!("{} {}\n\n", f.title, clean(&f.number));
    let party = |name: &str, lines: &[String]| {
        std::iter::once(name)
            .chain(lines.iter().map(String::as_str))
            .map(|l| clean(l).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(text, "From: {}", party(&f.seller_name, &f.seller_lines));
    let _ = writeln!(text, "To: {}", party(&f.customer_name, &f.customer_lines));
    for (label, value) in &f.references {
        let _ = writeln!(text, "{label}: {}", clean(value));
    }
    text.push('\n');
    let descriptions: Vec<_> = f.rows.iter().map(|r| clean(&r.description)).collect();
    let width = descriptions
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(14, 60);
    let _ = writeln!(
        text,
        "  {:<width$}  {:>5}  {:>12}  {:>12}",
        "Description",
        "Qty",
        "Unit price",
        format!("Amount {}", f.currency)
    );
    for (r, description) in f.rows.iter().zip(&descriptions) {
        let _ = writeln!(
            text,
            "  {:<width$}  {:>5}  {:>12}  {:>12}",
            description, r.quantity, r.unit_price, r.amount
        );
    }
    text.push('\n');
    let label_width = f
        .totals
        .iter()
        .map(|t| t.label.chars().count())
        .max()
        .unwrap_or(0);
    for t in &f.totals {
        let _ = writeln!(
            text,
            "  {:<label_width$}  {:>16}",
            clean(&t.label),
            t.amount
        );
    }
    for n in &f.notes {
        let _ = write!(text, "\n{}\n", clean_lines(&n.text));
    }
    text
}

/// A multi-line note (payment instructions) cleaned line by line, its line breaks kept.
fn clean_lines(s: &str) -> String {
    s.lines()
        .map(|l| clean(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The same facts as HTML.
fn document_html(doc: &Document, seller: &Seller, greeting: &str, extra: Option<&str>) -> String {
    let f = DocumentFacts::of(doc, seller);
    let mut html = format!(
        "<html><body><p>Hello {},</p><h2>{} {}</h2>",
        escape(greeting),
        f.title,
        escape(&f.number)
    );
    let party = |name: &str, lines: &[String]| {
        std::iter::once(format!("<strong>{}</strong>", escape(name)))
            .chain(lines.iter().map(|l| escape(l)))
            .collect::<Vec<_>>()
            .join("<br>")
    };
    let _ = write!(
        html,
        "<table><tr><td valign=\"top\">From<br>{}</td><td valign=\"top\">To<br>{}</td></tr></table><p>",
        party(&f.seller_name, &f.seller_lines),
        party(&f.customer_name, &f.customer_lines)
    );
    for (label, value) in &f.references {
        let _ = write!(html, "{label}: {}<br>", escape(value));
    }
    let _ = write!(
        html,
        "</p><table><tr><th align=\"left\">Description</th><th align=\"right\">Qty</th>\
         <th align=\"right\">Unit price</th><th align=\"right\">Amount ({})</th></tr>",
        f.currency
    );
    for r in &f.rows {
        let _ = write!(
            html,
            "<tr><td>{}</td><td align=\"right\">{}</td><td align=\"right\">{}</td><td align=\"right\">{}</td></tr>",
            escape(&r.description),
            r.quantity,
            r.unit_price,
            r.amount
        );
    }
    for t in &f.totals {
        let (open, close) = if t.strong {
            ("<th", "</th>")
        } else {
            ("<td", "</td>")
        };
        let _ = write!(
            html,
            "<tr>{open} colspan=\"3\" align=\"right\">{}{close}{open} align=\"right\">{}{close}</tr>",
            escape(&t.label),
            t.amount
        );
    }
    html.push_str("</table>");
    for n in &f.notes {
        let text = n.text.lines().map(escape).collect::<Vec<_>>().join("<br>");
        if n.strong {
            let _ = write!(html, "<p><strong>{text}</strong></p>");
        } else {
            let _ = write!(html, "<p>{text}</p>");
        }
    }
    if let Some(n) = extra {
        let _ = write!(html, "<p>{}</p>", escape(n));
    }
    html.push_str("<p>Thank you.</p></body></html>");
    html
}

/// The customer's email for one document: text and HTML parts with the same facts, and the
/// document as a PDF. `to` is the address captured when the document was issued.
pub fn document_email(
    doc: &Document,
    seller: &Seller,
    unassigned_licences: u32,
    from: &str,
    to: &str,
    date: DateTime<Utc>,
) -> Result<Message, MailError> {
    let d = &doc.draft;
    // Source 001: licences nobody uses still renew; say so on every invoice until removed.
    let licence_note = (unassigned_licences > 0).then(|| {
        format!(
            "{unassigned_licences} licence(s) on this subscription are not assigned to anyone and are still billed. \
             Remove them if you no longer need them."
        )
    });
    let greeting = &d.customer.name;
    let text = format!(
        "Hello {},\n\n{}\n{}Thank you.\n",
        clean(greeting),
        document_text(doc, seller),
        licence_note
            .as_ref()
            .map(|n| format!("{n}\n\n"))
            .unwrap_or_default()
    );
    let html = document_html(doc, seller, greeting, licence_note.as_deref());
    let pdf = super::pdf::document_pdf(doc, seller).map_err(MailError::Build)?;
    if pdf.replaced > 0 {
        tracing::warn!(
            document = %doc.number,
            characters = pdf.replaced,
            "characters the PDF font lacks are printed as U+FFFD"
        );
    }
    Message::builder()
        .from(mailbox(from, "sender")?)
        .to(mailbox(to, "customer")?)
        .subject(clean(&document_subject(d.kind, &doc.number)))
        .message_id(Some(message_id(&doc.number, from)))
        .date(date.into())
        .multipart(
            MultiPart::mixed()
                .multipart(MultiPart::alternative_plain_html(text, html))
                .singlepart(Attachment::new(format!("{}.pdf", doc.number)).body(
                    pdf.bytes,
                    ContentType::parse("application/pdf").expect("valid content type"),
                )),
        )
        .map_err(|e| MailError::Build(e.to_string()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::core::document::fixtures::february_invoice;
    use crate::core::document::{DocumentBuilder, LineKind};
    use crate::core::domain::{Account, AccountId};
    use crate::core::money::Currency;
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

    fn document(name: &str) -> Document {
        let usd = Currency::new("USD").unwrap();
        let mut b = DocumentBuilder::new(usd);
        b.line(
            LineKind::Recurring,
            "Pro\rplan\x07\n",
            Decimal::new(1234, 2),
            true,
        );
        let account = Account::new(AccountId::new("a1").unwrap(), name, "zoe@example.com", usd);
        february_invoice(b, &account)
    }

    pub(crate) fn quoted_printable(s: &str) -> Vec<u8> {
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

    pub(crate) fn base64(s: &str) -> Vec<u8> {
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
    pub(crate) fn text_parts(message: &Message) -> Vec<(String, String, String)> {
        text_parts_of(message.formatted())
    }

    /// [`text_parts`] of a message's bytes.
    pub(crate) fn text_parts_of(raw: Vec<u8>) -> Vec<(String, String, String)> {
        let raw = String::from_utf8(raw).expect("ASCII");
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
            let message = document_email(
                &document(name),
                &Seller::default(),
                0,
                "billing@billrun.test",
                "zoe@example.com",
                date,
            )
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
}
