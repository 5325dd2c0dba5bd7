//! Usage: services report what a call used and Tally prices it (`/internal/usage/*`, service
//! key); users see what their plan includes (`GET /entitlements`).

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use tally_ledger::AccountRef;
use tally_ledger::usage::UsageRequest;

use crate::AppState;
use crate::auth::{Service, User};
use crate::error::{ApiError, ok};
use crate::extract::Json;
use crate::pricing_dto::{
    EntitlementStatusDto, UsageCheckDto, UsageCheckRequest, UsageTrackDto, UsageTrackRequest,
};
use crate::routes::{detached, idempotency_key};

/// Whether a call may go ahead and what it would cost now; changes nothing.
#[utoipa::path(
    operation_id = "check_usage",
    tag = "service",
    security(("service_key" = [])),
    request_body = UsageCheckRequest,
    responses(
        (status = 200, description = "The decision", body = UsageCheckDto),
        (status = 400, description = "VALIDATION_ERROR: an unknown feature, a kind mismatch, a bad quantity"),
        (status = 422, description = "RATE_NOT_FOUND")
    )
)]
#[post("/internal/usage/check")]
pub async fn check(
    state: web::Data<AppState>,
    service: Service,
    body: Json<UsageCheckRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let request = UsageRequest {
        account: AccountRef::new(service.app, body.user_id)?,
        quantities: body.quantities,
        features: body.features,
        dimensions: body.dimensions,
        description: String::new(),
        metadata: None,
        idempotency_key: None,
    };
    let check = state.ledger.check_usage(request).await?;
    Ok(ok(UsageCheckDto::from(check)))
}

/// Records a call's usage: each feature's allowance first, the rest charged at its rate in one
/// `ai_usage` transaction, or the whole call refused. A retry with the same key answers the
/// original.
#[utoipa::path(
    tag = "service",
    security(("service_key" = [])),
    request_body = UsageTrackRequest,
    responses(
        (status = 200, description = "What was charged", body = UsageTrackDto),
        (status = 400, description = "VALIDATION_ERROR: an unknown feature, a kind mismatch, a bad quantity, no key"),
        (status = 402, description = "ENTITLEMENT_EXCEEDED or INSUFFICIENT_CREDITS; nothing was recorded"),
        (status = 422, description = "RATE_NOT_FOUND or IDEMPOTENCY_KEY_REUSED; nothing was recorded")
    )
)]
#[post("/internal/usage/track")]
pub async fn track(
    state: web::Data<AppState>,
    service: Service,
    req: HttpRequest,
    body: Json<UsageTrackRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let key = idempotency_key(&req, body.idempotency_key.as_deref())?
        .ok_or_else(|| ApiError::validation("idempotency_key", "is required"))?;
    let request = body.into_request(service.app, key)?;
    let ledger = state.ledger.clone();
    let outcome = detached(async move { ledger.track(request).await }).await?;
    Ok(ok(UsageTrackDto::from(outcome)))
}

/// Every feature of the app as the caller has it: what their plan (or the free tier) includes,
/// used and left in the current window, and when it resets.
#[utoipa::path(
    tag = "credits",
    security(("bearer" = [])),
    responses((status = 200, description = "Features", body = [EntitlementStatusDto]))
)]
#[get("/entitlements")]
pub async fn entitlements(
    state: web::Data<AppState>,
    User(caller): User,
) -> Result<HttpResponse, ApiError> {
    let status = state.ledger.feature_status(caller.account()).await?;
    Ok(ok(status
        .into_iter()
        .map(EntitlementStatusDto::from)
        .collect::<Vec<_>>()))
}
