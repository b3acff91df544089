//! `billrun run` end to end on a real SQLite file: the catch-up close at start, /healthz and
//! /metrics over HTTP, and a clean exit within 10 seconds of SIGTERM.

use chrono::Datelike;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

fn billrun(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_billrun"));
    c.arg("--config").arg(config);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BILLRUN_")) {
        c.env_remove(k);
    }
    c
}

#[test]
fn daemon_closes_due_periods_serves_health_and_metrics_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let port = free_port();
    let config = dir.path().join("billrun.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"sqlite://{}\"\ncatalog = \"{}\"\nmail_dir = \"{}\"\nhttp_addr = \"127.0.0.1:{port}\"\n\
             mail_from = \"billing@billrun.test\"\n",
            dir.path().join("billrun.db").display(),
            fixtures.join("catalog.toml").display(),
            dir.path().join("mail").display()
        ),
    )
    .unwrap();
    let import = billrun(&config)
        .arg("import")
        .arg(fixtures.join("three_monthly.json"))
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let child = billrun(&config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);

    // The catch-up close bills every month from January to today (the real clock).
    let today = chrono::Utc::now().date_naive();
    let months = (today.year() - 2026) * 12 + today.month() as i32;
    let expected = 3 * months.max(0) as u64;

    let began = Instant::now();
    let health = loop {
        if let Some((200, body)) = http_get(port, "/healthz") {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if !v["last_close"]["finished_at"].is_null() {
                break v;
            }
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "daemon never reported a finished close"
        );
        assert!(
            daemon.0.try_wait().unwrap().is_none(),
            "daemon exited early"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(health["status"], "ok");
    assert_eq!(health["last_close"]["documents"], expected);
    assert!(health["last_close"]["error"].is_null(), "{health}");

    let (status, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!("billrun_documents_issued_total {expected}")),
        "{metrics}"
    );
    assert!(metrics.contains("billrun_close_runs_total 1"), "{metrics}");
    assert!(metrics.contains("billrun_outbox_depth 0"), "{metrics}");
    assert!(
        metrics.contains("billrun_close_duration_seconds_count 1"),
        "{metrics}"
    );

    let term = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.0.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let stopped = Instant::now();
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "daemon did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(status.success(), "exit {status:?}; log:\n{log}");
    assert!(log.contains("next close scheduled"), "{log}");
}

/// Closing as of an instant bills each account at its own local midnight: at 03:00 UTC on
/// March 1, an account in UTC has reached its March period, one in Los Angeles (19:00 on
/// February 28 there) has not — until the instant passes its own midnight.
#[tokio::test]
async fn each_account_is_closed_at_its_own_local_date() {
    use billrun::close::CloseOptions;
    let dir = tempfile::tempdir().unwrap();
    let catalog = billrun::core::catalog::Catalog::from_toml_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/catalog.toml"),
        )
        .unwrap(),
    )
    .unwrap();
    let raw: billrun::input::ImportFile = serde_json::from_str(
        r#"{"accounts": [
              {"id": "utc", "email": "a@utc.example", "currency": "USD", "timezone": "UTC"},
              {"id": "la", "email": "a@la.example", "currency": "USD", "timezone": "America/Los_Angeles"}],
            "subscriptions": [
              {"id": "utc-1", "account": "utc", "policy": "deferred", "cycle": "monthly", "start": "2026-01-01", "items": [{"plan": "basic"}]},
              {"id": "la-1", "account": "la", "policy": "deferred", "cycle": "monthly", "start": "2026-01-01", "items": [{"plan": "basic"}]}]}"#,
    )
    .unwrap();
    let batch = billrun::input::validate(
        &raw.accounts,
        &raw.subscriptions,
        &catalog,
        "UTC",
        &Default::default(),
    )
    .unwrap();
    let store = billrun::store::open(&format!("sqlite://{}", dir.path().join("tz.db").display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.import(&batch, chrono::Utc::now()).await.unwrap();
    let settings = billrun::close::CloseSettings::from_config(&billrun::config::Config::default());
    let periods = |account: &'static str| {
        let store = &store;
        async move {
            store
                .documents(Some(account))
                .await
                .unwrap()
                .iter()
                .map(|d| d.document.draft.issued_at.to_string())
                .collect::<Vec<_>>()
        }
    };
    for (instant, utc_docs, la_docs) in [
        ("2026-03-01T03:00:00Z", 3, 2),
        ("2026-03-01T09:00:00Z", 3, 3),
    ] {
        let t: chrono::DateTime<chrono::Utc> = instant.parse().unwrap();
        let clock = billrun::clock::ManualClock::at(t);
        let options = CloseOptions {
            instant: Some(t),
            ..Default::default()
        };
        let as_of = t.date_naive();
        billrun::context::Billing {
            store: store.as_ref(),
            catalog: &catalog,
            settings: &settings,
            clock: &clock,
            transport: None,
        }
        .close(as_of, &options)
        .await
        .unwrap();
        assert_eq!(periods("utc").await.len(), utc_docs, "utc at {instant}");
        assert_eq!(
            periods("la").await.len(),
            la_docs,
            "la at {instant}: {:?}",
            periods("la").await
        );
    }
}
