//! Health, readiness, metrics and the OpenAPI document.

use actix_web::{HttpResponse, get, web};
use serde_json::json;
use utoipa::OpenApi;

use crate::AppState;
use crate::error::{ApiError, ok};
use crate::telemetry::Metrics;

/// Liveness: the process answers.
#[utoipa::path(tag = "system", responses((status = 200, description = "Alive")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    ok(json!({ "status": "ok" }))
}

/// Readiness: the database answers.
#[utoipa::path(tag = "system", responses((status = 200, description = "Ready"), (status = 503, description = "Database unreachable")))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.ledger.repository().ping().await {
        Ok(()) => ok(json!({ "status": "ready" })),
        Err(_) => actix_web::ResponseError::error_response(&ApiError::new(
            crate::ErrorCode::Unavailable,
            "database unreachable",
        )),
    }
}

/// Prometheus metrics.
#[utoipa::path(tag = "system", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>, metrics: web::Data<Metrics>) -> HttpResponse {
    let business = metrics
        .render_business(&state.ledger, &state.webhooks)
        .await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render() + &business)
}

/// This document.
#[utoipa::path(tag = "system", responses((status = 200, description = "OpenAPI 3.1 document")))]
#[get("/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::ApiDoc::openapi())
}
