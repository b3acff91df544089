//! The monitoring files in `deploy/`: the Grafana dashboard and the Prometheus alert rules
//! (and their `promtool` unit tests) name only metrics the daemon exports — as its registry
//! renders them on `/metrics` — and the dashboard shows every one. The dashboard is JSON with
//! a data source variable; each alert has a `for:`, a severity and its annotations. With
//! `promtool` on the PATH (CI installs it), the dashboard's queries are also parsed by it.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn deploy(path: &str) -> PathBuf {
    crate::common::repo().join("deploy").join(path)
}

/// Every sample name `/metrics` shows (`billrun_close_runs_total`,
/// `billrun_close_duration_seconds_bucket`, …) and every family (`# TYPE` name).
fn exported() -> (BTreeSet<String>, BTreeSet<String>) {
    let text = billrun::daemon::Metrics::new().render();
    let mut samples = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.insert(rest.split(' ').next().unwrap().to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            samples.insert(line.split(['{', ' ']).next().unwrap().to_string());
        }
    }
    assert!(samples.len() >= 12, "{text}");
    (samples, families)
}

/// The identifiers of a PromQL expression that name billrun metrics: outside quoted strings,
/// not Grafana variables (`$__interval`).
fn billrun_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.chars().peekable();
    let mut previous = ' ';
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' {
            // Skip the string, escapes included.
            while let Some(d) = chars.next() {
                if d == '\\' {
                    chars.next();
                } else if d == c {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut word = String::from(c);
            while let Some(&d) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                    word.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            if previous != '$' && word.starts_with("billrun_") {
                names.push(word);
            }
            previous = ' ';
            continue;
        }
        previous = c;
    }
    names
}

#[test]
fn promql_names_are_found_outside_strings_and_variables() {
    assert_eq!(
        billrun_names(
            r#"time() - billrun_x{instance=~"billrun_not_a_metric"} + rate(billrun_y_total[$__interval])"#
        ),
        ["billrun_x", "billrun_y_total"]
    );
}

/// Insist that an expression names billrun metrics, and only exported ones.
fn check_expr(samples: &BTreeSet<String>, place: &str, expr: &str) -> Vec<String> {
    let names = billrun_names(expr);
    for name in &names {
        assert!(
            samples.contains(name),
            "{place}: {name} is not exported by the daemon (/metrics has {samples:?})"
        );
    }
    names
}

/// Every panel with queries, rows' panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_dashboard_shows_every_exported_metric_and_nothing_else() {
    let (samples, families) = exported();
    let text = std::fs::read_to_string(deploy("grafana/billrun-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dashboard["schemaVersion"].as_i64().unwrap() >= 36);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "no DS_PROMETHEUS data source variable"
    );
    let mut shown = BTreeSet::new();
    let mut queries = Vec::new();
    for v in variables.iter().filter(|v| v["type"] == "query") {
        let q = v["definition"].as_str().unwrap();
        check_expr(&samples, &format!("variable {}", v["name"]), q);
    }
    let panels = panels(&dashboard);
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {title:?}"
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let names = check_expr(&samples, &format!("panel {title:?}"), expr);
            assert!(
                !names.is_empty(),
                "panel {title:?}: {expr} names no billrun metric"
            );
            shown.extend(names);
            queries.push((
                format!("{}_{}", p["id"], t["refId"].as_str().unwrap()),
                expr,
            ));
        }
    }
    for family in &families {
        assert!(
            shown.iter().any(|n| n.starts_with(family.as_str())),
            "the dashboard does not show {family}"
        );
    }
    promtool_parses(&queries);
}

/// Each query, Grafana's variables given values, parsed by `promtool check rules` as a
/// recording rule. Skipped (with a line) without promtool.
fn promtool_parses(queries: &[(String, &str)]) {
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_err()
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "promtool not installed: the dashboard's queries are not parsed (apt install prometheus)"
        );
        return;
    }
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (id, expr) in queries {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1h")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:panel_{id}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool refused a dashboard query:\n{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_name_only_exported_metrics() {
    let (samples, _) = exported();
    let text = std::fs::read_to_string(deploy("prometheus/billrun-alerts.yml")).unwrap();
    let mut alerts = BTreeSet::new();
    for rule in text.split("- alert: ").skip(1) {
        let name = rule.lines().next().unwrap().trim().to_string();
        let field = |key: &str| {
            rule.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .map(str::trim)
                .unwrap_or_else(|| panic!("{name}: no {key}"))
        };
        let expr = field("expr:");
        assert!(
            !expr.starts_with(['|', '>']),
            "{name}: keep expr on one line (this test reads it so)"
        );
        let names = check_expr(&samples, &name, expr);
        assert!(
            !names.is_empty() || expr.contains(r#"up{job="billrun"}"#),
            "{name}: {expr} names no billrun metric"
        );
        assert!(!field("for:").is_empty(), "{name}");
        assert!(
            ["critical", "warning"].contains(&field("severity:")),
            "{name}"
        );
        assert!(field("summary:").len() > 10, "{name}");
        assert!(field("description:").len() > 10, "{name}");
        alerts.insert(name);
    }
    for wanted in [
        "BillrunCloseFailed",
        "BillrunNoSuccessfulClose",
        "BillrunOutboxNotDraining",
        "BillrunEmailSendFailures",
        "BillrunParkedAccounts",
        "BillrunDown",
        "BillrunMissing",
    ] {
        assert!(alerts.contains(wanted), "no alert {wanted}: {alerts:?}");
    }

    // The promtool unit tests feed series by those names too.
    let tests = std::fs::read_to_string(deploy("prometheus/billrun-alerts.test.yml")).unwrap();
    for line in tests.lines() {
        if let Some(series) = line.trim().strip_prefix("- series: ") {
            let series = series.trim_matches('\'');
            let name = series.split('{').next().unwrap();
            assert!(
                name == "up" || samples.contains(name),
                "the alert tests feed {name}, which the daemon does not export"
            );
        }
        if let Some(alert) = line.trim().strip_prefix("alertname: ") {
            assert!(
                alerts.contains(alert.trim()),
                "the alert tests name {alert}"
            );
        }
    }
}
