//! The catalog's queries: plans, credit packs and coupons.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::RunQueryDsl;
use tally_catalog::{
    CatalogError, Coupon, CouponQuery, CouponUpdate, NewCoupon, NewPlan, Plan, PlanKey, PlanQuery,
    PlanUpdate,
};

use crate::StoreError;
use crate::catalog_rows::{CouponRow, PlanRow, PlanValues, coupon_plan_ids, months_to_db};
use crate::rows::to_db;
use crate::schema::{coupons, plans};

use super::{Conn, Pipe};

/// Plan and coupon ids are decimal integers; anything else names no row.
fn row_id(id: &str) -> Option<i64> {
    id.parse().ok()
}

pub(crate) async fn insert_plan(conn: &mut Conn, new: &NewPlan) -> Result<Plan, StoreError> {
    let row: PlanRow = diesel::insert_into(plans::table)
        .values((
            PlanValues::new(&new.spec, &new.actor, new.now),
            plans::app_key.eq(&new.app),
            plans::created_by.eq(&new.actor),
            plans::created_at.eq(to_db(new.now)),
        ))
        .returning(PlanRow::as_returning())
        .get_result(conn)
        .await?;
    Plan::try_from(row)
}

pub(crate) async fn update_plan(conn: &mut Conn, update: &PlanUpdate) -> Result<Plan, StoreError> {
    let Some(id) = row_id(&update.id) else {
        return Err(CatalogError::PlanNotFound.into());
    };
    let current: PlanRow = locked!(
        plans::table
            .filter(plans::id.eq(id))
            .filter(plans::app_key.eq(&update.app))
            .select(PlanRow::as_select())
    )
    .first(conn)
    .await
    .optional()?
    .ok_or(StoreError::Catalog(CatalogError::PlanNotFound))?;
    let spec = update.patch.merge(&Plan::try_from(current)?)?;
    let row: PlanRow = diesel::update(plans::table.find(id))
        .set(PlanValues::new(&spec, &update.actor, update.now))
        .returning(PlanRow::as_returning())
        .get_result(conn)
        .await?;
    Plan::try_from(row)
}

pub(crate) async fn plan(conn: &mut Conn, key: &PlanKey) -> Result<Option<Plan>, StoreError> {
    pipelined!(conn => plan_row(conn, key))?
        .map(Plan::try_from)
        .transpose()
}

/// [`plan`]'s row, as stored: a statement a pipeline can carry.
pub(crate) async fn plan_row(conn: &mut Pipe<'_>, key: &PlanKey) -> QueryResult<Option<PlanRow>> {
    let Some(id) = row_id(&key.id) else {
        return Ok(None);
    };
    plans::table
        .filter(plans::id.eq(id))
        .filter(plans::app_key.eq(&key.app))
        .select(PlanRow::as_select())
        .first(conn)
        .await
        .optional()
}

pub(crate) async fn plans(conn: &mut Conn, query: &PlanQuery) -> Result<Vec<Plan>, StoreError> {
    let mut q = plans::table
        .filter(plans::app_key.eq(&query.app))
        .order((plans::sort_order, plans::id))
        .select(PlanRow::as_select())
        .into_boxed();
    if query.active_only {
        q = q.filter(plans::active.eq(true));
    }
    let rows: Vec<PlanRow> = q.load(conn).await?;
    rows.into_iter().map(Plan::try_from).collect()
}

pub(crate) async fn insert_coupon(conn: &mut Conn, new: &NewCoupon) -> Result<Coupon, StoreError> {
    let s = &new.spec;
    let row: CouponRow = diesel::insert_into(coupons::table)
        .values((
            coupons::app_key.eq(&new.app),
            coupons::code.eq(&s.code),
            coupons::percent_off.eq(s.percent_off),
            coupons::amount_off.eq(s.amount_off),
            coupons::currency.eq(s.currency.as_deref()),
            coupons::duration.eq(s.duration.as_str()),
            coupons::duration_months.eq(months_to_db(s.duration_months)),
            coupons::max_redemptions.eq(s.max_redemptions),
            coupons::times_redeemed.eq(0_i64),
            coupons::expires_at.eq(s.expires_at.map(to_db)),
            coupons::plan_ids.eq(coupon_plan_ids(&s.plan_ids)),
            coupons::active.eq(s.active),
            coupons::created_by.eq(&new.actor),
            coupons::created_at.eq(to_db(new.now)),
        ))
        .returning(CouponRow::as_returning())
        .get_result(conn)
        .await
        .map_err(|e| match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                StoreError::Catalog(CatalogError::Conflict(format!(
                    "coupon code {} already exists",
                    s.code
                )))
            }
            e => e.into(),
        })?;
    Coupon::try_from(row)
}

pub(crate) async fn update_coupon(
    conn: &mut Conn,
    update: &CouponUpdate,
) -> Result<Coupon, StoreError> {
    let Some(id) = row_id(&update.id) else {
        return Err(CatalogError::CouponNotFound.into());
    };
    let current: CouponRow = locked!(
        coupons::table
            .filter(coupons::id.eq(id))
            .filter(coupons::app_key.eq(&update.app))
            .select(CouponRow::as_select())
    )
    .first(conn)
    .await
    .optional()?
    .ok_or(StoreError::Catalog(CatalogError::CouponNotFound))?;
    let next = update
        .patch
        .merge(&Coupon::try_from(current)?, update.now)?;
    let row: CouponRow = diesel::update(coupons::table.find(id))
        .set((
            coupons::active.eq(next.active),
            coupons::max_redemptions.eq(next.max_redemptions),
            coupons::expires_at.eq(next.expires_at.map(to_db)),
            coupons::plan_ids.eq(coupon_plan_ids(&next.plan_ids)),
        ))
        .returning(CouponRow::as_returning())
        .get_result(conn)
        .await?;
    Coupon::try_from(row)
}

pub(crate) async fn coupon_by_id(
    conn: &mut Conn,
    app: &str,
    id: &str,
) -> Result<Option<Coupon>, StoreError> {
    let Some(id) = row_id(id) else {
        return Ok(None);
    };
    coupons::table
        .filter(coupons::app_key.eq(app))
        .filter(coupons::id.eq(id))
        .select(CouponRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(Coupon::try_from)
        .transpose()
}

pub(crate) async fn coupons(
    conn: &mut Conn,
    query: &CouponQuery,
) -> Result<Vec<Coupon>, StoreError> {
    let rows: Vec<CouponRow> = coupons::table
        .filter(coupons::app_key.eq(&query.app))
        .order(coupons::id.desc())
        .limit(query.limit)
        .offset(query.offset)
        .select(CouponRow::as_select())
        .load(conn)
        .await?;
    rows.into_iter().map(Coupon::try_from).collect()
}

pub(crate) async fn coupon_by_code(
    conn: &mut Conn,
    app: &str,
    code: &str,
) -> Result<Option<Coupon>, StoreError> {
    let row: Option<CouponRow> = coupons::table
        .filter(coupons::app_key.eq(app))
        .filter(coupons::code.eq(code))
        .select(CouponRow::as_select())
        .first(conn)
        .await
        .optional()?;
    row.map(Coupon::try_from).transpose()
}
