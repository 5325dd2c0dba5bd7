//! Daily check-in: configuration, local days in the app's time zone, streaks and rewards.

use serde::{Deserialize, Serialize};
use tally_kernel::FieldErrors;
use time::{Date, Duration, OffsetDateTime, UtcOffset};

use crate::error::gather;
use crate::plan::{Plan, plan_movement};
use crate::{AccountRef, AccountView, LedgerError, MAX_CREDITS, MovementKind, TxnType};

const MAX_REWARDS: usize = 366;
const MAX_EXPIRE_DAYS: u32 = 3_650;

/// Per-app check-in settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinConfig {
    /// Whether users may check in.
    pub enabled: bool,
    /// Reward for streak day 1, 2, …; the last value repeats.
    pub rewards: Vec<i64>,
    /// IANA time zone that decides where a day starts.
    pub timezone: String,
    /// Days until check-in credits expire; `None` = never.
    pub credits_expire_days: Option<u32>,
}

impl Default for CheckinConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rewards: vec![10],
            timezone: "UTC".to_owned(),
            credits_expire_days: None,
        }
    }
}

impl CheckinConfig {
    /// Checks every field; the error names each offending one.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let mut p = FieldErrors::default();
        if self.rewards.is_empty() || self.rewards.len() > MAX_REWARDS {
            p.add("rewards", format!("must hold 1-{MAX_REWARDS} values"));
        } else {
            p.check(
                self.rewards.iter().all(|&r| (1..=MAX_CREDITS).contains(&r)),
                "rewards",
                format!("every reward must be between 1 and {MAX_CREDITS}"),
            );
        }
        gather(&mut p, zone(&self.timezone).map(drop))?;
        p.check(
            self.credits_expire_days
                .is_none_or(|days| (1..=MAX_EXPIRE_DAYS).contains(&days)),
            "credits_expire_days",
            format!("must be between 1 and {MAX_EXPIRE_DAYS}, or null"),
        );
        Ok(p.finish()?)
    }

    /// The reward for a given streak day (1-based).
    pub fn reward_for(&self, streak: i64) -> i64 {
        let idx = usize::try_from(streak.max(1) - 1)
            .unwrap_or(usize::MAX)
            .min(self.rewards.len().saturating_sub(1));
        self.rewards.get(idx).copied().unwrap_or(0)
    }

    /// The local day a check-in at `now` claims; refused while check-ins are switched off.
    pub fn claimable_day(&self, now: OffsetDateTime) -> Result<Date, LedgerError> {
        if !self.enabled {
            return Err(LedgerError::CheckinDisabled);
        }
        self.local_day(now)
    }

    /// The local calendar day `now` falls on.
    pub fn local_day(&self, now: OffsetDateTime) -> Result<Date, LedgerError> {
        local_day_in(&self.timezone, now)
    }

    /// The UTC instant at which local day `day` begins.
    pub fn day_start(&self, day: Date) -> Result<OffsetDateTime, LedgerError> {
        day_start_in(&self.timezone, day)
    }

    /// When check-in credits granted at `now` expire.
    pub fn expiry_for(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.credits_expire_days
            .map(|d| now + Duration::days(i64::from(d)))
    }
}

/// The calendar day `now` falls on in the IANA time zone `timezone`.
pub fn local_day_in(timezone: &str, now: OffsetDateTime) -> Result<Date, LedgerError> {
    Ok(now.to_offset(offset_at(&zone(timezone)?, now)).date())
}

/// The UTC instant at which `day` begins in the IANA time zone `timezone`.
pub fn day_start_in(timezone: &str, day: Date) -> Result<OffsetDateTime, LedgerError> {
    let tz = zone(timezone)?;
    let midnight = day.midnight();
    // Guess with the offset at UTC midnight, then correct once with the offset in force at the
    // guess (enough for every real zone, whose offsets change at most once a night).
    let guess = midnight.assume_utc();
    let first = midnight.assume_offset(offset_at(&tz, guess));
    Ok(midnight
        .assume_offset(offset_at(&tz, first))
        .to_offset(UtcOffset::UTC))
}

fn zone(name: &str) -> Result<jiff::tz::TimeZone, LedgerError> {
    jiff::tz::TimeZone::get(name)
        .map_err(|_| LedgerError::invalid("timezone", format!("unknown IANA time zone '{name}'")))
}

fn offset_at(tz: &jiff::tz::TimeZone, at: OffsetDateTime) -> UtcOffset {
    let seconds = jiff::Timestamp::from_second(at.unix_timestamp())
        .map(|ts| tz.to_offset(ts).seconds())
        .unwrap_or(0);
    UtcOffset::from_whole_seconds(seconds).unwrap_or(UtcOffset::UTC)
}

/// A check-in as the repository applies it. The repository reads the app's configuration in the
/// check-in's own transaction and claims [`CheckinConfig::claimable_day`] under it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckinRequest {
    /// Who checks in.
    pub account: AccountRef,
    /// The request instant.
    pub now: OffsetDateTime,
}

/// A stored check-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckinRecord {
    /// Local day.
    pub day: Date,
    /// Consecutive local days ending with this one.
    pub streak: i64,
    /// Credits awarded.
    pub awarded: i64,
    /// Balance right after the award.
    pub balance_after: i64,
}

/// What `POST /checkin` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckinOutcome {
    /// Credits awarded.
    pub awarded: i64,
    /// Balance after the award.
    pub balance: i64,
    /// Streak including today.
    pub streak: i64,
    /// Local day claimed.
    pub day: Date,
    /// Start of the next local day, UTC.
    pub next_checkin_at: OffsetDateTime,
}

/// What `GET /checkin/status` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckinStatus {
    /// Whether today's check-in is done.
    pub checked_in_today: bool,
    /// The running streak (0 when broken).
    pub streak: i64,
    /// Reward of the next check-in.
    pub next_reward: i64,
    /// Today, local.
    pub day: Date,
    /// When the next check-in is possible: now if not yet done today, else the next local day.
    pub next_checkin_at: OffsetDateTime,
    /// Whether check-in is enabled.
    pub enabled: bool,
}

/// Streak of a check-in on `day` given the user's latest earlier check-in.
pub fn streak_for(day: Date, previous: Option<&CheckinRecord>) -> i64 {
    match previous {
        Some(p) if day.previous_day() == Some(p.day) => p.streak + 1,
        _ => 1,
    }
}

/// A check-in as planned: the day it claims, its streak, its reward and the reward's grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckinPlan {
    /// Local day claimed.
    pub day: Date,
    /// Streak including this day.
    pub streak: i64,
    /// Credits awarded.
    pub reward: i64,
    /// The reward's grant, planned on the account's state.
    pub plan: Plan,
}

impl CheckinPlan {
    /// The description of the reward's transaction.
    pub fn description(&self) -> String {
        format!("Daily check-in (streak day {})", self.streak)
    }
}

/// Plans a check-in at `now` under `config`, given the user's latest check-in and the account's
/// state: the local day it claims, refused while check-ins are switched off and when `latest`
/// already claimed that day; the streak and reward it earns; and the reward's grant
/// ([`plan_movement`]). The store keeps one check-in per day regardless (a unique day per user):
/// `latest` is the latest day stored, and a day claimed out of order is still refused there.
pub fn plan_checkin(
    config: &CheckinConfig,
    latest: Option<&CheckinRecord>,
    state: &AccountView,
    now: OffsetDateTime,
) -> Result<CheckinPlan, LedgerError> {
    let day = config.claimable_day(now)?;
    if latest.is_some_and(|l| l.day == day) {
        return Err(LedgerError::AlreadyCheckedIn {
            day: day.to_string(),
        });
    }
    let streak = streak_for(day, latest);
    let reward = config.reward_for(streak);
    let kind = MovementKind::Grant {
        txn_type: TxnType::Checkin,
        credits: reward,
        expires_at: config.expiry_for(now),
    };
    let plan = plan_movement(state, &kind, now)?;
    Ok(CheckinPlan {
        day,
        streak,
        reward,
        plan,
    })
}

/// Status at `now` given the user's latest check-in.
pub fn status(
    config: &CheckinConfig,
    latest: Option<&CheckinRecord>,
    now: OffsetDateTime,
) -> Result<CheckinStatus, LedgerError> {
    let today = config.local_day(now)?;
    let (checked_in_today, streak) = match latest {
        Some(l) if l.day == today => (true, l.streak),
        Some(l) if today.previous_day() == Some(l.day) => (false, l.streak),
        _ => (false, 0),
    };
    let next_checkin_at = if checked_in_today {
        config.day_start(today.next_day().unwrap_or(today))?
    } else {
        now
    };
    Ok(CheckinStatus {
        checked_in_today,
        streak,
        next_reward: config.reward_for(streak + 1),
        day: today,
        next_checkin_at,
        enabled: config.enabled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    fn cfg(tz: &str, rewards: Vec<i64>) -> CheckinConfig {
        CheckinConfig {
            timezone: tz.into(),
            rewards,
            ..CheckinConfig::default()
        }
    }

    #[test]
    fn reward_table_cycles_on_its_last_value() {
        let c = cfg("UTC", vec![5, 10, 20]);
        let got: Vec<i64> = (1..=5).map(|s| c.reward_for(s)).collect();
        assert_eq!(got, vec![5, 10, 20, 20, 20]);
    }

    #[test]
    fn local_day_follows_the_zone() {
        let t = datetime!(2026-03-01 23:30 UTC);
        assert_eq!(
            cfg("UTC", vec![1]).local_day(t).unwrap(),
            date!(2026 - 03 - 01)
        );
        assert_eq!(
            cfg("Asia/Tokyo", vec![1]).local_day(t).unwrap(),
            date!(2026 - 03 - 02)
        );
        assert_eq!(
            cfg("America/Los_Angeles", vec![1]).local_day(t).unwrap(),
            date!(2026 - 03 - 01)
        );
    }

    #[test]
    fn day_start_handles_dst() {
        // Berlin switches to summer time on 2026-03-29; midnight is still +01:00 that night.
        let c = cfg("Europe/Berlin", vec![1]);
        assert_eq!(
            c.day_start(date!(2026 - 03 - 29)).unwrap(),
            datetime!(2026-03-28 23:00 UTC)
        );
        assert_eq!(
            c.day_start(date!(2026 - 03 - 30)).unwrap(),
            datetime!(2026-03-29 22:00 UTC)
        );
    }

    #[test]
    fn streaks_need_consecutive_days() {
        let prev = CheckinRecord {
            day: date!(2026 - 01 - 10),
            streak: 4,
            awarded: 1,
            balance_after: 1,
        };
        assert_eq!(streak_for(date!(2026 - 01 - 11), Some(&prev)), 5);
        assert_eq!(streak_for(date!(2026 - 01 - 12), Some(&prev)), 1);
        assert_eq!(streak_for(date!(2026 - 01 - 11), None), 1);
    }

    fn empty() -> AccountView {
        AccountView {
            balance: 0,
            held: 0,
            lots: vec![],
            last_instant_partial: true,
            holds: vec![],
        }
    }

    #[test]
    fn a_check_in_claims_the_local_day_once_and_earns_its_streaks_reward() {
        let c = CheckinConfig {
            credits_expire_days: Some(7),
            ..cfg("Asia/Tokyo", vec![5, 10, 20])
        };
        let now = datetime!(2026-03-01 23:30 UTC); // 2 March in Tokyo
        let yesterday = CheckinRecord {
            day: date!(2026 - 03 - 01),
            streak: 1,
            awarded: 5,
            balance_after: 5,
        };
        let got = plan_checkin(&c, Some(&yesterday), &empty(), now).unwrap();
        assert_eq!(
            (got.day, got.streak, got.reward),
            (date!(2026 - 03 - 02), 2, 10)
        );
        assert_eq!(got.description(), "Daily check-in (streak day 2)");
        let lot = got.plan.new_lot.expect("the reward's lot");
        assert_eq!((lot.amount, lot.source), (10, TxnType::Checkin));
        assert_eq!(lot.expires_at, Some(now + Duration::days(7)));
        assert_eq!(got.plan.balance, 10);

        let today = CheckinRecord {
            day: date!(2026 - 03 - 02),
            ..yesterday
        };
        assert!(matches!(
            plan_checkin(&c, Some(&today), &empty(), now),
            Err(LedgerError::AlreadyCheckedIn { day }) if day == "2026-03-02"
        ));
        let off = CheckinConfig {
            enabled: false,
            ..c
        };
        assert!(matches!(
            plan_checkin(&off, None, &empty(), now),
            Err(LedgerError::CheckinDisabled)
        ));
    }

    #[test]
    fn validation_rejects_bad_configs() {
        assert!(cfg("Mars/Olympus", vec![1]).validate().is_err());
        assert!(cfg("UTC", vec![]).validate().is_err());
        assert!(cfg("UTC", vec![0]).validate().is_err());
        let c = CheckinConfig {
            credits_expire_days: Some(0),
            ..CheckinConfig::default()
        };
        assert!(c.validate().is_err());
        assert!(CheckinConfig::default().validate().is_ok());
    }
}
