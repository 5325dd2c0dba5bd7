//! When to retry a failed delivery, and when to give up on an endpoint.
//!
//! The first attempt is immediate; after each failure the next one waits a step of
//! [`SCHEDULE`] (30 s up to 20 h, about 2.7 days in all) stretched or shrunk by up to 20 % of
//! jitter so that retries of many messages do not arrive at a recovering receiver together.

use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;

/// The base wait after the 1st, 2nd, ... failed attempt.
pub const SCHEDULE: [Duration; 11] = [
    Duration::from_secs(30),
    Duration::from_secs(2 * MINUTE),
    Duration::from_secs(10 * MINUTE),
    Duration::from_secs(30 * MINUTE),
    Duration::from_secs(HOUR),
    Duration::from_secs(2 * HOUR),
    Duration::from_secs(4 * HOUR),
    Duration::from_secs(8 * HOUR),
    Duration::from_secs(12 * HOUR),
    Duration::from_secs(16 * HOUR),
    Duration::from_secs(20 * HOUR),
];

/// How many times one message is attempted (the immediate one plus one per [`SCHEDULE`] step).
pub const MAX_ATTEMPTS: u32 = SCHEDULE.len() as u32 + 1;

/// An endpoint whose deliveries have failed continuously for this long is disabled.
pub const DISABLE_AFTER: Duration = Duration::from_secs(3 * 24 * HOUR);

/// The largest share by which jitter stretches or shrinks a wait.
pub const MAX_JITTER: f64 = 0.2;

/// The `jitter` argument of [`next_delay`] that leaves the base wait unchanged.
pub const NO_JITTER: f64 = 0.5;

/// The wait before the next attempt, given how many attempts have been made so far; `None` once
/// [`MAX_ATTEMPTS`] is reached. `jitter` is a uniform sample in `0..=1` (out-of-range values are
/// clamped); it scales the base wait linearly from −20 % (at 0) to +20 % (at 1), with
/// [`NO_JITTER`] giving the base wait. Before the first attempt (`attempts_made == 0`) there is
/// no wait.
pub fn next_delay(attempts_made: u32, jitter: f64) -> Option<Duration> {
    let Some(step) = attempts_made.checked_sub(1) else {
        return Some(Duration::ZERO);
    };
    let base = *SCHEDULE.get(usize::try_from(step).ok()?)?;
    let jitter = if jitter.is_nan() {
        NO_JITTER
    } else {
        jitter.clamp(0.0, 1.0)
    };
    let factor = 1.0 + MAX_JITTER * (2.0 * jitter - 1.0);
    Some(base.mul_f64(factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: f64 = 24.0 * 3600.0;

    fn total(jitter: f64) -> Duration {
        (1..MAX_ATTEMPTS)
            .map(|a| next_delay(a, jitter).unwrap())
            .sum()
    }

    #[test]
    fn first_attempt_is_immediate() {
        assert_eq!(next_delay(0, 0.0), Some(Duration::ZERO));
        assert_eq!(next_delay(0, 1.0), Some(Duration::ZERO));
    }

    #[test]
    fn base_schedule_without_jitter() {
        assert_eq!(next_delay(1, NO_JITTER), Some(Duration::from_secs(30)));
        assert_eq!(next_delay(2, NO_JITTER), Some(Duration::from_secs(120)));
        assert_eq!(
            next_delay(MAX_ATTEMPTS - 1, NO_JITTER),
            Some(Duration::from_secs(20 * 3600))
        );
    }

    #[test]
    fn monotone_without_jitter() {
        let delays: Vec<_> = (0..MAX_ATTEMPTS)
            .map(|a| next_delay(a, NO_JITTER).unwrap())
            .collect();
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
    }

    #[test]
    fn total_is_about_three_days() {
        let days = total(NO_JITTER).as_secs_f64() / DAY;
        assert!((2.5..=3.5).contains(&days), "{days} days");
        assert!(total(NO_JITTER) < DISABLE_AFTER);
        assert_eq!(DISABLE_AFTER, Duration::from_secs(3 * 24 * 3600));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for attempt in 1..MAX_ATTEMPTS {
            let base = next_delay(attempt, NO_JITTER).unwrap().as_secs_f64();
            for jitter in [0.0, 0.1, 0.37, 0.5, 0.9, 1.0] {
                let d = next_delay(attempt, jitter).unwrap().as_secs_f64();
                assert!(
                    d >= base * 0.8 - 1e-6 && d <= base * 1.2 + 1e-6,
                    "{attempt} {jitter}"
                );
            }
        }
        let low = total(0.0).as_secs_f64();
        let high = total(1.0).as_secs_f64();
        let mid = total(NO_JITTER).as_secs_f64();
        assert!((low - mid * 0.8).abs() < 1e-3 && (high - mid * 1.2).abs() < 1e-3);
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        assert_eq!(next_delay(1, -5.0), next_delay(1, 0.0));
        assert_eq!(next_delay(1, 7.0), next_delay(1, 1.0));
        assert_eq!(next_delay(1, f64::NAN), next_delay(1, NO_JITTER));
        assert_eq!(next_delay(1, f64::INFINITY), next_delay(1, 1.0));
    }

    #[test]
    fn none_at_the_bound() {
        assert!(next_delay(MAX_ATTEMPTS - 1, 0.5).is_some());
        assert_eq!(next_delay(MAX_ATTEMPTS, 0.5), None);
        assert_eq!(next_delay(MAX_ATTEMPTS + 1, 0.0), None);
        assert_eq!(next_delay(u32::MAX, 1.0), None);
        assert_eq!(MAX_ATTEMPTS, 12);
    }
}
