//! Operators' view of the app's accounts: search, one customer's whole picture, and the app's
//! statistics.

use actix_web::{HttpResponse, get, web};
use tally_ledger::stats::{Bucket, StatsQuery};
use tally_ledger::{AccountQuery, AccountRef};
use time::{Date, Duration};

use crate::AppState;
use crate::auth::Admin;
use crate::checkout_dto::OrderDto;
use crate::dto::{AdminUserDetailDto, AdminUserDto, AdminUserQuery, StatsDto, StatsParams};
use crate::error::{ApiError, ok, ok_cursor_page};
use crate::routes::page;

/// Latest orders shown on a customer.
const LATEST_ORDERS: i64 = 10;

/// The app's accounts, newest first, searchable by user id prefix.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(AdminUserQuery),
    responses(
        (status = 200, description = "A page of accounts; `meta.next_before` is the cursor of the next page", body = [AdminUserDto]),
        (status = 400, description = "Bad limit, cursor or query"),
        (status = 403, description = "Not an admin")
    )
)]
#[get("/admin/users")]
pub async fn list_users(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    query: web::Query<AdminUserQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = page(query.limit, None)?;
    if query.before.as_deref() == Some("") {
        return Err(ApiError::validation(
            "before",
            "must be a user id of this app",
        ));
    }
    let (rows, has_more) = state
        .ledger
        .accounts(AccountQuery {
            app: admin.app,
            prefix: query.query.clone(),
            before: query.before.clone(),
            limit,
        })
        .await?;
    let next_before = has_more
        .then(|| rows.last().map(|a| a.user.clone()))
        .flatten();
    let rows: Vec<AdminUserDto> = rows.into_iter().map(Into::into).collect();
    Ok(ok_cursor_page(rows, limit, offset, has_more, next_before))
}

/// One customer: balance, lots, holds, check-in streak, subscription and latest orders.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("user_id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The customer", body = AdminUserDetailDto),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No account for this user in the app")
    )
)]
#[get("/admin/users/{user_id}")]
pub async fn get_user(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    user_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::not_found("no account for this user");
    let account =
        AccountRef::new(admin.app.clone(), user_id.into_inner()).map_err(|_| not_found())?;
    let (summary, balance, view) = state
        .ledger
        .account_detail(account.clone())
        .await?
        .ok_or_else(not_found)?;
    let checkin = state.ledger.checkin_status(account.clone()).await?;
    let subscription = state
        .checkout
        .subscription(&account.app, &account.user)
        .await?;
    let orders = state
        .checkout
        .orders(&account.app, &account.user, LATEST_ORDERS, 0)
        .await?;
    let (lots, holds) = AdminUserDetailDto::lots_and_holds(&view);
    Ok(ok(AdminUserDetailDto {
        user: summary.into(),
        credits: balance.into(),
        lots,
        holds,
        checkin: checkin.into(),
        subscription: subscription.map(Into::into),
        orders: orders.into_iter().map(OrderDto::from).collect(),
    }))
}

/// Days a range spans when `from` is not given.
const DEFAULT_DAYS: i64 = 30;

fn day(field: &str, value: Option<&str>) -> Result<Option<Date>, ApiError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    value
        .map(|s| {
            Date::parse(s, &format)
                .map_err(|_| ApiError::validation(field, "must be a date, YYYY-MM-DD"))
        })
        .transpose()
}

/// The app's statistics per day, week or month: credits by type, revenue, new accounts,
/// check-ins and subscriptions.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(StatsParams),
    responses(
        (status = 200, description = "Every bucket of the range, oldest first", body = StatsDto),
        (status = 400, description = "Bad date, bucket or range"),
        (status = 403, description = "Not an admin")
    )
)]
#[get("/admin/stats")]
pub async fn stats(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    params: web::Query<StatsParams>,
) -> Result<HttpResponse, ApiError> {
    let bucket = match params.bucket.as_deref() {
        None => Bucket::Day,
        Some(s) => Bucket::parse(s)
            .ok_or_else(|| ApiError::validation("bucket", "must be one of day, week, month"))?,
    };
    let to = day("to", params.to.as_deref())?.unwrap_or_else(|| state.ledger.now().date());
    let from = day("from", params.from.as_deref())?
        .unwrap_or_else(|| to - Duration::days(DEFAULT_DAYS - 1));
    let query = StatsQuery {
        app: admin.app,
        from,
        to,
        bucket,
    };
    let stats = state.ledger.stats(query.clone()).await?;
    Ok(ok(StatsDto::new(&query, stats)))
}
