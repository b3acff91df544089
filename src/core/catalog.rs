//! The catalog: billing cycles, plans with their prices per currency per cycle, and the names
//! of the policies subscriptions may use.
//!
//! Loaded from TOML (the catalog file, or a scenario's `[catalog]` table) into raw serde types,
//! then validated into [`Catalog`]; every validation error names the key that is wrong and,
//! where the TOML parser kept its position, the line.

use super::money::{Currency, parse_amount};
use super::period::CycleLength;
use super::policy::{Policy, RawPolicy, validate_policies};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub code: String,
    pub length: CycleLength,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub code: String,
    pub name: String,
    pub rank: i64,
    pub modules: Vec<String>,
    pub per_seat: bool,
    pub prices: BTreeMap<Currency, BTreeMap<String, Decimal>>,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub cycles: BTreeMap<String, Cycle>,
    pub plans: BTreeMap<String, Plan>,
    /// The presets and the catalog's custom policies, by name.
    pub policies: BTreeMap<String, Policy>,
}

impl Catalog {
    /// A catalog with nothing in it, for work that prices nothing (sending mail, recording a
    /// cancellation): such commands do not depend on the catalog file being readable.
    pub fn empty() -> Catalog {
        Catalog {
            cycles: BTreeMap::new(),
            plans: BTreeMap::new(),
            policies: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("{0}")]
    Invalid(String),
    #[error("unknown plan {0:?}")]
    UnknownPlan(String),
    #[error("unknown cycle {0:?}")]
    UnknownCycle(String),
    #[error("unknown policy {0:?}")]
    UnknownPolicy(String),
    #[error("plan {plan:?} has no {currency} price for the {cycle} cycle")]
    NoPrice {
        plan: String,
        currency: Currency,
        cycle: String,
    },
}

/// The catalog as written in TOML, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalog {
    #[serde(default)]
    pub cycles: Vec<Spanned<RawCycle>>,
    #[serde(default)]
    pub plans: Vec<Spanned<RawPlan>>,
    #[serde(default)]
    pub policies: Vec<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCycle {
    pub code: String,
    pub months: Option<u32>,
    pub days: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    pub code: String,
    pub name: Option<String>,
    pub rank: i64,
    #[serde(default)]
    pub modules: Vec<String>,
    #[serde(default)]
    pub per_seat: bool,
    #[serde(default)]
    pub prices: BTreeMap<String, BTreeMap<String, String>>,
}

/// 1-based line of a byte offset in `src`.
pub fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

impl Catalog {
    /// Parse a catalog file (the catalog at the top level of the document).
    pub fn from_toml_str(src: &str) -> Result<Catalog, CatalogError> {
        let raw: RawCatalog =
            toml::from_str(src).map_err(|e| CatalogError::Invalid(toml_error(&e, src)))?;
        Catalog::from_raw(raw, Some(src))
    }

    /// Validate a raw catalog. `src` is the text it came from, for line numbers.
    pub fn from_raw(raw: RawCatalog, src: Option<&str>) -> Result<Catalog, CatalogError> {
        let at = |span: std::ops::Range<usize>| match src {
            Some(s) => format!(" (line {})", line_of(s, span.start)),
            None => String::new(),
        };
        let bad = |msg: String| Err(CatalogError::Invalid(msg));

        let mut cycles = BTreeMap::new();
        for (code, months) in [("monthly", 1), ("quarterly", 3), ("annual", 12)] {
            cycles.insert(
                code.to_string(),
                Cycle {
                    code: code.to_string(),
                    length: CycleLength::Months(months),
                },
            );
        }
        for c in raw.cycles {
            let span = c.span();
            let c = c.into_inner();
            if !is_code(&c.code) {
                return bad(format!(
                    "cycles: {:?} is not a valid cycle code{}",
                    c.code,
                    at(span)
                ));
            }
            let length = match (c.months, c.days) {
                (Some(m), None) if matches!(m, 1 | 3 | 12) => CycleLength::Months(m),
                (Some(m), None) => {
                    return bad(format!(
                        "cycles.{}.months = {m}: must be 1, 3 or 12{}",
                        c.code,
                        at(span)
                    ));
                }
                (None, Some(d)) if (1..=3660).contains(&d) => CycleLength::Days(d),
                (None, Some(d)) => {
                    return bad(format!(
                        "cycles.{}.days = {d}: must be between 1 and 3660{}",
                        c.code,
                        at(span)
                    ));
                }
                _ => {
                    return bad(format!(
                        "cycles.{}: give exactly one of `months` or `days`{}",
                        c.code,
                        at(span)
                    ));
                }
            };
            if let Some(existing) = cycles.get(&c.code)
                && existing.length != length
            {
                return bad(format!(
                    "cycles.{}: redefines the built-in cycle with another length{}",
                    c.code,
                    at(span)
                ));
            }
            cycles.insert(
                c.code.clone(),
                Cycle {
                    code: c.code,
                    length,
                },
            );
        }

        let mut plans = BTreeMap::new();
        for p in raw.plans {
            let span = p.span();
            let p = p.into_inner();
            let here = at(span);
            if !is_code(&p.code) {
                return bad(format!(
                    "plans: {:?} is not a valid plan code{here}",
                    p.code
                ));
            }
            if plans.contains_key(&p.code) {
                return bad(format!("plans.{}: defined twice{here}", p.code));
            }
            if p.prices.is_empty() {
                return bad(format!(
                    "plans.{}.prices: the plan has no price{here}",
                    p.code
                ));
            }
            let mut prices = BTreeMap::new();
            for (cur, per_cycle) in p.prices {
                let currency = Currency::new(&cur).map_err(|e| {
                    CatalogError::Invalid(format!("plans.{}.prices: {e}{here}", p.code))
                })?;
                let mut m = BTreeMap::new();
                for (cycle, amount) in per_cycle {
                    if !cycles.contains_key(&cycle) {
                        return bad(format!(
                            "plans.{}.prices.{cur}.{cycle}: unknown cycle {cycle:?}{here}",
                            p.code
                        ));
                    }
                    let value = parse_amount(&amount).map_err(|e| {
                        CatalogError::Invalid(format!(
                            "plans.{}.prices.{cur}.{cycle}: {e}{here}",
                            p.code
                        ))
                    })?;
                    if value.is_sign_negative() {
                        return bad(format!(
                            "plans.{}.prices.{cur}.{cycle}: a price cannot be negative{here}",
                            p.code
                        ));
                    }
                    m.insert(cycle, value);
                }
                prices.insert(currency, m);
            }
            for module in &p.modules {
                if !is_code(module) {
                    return bad(format!(
                        "plans.{}.modules: {module:?} is not a valid module name{here}",
                        p.code
                    ));
                }
            }
            plans.insert(
                p.code.clone(),
                Plan {
                    name: p.name.unwrap_or_else(|| p.code.clone()),
                    code: p.code,
                    rank: p.rank,
                    modules: p.modules,
                    per_seat: p.per_seat,
                    prices,
                },
            );
        }
        let codes: Vec<String> = cycles.keys().cloned().collect();
        let policies = validate_policies(raw.policies, &codes).map_err(CatalogError::Invalid)?;
        Ok(Catalog {
            cycles,
            plans,
            policies,
        })
    }

    pub fn plan(&self, code: &str) -> Result<&Plan, CatalogError> {
        self.plans
            .get(code)
            .ok_or_else(|| CatalogError::UnknownPlan(code.to_string()))
    }

    pub fn cycle(&self, code: &str) -> Result<&Cycle, CatalogError> {
        self.cycles
            .get(code)
            .ok_or_else(|| CatalogError::UnknownCycle(code.to_string()))
    }

    pub fn policy(&self, name: &str) -> Result<&Policy, CatalogError> {
        self.policies
            .get(name)
            .ok_or_else(|| CatalogError::UnknownPolicy(name.to_string()))
    }

    /// The list price of one unit of `plan` for one `cycle` in `currency`.
    pub fn price(
        &self,
        plan: &str,
        currency: Currency,
        cycle: &str,
    ) -> Result<Decimal, CatalogError> {
        self.plan(plan)?
            .prices
            .get(&currency)
            .and_then(|m| m.get(cycle))
            .copied()
            .ok_or_else(|| CatalogError::NoPrice {
                plan: plan.to_string(),
                currency,
                cycle: cycle.to_string(),
            })
    }
}

/// A TOML error as one line: the message and where it is.
pub fn toml_error(e: &toml::de::Error, src: &str) -> String {
    // One line, even when the message quotes a value holding line breaks.
    let msg = e.message().trim().replace('\r', "\\r").replace('\n', "\\n");
    match e.span() {
        Some(span) => format!("line {}: {msg}", line_of(src, span.start)),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(src: &str, want: &str) {
        let err = Catalog::from_toml_str(src).unwrap_err().to_string();
        assert!(err.contains(want), "error {err:?} should contain {want:?}");
    }

    #[test]
    fn loads_cycles_plans_and_prices() {
        let c = Catalog::from_toml_str(
            r#"
cycles = [{ code = "monthly30", days = 30 }]
[[plans]]
code = "pro"
rank = 2
prices.USD = { monthly30 = "59.00", annual = "590.00" }
"#,
        )
        .unwrap();
        let usd = Currency::new("USD").unwrap();
        assert_eq!(c.price("pro", usd, "annual").unwrap().to_string(), "590.00");
        assert_eq!(c.cycle("monthly30").unwrap().length, CycleLength::Days(30));
        assert!(matches!(
            c.price("pro", Currency::new("EUR").unwrap(), "annual"),
            Err(CatalogError::NoPrice { .. })
        ));
    }

    #[test]
    fn names_the_bad_key_and_line() {
        check_err(
            "[[plans]]\ncode = \"a\"\nrank = 1\nprices.USD = { weekly = \"1\" }\n",
            "plans.a.prices.USD.weekly: unknown cycle",
        );
        check_err(
            "[[plans]]\ncode = \"a\"\nrank = 1\nprices.USD = { monthly = \"x\" }\n",
            "line 1",
        );
        check_err("[[plans]]\ncode = \"a\"\nrank = \"high\"\n", "line 3");
        check_err(
            "[[plans]]\ncode = \"a\"\nrank = 1\nprices.USD = { monthly = 20.0 }\n",
            "line 4",
        );
        check_err("[[plans\n", "line 1");
        check_err(
            "cycles = [{ code = \"x\", months = 2 }]\n",
            "must be 1, 3 or 12",
        );
    }
}
