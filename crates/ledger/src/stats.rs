//! Operators' statistics: what the database counts per UTC day, folded here into day, week or
//! month buckets. Read-only reporting over the ledger's and checkout's tables; it lives with the
//! ledger, the lowest domain crate, so that one query can serve the console's overview.
//! Days are UTC days.

use std::collections::BTreeMap;

use time::{Date, Duration};

use crate::{LedgerError, TxnType};

/// Most buckets one request may ask for.
pub const MAX_BUCKETS: i64 = 400;

tally_kernel::wire_enum! {
    /// How days are grouped.
    pub enum Bucket {
        /// One UTC day.
        Day = "day",
        /// Monday to Sunday.
        Week = "week",
        /// A calendar month.
        Month = "month",
    }
}

impl Bucket {
    /// The first day of the bucket holding `day`.
    pub fn start_of(self, day: Date) -> Date {
        match self {
            Self::Day => day,
            Self::Week => day - Duration::days(i64::from(day.weekday().number_days_from_monday())),
            Self::Month => day.replace_day(1).unwrap_or(day),
        }
    }

    /// The first day of the next bucket after the one starting at `start`.
    fn next(self, start: Date) -> Date {
        match self {
            Self::Day => start + Duration::days(1),
            Self::Week => start + Duration::weeks(1),
            Self::Month => {
                let (year, month) = match start.month().next() {
                    time::Month::January => (start.year() + 1, time::Month::January),
                    m => (start.year(), m),
                };
                Date::from_calendar_date(year, month, 1).unwrap_or(start)
            }
        }
    }
}

/// The days to report, both inclusive (UTC), and how to group them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    /// The app.
    pub app: String,
    /// First day.
    pub from: Date,
    /// Last day.
    pub to: Date,
    /// Grouping.
    pub bucket: Bucket,
}

impl StatsQuery {
    /// The same app and grouping over other days.
    pub fn over(&self, (from, to): (Date, Date)) -> Self {
        Self {
            from,
            to,
            ..self.clone()
        }
    }

    /// Checks the range: `from` not after `to`, at most [`MAX_BUCKETS`] buckets.
    pub fn validate(&self) -> Result<(), LedgerError> {
        if self.from > self.to {
            return Err(LedgerError::invalid("to", "must not be before from"));
        }
        let buckets = bucket_starts(self).len() as i64;
        if buckets > MAX_BUCKETS {
            return Err(LedgerError::invalid(
                "from",
                format!("the range holds {buckets} buckets; at most {MAX_BUCKETS}"),
            ));
        }
        Ok(())
    }
}

/// What the database counted, per UTC day (days without activity are absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DailyCounts {
    /// Per day and transaction type: credits in (sum of positive amounts) and out (sum of the
    /// negative amounts, as a positive number).
    pub credits: Vec<(Date, String, i64, i64)>,
    /// Per day and currency: payments received minus refunds, minor units.
    pub revenue: Vec<(Date, String, i64)>,
    /// Accounts opened per day.
    pub new_accounts: Vec<(Date, i64)>,
    /// Check-ins per day.
    pub checkins: Vec<(Date, i64)>,
    /// Subscriptions started per day.
    pub subscriptions_started: Vec<(Date, i64)>,
    /// Subscriptions active or trialing now.
    pub active_subscriptions: i64,
}

/// A day is finished once this long has passed since its end (UTC). Rows are stamped with the
/// writing node's clock, so a node whose clock runs a little behind may still write into the
/// day before; the margin keeps such rows out of a day already rolled up.
pub const SETTLE_MARGIN: Duration = Duration::hours(1);

/// Where each part of a range's figures comes from. A finished day's figures never change
/// (history rows, payments and refunds are stamped when written and never moved), so they are
/// counted once and kept in a rollup table; the days not yet finished are counted every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupPlan {
    /// Finished days of the range, read from the rollup (after rolling up the missing ones).
    pub settled: Option<(Date, Date)>,
    /// The range's unfinished days, counted from the tables.
    pub live: Option<(Date, Date)>,
}

/// Splits the query's days into finished ones and the rest, at `now`.
pub fn rollup_plan(query: &StatsQuery, now: time::OffsetDateTime) -> RollupPlan {
    let settled_before = (now.to_offset(time::UtcOffset::UTC) - SETTLE_MARGIN).date();
    let span = |from: Date, to: Date| (from <= to).then_some((from, to));
    RollupPlan {
        settled: settled_before
            .previous_day()
            .and_then(|last| span(query.from, query.to.min(last))),
        live: span(query.from.max(settled_before), query.to),
    }
}

/// The smallest span holding every day of `settled` not in `rolled_up`, if any: counted in one
/// pass, its days not yet rolled up are then stored.
pub fn missing_span(settled: (Date, Date), rolled_up: &[Date]) -> Option<(Date, Date)> {
    let missing = days_missing(settled, rolled_up);
    Some((*missing.first()?, *missing.last()?))
}

/// The days from `span.0` to `span.1` not in `rolled_up`, in order.
pub fn days_missing(span: (Date, Date), rolled_up: &[Date]) -> Vec<Date> {
    let known: std::collections::BTreeSet<Date> = rolled_up.iter().copied().collect();
    let mut day = span.0;
    let mut missing = Vec::new();
    while day <= span.1 {
        if !known.contains(&day) {
            missing.push(day);
        }
        let Some(next) = day.next_day() else { break };
        day = next;
    }
    missing
}

/// One row of the rollup: a figure of one finished day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    /// The day.
    pub day: Date,
    /// Which figure.
    pub metric: RollupMetric,
    /// The transaction type (credits) or currency (revenue); empty otherwise.
    pub dim: String,
    /// Credits in, the revenue, or the count.
    pub amount_in: i64,
    /// Credits out (credits only).
    pub amount_out: i64,
}

tally_kernel::wire_enum! {
    /// The figures the rollup keeps per day.
    pub enum RollupMetric {
        /// Marks the day as rolled up (present even for a day without activity).
        Day = "day",
        /// Credits in and out per transaction type.
        Credits = "credits",
        /// Payments minus refunds per currency.
        Revenue = "revenue",
        /// Accounts opened.
        Accounts = "accounts",
        /// Check-ins.
        Checkins = "checkins",
        /// Subscriptions started.
        Subscriptions = "subscriptions",
    }
}

impl DailyCounts {
    /// The rollup rows of `days` (each gets its marker row, active or not).
    pub fn rollup_rows(&self, days: &[Date]) -> Vec<RollupRow> {
        let wanted: std::collections::BTreeSet<Date> = days.iter().copied().collect();
        let row = |day: Date, metric, dim: &str, amount_in, amount_out| RollupRow {
            day,
            metric,
            dim: dim.to_owned(),
            amount_in,
            amount_out,
        };
        let mut rows: Vec<RollupRow> = wanted
            .iter()
            .map(|&day| row(day, RollupMetric::Day, "", 0, 0))
            .collect();
        for (day, txn_type, credits_in, credits_out) in &self.credits {
            rows.push(row(
                *day,
                RollupMetric::Credits,
                txn_type,
                *credits_in,
                *credits_out,
            ));
        }
        for (day, currency, amount) in &self.revenue {
            rows.push(row(*day, RollupMetric::Revenue, currency, *amount, 0));
        }
        for (metric, counts) in [
            (RollupMetric::Accounts, &self.new_accounts),
            (RollupMetric::Checkins, &self.checkins),
            (RollupMetric::Subscriptions, &self.subscriptions_started),
        ] {
            for (day, n) in counts {
                rows.push(row(*day, metric, "", *n, 0));
            }
        }
        rows.retain(|r| wanted.contains(&r.day));
        rows
    }

    /// Daily counts read back from rollup rows (`active_subscriptions` stays 0: it is today's
    /// figure, never rolled up).
    pub fn from_rollup(rows: Vec<RollupRow>) -> Self {
        let mut counts = Self::default();
        for r in rows {
            match r.metric {
                RollupMetric::Day => {}
                RollupMetric::Credits => {
                    counts
                        .credits
                        .push((r.day, r.dim, r.amount_in, r.amount_out));
                }
                RollupMetric::Revenue => counts.revenue.push((r.day, r.dim, r.amount_in)),
                RollupMetric::Accounts => counts.new_accounts.push((r.day, r.amount_in)),
                RollupMetric::Checkins => counts.checkins.push((r.day, r.amount_in)),
                RollupMetric::Subscriptions => {
                    counts.subscriptions_started.push((r.day, r.amount_in));
                }
            }
        }
        counts
    }

    /// Both sets of days' counts together; `active_subscriptions` is `other`'s when set.
    pub fn merge(mut self, other: Self) -> Self {
        self.credits.extend(other.credits);
        self.revenue.extend(other.revenue);
        self.new_accounts.extend(other.new_accounts);
        self.checkins.extend(other.checkins);
        self.subscriptions_started
            .extend(other.subscriptions_started);
        self.active_subscriptions = self.active_subscriptions.max(other.active_subscriptions);
        self
    }
}

/// Credits moved in one bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreditFigures {
    /// Every credit granted (positive movements of any type).
    pub granted: i64,
    /// Credits spent: negative movements other than expiry and refund clawbacks.
    pub spent: i64,
    /// Credits that expired.
    pub expired: i64,
    /// Credits taken back after refunds.
    pub clawed_back: i64,
    /// Net credits per transaction type.
    pub by_type: BTreeMap<String, i64>,
}

/// One bucket of statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsBucket {
    /// The bucket's first day within the range.
    pub start: Date,
    /// Credits moved.
    pub credits: CreditFigures,
    /// Payments minus refunds per currency, minor units.
    pub revenue: BTreeMap<String, i64>,
    /// Accounts opened.
    pub new_accounts: i64,
    /// Check-ins.
    pub checkins: i64,
    /// Subscriptions started.
    pub subscriptions_started: i64,
}

/// The statistics of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Every bucket of the range, empty ones included, oldest first.
    pub buckets: Vec<StatsBucket>,
    /// Subscriptions active or trialing now.
    pub active_subscriptions: i64,
}

/// Which count of a bucket a list of daily counts adds to.
type CountField = fn(&mut StatsBucket) -> &mut i64;

/// The start of every bucket of the range, clamped to `from`.
fn bucket_starts(query: &StatsQuery) -> Vec<Date> {
    let mut starts = vec![query.from];
    let mut next = query.bucket.next(query.bucket.start_of(query.from));
    // Bounded: one more than the most buckets a valid range holds.
    while next <= query.to && starts.len() as i64 <= MAX_BUCKETS {
        starts.push(next);
        next = query.bucket.next(next);
    }
    starts
}

/// Folds the daily counts into the query's buckets. Days outside the range are ignored.
pub fn fold(query: &StatsQuery, counts: DailyCounts) -> Stats {
    let starts = bucket_starts(query);
    let mut buckets: Vec<StatsBucket> = starts
        .iter()
        .map(|&start| StatsBucket {
            start,
            credits: CreditFigures::default(),
            revenue: BTreeMap::new(),
            new_accounts: 0,
            checkins: 0,
            subscriptions_started: 0,
        })
        .collect();
    let index = |day: Date| -> Option<usize> {
        if day < query.from || day > query.to {
            return None;
        }
        Some(starts.partition_point(|&s| s <= day) - 1)
    };
    for (day, txn_type, credits_in, credits_out) in counts.credits {
        let Some(b) = index(day).map(|i| &mut buckets[i].credits) else {
            continue;
        };
        b.granted += credits_in;
        match TxnType::parse(&txn_type) {
            Some(TxnType::Expiry) => b.expired += credits_out,
            Some(TxnType::Refund) => b.clawed_back += credits_out,
            _ => b.spent += credits_out,
        }
        *b.by_type.entry(txn_type).or_default() += credits_in - credits_out;
    }
    for (day, currency, amount) in counts.revenue {
        if let Some(i) = index(day) {
            *buckets[i].revenue.entry(currency).or_default() += amount;
        }
    }
    let counted: [(Vec<(Date, i64)>, CountField); 3] = [
        (counts.new_accounts, |b| &mut b.new_accounts),
        (counts.checkins, |b| &mut b.checkins),
        (counts.subscriptions_started, |b| {
            &mut b.subscriptions_started
        }),
    ];
    for (days, field) in counted {
        for (day, n) in days {
            if let Some(i) = index(day) {
                *field(&mut buckets[i]) += n;
            }
        }
    }
    Stats {
        buckets,
        active_subscriptions: counts.active_subscriptions,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use time::macros::date;

    fn query(from: Date, to: Date, bucket: Bucket) -> StatsQuery {
        StatsQuery {
            app: "default".into(),
            from,
            to,
            bucket,
        }
    }

    #[test]
    fn finished_days_come_from_the_rollup_and_the_rest_live() {
        use time::macros::datetime;
        let q = query(date!(2026 - 11 - 20), date!(2026 - 12 - 05), Bucket::Day);
        // An hour into the 5th, the 4th is finished; earlier, it is not yet.
        assert_eq!(
            rollup_plan(&q, datetime!(2026-12-05 01:00 UTC)),
            RollupPlan {
                settled: Some((date!(2026 - 11 - 20), date!(2026 - 12 - 04))),
                live: Some((date!(2026 - 12 - 05), date!(2026 - 12 - 05))),
            }
        );
        assert_eq!(
            rollup_plan(&q, datetime!(2026-12-05 00:59:59 UTC)),
            RollupPlan {
                settled: Some((date!(2026 - 11 - 20), date!(2026 - 12 - 03))),
                live: Some((date!(2026 - 12 - 04), date!(2026 - 12 - 05))),
            }
        );
        // A range in the past is all finished; one in the future all live; the offset of
        // `now` does not matter.
        assert_eq!(
            rollup_plan(&q, datetime!(2027-01-01 12:00 +09:00)).live,
            None
        );
        assert_eq!(
            rollup_plan(&q, datetime!(2026-11-01 12:00 UTC)),
            RollupPlan {
                settled: None,
                live: Some((date!(2026 - 11 - 20), date!(2026 - 12 - 05))),
            }
        );
    }

    #[test]
    fn the_missing_days_are_one_span() {
        let settled = (date!(2026 - 12 - 01), date!(2026 - 12 - 05));
        assert_eq!(
            missing_span(settled, &[]),
            Some((date!(2026 - 12 - 01), date!(2026 - 12 - 05)))
        );
        assert_eq!(
            missing_span(
                settled,
                &[
                    date!(2026 - 12 - 01),
                    date!(2026 - 12 - 03),
                    date!(2026 - 12 - 05)
                ]
            ),
            Some((date!(2026 - 12 - 02), date!(2026 - 12 - 04)))
        );
        let all: Vec<Date> = (1..=5)
            .map(|d| date!(2026 - 12 - 01) + Duration::days(d - 1))
            .collect();
        assert_eq!(missing_span(settled, &all), None);
    }

    #[test]
    fn rollup_rows_round_trip_the_days_asked_for() {
        let counts = DailyCounts {
            credits: vec![
                (date!(2026 - 12 - 01), "purchase".into(), 500, 0),
                (date!(2026 - 12 - 02), "ai_usage".into(), 0, 120),
            ],
            revenue: vec![(date!(2026 - 12 - 01), "usd".into(), 499)],
            new_accounts: vec![(date!(2026 - 12 - 01), 2)],
            checkins: vec![(date!(2026 - 12 - 02), 4)],
            subscriptions_started: vec![(date!(2026 - 12 - 01), 1)],
            active_subscriptions: 3,
        };
        // Only the 1st and the 3rd (a day without activity) are asked for.
        let rows = counts.rollup_rows(&[date!(2026 - 12 - 01), date!(2026 - 12 - 03)]);
        let markers: Vec<Date> = rows
            .iter()
            .filter(|r| r.metric == RollupMetric::Day)
            .map(|r| r.day)
            .collect();
        assert_eq!(markers, [date!(2026 - 12 - 01), date!(2026 - 12 - 03)]);
        assert!(rows.iter().all(|r| r.day != date!(2026 - 12 - 02)));
        let back = DailyCounts::from_rollup(rows);
        assert_eq!(
            back,
            DailyCounts {
                credits: vec![(date!(2026 - 12 - 01), "purchase".into(), 500, 0)],
                revenue: vec![(date!(2026 - 12 - 01), "usd".into(), 499)],
                new_accounts: vec![(date!(2026 - 12 - 01), 2)],
                checkins: vec![],
                subscriptions_started: vec![(date!(2026 - 12 - 01), 1)],
                active_subscriptions: 0,
            }
        );
        for &m in RollupMetric::ALL {
            assert_eq!(RollupMetric::parse(m.as_str()), Some(m));
        }
        // Merged with live counts, the fold sees both.
        let live = DailyCounts {
            checkins: vec![(date!(2026 - 12 - 03), 1)],
            active_subscriptions: 3,
            ..DailyCounts::default()
        };
        let merged = back.merge(live);
        assert_eq!(merged.checkins, [(date!(2026 - 12 - 03), 1)]);
        assert_eq!(merged.active_subscriptions, 3);
    }

    #[test]
    fn buckets_start_on_monday_and_the_first_of_the_month() {
        assert_eq!(
            Bucket::Week.start_of(date!(2026 - 12 - 05)),
            date!(2026 - 11 - 30)
        );
        assert_eq!(
            Bucket::Week.start_of(date!(2026 - 11 - 30)),
            date!(2026 - 11 - 30)
        );
        assert_eq!(
            Bucket::Month.start_of(date!(2026 - 12 - 05)),
            date!(2026 - 12 - 01)
        );
        let q = query(date!(2026 - 11 - 15), date!(2027 - 01 - 02), Bucket::Month);
        assert_eq!(
            bucket_starts(&q),
            [
                date!(2026 - 11 - 15),
                date!(2026 - 12 - 01),
                date!(2027 - 01 - 01)
            ]
        );
        let q = query(date!(2026 - 12 - 02), date!(2026 - 12 - 15), Bucket::Week);
        assert_eq!(
            bucket_starts(&q),
            [
                date!(2026 - 12 - 02),
                date!(2026 - 12 - 07),
                date!(2026 - 12 - 14)
            ]
        );
    }

    #[test]
    fn fold_sorts_days_into_buckets_and_classifies_credits() {
        let q = query(date!(2026 - 12 - 01), date!(2026 - 12 - 14), Bucket::Week);
        let counts = DailyCounts {
            credits: vec![
                (date!(2026 - 12 - 01), "purchase".into(), 500, 0),
                (date!(2026 - 12 - 02), "ai_usage".into(), 0, 120),
                (date!(2026 - 12 - 08), "expiry".into(), 0, 30),
                (date!(2026 - 12 - 08), "refund".into(), 0, 200),
                (date!(2026 - 12 - 08), "admin_adjustment".into(), 10, 5),
                (date!(2026 - 12 - 20), "purchase".into(), 999, 0),
            ],
            revenue: vec![
                (date!(2026 - 12 - 01), "usd".into(), 499),
                (date!(2026 - 12 - 03), "usd".into(), 999),
                (date!(2026 - 12 - 09), "usd".into(), -499),
                (date!(2026 - 12 - 09), "eur".into(), 100),
            ],
            new_accounts: vec![(date!(2026 - 12 - 01), 2), (date!(2026 - 12 - 14), 1)],
            checkins: vec![(date!(2026 - 11 - 30), 9), (date!(2026 - 12 - 07), 4)],
            subscriptions_started: vec![(date!(2026 - 12 - 03), 1)],
            active_subscriptions: 3,
        };
        let stats = fold(&q, counts);
        let starts: Vec<Date> = stats.buckets.iter().map(|b| b.start).collect();
        assert_eq!(
            starts,
            [
                date!(2026 - 12 - 01),
                date!(2026 - 12 - 07),
                date!(2026 - 12 - 14)
            ]
        );
        let [first, second, third] = &stats.buckets[..] else {
            panic!("three buckets")
        };
        assert_eq!(
            (
                first.credits.granted,
                first.credits.spent,
                first.credits.expired
            ),
            (500, 120, 0)
        );
        assert_eq!(first.credits.by_type["ai_usage"], -120);
        assert_eq!(first.revenue["usd"], 1498);
        assert_eq!((first.new_accounts, first.subscriptions_started), (2, 1));
        assert_eq!(first.checkins, 0, "a day before the range is ignored");
        assert_eq!(
            (
                second.credits.granted,
                second.credits.spent,
                second.credits.expired,
                second.credits.clawed_back
            ),
            (10, 5, 30, 200)
        );
        assert_eq!(second.revenue["usd"], -499);
        assert_eq!(second.revenue["eur"], 100);
        assert_eq!(second.checkins, 4);
        assert_eq!(third.new_accounts, 1);
        assert_eq!(
            third.credits,
            CreditFigures::default(),
            "after the range: ignored"
        );
        assert_eq!(stats.active_subscriptions, 3);
    }

    #[test]
    fn ranges_are_checked() {
        assert!(
            query(date!(2026 - 12 - 02), date!(2026 - 12 - 01), Bucket::Day)
                .validate()
                .is_err()
        );
        assert!(
            query(date!(2026 - 01 - 01), date!(2026 - 12 - 31), Bucket::Day)
                .validate()
                .is_ok()
        );
        assert!(
            query(date!(2025 - 01 - 01), date!(2026 - 12 - 31), Bucket::Day)
                .validate()
                .is_err()
        );
        assert!(
            query(date!(2000 - 01 - 01), date!(2026 - 12 - 31), Bucket::Month)
                .validate()
                .is_ok()
        );
    }
}

/// Credits one app's transactions of one type moved in a span of time: what the operations
/// metrics count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditFlow {
    /// App key.
    pub app: String,
    /// Transaction type.
    pub txn_type: TxnType,
    /// Credits added (the positive amounts).
    pub credited: i64,
    /// Credits taken (the negative amounts, as a positive number).
    pub debited: i64,
    /// Transactions.
    pub count: i64,
}
