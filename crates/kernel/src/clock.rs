//! The time source, injectable so that expiry, streak and billing-period rules can be tested
//! without sleeping.

use std::sync::Mutex;
use time::{Duration, OffsetDateTime};

/// Where every domain reads "now" from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant, in UTC, truncated to microseconds (what both databases store).
    fn now(&self) -> OffsetDateTime;
}

/// Truncates to whole microseconds so that values round-trip through either database unchanged.
pub fn truncate_micros(t: OffsetDateTime) -> OffsetDateTime {
    let micros = t.microsecond();
    t.replace_nanosecond(micros * 1_000).unwrap_or(t)
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        truncate_micros(OffsetDateTime::now_utc())
    }
}

/// A clock that only moves when told to; for tests and simulations.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<OffsetDateTime>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            now: Mutex::new(truncate_micros(start)),
        }
    }

    /// Moves the clock forward (or backward, with a negative duration).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now = truncate_micros(*now + by);
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: OffsetDateTime) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now = truncate_micros(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}
