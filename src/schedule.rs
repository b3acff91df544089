//! When the daemon closes: a cron schedule (with seconds) read in the billing timezone.
//!
//! tokio-cron-scheduler's timezone jobs freeze the zone's UTC offset when created and fire an
//! hour off after a daylight-saving change, so the next firing is computed here, in local
//! time, with croner and chrono-tz ([`Schedule::next_after`]); the daemon hands it to the
//! scheduler as a one-shot job. The configuration uses the same parser to refuse a schedule
//! that never fires.

use chrono::{DateTime, NaiveDate, Utc};

/// A cron schedule (6 fields, with seconds) read in a billing timezone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl Schedule {
    pub fn parse(expr: &str, timezone: &str) -> Result<Schedule, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .build()
            .parse(expr)
            .map_err(|e| {
                format!("{expr:?} is not a cron schedule with seconds (e.g. \"0 0 0 * * *\"): {e}")
            })?;
        let tz = timezone
            .parse()
            .map_err(|_| format!("{timezone:?} is not an IANA time zone"))?;
        Ok(Schedule { cron, tz })
    }

    /// The first firing strictly after `t`, found in local time, so a daylight-saving change
    /// moves it with the wall clock. On the whole second: croner carries `t`'s fraction of a
    /// second over.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        use chrono::SubsecRound;
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc).trunc_subsecs(0))
    }

    /// The billing timezone it is read in.
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.tz
    }

    /// Today in the billing timezone: the `as_of` date of a run starting at `t`.
    pub fn today(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn midnight_follows_the_wall_clock_across_daylight_saving() {
        let s = Schedule::parse("0 0 0 * * *", "America/Toronto").unwrap();
        // Midnight EST is 05:00 UTC; DST starts 2026-03-08 02:00, then midnight is 04:00 UTC.
        assert_eq!(
            s.next_after(utc("2026-03-07T05:00:00Z")),
            Some(utc("2026-03-08T05:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-03-08T05:00:00Z")),
            Some(utc("2026-03-09T04:00:00Z"))
        );
        // And back: DST ends 2026-11-01 02:00.
        assert_eq!(
            s.next_after(utc("2026-11-01T04:00:00Z")),
            Some(utc("2026-11-02T05:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-03-09T04:00:00.25Z")),
            Some(utc("2026-03-10T04:00:00Z")),
            "on the whole second"
        );
        assert_eq!(
            s.today(utc("2026-03-09T03:59:00Z")),
            "2026-03-08".parse::<NaiveDate>().unwrap()
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(
            Schedule::parse("0 0 * * *", "UTC").is_err(),
            "five fields: seconds are required"
        );
        assert!(Schedule::parse("nonsense", "UTC").is_err());
        assert!(Schedule::parse("0 0 0 * * *", "Mars/Base").is_err());
    }
}
