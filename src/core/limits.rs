//! The documented caps on what billrun accepts: sizes that keep every amount computable in
//! `Decimal` and every input bounded in memory. Checked where data enters — import, scenarios,
//! `change`, `licences buy`, the catalog and the configuration — each refusal one clear line.
//!
//! Why these numbers: an amount is below 10^15 (`money::parse_amount`), a quantity at most
//! 10^6, an item's seats at most 10^5, a subscription at most 100 items and an account at
//! most 10 tax rates of at most 100%. One document is then at most 10^15 × 10^6 × 100 items ×
//! (1 + 10 × 100%) ≈ 10^24, well inside `Decimal`'s 7.9 × 10^28; sums over many documents
//! (balances, run and batch totals) are checked anyway and park or refuse instead of
//! overflowing.

/// Quantity of one item of a plan that is not per seat.
pub const MAX_QUANTITY: u32 = 1_000_000;
/// Seats (licences) of one per-seat item: each seat is a licence row.
pub const MAX_SEATS: u32 = 100_000;
/// Items on one subscription.
pub const MAX_ITEMS_PER_SUBSCRIPTION: usize = 100;
/// Tax rates on one account.
pub const MAX_TAX_RATES_PER_ACCOUNT: usize = 10;
/// Characters of an account's name.
pub const MAX_NAME_CHARS: usize = 200;
/// Input files: the configuration (see `config::MAX_CONFIG_BYTES`), the catalog, a scenario
/// and an import file.
pub const MAX_CATALOG_BYTES: u64 = 16 << 20;
pub const MAX_SCENARIO_BYTES: u64 = 16 << 20;
pub const MAX_IMPORT_BYTES: u64 = 512 << 20;

/// Refuse a quantity over its cap: seats for a per-seat plan, units otherwise.
pub fn check_quantity(plan: &str, per_seat: bool, quantity: u32) -> Result<(), String> {
    let (cap, what) = if per_seat {
        (MAX_SEATS, "seats")
    } else {
        (MAX_QUANTITY, "units")
    };
    if quantity > cap {
        return Err(format!(
            "plan {plan:?}: {quantity} {what} is over the limit of {cap} per item"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_over_the_caps_are_refused() {
        assert!(check_quantity("seat", true, MAX_SEATS).is_ok());
        let e = check_quantity("seat", true, 4_000_000_000).unwrap_err();
        assert!(
            e.contains("4000000000 seats") && e.contains("100000"),
            "{e}"
        );
        assert!(check_quantity("unit", false, MAX_QUANTITY).is_ok());
        assert!(check_quantity("unit", false, MAX_QUANTITY + 1).is_err());
    }
}
