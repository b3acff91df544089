//! `billrun run` end to end on a real SQLite file: the catch-up close at start, /healthz and
//! /metrics over HTTP, and a clean exit within 10 seconds of SIGTERM. Its HTTP endpoint under
//! abuse: idle connections by the hundred under a file limit of 64 never lock `/healthz` out,
//! and a client that sends nothing is disconnected after the header timeout.

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
    http_get_within(port, path, Duration::from_secs(5))
}

/// A GET on a fresh connection; None if the whole answer did not come within `limit`.
fn http_get_within(port: u16, path: &str, limit: Duration) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + limit;
    let mut s = TcpStream::connect_timeout(&addr, limit).ok()?;
    s.set_read_timeout(Some(deadline.checked_duration_since(Instant::now())?))
        .ok()?;
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
             mail_from = \"billing@billrun.test\"\n{seller}",
            dir.path().join("billrun.db").display(),
            fixtures.join("catalog.toml").display(),
            dir.path().join("mail").display(),
            seller = billrun::config::EXAMPLE_SELLER,
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

/// A daemon on a fresh SQLite file (three monthly accounts imported), its catch-up close
/// finished; `nofile` caps its open files (RLIMIT_NOFILE, soft and hard).
fn start_daemon(dir: &Path, nofile: Option<u64>) -> (Daemon, u16) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let port = free_port();
    let config = dir.join("billrun.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"sqlite://{}\"\ncatalog = \"{}\"\nmail_dir = \"{}\"\nhttp_addr = \"127.0.0.1:{port}\"\n\
             mail_from = \"billing@billrun.test\"\n{seller}",
            dir.join("billrun.db").display(),
            fixtures.join("catalog.toml").display(),
            dir.join("mail").display(),
            seller = billrun::config::EXAMPLE_SELLER,
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
    (spawn_daemon(dir, nofile), port)
}

/// `billrun run` on the configuration `start_daemon` wrote, once its catch-up close finished.
fn spawn_daemon(dir: &Path, nofile: Option<u64>) -> Daemon {
    let config = dir.join("billrun.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let port: u16 = text
        .split("http_addr = \"127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|p| p.parse().ok())
        .expect("the configuration names the port");
    let mut command = billrun(&config);
    command
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap());
    if let Some(n) = nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut daemon = Daemon(command.spawn().unwrap());
    let began = Instant::now();
    loop {
        if let Some((200, body)) = http_get(port, "/healthz") {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if !v["last_close"]["finished_at"].is_null() {
                break;
            }
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "daemon never reported a finished close; log:\n{}",
            std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
        );
        assert!(
            daemon.0.try_wait().unwrap().is_none(),
            "daemon exited early; log:\n{}",
            std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon
}

/// SIGTERM, then insist on a clean exit within 10 s.
fn stop_daemon(mut daemon: Daemon, dir: &Path) {
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
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap();
    assert!(status.success(), "exit {status:?}; log:\n{log}");
}

/// The value of an unlabelled sample in Prometheus text.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// The gauges the alert rules need: after a successful close the time of it and no failure;
/// after a restart whose catch-up close fails (a configured module table that does not
/// exist), the failure, and still the time of the last successful close as the store has it.
#[test]
fn the_last_successful_close_survives_a_restart_and_a_failed_close_shows() {
    let dir = tempfile::tempdir().unwrap();
    let began = chrono::Utc::now().timestamp();
    let (daemon, port) = start_daemon(dir.path(), None);
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    let closed = sample(&metrics, "billrun_last_successful_close_timestamp_seconds") as i64;
    assert!(
        (began..=chrono::Utc::now().timestamp()).contains(&closed),
        "{closed} not since {began}:\n{metrics}"
    );
    for (name, value) in [
        ("billrun_last_close_failed", 0.0),
        ("billrun_last_close_accounts_failed", 0.0),
        ("billrun_close_failures_total", 0.0),
        ("billrun_outbox_depth", 0.0),
        ("billrun_outbox_held", 0.0),
        ("billrun_parked_accounts", 0.0),
    ] {
        assert_eq!(sample(&metrics, name), value, "{name}:\n{metrics}");
    }
    stop_daemon(daemon, dir.path());

    let config = dir.path().join("billrun.toml");
    let runs = billrun(&config).args(["runs", "--json"]).output().unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let finished: chrono::DateTime<chrono::Utc> =
        runs[0]["finished_at"].as_str().unwrap().parse().unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "\n[modules]\nreports = [{ table = \"no_such_table\", account_column = \"account_id\" }]\n",
    );
    std::fs::write(&config, text).unwrap();

    let daemon = spawn_daemon(dir.path(), None);
    let (_, health) = http_get(port, "/healthz").unwrap();
    assert!(health.contains("no_such_table"), "{health}");
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(
        sample(&metrics, "billrun_last_successful_close_timestamp_seconds") as i64,
        finished.timestamp(),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "billrun_last_close_failed"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "billrun_close_failures_total"),
        1.0,
        "{metrics}"
    );
    stop_daemon(daemon, dir.path());
}

/// Files the process has open.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Hold 200 connections that never send a byte; meanwhile a fresh `/healthz` must answer
/// within 1 s, three times over. Then the daemon must still stop cleanly with them held.
/// Returns the daemon's log.
fn healthz_answers_under_idle_connections(daemon: Daemon, port: u16, dir: &Path) -> String {
    let before = open_files(daemon.0.id());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    assert!(idle.len() >= 150, "only {} connected", idle.len());
    for attempt in 0..3 {
        let started = Instant::now();

        let answer = http_get_within(port, "/healthz", Duration::from_secs(1));
        let took = started.elapsed();
        assert!(
            matches!(answer, Some((200, _))) && took < Duration::from_secs(1),
            "attempt {attempt}: /healthz gave {answer:?} after {took:?} with {} idle connections \
             held (the daemon had {before} files open before them)",
            idle.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop_daemon(daemon, dir);
    drop(idle);
    std::fs::read_to_string(dir.join("daemon.log")).unwrap()
}

#[test]
fn idle_connections_cannot_lock_out_healthz_under_a_low_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    // A limit of 64 files: at most 32 HTTP connections, the oldest closed to make room.
    let (daemon, port) = start_daemon(dir.path(), Some(64));
    let log = healthz_answers_under_idle_connections(daemon, port, dir.path());
    assert!(log.contains("connection limit reached"), "{log}");
}

#[test]
fn idle_connections_cannot_lock_out_healthz_when_file_descriptors_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, port) = start_daemon(dir.path(), Some(64));
    // Lower the running daemon's limit to 8 files more than it has open: `accept` fails
    // with EMFILE long before the 32 connections it allows itself.
    let pid = daemon.0.id();
    let room = (open_files(pid) + 8) as libc::rlim_t;
    let limit = libc::rlimit {
        rlim_cur: room,
        rlim_max: room,
    };
    // SAFETY: prlimit reads the struct it is given and writes nothing (old limit: null).
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    let log = healthz_answers_under_idle_connections(daemon, port, dir.path());
    assert!(log.contains("out of file descriptors"), "{log}");
}

#[test]
fn a_client_that_sends_no_request_is_disconnected_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, port) = start_daemon(dir.path(), None);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // Nothing at all; half a request's headers; a whole request, then silence on the
    // kept-alive connection.
    let sends: [&[u8]; 3] = [
        b"",
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ];
    let clients: Vec<_> = sends
        .into_iter()
        .map(|send| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let started = Instant::now();
                s.write_all(send).unwrap();
                let mut got = Vec::new();
                // EOF (or a reset): the server closed the connection.
                let _ = s.read_to_end(&mut got);
                (
                    started.elapsed(),
                    String::from_utf8_lossy(&got).into_owned(),
                )
            })
        })
        .collect();
    for (client, send) in clients.into_iter().zip(sends) {
        let (took, got) = client.join().unwrap();
        let send = String::from_utf8_lossy(send);
        // The header timeout is 5 s; well before the 30 s lifetime and the 20 s read timeout.
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_secs(12),
            "{send:?}: closed after {took:?}"
        );
        if send.ends_with("\r\n\r\n") {
            assert!(got.starts_with("HTTP/1.1 200"), "{send:?}: {got:?}");
        } else {
            assert!(!got.contains(" 200 "), "{send:?}: {got:?}");
        }
    }
    stop_daemon(daemon, dir.path());
}
