//! The catalog service: validation, the clock, and the checks that span several records.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use time::OffsetDateTime;

use crate::error::Problems;
use tally_kernel::{Clock, SystemClock};

use crate::app::check_key_name;
use crate::validate::validate_app;
use crate::{
    App, AppPatch, AppSpec, CatalogError, CatalogRepository, Coupon, CouponPatch, CouponQuery,
    CouponSpec, CouponUpdate, NewCoupon, NewPlan, NewServiceKey, Plan, PlanKey, PlanPatch,
    PlanQuery, PlanSpec, PlanUpdate, ServiceKey,
};

/// Plans and coupons of every app, over any [`CatalogRepository`].
#[derive(Clone)]
pub struct Catalog {
    repo: Arc<dyn CatalogRepository>,
    clock: Arc<dyn Clock>,
    /// Apps known to be registered. Apps are never deleted, so an entry never goes stale; an
    /// app registered by another node is found by [`Catalog::is_registered`] on first use.
    registered: Arc<RwLock<HashSet<String>>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("repo", &self.repo)
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// A catalog over `repo` on the wall clock.
    pub fn new(repo: impl CatalogRepository) -> Self {
        Self::with_clock(Arc::new(repo), Arc::new(SystemClock))
    }

    /// A catalog over `repo`, reading time from `clock` (so that it can share the ledger's).
    pub fn with_clock(repo: Arc<dyn CatalogRepository>, clock: Arc<dyn Clock>) -> Self {
        Self {
            repo,
            clock,
            registered: Arc::default(),
        }
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Creates a plan in `app`, recording `actor`.
    pub async fn create_plan(
        &self,
        app: &str,
        spec: PlanSpec,
        actor: &str,
    ) -> Result<Plan, CatalogError> {
        validate_app(app)?;
        let spec = spec.validated()?;
        self.repo
            .insert_plan(NewPlan {
                app: app.to_owned(),
                spec,
                actor: actor.to_owned(),
                now: self.now(),
            })
            .await
    }

    /// Applies a partial update; the merged plan must be valid as a whole. An empty patch
    /// answers the plan unchanged.
    pub async fn update_plan(
        &self,
        app: &str,
        id: &str,
        patch: PlanPatch,
        actor: &str,
    ) -> Result<Plan, CatalogError> {
        validate_app(app)?;
        if patch.is_empty() {
            return self.plan(app, id).await?.ok_or(CatalogError::PlanNotFound);
        }
        self.repo
            .update_plan(PlanUpdate {
                app: app.to_owned(),
                id: id.to_owned(),
                patch,
                actor: actor.to_owned(),
                now: self.now(),
            })
            .await
    }

    /// One plan of the app, active or not.
    pub async fn plan(&self, app: &str, id: &str) -> Result<Option<Plan>, CatalogError> {
        validate_app(app)?;
        self.repo
            .plan(PlanKey {
                app: app.to_owned(),
                id: id.to_owned(),
            })
            .await
    }

    /// Every plan of the app (admin view), by `sort_order` then id.
    pub async fn plans(&self, app: &str) -> Result<Vec<Plan>, CatalogError> {
        self.list(app, false).await
    }

    /// The plans users may buy: active ones only, by `sort_order` then id.
    pub async fn public_plans(&self, app: &str) -> Result<Vec<Plan>, CatalogError> {
        self.list(app, true).await
    }

    async fn list(&self, app: &str, active_only: bool) -> Result<Vec<Plan>, CatalogError> {
        validate_app(app)?;
        self.repo
            .plans(PlanQuery {
                app: app.to_owned(),
                active_only,
            })
            .await
    }

    /// Creates a coupon in `app`, recording `actor`. Every plan id must name a plan of the app;
    /// an `amount_off` coupon must be in the currency of the plans it is restricted to.
    pub async fn create_coupon(
        &self,
        app: &str,
        spec: CouponSpec,
        actor: &str,
    ) -> Result<Coupon, CatalogError> {
        validate_app(app)?;
        let now = self.now();
        let spec = spec.validated(now)?;
        self.check_coupon_plans(app, &spec.plan_ids, spec.currency.as_deref())
            .await?;
        self.repo
            .insert_coupon(NewCoupon {
                app: app.to_owned(),
                spec,
                actor: actor.to_owned(),
                now,
            })
            .await
    }

    /// Every plan id must name a plan of the app; an `amount_off` coupon (one with a
    /// `currency`) must be in the currency of the plans it is restricted to.
    async fn check_coupon_plans(
        &self,
        app: &str,
        plan_ids: &[String],
        currency: Option<&str>,
    ) -> Result<(), CatalogError> {
        if plan_ids.is_empty() {
            return Ok(());
        }
        let plans = self.plans(app).await?;
        let mut p = Problems::default();
        for (i, id) in plan_ids.iter().enumerate() {
            match plans.iter().find(|plan| &plan.id == id) {
                None => p.add(
                    format!("plan_ids[{i}]"),
                    format!("no plan '{id}' in this app"),
                ),
                Some(plan) => {
                    if let Some(currency) = currency {
                        p.check(
                            plan.currency == currency,
                            format!("plan_ids[{i}]"),
                            format!("plan '{id}' is priced in {}, not {currency}", plan.currency),
                        );
                    }
                }
            }
        }
        Ok(p.finish()?)
    }

    /// Changes what may change on a coupon of `app` (see [`CouponPatch`]); new plan ids are
    /// checked like [`Catalog::create_coupon`]'s.
    pub async fn update_coupon(
        &self,
        app: &str,
        id: &str,
        patch: CouponPatch,
    ) -> Result<Coupon, CatalogError> {
        validate_app(app)?;
        if let Some(plan_ids) = &patch.plan_ids {
            let current = self.coupon_by_id(app, id).await?;
            self.check_coupon_plans(app, plan_ids, current.currency.as_deref())
                .await?;
        }
        self.repo
            .update_coupon(CouponUpdate {
                app: app.to_owned(),
                id: id.to_owned(),
                patch,
                now: self.now(),
            })
            .await
    }

    /// The app's coupon with this id; [`CatalogError::CouponNotFound`] when there is none.
    pub async fn coupon_by_id(&self, app: &str, id: &str) -> Result<Coupon, CatalogError> {
        self.repo
            .coupon_by_id(app.to_owned(), id.to_owned())
            .await?
            .ok_or(CatalogError::CouponNotFound)
    }

    /// A page of the app's coupons, newest first.
    pub async fn coupons(
        &self,
        app: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Coupon>, CatalogError> {
        validate_app(app)?;
        if !(1..=1000).contains(&limit) {
            return Err(CatalogError::invalid("limit", "must be between 1 and 1000"));
        }
        if offset < 0 {
            return Err(CatalogError::invalid("offset", "must be 0 or more"));
        }
        self.repo
            .coupons(CouponQuery {
                app: app.to_owned(),
                limit,
                offset,
            })
            .await
    }

    /// The app's coupon with this code (matched case-insensitively), if any.
    pub async fn coupon(&self, app: &str, code: &str) -> Result<Option<Coupon>, CatalogError> {
        validate_app(app)?;
        self.repo
            .coupon_by_code(app.to_owned(), code.trim().to_ascii_uppercase())
            .await
    }

    /// The current instant on the catalog's clock.
    pub fn clock(&self) -> OffsetDateTime {
        self.now()
    }

    /// Registers `keys` (configuration's apps) where the registry lacks them; the registry is
    /// then read whole into the cache [`Catalog::is_known`] answers from.
    pub async fn ensure_apps(&self, keys: &[String]) -> Result<(), CatalogError> {
        for key in keys {
            validate_app(key)?;
        }
        self.repo.ensure_apps(keys.to_vec(), self.now()).await?;
        let apps = self.repo.apps().await?;
        self.remember(apps.into_iter().map(|a| a.key));
        Ok(())
    }

    fn remember(&self, keys: impl IntoIterator<Item = String>) {
        let mut known = self.registered.write().unwrap_or_else(|e| e.into_inner());
        known.extend(keys);
    }

    /// Whether `app` is known to be registered, from memory alone: `false` means "not known
    /// here yet", for [`Catalog::is_registered`] to settle.
    pub fn is_known(&self, app: &str) -> bool {
        self.registered
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(app)
    }

    /// Whether `app` is registered: from memory when known, else from the registry (an app
    /// another node registered is then remembered).
    pub async fn is_registered(&self, app: &str) -> Result<bool, CatalogError> {
        if self.is_known(app) {
            return Ok(true);
        }
        if !tally_kernel::is_app_key(app) {
            return Ok(false);
        }
        let found = self.repo.app(app.to_owned()).await?.is_some();
        if found {
            self.remember([app.to_owned()]);
        }
        Ok(found)
    }

    /// Registers an app.
    pub async fn create_app(&self, spec: AppSpec) -> Result<App, CatalogError> {
        let (key, fields) = spec.validated()?;
        let app = self.repo.insert_app(key, fields, self.now()).await?;
        self.remember([app.key.clone()]);
        Ok(app)
    }

    /// Changes an app's name, time zone or currency.
    pub async fn update_app(&self, key: &str, patch: AppPatch) -> Result<App, CatalogError> {
        if !tally_kernel::is_app_key(key) {
            return Err(CatalogError::AppNotFound);
        }
        self.repo
            .update_app(key.to_owned(), patch, self.now())
            .await
    }

    /// One registered app.
    pub async fn app(&self, key: &str) -> Result<App, CatalogError> {
        if !tally_kernel::is_app_key(key) {
            return Err(CatalogError::AppNotFound);
        }
        self.repo
            .app(key.to_owned())
            .await?
            .ok_or(CatalogError::AppNotFound)
    }

    /// Every registered app, by key.
    pub async fn apps(&self) -> Result<Vec<App>, CatalogError> {
        self.repo.apps().await
    }

    /// Stores a service key for `app` whose secret hashes to `hash`; `prefix` is the secret's
    /// first characters, kept to tell keys apart.
    pub async fn create_service_key(
        &self,
        app: &str,
        name: &str,
        hash: String,
        prefix: String,
        actor: &str,
    ) -> Result<ServiceKey, CatalogError> {
        validate_app(app)?;
        check_key_name(name)?;
        self.repo
            .insert_service_key(NewServiceKey {
                app: app.to_owned(),
                name: name.trim().to_owned(),
                hash,
                prefix,
                actor: actor.to_owned(),
                now: self.now(),
            })
            .await
    }

    /// The app's stored service keys, newest first.
    pub async fn service_keys(&self, app: &str) -> Result<Vec<ServiceKey>, CatalogError> {
        self.repo.service_keys(app.to_owned()).await
    }

    /// Revokes one of the app's stored service keys.
    pub async fn revoke_service_key(&self, app: &str, id: i64) -> Result<ServiceKey, CatalogError> {
        self.repo
            .revoke_service_key(app.to_owned(), id, self.now())
            .await
    }

    /// The app of the unrevoked stored key whose secret hashes to `hash` (hex SHA-256).
    pub async fn service_key_app(&self, hash: &str) -> Result<Option<String>, CatalogError> {
        self.repo.service_key_app(hash.to_owned()).await
    }
}
