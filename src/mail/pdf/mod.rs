//! The PDF of a document, attached to the customer's email: a pure function from an issued
//! `Document` and the seller to PDF bytes (no IO, no clock). The layout is an invoice as
//! SPEC §11 lists it: seller and customer with addresses and tax IDs; number, dates and
//! period; for a credit note the invoice it corrects and why; the lines with quantity and unit
//! price; the discount; one tax line per rate with its taxable base; the totals, credit
//! applied and amount due; payment terms and instructions; the reverse-charge note. Lines that
//! do not fit a page go on over pages numbered "Page N of M", the table header repeated.

mod canvas;
mod font;

use super::facts::{DocumentFacts, Row};
use crate::core::document::{Document, DocumentKind};
use crate::core::party::Seller;
use canvas::{Canvas, MARGIN, PAGE_W, wrap};
use font::Face;

const BODY: f32 = 9.5;
const SMALL: f32 = 8.5;
const ROW: f32 = 14.0;
const RIGHT: f32 = PAGE_W - MARGIN;
/// Right edges of the quantity and unit price columns.
const QTY_RIGHT: f32 = 365.0;
const UNIT_RIGHT: f32 = 450.0;
/// Where the description column ends.
const DESC_MAX: f32 = QTY_RIGHT - 40.0 - MARGIN;
/// Left edge of the totals' labels and of the header's right column.
const TOTALS_X: f32 = 300.0;

/// A rendered PDF and how many characters the font lacked (printed as U+FFFD).
#[derive(Debug, Clone)]
pub struct Pdf {
    pub bytes: Vec<u8>,
    pub replaced: usize,
}

/// The document as a PDF (A4, one or more pages).
pub fn document_pdf(doc: &Document, seller: &Seller) -> Result<Pdf, String> {
    let f = DocumentFacts::of(doc, seller);
    let mut c = Canvas::new();
    header(&mut c, &f, doc.draft.kind);
    table_header(&mut c, &f.currency);
    for row in &f.rows {
        table_row(&mut c, row, &f.currency);
    }
    c.rule(MARGIN, RIGHT, 5.0, 0.5);
    c.advance(ROW);
    for t in &f.totals {
        total_row(&mut c, &t.label, &t.amount, face(t.strong));
    }
    c.advance(ROW);
    for n in &f.notes {
        paragraph(&mut c, face(n.strong), &n.text);
    }
    let title = format!("{} {}", f.title, f.number);
    let replaced = c.replaced;
    let bytes = c.finish(&title, &f.number, &f.seller_name, doc.draft.issued_at)?;
    Ok(Pdf { bytes, replaced })
}

fn face(strong: bool) -> Face {
    if strong { Face::Bold } else { Face::Regular }
}

/// Seller on the left, title and references on the right; then the customer.
fn header(c: &mut Canvas, f: &DocumentFacts, kind: DocumentKind) {
    let top = c.y;
    c.text(MARGIN, 13.0, Face::Bold, &f.seller_name);
    c.advance(16.0);
    for l in &f.seller_lines {
        c.text(MARGIN, SMALL, Face::Regular, l);
        c.advance(11.0);
    }
    let left_bottom = c.y;

    c.y = top;
    let title = match kind {
        DocumentKind::Invoice => "INVOICE",
        DocumentKind::CreditNote => "CREDIT NOTE",
    };
    c.right(RIGHT, 18.0, Face::Bold, title);
    c.advance(22.0);
    for (label, value) in &f.references {
        c.text(TOTALS_X, SMALL, Face::Regular, label);
        c.right(RIGHT, SMALL, Face::Bold, value);
        c.advance(11.0);
    }
    c.y = c.y.min(left_bottom) - 14.0;

    c.text(MARGIN, SMALL, Face::Bold, "Bill to");
    c.advance(13.0);
    c.text(MARGIN, 11.0, Face::Bold, &f.customer_name);
    c.advance(14.0);
    for l in &f.customer_lines {
        c.text(MARGIN, BODY, Face::Regular, l);
        c.advance(12.0);
    }
    c.advance(14.0);
}

fn table_header(c: &mut Canvas, currency: &str) {
    c.text(MARGIN, SMALL, Face::Bold, "Description");
    c.right(QTY_RIGHT, SMALL, Face::Bold, "Qty");
    c.right(UNIT_RIGHT, SMALL, Face::Bold, "Unit price");
    c.right(RIGHT, SMALL, Face::Bold, &format!("Amount ({currency})"));
    c.rule(MARGIN, RIGHT, 5.0, 0.5);
    c.advance(ROW + 2.0);
}

/// One line of the table, its description wrapped; a new page (with the header again) when
/// it does not fit.
fn table_row(c: &mut Canvas, row: &Row, currency: &str) {
    let parts = wrap(&row.description, Face::Regular, BODY, DESC_MAX);
    if !c.fits(ROW * parts.len() as f32) {
        c.new_page();
        table_header(c, currency);
    }
    for (i, part) in parts.iter().enumerate() {
        c.text(MARGIN, BODY, Face::Regular, part);
        if i == 0 {
            c.right(QTY_RIGHT, BODY, Face::Regular, &row.quantity);
            c.right(UNIT_RIGHT, BODY, Face::Regular, &row.unit_price);
            c.right(RIGHT, BODY, Face::Regular, &row.amount);
        }
        c.advance(ROW);
    }
}

/// A row of the totals block: label on the left of it, amount at the right margin.
fn total_row(c: &mut Canvas, label: &str, amount: &str, face: Face) {
    let parts = wrap(label, face, BODY, RIGHT - TOTALS_X - 80.0);
    if !c.fits(ROW * parts.len() as f32) {
        c.new_page();
    }
    for (i, part) in parts.iter().enumerate() {
        c.text(TOTALS_X, BODY, face, part);
        if i + 1 < parts.len() {
            c.advance(12.0);
        }
    }
    c.right(RIGHT, BODY, face, amount);
    c.advance(ROW);
}

/// A note under the totals, wrapped to the page width.
fn paragraph(c: &mut Canvas, face: Face, text: &str) {
    for part in wrap(text, face, BODY, RIGHT - MARGIN) {
        if !c.fits(ROW) {
            c.new_page();
        }
        c.text(MARGIN, BODY, face, &part);
        c.advance(12.5);
    }
    c.advance(6.0);
}

#[cfg(test)]
mod tests;
