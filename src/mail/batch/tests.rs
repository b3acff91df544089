use super::*;
use crate::mail::finance::tests::document;
use crate::mail::render::tests::{text_parts, text_parts_of};

fn report<'a>(parked: &'a [(String, String)], refunds: &'a [RefundOwed]) -> BatchReport<'a> {
    BatchReport {
        batch: 1,
        subject: "Billing run\r\nBcc: evil@example.com",
        refunds,
        deleted_accounts: &[],
        parked,
    }
}

#[test]
fn the_finance_batch_cleans_reasons_and_attaches_its_files_in_base64() {
    let parked = [("a1".into(), "plan \"Pro\x1b[2J\" \r\nBcc: x@y.z".into())];
    let date = "2026-02-01T00:00:00Z".parse().unwrap();
    let doc = document("INV-1", "Zoë", "USD", false);
    let message = finance_batch_email(
        &report(&parked, &[]),
        &[&doc],
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
    let csvs: Vec<&(String, String, String)> = parts
        .iter()
        .filter(|(t, _, _)| t.starts_with("text/csv"))
        .collect();
    assert_eq!(csvs.len(), 2);
    assert!(csvs.iter().all(|c| c.1 == "base64"));
    assert!(
        csvs[0]
            .2
            .starts_with("number,kind,corrects,account,customer_name")
    );
    assert!(csvs[1].2.starts_with("number,position,kind,description"));
}

/// The spooled batch, built page by page with attachments longer than one read, says
/// exactly what the batch built in memory says: same text, same files, same envelope.
#[test]
fn a_spooled_batch_carries_the_same_parts_as_one_built_in_memory() {
    let docs: Vec<Document> = (0..3000)
        .map(|i| document(&format!("INV-{i:05}"), "Zoë Łukasiewicz", "USD", i % 7 == 0))
        .collect();
    let refs: Vec<&Document> = docs.iter().collect();
    let refunds = [RefundOwed {
        account: "a9".into(),
        customer_name: "Юрий".into(),
        currency: "USD".into(),
        amount: "12.50".parse().unwrap(),
        reason: "account canceled".into(),
    }];
    let parked = [("a2".into(), "too large".into())];
    let date = "2026-02-01T00:00:00Z".parse().unwrap();
    let (from, to) = ("billing@billrun.test", "finance@billrun.test");
    let report = report(&parked, &refunds);

    let memory = finance_batch_email(&report, &refs, from, to, date).unwrap();
    let mut spool = BatchSpool::new().unwrap();
    let dir = spool.dir.path().to_path_buf();
    for page in refs.chunks(1000) {
        spool.add(page).unwrap();
    }
    let mut bytes = Vec::new();
    let envelope = spool.finish(&report, from, to, date, &mut bytes).unwrap();

    assert_eq!(&envelope, memory.envelope());
    let (spooled, in_memory) = (text_parts_of(bytes), text_parts(&memory));
    assert_eq!(spooled.len(), 4, "text, documents, lines, refunds");
    assert!(spooled[2].2.len() > SPOOL_READ, "lines.csv spans reads");
    assert_eq!(spooled, in_memory);
    assert!(!dir.exists(), "the spool's folder is gone");
}
