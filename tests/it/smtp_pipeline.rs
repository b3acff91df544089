//! The delivery pipeline against a real SMTP server (aiosmtpd, see `smtp.rs`): hundreds of
//! messages over several connections, each arriving once with its Message-ID and its PDF;
//! and `send` killed (SIGKILL) while sending, where a message may arrive twice only if the
//! server had accepted it and the kill came before it was marked sent.
//!
//! Without aiosmtpd the tests skip, unless `BILLRUN_REQUIRE_SMTP=1`.

use crate::common::books::{Rng, seed_from_env};
use crate::smtp::{FINANCE, FROM, Part, Sandbox, Smtpd, aiosmtpd_available, free_port};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `n` accounts with a monthly subscription from 2026-01-01: a close at 2026-02-15 issues
/// two invoices each.
fn import_accounts(sandbox: &Sandbox, n: usize, url: &str) {
    let accounts: Vec<_> = (1..=n)
        .map(|i| {
            serde_json::json!({"id": format!("a{i:04}"), "name": format!("Customer {i}"),
                "email": format!("billing@c{i}.example"), "currency": "USD"})
        })
        .collect();
    let subscriptions: Vec<_> = (1..=n)
        .map(|i| {
            serde_json::json!({"id": format!("s{i:04}"), "account": format!("a{i:04}"),
                "policy": "deferred", "cycle": "monthly", "start": "2026-01-01",
                "items": [{"plan": "basic"}]})
        })
        .collect();
    let file = sandbox.path("accounts.json");
    std::fs::write(
        &file,
        serde_json::json!({"accounts": accounts, "subscriptions": subscriptions}).to_string(),
    )
    .unwrap();
    let out = sandbox.run_with(&["import", file.to_str().unwrap()], url, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Message-ID → how many times the server received it.
fn received(smtpd: &Smtpd) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in smtpd.messages() {
        let id = Part::parse(&m)
            .header("message-id")
            .expect("a Message-ID")
            .to_string();
        *counts.entry(id).or_default() += 1;
    }
    counts
}

/// The Message-ID billrun gives message `key`.
fn message_id(key: &str) -> String {
    format!("<{key}@billrun.test>")
}

/// Keys of the outbox messages marked sent, and of all of them.
fn outbox_keys(sandbox: &Sandbox) -> (BTreeSet<String>, BTreeSet<String>) {
    use sqlx::Row;
    let url = format!("sqlite://{}?mode=ro", sandbox.path("billrun.db").display());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            let rows = sqlx::query("SELECT message_key, status FROM outbox")
                .fetch_all(&pool)
                .await
                .unwrap();
            pool.close().await;
            let (mut sent, mut all) = (BTreeSet::new(), BTreeSet::new());
            for r in rows {
                let key: String = r.get(0);
                if r.get::<String, _>(1) == "sent" {
                    sent.insert(key.clone());
                }
                all.insert(key);
            }
            (sent, all)
        })
}

#[test]
fn two_hundred_messages_over_four_connections_each_arrive_once_with_their_pdf() {
    if !aiosmtpd_available("two_hundred_messages_over_four_connections_each_arrive_once") {
        return;
    }
    let sandbox = Sandbox::new();
    let port = free_port();
    let url = format!("smtp://127.0.0.1:{port}");
    let smtpd = Smtpd::start(port, &sandbox.path("maildir"));
    import_accounts(&sandbox, 100, &url);
    let env = [("BILLRUN_SMTP_CONNECTIONS", "4".to_string())];
    let out = sandbox.run_with(&["close", "--as-of", "2026-02-15", "--json"], &url, &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["invoices"].as_u64(), Some(200), "{stdout}");
    assert_eq!(
        (
            report["emails_sent"].as_u64(),
            report["emails_failed"].as_u64()
        ),
        (Some(201), Some(0)),
        "{stdout}"
    );

    let (sent, all) = outbox_keys(&sandbox);
    assert_eq!(sent, all, "every message marked sent");
    assert_eq!(all.len(), 201);
    let raw = smtpd.messages();
    assert_eq!(
        raw.len(),
        201,
        "200 invoices and the finance batch, once each"
    );
    let messages: Vec<Part> = raw.iter().map(|m| Part::parse(m)).collect();
    let ids: BTreeSet<String> = messages
        .iter()
        .map(|m| m.header("message-id").unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = all.iter().map(|k| message_id(k)).collect();
    assert_eq!(
        ids, want,
        "each message once, under the Message-ID of its key"
    );
    let mut peers = BTreeSet::new();
    for m in &messages {
        if let Some(peer) = m.header("x-peer") {
            peers.insert(peer.to_string());
        }
        if m.header("to") == Some(FINANCE) {
            continue;
        }
        let number = m.header("subject").unwrap().rsplit(' ').next().unwrap();
        assert_eq!(m.header("message-id"), Some(message_id(number).as_str()));
        assert_eq!(m.header("from"), Some(FROM));
        let pdf = m
            .leaves()
            .into_iter()
            .find(|p| p.content_type() == "application/pdf")
            .unwrap_or_else(|| panic!("{number}: no PDF"));
        assert_eq!(
            pdf.param("content-disposition", "filename"),
            Some(format!("{number}.pdf"))
        );
        assert!(pdf.decoded().starts_with(b"%PDF-"), "{number}: not a PDF");
    }
    // aiosmtpd names each client connection (address and port) in X-Peer: the messages
    // shared at most four connections.
    assert!(
        !peers.is_empty() && peers.len() <= 4,
        "{} connections for 201 messages: {peers:?}",
        peers.len()
    );
}

#[test]
fn a_killed_send_repeats_only_messages_accepted_but_not_yet_marked() {
    if !aiosmtpd_available("a_killed_send_repeats_only_messages_accepted_but_not_yet_marked") {
        return;
    }
    // The default lease: a killed send's claims are taken over at once (its process is
    // gone), never waited out.
    const LEASE: u64 = 300;
    let seed = seed_from_env("BILLRUN_CRASH_SEED");
    let mut rng = Rng::new(seed);
    let sandbox = Sandbox::new();
    let port = free_port();
    let url = format!("smtp://127.0.0.1:{port}");
    let env = [
        ("BILLRUN_SMTP_CONNECTIONS", "4".to_string()),
        ("BILLRUN_LEASE_SECONDS", LEASE.to_string()),
    ];
    import_accounts(&sandbox, 150, &url);
    // Closed while the server is down: 301 messages queued.
    let out = sandbox.run_with(&["close", "--as-of", "2026-02-15"], &url, &env);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let total = outbox_keys(&sandbox).1.len();
    assert_eq!(total, 301);

    let smtpd = Smtpd::start(port, &sandbox.path("maildir"));
    // Messages the server had when a send was killed that the outbox did not say were sent.
    let mut unmarked_at_kills: Vec<BTreeSet<String>> = Vec::new();
    let mut log = Vec::new();
    for k in 0..2 {
        let have = smtpd.count();
        let target = have + 1 + rng.below(((total - have) / 2).max(1) as u64) as usize;
        let mut child = sandbox
            .command(&["send", "--retry-now"], &url, &env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let killed = loop {
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            if smtpd.count() >= target {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                break true;
            }
            assert!(Instant::now() < deadline, "send {k} made no progress");
            std::thread::sleep(Duration::from_millis(5));
        };
        // Let the server finish a message it was given just before the kill.
        std::thread::sleep(Duration::from_millis(500));
        let (sent, _) = outbox_keys(&sandbox);
        let unmarked: BTreeSet<String> = received(&smtpd)
            .keys()
            .filter(|id| !sent.iter().any(|key| message_id(key) == **id))
            .cloned()
            .collect();
        log.push(format!(
            "send {k}: {} at {} received, {} accepted but not marked",
            if killed { "killed" } else { "finished" },
            smtpd.count(),
            unmarked.len()
        ));
        unmarked_at_kills.push(if killed { unmarked } else { BTreeSet::new() });
    }
    let kills = log.iter().filter(|l| l.contains("killed")).count();
    assert!(kills >= 1, "seed {seed}: no send was killed: {log:?}");
    let out = sandbox.run_with(&["send", "--retry-now"], &url, &env);
    assert!(
        out.status.success(),
        "seed {seed}: {log:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = writeln!(std::io::stderr(), "killed sends (seed {seed}): {log:?}");

    let (sent, all) = outbox_keys(&sandbox);
    assert_eq!(sent, all, "seed {seed}: every message sent in the end");
    let counts = received(&smtpd);
    let want: BTreeSet<String> = all.iter().map(|k| message_id(k)).collect();
    let got: BTreeSet<String> = counts.keys().cloned().collect();
    assert_eq!(
        got, want,
        "seed {seed}: every message arrived, nothing else"
    );
    for (id, n) in &counts {
        // Once, plus once more for each kill that found it accepted and not marked.
        let windows = unmarked_at_kills.iter().filter(|u| u.contains(id)).count();
        assert!(
            *n <= 1 + windows,
            "seed {seed}: {id} arrived {n} times but was accepted-and-unmarked at {windows} kill(s): {log:?}"
        );
    }
}
