//! The catalog: the public plan list, and plan and coupon administration within the admin's app.

use actix_web::{HttpRequest, HttpResponse, get, post, put, web};
use tally_catalog::validate::validate_app;

use crate::AppState;
use crate::auth::{Admin, DEFAULT_APP};
use crate::dto::{
    AdminPlanDto, CouponDto, CreateCouponRequest, CreatePlanRequest, PageQuery, PlanDto,
    UpdateCouponRequest, UpdatePlanRequest,
};
use crate::error::{ApiError, ok, ok_page};
use crate::extract::Json;
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
    let plans = state.catalog.public_plans(&public_app(&req)).await?;
    Ok(ok(plans.into_iter().map(PlanDto::from).collect::<Vec<_>>()))
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
    Ok(ok(plans
        .into_iter()
        .map(AdminPlanDto::from)
        .collect::<Vec<_>>()))
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
    let spec = body.into_inner().into();
    let catalog = state.catalog.clone();
    let plan =
        detached(async move { catalog.create_plan(&admin.app, spec, &admin.user).await }).await?;
    Ok(ok(AdminPlanDto::from(plan)))
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
    let (id, patch) = (id.into_inner(), body.into_inner().into());
    let catalog = state.catalog.clone();
    let plan = detached(async move {
        catalog
            .update_plan(&admin.app, &id, patch, &admin.user)
            .await
    })
    .await?;
    Ok(ok(AdminPlanDto::from(plan)))
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
