use super::*;
use crate::core::document::fixtures::february_invoice;
use crate::core::document::{DocumentBuilder, LineKind};
use crate::core::domain::{Account, AccountId, TaxRate};
use crate::core::money::Currency;
use printpdf::PdfDocument;
use rust_decimal::Decimal;

fn seller() -> Seller {
    crate::core::party::example_seller()
}

fn document(lines: usize, description: &str) -> Document {
    let usd = Currency::new("USD").unwrap();
    let mut b = DocumentBuilder::new(usd);
    for i in 0..lines {
        b.priced(
            LineKind::Recurring,
            format!("{description} {i}"),
            2,
            Decimal::new(1234 + i as i64, 2),
            true,
        );
    }
    let account = Account {
        address: vec!["ul. Żółta 3".into(), "00-001 Warszawa".into()],
        country: Some("PL".into()),
        tax_id: Some("PL1234567890".into()),
        taxes: vec![TaxRate::new("VAT", Decimal::new(23, 0)).unwrap()],
        ..Account::new(
            AccountId::new("a1").unwrap(),
            "Zoë Łukasiewicz Ωmega Юрий",
            "zoe@example.com",
            usd,
        )
    };
    february_invoice(b, &account)
}

fn page_count(pdf: &[u8]) -> usize {
    let mut warnings = Vec::new();
    PdfDocument::parse(pdf, &Default::default(), &mut warnings)
        .expect("billrun's PDF parses")
        .pages
        .len()
}

#[test]
fn a_short_invoice_is_one_small_page_and_prints_every_character() {
    let pdf = document_pdf(&document(3, "Basic plan"), &seller()).unwrap();
    assert!(pdf.bytes.starts_with(b"%PDF-"));
    assert_eq!(page_count(&pdf.bytes), 1);
    assert_eq!(pdf.replaced, 0);
    // Two font subsets, not two whole fonts (700 KB each).
    assert!(pdf.bytes.len() < 60_000, "{} bytes", pdf.bytes.len());
}

#[test]
fn lines_overflow_onto_more_pages() {
    let pdf = document_pdf(&document(120, "Seat licence"), &seller()).unwrap();
    assert!(
        page_count(&pdf.bytes) >= 3,
        "{} page(s)",
        page_count(&pdf.bytes)
    );
}

#[test]
fn the_same_document_gives_the_same_bytes() {
    let doc = document(5, "Basic plan");
    let one = document_pdf(&doc, &seller()).unwrap().bytes;
    assert_eq!(one, document_pdf(&doc, &seller()).unwrap().bytes);
    let mut other = doc.clone();
    other.number = "INV-2026-000043".into();
    assert_ne!(one, document_pdf(&other, &seller()).unwrap().bytes);
}

#[test]
fn what_the_font_lacks_is_counted_not_dropped() {
    let doc = document(
        2,
        "日本語 emoji 🎉 and a very long word Supercalifragilisticexpialidocious\
         Supercalifragilisticexpialidocious Supercalifragilisticexpialidocious",
    );
    let pdf = document_pdf(&doc, &seller()).unwrap();
    // Three CJK letters and an emoji, on each of two lines.
    assert_eq!(pdf.replaced, 8);
}
