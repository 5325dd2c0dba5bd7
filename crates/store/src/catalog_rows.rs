//! Row types of the catalog tables and their conversions to domain values.

use diesel::prelude::*;
use tally_catalog::{Coupon, CouponDuration, Plan, PlanKind, PlanSpec};
use time::PrimitiveDateTime;

use crate::StoreError;
use crate::rows::{from_db, to_db};
use crate::schema::{coupons, plans};

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_list(s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|_| StoreError::Invariant("stored list is not a JSON array"))
}

fn days_to_db(d: Option<u32>) -> Option<i32> {
    d.and_then(|d| i32::try_from(d).ok())
}

fn days_from_db(d: Option<i32>) -> Result<Option<u32>, StoreError> {
    d.map(|d| u32::try_from(d).map_err(|_| StoreError::Invariant("negative day count stored")))
        .transpose()
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = plans)]
pub(crate) struct PlanRow {
    pub id: i64,
    pub app_key: String,
    pub name: String,
    pub description: String,
    pub kind: String,
    pub currency: String,
    pub price_monthly: Option<i64>,
    pub price_yearly: Option<i64>,
    pub price: Option<i64>,
    pub credits_included: i64,
    pub features: String,
    pub stripe_price_id_monthly: Option<String>,
    pub stripe_price_id_yearly: Option<String>,
    pub stripe_price_id: Option<String>,
    pub creem_product_id_monthly: Option<String>,
    pub creem_product_id_yearly: Option<String>,
    pub creem_product_id: Option<String>,
    pub active: bool,
    pub sort_order: i64,
    pub credits_expire_days: Option<i32>,
    pub created_by: String,
    pub updated_by: String,
    pub created_at: PrimitiveDateTime,
    pub updated_at: PrimitiveDateTime,
    pub trial_days: Option<i32>,
    pub trial_credits: i64,
}

impl TryFrom<PlanRow> for Plan {
    type Error = StoreError;

    fn try_from(r: PlanRow) -> Result<Self, StoreError> {
        Ok(Plan {
            id: r.id.to_string(),
            app: r.app_key,
            name: r.name,
            description: r.description,
            kind: PlanKind::parse(&r.kind).ok_or(StoreError::Invariant("unknown plan kind"))?,
            currency: r.currency,
            price_monthly: r.price_monthly,
            price_yearly: r.price_yearly,
            price: r.price,
            credits_included: r.credits_included,
            features: parse_list(&r.features)?,
            stripe_price_id_monthly: r.stripe_price_id_monthly,
            stripe_price_id_yearly: r.stripe_price_id_yearly,
            stripe_price_id: r.stripe_price_id,
            creem_product_id_monthly: r.creem_product_id_monthly,
            creem_product_id_yearly: r.creem_product_id_yearly,
            creem_product_id: r.creem_product_id,
            active: r.active,
            sort_order: r.sort_order,
            credits_expire_days: days_from_db(r.credits_expire_days)?,
            trial_days: days_from_db(r.trial_days)?,
            trial_credits: r.trial_credits,
            created_by: r.created_by,
            updated_by: r.updated_by,
            created_at: from_db(r.created_at),
            updated_at: from_db(r.updated_at),
        })
    }
}

/// The admin-settable columns plus the last writer: inserted on create, set on update. `None`
/// writes NULL, so that an update can clear a nullable field.
#[derive(Debug, Insertable, AsChangeset)]
#[diesel(table_name = plans, treat_none_as_null = true)]
pub(crate) struct PlanValues<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub kind: &'static str,
    pub currency: &'a str,
    pub price_monthly: Option<i64>,
    pub price_yearly: Option<i64>,
    pub price: Option<i64>,
    pub credits_included: i64,
    pub features: String,
    pub stripe_price_id_monthly: Option<&'a str>,
    pub stripe_price_id_yearly: Option<&'a str>,
    pub stripe_price_id: Option<&'a str>,
    pub creem_product_id_monthly: Option<&'a str>,
    pub creem_product_id_yearly: Option<&'a str>,
    pub creem_product_id: Option<&'a str>,
    pub active: bool,
    pub sort_order: i64,
    pub credits_expire_days: Option<i32>,
    pub trial_days: Option<i32>,
    pub trial_credits: i64,
    pub updated_by: &'a str,
    pub updated_at: PrimitiveDateTime,
}

impl<'a> PlanValues<'a> {
    pub(crate) fn new(s: &'a PlanSpec, actor: &'a str, now: time::OffsetDateTime) -> Self {
        Self {
            name: &s.name,
            description: &s.description,
            kind: s.kind.as_str(),
            currency: &s.currency,
            price_monthly: s.price_monthly,
            price_yearly: s.price_yearly,
            price: s.price,
            credits_included: s.credits_included,
            features: json_list(&s.features),
            stripe_price_id_monthly: s.stripe_price_id_monthly.as_deref(),
            stripe_price_id_yearly: s.stripe_price_id_yearly.as_deref(),
            stripe_price_id: s.stripe_price_id.as_deref(),
            creem_product_id_monthly: s.creem_product_id_monthly.as_deref(),
            creem_product_id_yearly: s.creem_product_id_yearly.as_deref(),
            creem_product_id: s.creem_product_id.as_deref(),
            active: s.active,
            sort_order: s.sort_order,
            credits_expire_days: days_to_db(s.credits_expire_days),
            trial_days: days_to_db(s.trial_days),
            trial_credits: s.trial_credits,
            updated_by: actor,
            updated_at: to_db(now),
        }
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = coupons)]
pub(crate) struct CouponRow {
    pub id: i64,
    pub app_key: String,
    pub code: String,
    pub percent_off: Option<i64>,
    pub amount_off: Option<i64>,
    pub currency: Option<String>,
    pub duration: String,
    pub duration_months: Option<i32>,
    pub max_redemptions: Option<i64>,
    pub times_redeemed: i64,
    pub expires_at: Option<PrimitiveDateTime>,
    pub plan_ids: String,
    pub active: bool,
    pub created_by: String,
    pub created_at: PrimitiveDateTime,
}

impl TryFrom<CouponRow> for Coupon {
    type Error = StoreError;

    fn try_from(r: CouponRow) -> Result<Self, StoreError> {
        Ok(Coupon {
            id: r.id.to_string(),
            app: r.app_key,
            code: r.code,
            percent_off: r.percent_off,
            amount_off: r.amount_off,
            currency: r.currency,
            duration: CouponDuration::parse(&r.duration)
                .ok_or(StoreError::Invariant("unknown coupon duration"))?,
            duration_months: days_from_db(r.duration_months)?,
            max_redemptions: r.max_redemptions,
            times_redeemed: r.times_redeemed,
            expires_at: r.expires_at.map(from_db),
            plan_ids: parse_list(&r.plan_ids)?,
            active: r.active,
            created_by: r.created_by,
            created_at: from_db(r.created_at),
        })
    }
}

pub(crate) fn coupon_plan_ids(ids: &[String]) -> String {
    json_list(ids)
}

pub(crate) fn months_to_db(m: Option<u32>) -> Option<i32> {
    days_to_db(m)
}
