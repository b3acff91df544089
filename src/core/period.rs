//! Billing periods: cycles, boundaries and the day arithmetic of proration.
//!
//! A period is a half-open range of dates `[start, end)`; boundaries are dates meaning 00:00 in
//! the account's billing timezone, so the core never needs a time of day. Calendar-month
//! cycles count every boundary from the anchor (`anchor + k months`, clamped to the month's
//! last day), never from the previous boundary, so Jan 31 → Feb 28 → Mar 31 does not drift.

use chrono::{Datelike, Months, NaiveDate};
use rust_decimal::Decimal;
use serde::Serialize;
use std::fmt;

/// The length of a billing cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CycleLength {
    Months(u32),
    Days(u32),
}

impl CycleLength {
    /// The k-th boundary counted from the anchor (k = 0 is the anchor itself).
    pub fn boundary(&self, anchor: NaiveDate, k: u32) -> NaiveDate {
        match *self {
            // chrono clamps to the last day of the target month.
            CycleLength::Months(n) => n
                .checked_mul(k)
                .and_then(|m| anchor.checked_add_months(Months::new(m)))
                .unwrap_or(NaiveDate::MAX),
            CycleLength::Days(n) => anchor
                .checked_add_days(chrono::Days::new(u64::from(n) * u64::from(k)))
                .unwrap_or(NaiveDate::MAX),
        }
    }

    /// The period that starts at `start` (a boundary of `anchor`, or `anchor` itself) and ends
    /// at the first boundary after it.
    pub fn period_from(&self, anchor: NaiveDate, start: NaiveDate) -> Period {
        let guess = match *self {
            CycleLength::Months(n) => {
                let months = (start.year() - anchor.year()) * 12 + start.month() as i32
                    - anchor.month() as i32;
                (months.max(0) as u32) / n.max(1)
            }
            CycleLength::Days(n) => {
                ((start - anchor).num_days().max(0) as u64 / u64::from(n.max(1))) as u32
            }
        };
        // The guess is at most one step short; walk forward to the first boundary after start.
        let mut k = guess.saturating_sub(1);
        loop {
            let b = self.boundary(anchor, k);
            // Boundaries stop at the end of chrono's calendar, and so does the last period.
            if b > start || b == NaiveDate::MAX {
                return Period { start, end: b };
            }
            k += 1;
        }
    }

    /// Whole cycles that fit in `[from, to)` and the days left over after them.
    pub fn whole_periods_between(&self, from: NaiveDate, to: NaiveDate) -> (u32, NaiveDate) {
        let mut k = 0;
        // A boundary equal to the previous one is the end of the calendar: no more cycles.
        while self.boundary(from, k + 1) <= to
            && self.boundary(from, k + 1) > self.boundary(from, k)
        {
            k += 1;
        }
        (k, self.boundary(from, k))
    }

    /// Ordering of cycle lengths for classifying a cycle change (longer / shorter). Months are
    /// compared as 30 days, the convention the day cycles of the catalog follow.
    pub fn approx_days(&self) -> u32 {
        match *self {
            CycleLength::Months(n) => n * 30,
            CycleLength::Days(n) => n,
        }
    }
}

impl fmt::Display for CycleLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CycleLength::Months(n) => write!(f, "{n} month(s)"),
            CycleLength::Days(n) => write!(f, "{n} day(s)"),
        }
    }
}

/// A billing period `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Period {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

impl Period {
    pub fn days(&self) -> i64 {
        (self.end - self.start).num_days()
    }

    pub fn contains(&self, d: NaiveDate) -> bool {
        self.start <= d && d < self.end
    }

    /// The share of the period left from `at` on (day `at` belongs to what follows):
    /// remaining / total, exact.
    pub fn remaining_share(&self, at: NaiveDate) -> ProrationShare {
        // A period that ends before it starts has no days to share.
        let total = self.days().max(0);
        let elapsed = (at - self.start).num_days().clamp(0, total);
        ProrationShare {
            elapsed,
            total,
            remaining: total - elapsed,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {}", self.start, self.end)
    }
}

/// Days of a period split at a change date; the share stays an exact fraction until a line
/// amount is computed with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProrationShare {
    pub elapsed: i64,
    pub total: i64,
    pub remaining: i64,
}

impl ProrationShare {
    /// `amount × remaining / total`, multiplied before dividing so no digit is lost early.
    pub fn of_remaining(&self, amount: Decimal) -> Decimal {
        if self.total == 0 {
            return Decimal::ZERO;
        }
        amount * Decimal::from(self.remaining) / Decimal::from(self.total)
    }

    /// `amount × elapsed / total`.
    pub fn of_elapsed(&self, amount: Decimal) -> Decimal {
        if self.total == 0 {
            return Decimal::ZERO;
        }
        amount * Decimal::from(self.elapsed) / Decimal::from(self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn month_end_anchor_clamps_without_drift() {
        let m = CycleLength::Months(1);
        let anchor = d("2026-01-31");
        let got: Vec<String> = (0..5).map(|k| m.boundary(anchor, k).to_string()).collect();
        assert_eq!(
            got,
            [
                "2026-01-31",
                "2026-02-28",
                "2026-03-31",
                "2026-04-30",
                "2026-05-31"
            ]
        );
        assert_eq!(m.period_from(anchor, d("2026-02-28")).end, d("2026-03-31"));
        assert_eq!(m.period_from(anchor, d("2026-03-31")).end, d("2026-04-30"));
    }

    #[test]
    fn leap_day_anchor_and_day_cycles() {
        let y = CycleLength::Months(12);
        assert_eq!(y.boundary(d("2028-02-29"), 1), d("2029-02-28"));
        assert_eq!(y.boundary(d("2028-02-29"), 4), d("2032-02-29"));
        let thirty = CycleLength::Days(30);
        assert_eq!(
            thirty.period_from(d("2026-01-01"), d("2026-01-31")).end,
            d("2026-03-02")
        );
    }

    #[test]
    fn shares_are_exact() {
        let p = Period {
            start: d("2026-01-01"),
            end: d("2027-01-01"),
        };
        let s = p.remaining_share(d("2026-03-02"));
        assert_eq!((s.elapsed, s.remaining, s.total), (60, 305, 365));
        let credit = s.of_remaining(Decimal::from(990));
        assert_eq!(credit.round_dp(2).to_string(), "827.26");
    }
}
