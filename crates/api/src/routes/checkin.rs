//! Daily check-in.

use actix_web::{HttpResponse, get, post, web};

use crate::AppState;
use crate::auth::User;
use crate::dto::{CheckinDto, CheckinStatusDto, rfc3339};
use crate::error::{ApiError, ok};
use crate::routes::detached;

/// Claims today's check-in reward.
#[utoipa::path(
    tag = "checkin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Awarded", body = CheckinDto),
        (status = 409, description = "ALREADY_CHECKED_IN or CHECKIN_DISABLED")
    )
)]
#[post("/checkin")]
pub async fn checkin(
    state: web::Data<AppState>,
    User(caller): User,
) -> Result<HttpResponse, ApiError> {
    let ledger = state.ledger.clone();
    let out = detached(async move { ledger.checkin(caller.account()).await }).await?;
    Ok(ok(CheckinDto {
        awarded: out.awarded,
        balance: out.balance,
        streak: out.streak,
        day: out.day.to_string(),
        next_checkin_at: rfc3339(out.next_checkin_at),
    }))
}

/// Whether the caller checked in today, the streak and the next reward.
#[utoipa::path(
    tag = "checkin",
    security(("bearer" = [])),
    responses((status = 200, description = "Status", body = CheckinStatusDto))
)]
#[get("/checkin/status")]
pub async fn status(
    state: web::Data<AppState>,
    User(caller): User,
) -> Result<HttpResponse, ApiError> {
    let s = state.ledger.checkin_status(caller.account()).await?;
    Ok(ok(CheckinStatusDto::from(s)))
}
