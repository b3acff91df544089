//! The pipeline on a real (in-memory) SQLite store and a real `.eml` folder: every message
//! once across batches and slices, Message-IDs from the keys, failures each marked once per
//! pass with their backoff, and claims renewed only by the worker holding them.

use super::*;
use crate::clock::ManualClock;
use crate::close::CloseOptions;
use crate::core::catalog::Catalog;
use crate::store::sqlite::SqliteStore;

struct Closed {
    store: SqliteStore,
    catalog: Catalog,
    settings: CloseSettings,
    clock: ManualClock,
}

impl Closed {
    /// `n` generated subscriptions closed without a transport: n invoices and a finance
    /// batch queued.
    async fn new(n: u64) -> Closed {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        crate::bench::generate(&store, n, 7).await.unwrap();
        let catalog = Catalog::from_toml_str(crate::bench::CATALOG).unwrap();
        let mut settings = CloseSettings::from_config(&crate::config::Config::default());
        settings.seller = Seller {
            legal_name: "Example Software Ltd".into(),
            address: vec!["1 Example Street".into()],
            country: "GB".into(),
            ..Seller::default()
        };
        let closed = Closed {
            store,
            catalog,
            settings,
            clock: crate::bench::clock(),
        };
        let report = closed
            .billing(None)
            .close(crate::bench::as_of(), &CloseOptions::default())
            .await
            .unwrap();
        assert_eq!(report.invoices, n);
        closed
    }

    fn billing<'a>(&'a self, transport: Option<&'a dyn Transport>) -> Billing<'a> {
        Billing {
            store: &self.store,
            catalog: &self.catalog,
            settings: &self.settings,
            clock: &self.clock,
            transport,
        }
    }

    async fn outbox(&self) -> Vec<crate::store::OutboxEntry> {
        self.store.outbox().await.unwrap()
    }
}

fn eml_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_goes_once_across_batches_and_slices() {
    // More than a batch, and a batch that is not a whole number of slices.
    let n = u64::from(BATCH) + SLICE as u64 + 7;
    let closed = Closed::new(n).await;
    let tmp = tempfile::tempdir().unwrap();
    let folder = EmlDir::new(tmp.path().join("mail"));
    let delivery = closed.billing(Some(&folder)).deliver_due().await.unwrap();
    assert_eq!((delivery.sent, delivery.failed), (n + 1, 0));
    assert_eq!(delivery.waiting, OutboxWaiting::default());

    let outbox = closed.outbox().await;
    assert_eq!(outbox.len() as u64, n + 1);
    assert!(outbox.iter().all(|e| e.sent), "every message marked sent");
    let mut want: Vec<String> = outbox.iter().map(|e| format!("{}.eml", e.key)).collect();
    want.sort();
    assert_eq!(eml_files(&tmp.path().join("mail")), want, "one file each");
    for e in outbox.iter().step_by(37) {
        let text = std::fs::read_to_string(tmp.path().join(format!("mail/{}.eml", e.key))).unwrap();
        let id = crate::mail::message_id(&e.key, &closed.settings.mail_from);
        assert!(text.contains(&format!("Message-ID: {id}")), "{}", e.key);
        if e.key.starts_with("INV-") {
            assert!(text.contains("application/pdf"), "{}: no PDF", e.key);
        }
    }

    // Nothing is left to send.
    let again = closed.billing(Some(&folder)).deliver_all().await.unwrap();
    assert_eq!((again.sent, again.failed), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_marked_once_per_pass_with_their_backoff() {
    let closed = Closed::new(40).await;
    let tmp = tempfile::tempdir().unwrap();
    // A file where the folder should be: every write fails.
    let blocker = tmp.path().join("not-a-folder");
    std::fs::write(&blocker, "").unwrap();
    let broken = EmlDir::new(blocker.join("mail"));
    let first = closed.billing(Some(&broken)).deliver_due().await.unwrap();
    assert_eq!((first.sent, first.failed), (0, 41));
    assert_eq!(first.waiting.in_backoff, 41);
    let now = closed.clock.now();
    assert!(first.waiting.next_attempt >= Some(now + Duration::seconds(30)));
    // In backoff: a due pass takes none of them, --retry-now each exactly once.
    let due = closed.billing(Some(&broken)).deliver_due().await.unwrap();
    assert_eq!((due.sent, due.failed), (0, 0));
    let retried = closed.billing(Some(&broken)).deliver_all().await.unwrap();
    assert_eq!((retried.sent, retried.failed), (0, 41));
    assert!(
        closed
            .outbox()
            .await
            .iter()
            .all(|e| e.attempts == 2 && !e.sent)
    );

    // Back: every message goes, once.
    let folder = EmlDir::new(tmp.path().join("mail"));
    let sent = closed.billing(Some(&folder)).deliver_all().await.unwrap();
    assert_eq!((sent.sent, sent.failed), (41, 0));
    assert_eq!(eml_files(&tmp.path().join("mail")).len(), 41);
}

#[tokio::test]
async fn only_the_worker_holding_a_claim_can_renew_it() {
    let closed = Closed::new(5).await;
    let store = &closed.store;
    let t0 = closed.clock.now();
    let lease = |s: i64| t0 + Duration::seconds(s);
    let by_a = OutboxClaim {
        worker: "a",
        after: 0,
        due_before: t0,
        now: t0,
        lease_until: lease(10),
        limit: 100,
    };
    let a = store.claim_outbox(&by_a).await.unwrap();
    assert_eq!(a.len(), 6);
    let ids: Vec<i64> = a.iter().map(|e| e.id).collect();
    // Claimed: nobody else gets them while the lease runs.
    let by_b = OutboxClaim {
        worker: "b",
        now: lease(5),
        lease_until: lease(15),
        ..by_a
    };
    let none = store.claim_outbox(&by_b).await.unwrap();
    assert!(none.is_empty());
    // "a" stalls past its lease; "b" takes three of them.
    let b = store
        .claim_outbox(&OutboxClaim {
            due_before: lease(20),
            now: lease(20),
            lease_until: lease(30),
            limit: 3,
            ..by_b
        })
        .await
        .unwrap();
    assert_eq!(b.len(), 3);
    let held = store
        .renew_outbox_claims("a", &ids, lease(40))
        .await
        .unwrap();
    assert_eq!(held, ids[3..], "a keeps only what nobody took");
    store.mark_sent(&ids[3..], lease(21)).await.unwrap();
    // Sent messages are nobody's to renew.
    assert!(
        store
            .renew_outbox_claims("a", &ids, lease(40))
            .await
            .unwrap()
            .is_empty()
    );
    let b_ids: Vec<i64> = b.iter().map(|e| e.id).collect();
    assert_eq!(
        store
            .renew_outbox_claims("b", &ids, lease(40))
            .await
            .unwrap(),
        b_ids
    );
    store.mark_sent(&b_ids, lease(22)).await.unwrap();
    assert!(closed.outbox().await.iter().all(|e| e.sent));
}

#[tokio::test]
async fn a_claim_walks_the_outbox_in_id_order_from_where_the_last_ended() {
    let closed = Closed::new(9).await;
    let store = &closed.store;
    let t0 = closed.clock.now();
    let until = t0 + Duration::seconds(60);
    let all: Vec<i64> = closed.outbox().await.iter().map(|e| e.id).collect();
    let after = |after: i64| OutboxClaim {
        worker: "w",
        after,
        due_before: t0,
        now: t0,
        lease_until: until,
        limit: 4,
    };
    let first = store.claim_outbox(&after(0)).await.unwrap();
    let ids = |v: &[crate::store::OutboxEntry]| v.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(&first), all[..4]);
    // Released (failed) messages before the walk's position are not taken again this pass.
    store.mark_failed(all[1], "refused", t0).await.unwrap();
    let next = store.claim_outbox(&after(all[3])).await.unwrap();
    assert_eq!(ids(&next), all[4..8]);
    let rest = store.claim_outbox(&after(all[7])).await.unwrap();
    assert_eq!(ids(&rest), all[8..]);
    assert!(store.claim_outbox(&after(all[9])).await.unwrap().is_empty());
    // A new pass starts over and finds the failed one due again.
    let again = store.claim_outbox(&after(0)).await.unwrap();
    assert_eq!(ids(&again), [all[1]]);
}
