//! The PDF of a document, attached to the customer's email: a pure function from an issued
//! `Document` to PDF bytes (no IO, no clock), laid out by hand with printpdf's built-in
//! Helvetica.
//!
//! The built-in fonts are not embedded, which keeps a PDF at a few kilobytes, but they only
//! cover WinAnsi (Latin-1 plus a few typographic signs): anything else is shown as `?`.
//! printpdf gives no metrics for them, so the Helvetica widths (from Adobe's AFM files) are
//! here, to right-align amounts and wrap long descriptions.

use crate::core::document::{Document, DocumentKind};
use printpdf::{
    BuiltinFont, Color, Greyscale, Line, LinePoint, Mm, Op, PdfDocument, PdfFontHandle, PdfPage,
    PdfSaveOptions, Point, Pt, TextItem,
};
use rust_decimal::Decimal;

// A4 portrait, in points.
const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const MARGIN: f32 = 56.0;
const BOTTOM: f32 = 64.0;
const BODY: f32 = 10.0;
const ROW: f32 = 15.0;
/// Room kept on the right for the amount column.
const AMOUNT_COL: f32 = 130.0;

#[derive(Clone, Copy)]
enum Face {
    Regular,
    Bold,
}

impl Face {
    fn font(self) -> BuiltinFont {
        match self {
            Face::Regular => BuiltinFont::Helvetica,
            Face::Bold => BuiltinFont::HelveticaBold,
        }
    }
}

/// The document as a PDF (A4, one or more pages).
pub fn document_pdf(doc: &Document) -> Vec<u8> {
    let d = &doc.draft;
    let cur = d.currency;
    let title = format!("{} {}", d.kind.title(), doc.number);
    let mut w = Writer::new(&title);

    w.text(MARGIN, 18.0, Face::Bold, &title);
    w.advance(30.0);
    let mut account = format!("Account {}", d.account);
    if let Some(s) = &d.subscription {
        account.push_str(&format!(", subscription {s}"));
    }
    w.row(&[(MARGIN, Face::Regular, account)]);
    w.row(&[(
        MARGIN,
        Face::Regular,
        format!("Issued {}    Due {}", d.issued_at, d.due_at),
    )]);
    if let Some(p) = d.period {
        w.row(&[(MARGIN, Face::Regular, format!("Period {p}"))]);
    }
    w.advance(ROW);
    w.table_header(cur.code());

    let desc_width = PAGE_W - 2.0 * MARGIN - AMOUNT_COL;
    for line in &d.lines {
        let wrapped = wrap(&clean(&line.description), Face::Regular, desc_width);
        for (i, part) in wrapped.iter().enumerate() {
            w.ensure_room(cur.code());
            w.text(MARGIN, BODY, Face::Regular, part);
            if i == 0 {
                w.right(BODY, Face::Regular, &line.amount.to_string());
            }
            w.advance(ROW);
        }
    }
    w.rule();
    w.advance(6.0);

    let money = |x: Decimal| format!("{x} {cur}");
    let mut totals: Vec<(&str, String, Face)> = vec![
        ("Subtotal", money(d.subtotal), Face::Regular),
        ("Discount", money(d.discount), Face::Regular),
        ("Tax", money(d.tax), Face::Regular),
        ("Total", money(d.total), Face::Bold),
    ];
    if d.kind == DocumentKind::Invoice {
        // Shown as a deduction; a zero stays "0.00", not "-0.00".
        let applied = if d.credit_applied.is_zero() {
            d.credit_applied
        } else {
            -d.credit_applied
        };
        totals.push(("Credit applied", money(applied), Face::Regular));
        totals.push(("Amount due", money(d.amount_due), Face::Bold));
    }
    let label_x = PAGE_W - MARGIN - AMOUNT_COL - 60.0;
    for (label, amount, face) in totals {
        w.ensure_room(cur.code());
        w.text(label_x, BODY, face, label);
        w.right(BODY, face, &amount);
        w.advance(ROW);
    }
    if d.kind == DocumentKind::CreditNote {
        w.advance(ROW);
        w.ensure_room(cur.code());
        w.text(
            MARGIN,
            BODY,
            Face::Regular,
            &format!(
                "{} has been added to your account balance.",
                money(-d.total)
            ),
        );
    }
    w.finish(&doc.number, d.issued_at)
}

/// Pages being written: the current one's operations and the cursor's height.
struct Writer {
    title: String,
    pages: Vec<Vec<Op>>,
    y: f32,
}

impl Writer {
    fn new(title: &str) -> Self {
        Writer {
            title: title.to_string(),
            pages: vec![Vec::new()],
            y: PAGE_H - MARGIN,
        }
    }

    fn ops(&mut self) -> &mut Vec<Op> {
        self.pages.last_mut().expect("there is always a page")
    }

    fn advance(&mut self, by: f32) {
        self.y -= by;
    }

    /// Start a new page when the next row would run into the bottom margin; the table's
    /// header is repeated so each page reads on its own.
    fn ensure_room(&mut self, currency: &str) {
        if self.y - ROW >= BOTTOM {
            return;
        }
        self.pages.push(Vec::new());
        self.y = PAGE_H - MARGIN;
        let cont = format!("{} (continued)", self.title);
        self.text(MARGIN, 12.0, Face::Bold, &cont);
        self.advance(2.0 * ROW);
        self.table_header(currency);
    }

    fn table_header(&mut self, currency: &str) {
        self.text(MARGIN, BODY, Face::Bold, "Description");
        self.right(BODY, Face::Bold, &format!("Amount ({currency})"));
        self.advance(ROW);
        self.rule();
    }

    fn row(&mut self, cells: &[(f32, Face, String)]) {
        for (x, face, s) in cells {
            self.text(*x, BODY, *face, s);
        }
        self.advance(ROW);
    }

    fn text(&mut self, x: f32, size: f32, face: Face, s: &str) {
        let y = self.y;
        // One text object per run: BT resets the text matrix, so `Td` is absolute.
        self.ops().extend([
            Op::StartTextSection,
            Op::SetFont {
                font: PdfFontHandle::Builtin(face.font()),
                size: Pt(size),
            },
            Op::SetTextCursor {
                pos: Point { x: Pt(x), y: Pt(y) },
            },
            Op::ShowText {
                items: vec![TextItem::Text(clean(s))],
            },
            Op::EndTextSection,
        ]);
    }

    /// Text whose right edge is at the right margin.
    fn right(&mut self, size: f32, face: Face, s: &str) {
        let s = clean(s);
        let x = PAGE_W - MARGIN - width(&s, face, size);
        self.text(x, size, face, &s);
    }

    /// A line under the row just written.
    fn rule(&mut self) {
        let y = self.y + ROW - 4.0;
        let at = |x: f32| LinePoint {
            p: Point { x: Pt(x), y: Pt(y) },
            bezier: false,
        };
        self.ops().extend([
            Op::SetOutlineColor {
                col: Color::Greyscale(Greyscale::new(0.5, None)),
            },
            Op::SetOutlineThickness { pt: Pt(0.5) },
            Op::DrawLine {
                line: Line {
                    points: vec![at(MARGIN), at(PAGE_W - MARGIN)],
                    is_closed: false,
                },
            },
        ]);
    }

    fn finish(mut self, number: &str, issued: chrono::NaiveDate) -> Vec<u8> {
        let count = self.pages.len();
        if count > 1 {
            for (i, page) in self.pages.iter_mut().enumerate() {
                let label = format!("{number} - page {} of {count}", i + 1);
                let x = PAGE_W - MARGIN - width(&label, Face::Regular, 8.0);
                page.extend([
                    Op::StartTextSection,
                    Op::SetFont {
                        font: PdfFontHandle::Builtin(BuiltinFont::Helvetica),
                        size: Pt(8.0),
                    },
                    Op::SetTextCursor {
                        pos: Point {
                            x: Pt(x),
                            y: Pt(BOTTOM - 24.0),
                        },
                    },
                    Op::ShowText {
                        items: vec![TextItem::Text(label)],
                    },
                    Op::EndTextSection,
                ]);
            }
        }
        let pages = self
            .pages
            .into_iter()
            .map(|ops| PdfPage::new(Mm(210.0), Mm(297.0), ops))
            .collect();
        let mut pdf = PdfDocument::new(&clean(&self.title));
        let date = {
            use chrono::Datelike;
            printpdf::DateTime {
                date: printpdf::Date {
                    year: issued.year(),
                    month: issued.month() as u8,
                    day: issued.day() as u8,
                },
                ..printpdf::DateTime::epoch()
            }
        };
        let info = &mut pdf.metadata.info;
        info.creation_date = date;
        info.modification_date = date;
        info.metadata_date = date;
        info.producer = "billrun".into();
        info.creator = "billrun".into();
        let mut warnings = Vec::new();
        let mut bytes = pdf
            .with_pages(pages)
            .save(&PdfSaveOptions::default(), &mut warnings);
        stable_id(&mut bytes, number);
        bytes
    }
}

/// printpdf fills the trailer's `/ID` from a process-wide counter, so the same document would
/// come out different on a resend. Both ids are overwritten in place, same length, with ones
/// derived from the document number: equal input, equal bytes.
fn stable_id(bytes: &mut [u8], number: &str) {
    let Some(at) = find_last(bytes, b"/ID") else {
        return;
    };
    // FNV-1a, spread over 32 letters like printpdf's own ids.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in number.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut i = at;
    for _ in 0..2 {
        let Some(open) = bytes[i..].iter().position(|&b| b == b'(').map(|p| p + i) else {
            return;
        };
        let Some(close) = bytes[open..]
            .iter()
            .position(|&b| b == b')')
            .map(|p| p + open)
        else {
            return;
        };
        for b in &mut bytes[open + 1..close] {
            h = (h ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0x0100_0000_01b3);
            *b = b'A' + (h >> 59) as u8 % 26;
        }
        i = close + 1;
    }
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Text the built-in fonts can show: WinAnsi characters stay, whitespace becomes a space,
/// anything else a `?`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_whitespace() {
                ' '
            } else if win_ansi(c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn win_ansi(c: char) -> bool {
    matches!(c as u32, 0x20..=0x7E | 0xA0..=0xFF) || "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ".contains(c)
}

/// Widths of ASCII 32..=126 in thousandths of an em (Adobe's Helvetica AFM).
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278,
    278, // ' '..'/'
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584,
    556, // '0'..'?'
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722,
    778, // '@'..'O'
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469,
    556, // 'P'..'_'
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556,
    556, // '`'..'o'
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, // 'p'..'~'
];

const HELVETICA_BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278,
    278, // ' '..'/'
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584,
    611, // '0'..'?'
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722,
    778, // '@'..'O'
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584,
    556, // 'P'..'_'
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611,
    611, // '`'..'o'
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584, // 'p'..'~'
];

/// Width of `s` in points. Outside ASCII, a wide letter's width: a wrap comes early rather
/// than late.
fn width(s: &str, face: Face, size: f32) -> f32 {
    let table = match face {
        Face::Regular => &HELVETICA,
        Face::Bold => &HELVETICA_BOLD,
    };
    let units: u32 = s
        .chars()
        .map(|c| match c as u32 {
            cp @ 32..=126 => u32::from(table[(cp - 32) as usize]),
            _ => 778,
        })
        .sum();
    units as f32 * size / 1000.0
}

/// Split `s` into lines no wider than `max`, at spaces where possible.
fn wrap(s: &str, face: Face, max: f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in s.split(' ').filter(|w| !w.is_empty()) {
        let candidate = if current.is_empty() {
            word.to_string()
        } else {
            format!("{current} {word}")
        };
        if width(&candidate, face, BODY) <= max {
            current = candidate;
            continue;
        }
        if !current.is_empty() {
            lines.push(std::mem::take(&mut current));
        }
        // A word wider than the column is cut wherever it has to be.
        for c in word.chars() {
            current.push(c);
            if width(&current, face, BODY) > max {
                current.pop();
                lines.push(std::mem::replace(&mut current, c.to_string()));
            }
        }
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::document::{DocumentBuilder, LineKind};
    use crate::core::domain::{AccountId, SubscriptionId};
    use crate::core::money::Currency;
    use crate::core::period::Period;

    fn document(lines: usize, description: &str) -> Document {
        let usd = Currency::new("USD").unwrap();
        let mut b = DocumentBuilder::new(usd);
        for i in 0..lines {
            b.line(
                LineKind::Recurring,
                format!("{description} {i}"),
                Decimal::new(1234 + i as i64, 2),
                true,
            );
        }
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

    #[test]
    fn a_pdf_of_one_page() {
        let pdf = document_pdf(&document(3, "Basic plan"));
        assert!(pdf.starts_with(b"%PDF-"));
        assert_eq!(page_count(&pdf), 1);
    }

    #[test]
    fn lines_overflow_onto_more_pages() {
        let pdf = document_pdf(&document(120, "Seat licence"));
        assert!(pdf.starts_with(b"%PDF-"));
        assert!(page_count(&pdf) >= 3, "{} page(s)", page_count(&pdf));
    }

    #[test]
    fn the_same_document_gives_the_same_bytes() {
        let doc = document(5, "Basic plan");
        assert_eq!(document_pdf(&doc), document_pdf(&doc));
        let mut other = doc.clone();
        other.number = "INV-2026-000043".into();
        assert_ne!(document_pdf(&doc), document_pdf(&other));
    }

    #[test]
    fn text_outside_latin1_does_not_panic() {
        let doc = document(
            2,
            "Ünïcödé — 日本語 emoji 🎉 and a very long word Supercalifragilisticexpialidocious\
             Supercalifragilisticexpialidocious Supercalifragilisticexpialidocious",
        );
        let pdf = document_pdf(&doc);
        assert!(pdf.starts_with(b"%PDF-"));
        assert_eq!(clean("a日b🎉\tç€"), "a?b? ç€");
    }

    #[test]
    fn wrapping_keeps_every_line_inside_the_column() {
        let text = "word ".repeat(60) + &"x".repeat(200);
        let lines = wrap(&text, Face::Regular, 200.0);
        assert!(lines.len() > 3);
        assert!(lines.iter().all(|l| width(l, Face::Regular, BODY) <= 200.0));
        assert_eq!(lines.concat().replace(' ', ""), text.replace(' ', ""));
        assert_eq!(wrap("", Face::Regular, 200.0), vec![String::new()]);
    }

    fn page_count(pdf: &[u8]) -> usize {
        let mut warnings = Vec::new();
        PdfDocument::parse(pdf, &Default::default(), &mut warnings)
            .expect("billrun's PDF parses")
            .pages
            .len()
    }
}
