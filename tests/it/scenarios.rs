//! Scenario files under `tests/scenarios/` (and the golden examples, as they become
//! supported) run through the simulator and are compared with their `.expected.json`:
//! documents as `[issue date, kind, total, amount due]`, final balances, how many actions were
//! refused, deleted accounts, and optionally how many emails were queued. A new case is a new
//! pair of files. With `UPDATE_EXPECT=1` a differing `.expected.json` is rewritten from what
//! the simulator produced instead (an intended change: review the diff).

use billrun::scenario::{Scenario, simulate};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Deserialize, serde::Serialize)]
struct Expected {
    documents: Vec<(String, String, String, Option<String>)>,
    #[serde(default)]
    balances: BTreeMap<String, String>,
    #[serde(default)]
    refused: usize,
    #[serde(default)]
    deleted: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    emails: Option<usize>,
}

/// Whether differing expected files are rewritten rather than reported.
fn updating() -> bool {
    std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1")
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str_exact(s).unwrap_or_else(|_| panic!("bad amount {s:?}"))
}

/// Run one scenario file and return the differences from its expected figures.
async fn check(path: &Path) -> Vec<String> {
    let src = std::fs::read_to_string(path).unwrap();
    let expected: Expected = serde_json::from_str(
        &std::fs::read_to_string(path.with_extension("expected.json")).unwrap(),
    )
    .unwrap();
    let scenario = match Scenario::parse(&src) {
        Ok(s) => s,
        Err(e) => return vec![format!("does not parse: {e}")],
    };
    let out = match simulate(&scenario).await {
        Ok(o) => o,
        Err(e) => return vec![format!("does not run: {e}")],
    };
    let mut problems = Vec::new();
    let key = |(d, k, t, a): &(String, String, String, Option<String>)| {
        (
            d.clone(),
            k.clone(),
            dec(t),
            if k == "invoice" {
                a.as_deref().map(dec)
            } else {
                None
            },
        )
    };
    let want: Vec<_> = expected.documents.iter().map(key).collect();
    let got: Vec<_> = out
        .documents
        .iter()
        .map(|d| {
            key(&(
                d.issued_at.clone(),
                d.kind.to_string(),
                d.total.clone(),
                Some(d.amount_due.clone()),
            ))
        })
        .collect();
    if want != got {
        problems.push(format!("documents\n  want {want:?}\n  got  {got:?}"));
    }
    for d in &out.documents {
        let sum: Decimal = d.lines.iter().map(|l| dec(&l.amount)).sum();
        if sum != dec(&d.total) {
            problems.push(format!(
                "{:?}: lines sum to {sum}, total is {}",
                d.number, d.total
            ));
        }
    }
    for (account, balance) in &expected.balances {
        let got = out.balances.get(account).map(|b| dec(b));
        if got != Some(dec(balance)) {
            problems.push(format!("balance of {account}: want {balance}, got {got:?}"));
        }
    }
    if out.refused.len() != expected.refused {
        problems.push(format!(
            "refused: want {}, got {:?}",
            expected.refused, out.refused
        ));
    }
    if out.deleted_accounts != expected.deleted {
        problems.push(format!(
            "deleted: want {:?}, got {:?}",
            expected.deleted, out.deleted_accounts
        ));
    }
    if let Some(n) = expected.emails
        && out.emails.len() != n
    {
        problems.push(format!("emails: want {n}, got {}", out.emails.len()));
    }
    if !problems.is_empty() && updating() {
        let actual = Expected {
            documents: out
                .documents
                .iter()
                .map(|d| {
                    (
                        d.issued_at.clone(),
                        d.kind.to_string(),
                        d.total.clone(),
                        (d.kind == "invoice").then(|| d.amount_due.clone()),
                    )
                })
                .collect(),
            // The accounts the file named, or every account if it named none.
            balances: out
                .balances
                .iter()
                .filter(|(a, _)| expected.balances.is_empty() || expected.balances.contains_key(*a))
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
            refused: out.refused.len(),
            deleted: out.deleted_accounts.clone(),
            emails: expected.emails.map(|_| out.emails.len()),
        };
        let path = path.with_extension("expected.json");
        std::fs::write(&path, serde_json::to_string(&actual).unwrap() + "\n").unwrap();
        eprintln!("rewrote {}", path.display());
        return Vec::new();
    }
    problems
}

fn scenario_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

async fn check_all(dir: &str) {
    let files = scenario_files(dir);
    assert!(!files.is_empty(), "no scenario files in {dir}");
    let mut failures = Vec::new();
    for f in &files {
        let problems = check(f).await;
        if !problems.is_empty() {
            failures.push(format!("{}:\n  {}", f.display(), problems.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn scenarios() {
    check_all("tests/scenarios").await;
}

#[tokio::test]
async fn golden_examples() {
    check_all("tests/golden").await;
}
