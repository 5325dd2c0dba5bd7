//! Redemption codes: admins generate them, users redeem them.

use actix_web::{HttpResponse, get, post, web};
use tally_ledger::CodeBatchRequest;

use crate::AppState;
use crate::auth::{Admin, User};
use crate::dto::{CodeBatchDto, CodeDto, PageQuery, RedeemDto, RedeemRequestDto};
use crate::error::{ApiError, ok, ok_page};
use crate::extract::Json;
use crate::routes::{detached, page};

/// Generates a batch of codes.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = CodeBatchDto,
    responses((status = 200, description = "The new codes", body = [CodeDto]), (status = 400, description = "Invalid batch"))
)]
#[post("/admin/credits/codes")]
pub async fn create(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    body: Json<CodeBatchDto>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let request = CodeBatchRequest {
        app: admin.app,
        count: body.count,
        credits: body.credits,
        max_uses: body.max_uses.unwrap_or(1),
        expires_at: body.expires_at,
        credits_expire_days: body.credits_expire_days,
        description: body.description,
        created_by: admin.user,
    };
    let ledger = state.ledger.clone();
    let codes = detached(async move { ledger.create_codes(request).await }).await?;
    Ok(ok(codes.into_iter().map(CodeDto::from).collect::<Vec<_>>()))
}

/// The app's codes, newest first, with their use counts.
#[utoipa::path(
    operation_id = "list_codes",
    tag = "admin",
    security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, description = "A page of codes", body = [CodeDto]))
)]
#[get("/admin/credits/codes")]
pub async fn list(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = page(query.limit, query.offset)?;
    let mut codes = state.ledger.codes(&admin.app, limit + 1, offset).await?;
    let has_more = codes.len() as i64 > limit;
    codes.truncate(usize::try_from(limit).unwrap_or(0));
    let codes: Vec<CodeDto> = codes.into_iter().map(Into::into).collect();
    Ok(ok_page(codes, limit, offset, has_more))
}

/// Redeems a code for the caller.
#[utoipa::path(
    tag = "credits",
    security(("bearer" = [])),
    request_body = RedeemRequestDto,
    responses(
        (status = 200, description = "Credits granted", body = RedeemDto),
        (status = 404, description = "CODE_NOT_FOUND"),
        (status = 409, description = "CODE_ALREADY_REDEEMED"),
        (status = 422, description = "CODE_EXPIRED or CODE_EXHAUSTED"),
        (status = 429, description = "RATE_LIMITED after repeated wrong codes (see Retry-After)")
    )
)]
#[post("/credits/redeem")]
pub async fn redeem(
    state: web::Data<AppState>,
    User(caller): User,
    body: Json<RedeemRequestDto>,
) -> Result<HttpResponse, ApiError> {
    let code = body.into_inner().code;
    if code.len() > 64 {
        return Err(ApiError::validation(
            "code",
            "must be at most 64 characters",
        ));
    }
    let ledger = state.ledger.clone();
    let (code, txn) = detached(async move { ledger.redeem(caller.account(), &code).await }).await?;
    Ok(ok(RedeemDto {
        credits: code.credits,
        balance: txn.balance_after,
        transaction: txn.into(),
    }))
}
