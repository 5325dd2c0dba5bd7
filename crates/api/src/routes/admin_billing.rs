//! Operators' lookups of the app's orders and subscriptions.

use actix_web::{HttpResponse, get, web};
use tally_checkout::{
    AppOrderQuery, AppSubscriptionQuery, Channel, OrderStatus, OrderType, SubscriptionStatus,
};

use crate::AppState;
use crate::auth::Admin;
use crate::checkout_dto::{
    AdminOrderDetailDto, AdminOrderDto, AdminOrderQuery as OrderFilters, AdminSubscriptionDto,
    AdminSubscriptionQuery as SubscriptionFilters,
};
use crate::dto::before_cursor_named;
use crate::error::{ApiError, ok};
use crate::routes::{instant, keyset_page, page};

/// Parses an optional wire value of one of the domain's enums, naming every allowed spelling
/// when it is none of them.
fn one_of<T: Copy + std::fmt::Display>(
    field: &str,
    value: Option<&str>,
    all: &[T],
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    value
        .map(|s| {
            parse(s).ok_or_else(|| {
                let names: Vec<String> = all.iter().map(ToString::to_string).collect();
                ApiError::validation(field, format!("must be one of {}", names.join(", ")))
            })
        })
        .transpose()
}

/// A user id filter: present means non-empty.
fn user_filter(value: Option<&str>) -> Result<Option<String>, ApiError> {
    match value {
        Some("") => Err(ApiError::validation("user_id", "must not be empty")),
        other => Ok(other.map(str::to_owned)),
    }
}

/// The app's orders, newest first, paged by the `before` cursor.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(OrderFilters),
    responses(
        (status = 200, description = "A page of orders; `meta.next_before` is the cursor of the next page", body = [AdminOrderDto]),
        (status = 400, description = "Bad limit, cursor, filter or time range"),
        (status = 403, description = "Not an admin")
    )
)]
#[get("/admin/orders")]
pub async fn list_orders(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    query: web::Query<OrderFilters>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = page(query.limit, None)?;
    if query.before.as_deref() == Some("") {
        return Err(ApiError::validation(
            "before",
            "must be an order id of this app",
        ));
    }
    let rows = state
        .checkout
        .app_orders(AppOrderQuery {
            app: admin.app,
            user: user_filter(query.user_id.as_deref())?,
            status: one_of(
                "status",
                query.status.as_deref(),
                OrderStatus::ALL,
                OrderStatus::parse,
            )?,
            order_type: one_of(
                "type",
                query.order_type.as_deref(),
                OrderType::ALL,
                OrderType::parse,
            )?,
            channel: one_of(
                "channel",
                query.channel.as_deref(),
                Channel::ALL,
                Channel::parse,
            )?,
            from: instant("from", query.from.as_deref())?,
            to: instant("to", query.to.as_deref())?,
            before: query.before.clone(),
            limit: limit + 1,
        })
        .await?;
    Ok(keyset_page(
        rows,
        (limit, offset),
        |o| o.id.clone(),
        AdminOrderDto::from,
    ))
}

/// One order of the app, with the provider events that touched it.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order and its events, oldest first", body = AdminOrderDetailDto),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such order in this app")
    )
)]
#[get("/admin/orders/{id}")]
pub async fn get_order(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (order, events) = state.checkout.app_order(&admin.app, &id).await?;
    Ok(ok(AdminOrderDetailDto {
        order: order.into(),
        events: events.into_iter().map(Into::into).collect(),
    }))
}

/// The app's subscriptions, newest first, paged by the `before` cursor.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(SubscriptionFilters),
    responses(
        (status = 200, description = "A page of subscriptions; `meta.next_before` is the cursor of the next page", body = [AdminSubscriptionDto]),
        (status = 400, description = "Bad limit, cursor or filter"),
        (status = 403, description = "Not an admin")
    )
)]
#[get("/admin/subscriptions")]
pub async fn list_subscriptions(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    query: web::Query<SubscriptionFilters>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = page(query.limit, None)?;
    if query.plan.as_deref() == Some("") {
        return Err(ApiError::validation("plan", "must not be empty"));
    }
    let rows = state
        .checkout
        .app_subscriptions(AppSubscriptionQuery {
            app: admin.app,
            user: user_filter(query.user_id.as_deref())?,
            status: one_of(
                "status",
                query.status.as_deref(),
                SubscriptionStatus::ALL,
                SubscriptionStatus::parse,
            )?,
            plan_id: query.plan.clone(),
            before: before_cursor_named(query.before.as_deref(), "a subscription id")?,
            limit: limit + 1,
        })
        .await?;
    Ok(keyset_page(
        rows,
        (limit, offset),
        |s| s.id.clone(),
        AdminSubscriptionDto::from,
    ))
}

/// One subscription of the app.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The subscription", body = AdminSubscriptionDto),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such subscription in this app")
    )
)]
#[get("/admin/subscriptions/{id}")]
pub async fn get_subscription(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::not_found("no such subscription");
    let id = before_cursor_named(Some(&id), "a subscription id")
        .ok()
        .flatten()
        .ok_or_else(not_found)?;
    let sub = state
        .checkout
        .app_subscription(&admin.app, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(ok(AdminSubscriptionDto::from(sub)))
}
