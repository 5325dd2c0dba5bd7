//! Admin endpoints: every transaction of the app, manual adjustments, check-in settings.

use actix_web::{HttpRequest, HttpResponse, get, post, put, web};
use tally_ledger::{AccountRef, Movement, MovementKind, TransactionQuery};

use crate::AppState;
use crate::auth::Admin;
use crate::dto::{
    AdminHistoryQuery, AdminTransactionDto, CheckinConfigDto, ManualAdjustmentRequest,
    before_cursor,
};
use crate::error::{ApiError, ok, ok_cursor_page};
use crate::extract::Json;
use crate::routes::{detached, idempotency_key, instant, page, txn_type};

/// Every transaction of the admin's app, newest first.
#[utoipa::path(
    operation_id = "admin_transactions",
    tag = "admin",
    security(("bearer" = [])),
    params(AdminHistoryQuery),
    responses((status = 200, description = "A page of transactions; `meta.next_before` is the cursor of the next page", body = [AdminTransactionDto]), (status = 400, description = "Bad pagination, cursor or filter"), (status = 403, description = "Not an admin"))
)]
#[get("/admin/credits/transactions")]
pub async fn transactions(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    query: web::Query<AdminHistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = page(query.limit, query.offset)?;
    let (rows, has_more) = state
        .ledger
        .transactions(TransactionQuery {
            app: admin.app,
            user: query.user_id.clone(),
            txn_type: txn_type(query.txn_type.as_deref())?,
            from: instant("from", query.from.as_deref())?,
            to: instant("to", query.to.as_deref())?,
            limit,
            offset,
            before: before_cursor(query.before.as_deref())?,
        })
        .await?;
    let rows: Vec<AdminTransactionDto> = rows.into_iter().map(Into::into).collect();
    let next_before = has_more
        .then(|| rows.last().map(|r| r.transaction.id.clone()))
        .flatten();
    Ok(ok_cursor_page(rows, limit, offset, has_more, next_before))
}

/// Grants or deducts credits by hand.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = ManualAdjustmentRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays return the first result")),
    responses(
        (status = 200, description = "The admin_adjustment transaction", body = AdminTransactionDto),
        (status = 402, description = "Would take the balance below zero without allow_negative")
    )
)]
#[post("/admin/credits/manual")]
pub async fn manual(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    req: HttpRequest,
    body: Json<ManualAdjustmentRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let key = idempotency_key(&req, body.idempotency_key.as_deref())?;
    let movement = Movement {
        // Checked by the ledger with the rest of the movement: one answer names every field.
        account: AccountRef {
            app: admin.app.clone(),
            user: body.user_id,
        },
        kind: MovementKind::Adjust {
            credits: body.amount,
            allow_negative: body.allow_negative,
            expires_at: body.expires_at,
        },
        description: body.description,
        idempotency_key: key,
        metadata: None,
        actor: Some(admin.user),
    };
    let ledger = state.ledger.clone();
    let txn = detached(async move { ledger.apply(movement).await }).await?;
    Ok(ok(AdminTransactionDto::from(txn)))
}

/// The app's check-in settings.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "Current settings", body = CheckinConfigDto))
)]
#[get("/admin/checkin/config")]
pub async fn get_checkin_config(
    state: web::Data<AppState>,
    Admin(admin): Admin,
) -> Result<HttpResponse, ApiError> {
    let config = state.ledger.checkin_config(&admin.app).await?;
    Ok(ok(CheckinConfigDto::from(config)))
}

/// Replaces the app's check-in settings.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = CheckinConfigDto,
    responses((status = 200, description = "Stored settings", body = CheckinConfigDto), (status = 400, description = "Invalid settings"))
)]
#[put("/admin/checkin/config")]
pub async fn put_checkin_config(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    body: Json<CheckinConfigDto>,
) -> Result<HttpResponse, ApiError> {
    let stored = state
        .ledger
        .set_checkin_config(&admin.app, body.into_inner().into(), &admin.user)
        .await?;
    Ok(ok(CheckinConfigDto::from(stored)))
}
