//! [`CatalogRepository`] on the pools: the catalog's queries (see `queries/catalog.rs`), run
//! the way `exec.rs` says.

use async_trait::async_trait;
use tally_catalog::{
    App, AppFields, AppPatch, CatalogError, CatalogRepository, Coupon, CouponQuery, CouponUpdate,
    NewCoupon, NewPlan, NewServiceKey, Plan, PlanKey, PlanQuery, PlanUpdate, ServiceKey,
};
use time::OffsetDateTime;

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

    async fn ensure_apps(
        &self,
        keys: Vec<String>,
        now: OffsetDateTime,
    ) -> Result<(), CatalogError> {
        exec!(self, Write, apps, |conn, ops| ops::ensure_apps(
            conn, &keys, now
        )
        .await)
        .map_err(Into::into)
    }

    async fn insert_app(
        &self,
        key: String,
        fields: AppFields,
        now: OffsetDateTime,
    ) -> Result<App, CatalogError> {
        exec!(self, Write, apps, |conn, ops| ops::insert_app(
            conn, &key, &fields, now
        )
        .await)
        .map_err(Into::into)
    }

    async fn update_app(
        &self,
        key: String,
        patch: AppPatch,
        now: OffsetDateTime,
    ) -> Result<App, CatalogError> {
        exec!(self, Write, apps, |conn, ops| ops::update_app(
            conn, &key, &patch, now
        )
        .await)
        .map_err(Into::into)
    }

    async fn app(&self, key: String) -> Result<Option<App>, CatalogError> {
        exec!(self, ShortRead, apps, |conn, ops| ops::app(conn, &key)
            .await)
        .map_err(Into::into)
    }

    async fn apps(&self) -> Result<Vec<App>, CatalogError> {
        exec!(self, Read, apps, |conn, ops| ops::apps(conn).await).map_err(Into::into)
    }

    async fn insert_service_key(&self, key: NewServiceKey) -> Result<ServiceKey, CatalogError> {
        exec!(self, Write, apps, |conn, ops| ops::insert_service_key(
            conn, &key
        )
        .await)
        .map_err(Into::into)
    }

    async fn service_keys(&self, app: String) -> Result<Vec<ServiceKey>, CatalogError> {
        exec!(self, Read, apps, |conn, ops| ops::service_keys(conn, &app)
            .await)
        .map_err(Into::into)
    }

    async fn revoke_service_key(
        &self,
        app: String,
        id: i64,
        now: OffsetDateTime,
    ) -> Result<ServiceKey, CatalogError> {
        exec!(self, Write, apps, |conn, ops| ops::revoke_service_key(
            conn, &app, id, now
        )
        .await)
        .map_err(Into::into)
    }

    async fn service_key_app(&self, hash: String) -> Result<Option<String>, CatalogError> {
        exec!(self, ShortRead, apps, |conn, ops| ops::service_key_app(
            conn, &hash
        )
        .await)
        .map_err(Into::into)
    }
}
