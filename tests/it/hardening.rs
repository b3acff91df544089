//! What a hostile user tried on the release binary, each now refused or hidden: passwords in
//! every form a URL can carry them, an endless configuration file, and personal data left
//! readable by other local users.

use crate::common::{Backend, Sandbox, count, fixtures};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// The two halves of every password below: neither may appear anywhere.
const HALVES: [&str; 2] = ["Kx7", "Qm4"];

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn shown(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Passwords with a space, quotes, a slash, an `@`, in a query parameter and percent-encoded.
fn smtp_urls() -> Vec<String> {
    [
        "smtps://billing:Kx7 Qm4@127.0.0.1:1",
        "smtps://billing:Kx7\"Qm4@127.0.0.1:1",
        "smtps://billing:Kx7'Qm4@127.0.0.1:1",
        "smtps://billing:Kx7/Qm4@127.0.0.1:1",
        "smtps://billing:Kx7@Qm4@127.0.0.1:1",
        "smtp://billing@127.0.0.1:1?password=Kx7Qm4",
        "smtps://billing:Kx7%2FQm4%20@127.0.0.1:1",
    ]
    .map(String::from)
    .to_vec()
}

fn database_urls() -> Vec<String> {
    [
        "postgres://billrun:Kx7 Qm4@127.0.0.1:1/billing",
        "postgres://billrun:Kx7\"Qm4@127.0.0.1:1/billing",
        "postgres://billrun:Kx7/Qm4@127.0.0.1:1/billing",
        "postgres://billrun:Kx7@Qm4@127.0.0.1:1/billing",
        "postgres://billrun@127.0.0.1:1/billing?sslmode=disable&password=Kx7Qm4",
        "postgres://billrun:Kx7%2FQm4@127.0.0.1:1/billing",
        "mysql://billrun:Kx7/Qm4@db.example/billing",
    ]
    .map(String::from)
    .to_vec()
}

fn assert_hidden(what: &str, out: &Output) {
    let text = shown(out);
    for half in HALVES {
        assert!(
            !text.contains(half),
            "{what}: {half} appears in the output:\n{text}"
        );
    }
}

/// Trace-level logs, text or JSON.
fn loud(json: bool) -> Vec<(String, String)> {
    let mut e = env(&[("BILLRUN_LOG", "trace")]);
    if json {
        e.push(("BILLRUN_LOG_FORMAT".into(), "json".into()));
    }
    e
}

/// Every command that prints a URL or an error, with each SMTP URL form and each database URL
/// form, in text and JSON logs at trace level: no part of the password anywhere, nor in the
/// errors the outbox keeps.
#[tokio::test]
async fn no_password_form_is_ever_printed() {
    let sb = Sandbox::new(Backend::Sqlite);
    sb.ok(&[
        "import",
        fixtures().join("three_monthly.json").to_str().unwrap(),
    ]);
    let dates = ["2026-01-01", "2026-02-01", "2026-03-01", "2026-04-01"];
    for (i, url) in smtp_urls().iter().enumerate() {
        for args in [
            vec!["close", "--as-of", dates[i % dates.len()]],
            vec!["close", "--as-of", "2026-05-01", "--json"],
            vec!["close", "--as-of", "2026-06-01", "--dry-run"],
            vec!["send", "--retry-now"],
            vec!["send"],
            vec!["migrate"],
        ] {
            let mut e = loud(i % 2 == 1);
            e.push(("BILLRUN_SMTP_URL".into(), url.clone()));
            let out = sb.run_with_env(&args, &e);
            assert!(
                out.status.code().is_some(),
                "{args:?} with {url}: killed by a signal"
            );
            assert_hidden(&format!("billrun {args:?} with SMTP URL form {i}"), &out);
        }
    }
    assert_eq!(
        count(
            &sb.db,
            "SELECT COUNT(*) FROM outbox WHERE last_error LIKE '%Kx7%' OR last_error LIKE '%Qm4%'"
        )
        .await,
        0,
        "an outbox error holds the password"
    );
    for (i, url) in database_urls().iter().enumerate() {
        for args in [
            vec!["migrate"],
            vec!["close", "--as-of", "2026-02-01", "--json"],
            vec!["invoices", "--json"],
            vec!["send"],
        ] {
            let mut e = loud(i % 2 == 0);
            e.push(("BILLRUN_DATABASE_URL".into(), url.clone()));
            let out = sb.run_with_env(&args, &e);
            let what = format!("billrun {args:?} with database URL form {i}");
            assert!(!out.status.success(), "{what}: exited 0");
            assert_hidden(&what, &out);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.lines().any(|l| l.starts_with("error:")),
                "{what}: no error line:\n{stderr}"
            );
        }
    }
    // `bench` takes its URL on the command line.
    for url in database_urls() {
        let out = sb.run_with_env(
            &["bench", "--subscriptions", "10", "--database-url", &url],
            &loud(false),
        );
        assert!(!out.status.success());
        assert_hidden(&format!("bench --database-url {url}"), &out);
    }
}

/// `--config /dev/zero` is refused with one line after reading at most a megabyte.
#[test]
fn an_endless_configuration_file_is_refused() {
    let began = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_billrun"))
        .args(["--config", "/dev/zero", "invoices"])
        .env_remove("BILLRUN_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("/dev/zero") && stderr.contains("larger than 1048576 bytes"),
        "{stderr}"
    );
    // Generous: reading without a limit took seconds and gigabytes.
    assert!(began.elapsed() < Duration::from_secs(20));
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Under umask 022 the SQLite database, its WAL and shared-memory files, the mail folder and
/// every `.eml` are private to their owner: checked while the daemon holds the database open.
#[test]
fn personal_data_is_private_whatever_the_umask() {
    let sb = Sandbox::new(Backend::Sqlite);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = env(&[("BILLRUN_HTTP_ADDR", &format!("127.0.0.1:{port}"))]);
    let umask_022 = |cmd: &mut std::process::Command| {
        // SAFETY: umask is async-signal-safe and touches only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o022);
                Ok(())
            });
        }
    };
    let mut import = sb.command(
        &[
            "import",
            fixtures().join("three_monthly.json").to_str().unwrap(),
        ],
        &e,
    );
    umask_022(&mut import);
    assert!(import.output().unwrap().status.success());
    let mut run = sb.command(&["run"], &e);
    run.stdout(Stdio::null()).stderr(Stdio::null());
    umask_022(&mut run);
    let mut child = run.spawn().unwrap();
    let began = Instant::now();
    loop {
        if let Some(body) = http_get(port, "/healthz")
            && body.contains("finished_at\":\"")
        {
            break;
        }
        if began.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the daemon did not finish its catch-up close");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let db = std::path::PathBuf::from(sb.db.url.strip_prefix("sqlite://").unwrap());
    let mut private = vec![
        db.clone(),
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
    ];
    let emails = sb.emails();
    assert!(!emails.is_empty());
    private.extend(emails.iter().map(|n| sb.mail().join(n)));
    let modes: Vec<(String, u32)> = private
        .iter()
        .map(|p| (p.display().to_string(), mode(p)))
        .collect();
    let folder = mode(&sb.mail());
    let _ = child.kill();
    let _ = child.wait();
    for (path, m) in modes {
        assert_eq!(m & 0o077, 0, "{path} is {m:o}");
    }
    assert_eq!(folder, 0o700, "the mail folder is {folder:o}");
}

/// A close whose mail fails exits 4 and says so; `send` then says what it could not take —
/// messages in backoff (with their next attempt) and messages another worker claimed (with
/// when the claim ends) — and exits 4 while any are left, 0 once all went out.
async fn summaries(backend: Backend) {
    let sb = Sandbox::new(backend);
    sb.ok(&[
        "import",
        fixtures().join("three_monthly.json").to_str().unwrap(),
    ]);
    let down = env(&[("BILLRUN_SMTP_URL", "smtp://127.0.0.1:1")]);
    let close = sb.run_with_env(&["close", "--as-of", "2026-01-01"], &down);
    let stdout = String::from_utf8_lossy(&close.stdout);
    assert_eq!(close.status.code(), Some(4), "{}", shown(&close));
    assert!(stdout.contains("failed (queued for retry)"), "{stdout}");
    let queued = count(
        &sb.db,
        "SELECT COUNT(*) FROM outbox WHERE status = 'pending'",
    )
    .await;
    assert!(queued >= 3, "{queued}");
    // The daemon's outbox-depth metric counts them, on SQLite too (it once read 0 there).
    let store = billrun::store::open(&sb.db.url).await.unwrap();
    assert_eq!(store.outbox_depth().await.unwrap(), queued as u64);
    drop(store);

    // Two messages held by a worker that is gone, its lease far off.
    sb.db
        .exec(
            "UPDATE outbox SET claimed_by = 'gone:1', claimed_until = '2999-01-01T00:00:00.000000Z' \
             WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' ORDER BY id LIMIT 2)",
        )
        .await;
    let send = sb.run_with_env(&["send"], &down);
    let stdout = String::from_utf8_lossy(&send.stdout);
    assert_eq!(send.status.code(), Some(4), "{}", shown(&send));
    assert!(stdout.contains("Sent 0 message(s); 0 failed"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{} message(s) wait for their next attempt after a failure",
            queued - 2
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 message(s) are being sent by another worker, or were claimed by one that stopped: they are free again by 2999-01-01 00:00:00 UTC"),
        "{stdout}"
    );

    // The mail folder takes what is not claimed; the claimed two are still named.
    let send = sb.run(&["send", "--retry-now"]);
    let stdout = String::from_utf8_lossy(&send.stdout);
    assert_eq!(send.status.code(), Some(4), "{}", shown(&send));
    assert!(
        stdout.contains(&format!("Sent {} message(s); 0 failed", queued - 2))
            && !stdout.contains("wait for their next attempt")
            && stdout.contains("2 message(s) are being sent by another worker"),
        "{stdout}"
    );
    sb.db
        .exec("UPDATE outbox SET claimed_by = NULL, claimed_until = NULL")
        .await;
    let send = sb.run(&["send", "--retry-now"]);
    assert_eq!(send.status.code(), Some(0), "{}", shown(&send));
    assert!(String::from_utf8_lossy(&send.stdout).contains("Sent 2 message(s); 0 failed"));
}

on_each_backend!(summaries:
    close_and_send_say_what_waits_and_exit_4_until_all_is_sent_sqlite,
    close_and_send_say_what_waits_and_exit_4_until_all_is_sent_postgres
);
