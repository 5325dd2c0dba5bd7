//! [`CatalogRepository`] on the pools: the catalog's queries (see `queries/catalog.rs`), run
//! the way `exec.rs` says.

use async_trait::async_trait;
use tally_catalog::{
    CatalogError, CatalogRepository, Coupon, CouponQuery, CouponUpdate, NewCoupon, NewPlan, Plan,
    PlanKey, PlanQuery, PlanUpdate,
};

use crate::Store;
use crate::exec::exec;

#[async_trait]
impl CatalogRepository for Store {
    async fn insert_plan(&self, plan: NewPlan) -> Result<Plan, CatalogError> {
        exec!(self, Write, catalog, |conn, ops| ops::insert_plan(
            conn, &plan
        )
        .await)
        .map_err(Into::into)
    }

    async fn update_plan(&self, update: PlanUpdate) -> Result<Plan, CatalogError> {
        exec!(self, Write, catalog, |conn, ops| ops::update_plan(
            conn, &update
        )
        .await)
        .map_err(Into::into)
    }

    async fn plan(&self, key: PlanKey) -> Result<Option<Plan>, CatalogError> {
        exec!(self, ShortRead, catalog, |conn, ops| ops::plan(conn, &key)
            .await)
        .map_err(Into::into)
    }

    async fn plans(&self, query: PlanQuery) -> Result<Vec<Plan>, CatalogError> {
        exec!(self, ShortRead, catalog, |conn, ops| ops::plans(
            conn, &query
        )
        .await)
        .map_err(Into::into)
    }

    async fn insert_coupon(&self, coupon: NewCoupon) -> Result<Coupon, CatalogError> {
        exec!(self, Write, catalog, |conn, ops| ops::insert_coupon(
            conn, &coupon
        )
        .await)
        .map_err(Into::into)
    }

    async fn update_coupon(&self, update: CouponUpdate) -> Result<Coupon, CatalogError> {
        exec!(self, Write, catalog, |conn, ops| ops::update_coupon(
            conn, &update
        )
        .await)
        .map_err(Into::into)
    }

    async fn coupon_by_id(&self, app: String, id: String) -> Result<Option<Coupon>, CatalogError> {
        exec!(self, ShortRead, catalog, |conn, ops| ops::coupon_by_id(
            conn, &app, &id
        )
        .await)
        .map_err(Into::into)
    }

    async fn coupons(&self, query: CouponQuery) -> Result<Vec<Coupon>, CatalogError> {
        exec!(self, ShortRead, catalog, |conn, ops| ops::coupons(
            conn, &query
        )
        .await)
        .map_err(Into::into)
    }

    async fn coupon_by_code(
        &self,
        app: String,
        code: String,
    ) -> Result<Option<Coupon>, CatalogError> {
        exec!(self, ShortRead, catalog, |conn, ops| ops::coupon_by_code(
            conn, &app, &code
        )
        .await)
        .map_err(Into::into)
    }
}
