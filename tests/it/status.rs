//! `billrun status` through the real binary on each backend: after closes that park accounts,
//! hold a run's emails and void an invoice while its email waited, `status --json` names the
//! runs as `runs --json` and the closes reported them, the outbox by state, the parked and
//! released accounts as `parked --json` lists them, the next close in the billing timezone and
//! the schema — and writes nothing. On a database without a schema it says so (exit 0); one it
//! cannot read is one error line (exit 1).

use crate::common::{Backend, Sandbox, snapshot};
use serde_json::Value;
use std::process::Output;

/// Two accounts billed in January (the same as the parking tests').
const FIRST: &str = include_str!("../fixtures/parking_first.json");

/// 22 months behind at the second close: parked (more than 12 documents in one run).
const OLD: &str = include_str!("../fixtures/parking_old.json");

/// Customer emails wait two days for review; the daemon would close at 06:30 New York time.
const CONFIG: &str =
    "review_hours = 48\ntimezone = \"America/New_York\"\nschedule = \"0 30 6 * * *\"\n";

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn status(sb: &Sandbox) -> Value {
    json(&sb.ok(&["status", "--json"]))
}

fn import(sb: &Sandbox, name: &str, data: &str) {
    let file = sb.dir.path().join(name);
    std::fs::write(&file, data).unwrap();
    sb.ok(&["import", file.to_str().unwrap()]);
}

on_each_backend!(status_reports_runs_outbox_and_parks:
    status_reports_runs_outbox_and_parks_sqlite,
    status_reports_runs_outbox_and_parks_postgres
);

async fn status_reports_runs_outbox_and_parks(backend: Backend) {
    let sb = Sandbox::with_config_extra(backend, CONFIG);
    sb.ok(&["migrate"]);
    let empty = status(&sb);
    assert_eq!(empty["runs"], serde_json::json!([]), "{empty:#}");
    assert_eq!(empty["outbox"]["unsent"], 0, "{empty:#}");
    assert_eq!(empty["parked"]["count"], 0, "{empty:#}");

    // Run 1: January for a_ok and a_big. Run 2: a_ok's February; a_big (76× its January)
    // and a_old (22 months behind) parked.
    import(&sb, "first.json", FIRST);
    let first = json(&sb.ok(&["close", "--as-of", "2026-01-10", "--json"]));
    sb.ok(&["change", "s_big", "--quantity", "50", "--at", "2026-01-15"]);
    import(&sb, "old.json", OLD);
    let second = json(&sb.ok(&["close", "--as-of", "2026-02-01", "--json"]));
    let (run1, run2) = (
        first["run"].as_i64().unwrap(),
        second["run"].as_i64().unwrap(),
    );
    assert_eq!(second["parked"].as_array().unwrap().len(), 2, "{second:#}");

    // Run 1's two emails held by an operator; a_ok's January invoice voided while its email
    // waited: that email and the credit note's are withdrawn. Run 2's one email stays in its
    // review window.
    sb.ok(&["hold", &run1.to_string()]);
    let ok_january = first["documents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["account"] == "a_ok")
        .unwrap_or_else(|| panic!("no invoice of a_ok in {first:#}"))["number"]
        .as_str()
        .unwrap()
        .to_string();
    sb.ok(&["void", &ok_january, "--reason", "duplicate"]);
    sb.ok(&["unpark", "a_old"]);

    let before = snapshot(&sb.db).await;
    let s = status(&sb);
    let text = sb.ok(&["status"]);
    assert_eq!(
        before,
        snapshot(&sb.db).await,
        "status wrote to the database"
    );

    // The database, without a password, and its schema.
    assert_eq!(
        s["backend"],
        match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
    assert_eq!(s["database"], billrun::display_url(&sb.db.url));
    assert_eq!(s["schema"]["current"], true, "{s:#}");
    assert_eq!(s["schema"]["applied"], s["schema"]["expected"], "{s:#}");

    // The runs as `runs --json` has them, each with what it parked.
    let runs = json(&sb.ok(&["runs", "--json"]));
    let shown = s["runs"].as_array().unwrap();
    assert_eq!(shown.len(), 2, "{s:#}");
    assert_eq!(shown[0]["run"], run2);
    assert_eq!(shown[1]["run"], run1);
    for (shown, listed) in shown.iter().zip(runs.as_array().unwrap()) {
        let mut without_parked = shown.clone();
        without_parked.as_object_mut().unwrap().remove("parked");
        assert_eq!(&without_parked, listed);
    }
    assert_eq!(shown[0]["parked"], 2);
    assert_eq!(shown[1]["parked"], 0);
    assert_eq!(
        shown[0]["documents"],
        second["documents"].as_array().unwrap().len()
    );
    assert_eq!(
        shown[1]["documents"],
        first["documents"].as_array().unwrap().len()
    );
    assert_eq!(
        shown[1]["emails_held"], 1,
        "run 1: a_big's held by the operator (a_ok's withdrawn)"
    );

    // The outbox by state: a_big's January held by the operator, a_ok's February in review,
    // the voided invoice's email and its credit note's withdrawn; finance batches went.
    let o = &s["outbox"];
    let expected = [
        ("unsent", 2),
        ("due", 0),
        ("in_backoff", 0),
        ("claimed", 0),
        ("held_review", 1),
        ("held_operator", 1),
        ("withdrawn", 2),
    ];
    for (field, n) in expected {
        assert_eq!(o[field], n, "outbox.{field}: {o:#}");
    }
    assert!(o["review_until"].is_string(), "{o:#}");

    // Parked and released as `parked --json` lists them.
    let parked = json(&sb.ok(&["parked", "--json"]));
    let with_status = |status: &str| -> Vec<Value> {
        parked
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["status"] == status)
            .map(|p| p["account"].clone())
            .collect()
    };
    assert_eq!(s["parked"]["count"], 1, "{s:#}");
    assert_eq!(s["parked"]["accounts"], Value::from(with_status("parked")));
    assert_eq!(s["parked"]["accounts"], serde_json::json!(["a_big"]));
    assert_eq!(s["parked"]["released"], serde_json::json!(["a_old"]));

    // The next close: 06:30 in New York, within a day.
    let next = &s["next_close"];
    assert_eq!(next["timezone"], "America/New_York");
    let local = chrono::DateTime::parse_from_rfc3339(next["local"].as_str().unwrap()).unwrap();
    assert_eq!(local.format("%H:%M:%S").to_string(), "06:30:00", "{next:#}");
    assert!(["-05:00", "-04:00"].contains(&local.offset().to_string().as_str()));
    let at: chrono::DateTime<chrono::Utc> = next["at"].as_str().unwrap().parse().unwrap();
    let now: chrono::DateTime<chrono::Utc> = s["at"].as_str().unwrap().parse().unwrap();
    assert_eq!(at, local);
    assert!(
        at > now && at - now <= chrono::Duration::hours(24),
        "{next:#}"
    );

    // The same for people.
    for needle in [
        "schema version",
        "(current)",
        "America/New_York",
        "1 held for review",
        "1 held by an operator",
        "2 withdrawn",
        "Parked:      1 account(s): a_big",
        "1 released for the next close: a_old",
        "completed",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
}

/// A configuration without `[seller]`: `status` needs none.
fn without_seller(sb: &Sandbox) -> std::path::PathBuf {
    let config = std::fs::read_to_string(sb.config()).unwrap();
    let config = config.split("\n[seller]").next().unwrap();
    let path = sb.dir.path().join("no-seller.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn status_with(sb: &Sandbox, config: &std::path::Path, json: bool) -> Output {
    let mut args = vec!["status"];
    if json {
        args.push("--json");
    }
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_billrun"));
    cmd.arg("--config").arg(config).args(&args);
    cmd.current_dir(sb.dir.path());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BILLRUN_")) {
        cmd.env_remove(k);
    }
    cmd.output().unwrap()
}

on_each_backend!(status_without_schema:
    status_of_a_database_without_schema_says_so_sqlite,
    status_of_a_database_without_schema_says_so_postgres
);

/// An empty database (a SQLite file of no bytes, a fresh PostgreSQL database): exit 0, the
/// schema `null` and why, the sections that need it `null`, nothing written; and a database
/// that cannot be read at all: exit 1 with one line.
async fn status_without_schema(backend: Backend) {
    let sb = Sandbox::new(backend);
    let config = without_seller(&sb);
    if backend == Backend::Sqlite {
        // No file yet: nothing to read.
        let out = status_with(&sb, &config, true);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("does not exist"), "{stderr}");
        let path = sb.db.url.strip_prefix("sqlite://").unwrap();
        std::fs::File::create(path).unwrap();
    }
    let before = snapshot(&sb.db).await;
    let out = status_with(&sb, &config, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = json(&String::from_utf8(out.stdout).unwrap());
    assert!(s["schema"]["applied"].is_null(), "{s:#}");
    assert_eq!(s["schema"]["current"], false);
    assert!(
        s["schema"]["problem"]
            .as_str()
            .unwrap()
            .contains("billrun migrate"),
        "{s:#}"
    );
    for section in ["runs", "outbox", "parked"] {
        assert!(s[section].is_null(), "{section}: {s:#}");
    }
    assert!(s["next_close"]["at"].is_string(), "{s:#}");
    let out = status_with(&sb, &config, false);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("no billrun schema"), "{text}");
    assert!(text.contains("billrun migrate"), "{text}");
    assert_eq!(
        before,
        snapshot(&sb.db).await,
        "status wrote to the database"
    );
    if backend == Backend::Sqlite {
        let path = sb.db.url.strip_prefix("sqlite://").unwrap();
        assert_eq!(
            std::fs::metadata(path).unwrap().len(),
            0,
            "status wrote the file"
        );
    } else {
        // A database that does not exist on the server.
        let (server, _) = sb.db.url.rsplit_once('/').unwrap();
        let missing = format!("{server}/billrun_no_such_database");
        let out = sb
            .command(&["status"], &[("BILLRUN_DATABASE_URL".into(), missing)])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("cannot read the database"), "{stderr}");
    }
}
