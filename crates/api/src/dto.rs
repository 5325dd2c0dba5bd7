//! Wire shapes: what the API reads and writes, with their OpenAPI schemas.

use serde::{Deserialize, Serialize};
use tally_catalog::{
    Coupon, CouponDuration, CouponPatch, CouponSpec, Plan, PlanKind, PlanPatch, PlanSpec,
};
use tally_ledger::{BalanceView, CheckinConfig, Transaction, TxnType};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

pub(crate) use tally_kernel::rfc3339;

/// Credits expiring at one instant.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExpiringDto {
    /// Credits.
    pub amount: i64,
    /// RFC 3339 instant.
    pub expires_at: String,
}

/// `GET /credits/balance`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceDto {
    /// Credits owned now.
    pub balance: i64,
    /// Credits spendable now (balance minus held).
    pub available: i64,
    /// Credits reserved by holds.
    pub held: i64,
    /// The soonest expiries, grouped by instant, soonest first: all of them on an account with at
    /// most 8 lots that expire, else the whole instants among its 8 soonest-expiring lots (at
    /// least the soonest).
    pub expiring: Vec<ExpiringDto>,
}

impl From<BalanceView> for BalanceDto {
    fn from(v: BalanceView) -> Self {
        Self {
            balance: v.balance,
            available: v.available,
            held: v.held,
            expiring: v
                .expiring
                .into_iter()
                .map(|e| ExpiringDto {
                    amount: e.amount,
                    expires_at: rfc3339(e.expires_at),
                })
                .collect(),
        }
    }
}

/// One history row.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionDto {
    /// Transaction id.
    pub id: String,
    /// `ai_usage`, `checkin`, `subscription`, `purchase`, `admin_adjustment`, `refund`,
    /// `expiry`, `redemption` or `reward`.
    #[serde(rename = "type")]
    pub txn_type: String,
    /// Signed change.
    pub amount: i64,
    /// Balance right after.
    pub balance_after: i64,
    /// Description.
    pub description: String,
    /// Metadata given with the movement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// RFC 3339 instant.
    pub created_at: String,
}

impl From<Transaction> for TransactionDto {
    fn from(t: Transaction) -> Self {
        Self {
            id: t.id.to_string(),
            txn_type: t.txn_type.as_str().to_owned(),
            amount: t.amount,
            balance_after: t.balance_after,
            description: t.description,
            metadata: t.metadata,
            created_at: rfc3339(t.created_at),
        }
    }
}

/// One history row as admins and services see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminTransactionDto {
    /// The row.
    #[serde(flatten)]
    pub transaction: TransactionDto,
    /// Whose account.
    pub user_id: String,
    /// Who asked for it (admin user id), if recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The idempotency key it was made with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl From<Transaction> for AdminTransactionDto {
    fn from(t: Transaction) -> Self {
        let (user_id, actor, idempotency_key) =
            (t.user.clone(), t.actor.clone(), t.idempotency_key.clone());
        Self {
            transaction: t.into(),
            user_id,
            actor,
            idempotency_key,
        }
    }
}

/// The `before` cursor of a history page: a transaction id as the API writes it (a positive
/// integer in a string).
pub(crate) fn before_cursor(before: Option<&str>) -> Result<Option<i64>, ApiError> {
    before_cursor_named(before, "a transaction id")
}

/// A `before` cursor that is a positive integer id; `what` names it in the error.
pub(crate) fn before_cursor_named(
    before: Option<&str>,
    what: &str,
) -> Result<Option<i64>, ApiError> {
    before
        .map(|s| {
            s.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| s.parse::<i64>().ok())
                .flatten()
                .filter(|id| *id > 0)
                .ok_or_else(|| ApiError::validation("before", format!("must be {what}")))
        })
        .transpose()
}

/// Pagination and filters of `GET /credits/transactions`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// ≥ 0, default 0. Must be 0 or absent with `before`.
    #[param(minimum = 0, maximum = 1_000_000)]
    pub offset: Option<i64>,
    /// Keyset cursor: a transaction id (`meta.next_before` of the previous page); the page
    /// holds the rows older than it.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub before: Option<String>,
    /// Only this transaction type.
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = txn_type_names)]
    pub txn_type: Option<String>,
}

/// A transaction type's wire name.
fn txn_type_names() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some("Only this transaction type."))
        .enum_values(Some(TxnType::ALL.iter().map(|t| t.as_str())))
        .build()
}

/// Filters of `GET /admin/credits/transactions`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AdminHistoryQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// ≥ 0, default 0. Must be 0 or absent with `before`.
    #[param(minimum = 0, maximum = 1_000_000)]
    pub offset: Option<i64>,
    /// Keyset cursor: a transaction id (`meta.next_before` of the previous page); the page
    /// holds the rows older than it.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub before: Option<String>,
    /// Only this transaction type.
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = txn_type_names)]
    pub txn_type: Option<String>,
    /// Only this user.
    pub user_id: Option<String>,
    /// Created at or after (RFC 3339).
    pub from: Option<String>,
    /// Created before (RFC 3339).
    pub to: Option<String>,
}

/// `POST /checkin`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckinDto {
    /// Credits awarded.
    pub awarded: i64,
    /// Balance after the award.
    pub balance: i64,
    /// Consecutive local days including today.
    pub streak: i64,
    /// Local day claimed, `YYYY-MM-DD`.
    pub day: String,
    /// Start of the next local day (RFC 3339, UTC).
    pub next_checkin_at: String,
}

/// `GET /checkin/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckinStatusDto {
    /// Whether today's check-in is done.
    pub checked_in_today: bool,
    /// Running streak; 0 once broken.
    pub streak: i64,
    /// Reward of the next check-in.
    pub next_reward: i64,
    /// Today, local, `YYYY-MM-DD`.
    pub day: String,
    /// When the next check-in is possible (RFC 3339).
    pub next_checkin_at: String,
    /// Whether check-in is enabled for the app.
    pub enabled: bool,
}

impl From<tally_ledger::CheckinStatus> for CheckinStatusDto {
    fn from(s: tally_ledger::CheckinStatus) -> Self {
        Self {
            checked_in_today: s.checked_in_today,
            streak: s.streak,
            next_reward: s.next_reward,
            day: s.day.to_string(),
            next_checkin_at: rfc3339(s.next_checkin_at),
            enabled: s.enabled,
        }
    }
}

/// Check-in configuration of an app.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckinConfigDto {
    /// Whether users may check in.
    pub enabled: bool,
    /// Reward for streak day 1, 2, …; the last value repeats.
    #[schema(min_items = 1, max_items = 366)]
    pub rewards: Vec<i64>,
    /// IANA time zone deciding where a day starts.
    #[schema(max_length = 64)]
    pub timezone: String,
    /// Days until check-in credits expire; null = never.
    #[schema(minimum = 1, maximum = 3650)]
    pub credits_expire_days: Option<u32>,
}

impl From<CheckinConfig> for CheckinConfigDto {
    fn from(c: CheckinConfig) -> Self {
        Self {
            enabled: c.enabled,
            rewards: c.rewards,
            timezone: c.timezone,
            credits_expire_days: c.credits_expire_days,
        }
    }
}

impl From<CheckinConfigDto> for CheckinConfig {
    fn from(c: CheckinConfigDto) -> Self {
        Self {
            enabled: c.enabled,
            rewards: c.rewards,
            timezone: c.timezone,
            credits_expire_days: c.credits_expire_days,
        }
    }
}

/// `POST /admin/credits/manual`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualAdjustmentRequest {
    /// Whose balance.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub user_id: String,
    /// Signed, non-zero credits.
    #[schema(minimum = -1_000_000_000_000_i64, maximum = 1_000_000_000_000_i64)]
    pub amount: i64,
    /// Why (shown in the history): not blank.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub description: String,
    /// Expiry of granted credits (RFC 3339); positive amounts only.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// Idempotency key (or the `Idempotency-Key` header).
    #[schema(min_length = 1, max_length = 255, pattern = r"^[!-~]*$")]
    pub idempotency_key: Option<String>,
    /// Let a negative adjustment take the balance below zero.
    #[serde(default)]
    pub allow_negative: bool,
}

/// `POST /internal/credits/check`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Whose balance.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub user_id: String,
    /// Credits the call would cost.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount: i64,
}

/// `POST /internal/credits/check` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckDto {
    /// Whether `available >= amount`.
    pub sufficient: bool,
    /// Current balance.
    pub balance: i64,
    /// Spendable now.
    pub available: i64,
}

/// `POST /internal/credits/consume`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeRequest {
    /// Whose balance.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub user_id: String,
    /// Positive credits to deduct.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount: i64,
    /// Shown in the history, e.g. "AI chat completion (gpt-4)".
    #[schema(max_length = 500, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub description: String,
    /// One key, one charge (or the `Idempotency-Key` header): 1–255 printable ASCII characters.
    #[schema(value_type = String, min_length = 1, max_length = 255, pattern = r"^[!-~]*$")]
    pub idempotency_key: Option<String>,
    /// JSON object stored with the transaction, at most 4,096 bytes as JSON.
    #[schema(value_type = Option<std::collections::HashMap<String, serde_json::Value>>)]
    pub metadata: Option<serde_json::Value>,
}

/// `POST /internal/credits/grant`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// Whose balance.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub user_id: String,
    /// Positive credits to grant.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount: i64,
    /// Shown in the history.
    #[schema(max_length = 500, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub description: String,
    /// One key, one grant (or the `Idempotency-Key` header): 1–255 printable ASCII characters.
    #[schema(value_type = String, min_length = 1, max_length = 255, pattern = r"^[!-~]*$")]
    pub idempotency_key: Option<String>,
    /// When the granted credits expire (RFC 3339); absent = never.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// JSON object stored with the transaction, at most 4,096 bytes as JSON.
    #[schema(value_type = Option<std::collections::HashMap<String, serde_json::Value>>)]
    pub metadata: Option<serde_json::Value>,
}

/// A hold.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldDto {
    /// Hold id.
    pub id: String,
    /// Whose credits.
    pub user_id: String,
    /// Credits reserved.
    pub amount: i64,
    /// Credits charged on capture.
    pub captured: Option<i64>,
    /// `active`, `captured`, `released` or `expired`.
    pub status: String,
    /// What it is for.
    pub description: String,
    /// Metadata given at reservation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// The `ai_usage` transaction of the capture.
    pub transaction_id: Option<String>,
    /// When an active hold releases itself (RFC 3339).
    pub expires_at: String,
    /// When it was made.
    pub created_at: String,
    /// When its status last changed.
    pub updated_at: String,
}

impl From<tally_ledger::Hold> for HoldDto {
    fn from(h: tally_ledger::Hold) -> Self {
        Self {
            id: h.id.to_string(),
            user_id: h.user,
            amount: h.amount,
            captured: h.captured,
            status: h.status.as_str().to_owned(),
            description: h.description,
            metadata: h.metadata,
            transaction_id: h.transaction_id.map(|id| id.to_string()),
            expires_at: rfc3339(h.expires_at),
            created_at: rfc3339(h.created_at),
            updated_at: rfc3339(h.updated_at),
        }
    }
}

/// `POST /internal/credits/holds`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequestDto {
    /// Whose credits.
    pub user_id: String,
    /// Credits to reserve (the estimate); or give `quantities` instead.
    pub amount: Option<i64>,
    /// The call's estimated usage, metered feature → quantity: Tally reserves what it would
    /// cost now (allowances first, then the rates; 0 when the allowances cover it). Capture
    /// such a hold with the actual `quantities`.
    pub quantities: Option<std::collections::BTreeMap<String, i64>>,
    /// With `quantities`: what selects the rates, e.g. `{"model": "gpt-4o"}`.
    pub dimensions: Option<std::collections::BTreeMap<String, String>>,
    /// Seconds until the hold releases itself (1–86400, default 300).
    pub ttl_seconds: Option<i64>,
    /// What it is for; also the default description of the capture.
    #[serde(default)]
    pub description: String,
    /// Idempotency key (or the `Idempotency-Key` header).
    pub idempotency_key: Option<String>,
    /// JSON object stored with the hold.
    pub metadata: Option<serde_json::Value>,
}

/// `POST /internal/credits/holds/{id}/capture`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequestDto {
    /// The real cost, ≥ 0 (a hold reserved with `amount`).
    pub amount: Option<i64>,
    /// The call's actual usage (a hold reserved with `quantities`): priced by the rates in
    /// force when the hold was taken, allowances first.
    pub quantities: Option<std::collections::BTreeMap<String, i64>>,
    /// Description of the `ai_usage` transaction (default: the hold's).
    pub description: Option<String>,
    /// Metadata of the transaction (default: the hold's).
    pub metadata: Option<serde_json::Value>,
}

/// A settled hold and the usage it charged.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaptureDto {
    /// The hold, now `captured`.
    pub hold: HoldDto,
    /// The `ai_usage` transaction (absent for a capture of 0).
    pub transaction: Option<AdminTransactionDto>,
    /// What a capture of `quantities` charged per feature (absent for `amount`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::pricing_dto::UsageTrackDto>,
}

/// `POST /admin/credits/codes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBatchDto {
    /// How many codes (1–1000).
    #[schema(minimum = 1, maximum = 1000)]
    pub count: i64,
    /// Credits per redemption.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub credits: i64,
    /// Redemptions per code (default 1); each user at most once.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_uses: Option<i64>,
    /// When the codes stop redeeming (RFC 3339), in the future.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// Days until redeemed credits expire (1–3650); null = never.
    #[schema(minimum = 1, maximum = 3650)]
    pub credits_expire_days: Option<u32>,
    /// History description of the grant.
    #[serde(default)]
    #[schema(max_length = 500, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub description: String,
}

/// A redemption code.
#[derive(Debug, Serialize, ToSchema)]
pub struct CodeDto {
    /// Id.
    pub id: String,
    /// The code, `XXXX-XXXX-XXXX`.
    pub code: String,
    /// Batch it came from.
    pub batch: String,
    /// Credits per redemption.
    pub credits: i64,
    /// Redemptions allowed.
    pub max_uses: i64,
    /// Redemptions so far.
    pub uses: i64,
    /// When it stops redeeming.
    pub expires_at: Option<String>,
    /// Days until redeemed credits expire.
    pub credits_expire_days: Option<u32>,
    /// History description.
    pub description: String,
    /// Admin who created it.
    pub created_by: String,
    /// When.
    pub created_at: String,
}

impl From<tally_ledger::RedemptionCode> for CodeDto {
    fn from(c: tally_ledger::RedemptionCode) -> Self {
        Self {
            id: c.id.to_string(),
            code: c.code,
            batch: c.batch,
            credits: c.credits,
            max_uses: c.max_uses,
            uses: c.uses,
            expires_at: c.expires_at.map(rfc3339),
            credits_expire_days: c.credits_expire_days,
            description: c.description,
            created_by: c.created_by,
            created_at: rfc3339(c.created_at),
        }
    }
}

/// Pagination.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// ≥ 0, default 0.
    #[param(minimum = 0, maximum = 1_000_000)]
    pub offset: Option<i64>,
}

/// `POST /credits/redeem`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequestDto {
    /// The code; case, spaces and dashes do not matter.
    pub code: String,
}

/// A successful redemption.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedeemDto {
    /// Credits granted.
    pub credits: i64,
    /// Balance after the grant.
    pub balance: i64,
    /// The `redemption` transaction.
    pub transaction: TransactionDto,
}

// ---------------------------------------------------------------------------------------------
// Catalog: plans and coupons

/// Reads a field that may be absent (keep), `null` (clear) or a value (replace).
fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Reads a field that may be absent (keep) or a value (replace), but not `null`.
pub(crate) fn given<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    T::deserialize(d).map(Some)
}

/// What a plan sells.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanKindDto {
    /// Recurring, billed monthly or yearly.
    Subscription,
    /// A one-time pack of credits.
    CreditPack,
}

impl From<PlanKindDto> for PlanKind {
    fn from(k: PlanKindDto) -> Self {
        match k {
            PlanKindDto::Subscription => PlanKind::Subscription,
            PlanKindDto::CreditPack => PlanKind::CreditPack,
        }
    }
}

/// A plan as users see it (`GET /subscription/plans`); admin views add who wrote it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanDto {
    /// Plan id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Display description.
    pub description: String,
    /// `subscription` or `credit_pack`.
    pub kind: String,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// Monthly price in minor units (subscriptions).
    pub price_monthly: Option<i64>,
    /// Yearly price in minor units (subscriptions).
    pub price_yearly: Option<i64>,
    /// One-time price in minor units (credit packs).
    pub price: Option<i64>,
    /// Credits granted per period (subscriptions) or per pack.
    pub credits_included: i64,
    /// Selling points.
    pub features: Vec<String>,
    /// Stripe price of the monthly subscription.
    pub stripe_price_id_monthly: Option<String>,
    /// Stripe price of the yearly subscription.
    pub stripe_price_id_yearly: Option<String>,
    /// Stripe price of the pack.
    pub stripe_price_id: Option<String>,
    /// Creem product of the monthly subscription.
    pub creem_product_id_monthly: Option<String>,
    /// Creem product of the yearly subscription.
    pub creem_product_id_yearly: Option<String>,
    /// Creem product of the pack.
    pub creem_product_id: Option<String>,
    /// Whether users see and may buy it.
    pub active: bool,
    /// Position in listings, ascending.
    pub sort_order: i64,
    /// Days until granted credits expire; null = never.
    pub credits_expire_days: Option<u32>,
    /// Days of free trial a new subscription starts with; null = none.
    pub trial_days: Option<u32>,
    /// Credits granted once when a trial starts.
    pub trial_credits: i64,
    /// What the plan includes of each feature, structured (see `GET /entitlements`); empty
    /// when it lists none (its subscribers then get the free tier's).
    pub entitlements: Vec<crate::pricing_dto::EntitlementDto>,
    /// RFC 3339 instant.
    pub created_at: String,
    /// RFC 3339 instant.
    pub updated_at: String,
}

impl From<Plan> for PlanDto {
    fn from(p: Plan) -> Self {
        Self {
            id: p.id,
            name: p.name,
            description: p.description,
            kind: p.kind.as_str().to_owned(),
            currency: p.currency,
            price_monthly: p.price_monthly,
            price_yearly: p.price_yearly,
            price: p.price,
            credits_included: p.credits_included,
            features: p.features,
            stripe_price_id_monthly: p.stripe_price_id_monthly,
            stripe_price_id_yearly: p.stripe_price_id_yearly,
            stripe_price_id: p.stripe_price_id,
            creem_product_id_monthly: p.creem_product_id_monthly,
            creem_product_id_yearly: p.creem_product_id_yearly,
            creem_product_id: p.creem_product_id,
            active: p.active,
            sort_order: p.sort_order,
            credits_expire_days: p.credits_expire_days,
            trial_days: p.trial_days,
            trial_credits: p.trial_credits,
            entitlements: Vec::new(),
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
        }
    }
}

/// A plan as admins see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminPlanDto {
    /// The plan.
    #[serde(flatten)]
    pub plan: PlanDto,
    /// The admin who created it.
    pub created_by: String,
    /// The admin who changed it last.
    pub updated_by: String,
}

impl From<Plan> for AdminPlanDto {
    fn from(p: Plan) -> Self {
        let (created_by, updated_by) = (p.created_by.clone(), p.updated_by.clone());
        Self {
            plan: p.into(),
            created_by,
            updated_by,
        }
    }
}

/// `POST /admin/billing/plans`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlanRequest {
    /// Display name, 1–100 characters, not blank, without control characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*\\S[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: String,
    /// Up to 1000 characters; default empty.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub description: String,
    /// `subscription` (needs `price_monthly` and/or `price_yearly`) or `credit_pack` (needs
    /// `price`).
    pub kind: PlanKindDto,
    /// Lower-case ISO 4217 code (upper case is accepted and lowered); default: the app's
    /// currency (`PUT /admin/apps/{key}`).
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String, required = false, pattern = "^[A-Za-z]{3}$")]
    pub currency: Option<String>,
    /// Monthly price in minor units, ≥ 0.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_monthly: Option<i64>,
    /// Yearly price in minor units, ≥ 0.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_yearly: Option<i64>,
    /// Pack price in minor units, ≥ 0.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price: Option<i64>,
    /// Credits per period or pack, ≥ 0; default 0.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub credits_included: i64,
    /// Selling points, at most 50; default none.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub features: Vec<String>,
    /// Stripe price of the monthly subscription.
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub stripe_price_id_monthly: Option<String>,
    /// Stripe price of the yearly subscription.
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub stripe_price_id_yearly: Option<String>,
    /// Stripe price of the pack.
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub stripe_price_id: Option<String>,
    /// Creem product of the monthly subscription.
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub creem_product_id_monthly: Option<String>,
    /// Creem product of the yearly subscription.
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub creem_product_id_yearly: Option<String>,
    /// Creem product of the pack.
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub creem_product_id: Option<String>,
    /// Default true.
    #[serde(default = "yes")]
    pub active: bool,
    /// Default 0.
    #[serde(default)]
    pub sort_order: i64,
    /// 1–3650 days, or null (default) for never.
    #[schema(minimum = 1, maximum = 3650)]
    pub credits_expire_days: Option<u32>,
    /// Subscriptions: 1–730 days of free trial each new subscription starts with (Stripe
    /// `trial_period_days`), or null (default) for none.
    #[schema(minimum = 1, maximum = 730)]
    pub trial_days: Option<u32>,
    /// Credits granted once when a trial starts, ≥ 0; default 0. Needs `trial_days`.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub trial_credits: i64,
    /// What the plan includes of each feature (features from `/admin/pricing/features`); at
    /// most 100. Default none: subscribers get the free tier's.
    #[serde(default)]
    pub entitlements: Option<Vec<crate::pricing_dto::EntitlementDto>>,
}

fn yes() -> bool {
    true
}

impl From<CreatePlanRequest> for PlanSpec {
    fn from(r: CreatePlanRequest) -> Self {
        Self {
            name: r.name,
            description: r.description,
            kind: r.kind.into(),
            currency: r
                .currency
                .unwrap_or_else(|| tally_catalog::app::DEFAULT_CURRENCY.to_owned()),
            price_monthly: r.price_monthly,
            price_yearly: r.price_yearly,
            price: r.price,
            credits_included: r.credits_included,
            features: r.features,
            stripe_price_id_monthly: r.stripe_price_id_monthly,
            stripe_price_id_yearly: r.stripe_price_id_yearly,
            stripe_price_id: r.stripe_price_id,
            creem_product_id_monthly: r.creem_product_id_monthly,
            creem_product_id_yearly: r.creem_product_id_yearly,
            creem_product_id: r.creem_product_id,
            active: r.active,
            sort_order: r.sort_order,
            credits_expire_days: r.credits_expire_days,
            trial_days: r.trial_days,
            trial_credits: r.trial_credits,
        }
    }
}

/// `PUT /admin/billing/plans/{id}`: fields given replace, fields omitted stay; `null` clears a
/// nullable field (and is refused for the others). The merged plan must be valid as a whole.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlanRequest {
    /// Display name, 1–100 characters, not blank, without control characters.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String, required = false, min_length = 1, max_length = 100, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*\\S[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub name: Option<String>,
    /// Display description, at most 1000 characters.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String, required = false, max_length = 1000)]
    pub description: Option<String>,
    /// Kind; the other kind's prices must be cleared in the same request.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = PlanKindDto, required = false)]
    pub kind: Option<PlanKindDto>,
    /// Currency.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String, required = false, pattern = "^[A-Za-z]{3}$")]
    pub currency: Option<String>,
    /// Monthly price, or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_monthly: Option<Option<i64>>,
    /// Yearly price, or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_yearly: Option<Option<i64>>,
    /// Pack price, or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price: Option<Option<i64>>,
    /// Credits per period or pack.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = i64, required = false, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub credits_included: Option<i64>,
    /// The whole new list.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Vec<String>, required = false, max_items = 50)]
    pub features: Option<Vec<String>>,
    /// Stripe monthly price id, or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub stripe_price_id_monthly: Option<Option<String>>,
    /// Stripe yearly price id, or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub stripe_price_id_yearly: Option<Option<String>>,
    /// Stripe pack price id, or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub stripe_price_id: Option<Option<String>>,
    /// Creem monthly product id, or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub creem_product_id_monthly: Option<Option<String>>,
    /// Creem yearly product id, or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub creem_product_id_yearly: Option<Option<String>>,
    /// Creem pack product id, or null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub creem_product_id: Option<Option<String>>,
    /// Visibility.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = bool, required = false)]
    pub active: Option<bool>,
    /// Position.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = i64, required = false)]
    pub sort_order: Option<i64>,
    /// 1–3650 days, or null for never.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 3650)]
    pub credits_expire_days: Option<Option<u32>>,
    /// 1–730 days of free trial, or null for none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 730)]
    pub trial_days: Option<Option<u32>>,
    /// Credits granted once when a trial starts.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = i64, required = false, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub trial_credits: Option<i64>,
    /// The whole new list of what the plan includes (`[]` clears it).
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Vec<crate::pricing_dto::EntitlementDto>, required = false)]
    pub entitlements: Option<Vec<crate::pricing_dto::EntitlementDto>>,
}

impl From<UpdatePlanRequest> for PlanPatch {
    fn from(r: UpdatePlanRequest) -> Self {
        Self {
            name: r.name,
            description: r.description,
            kind: r.kind.map(Into::into),
            currency: r.currency,
            price_monthly: r.price_monthly,
            price_yearly: r.price_yearly,
            price: r.price,
            credits_included: r.credits_included,
            features: r.features,
            stripe_price_id_monthly: r.stripe_price_id_monthly,
            stripe_price_id_yearly: r.stripe_price_id_yearly,
            stripe_price_id: r.stripe_price_id,
            creem_product_id_monthly: r.creem_product_id_monthly,
            creem_product_id_yearly: r.creem_product_id_yearly,
            creem_product_id: r.creem_product_id,
            active: r.active,
            sort_order: r.sort_order,
            credits_expire_days: r.credits_expire_days,
            trial_days: r.trial_days,
            trial_credits: r.trial_credits,
        }
    }
}

/// How long a coupon's discount lasts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CouponDurationDto {
    /// The first payment only.
    Once,
    /// The first `duration_months` months.
    Repeating,
    /// Every payment.
    Forever,
}

impl From<CouponDurationDto> for CouponDuration {
    fn from(d: CouponDurationDto) -> Self {
        match d {
            CouponDurationDto::Once => CouponDuration::Once,
            CouponDurationDto::Repeating => CouponDuration::Repeating,
            CouponDurationDto::Forever => CouponDuration::Forever,
        }
    }
}

/// `POST /admin/billing/coupons`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCouponRequest {
    /// 1–64 of `A-Z a-z 0-9 _ -`; stored upper-case; unique within the app.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub code: String,
    /// 1–100; exclusive with `amount_off`.
    #[schema(minimum = 1, maximum = 100)]
    pub percent_off: Option<i64>,
    /// Minor units off, > 0; exclusive with `percent_off`; needs `currency`.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount_off: Option<i64>,
    /// Currency of `amount_off` (lower-case ISO 4217).
    #[schema(pattern = "^[A-Za-z]{3}$")]
    pub currency: Option<String>,
    /// `once`, `repeating` or `forever`.
    pub duration: CouponDurationDto,
    /// 1–36; required iff `duration` is `repeating`.
    #[schema(minimum = 1, maximum = 36)]
    pub duration_months: Option<u32>,
    /// ≥ 1; absent = unlimited.
    #[schema(minimum = 1)]
    pub max_redemptions: Option<i64>,
    /// RFC 3339, in the future; absent = never.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// Plans of the app it applies to; empty or absent = all.
    #[serde(default)]
    pub plan_ids: Vec<String>,
    /// Default true.
    #[serde(default = "yes")]
    pub active: bool,
}

/// Reads an RFC 3339 instant that may be absent (keep), `null` (clear) or a value (replace).
fn present_instant<'de, D>(d: D) -> Result<Option<Option<OffsetDateTime>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    time::serde::rfc3339::option::deserialize(d).map(Some)
}

/// `PUT /admin/billing/coupons/{id}`: what may change on a coupon; fields omitted stay. The
/// code, the discount and its duration are fixed at creation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCouponRequest {
    /// `false` switches the coupon off: checkout refuses it with `COUPON_INVALID`.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = bool, required = false)]
    pub active: Option<bool>,
    /// ≥ 1 and ≥ the redemptions so far, or null for unlimited.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub max_redemptions: Option<Option<i64>>,
    /// RFC 3339, in the future, or null for never.
    #[serde(default, deserialize_with = "present_instant")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// The whole new list of plans it applies to; empty = all.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Vec<String>, required = false)]
    pub plan_ids: Option<Vec<String>>,
}

impl From<UpdateCouponRequest> for CouponPatch {
    fn from(r: UpdateCouponRequest) -> Self {
        Self {
            active: r.active,
            max_redemptions: r.max_redemptions,
            expires_at: r.expires_at,
            plan_ids: r.plan_ids,
        }
    }
}

impl From<CreateCouponRequest> for CouponSpec {
    fn from(r: CreateCouponRequest) -> Self {
        Self {
            code: r.code,
            percent_off: r.percent_off,
            amount_off: r.amount_off,
            currency: r.currency,
            duration: r.duration.into(),
            duration_months: r.duration_months,
            max_redemptions: r.max_redemptions,
            expires_at: r.expires_at,
            plan_ids: r.plan_ids,
            active: r.active,
        }
    }
}

/// A coupon.
#[derive(Debug, Serialize, ToSchema)]
pub struct CouponDto {
    /// Coupon id.
    pub id: String,
    /// Upper-case code.
    pub code: String,
    /// Percentage off.
    pub percent_off: Option<i64>,
    /// Minor units off.
    pub amount_off: Option<i64>,
    /// Currency of `amount_off`.
    pub currency: Option<String>,
    /// `once`, `repeating` or `forever`.
    pub duration: String,
    /// Months, for `repeating`.
    pub duration_months: Option<u32>,
    /// Total redemptions allowed; null = unlimited.
    pub max_redemptions: Option<i64>,
    /// Redemptions so far.
    pub times_redeemed: i64,
    /// RFC 3339 instant; null = never.
    pub expires_at: Option<String>,
    /// Plans it applies to; empty = all.
    pub plan_ids: Vec<String>,
    /// Whether it may be redeemed.
    pub active: bool,
    /// The admin who created it.
    pub created_by: String,
    /// RFC 3339 instant.
    pub created_at: String,
}

impl From<Coupon> for CouponDto {
    fn from(c: Coupon) -> Self {
        Self {
            id: c.id,
            code: c.code,
            percent_off: c.percent_off,
            amount_off: c.amount_off,
            currency: c.currency,
            duration: c.duration.as_str().to_owned(),
            duration_months: c.duration_months,
            max_redemptions: c.max_redemptions,
            times_redeemed: c.times_redeemed,
            expires_at: c.expires_at.map(rfc3339),
            plan_ids: c.plan_ids,
            active: c.active,
            created_by: c.created_by,
            created_at: rfc3339(c.created_at),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Operators' view of accounts

/// One account in `GET /admin/users`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserDto {
    /// The user id.
    pub user_id: String,
    /// Cached balance (credits owned; expired lots leave at the next movement or sweep).
    pub balance: i64,
    /// Credits reserved by holds.
    pub held: i64,
    /// RFC 3339: the account's first movement or hold.
    pub created_at: String,
    /// RFC 3339: its last movement or hold change.
    pub last_activity_at: String,
}

impl From<tally_ledger::AccountSummary> for AdminUserDto {
    fn from(a: tally_ledger::AccountSummary) -> Self {
        Self {
            user_id: a.user,
            balance: a.balance,
            held: a.held,
            created_at: rfc3339(a.created_at),
            last_activity_at: rfc3339(a.updated_at),
        }
    }
}

/// A live lot: credits granted and not yet spent or expired.
#[derive(Debug, Serialize, ToSchema)]
pub struct LotDto {
    /// Lot id.
    pub id: String,
    /// Credits left.
    pub remaining: i64,
    /// RFC 3339, or null for never.
    pub expires_at: Option<String>,
}

/// An active hold on the account.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveHoldDto {
    /// Hold id.
    pub id: String,
    /// Credits reserved.
    pub amount: i64,
    /// RFC 3339: when it releases itself.
    pub expires_at: String,
}

/// `GET /admin/users/{user_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserDetailDto {
    /// The account.
    #[serde(flatten)]
    pub user: AdminUserDto,
    /// The balance as the user sees it now.
    pub credits: BalanceDto,
    /// Live lots in the order they are spent (due, soonest-expiring, then the oldest that never
    /// expire), at most 100.
    pub lots: Vec<LotDto>,
    /// Active holds, soonest to run out first, at most 100.
    pub holds: Vec<ActiveHoldDto>,
    /// The daily check-in as the user sees it.
    pub checkin: CheckinStatusDto,
    /// The current subscription, or null.
    pub subscription: Option<crate::checkout_dto::SubscriptionDto>,
    /// The 10 latest orders, newest first.
    pub orders: Vec<crate::checkout_dto::OrderDto>,
}

impl AdminUserDetailDto {
    /// Lots and holds as the account view holds them.
    pub fn lots_and_holds(view: &tally_ledger::AccountView) -> (Vec<LotDto>, Vec<ActiveHoldDto>) {
        let lots = view
            .lots
            .iter()
            .map(|l| LotDto {
                id: l.id.to_string(),
                remaining: l.remaining,
                expires_at: l.expires_at.map(rfc3339),
            })
            .collect();
        let holds = view
            .holds
            .iter()
            .map(|h| ActiveHoldDto {
                id: h.id.to_string(),
                amount: h.amount,
                expires_at: rfc3339(h.expires_at),
            })
            .collect();
        (lots, holds)
    }
}

/// Search and pages of `GET /admin/users`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AdminUserQuery {
    /// Only user ids starting with this (case-sensitive).
    pub query: Option<String>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Keyset cursor: a user id (`meta.next_before` of the previous page); the page holds the
    /// accounts opened before it.
    pub before: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// `GET /admin/stats` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    /// First day, `YYYY-MM-DD` (UTC); default 29 days before `to`.
    #[param(pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub from: Option<String>,
    /// Last day, inclusive, `YYYY-MM-DD` (UTC); default today.
    #[param(pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    pub to: Option<String>,
    /// `day` (default), `week` (Monday to Sunday) or `month`.
    #[param(pattern = "^(day|week|month)$")]
    pub bucket: Option<String>,
}

/// Credits moved in one bucket.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditFiguresDto {
    /// Every credit granted (positive movements of any type).
    pub granted: i64,
    /// Credits spent: negative movements other than expiry and refund clawbacks.
    pub spent: i64,
    /// Credits that expired.
    pub expired: i64,
    /// Credits taken back after refunds.
    pub clawed_back: i64,
    /// Net credits per transaction type.
    pub by_type: std::collections::BTreeMap<String, i64>,
}

/// One bucket of `GET /admin/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsBucketDto {
    /// The bucket's first day within the range, `YYYY-MM-DD`.
    pub start: String,
    /// Credits moved.
    pub credits: CreditFiguresDto,
    /// Payments received minus refunds, per currency, minor units.
    pub revenue: std::collections::BTreeMap<String, i64>,
    /// Accounts opened.
    pub new_accounts: i64,
    /// Check-ins.
    pub checkins: i64,
    /// Subscriptions started.
    pub subscriptions_started: i64,
}

/// `GET /admin/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsDto {
    /// First day.
    pub from: String,
    /// Last day (inclusive).
    pub to: String,
    /// `day`, `week` or `month`.
    pub bucket: String,
    /// Every bucket of the range, empty ones included, oldest first.
    pub buckets: Vec<StatsBucketDto>,
    /// Subscriptions active or trialing now.
    pub active_subscriptions: i64,
}

impl StatsDto {
    /// The wire form of a range's statistics.
    pub fn new(query: &tally_ledger::stats::StatsQuery, stats: tally_ledger::stats::Stats) -> Self {
        Self {
            from: query.from.to_string(),
            to: query.to.to_string(),
            bucket: query.bucket.as_str().to_owned(),
            buckets: stats
                .buckets
                .into_iter()
                .map(|b| StatsBucketDto {
                    start: b.start.to_string(),
                    credits: CreditFiguresDto {
                        granted: b.credits.granted,
                        spent: b.credits.spent,
                        expired: b.credits.expired,
                        clawed_back: b.credits.clawed_back,
                        by_type: b.credits.by_type,
                    },
                    revenue: b.revenue,
                    new_accounts: b.new_accounts,
                    checkins: b.checkins,
                    subscriptions_started: b.subscriptions_started,
                })
                .collect(),
            active_subscriptions: stats.active_subscriptions,
        }
    }
}
