//! The injected clock. The billing core never reads time; the shell asks a [`Clock`], which is
//! the system clock in production and a hand-moved one in the simulator and in tests.

use chrono::{DateTime, NaiveDate, Utc};
use std::sync::Mutex;

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn at(t: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(t))
    }
    pub fn at_date(d: NaiveDate) -> Self {
        Self::at(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
    }
    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }
    pub fn set_date(&self, d: NaiveDate) {
        self.set(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Today in a billing timezone: the date a change made now is dated.
pub fn today_in(clock: &dyn Clock, timezone: &str) -> NaiveDate {
    today_at(clock.now(), timezone)
}

/// The date of an instant in a billing timezone (zones are validated when accounts are
/// imported; an unknown one would read as UTC).
pub fn today_at(t: DateTime<Utc>, timezone: &str) -> NaiveDate {
    let tz: chrono_tz::Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
    t.with_timezone(&tz).date_naive()
}
