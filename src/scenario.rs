//! `billrun simulate`: replay a scenario file on a throwaway in-memory store with a simulated
//! clock, running the same `close` the daemon runs at every day the clock passes.
//!
//! Each simulated day runs `close(day)` first — the daemon closes at 00:00 — and then the
//! actions dated that day, in file order. The whole scenario is validated before the clock
//! starts: a bad file is one error and no simulation.

use crate::change::{ChangeError, Order};
use crate::clock::ManualClock;
use crate::close::{CloseOptions, CloseSettings};
use crate::context::Billing;
use crate::core::catalog::{Catalog, RawCatalog, toml_error};
use crate::core::domain::Target;
use crate::core::licence::LicenceOp;
use crate::correction::CorrectionError;
use crate::input::{self, RawAccount, RawSubscription, parse_date};
use crate::output::DocumentJson;
use crate::store::prelude::*;
use crate::store::sqlite::SqliteStore;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    until: String,
    #[serde(default)]
    catalog: RawCatalog,
    #[serde(default)]
    accounts: Vec<RawAccount>,
    #[serde(default)]
    subscriptions: Vec<RawSubscription>,
    #[serde(default)]
    actions: Vec<RawAction>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    at: String,
    change: Option<toml::Table>,
    cancel: Option<toml::Table>,
    uncancel: Option<toml::Table>,
    licence: Option<toml::Table>,
    void: Option<toml::Table>,
    credit: Option<toml::Table>,
    charge: Option<toml::Table>,
}

/// A timed action of the scenario, as written.
#[derive(Debug, Clone)]
pub struct Action {
    pub at: NaiveDate,
    pub kind: &'static str,
    pub body: toml::Table,
}

pub struct Scenario {
    pub until: NaiveDate,
    pub catalog: Catalog,
    pub batch: input::ImportBatch,
    pub actions: Vec<Action>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario: {0}")]
    Invalid(String),
    #[error("simulation failed: {0}")]
    Run(String),
}

impl Scenario {
    pub fn parse(src: &str) -> Result<Scenario, ScenarioError> {
        let bad = ScenarioError::Invalid;
        let raw: RawScenario = toml::from_str(src).map_err(|e| bad(toml_error(&e, src)))?;
        let until = parse_date(&raw.until).map_err(|e| bad(format!("until: {e}")))?;
        let catalog =
            Catalog::from_raw(raw.catalog, Some(src)).map_err(|e| bad(format!("catalog: {e}")))?;
        let batch = input::validate(
            &raw.accounts,
            &raw.subscriptions,
            &catalog,
            "UTC",
            &BTreeMap::new(),
        )
        .map_err(bad)?;
        let mut actions = Vec::new();
        for (i, a) in raw.actions.into_iter().enumerate() {
            let at = parse_date(&a.at).map_err(|e| bad(format!("actions[{i}].at: {e}")))?;
            let mut given: Vec<(&'static str, toml::Table)> = Vec::new();
            for (kind, body) in [
                ("change", a.change),
                ("cancel", a.cancel),
                ("uncancel", a.uncancel),
                ("licence", a.licence),
                ("void", a.void),
                ("credit", a.credit),
                ("charge", a.charge),
            ] {
                if let Some(b) = body {
                    given.push((kind, b));
                }
            }
            if given.len() != 1 {
                return Err(bad(format!(
                    "actions[{i}]: give exactly one of change, cancel, uncancel, licence, void, credit or charge"
                )));
            }
            let (kind, body) = given.pop().expect("one action");
            if kind == "charge" {
                charge(&body, at).map_err(|e| bad(format!("actions[{i}].charge: {e}")))?;
                actions.push(Action { at, kind, body });
                continue;
            }
            if matches!(kind, "void" | "credit") {
                correction(kind, &body).map_err(|e| bad(format!("actions[{i}].{kind}: {e}")))?;
                actions.push(Action { at, kind, body });
                continue;
            }
            match body.get("subscription") {
                Some(toml::Value::String(sub)) => {
                    if !batch
                        .subscriptions
                        .iter()
                        .any(|s| s.subscription.id.as_str() == sub)
                    {
                        return Err(bad(format!(
                            "actions[{i}].{kind}: unknown subscription {sub:?}"
                        )));
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "actions[{i}].{kind}: needs `subscription = \"ID\"`"
                    )));
                }
            }
            match kind {
                "change" => {
                    change_target(&body).map_err(|e| bad(format!("actions[{i}].{e}")))?;
                }
                "licence" => {
                    licence_op(&body).map_err(|e| bad(format!("actions[{i}].{e}")))?;
                }
                _ => {}
            }
            actions.push(Action { at, kind, body });
        }
        // Stable: actions of the same day keep their file order.
        actions.sort_by_key(|a| a.at);
        Ok(Scenario {
            until,
            catalog,
            batch,
            actions,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Refused {
    pub at: String,
    pub action: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct Email {
    pub to: String,
    pub subject: String,
}

#[derive(Debug, Serialize)]
pub struct SimulationOutput {
    pub documents: Vec<DocumentJson>,
    pub balances: BTreeMap<String, String>,
    /// Each account's balance ledger summed: always equal to its balance.
    pub ledger_sums: BTreeMap<String, String>,
    pub refused: Vec<Refused>,
    pub deleted_accounts: Vec<String>,
    pub emails: Vec<Email>,
    pub changes: Vec<crate::store::ChangeRecord>,
    /// Accounts parked by a sanity bound (never billed again in the simulation): listed so
    /// they never silently disappear; absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parked: Vec<crate::store::ParkedAccount>,
}

fn action_text(a: &Action) -> String {
    format!("{} {}", a.kind, toml::Value::Table(a.body.clone()))
}

/// Run a parsed scenario to its end.
pub async fn simulate(scenario: &Scenario) -> Result<SimulationOutput, ScenarioError> {
    let run_err = |e: &dyn std::fmt::Display| ScenarioError::Run(e.to_string());
    let store = SqliteStore::open("sqlite::memory:")
        .await
        .map_err(|e| run_err(&e))?;
    store.migrate().await.map_err(|e| run_err(&e))?;

    let first = scenario
        .batch
        .subscriptions
        .iter()
        .map(|s| s.subscription.start)
        .chain(scenario.actions.iter().map(|a| a.at))
        .min()
        .unwrap_or(scenario.until)
        .min(scenario.until);
    let clock = ManualClock::at_date(first);
    store
        .import(&scenario.batch, clock_now(&clock))
        .await
        .map_err(|e| run_err(&e))?;

    let mut settings = CloseSettings::from_config(&crate::config::Config::default());
    settings.worker = "simulator".into();
    settings.actor = "scenario".into();
    let billing = Billing {
        store: &store,
        catalog: &scenario.catalog,
        settings: &settings,
        clock: &clock,
        transport: None,
    };
    let mut refused = Vec::new();
    let mut actions = scenario.actions.iter().peekable();
    let mut day = first;
    while day <= scenario.until {
        clock.set_date(day);
        billing
            .close(day, &CloseOptions::default())
            .await
            .map_err(|e| run_err(&e))?;
        while let Some(action) = actions.next_if(|a| a.at <= day) {
            // The subscription was checked when the scenario was parsed.
            let sub = action
                .body
                .get("subscription")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let at = Some(action.at);
            let result = match action.kind {
                "void" | "credit" | "charge" => {
                    let done = if action.kind == "charge" {
                        let c = charge(&action.body, action.at).map_err(ScenarioError::Invalid)?;
                        billing.charge(&c, "scenario").await.map(drop)
                    } else {
                        let c = correction(action.kind, &action.body)
                            .map_err(ScenarioError::Invalid)?;
                        match c.amount {
                            None => billing.void(&c.document, &c.reason, at, "scenario").await,
                            Some(net) => {
                                billing
                                    .credit(&c.document, net, &c.reason, at, "scenario")
                                    .await
                            }
                        }
                        .map(drop)
                    };
                    match done {
                        Ok(_) => Ok(()),
                        Err(CorrectionError::Store(e)) => return Err(run_err(&e)),
                        Err(e) => {
                            refused.push(Refused {
                                at: action.at.to_string(),
                                action: action_text(action),
                                error: e.to_string(),
                            });
                            Ok(())
                        }
                    }
                }
                "change" => {
                    let target = change_target(&action.body).map_err(ScenarioError::Invalid)?;
                    billing.change(Order::new(sub, target, at)).await.map(drop)
                }
                "cancel" | "uncancel" => {
                    if action.kind == "uncancel" {
                        billing.undo_cancel(sub).await.map(drop)
                    } else {
                        billing.cancel(sub, at).await.map(drop)
                    }
                }
                _ => {
                    let op = licence_op(&action.body).map_err(ScenarioError::Invalid)?;
                    billing.licence_op(Order::new(sub, op, at)).await.map(drop)
                }
            };
            // A refusal is part of the story; anything else stops the simulation.
            let refusal = match result {
                Ok(()) => None,
                Err(ChangeError::Refused(r)) => Some(r.to_string()),
                Err(e) => return Err(run_err(&e)),
            };
            if let Some(error) = refusal {
                refused.push(Refused {
                    at: action.at.to_string(),
                    action: action_text(action),
                    error,
                });
            }
        }
        day = day
            .succ_opt()
            .ok_or_else(|| ScenarioError::Run("date overflow".into()))?;
    }

    let documents = store.documents(None).await.map_err(|e| run_err(&e))?;
    let balances = store.balances().await.map_err(|e| run_err(&e))?;
    let emails = store.outbox().await.map_err(|e| run_err(&e))?;
    let changes = store.changes().await.map_err(|e| run_err(&e))?;
    let mut ledger_sums = BTreeMap::new();
    for (account, _) in &balances {
        if let Some(report) = store
            .balance(account.as_str())
            .await
            .map_err(|e| run_err(&e))?
        {
            let sum: rust_decimal::Decimal = report.entries.iter().map(|e| e.amount).sum();
            ledger_sums.insert(account.to_string(), sum.to_string());
        }
    }
    Ok(SimulationOutput {
        documents: documents
            .iter()
            .map(|d| DocumentJson::from(&d.document))
            .collect(),
        ledger_sums,
        balances: balances
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        refused,
        deleted_accounts: store.deleted_accounts().await.map_err(|e| run_err(&e))?,
        parked: store.parked().await.map_err(|e| run_err(&e))?,
        changes,
        emails: emails
            .into_iter()
            .map(|e| Email {
                to: e.recipient,
                subject: e.subject,
            })
            .collect(),
    })
}

/// The operation of a `licence` action.
fn licence_op(body: &toml::Table) -> Result<LicenceOp, String> {
    let text = |key: &str| -> Result<String, String> {
        body.get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("licence: needs `{key} = \"…\"`"))
    };
    let count = || -> Result<u32, String> {
        body.get("quantity")
            .and_then(|v| v.as_integer())
            .and_then(|q| u32::try_from(q).ok())
            .filter(|q| *q > 0)
            .ok_or_else(|| "licence: needs `quantity` = a whole number of at least 1".to_string())
    };
    let known: &[&str] = match text("op")?.as_str() {
        "buy" => &["subscription", "op", "plan", "quantity"],
        "assign" => &["subscription", "op", "plan", "user"],
        "unassign" => &["subscription", "op", "user"],
        "remove" => &["subscription", "op", "plan", "quantity"],
        "upgrade" => &["subscription", "op", "user", "plan"],
        other => {
            return Err(format!(
                "licence: unknown op {other:?} (buy, assign, unassign, remove, upgrade)"
            ));
        }
    };
    if let Some(k) = body.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("licence: unexpected key `{k}`"));
    }
    Ok(match text("op")?.as_str() {
        "buy" => LicenceOp::Buy {
            plan: text("plan")?,
            quantity: count()?,
        },
        "assign" => LicenceOp::Assign {
            plan: text("plan")?,
            user: text("user")?,
        },
        "unassign" => LicenceOp::Unassign {
            user: text("user")?,
        },
        "remove" => LicenceOp::Remove {
            plan: text("plan")?,
            quantity: count()?,
        },
        _ => LicenceOp::Upgrade {
            user: text("user")?,
            plan: text("plan")?,
        },
    })
}

/// The target of a `change` action: any of plan, cycle, quantity.
fn change_target(body: &toml::Table) -> Result<Target, String> {
    let mut target = Target::default();
    for (k, v) in body {
        match (k.as_str(), v) {
            ("subscription", _) => {}
            ("plan", toml::Value::String(p)) => target.plan = Some(p.clone()),
            ("cycle", toml::Value::String(c)) => target.cycle = Some(c.clone()),
            ("quantity", toml::Value::Integer(q)) => {
                target.quantity =
                    Some(u32::try_from(*q).map_err(|_| {
                        format!("change: quantity {q} must be a positive whole number")
                    })?)
            }
            (k, v) => return Err(format!("change: unexpected {k} = {v}")),
        }
    }
    Ok(target)
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    crate::clock::Clock::now(clock)
}

/// A `void` or `credit` action: the invoice by number, the reason, and a credit's net amount.
struct Correction {
    document: String,
    reason: String,
    amount: Option<rust_decimal::Decimal>,
}

fn correction(kind: &str, body: &toml::Table) -> Result<Correction, String> {
    let text = |key: &str| {
        body.get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("needs `{key} = \"…\"`"))
    };
    let allowed: &[&str] = if kind == "void" {
        &["document", "reason"]
    } else {
        &["document", "reason", "amount"]
    };
    if let Some(k) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown key {k:?}"));
    }
    let amount = match kind {
        "credit" => Some(crate::core::money::parse_amount(&text("amount")?)?),
        _ => None,
    };
    Ok(Correction {
        document: text("document")?,
        reason: text("reason")?,
        amount,
    })
}

/// A `charge` action: `account`, `amount`, `description`, and `subscription` or `now`.
fn charge(body: &toml::Table, at: NaiveDate) -> Result<crate::correction::Charge, String> {
    let allowed = ["account", "amount", "description", "subscription", "now"];
    if let Some(k) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown key {k:?}"));
    }
    let text = |key: &str| {
        body.get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("needs `{key} = \"…\"`"))
    };
    let now = match body.get("now") {
        None => false,
        Some(v) => v.as_bool().ok_or("`now` is true or false")?,
    };
    Ok(crate::correction::Charge {
        account: text("account")?,
        net: crate::core::money::parse_amount(&text("amount")?)?,
        description: text("description")?,
        subscription: body
            .get("subscription")
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or("`subscription` is a string")
            })
            .transpose()?,
        now,
        at: Some(at),
    })
}
