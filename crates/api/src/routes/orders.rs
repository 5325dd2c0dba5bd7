//! The caller's orders and subscription, and the provider billing portal.

use actix_web::{HttpResponse, get, post, web};
use tally_checkout::Channel;

use crate::AppState;
use crate::auth::User;
use crate::checkout_dto::{OrderDto, PortalRequestDto, SubscriptionDto, UrlDto};
use crate::dto::PageQuery;
use crate::error::{ApiError, ok, ok_page};
use crate::extract::Json;
use crate::routes::page;

/// The caller's orders, newest first.
#[utoipa::path(
    operation_id = "list_my_orders",
    tag = "orders",
    security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, description = "A page of orders", body = [OrderDto]), (status = 400, description = "Bad pagination"))
)]
#[get("/orders")]
pub async fn list(
    state: web::Data<AppState>,
    User(caller): User,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = page(query.limit, query.offset)?;
    let mut orders = state
        .checkout
        .orders(&caller.app, &caller.user, limit + 1, offset)
        .await?;
    let has_more = orders.len() as i64 > limit;
    orders.truncate(usize::try_from(limit).unwrap_or(0));
    let orders: Vec<OrderDto> = orders.into_iter().map(Into::into).collect();
    Ok(ok_page(orders, limit, offset, has_more))
}

/// One of the caller's orders; another user's order is not found.
#[utoipa::path(
    operation_id = "get_my_order",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses((status = 200, description = "The order", body = OrderDto), (status = 404, description = "No such order for this user"))
)]
#[get("/orders/{id}")]
pub async fn get(
    state: web::Data<AppState>,
    User(caller): User,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let order = state
        .checkout
        .order(&caller.app, &caller.user, &id.into_inner())
        .await?;
    Ok(ok(OrderDto::from(order)))
}

/// The caller's current subscription, or `null`.
#[utoipa::path(
    tag = "orders",
    security(("bearer" = [])),
    responses((status = 200, description = "The subscription or null", body = Option<SubscriptionDto>))
)]
#[get("/subscription")]
pub async fn subscription(
    state: web::Data<AppState>,
    User(caller): User,
) -> Result<HttpResponse, ApiError> {
    let sub = state
        .checkout
        .subscription(&caller.app, &caller.user)
        .await?;
    Ok(ok(sub.map(SubscriptionDto::from)))
}

/// Opens the provider's billing portal for the caller.
#[utoipa::path(
    tag = "orders",
    security(("bearer" = [])),
    request_body = PortalRequestDto,
    responses(
        (status = 200, description = "Portal URL", body = UrlDto),
        (status = 400, description = "return_url not allowed"),
        (status = 404, description = "The user has no billing customer yet (NO_BILLING_CUSTOMER)"),
        (status = 502, description = "The provider failed")
    )
)]
#[post("/subscription/portal")]
pub async fn portal(
    state: web::Data<AppState>,
    User(caller): User,
    body: Json<PortalRequestDto>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    // The sandbox has no portal of its own: its subscribers get Tally's billing page, which
    // cancels, resumes and changes plans.
    let sandbox = state.sandbox.is_some()
        && state
            .checkout
            .subscription(&caller.app, &caller.user)
            .await?
            .is_some_and(|s| s.channel == Channel::Sandbox);
    if sandbox {
        let back = match body.return_url {
            Some(url) => {
                state.checkout.check_redirect("return_url", &url)?;
                url
            }
            None => state.public_url.clone(),
        };
        let session = crate::routes::portal::session(&state, &caller.account(), &back).await?;
        return Ok(ok(UrlDto { url: session.url }));
    }
    let url = state
        .checkout
        .portal(&caller.app, &caller.user, body.return_url)
        .await?;
    Ok(ok(UrlDto { url }))
}
