//! PDF micro-benchmark: how many invoice PDFs one core renders per second, and how large they
//! are. Each is the full `document_pdf` a customer email attaches: facts, layout, the font
//! subsets, serialisation. Names vary per document, as customers' do. Run:
//! `cargo bench --bench pdf`.

use billrun::core::document::{Document, DocumentBuilder, LineKind};
use billrun::core::domain::{Account, AccountId, TaxRate};
use billrun::core::money::Currency;
use billrun::core::party::Seller;
use rust_decimal::Decimal;
use std::time::Instant;

const NAMES: [&str; 6] = [
    "Acme Corporation",
    "Zoë Łukasiewicz",
    "Ωmega Systems",
    "Юрий Гагарин",
    "Müller & Söhne GmbH",
    "Beta Ltd",
];

fn document(i: usize) -> Document {
    let usd = Currency::new("USD").unwrap();
    let mut b = DocumentBuilder::new(usd);
    b.priced(
        LineKind::Recurring,
        "Professional × 5, 2026-02-01 to 2026-03-01",
        5,
        Decimal::new(5900, 2),
        true,
    );
    b.line(
        LineKind::Proration,
        "Unused Starter, 12 days",
        Decimal::new(-1160, 2),
        true,
    );
    let account = Account {
        address: vec![format!("{} Main Street", i % 100), "Springfield".into()],
        country: Some("US".into()),
        taxes: vec![TaxRate::new("Sales tax", Decimal::new(825, 2)).unwrap()],
        ..Account::new(
            AccountId::new(&format!("a{i}")).unwrap(),
            NAMES[i % NAMES.len()],
            "billing@example.com",
            usd,
        )
    };
    let day = "2026-02-01".parse().unwrap();
    Document {
        number: format!("INV-2026-{i:06}"),
        draft: b
            .finish("k".into(), &account, None, day, day, None, None)
            .unwrap(),
    }
}

fn main() {
    let seller = Seller {
        legal_name: "Example Software Ltd".into(),
        address: vec!["1 Example Street".into(), "London EC1A 1AA".into()],
        country: "GB".into(),
        tax_id: Some("GB123456789".into()),
        email: Some("billing@example.com".into()),
        payment_instructions: Some("IBAN GB33 BUKB 2020 1555 5555 55, BIC BUKBGB22".into()),
    };
    // Names in ASCII share one cached font subset; others (Latin-1, Greek, Cyrillic...)
    // each get their own.
    let (common, rare): (Vec<Document>, Vec<Document>) = (0..1200)
        .map(document)
        .partition(|d| d.draft.customer.name.is_ascii());
    for (label, docs) in [("ASCII names", common), ("other names", rare)] {
        // Warm up: the fonts are parsed once per process.
        billrun::mail::document_pdf(&docs[0], &seller).unwrap();
        let start = Instant::now();
        let mut bytes = 0;
        for d in &docs {
            bytes += billrun::mail::document_pdf(d, &seller).unwrap().bytes.len();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{label}: {} PDFs in {secs:.2} s: {:.0} PDFs/s on one core, {:.2} ms each, {:.1} KB each",
            docs.len(),
            docs.len() as f64 / secs,
            secs * 1000.0 / docs.len() as f64,
            bytes as f64 / docs.len() as f64 / 1024.0
        );
    }
}
