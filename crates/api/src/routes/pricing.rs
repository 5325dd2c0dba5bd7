//! Pricing administration within the admin's app: features, rate versions and the free tier's
//! entitlements (a plan's are set with the plan).

use actix_web::{HttpResponse, get, post, put, web};
use tally_ledger::usage::{Entitlement, FREE_SCOPE};

use crate::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, ok};
use crate::extract::Json;
use crate::pricing_dto::{
    EntitlementDto, EntitlementsRequest, FeatureDto, FeatureRequest, RateDto, RateQuery,
    RateRequest,
};

/// The app's features, by key.
#[utoipa::path(
    tag = "pricing",
    security(("bearer" = [])),
    responses((status = 200, description = "Features", body = [FeatureDto]), (status = 403, description = "Not an admin"))
)]
#[get("/admin/pricing/features")]
pub async fn list_features(
    state: web::Data<AppState>,
    Admin(admin): Admin,
) -> Result<HttpResponse, ApiError> {
    let features = state.ledger.features(&admin.app).await?;
    Ok(ok(features
        .into_iter()
        .map(FeatureDto::from)
        .collect::<Vec<_>>()))
}

/// Creates a feature.
#[utoipa::path(
    tag = "pricing",
    security(("bearer" = [])),
    request_body = FeatureRequest,
    responses(
        (status = 200, description = "The new feature", body = FeatureDto),
        (status = 400, description = "VALIDATION_ERROR"),
        (status = 409, description = "CONFLICT: the key exists")
    )
)]
#[post("/admin/pricing/features")]
pub async fn create_feature(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    body: Json<FeatureRequest>,
) -> Result<HttpResponse, ApiError> {
    let spec = body.into_inner().spec(None)?;
    let feature = state.ledger.put_feature(&admin.app, spec, true).await?;
    Ok(ok(FeatureDto::from(feature)))
}

/// Creates the feature `key`, or changes its name and unit (its kind never changes).
#[utoipa::path(
    tag = "pricing",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "Feature key")),
    request_body = FeatureRequest,
    responses(
        (status = 200, description = "The feature", body = FeatureDto),
        (status = 400, description = "VALIDATION_ERROR"),
        (status = 409, description = "CONFLICT: another kind")
    )
)]
#[put("/admin/pricing/features/{key}")]
pub async fn put_feature(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    key: web::Path<String>,
    body: Json<FeatureRequest>,
) -> Result<HttpResponse, ApiError> {
    let spec = body.into_inner().spec(Some(key.into_inner()))?;
    let feature = state.ledger.put_feature(&admin.app, spec, false).await?;
    Ok(ok(FeatureDto::from(feature)))
}

/// The app's rate versions, newest first.
#[utoipa::path(
    tag = "pricing",
    security(("bearer" = [])),
    params(RateQuery),
    responses((status = 200, description = "Rate versions", body = [RateDto]))
)]
#[get("/admin/pricing/rates")]
pub async fn list_rates(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    query: web::Query<RateQuery>,
) -> Result<HttpResponse, ApiError> {
    let rates = state
        .ledger
        .rates(&admin.app, query.into_inner().feature)
        .await?;
    Ok(ok(rates.into_iter().map(RateDto::from).collect::<Vec<_>>()))
}

/// Adds a rate version for a metered feature and dimensions; calls priced before keep their price.
#[utoipa::path(
    tag = "pricing",
    security(("bearer" = [])),
    request_body = RateRequest,
    responses(
        (status = 200, description = "The new version", body = RateDto),
        (status = 400, description = "VALIDATION_ERROR (an unknown or boolean feature, a `per` that does not divide 10^12, tiers out of order, an instant in the past)")
    )
)]
#[post("/admin/pricing/rates")]
pub async fn create_rate(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    body: Json<RateRequest>,
) -> Result<HttpResponse, ApiError> {
    let spec = body.into_inner().spec()?;
    let rate = state.ledger.add_rate(&admin.app, spec, &admin.user).await?;
    Ok(ok(RateDto::from(rate)))
}

fn entitlement_dtos(list: Vec<Entitlement>) -> Vec<EntitlementDto> {
    list.into_iter().map(EntitlementDto::from).collect()
}

/// What users without a live subscription get.
#[utoipa::path(
    tag = "pricing",
    security(("bearer" = [])),
    responses((status = 200, description = "The free tier's entitlements", body = [EntitlementDto]))
)]
#[get("/admin/pricing/free-entitlements")]
pub async fn get_free_entitlements(
    state: web::Data<AppState>,
    Admin(admin): Admin,
) -> Result<HttpResponse, ApiError> {
    let list = state
        .ledger
        .entitlements(&admin.app, Some(FREE_SCOPE.to_owned()))
        .await?;
    Ok(ok(entitlement_dtos(
        list.into_iter().map(|(_, e)| e).collect(),
    )))
}

/// Replaces what users without a live subscription get.
#[utoipa::path(
    tag = "pricing",
    security(("bearer" = [])),
    request_body = EntitlementsRequest,
    responses(
        (status = 200, description = "The stored list", body = [EntitlementDto]),
        (status = 400, description = "VALIDATION_ERROR naming the entry")
    )
)]
#[put("/admin/pricing/free-entitlements")]
pub async fn put_free_entitlements(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    body: Json<EntitlementsRequest>,
) -> Result<HttpResponse, ApiError> {
    let list = body
        .into_inner()
        .entitlements
        .into_iter()
        .map(Entitlement::from)
        .collect();
    let stored = state
        .ledger
        .set_entitlements(&admin.app, FREE_SCOPE.to_owned(), list)
        .await?;
    Ok(ok(entitlement_dtos(stored)))
}
