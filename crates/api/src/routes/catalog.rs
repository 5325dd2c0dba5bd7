//! The catalog: the public plan list, and plan and coupon administration within the admin's app.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, get, post, put, web};
use tally_catalog::Plan;
use tally_catalog::validate::validate_app;
use tally_ledger::usage::{Entitlement, plan_scope, scope_plan, validate_entitlements};

use crate::AppState;
use crate::auth::{Admin, DEFAULT_APP};
use crate::dto::{
    AdminPlanDto, CouponDto, CreateCouponRequest, CreatePlanRequest, PageQuery, PlanDto,
    UpdateCouponRequest, UpdatePlanRequest,
};
use crate::error::{ApiError, ok, ok_page};
use crate::extract::Json;
use crate::pricing_dto::EntitlementDto;
use crate::routes::{detached, page};

/// The app whose public catalog is asked for: a valid `X-App-Key` header, else `default`.
fn public_app(req: &HttpRequest) -> String {
    req.headers()
        .get("x-app-key")
        .and_then(|v| v.to_str().ok())
        .filter(|app| validate_app(app).is_ok())
        .unwrap_or(DEFAULT_APP)
        .to_owned()
}

/// The plans users may buy: active subscriptions and credit packs, by `sort_order` then id.
#[utoipa::path(
    tag = "catalog",
    params(("X-App-Key" = Option<String>, Header, description = "App whose plans to list; `default` when absent or invalid")),
    responses((status = 200, description = "Active plans", body = [PlanDto]))
)]
#[get("/subscription/plans")]
pub async fn public_plans(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let app = public_app(&req);
    let plans = state.catalog.public_plans(&app).await?;
    let plans = with_entitlements(&state, &app, plans.into_iter().map(PlanDto::from)).await?;
    Ok(ok(plans))
}

/// Every plan of the admin's app, active or not, by `sort_order` then id.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "All plans", body = [AdminPlanDto]), (status = 403, description = "Not an admin"))
)]
#[get("/admin/billing/plans")]
pub async fn list_plans(
    state: web::Data<AppState>,
    Admin(admin): Admin,
) -> Result<HttpResponse, ApiError> {
    let plans = state.catalog.plans(&admin.app).await?;
    let mut plans: Vec<AdminPlanDto> = plans.into_iter().map(AdminPlanDto::from).collect();
    let entitlements = entitlements_by_plan(&state, &admin.app).await?;
    for dto in &mut plans {
        dto.plan.entitlements = entitlements.get(&dto.plan.id).cloned().unwrap_or_default();
    }
    Ok(ok(plans))
}

/// Creates a plan in the admin's app.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = CreatePlanRequest,
    responses((status = 200, description = "The new plan", body = AdminPlanDto), (status = 400, description = "Invalid plan; details.fields names each problem"))
)]
#[post("/admin/billing/plans")]
pub async fn create_plan(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    body: Json<CreatePlanRequest>,
) -> Result<HttpResponse, ApiError> {
    let mut body = body.into_inner();
    let entitlements = checked_entitlements(&state, &admin.app, body.entitlements.take()).await?;
    if body.currency.is_none() {
        body.currency = Some(state.catalog.app(&admin.app).await?.currency);
    }
    let spec = body.into();
    let catalog = state.catalog.clone();
    let app = admin.app.clone();
    let plan = detached(async move { catalog.create_plan(&app, spec, &admin.user).await }).await?;
    admin_plan(&state, &admin.app, plan, entitlements).await
}

/// Partially updates a plan: fields given replace, fields omitted stay.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Plan id")),
    request_body = UpdatePlanRequest,
    responses(
        (status = 200, description = "The updated plan", body = AdminPlanDto),
        (status = 400, description = "The merged plan is invalid"),
        (status = 404, description = "No such plan in the admin's app")
    )
)]
#[put("/admin/billing/plans/{id}")]
pub async fn update_plan(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
    body: Json<UpdatePlanRequest>,
) -> Result<HttpResponse, ApiError> {
    let mut body = body.into_inner();
    let entitlements = checked_entitlements(&state, &admin.app, body.entitlements.take()).await?;
    let (id, patch) = (id.into_inner(), body.into());
    let catalog = state.catalog.clone();
    let app = admin.app.clone();
    let plan =
        detached(async move { catalog.update_plan(&app, &id, patch, &admin.user).await }).await?;
    admin_plan(&state, &admin.app, plan, entitlements).await
}

/// Entitlements given with a plan, checked against the app's features before anything is
/// written (a plan change and its entitlements are refused together).
async fn checked_entitlements(
    state: &AppState,
    app: &str,
    given: Option<Vec<EntitlementDto>>,
) -> Result<Option<Vec<Entitlement>>, ApiError> {
    let Some(given) = given else {
        return Ok(None);
    };
    let list: Vec<Entitlement> = given.into_iter().map(Entitlement::from).collect();
    validate_entitlements(&list, &state.ledger.features(app).await?)?;
    Ok(Some(list))
}

/// The plan as admins see it, after storing the entitlements given with it (if any).
async fn admin_plan(
    state: &AppState,
    app: &str,
    plan: Plan,
    entitlements: Option<Vec<Entitlement>>,
) -> Result<HttpResponse, ApiError> {
    let scope = plan_scope(&plan.id);
    let stored = match entitlements {
        Some(list) => {
            let (ledger, app) = (state.ledger.clone(), app.to_owned());
            detached(async move { ledger.set_entitlements(&app, scope, list).await }).await?
        }
        None => state
            .ledger
            .entitlements(app, Some(scope))
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect(),
    };
    let mut dto = AdminPlanDto::from(plan);
    dto.plan.entitlements = stored.into_iter().map(EntitlementDto::from).collect();
    Ok(ok(dto))
}

/// The app's plans' entitlements, by plan id.
async fn entitlements_by_plan(
    state: &AppState,
    app: &str,
) -> Result<HashMap<String, Vec<EntitlementDto>>, ApiError> {
    let mut by_plan: HashMap<String, Vec<EntitlementDto>> = HashMap::new();
    for (scope, e) in state.ledger.entitlements(app, None).await? {
        if let Some(plan) = scope_plan(&scope) {
            by_plan
                .entry(plan.to_owned())
                .or_default()
                .push(EntitlementDto::from(e));
        }
    }
    Ok(by_plan)
}

/// Plan DTOs with their entitlements.
async fn with_entitlements(
    state: &AppState,
    app: &str,
    plans: impl Iterator<Item = PlanDto>,
) -> Result<Vec<PlanDto>, ApiError> {
    let by_plan = entitlements_by_plan(state, app).await?;
    Ok(plans
        .map(|mut p| {
            p.entitlements = by_plan.get(&p.id).cloned().unwrap_or_default();
            p
        })
        .collect())
}

/// The admin's app's coupons, newest first.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, description = "A page of coupons", body = [CouponDto]))
)]
#[get("/admin/billing/coupons")]
pub async fn list_coupons(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = page(query.limit, query.offset)?;
    let mut coupons = state.catalog.coupons(&admin.app, limit + 1, offset).await?;
    let has_more = coupons.len() as i64 > limit;
    coupons.truncate(usize::try_from(limit).unwrap_or(0));
    let coupons: Vec<CouponDto> = coupons.into_iter().map(Into::into).collect();
    Ok(ok_page(coupons, limit, offset, has_more))
}

/// Changes what may change on a coupon: switch it off or on, its limit, expiry and plans.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Coupon id")),
    request_body = UpdateCouponRequest,
    responses(
        (status = 200, description = "The updated coupon", body = CouponDto),
        (status = 400, description = "Invalid value, a field that cannot change, or a plan id the app does not have"),
        (status = 404, description = "No such coupon in the admin's app")
    )
)]
#[put("/admin/billing/coupons/{id}")]
pub async fn update_coupon(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
    body: Json<UpdateCouponRequest>,
) -> Result<HttpResponse, ApiError> {
    let (id, patch) = (id.into_inner(), body.into_inner().into());
    let catalog = state.catalog.clone();
    let coupon =
        detached(async move { catalog.update_coupon(&admin.app, &id, patch).await }).await?;
    Ok(ok(CouponDto::from(coupon)))
}

/// Creates a coupon in the admin's app.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = CreateCouponRequest,
    responses(
        (status = 200, description = "The new coupon", body = CouponDto),
        (status = 400, description = "Invalid coupon, or a plan id the app does not have"),
        (status = 409, description = "The app already has this code")
    )
)]
#[post("/admin/billing/coupons")]
pub async fn create_coupon(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    body: Json<CreateCouponRequest>,
) -> Result<HttpResponse, ApiError> {
    let spec = body.into_inner().into();
    let catalog = state.catalog.clone();
    let coupon =
        detached(async move { catalog.create_coupon(&admin.app, spec, &admin.user).await }).await?;
    Ok(ok(CouponDto::from(coupon)))
}
