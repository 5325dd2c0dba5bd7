//! [`CatalogRepository`] on the pools: the same transaction macros as the ledger's repository,
//! over the catalog's queries (see `queries/catalog.rs`).

use async_trait::async_trait;
use tally_catalog::{
    CatalogError, CatalogRepository, Coupon, CouponQuery, CouponUpdate, NewCoupon, NewPlan, Plan,
    PlanKey, PlanQuery, PlanUpdate,
};

use crate::repo::{read, write_tx};
use crate::{Store, StoreError, error_chain};

fn logged(e: StoreError) -> CatalogError {
    if !matches!(e, StoreError::Catalog(_)) {
        tracing::error!(error = %error_chain(&e), "catalog storage operation failed");
    }
    e.into()
}

#[async_trait]
impl CatalogRepository for Store {
    async fn insert_plan(&self, plan: NewPlan) -> Result<Plan, CatalogError> {
        let plan = &plan;
        write_tx!(self, catalog, |conn, ops| ops::insert_plan(conn, plan)
            .await)
        .map_err(logged)
    }

    async fn update_plan(&self, update: PlanUpdate) -> Result<Plan, CatalogError> {
        let update = &update;
        write_tx!(self, catalog, |conn, ops| ops::update_plan(conn, update)
            .await)
        .map_err(logged)
    }

    async fn plan(&self, key: PlanKey) -> Result<Option<Plan>, CatalogError> {
        read!(self, catalog, |conn, ops| ops::plan(conn, &key).await).map_err(logged)
    }

    async fn plans(&self, query: PlanQuery) -> Result<Vec<Plan>, CatalogError> {
        read!(self, catalog, |conn, ops| ops::plans(conn, &query).await).map_err(logged)
    }

    async fn insert_coupon(&self, coupon: NewCoupon) -> Result<Coupon, CatalogError> {
        let coupon = &coupon;
        write_tx!(self, catalog, |conn, ops| ops::insert_coupon(conn, coupon)
            .await)
        .map_err(logged)
    }

    async fn update_coupon(&self, update: CouponUpdate) -> Result<Coupon, CatalogError> {
        let update = &update;
        write_tx!(self, catalog, |conn, ops| ops::update_coupon(conn, update)
            .await)
        .map_err(logged)
    }

    async fn coupon_by_id(&self, app: String, id: String) -> Result<Option<Coupon>, CatalogError> {
        read!(self, catalog, |conn, ops| ops::coupon_by_id(
            conn, &app, &id
        )
        .await)
        .map_err(logged)
    }

    async fn coupons(&self, query: CouponQuery) -> Result<Vec<Coupon>, CatalogError> {
        read!(self, catalog, |conn, ops| ops::coupons(conn, &query).await).map_err(logged)
    }

    async fn coupon_by_code(
        &self,
        app: String,
        code: String,
    ) -> Result<Option<Coupon>, CatalogError> {
        read!(self, catalog, |conn, ops| ops::coupon_by_code(
            conn, &app, &code
        )
        .await)
        .map_err(logged)
    }
}
