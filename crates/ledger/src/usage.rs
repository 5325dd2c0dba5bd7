//! Usage: what a plan (or the free tier) includes, the windows its allowances reset in, and the
//! plan of one reported call — which allowance it uses, what it costs, what is refused. Pure
//! functions: the store reads the state, [`quote_usage`] decides, the store writes the result in
//! one transaction under the account's lock.
//!
//! **The rounding rule.** Each account keeps, per metered feature, a carry: the fraction of a
//! credit priced but not yet charged, in [`PRICE_SCALE`]ths. A call adds its exact price to the
//! carry, charges the whole credits of the sum and keeps the rest (see [`charge`]). So after any
//! sequence of calls, `charged ≤ exact sum < charged + 1`: the fractions are carried, never lost
//! and never invented.

use std::collections::BTreeMap;

use serde::Serialize;
use tally_kernel::FieldErrors;
use time::{Date, OffsetDateTime};

use crate::checkin::{day_start_in, local_day_in};
use crate::error::{FieldError, gather};
use crate::model::{check_common, fingerprint};
use crate::pricing::{
    Dimensions, Feature, FeatureKind, MAX_QUANTITY, PRICE_SCALE, Price, Rate, check_dimensions,
    is_key, select_rate,
};
use crate::{AccountRef, LedgerError, MAX_CREDITS};

/// Most features one call may report or test.
pub const MAX_FEATURES_PER_CALL: usize = 32;
/// Most entitlements one plan (or the free tier) may list.
pub const MAX_ENTITLEMENTS: usize = 100;

tally_kernel::wire_enum! {
    /// When an allowance starts again from zero.
    pub enum Reset {
        /// At each new paid period of the subscription (a calendar month on the free tier).
        Period = "period",
        /// At the app's local midnight (the check-in time zone).
        Day = "day",
        /// On the first of each local calendar month.
        Month = "month",
        /// Never: a lifetime allowance.
        Never = "never",
    }
}

tally_kernel::wire_enum! {
    /// What happens beyond the allowance.
    pub enum Overage {
        /// Usage is charged in credits at the feature's rate.
        Credits = "credits",
        /// Usage is refused (`ENTITLEMENT_EXCEEDED`).
        Block = "block",
    }
}

/// What a plan or the free tier gives of one feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entitlement {
    /// The feature's key.
    pub feature: String,
    /// Units included per window (metered features; none = 0); none for boolean features.
    pub included: Option<i64>,
    /// When the allowance resets.
    pub reset: Reset,
    /// What happens beyond it.
    pub overage: Overage,
}

/// Checks a list of entitlements against the app's features; errors name the entry.
pub fn validate_entitlements(
    list: &[Entitlement],
    features: &[Feature],
) -> Result<(), LedgerError> {
    if list.len() > MAX_ENTITLEMENTS {
        return Err(LedgerError::invalid(
            "entitlements",
            format!("must list at most {MAX_ENTITLEMENTS} features"),
        ));
    }
    let invalid = |i: usize, field: &str, msg: String| {
        LedgerError::from(FieldError::new(format!("entitlements[{i}].{field}"), msg))
    };
    for (i, e) in list.iter().enumerate() {
        let Some(feature) = features.iter().find(|f| f.key == e.feature) else {
            return Err(invalid(
                i,
                "feature",
                format!("no feature named '{}'", e.feature),
            ));
        };
        if list[..i].iter().any(|o| o.feature == e.feature) {
            return Err(invalid(i, "feature", "is listed twice".into()));
        }
        match (feature.kind, e.included) {
            (FeatureKind::Boolean, Some(_)) => {
                return Err(invalid(
                    i,
                    "included",
                    "a boolean feature is granted as a whole; it takes no allowance".into(),
                ));
            }
            (FeatureKind::Metered, Some(n)) if !(0..=MAX_QUANTITY).contains(&n) => {
                return Err(invalid(
                    i,
                    "included",
                    format!("must be an integer from 0 to {MAX_QUANTITY}"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The span an allowance counts usage in; `end` is none for a lifetime allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First instant (the Unix epoch for a lifetime allowance).
    pub start: OffsetDateTime,
    /// First instant of the next window.
    pub end: Option<OffsetDateTime>,
}

fn month_start(day: Date) -> Date {
    day.replace_day(1).unwrap_or(day)
}

fn next_month(day: Date) -> Date {
    let first = month_start(day);
    let (year, month) = if first.month() == time::Month::December {
        (first.year() + 1, time::Month::January)
    } else {
        (first.year(), first.month().next())
    };
    Date::from_calendar_date(year, month, 1).unwrap_or(first)
}

/// The window `now` falls in for `reset`: local days and months in `timezone`; `period` is the
/// subscription's current paid period, when the user has one.
pub fn window(
    reset: Reset,
    now: OffsetDateTime,
    timezone: &str,
    period: Option<(OffsetDateTime, OffsetDateTime)>,
) -> Result<Window, LedgerError> {
    let today = local_day_in(timezone, now)?;
    let span = |from: Date, to: Date| -> Result<Window, LedgerError> {
        Ok(Window {
            start: day_start_in(timezone, from)?,
            end: Some(day_start_in(timezone, to)?),
        })
    };
    match reset {
        Reset::Never => Ok(Window {
            start: OffsetDateTime::UNIX_EPOCH,
            end: None,
        }),
        Reset::Day => span(today, today.next_day().unwrap_or(today)),
        Reset::Period => match period {
            Some((start, end)) if start <= now && now < end => Ok(Window {
                start,
                end: Some(end),
            }),
            // The period ended and the next is not paid yet (past due): the allowance does not
            // reset until it is.
            Some((start, _)) if start <= now => Ok(Window { start, end: None }),
            _ => span(month_start(today), next_month(today)),
        },
        Reset::Month => span(month_start(today), next_month(today)),
    }
}

/// A call's report (`track`) or question (`check`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRequest {
    /// Whose usage.
    pub account: AccountRef,
    /// Metered feature → quantity used (track) or about to be used (check).
    pub quantities: BTreeMap<String, i64>,
    /// Boolean features to test (check only).
    pub features: Vec<String>,
    /// What selects the rates, e.g. `{"model": "gpt-4o"}`.
    pub dimensions: Dimensions,
    /// Shown in the history (track).
    pub description: String,
    /// Stored with the usage transaction (track).
    pub metadata: Option<serde_json::Value>,
    /// Same key + same request → the original outcome (track; required there).
    #[serde(skip)]
    pub idempotency_key: Option<String>,
}

impl UsageRequest {
    /// Checks the request's shape (the features' existence and kinds are checked by
    /// [`quote_usage`] against the app's features). A `track` needs quantities and a key.
    pub fn validate(&self, track: bool) -> Result<(), LedgerError> {
        let mut p = FieldErrors::default();
        check_common(
            &mut p,
            &self.account,
            &self.description,
            self.idempotency_key.as_deref(),
            self.metadata.as_ref(),
        );
        p.check(
            !track || self.idempotency_key.is_some(),
            "idempotency_key",
            "is required: a retried report must charge once",
        );
        if track && self.quantities.is_empty() {
            p.add("quantities", "must report at least one metered feature");
        } else if self.quantities.len() + self.features.len() > MAX_FEATURES_PER_CALL {
            p.add(
                "quantities",
                format!("a call names at most {MAX_FEATURES_PER_CALL} features"),
            );
        } else {
            gather(&mut p, validate_quantities(&self.quantities))?;
        }
        for (i, key) in self.features.iter().enumerate() {
            p.check(
                is_key(key),
                format!("features[{i}]"),
                "is not a feature key (a-z, 0-9 and _)",
            );
        }
        gather(&mut p, check_dimensions("dimensions", &self.dimensions))?;
        Ok(p.finish()?)
    }

    /// A fingerprint of everything except the idempotency key.
    pub fn request_hash(&self) -> String {
        fingerprint(self)
    }
}

/// Checks reported quantities: feature keys, each an integer from 0 to [`MAX_QUANTITY`].
pub fn validate_quantities(quantities: &BTreeMap<String, i64>) -> Result<(), LedgerError> {
    if quantities.len() > MAX_FEATURES_PER_CALL {
        return Err(LedgerError::invalid(
            "quantities",
            format!("a call names at most {MAX_FEATURES_PER_CALL} features"),
        ));
    }
    for (key, &q) in quantities {
        let field = || format!("quantities.{key}");
        if !is_key(key) {
            return Err(LedgerError::from(FieldError::new(
                field(),
                "is not a feature key (a-z, 0-9 and _)",
            )));
        }
        if !(0..=MAX_QUANTITY).contains(&q) {
            return Err(LedgerError::from(FieldError::new(
                field(),
                format!("must be an integer from 0 to {MAX_QUANTITY}"),
            )));
        }
    }
    Ok(())
}

/// What the store read for one account before planning a call.
#[derive(Debug, Clone, Default)]
pub struct UsageState {
    /// The app's features.
    pub features: Vec<Feature>,
    /// Every rate version of the features the call names.
    pub rates: Vec<Rate>,
    /// The user's plan's entitlements, or the free tier's.
    pub entitlements: Vec<Entitlement>,
    /// The plan they come from (none: the free tier).
    pub plan_id: Option<String>,
    /// Per metered feature with an allowance: its current window.
    pub windows: BTreeMap<String, Window>,
    /// Per feature: units used in its current window so far.
    pub used: BTreeMap<String, i64>,
    /// Per feature: units of its current window that active holds set aside.
    pub reserved: BTreeMap<String, i64>,
    /// Per feature: the fraction of a credit priced but not yet charged, in [`PRICE_SCALE`]ths.
    pub carries: BTreeMap<String, i64>,
}

impl UsageState {
    /// Takes in a call [`quote_usage`] decided, once it is recorded: its allowances' use and its
    /// meters' carries. The next call of a run planned on one read of the account (the store
    /// applies a batch's calls to one account so) starts from what this one leaves, as if it
    /// were read after this call's commit.
    pub fn record(&mut self, quote: &UsageQuote) {
        for line in &quote.lines {
            if line.window.is_some() && line.included_used > 0 {
                *self.used.entry(line.feature.clone()).or_insert(0) += line.included_used;
            }
            if line.rate.is_some() {
                self.carries.insert(line.feature.clone(), line.carry_after);
            }
        }
    }
}

/// The windows of every metered entitlement at `now`.
pub fn windows(
    entitlements: &[Entitlement],
    features: &[Feature],
    now: OffsetDateTime,
    timezone: &str,
    period: Option<(OffsetDateTime, OffsetDateTime)>,
) -> Result<BTreeMap<String, Window>, LedgerError> {
    let metered = |key: &str| {
        features
            .iter()
            .any(|f| f.key == key && f.kind == FeatureKind::Metered)
    };
    entitlements
        .iter()
        .filter(|e| metered(&e.feature))
        .map(|e| Ok((e.feature.clone(), window(e.reset, now, timezone, period)?)))
        .collect()
}

/// The rate version a line was priced with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateUse {
    /// The version's id.
    pub rate_id: i64,
    /// Its version number.
    pub version: i64,
    /// Credits per `per` units that applied.
    pub credits: i64,
    /// Units those credits buy.
    pub per: i64,
}

/// One feature of a call, decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageLine {
    /// The metered feature.
    pub feature: String,
    /// Units reported.
    pub quantity: i64,
    /// The allowance in its window (none: the plan includes none).
    pub included: Option<i64>,
    /// Its window, when there is an allowance.
    pub window: Option<Window>,
    /// Used in the window before this call.
    pub used_before: i64,
    /// Units of the window active holds (other than this call's) set aside.
    pub reserved_by_others: i64,
    /// Units the allowance covered.
    pub included_used: i64,
    /// Units priced at the rate (`quantity - included_used`).
    pub billable: i64,
    /// The rate that priced them (none when nothing was billable).
    pub rate: Option<RateUse>,
    /// The exact price of the billable units, in [`PRICE_SCALE`]ths of a credit.
    pub scaled: i128,
    /// Whole credits charged for this feature.
    pub credits: i64,
    /// The feature's carry after this call.
    pub carry_after: i64,
    /// Whether this call used up the allowance (it announces `usage.limit_reached`).
    pub limit_reached: bool,
}

impl UsageLine {
    /// Units of the allowance left after this call (none when there is no allowance).
    pub fn remaining_after(&self) -> Option<i64> {
        self.included
            .map(|n| (n - self.used_before - self.reserved_by_others - self.included_used).max(0))
    }
}

/// Why a call is not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A `block` allowance does not cover the quantity.
    EntitlementExceeded {
        /// The feature.
        feature: String,
    },
    /// A boolean feature the plan does not grant.
    FeatureNotIncluded {
        /// The feature.
        feature: String,
    },
}

impl Refusal {
    /// The reason's wire name.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::EntitlementExceeded { .. } => "entitlement_exceeded",
            Self::FeatureNotIncluded { .. } => "feature_not_included",
        }
    }
}

/// What a call would do, or does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsageQuote {
    /// One line per metered feature reported, in key order.
    pub lines: Vec<UsageLine>,
    /// Whether each boolean feature asked about is granted.
    pub granted: BTreeMap<String, bool>,
    /// Credits charged in total.
    pub credits: i64,
    /// The first reason the call is refused, if it is.
    pub refusal: Option<Refusal>,
}

/// Adds a price to a carry: the whole credits to charge, and the carry left.
pub fn charge(carry: i64, scaled: i128) -> (i128, i64) {
    let total = i128::from(carry) + scaled;
    let scale = i128::from(PRICE_SCALE);
    let rest = i64::try_from(total % scale).unwrap_or(0);
    (total / scale, rest)
}

/// Decides a call: each metered quantity uses its allowance first; beyond it, a `block`
/// allowance refuses the call and anything else is priced at the rate in force now for the
/// call's dimensions (no rate: [`LedgerError::RateNotFound`]). Boolean features are granted
/// when the entitlements list them. Unknown features and kind mismatches are validation errors.
pub fn quote_usage(
    state: &UsageState,
    request: &UsageRequest,
    now: OffsetDateTime,
) -> Result<UsageQuote, LedgerError> {
    let feature = |field: String, key: &str, kind: FeatureKind| {
        let f = state
            .features
            .iter()
            .find(|f| f.key == key)
            .ok_or_else(|| {
                LedgerError::from(FieldError::new(
                    field.clone(),
                    format!("no feature named '{key}'"),
                ))
            })?;
        if f.kind != kind {
            let hint = match f.kind {
                FeatureKind::Boolean => "is a boolean feature: test it with `features`",
                FeatureKind::Metered => "is a metered feature: give its quantity in `quantities`",
            };
            return Err(LedgerError::from(FieldError::new(field, hint)));
        }
        Ok(())
    };
    let mut quote = UsageQuote::default();
    for (i, key) in request.features.iter().enumerate() {
        feature(format!("features[{i}]"), key, FeatureKind::Boolean)?;
        let granted = state.entitlements.iter().any(|e| &e.feature == key);
        if !granted && quote.refusal.is_none() {
            quote.refusal = Some(Refusal::FeatureNotIncluded {
                feature: key.clone(),
            });
        }
        quote.granted.insert(key.clone(), granted);
    }
    for (key, &quantity) in &request.quantities {
        feature(format!("quantities.{key}"), key, FeatureKind::Metered)?;
        let entitlement = state.entitlements.iter().find(|e| &e.feature == key);
        let included = entitlement.map(|e| e.included.unwrap_or(0));
        let used_before = state.used.get(key).copied().unwrap_or(0);
        // Units active holds set aside are not available to this call.
        let taken = used_before + state.reserved.get(key).copied().unwrap_or(0);
        let remaining = included.map_or(0, |n| (n - taken).max(0));
        let included_used = quantity.min(remaining);
        let billable = quantity - included_used;
        let mut line = UsageLine {
            feature: key.clone(),
            quantity,
            included,
            window: included.and_then(|_| state.windows.get(key).copied()),
            used_before,
            included_used,
            billable,
            rate: None,
            scaled: 0,
            credits: 0,
            carry_after: state.carries.get(key).copied().unwrap_or(0),
            reserved_by_others: taken - used_before,
            limit_reached: included
                .is_some_and(|n| n > 0 && taken < n && taken + included_used >= n),
        };
        if billable > 0 {
            if entitlement.is_some_and(|e| e.overage == Overage::Block) {
                if quote.refusal.is_none() {
                    quote.refusal = Some(Refusal::EntitlementExceeded {
                        feature: key.clone(),
                    });
                }
            } else {
                let rate =
                    select_rate(&state.rates, key, &request.dimensions, now).ok_or_else(|| {
                        LedgerError::RateNotFound {
                            feature: key.clone(),
                        }
                    })?;
                let Price {
                    credits,
                    per,
                    scaled,
                } = rate.price_part(quantity, billable);
                let (whole, carry) = charge(line.carry_after, scaled);
                line.credits = i64::try_from(whole)
                    .ok()
                    .filter(|c| *c <= MAX_CREDITS)
                    .ok_or_else(|| {
                        LedgerError::from(FieldError::new(
                            format!("quantities.{key}"),
                            format!("is priced above {MAX_CREDITS} credits"),
                        ))
                    })?;
                line.scaled = scaled;
                line.carry_after = carry;
                line.rate = Some(RateUse {
                    rate_id: rate.id,
                    version: rate.version,
                    credits,
                    per,
                });
            }
        }
        quote.credits = quote
            .credits
            .checked_add(line.credits)
            .filter(|c| *c <= MAX_CREDITS)
            .ok_or(LedgerError::Overflow)?;
        quote.lines.push(line);
    }
    Ok(quote)
}

/// What a tracked call charged; a replay answers the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageOutcome {
    /// Per feature: units reported, covered by the allowance, and credits charged.
    pub lines: Vec<TrackedLine>,
    /// Credits charged in total.
    pub credits: i64,
    /// The `ai_usage` transaction, when credits were charged.
    pub transaction_id: Option<i64>,
}

/// One feature of a tracked call, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackedLine {
    /// The feature.
    pub feature: String,
    /// Units reported.
    pub quantity: i64,
    /// Units the allowance covered.
    pub included_used: i64,
    /// Credits charged.
    pub credits: i64,
    /// The rate version that priced the rest, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateUse>,
}

impl From<&UsageLine> for TrackedLine {
    fn from(line: &UsageLine) -> Self {
        Self {
            feature: line.feature.clone(),
            quantity: line.quantity,
            included_used: line.included_used,
            credits: line.credits,
            rate: line.rate,
        }
    }
}

/// One feature as a user sees it (`GET /entitlements`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureStatus {
    /// The feature.
    pub feature: Feature,
    /// What the user's plan (or the free tier) gives of it, if anything.
    pub entitlement: Option<Entitlement>,
    /// Its current window, for a metered allowance.
    pub window: Option<Window>,
    /// Units used in that window.
    pub used: i64,
    /// Units of it that calls in progress (active holds) set aside.
    pub reserved: i64,
}

impl FeatureStatus {
    /// Units of the allowance left (none: no allowance).
    pub fn remaining(&self) -> Option<i64> {
        let e = self.entitlement.as_ref()?;
        if self.feature.kind != FeatureKind::Metered {
            return None;
        }
        Some((e.included.unwrap_or(0) - self.used - self.reserved).max(0))
    }

    /// Whether the user may use it at all (a boolean feature listed, or any metered feature).
    pub fn granted(&self) -> bool {
        match self.feature.kind {
            FeatureKind::Boolean => self.entitlement.is_some(),
            FeatureKind::Metered => true,
        }
    }
}

/// The allowance scope of the free tier; a plan's is [`plan_scope`].
pub const FREE_SCOPE: &str = "free";

/// The allowance scope of plan `plan_id`.
pub fn plan_scope(plan_id: &str) -> String {
    format!("plan:{plan_id}")
}

/// The plan a scope belongs to (none for the free tier): the inverse of [`plan_scope`].
pub fn scope_plan(scope: &str) -> Option<&str> {
    scope.strip_prefix("plan:")
}

/// An allowance row beside the usage lines recorded in its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowanceAudit {
    /// The account's app and user.
    pub account: (String, String),
    /// The feature.
    pub feature: String,
    /// Units the row says were used.
    pub used: i64,
    /// Units the lines of its window say were covered.
    pub lines_used: i64,
    /// Units the row says active holds set aside.
    pub reserved: i64,
    /// Units the holds' reservations of its window add up to.
    pub holds_reserved: i64,
}

/// A meter (carried fraction) beside the usage lines of its account and feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterAudit {
    /// The account's app and user.
    pub account: (String, String),
    /// The feature.
    pub feature: String,
    /// Credits the meter says were charged.
    pub charged: i64,
    /// The carried fraction, in [`PRICE_SCALE`]ths.
    pub carry: i64,
    /// Credits the lines charged.
    pub lines_credits: i64,
    /// The exact prices the lines recorded, summed, in [`PRICE_SCALE`]ths.
    pub lines_scaled: i128,
}

/// A reported call beside its lines and its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAudit {
    /// The account's app and user.
    pub account: (String, String),
    /// The call's id.
    pub event_id: i64,
    /// Credits the call says it charged.
    pub credits: i64,
    /// Credits its lines charged.
    pub lines_credits: i64,
    /// Its transaction's amount, if it has one (of its own account).
    pub transaction_amount: Option<i64>,
    /// Whether the call is recorded: `false` for lines whose call is missing.
    pub recorded: bool,
    /// Its lines kept under another account than the call's.
    pub lines_elsewhere: usize,
}

/// Every usage invariant the figures break: an allowance's use is the sum of its lines'; a
/// meter's charged credits are its lines' and, with its carry, exactly their summed prices (the
/// carried-fraction rule); a call's credits are its lines' and its transaction's amount; every
/// line's call is recorded, under the line's account.
pub fn usage_violations(
    allowances: &[AllowanceAudit],
    meters: &[MeterAudit],
    events: &[EventAudit],
) -> Vec<crate::Violation> {
    let mut out = Vec::new();
    let mut push = |(app, user): &(String, String), rule: &'static str, detail: String| {
        out.push(crate::Violation {
            app: app.clone(),
            user: user.clone(),
            rule,
            detail,
        })
    };
    for a in allowances {
        if a.used != a.lines_used || a.used < 0 {
            push(
                &a.account,
                "allowance use equals its usage lines",
                format!("{}: used {} vs lines {}", a.feature, a.used, a.lines_used),
            );
        }
        if a.reserved != a.holds_reserved || a.reserved < 0 {
            push(
                &a.account,
                "an allowance's reservation equals its active holds'",
                format!(
                    "{}: reserved {} vs holds {}",
                    a.feature, a.reserved, a.holds_reserved
                ),
            );
        }
    }
    let scale = i128::from(PRICE_SCALE);
    for m in meters {
        let exact = i128::from(m.charged) * scale + i128::from(m.carry);
        if m.charged != m.lines_credits
            || exact != m.lines_scaled
            || !(0..PRICE_SCALE).contains(&m.carry)
        {
            push(
                &m.account,
                "charged credits and the carry equal the exact priced usage",
                format!(
                    "{}: charged {} + carry {}/10^12 vs lines {} credits, exact {}/10^12",
                    m.feature, m.charged, m.carry, m.lines_credits, m.lines_scaled
                ),
            );
        }
    }
    for e in events {
        if !e.recorded {
            push(
                &e.account,
                "a usage line belongs to a recorded call",
                format!(
                    "call {}: missing, its lines charge {} credits",
                    e.event_id, e.lines_credits
                ),
            );
            continue;
        }
        if e.lines_elsewhere > 0 {
            push(
                &e.account,
                "a usage line is under its call's account",
                format!(
                    "call {}: {} of its lines under another account",
                    e.event_id, e.lines_elsewhere
                ),
            );
        }
        let txn = e.transaction_amount.map(|a| -a);
        if e.credits != e.lines_credits || txn.unwrap_or(0) != e.credits {
            push(
                &e.account,
                "a usage call charges its lines in one transaction",
                format!(
                    "call {}: {} credits, lines {}, transaction {:?}",
                    e.event_id, e.credits, e.lines_credits, txn
                ),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::Tier;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-15 12:00 UTC);

    fn feature(key: &str, kind: FeatureKind) -> Feature {
        Feature {
            key: key.into(),
            name: key.into(),
            kind,
            unit: None,
            created_at: NOW,
            updated_at: NOW,
        }
    }

    fn rate(id: i64, feature: &str, credits: i64, per: i64) -> Rate {
        Rate {
            id,
            feature: feature.into(),
            version: 1,
            dimensions: Dimensions::new(),
            credits,
            per,
            tiers: Vec::<Tier>::new(),
            effective_from: NOW - time::Duration::days(30),
            created_at: NOW,
            created_by: "admin".into(),
        }
    }

    fn state() -> UsageState {
        UsageState {
            features: vec![
                feature("messages", FeatureKind::Metered),
                feature("input_tokens", FeatureKind::Metered),
                feature("premium_models", FeatureKind::Boolean),
            ],
            rates: vec![
                rate(1, "messages", 2, 1),
                rate(2, "input_tokens", 25, 10_000),
            ],
            entitlements: vec![Entitlement {
                feature: "messages".into(),
                included: Some(10),
                reset: Reset::Month,
                overage: Overage::Credits,
            }],
            ..UsageState::default()
        }
    }

    fn request(pairs: &[(&str, i64)]) -> UsageRequest {
        UsageRequest {
            account: AccountRef::new("default", "alice").unwrap(),
            quantities: pairs.iter().map(|(k, q)| ((*k).to_owned(), *q)).collect(),
            features: vec![],
            dimensions: Dimensions::new(),
            description: String::new(),
            metadata: None,
            idempotency_key: Some("k".into()),
        }
    }

    #[test]
    fn the_allowance_is_used_first_then_the_rate() {
        let mut s = state();
        s.used.insert("messages".into(), 8);
        let q = quote_usage(&s, &request(&[("messages", 5)]), NOW).unwrap();
        let line = &q.lines[0];
        assert_eq!((line.included_used, line.billable, line.credits), (2, 3, 6));
        assert!(line.limit_reached);
        assert_eq!(line.remaining_after(), Some(0));
        assert_eq!(q.credits, 6);
        // Already used up: not announced again.
        s.used.insert("messages".into(), 10);
        let q = quote_usage(&s, &request(&[("messages", 1)]), NOW).unwrap();
        assert!(!q.lines[0].limit_reached);
        assert_eq!(q.credits, 2);
    }

    #[test]
    fn a_block_allowance_refuses_beyond_it() {
        let mut s = state();
        s.entitlements[0].overage = Overage::Block;
        s.used.insert("messages".into(), 9);
        let ok = quote_usage(&s, &request(&[("messages", 1)]), NOW).unwrap();
        assert_eq!(ok.refusal, None);
        let refused = quote_usage(&s, &request(&[("messages", 2)]), NOW).unwrap();
        assert_eq!(
            refused.refusal,
            Some(Refusal::EntitlementExceeded {
                feature: "messages".into()
            })
        );
    }

    #[test]
    fn fractions_are_carried() {
        let s = state();
        let q = quote_usage(&s, &request(&[("input_tokens", 1_000)]), NOW).unwrap();
        // 1,000 × 25 / 10,000 = 2.5 credits: 2 now, 0.5 carried.
        assert_eq!(q.credits, 2);
        assert_eq!(q.lines[0].carry_after, PRICE_SCALE / 2);
        let mut s = s;
        s.carries.insert("input_tokens".into(), PRICE_SCALE / 2);
        let q = quote_usage(&s, &request(&[("input_tokens", 1_000)]), NOW).unwrap();
        assert_eq!((q.credits, q.lines[0].carry_after), (3, 0));
    }

    #[test]
    fn carried_totals_stay_within_one_credit_of_the_exact_sum() {
        // A deterministic pseudo-random walk over quantities and prices (xorshift), checked
        // after every call: charged ≤ exact < charged + 1.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pers = [1, 2, 5, 8, 1_000, 10_000, 1_000_000, 1_000_000_000_000];
        for _ in 0..50 {
            let mut s = state();
            let (mut charged, mut exact) = (0_i128, 0_i128);
            for _ in 0..200 {
                let per = pers[(next() % pers.len() as u64) as usize];
                let credits = (next() % 1_000) as i64;
                s.rates = vec![rate(1, "input_tokens", credits, per)];
                let quantity = (next() % 100_000) as i64;
                let q = quote_usage(&s, &request(&[("input_tokens", quantity)]), NOW).unwrap();
                charged += i128::from(q.credits);
                exact += i128::from(quantity) * i128::from(credits) * i128::from(PRICE_SCALE / per);
                let scale = i128::from(PRICE_SCALE);
                assert!(charged * scale <= exact && exact < (charged + 1) * scale);
                assert_eq!(charged * scale + i128::from(q.lines[0].carry_after), exact);
                s.carries
                    .insert("input_tokens".into(), q.lines[0].carry_after);
            }
        }
    }

    #[test]
    fn calls_recorded_in_turn_see_what_the_earlier_ones_used_and_carried() {
        // Three calls quoted one after another on one read, each recorded, decide what they
        // would decide read one at a time after each commit.
        let mut s = state();
        s.windows.insert(
            "messages".into(),
            window(Reset::Month, NOW, "UTC", None).unwrap(),
        );
        s.used.insert("messages".into(), 7);
        let call = request(&[("input_tokens", 1_000), ("messages", 2)]);
        let mut quotes = Vec::new();
        for _ in 0..3 {
            let q = quote_usage(&s, &call, NOW).unwrap();
            s.record(&q);
            quotes.push(q);
        }
        let messages: Vec<(i64, i64, bool)> = quotes
            .iter()
            .map(|q| {
                (
                    q.lines[1].included_used,
                    q.lines[1].credits,
                    q.lines[1].limit_reached,
                )
            })
            .collect();
        // 3 of 10 left: 2, then 1 (used up, announced once) with 1 billed at 2 credits, then 2
        // billed.
        assert_eq!(messages, [(2, 0, false), (1, 2, true), (0, 4, false)]);
        // 2.5 credits a call for tokens: 2, 3, 2 — 7.5 in all, 0.5 carried.
        let tokens: Vec<i64> = quotes.iter().map(|q| q.lines[0].credits).collect();
        assert_eq!(tokens, [2, 3, 2]);
        assert_eq!(s.carries["input_tokens"], PRICE_SCALE / 2);
        assert_eq!(s.used["messages"], 10);
        // A line without a window (no allowance) or priced by no rate changes nothing.
        let mut plain = state();
        let q = quote_usage(&plain, &request(&[("messages", 3)]), NOW).unwrap();
        plain.record(&q);
        assert!(plain.used.is_empty());
        assert_eq!(plain.carries.get("messages"), None);
    }

    #[test]
    fn unknown_features_kinds_and_missing_rates_are_errors() {
        let s = state();
        let field = |r: Result<UsageQuote, LedgerError>| match r.unwrap_err() {
            LedgerError::Validation(f) => f[0].field.clone(),
            e => panic!("{e}"),
        };
        assert_eq!(
            field(quote_usage(&s, &request(&[("images", 1)]), NOW)),
            "quantities.images"
        );
        assert_eq!(
            field(quote_usage(&s, &request(&[("premium_models", 1)]), NOW)),
            "quantities.premium_models"
        );
        let mut asks = request(&[]);
        asks.features = vec!["messages".into()];
        assert_eq!(field(quote_usage(&s, &asks, NOW)), "features[0]");
        let mut s2 = s.clone();
        s2.rates.clear();
        assert!(matches!(
            quote_usage(&s2, &request(&[("input_tokens", 1)]), NOW),
            Err(LedgerError::RateNotFound { .. })
        ));
        // Within the allowance no rate is needed.
        assert_eq!(
            quote_usage(&s2, &request(&[("messages", 10)]), NOW)
                .unwrap()
                .credits,
            0
        );
    }

    #[test]
    fn boolean_features_are_granted_by_listing() {
        let mut s = state();
        let mut asks = request(&[]);
        asks.features = vec!["premium_models".into()];
        let q = quote_usage(&s, &asks, NOW).unwrap();
        assert!(!q.granted["premium_models"]);
        assert_eq!(q.refusal.unwrap().reason(), "feature_not_included");
        s.entitlements.push(Entitlement {
            feature: "premium_models".into(),
            included: None,
            reset: Reset::Never,
            overage: Overage::Block,
        });
        let q = quote_usage(&s, &asks, NOW).unwrap();
        assert!(q.granted["premium_models"] && q.refusal.is_none());
    }

    #[test]
    fn windows_follow_the_local_day_the_month_and_the_period() {
        let tz = "Asia/Tokyo"; // UTC+9
        let day = window(Reset::Day, datetime!(2026-03-15 16:00 UTC), tz, None).unwrap();
        assert_eq!(day.start, datetime!(2026-03-15 15:00 UTC));
        assert_eq!(day.end, Some(datetime!(2026-03-16 15:00 UTC)));
        let month = window(Reset::Month, datetime!(2026-12-31 15:30 UTC), tz, None).unwrap();
        assert_eq!(month.start, datetime!(2026-12-31 15:00 UTC));
        assert_eq!(month.end, Some(datetime!(2027-01-31 15:00 UTC)));
        let period = (
            datetime!(2026-03-10 08:00 UTC),
            datetime!(2026-04-10 08:00 UTC),
        );
        let w = window(Reset::Period, NOW, "UTC", Some(period)).unwrap();
        assert_eq!((w.start, w.end), (period.0, Some(period.1)));
        // Past its end with the next period unpaid: the same window, until it is.
        let late = window(
            Reset::Period,
            datetime!(2026-04-11 00:00 UTC),
            "UTC",
            Some(period),
        )
        .unwrap();
        assert_eq!((late.start, late.end), (period.0, None));
        // Without a period: the calendar month.
        let w = window(Reset::Period, datetime!(2026-04-11 00:00 UTC), "UTC", None).unwrap();
        assert_eq!(w.start, datetime!(2026-04-01 00:00 UTC));
        assert_eq!(w.end, Some(datetime!(2026-05-01 00:00 UTC)));
        let never = window(Reset::Never, NOW, "UTC", None).unwrap();
        assert_eq!((never.start, never.end), (OffsetDateTime::UNIX_EPOCH, None));
    }

    #[test]
    fn entitlements_are_checked_against_the_features() {
        let s = state();
        let e = |feature: &str, included: Option<i64>| Entitlement {
            feature: feature.into(),
            included,
            reset: Reset::Month,
            overage: Overage::Credits,
        };
        let field = |list: &[Entitlement]| match validate_entitlements(list, &s.features) {
            Err(LedgerError::Validation(f)) => f[0].field.clone(),
            other => panic!("{other:?}"),
        };
        assert!(
            validate_entitlements(
                &[e("messages", Some(5)), e("premium_models", None)],
                &s.features
            )
            .is_ok()
        );
        assert_eq!(field(&[e("nope", None)]), "entitlements[0].feature");
        assert_eq!(
            field(&[e("messages", Some(1)), e("messages", Some(2))]),
            "entitlements[1].feature"
        );
        assert_eq!(
            field(&[e("premium_models", Some(1))]),
            "entitlements[0].included"
        );
        assert_eq!(
            field(&[e("messages", Some(-1))]),
            "entitlements[0].included"
        );
    }
}
