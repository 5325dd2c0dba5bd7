//! The storage port. One implementation per storage technology; the `tally-store` crate provides
//! the Diesel one for SQLite and PostgreSQL.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::codes::{CodeBatchRequest, RedeemRequest, RedemptionCode};
use crate::holds::{CaptureRequest, Hold, ReserveRequest};
use crate::pricing::{Feature, FeatureSpec, Rate, RateSpec};
use crate::usage::{
    AllowanceAudit, Entitlement, EventAudit, MeterAudit, UsageOutcome, UsageRequest, UsageState,
};
use crate::{
    AccountAudit, AccountQuery, AccountRef, AccountSummary, AccountView, CheckinConfig,
    CheckinRecord, CheckinRequest, LedgerError, Movement, Transaction, TransactionQuery,
};

/// Everything the ledger needs from a database. Each write method is one database transaction.
#[async_trait]
pub trait LedgerRepository: Send + Sync + std::fmt::Debug + 'static {
    /// Applies a movement atomically: expires due lots, plans with [`crate::plan::plan_movement`],
    /// writes the rows. A known idempotency key with the same request returns the stored
    /// transaction; with another request, [`LedgerError::IdempotencyKeyReused`].
    async fn apply(
        &self,
        movement: Movement,
        now: OffsetDateTime,
    ) -> Result<Transaction, LedgerError>;

    /// Records a check-in and its grant atomically under the app's configuration, read in the
    /// same transaction, and answers both; a second one on the same local day fails with
    /// [`LedgerError::AlreadyCheckedIn`] through a unique constraint, and one while check-ins
    /// are switched off with [`LedgerError::CheckinDisabled`].
    async fn checkin(
        &self,
        request: CheckinRequest,
    ) -> Result<(CheckinRecord, CheckinConfig), LedgerError>;

    /// The stored account as a balance read at `now` needs it (zero when it does not exist
    /// yet): every lot and active hold due at `now`, and the soonest lots that expire later —
    /// [`crate::BALANCE_LOTS`] of them (or all), and at least every lot of the soonest instant,
    /// with [`AccountView::last_instant_partial`] saying whether the latest instant is whole.
    async fn account(
        &self,
        account: AccountRef,
        now: OffsetDateTime,
    ) -> Result<AccountView, LedgerError>;

    /// The account's lots due at `now`, then its live lots in consumption order, and its active
    /// holds, soonest to run out first: at most `limit` of each (empty when the account does not
    /// exist).
    async fn account_contents(
        &self,
        account: AccountRef,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<AccountView, LedgerError>;

    /// A page of the app's accounts, newest first; a `before` that names no account of the app
    /// is a validation error on `before`.
    async fn accounts(&self, query: AccountQuery) -> Result<Vec<AccountSummary>, LedgerError>;

    /// One account's summary, if the account exists.
    async fn account_summary(
        &self,
        account: AccountRef,
    ) -> Result<Option<AccountSummary>, LedgerError>;

    /// The app's daily counts over the query's days, counted from the tables (see
    /// [`crate::stats`]); `active_subscriptions` is left 0.
    async fn daily_counts(
        &self,
        query: crate::stats::StatsQuery,
    ) -> Result<crate::stats::DailyCounts, LedgerError>;

    /// The app's subscriptions active or trialing now.
    async fn active_subscriptions(&self, app: String) -> Result<i64, LedgerError>;

    /// The app's rolled-up rows of the days from `from` to `to`, both inclusive.
    async fn rollup(
        &self,
        app: String,
        from: time::Date,
        to: time::Date,
    ) -> Result<Vec<crate::stats::RollupRow>, LedgerError>;

    /// Stores rolled-up rows of finished days; a day another caller stored first is kept as
    /// it is (its figures are the same).
    async fn store_rollup(
        &self,
        app: String,
        rows: Vec<crate::stats::RollupRow>,
    ) -> Result<(), LedgerError>;

    /// A page of history, newest first; fetches `limit` rows.
    async fn transactions(&self, query: TransactionQuery) -> Result<Vec<Transaction>, LedgerError>;

    /// The user's most recent check-in.
    async fn latest_checkin(
        &self,
        account: AccountRef,
    ) -> Result<Option<CheckinRecord>, LedgerError>;

    /// The app's stored check-in configuration; when none is stored, the defaults in the time
    /// zone the app is registered with; `None` for neither.
    async fn checkin_config(&self, app: String) -> Result<Option<CheckinConfig>, LedgerError>;

    /// Replaces the app's check-in configuration at `now`.
    async fn put_checkin_config(
        &self,
        app: String,
        config: CheckinConfig,
        actor: String,
        now: time::OffsetDateTime,
    ) -> Result<(), LedgerError>;

    /// Reserves credits atomically (see [`crate::holds::plan_reserve`]); idempotent by key.
    async fn reserve(
        &self,
        request: ReserveRequest,
        now: OffsetDateTime,
    ) -> Result<Hold, LedgerError>;

    /// Settles an active hold (see [`crate::holds::plan_capture`]). A capture repeated with the
    /// same idempotency key and figures answers the original; any other second capture fails.
    async fn capture(
        &self,
        request: CaptureRequest,
        idempotency_key: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(Hold, Option<Transaction>), LedgerError>;

    /// Returns an active hold's credits; releasing a released or expired hold answers it as is.
    async fn release(
        &self,
        app: String,
        hold_id: i64,
        now: OffsetDateTime,
    ) -> Result<Hold, LedgerError>;

    /// A hold of the app, if it exists.
    async fn hold(&self, app: String, hold_id: i64) -> Result<Option<Hold>, LedgerError>;

    /// Stores a batch of freshly generated codes.
    async fn create_codes(
        &self,
        request: CodeBatchRequest,
        codes: Vec<String>,
        batch: String,
        now: OffsetDateTime,
    ) -> Result<Vec<RedemptionCode>, LedgerError>;

    /// The app's codes, newest first.
    async fn codes(
        &self,
        app: String,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<RedemptionCode>, LedgerError>;

    /// Redeems a code for a user: one use, one `redemption` grant, at most once per user.
    async fn redeem(
        &self,
        request: RedeemRequest,
    ) -> Result<(RedemptionCode, Transaction), LedgerError>;

    /// Records a failed redemption attempt.
    async fn record_redeem_failure(
        &self,
        account: AccountRef,
        now: OffsetDateTime,
    ) -> Result<(), LedgerError>;

    /// Failed attempts made after `since` (strictly), and the oldest of them.
    async fn redeem_failures(
        &self,
        account: AccountRef,
        since: OffsetDateTime,
    ) -> Result<(i64, Option<OffsetDateTime>), LedgerError>;

    /// Writes expiry transactions for up to `limit` accounts with lots due at `now`; returns the
    /// number of accounts swept.
    async fn expire_due(&self, now: OffsetDateTime, limit: i64) -> Result<u64, LedgerError>;

    /// The app's features, by key.
    async fn features(&self, app: String) -> Result<Vec<Feature>, LedgerError>;

    /// Creates a feature (`create`: an existing key is a conflict) or replaces its name and unit
    /// (its kind never changes).
    async fn put_feature(
        &self,
        app: String,
        spec: FeatureSpec,
        create: bool,
        now: OffsetDateTime,
    ) -> Result<Feature, LedgerError>;

    /// The app's rate versions (of one feature, if given), newest first.
    async fn rates(&self, app: String, feature: Option<String>) -> Result<Vec<Rate>, LedgerError>;

    /// Adds the next version of the rate for the spec's feature and dimensions; the feature must
    /// exist and be metered.
    async fn add_rate(
        &self,
        app: String,
        spec: RateSpec,
        actor: String,
        now: OffsetDateTime,
    ) -> Result<Rate, LedgerError>;

    /// The app's entitlements, each with its scope (see [`crate::usage::FREE_SCOPE`]), in the
    /// order they were set; of one scope, if given.
    async fn entitlements(
        &self,
        app: String,
        scope: Option<String>,
    ) -> Result<Vec<(String, Entitlement)>, LedgerError>;

    /// Replaces a scope's entitlements after checking them against the app's features.
    async fn put_entitlements(
        &self,
        app: String,
        scope: String,
        list: Vec<Entitlement>,
    ) -> Result<Vec<Entitlement>, LedgerError>;

    /// What planning a call for this account needs (features, the rates of the features the
    /// request names, the entitlements in force, windows, use, carries), and the credits the
    /// account can spend now.
    async fn usage_state(
        &self,
        request: UsageRequest,
        now: OffsetDateTime,
    ) -> Result<(UsageState, i64), LedgerError>;

    /// Records a call atomically under the account's lock (see [`crate::usage::quote_usage`]):
    /// allowances, carries, the `ai_usage` transaction, the call and its lines. A known key with
    /// the same request answers the stored outcome.
    async fn track(
        &self,
        request: UsageRequest,
        now: OffsetDateTime,
    ) -> Result<UsageOutcome, LedgerError>;

    /// Reserves what `usage`'s quantities would cost now (see [`crate::usage::quote_usage`]),
    /// under the account's lock, as the hold `reserve` describes (its credits are replaced by
    /// the estimate). `request_hash` identifies the request for replays.
    async fn reserve_usage(
        &self,
        usage: UsageRequest,
        reserve: ReserveRequest,
        request_hash: String,
        now: OffsetDateTime,
    ) -> Result<Hold, LedgerError>;

    /// Captures a hold taken for quantities at the actual quantities, priced by the rates in
    /// force when it was taken; the call is recorded like a `track`. The same quantities again
    /// answer the first capture.
    async fn capture_usage(
        &self,
        app: String,
        hold_id: i64,
        quantities: std::collections::BTreeMap<String, i64>,
        now: OffsetDateTime,
    ) -> Result<(Hold, UsageOutcome, Option<Transaction>), LedgerError>;

    /// The usage invariants' figures (see [`crate::usage::usage_violations`]).
    async fn usage_audit(
        &self,
    ) -> Result<(Vec<AllowanceAudit>, Vec<MeterAudit>, Vec<EventAudit>), LedgerError>;

    /// Per-account figures the invariant checks need.
    async fn audit(&self) -> Result<Vec<AccountAudit>, LedgerError>;

    /// Per app and type, the credits moved by transactions recorded in `[from, to)` of every
    /// registered app (for the operations metrics).
    async fn credit_flows(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<crate::stats::CreditFlow>, LedgerError>;

    /// Whether the database answers.
    async fn ping(&self) -> Result<(), LedgerError>;
}
