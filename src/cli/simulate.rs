//! `billrun simulate`: run a scenario file (at most `core::limits::MAX_SCENARIO_BYTES`) on a
//! throwaway in-memory store and print what it issued, the balances, and what was refused
//! or parked — as text, or as JSON (the `SimulationOutput` itself).

use super::{Exit, print_either, read};
use crate::scenario::{Scenario, SimulationOutput, simulate as run_scenario};
use anyhow::{Context, Result};
use std::fmt;
use std::path::Path;

pub(super) async fn simulate(scenario: &Path, json: bool) -> Result<Exit> {
    let src = read(scenario, crate::core::limits::MAX_SCENARIO_BYTES)?;
    let parsed = Scenario::parse(&src).with_context(|| format!("{}", scenario.display()))?;
    let out = run_scenario(&parsed).await?;
    print_either(json, &out, SimulationText(&out))
}

/// A simulation for people: one row per document, then the balances, refusals and parked
/// accounts, one line each.
struct SimulationText<'a>(&'a SimulationOutput);

impl fmt::Display for SimulationText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let out = self.0;
        for d in &out.documents {
            writeln!(
                f,
                "{:<18} {:<11} {:<16} {}  {:>12} {:>12} {}",
                d.number.as_deref().unwrap_or("-"),
                d.kind,
                d.account,
                d.issued_at,
                d.total,
                d.amount_due,
                d.currency
            )?;
        }
        for (a, b) in &out.balances {
            writeln!(f, "balance {a}: {b}")?;
        }
        for r in &out.refused {
            writeln!(f, "refused at {}: {} — {}", r.at, r.action, r.error)?;
        }
        for p in &out.parked {
            writeln!(f, "parked {}: {}", p.account, p.reason)?;
        }
        Ok(())
    }
}
