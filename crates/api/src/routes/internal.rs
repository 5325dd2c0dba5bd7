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

/// Applies a service's movement of `kind` for the request's user, description and metadata,
/// answering its transaction. The idempotency key is required: without one, every problem of
/// the request is named, the missing key first.
async fn apply_keyed(
    state: &AppState,
    service: Service,
    kind: MovementKind,
    (user, description, metadata): (String, String, Option<serde_json::Value>),
    idempotency_key: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let movement = Movement {
        account: unchecked(service.app, user),
        kind,
        description,
        idempotency_key,
        metadata,
        actor: None,
    };
    if movement.idempotency_key.is_none() {
        let mut fields = vec![FieldError::new("idempotency_key", "is required")];
        if let Err(LedgerError::Validation(more)) = movement.validate() {
            fields.extend(more);
        }
        return Err(ApiError::fields(fields));
    }
    let ledger = state.ledger.clone();
    let txn = detached(async move { ledger.apply(movement).await }).await?;
    Ok(ok(AdminTransactionDto::from(txn)))
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
    let kind = MovementKind::Debit {
        txn_type: TxnType::AiUsage,
        credits: body.amount,
    };
    let request = (body.user_id, body.description, body.metadata);
    apply_keyed(&state, service, kind, request, key).await
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
    let kind = MovementKind::Grant {
        txn_type: TxnType::Reward,
        credits: body.amount,
        expires_at: body.expires_at,
    };
    let request = (body.user_id, body.description, body.metadata);
    apply_keyed(&state, service, kind, request, key).await
}
