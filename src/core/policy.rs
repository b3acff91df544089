//! Plan-change policies: which kinds of change a subscription may make, and how each is timed,
//! priced and settled. A policy is a rule table; the four presets of SPEC §4 are built in and
//! custom ones come from the catalog's `policies`.

use super::money::parse_amount;
use super::period::CycleLength;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    CycleLonger,
    CycleShorter,
    TierUpgrade,
    TierDowngrade,
    SeatsAdded,
    SeatsRemoved,
}

impl ChangeKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ChangeKind::CycleLonger => "cycle_longer",
            ChangeKind::CycleShorter => "cycle_shorter",
            ChangeKind::TierUpgrade => "tier_upgrade",
            ChangeKind::TierDowngrade => "tier_downgrade",
            ChangeKind::SeatsAdded => "seats_added",
            ChangeKind::SeatsRemoved => "seats_removed",
        }
    }
    pub fn is_cycle_change(&self) -> bool {
        matches!(self, ChangeKind::CycleLonger | ChangeKind::CycleShorter)
    }
    pub const ALL: [ChangeKind; 6] = [
        ChangeKind::CycleLonger,
        ChangeKind::CycleShorter,
        ChangeKind::TierUpgrade,
        ChangeKind::TierDowngrade,
        ChangeKind::SeatsAdded,
        ChangeKind::SeatsRemoved,
    ];
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timing {
    Immediate,
    EndOfPeriod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Credit the unused share of the old state (× credit %), charge the remaining share of the new.
    Prorate,
    /// Re-price the used time at the new cycle's price; credit billed − used (or invoice a shortfall).
    RerateUsed,
    /// The new cycle starts at the current period's start; charge it in full, credit what was billed.
    Backdate,
    /// No money moves now.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settle {
    InvoiceNow,
    NextInvoice,
    Balance,
}

impl Timing {
    /// The name used in JSON and in the CLI's text (snake case).
    pub fn as_str(&self) -> &'static str {
        match self {
            Timing::Immediate => "immediate",
            Timing::EndOfPeriod => "end_of_period",
        }
    }
}

impl Method {
    /// The name used in JSON and in the CLI's text (snake case).
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Prorate => "prorate",
            Method::RerateUsed => "rerate_used",
            Method::Backdate => "backdate",
            Method::None => "none",
        }
    }
}

impl Settle {
    /// The name used in JSON and in the CLI's text (snake case).
    pub fn as_str(&self) -> &'static str {
        match self {
            Settle::InvoiceNow => "invoice_now",
            Settle::NextInvoice => "next_invoice",
            Settle::Balance => "balance",
        }
    }
}

impl fmt::Display for Timing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Settle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which current cycles a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleScope {
    Any,
    /// Cycles of a year or longer (12 months, or 360 days and more).
    Annual,
    ShorterThanAnnual,
    Codes(Vec<String>),
}

impl CycleScope {
    fn matches(&self, code: &str, length: CycleLength) -> bool {
        let annual = match length {
            CycleLength::Months(m) => m >= 12,
            CycleLength::Days(d) => d >= 360,
        };
        match self {
            CycleScope::Any => true,
            CycleScope::Annual => annual,
            CycleScope::ShorterThanAnnual => !annual,
            CycleScope::Codes(c) => c.iter().any(|x| x == code),
        }
    }
}

/// Credit percentage from a number of elapsed days on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreditStep {
    pub from_day: i64,
    pub percent: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub kind: ChangeKind,
    pub scope: CycleScope,
    pub timing: Timing,
    pub method: Method,
    pub settle: Settle,
    /// Ascending by `from_day`, first at day 0. Empty means 100%.
    pub credit: Vec<CreditStep>,
    /// Refused, with this message.
    pub forbidden: Option<String>,
}

impl Rule {
    fn new(kind: ChangeKind, timing: Timing, method: Method, settle: Settle) -> Rule {
        Rule {
            kind,
            scope: CycleScope::Any,
            timing,
            method,
            settle,
            credit: Vec::new(),
            forbidden: None,
        }
    }

    /// The credit percentage after `elapsed` days of the period.
    pub fn credit_percent(&self, elapsed: i64) -> Decimal {
        self.credit
            .iter()
            .rev()
            .find(|s| elapsed >= s.from_day)
            .map(|s| s.percent)
            .unwrap_or(Decimal::ONE_HUNDRED)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub name: String,
    pub rules: Vec<Rule>,
    /// A tier downgrade deletes, at once, the data of modules the new plan lacks.
    pub purge_modules_on_downgrade: bool,
}

impl Policy {
    /// The rule for a kind of change on a subscription whose current cycle is `code`: the
    /// first rule that names the cycle (or its class), else the first for any cycle.
    pub fn rule(&self, kind: ChangeKind, code: &str, length: CycleLength) -> Option<&Rule> {
        let for_kind = || self.rules.iter().filter(move |r| r.kind == kind);
        for_kind()
            .find(|r| r.scope != CycleScope::Any && r.scope.matches(code, length))
            .or_else(|| for_kind().find(|r| r.scope == CycleScope::Any))
    }
}

pub const LICENCE_DOWNGRADE_MESSAGE: &str = "a licence cannot be moved to a lower plan directly: buy a licence of the \
     lower plan, reassign the user to it, then remove the old licence";

/// The built-in presets, one per source document (SPEC §4): `presets.toml`, in the catalog's
/// own policy format.
pub fn presets() -> Vec<Policy> {
    #[derive(Deserialize)]
    struct Presets {
        policies: Vec<RawPolicy>,
    }
    let file: Presets =
        toml::from_str(include_str!("presets.toml")).expect("presets.toml is valid TOML");
    file.policies
        .into_iter()
        .map(|p| policy_from_raw(p, &[]).expect("presets.toml holds valid policies"))
        .collect()
}

/// A custom policy as written in the catalog.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub name: String,
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub purge_modules_on_downgrade: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub kind: ChangeKind,
    #[serde(default)]
    pub cycles: Vec<String>,
    pub cycle_class: Option<String>,
    pub timing: Option<Timing>,
    pub method: Option<Method>,
    pub settle: Option<Settle>,
    #[serde(default)]
    pub credit: Vec<RawCreditStep>,
    #[serde(default)]
    pub forbidden: bool,
    pub message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCreditStep {
    pub from_day: i64,
    pub percent: String,
}

/// Validate custom policies; `cycles` are the catalog's cycle codes.
pub fn validate_policies(
    raw: Vec<RawPolicy>,
    cycles: &[String],
) -> Result<BTreeMap<String, Policy>, String> {
    let mut out: BTreeMap<String, Policy> =
        presets().into_iter().map(|p| (p.name.clone(), p)).collect();
    for p in raw {
        if out.contains_key(&p.name) {
            return Err(format!(
                "policies.{}: defined twice or redefines a preset",
                p.name
            ));
        }
        let policy = policy_from_raw(p, cycles)?;
        out.insert(policy.name.clone(), policy);
    }
    Ok(out)
}

/// One policy as the catalog (or `presets.toml`) writes it, checked; `cycles` are the
/// catalog's cycle codes a rule may name.
fn policy_from_raw(p: RawPolicy, cycles: &[String]) -> Result<Policy, String> {
    let mut rules = Vec::new();
    for (i, r) in p.rules.into_iter().enumerate() {
        let at = format!("policies.{}.rules[{i}] ({})", p.name, r.kind);
        let scope = match (r.cycles.is_empty(), r.cycle_class.as_deref()) {
            (true, None) => CycleScope::Any,
            (true, Some("annual")) => CycleScope::Annual,
            (true, Some("shorter_than_annual")) => CycleScope::ShorterThanAnnual,
            (true, Some(other)) => {
                return Err(format!(
                    "{at}: cycle_class {other:?} must be \"annual\" or \"shorter_than_annual\""
                ));
            }
            (false, None) => {
                if let Some(c) = r.cycles.iter().find(|c| !cycles.contains(c)) {
                    return Err(format!("{at}: unknown cycle {c:?}"));
                }
                CycleScope::Codes(r.cycles)
            }
            (false, Some(_)) => {
                return Err(format!("{at}: give `cycles` or `cycle_class`, not both"));
            }
        };
        if r.forbidden {
            rules.push(Rule {
                scope,
                forbidden: Some(
                    r.message
                        .unwrap_or_else(|| format!("policy {} forbids {}", p.name, r.kind)),
                ),
                ..Rule::new(r.kind, Timing::Immediate, Method::None, Settle::InvoiceNow)
            });
            continue;
        }
        let (Some(timing), Some(method), Some(settle)) = (r.timing, r.method, r.settle) else {
            return Err(format!(
                "{at}: needs timing, method and settle (or forbidden = true)"
            ));
        };
        if matches!(method, Method::RerateUsed | Method::Backdate) && !r.kind.is_cycle_change() {
            return Err(format!(
                "{at}: method {method:?} applies only to cycle changes"
            ));
        }
        if timing == Timing::EndOfPeriod && method != Method::None {
            return Err(format!(
                "{at}: an end_of_period change has no unused time left to prorate; use method = \"none\""
            ));
        }
        let mut credit = Vec::new();
        for (j, s) in r.credit.iter().enumerate() {
            let percent =
                parse_amount(&s.percent).map_err(|e| format!("{at}: credit[{j}]: {e}"))?;
            if percent.is_sign_negative() || percent > Decimal::ONE_HUNDRED {
                return Err(format!(
                    "{at}: credit[{j}]: percent must be between 0 and 100"
                ));
            }
            let expected_first = j == 0 && s.from_day != 0;
            let not_ascending = credit
                .last()
                .is_some_and(|l: &CreditStep| s.from_day <= l.from_day);
            if expected_first || not_ascending {
                return Err(format!(
                    "{at}: credit steps must start at from_day = 0 and ascend"
                ));
            }
            credit.push(CreditStep {
                from_day: s.from_day,
                percent,
            });
        }
        rules.push(Rule {
            kind: r.kind,
            scope,
            timing,
            method,
            settle,
            credit,
            forbidden: None,
        });
    }
    Ok(Policy {
        name: p.name,
        rules,
        purge_modules_on_downgrade: p.purge_modules_on_downgrade,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule_100_70() -> Vec<CreditStep> {
        vec![
            CreditStep {
                from_day: 0,
                percent: Decimal::ONE_HUNDRED,
            },
            CreditStep {
                from_day: 90,
                percent: Decimal::from(70),
            },
        ]
    }

    #[test]
    fn the_presets_file_holds_the_four_presets_as_the_sources_say() {
        let presets: BTreeMap<String, Policy> =
            presets().into_iter().map(|p| (p.name.clone(), p)).collect();
        let names: Vec<&str> = presets.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["deferred", "hybrid_70_30", "license", "term_recalc"]
        );
        let hybrid = &presets["hybrid_70_30"];
        let annual: Vec<&Rule> = hybrid
            .rules
            .iter()
            .filter(|r| r.scope == CycleScope::Annual)
            .collect();
        assert_eq!(annual.len(), 2);
        assert!(annual.iter().all(|r| r.credit == schedule_100_70()));
        let forbidden = presets["license"]
            .rules
            .iter()
            .find_map(|r| r.forbidden.as_deref());
        assert_eq!(forbidden, Some(LICENCE_DOWNGRADE_MESSAGE));
        assert!(presets["deferred"].purge_modules_on_downgrade);
        assert_eq!(presets["deferred"].rules.len(), ChangeKind::ALL.len());
    }

    #[test]
    fn names_are_the_serde_names() {
        let json = |v: serde_json::Value| v.as_str().unwrap().to_string();
        for t in [Timing::Immediate, Timing::EndOfPeriod] {
            assert_eq!(t.as_str(), json(serde_json::json!(t)));
        }
        for m in [
            Method::Prorate,
            Method::RerateUsed,
            Method::Backdate,
            Method::None,
        ] {
            assert_eq!(m.as_str(), json(serde_json::json!(m)));
        }
        for s in [Settle::InvoiceNow, Settle::NextInvoice, Settle::Balance] {
            assert_eq!(s.as_str(), json(serde_json::json!(s)));
        }
    }

    #[test]
    fn hybrid_picks_the_annual_rule_and_its_schedule() {
        let hybrid = presets()
            .into_iter()
            .find(|p| p.name == "hybrid_70_30")
            .unwrap();
        let annual = hybrid
            .rule(ChangeKind::TierDowngrade, "annual", CycleLength::Months(12))
            .unwrap();
        assert_eq!(
            (annual.timing, annual.settle),
            (Timing::Immediate, Settle::Balance)
        );
        assert_eq!(annual.credit_percent(89), Decimal::ONE_HUNDRED);
        assert_eq!(annual.credit_percent(90), Decimal::from(70));
        let monthly = hybrid
            .rule(ChangeKind::TierDowngrade, "monthly", CycleLength::Months(1))
            .unwrap();
        assert_eq!(monthly.timing, Timing::EndOfPeriod);
    }

    #[test]
    fn custom_policies_are_validated() {
        let parse = |src: &str| {
            #[derive(Deserialize)]
            struct W {
                policies: Vec<RawPolicy>,
            }
            let w: W = toml::from_str(src).map_err(|e| e.to_string())?;
            validate_policies(w.policies, &["monthly".into()])
        };
        let ok = parse(
            "[[policies]]\nname = \"p\"\n[[policies.rules]]\nkind = \"tier_upgrade\"\ntiming = \"immediate\"\n\
             method = \"prorate\"\nsettle = \"balance\"\ncredit = [{from_day = 0, percent = \"100\"}, {from_day = 30, percent = \"50\"}]\n",
        )
        .unwrap();
        assert_eq!(ok["p"].rules[0].credit_percent(31), Decimal::from(50));
        let e = parse("[[policies]]\nname = \"p\"\n[[policies.rules]]\nkind = \"tier_upgrade\"\ntiming = \"immediate\"\nmethod = \"backdate\"\nsettle = \"balance\"\n").unwrap_err();
        assert!(e.contains("only to cycle changes"), "{e}");
        let e = parse("[[policies]]\nname = \"deferred\"\nrules = []\n").unwrap_err();
        assert!(e.contains("redefines a preset"), "{e}");
    }
}
