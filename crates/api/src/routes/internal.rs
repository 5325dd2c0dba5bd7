//! The service API: other services check, consume and grant credits with a service key.

use actix_web::{HttpRequest, HttpResponse, post, web};
use tally_kernel::FieldError;
use tally_ledger::{AccountRef, LedgerError, Movement, MovementKind, TxnType};

use crate::AppState;
use crate::auth::Service;
use crate::dto::{AdminTransactionDto, CheckDto, CheckRequest, ConsumeRequest, GrantRequest};
use crate::error::{ApiError, ok};
use crate::extract::Json;
use crate::routes::{detached, idempotency_key};

/// Whether a user could spend `amount` now.
#[utoipa::path(
    operation_id = "check_credits",
    tag = "service",
    security(("service_key" = [])),
    request_body = CheckRequest,
    responses((status = 200, description = "Sufficiency", body = CheckDto), (status = 401, description = "Unknown service key"))
)]
#[post("/internal/credits/check")]
pub async fn check(
    state: web::Data<AppState>,
    service: Service,
    body: Json<CheckRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let s = state
        .ledger
        .check(unchecked(service.app, body.user_id), body.amount)
        .await?;
    Ok(ok(CheckDto {
        sufficient: s.sufficient,
        balance: s.balance,
        available: s.available,
    }))
}

/// The account a request names, checked by the ledger with the rest of the request so that one
/// answer lists every refused field.
fn unchecked(app: String, user: String) -> AccountRef {
    AccountRef { app, user }
}

/// `movement` if it carries an idempotency key; else every problem of it, the missing key first.
fn keyed(movement: Movement) -> Result<Movement, ApiError> {
    if movement.idempotency_key.is_some() {
        return Ok(movement);
    }
    let mut fields = vec![FieldError::new("idempotency_key", "is required")];
    if let Err(LedgerError::Validation(more)) = movement.validate() {
        fields.extend(more);
    }
    Err(ApiError::fields(fields))
}

/// Deducts usage as an `ai_usage` transaction; never overdraws.
#[utoipa::path(
    tag = "service",
    security(("service_key" = [])),
    request_body = ConsumeRequest,
    responses(
        (status = 200, description = "The ai_usage transaction", body = AdminTransactionDto),
        (status = 402, description = "INSUFFICIENT_CREDITS"),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED")
    )
)]
#[post("/internal/credits/consume")]
pub async fn consume(
    state: web::Data<AppState>,
    service: Service,
    req: HttpRequest,
    body: Json<ConsumeRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let key = idempotency_key(&req, body.idempotency_key.as_deref())?;
    let movement = keyed(Movement {
        account: unchecked(service.app, body.user_id),
        kind: MovementKind::Debit {
            txn_type: TxnType::AiUsage,
            credits: body.amount,
        },
        description: body.description,
        idempotency_key: key,
        metadata: body.metadata,
        actor: None,
    })?;
    let ledger = state.ledger.clone();
    let txn = detached(async move { ledger.apply(movement).await }).await?;
    Ok(ok(AdminTransactionDto::from(txn)))
}

/// Grants a service-side reward as a `reward` transaction.
#[utoipa::path(
    tag = "service",
    security(("service_key" = [])),
    request_body = GrantRequest,
    responses((status = 200, description = "The reward transaction", body = AdminTransactionDto))
)]
#[post("/internal/credits/grant")]
pub async fn grant(
    state: web::Data<AppState>,
    service: Service,
    req: HttpRequest,
    body: Json<GrantRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let key = idempotency_key(&req, body.idempotency_key.as_deref())?;
    let movement = keyed(Movement {
        account: unchecked(service.app, body.user_id),
        kind: MovementKind::Grant {
            txn_type: TxnType::Reward,
            credits: body.amount,
            expires_at: body.expires_at,
        },
        description: body.description,
        idempotency_key: key,
        metadata: body.metadata,
        actor: None,
    })?;
    let ledger = state.ledger.clone();
    let txn = detached(async move { ledger.apply(movement).await }).await?;
    Ok(ok(AdminTransactionDto::from(txn)))
}
