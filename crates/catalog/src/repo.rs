//! The storage port. The `tally-store` crate implements it for SQLite and PostgreSQL.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{
    App, AppFields, AppPatch, CatalogError, Coupon, CouponPatch, CouponSpec, NewServiceKey, Plan,
    PlanPatch, PlanSpec, ServiceKey,
};

/// A validated plan to store.
#[derive(Debug, Clone)]
pub struct NewPlan {
    /// App key.
    pub app: String,
    /// The validated fields.
    pub spec: PlanSpec,
    /// The acting admin.
    pub actor: String,
    /// Creation instant.
    pub now: OffsetDateTime,
}

/// A partial update of one plan.
#[derive(Debug, Clone)]
pub struct PlanUpdate {
    /// App key; a plan of another app is not found.
    pub app: String,
    /// Plan id.
    pub id: String,
    /// The fields to replace; merged with [`PlanPatch::merge`] under the row lock.
    pub patch: PlanPatch,
    /// The acting admin.
    pub actor: String,
    /// Update instant.
    pub now: OffsetDateTime,
}

/// One plan of one app.
#[derive(Debug, Clone)]
pub struct PlanKey {
    /// App key.
    pub app: String,
    /// Plan id.
    pub id: String,
}

/// Which plans to list: always ordered by `sort_order`, then id.
#[derive(Debug, Clone)]
pub struct PlanQuery {
    /// App key.
    pub app: String,
    /// Only plans with `active = true`.
    pub active_only: bool,
}

/// A validated coupon to store.
#[derive(Debug, Clone)]
pub struct NewCoupon {
    /// App key.
    pub app: String,
    /// The validated fields (plan ids already checked against the app's plans).
    pub spec: CouponSpec,
    /// The acting admin.
    pub actor: String,
    /// Creation instant.
    pub now: OffsetDateTime,
}

/// A change to one coupon of one app.
#[derive(Debug, Clone)]
pub struct CouponUpdate {
    /// App key; a coupon of another app is not found.
    pub app: String,
    /// Coupon id.
    pub id: String,
    /// The fields to replace; merged with [`CouponPatch::merge`] under the row lock.
    pub patch: CouponPatch,
    /// Update instant.
    pub now: OffsetDateTime,
}

/// A page of an app's coupons, newest first.
#[derive(Debug, Clone)]
pub struct CouponQuery {
    /// App key.
    pub app: String,
    /// Rows to fetch.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// Everything the catalog needs from a database. Each write is one database transaction.
#[async_trait]
pub trait CatalogRepository: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new plan.
    async fn insert_plan(&self, plan: NewPlan) -> Result<Plan, CatalogError>;

    /// Locks the plan, merges the patch with [`PlanPatch::merge`] (which re-validates the
    /// whole plan) and stores the result; [`CatalogError::PlanNotFound`] when the app has no
    /// such plan.
    async fn update_plan(&self, update: PlanUpdate) -> Result<Plan, CatalogError>;

    /// One plan of the app, if it exists.
    async fn plan(&self, key: PlanKey) -> Result<Option<Plan>, CatalogError>;

    /// The app's plans, by `sort_order` then id.
    async fn plans(&self, query: PlanQuery) -> Result<Vec<Plan>, CatalogError>;

    /// Stores a new coupon; a code the app already has is a [`CatalogError::Conflict`].
    async fn insert_coupon(&self, coupon: NewCoupon) -> Result<Coupon, CatalogError>;

    /// Locks the coupon, merges the patch with [`CouponPatch::merge`] and stores the result;
    /// [`CatalogError::CouponNotFound`] when the app has no such coupon.
    async fn update_coupon(&self, update: CouponUpdate) -> Result<Coupon, CatalogError>;

    /// A page of the app's coupons, newest first.
    async fn coupons(&self, query: CouponQuery) -> Result<Vec<Coupon>, CatalogError>;

    /// The app's coupon with this id, if any.
    async fn coupon_by_id(&self, app: String, id: String) -> Result<Option<Coupon>, CatalogError>;

    /// The app's coupon with this (upper-case) code, if any.
    async fn coupon_by_code(
        &self,
        app: String,
        code: String,
    ) -> Result<Option<Coupon>, CatalogError>;

    /// Registers every app of `keys` the registry lacks, with the default fields, at `now`;
    /// those it holds keep theirs.
    async fn ensure_apps(&self, keys: Vec<String>, now: OffsetDateTime)
    -> Result<(), CatalogError>;

    /// Registers a new app; a key the registry holds is a [`CatalogError::Conflict`].
    async fn insert_app(
        &self,
        key: String,
        fields: AppFields,
        now: OffsetDateTime,
    ) -> Result<App, CatalogError>;

    /// Locks the app, merges the patch with [`AppPatch::merge`] and stores the result;
    /// [`CatalogError::AppNotFound`] when it is not registered.
    async fn update_app(
        &self,
        key: String,
        patch: AppPatch,
        now: OffsetDateTime,
    ) -> Result<App, CatalogError>;

    /// The registered app with this key, if any.
    async fn app(&self, key: String) -> Result<Option<App>, CatalogError>;

    /// Every registered app, by key.
    async fn apps(&self) -> Result<Vec<App>, CatalogError>;

    /// Stores a service key; a hash already stored is a [`CatalogError::Conflict`].
    async fn insert_service_key(&self, key: NewServiceKey) -> Result<ServiceKey, CatalogError>;

    /// The app's stored service keys, newest first, revoked ones included.
    async fn service_keys(&self, app: String) -> Result<Vec<ServiceKey>, CatalogError>;

    /// Revokes the app's key `id` at `now` (a revoked key stays revoked, at its first instant);
    /// [`CatalogError::ServiceKeyNotFound`] when the app has no such key.
    async fn revoke_service_key(
        &self,
        app: String,
        id: i64,
        now: OffsetDateTime,
    ) -> Result<ServiceKey, CatalogError>;

    /// The app of the unrevoked key whose secret hashes to `hash`, if any.
    async fn service_key_app(&self, hash: String) -> Result<Option<String>, CatalogError>;
}
