//! Holds for streamed usage, behind service keys.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use tally_ledger::usage::UsageRequest;
use tally_ledger::{AccountRef, CaptureRequest, ReserveRequest};

use crate::AppState;
use crate::auth::Service;
use crate::dto::{AdminTransactionDto, CaptureDto, CaptureRequestDto, HoldDto, ReserveRequestDto};
use crate::error::{ApiError, ok};
use crate::extract::Json;
use crate::pricing_dto::UsageTrackDto;
use crate::routes::{detached, idempotency_key};

const DEFAULT_TTL_SECONDS: i64 = 300;

/// Reserves credits for a call whose cost is not known yet.
#[utoipa::path(
    tag = "service",
    security(("service_key" = [])),
    request_body = ReserveRequestDto,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays return the first hold")),
    responses(
        (status = 200, description = "The active hold", body = HoldDto),
        (status = 402, description = "INSUFFICIENT_CREDITS: the estimate exceeds what is available")
    )
)]
#[post("/internal/credits/holds")]
pub async fn reserve(
    state: web::Data<AppState>,
    service: Service,
    req: HttpRequest,
    body: Json<ReserveRequestDto>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    // Checked by the ledger with the rest of the request: one answer names every field.
    let account = AccountRef {
        app: service.app,
        user: body.user_id,
    };
    let key = idempotency_key(&req, body.idempotency_key.as_deref())?;
    let ttl_seconds = body.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    let ledger = state.ledger.clone();
    let hold = match (body.amount, body.quantities) {
        (Some(credits), None) => {
            if body.dimensions.is_some() {
                return Err(ApiError::validation(
                    "dimensions",
                    "goes with `quantities`, not `amount`",
                ));
            }
            let request = ReserveRequest {
                account,
                credits,
                ttl_seconds,
                description: body.description,
                idempotency_key: key,
                metadata: body.metadata,
            };
            detached(async move { ledger.reserve(request).await }).await?
        }
        (None, Some(quantities)) => {
            let usage = UsageRequest {
                account,
                quantities,
                features: vec![],
                dimensions: body.dimensions.unwrap_or_default(),
                description: body.description,
                metadata: body.metadata,
                idempotency_key: key,
            };
            detached(async move { ledger.reserve_usage(usage, ttl_seconds).await }).await?
        }
        _ => return Err(one_of()),
    };
    Ok(ok(HoldDto::from(hold)))
}

fn one_of() -> ApiError {
    ApiError::validation("amount", "give exactly one of `amount` and `quantities`")
}

/// Settles a hold at the real cost; the rest of the hold returns to the user.
#[utoipa::path(
    tag = "service",
    security(("service_key" = [])),
    request_body = CaptureRequestDto,
    params(
        ("id" = String, Path, description = "Hold id"),
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key and amount answers the first capture")
    ),
    responses(
        (status = 200, description = "Captured", body = CaptureDto),
        (status = 402, description = "INSUFFICIENT_CREDITS: the cost exceeds the hold plus what is available"),
        (status = 404, description = "No such hold in this app"),
        (status = 409, description = "HOLD_NOT_ACTIVE or HOLD_EXPIRED")
    )
)]
#[post("/internal/credits/holds/{id}/capture")]
pub async fn capture(
    state: web::Data<AppState>,
    service: Service,
    req: HttpRequest,
    path: web::Path<i64>,
    body: Json<CaptureRequestDto>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let key = idempotency_key(&req, None)?;
    let hold_id = path.into_inner();
    let ledger = state.ledger.clone();
    let (amount, quantities) = (body.amount, body.quantities);
    if let (None, Some(quantities)) = (amount, quantities.clone()) {
        if body.description.is_some() || body.metadata.is_some() {
            return Err(ApiError::validation(
                "quantities",
                "a capture of quantities keeps the hold's description and metadata",
            ));
        }
        let app = service.app.clone();
        let (hold, usage, txn) =
            detached(async move { ledger.capture_usage(&app, hold_id, quantities).await }).await?;
        return Ok(ok(CaptureDto {
            hold: hold.into(),
            transaction: txn.map(AdminTransactionDto::from),
            usage: Some(UsageTrackDto::from(usage)),
        }));
    }
    let Some(credits) = amount.filter(|_| quantities.is_none()) else {
        return Err(one_of());
    };
    let request = CaptureRequest {
        app: service.app,
        hold_id,
        credits,
        description: body.description,
        metadata: body.metadata,
    };
    let (hold, txn) = detached(async move { ledger.capture(request, key).await }).await?;
    Ok(ok(CaptureDto {
        hold: hold.into(),
        transaction: txn.map(AdminTransactionDto::from),
        usage: None,
    }))
}

/// Returns a hold's credits in full.
#[utoipa::path(
    tag = "service",
    security(("service_key" = [])),
    params(("id" = String, Path, description = "Hold id")),
    responses(
        (status = 200, description = "Released (or already released/expired)", body = HoldDto),
        (status = 404, description = "No such hold in this app"),
        (status = 409, description = "HOLD_NOT_ACTIVE: already captured")
    )
)]
#[post("/internal/credits/holds/{id}/release")]
pub async fn release(
    state: web::Data<AppState>,
    service: Service,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let hold_id = path.into_inner();
    let ledger = state.ledger.clone();
    let hold = detached(async move { ledger.release(&service.app, hold_id).await }).await?;
    Ok(ok(HoldDto::from(hold)))
}

/// A hold, with its status as of now.
#[utoipa::path(
    operation_id = "get_hold",
    tag = "service",
    security(("service_key" = [])),
    params(("id" = String, Path, description = "Hold id")),
    responses((status = 200, description = "The hold", body = HoldDto), (status = 404, description = "No such hold in this app"))
)]
#[get("/internal/credits/holds/{id}")]
pub async fn get(
    state: web::Data<AppState>,
    service: Service,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let hold = state.ledger.hold(&service.app, path.into_inner()).await?;
    Ok(ok(HoldDto::from(hold)))
}
