//! Rows of the pricing and usage tables, and their conversions to the ledger's types.

use diesel::prelude::*;
use tally_ledger::LedgerError;
use tally_ledger::pricing::{Dimensions, Feature, FeatureKind, Rate, Tier};
use tally_ledger::usage::{Entitlement, Overage, Reset};
use time::PrimitiveDateTime;

use crate::rows::from_db;
use crate::schema::{entitlements, pricing_features, pricing_rates};

fn corrupt(what: &str, value: &str) -> LedgerError {
    LedgerError::Storage(format!("unknown {what} '{value}'").into())
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = pricing_features)]
pub(crate) struct FeatureRow {
    pub feature_key: String,
    pub name: String,
    pub kind: String,
    pub unit: Option<String>,
    pub created_at: PrimitiveDateTime,
    pub updated_at: PrimitiveDateTime,
}

impl TryFrom<FeatureRow> for Feature {
    type Error = LedgerError;

    fn try_from(r: FeatureRow) -> Result<Self, LedgerError> {
        Ok(Feature {
            kind: FeatureKind::parse(&r.kind).ok_or_else(|| corrupt("feature kind", &r.kind))?,
            key: r.feature_key,
            name: r.name,
            unit: r.unit,
            created_at: from_db(r.created_at),
            updated_at: from_db(r.updated_at),
        })
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = pricing_rates)]
pub(crate) struct RateRow {
    pub id: i64,
    pub feature_key: String,
    pub version: i64,
    pub dimensions: String,
    pub credits: i64,
    pub per: i64,
    pub tiers: String,
    pub effective_from: PrimitiveDateTime,
    pub created_at: PrimitiveDateTime,
    pub created_by: String,
}

impl TryFrom<RateRow> for Rate {
    type Error = LedgerError;

    fn try_from(r: RateRow) -> Result<Self, LedgerError> {
        let dimensions: Dimensions =
            serde_json::from_str(&r.dimensions).map_err(LedgerError::storage)?;
        let tiers: Vec<Tier> = serde_json::from_str(&r.tiers).map_err(LedgerError::storage)?;
        Ok(Rate {
            id: r.id,
            feature: r.feature_key,
            version: r.version,
            dimensions,
            credits: r.credits,
            per: r.per,
            tiers,
            effective_from: from_db(r.effective_from),
            created_at: from_db(r.created_at),
            created_by: r.created_by,
        })
    }
}

/// Dimensions as stored: canonical JSON (sorted keys), so equal sets compare equal.
pub(crate) fn dimensions_text(d: &Dimensions) -> String {
    serde_json::to_string(d).unwrap_or_else(|_| "{}".to_owned())
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = entitlements)]
pub(crate) struct EntitlementRow {
    pub scope: String,
    pub feature_key: String,
    pub included: Option<i64>,
    pub reset: String,
    pub overage: String,
}

impl EntitlementRow {
    pub(crate) fn into_entitlement(self) -> Result<(String, Entitlement), LedgerError> {
        let e = Entitlement {
            reset: Reset::parse(&self.reset).ok_or_else(|| corrupt("reset", &self.reset))?,
            overage: Overage::parse(&self.overage)
                .ok_or_else(|| corrupt("overage", &self.overage))?,
            feature: self.feature_key,
            included: self.included,
        };
        Ok((self.scope, e))
    }
}
