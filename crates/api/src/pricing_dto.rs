//! Wire types of pricing and usage: features, rates, entitlements, the service API's usage check
//! and track, and the user's entitlements.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tally_ledger::pricing::{Feature, FeatureKind, FeatureSpec, Rate, RateSpec, Tier};
use tally_ledger::usage::{
    Entitlement, FeatureStatus, Overage, Reset, TrackedLine, UsageOutcome, UsageQuote,
};
use tally_ledger::{AccountRef, UsageCheck};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use crate::dto::rfc3339;
use crate::error::ApiError;

/// How a feature is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKindDto {
    /// One quantity with a unit, priced by rates.
    Metered,
    /// Granted or not.
    Boolean,
}

impl From<FeatureKindDto> for FeatureKind {
    fn from(k: FeatureKindDto) -> Self {
        match k {
            FeatureKindDto::Metered => FeatureKind::Metered,
            FeatureKindDto::Boolean => FeatureKind::Boolean,
        }
    }
}

/// A feature of the app.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureDto {
    /// Stable identifier.
    pub key: String,
    /// Display name.
    pub name: String,
    /// `metered` or `boolean`.
    pub kind: String,
    /// Unit of a metered feature.
    pub unit: Option<String>,
    /// RFC 3339 instant.
    pub created_at: String,
    /// RFC 3339 instant.
    pub updated_at: String,
}

impl From<Feature> for FeatureDto {
    fn from(f: Feature) -> Self {
        Self {
            key: f.key,
            name: f.name,
            kind: f.kind.as_str().to_owned(),
            unit: f.unit,
            created_at: rfc3339(f.created_at),
            updated_at: rfc3339(f.updated_at),
        }
    }
}

/// `POST /admin/pricing/features` and `PUT /admin/pricing/features/{key}` (where `key` may be
/// omitted, or must equal the path's).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureRequest {
    /// Stable identifier: 1–64 of `a-z`, `0-9`, `_`.
    #[schema(pattern = "^[a-z0-9_]{1,64}$")]
    pub key: Option<String>,
    /// Display name, 1–100 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// `metered` or `boolean`; never changes once created.
    pub kind: FeatureKindDto,
    /// The metered quantity's unit (e.g. `tokens`), up to 32 characters, not blank; none for a
    /// boolean feature.
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub unit: Option<String>,
}

impl FeatureRequest {
    /// The spec, for the key of the path (PUT) or of the body (POST).
    pub fn spec(self, path_key: Option<String>) -> Result<FeatureSpec, ApiError> {
        let key = match (path_key, self.key) {
            (Some(path), Some(body)) if path != body => {
                return Err(ApiError::validation("key", "differs from the path's key"));
            }
            (Some(k), _) | (None, Some(k)) => k,
            (None, None) => return Err(ApiError::validation("key", "is required")),
        };
        Ok(FeatureSpec {
            key,
            name: self.name,
            kind: self.kind.into(),
            unit: self.unit,
        })
    }
}

/// A volume tier: calls of at most `up_to` units are priced, whole, at `credits` per `per`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierDto {
    /// Largest quantity per call the tier prices.
    #[schema(minimum = 1)]
    pub up_to: i64,
    /// Credits per `per` units.
    #[schema(minimum = 0)]
    pub credits: i64,
    /// Units the credits buy; a divisor of 10¹².
    #[schema(minimum = 1)]
    pub per: i64,
}

/// `POST /admin/pricing/rates`: a new version of the rate for `feature` and `dimensions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateRequest {
    /// The metered feature.
    #[schema(pattern = "^[a-z0-9_]{1,64}$")]
    pub feature: String,
    /// What the rate applies to, e.g. `{"model": "gpt-4o"}`; none (default) for the feature's
    /// default rate. At most 8.
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// Credits per `per` units (for calls larger than every tier).
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub credits: i64,
    /// Units the credits buy; a positive divisor of 10¹² (1, 1000, 1000000, …).
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub per: i64,
    /// Volume tiers, `up_to` ascending; at most 16.
    #[serde(default)]
    pub tiers: Vec<TierDto>,
    /// RFC 3339 instant the version takes over; default now. Never in the past.
    pub effective_from: Option<String>,
}

impl RateRequest {
    /// The spec.
    pub fn spec(self) -> Result<RateSpec, ApiError> {
        let effective_from = self
            .effective_from
            .as_deref()
            .map(|s| {
                OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
                    ApiError::validation("effective_from", "must be an RFC 3339 timestamp")
                })
            })
            .transpose()?;
        Ok(RateSpec {
            feature: self.feature,
            dimensions: self.dimensions,
            credits: self.credits,
            per: self.per,
            tiers: self
                .tiers
                .into_iter()
                .map(|t| Tier {
                    up_to: t.up_to,
                    credits: t.credits,
                    per: t.per,
                })
                .collect(),
            effective_from,
        })
    }
}

/// A rate version.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateDto {
    /// The version's id.
    pub id: String,
    /// The metered feature.
    pub feature: String,
    /// 1, 2, … per feature and dimensions.
    pub version: i64,
    /// What it applies to (empty: the feature's default).
    pub dimensions: BTreeMap<String, String>,
    /// Credits per `per` units.
    pub credits: i64,
    /// Units the credits buy.
    pub per: i64,
    /// Volume tiers.
    pub tiers: Vec<TierDto>,
    /// RFC 3339 instant it takes over.
    pub effective_from: String,
    /// RFC 3339 instant.
    pub created_at: String,
    /// The admin who added it.
    pub created_by: String,
}

impl From<Rate> for RateDto {
    fn from(r: Rate) -> Self {
        Self {
            id: r.id.to_string(),
            feature: r.feature,
            version: r.version,
            dimensions: r.dimensions,
            credits: r.credits,
            per: r.per,
            tiers: r
                .tiers
                .into_iter()
                .map(|t| TierDto {
                    up_to: t.up_to,
                    credits: t.credits,
                    per: t.per,
                })
                .collect(),
            effective_from: rfc3339(r.effective_from),
            created_at: rfc3339(r.created_at),
            created_by: r.created_by,
        }
    }
}

/// `GET /admin/pricing/rates` filter.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RateQuery {
    /// Only this feature's versions.
    pub feature: Option<String>,
}

/// When an allowance resets.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResetDto {
    /// Each paid period of the subscription (a calendar month on the free tier).
    Period,
    /// At the app's local midnight (the check-in time zone).
    Day,
    /// On the first of each local calendar month (default).
    #[default]
    Month,
    /// Never: a lifetime allowance.
    Never,
}

/// What happens beyond the allowance.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverageDto {
    /// Charged in credits at the feature's rate (default).
    #[default]
    Credits,
    /// Refused with `ENTITLEMENT_EXCEEDED`.
    Block,
}

/// What a plan or the free tier gives of one feature.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntitlementDto {
    /// The feature's key.
    pub feature: String,
    /// Metered: units included per window (default 0). Boolean: omit (listing grants it).
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub included: Option<i64>,
    /// When the allowance resets; default `month`.
    #[serde(default)]
    pub reset: ResetDto,
    /// Beyond the allowance; default `credits`.
    #[serde(default)]
    pub overage: OverageDto,
}

impl From<EntitlementDto> for Entitlement {
    fn from(e: EntitlementDto) -> Self {
        Self {
            feature: e.feature,
            included: e.included,
            reset: match e.reset {
                ResetDto::Period => Reset::Period,
                ResetDto::Day => Reset::Day,
                ResetDto::Month => Reset::Month,
                ResetDto::Never => Reset::Never,
            },
            overage: match e.overage {
                OverageDto::Credits => Overage::Credits,
                OverageDto::Block => Overage::Block,
            },
        }
    }
}

impl From<Entitlement> for EntitlementDto {
    fn from(e: Entitlement) -> Self {
        Self {
            feature: e.feature,
            included: e.included,
            reset: match e.reset {
                Reset::Period => ResetDto::Period,
                Reset::Day => ResetDto::Day,
                Reset::Month => ResetDto::Month,
                Reset::Never => ResetDto::Never,
            },
            overage: match e.overage {
                Overage::Credits => OverageDto::Credits,
                Overage::Block => OverageDto::Block,
            },
        }
    }
}

/// `PUT /admin/pricing/free-entitlements`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntitlementsRequest {
    /// The whole list (it replaces the stored one); at most 100.
    pub entitlements: Vec<EntitlementDto>,
}

/// `POST /internal/usage/check`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageCheckRequest {
    /// Whose usage.
    pub user_id: String,
    /// Metered feature key → quantity about to be used (integers, 0 to 10¹²).
    #[serde(default)]
    pub quantities: BTreeMap<String, i64>,
    /// Boolean features to test.
    #[serde(default)]
    pub features: Vec<String>,
    /// What selects the rates, e.g. `{"model": "gpt-4o"}`.
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
}

/// One feature of a usage check.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureCheckDto {
    /// Units of the allowance left before the call (null: no allowance).
    pub included_remaining: Option<i64>,
    /// Credits the call would charge for this feature now.
    pub estimated_credits: i64,
    /// Whether the plan grants the feature (boolean features; metered ones always true).
    pub granted: bool,
}

/// `POST /internal/usage/check` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageCheckDto {
    /// Whether a `track` of these quantities would go through now.
    pub allowed: bool,
    /// Why not: `entitlement_exceeded`, `feature_not_included` or `insufficient_credits`.
    pub reason: Option<String>,
    /// Per feature asked about.
    pub features: BTreeMap<String, FeatureCheckDto>,
    /// Credits the call would charge in total.
    pub estimated_credits: i64,
    /// Credits the user can spend now.
    pub available_credits: i64,
}

impl From<UsageCheck> for UsageCheckDto {
    fn from(c: UsageCheck) -> Self {
        let reason = c.reason().map(str::to_owned);
        let allowed = reason.is_none();
        let UsageQuote {
            lines,
            granted,
            credits,
            ..
        } = c.quote;
        let mut features: BTreeMap<String, FeatureCheckDto> = lines
            .into_iter()
            .map(|l| {
                let dto = FeatureCheckDto {
                    included_remaining: l
                        .included
                        .map(|n| (n - l.used_before - l.reserved_by_others).max(0)),
                    estimated_credits: l.credits,
                    granted: true,
                };
                (l.feature, dto)
            })
            .collect();
        for (key, granted) in granted {
            features.insert(
                key,
                FeatureCheckDto {
                    included_remaining: None,
                    estimated_credits: 0,
                    granted,
                },
            );
        }
        Self {
            allowed,
            reason,
            features,
            estimated_credits: credits,
            available_credits: c.available,
        }
    }
}

/// `POST /internal/usage/track`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageTrackRequest {
    /// Whose usage.
    pub user_id: String,
    /// Metered feature key → quantity used (integers, 0 to 10¹²); at least one, at most 32.
    pub quantities: BTreeMap<String, i64>,
    /// What selects the rates, e.g. `{"model": "gpt-4o"}`.
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// Shown in the history, up to 500 characters; default "Usage".
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: String,
    /// A JSON object of at most 4 KiB, stored with the transaction under `metadata`.
    pub metadata: Option<serde_json::Value>,
    /// Required (here or in the `Idempotency-Key` header): a retry answers the original.
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
}

impl UsageTrackRequest {
    /// The domain request for the service's app.
    pub fn into_request(
        self,
        app: String,
        key: String,
    ) -> Result<tally_ledger::usage::UsageRequest, ApiError> {
        Ok(tally_ledger::usage::UsageRequest {
            account: AccountRef::new(app, self.user_id)?,
            quantities: self.quantities,
            features: vec![],
            dimensions: self.dimensions,
            description: self.description,
            metadata: self.metadata,
            idempotency_key: Some(key),
        })
    }
}

/// One feature of a tracked call.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackedFeatureDto {
    /// Units reported.
    pub quantity: i64,
    /// Units the allowance covered.
    pub included_used: i64,
    /// Credits charged for the rest.
    pub credits: i64,
    /// The rate version that priced the rest (null: nothing was priced).
    pub rate_id: Option<String>,
    /// Its version number.
    pub rate_version: Option<i64>,
    /// The price that applied, `credits/per` (e.g. `25/10000`).
    pub price: Option<String>,
}

impl From<TrackedLine> for TrackedFeatureDto {
    fn from(l: TrackedLine) -> Self {
        Self {
            quantity: l.quantity,
            included_used: l.included_used,
            credits: l.credits,
            rate_id: l.rate.map(|r| r.rate_id.to_string()),
            rate_version: l.rate.map(|r| r.version),
            price: l.rate.map(|r| format!("{}/{}", r.credits, r.per)),
        }
    }
}

/// `POST /internal/usage/track` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageTrackDto {
    /// Per feature reported.
    pub features: BTreeMap<String, TrackedFeatureDto>,
    /// Credits charged in total.
    pub credits_charged: i64,
    /// The `ai_usage` transaction (null when everything was inside allowances or rounded
    /// into the carry).
    pub transaction_id: Option<String>,
}

impl From<UsageOutcome> for UsageTrackDto {
    fn from(o: UsageOutcome) -> Self {
        Self {
            features: o
                .lines
                .into_iter()
                .map(|l| (l.feature.clone(), l.into()))
                .collect(),
            credits_charged: o.credits,
            transaction_id: o.transaction_id.map(|id| id.to_string()),
        }
    }
}

/// One feature as the user has it (`GET /entitlements`).
#[derive(Debug, Serialize, ToSchema)]
pub struct EntitlementStatusDto {
    /// The feature's key.
    pub feature: String,
    /// Its display name.
    pub name: String,
    /// `metered` or `boolean`.
    pub kind: String,
    /// Unit of a metered feature.
    pub unit: Option<String>,
    /// Whether the user may use it (metered features always; boolean ones when included).
    pub granted: bool,
    /// Units included per window (null: no allowance).
    pub included: Option<i64>,
    /// Units used in the current window.
    pub used: i64,
    /// Units of it that calls in progress (holds for quantities) set aside.
    pub reserved: i64,
    /// Units left in it, after what is used and set aside (null: no allowance).
    pub remaining: Option<i64>,
    /// `period`, `day`, `month` or `never` (null: no allowance).
    pub reset: Option<String>,
    /// `credits` or `block` beyond the allowance (null: every unit is charged at the rate).
    pub overage: Option<String>,
    /// RFC 3339 instant the window started.
    pub window_start: Option<String>,
    /// RFC 3339 instant the allowance resets (null: never, or no allowance).
    pub resets_at: Option<String>,
}

impl From<FeatureStatus> for EntitlementStatusDto {
    fn from(s: FeatureStatus) -> Self {
        let remaining = s.remaining();
        let granted = s.granted();
        let metered = s.feature.kind == FeatureKind::Metered;
        let entitlement = s.entitlement.filter(|_| metered);
        let window = s.window.filter(|_| entitlement.is_some());
        Self {
            feature: s.feature.key,
            name: s.feature.name,
            kind: s.feature.kind.as_str().to_owned(),
            unit: s.feature.unit,
            granted,
            included: entitlement.as_ref().map(|e| e.included.unwrap_or(0)),
            used: s.used,
            reserved: s.reserved,
            remaining,
            reset: entitlement.as_ref().map(|e| e.reset.as_str().to_owned()),
            overage: entitlement.as_ref().map(|e| e.overage.as_str().to_owned()),
            window_start: window.filter(|w| w.end.is_some()).map(|w| rfc3339(w.start)),
            resets_at: window.and_then(|w| w.end).map(rfc3339),
        }
    }
}
