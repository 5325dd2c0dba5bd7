//! Holds: credits reserved for usage whose cost is known only when it ends (streamed model
//! calls). A hold takes credits out of `available`, not out of `balance`; capturing it turns up
//! to the real cost into an `ai_usage` transaction and returns the rest.

use serde::Serialize;
use tally_kernel::FieldErrors;
use time::{Duration, OffsetDateTime};

use crate::plan::{Plan, plan_expiry, plan_movement};
use crate::{AccountRef, AccountView, LedgerError, MAX_CREDITS, MovementKind, TxnType};

/// The longest a hold may live.
pub const MAX_HOLD_TTL_SECONDS: i64 = 24 * 3600;

/// The key of a hold's metadata that keeps the estimate of a hold taken for quantities.
pub const USAGE_ESTIMATE: &str = "usage_estimate";

tally_kernel::wire_enum! {
    /// Where a hold is in its life.
    pub enum HoldStatus {
        /// Reserving credits.
        Active = "active",
        /// Settled: `captured` credits were charged, the rest returned.
        Captured = "captured",
        /// Returned in full by the caller.
        Released = "released",
        /// Returned in full because its time ran out.
        Expired = "expired",
    }
}

/// A hold as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hold {
    /// Store-assigned id.
    pub id: i64,
    /// The account's app.
    pub app: String,
    /// The account's user.
    pub user: String,
    /// Credits reserved.
    pub amount: i64,
    /// Credits charged on capture.
    pub captured: Option<i64>,
    /// Status at the time it was read (an active hold past its expiry reads as expired).
    pub status: HoldStatus,
    /// What the reservation is for.
    pub description: String,
    /// Metadata given at reservation.
    pub metadata: Option<serde_json::Value>,
    /// The `ai_usage` transaction a capture wrote.
    pub transaction_id: Option<i64>,
    /// When an active hold releases itself.
    pub expires_at: OffsetDateTime,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When its status last changed.
    pub updated_at: OffsetDateTime,
}

impl Hold {
    /// The status at `now`: an active hold whose time ran out is expired, stored or not.
    pub fn status_at(&self, now: OffsetDateTime) -> HoldStatus {
        if self.status == HoldStatus::Active && self.expires_at <= now {
            HoldStatus::Expired
        } else {
            self.status
        }
    }
}

/// An active hold as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldView {
    /// Hold id.
    pub id: i64,
    /// Credits reserved.
    pub amount: i64,
    /// When it releases itself.
    pub expires_at: OffsetDateTime,
}

/// A reservation request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReserveRequest {
    /// Whose credits.
    pub account: AccountRef,
    /// Credits to reserve (the estimate).
    pub credits: i64,
    /// Seconds until the hold releases itself.
    pub ttl_seconds: i64,
    /// What it is for.
    pub description: String,
    /// Same key + same request → the original hold.
    #[serde(skip)]
    pub idempotency_key: Option<String>,
    /// Free-form JSON object.
    pub metadata: Option<serde_json::Value>,
}

impl ReserveRequest {
    /// Checks ranges; every refused field is named.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let mut p = FieldErrors::default();
        p.check(
            (1..=MAX_CREDITS).contains(&self.credits),
            "amount",
            format!("must be between 1 and {MAX_CREDITS}"),
        );
        p.check(
            self.metadata
                .as_ref()
                .is_none_or(|m| m.get(USAGE_ESTIMATE).is_none()),
            "metadata",
            format!("'{USAGE_ESTIMATE}' is kept for holds taken for quantities"),
        );
        self.check_terms(&mut p);
        Ok(p.finish()?)
    }

    /// Checks everything but the credits (which a hold for quantities works out itself).
    pub fn validate_terms(&self) -> Result<(), LedgerError> {
        let mut p = FieldErrors::default();
        self.check_terms(&mut p);
        Ok(p.finish()?)
    }

    fn check_terms(&self, p: &mut FieldErrors) {
        p.check(
            (1..=MAX_HOLD_TTL_SECONDS).contains(&self.ttl_seconds),
            "ttl_seconds",
            format!("must be between 1 and {MAX_HOLD_TTL_SECONDS}"),
        );
        crate::model::check_common(
            p,
            &self.account,
            &self.description,
            self.idempotency_key.as_deref(),
            self.metadata.as_ref(),
        );
    }

    /// Fingerprint of everything but the key.
    pub fn request_hash(&self) -> String {
        crate::model::fingerprint(self)
    }

    /// When a hold made at `now` expires.
    pub fn expires_at(&self, now: OffsetDateTime) -> OffsetDateTime {
        now + Duration::seconds(self.ttl_seconds)
    }
}

/// A capture request: settle hold `hold_id` at `credits`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaptureRequest {
    /// App scope of the caller; a hold of another app is not found.
    pub app: String,
    /// The hold.
    pub hold_id: i64,
    /// The real cost, ≥ 0. Above the held amount only while the account can cover the excess.
    pub credits: i64,
    /// Description of the `ai_usage` transaction (defaults to the hold's).
    pub description: Option<String>,
    /// Metadata of the transaction (defaults to the hold's).
    pub metadata: Option<serde_json::Value>,
}

impl CaptureRequest {
    /// Checks ranges; every refused field is named.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let mut p = FieldErrors::default();
        p.check(
            (0..=MAX_CREDITS).contains(&self.credits),
            "amount",
            format!("must be between 0 and {MAX_CREDITS}"),
        );
        if let Some(d) = &self.description {
            p.take(crate::model::validate_description(d));
        }
        if let Some(m) = &self.metadata {
            p.take(crate::model::validate_metadata(m));
        }
        Ok(p.finish()?)
    }

    /// Fingerprint: a repeated capture with the same figures is a replay.
    pub fn request_hash(&self) -> String {
        crate::model::fingerprint(self)
    }
}

/// The account as it stands once the active hold `hold_id` has returned its credits.
fn without_hold(
    state: &AccountView,
    hold_id: i64,
    now: OffsetDateTime,
) -> Result<AccountView, LedgerError> {
    let hold = state
        .holds
        .iter()
        .find(|h| h.id == hold_id)
        .ok_or(LedgerError::HoldNotActive { status: "unknown" })?;
    if hold.expires_at <= now {
        return Err(LedgerError::HoldExpired);
    }
    let mut released = state.clone();
    released.held -= hold.amount;
    released.holds.retain(|h| h.id != hold_id);
    Ok(released)
}

/// Reserving: the credits must be available now (due lots and holds expired first).
pub fn plan_reserve(
    state: &AccountView,
    credits: i64,
    now: OffsetDateTime,
) -> Result<Plan, LedgerError> {
    let mut plan = plan_expiry(state, now);
    let available = (plan.balance - plan.held).max(0);
    if credits > available {
        return Err(LedgerError::InsufficientCredits {
            requested: credits,
            available,
        });
    }
    plan.held += credits;
    Ok(plan)
}

/// Capturing: return the hold, then charge the real cost against what is available.
pub fn plan_capture(
    state: &AccountView,
    hold_id: i64,
    credits: i64,
    now: OffsetDateTime,
) -> Result<Plan, LedgerError> {
    let released = without_hold(state, hold_id, now)?;
    if credits == 0 {
        return Ok(plan_expiry(&released, now));
    }
    plan_movement(
        &released,
        &MovementKind::Debit {
            txn_type: TxnType::AiUsage,
            credits,
        },
        now,
    )
}

/// Releasing: the hold's credits become available again.
pub fn plan_release(
    state: &AccountView,
    hold_id: i64,
    now: OffsetDateTime,
) -> Result<Plan, LedgerError> {
    Ok(plan_expiry(&without_hold(state, hold_id, now)?, now))
}
