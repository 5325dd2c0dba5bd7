//! Tally's catalog domain: the registry of apps and their stored service keys, the plans an app
//! sells (subscriptions and credit packs) and the coupons that discount them, one catalog per app.
//!
//! Storage is reached only through the [`CatalogRepository`] port; every rule (field ranges, the
//! prices a plan kind needs, coupon shapes, partial updates) lives here so that each backend
//! applies the same ones.

pub mod app;
pub mod coupon;
pub mod error;
pub mod plan;
pub mod repo;
pub mod service;
pub mod validate;

pub use app::{App, AppFields, AppPatch, AppSpec, NewServiceKey, ServiceKey};
pub use coupon::{Coupon, CouponDuration, CouponPatch, CouponSpec};
pub use error::{CatalogError, FieldError};
pub use plan::{Plan, PlanKind, PlanPatch, PlanSpec};
pub use repo::{
    CatalogRepository, CouponQuery, CouponUpdate, NewCoupon, NewPlan, PlanKey, PlanQuery,
    PlanUpdate,
};
pub use service::Catalog;
pub use validate::CURRENCIES;
