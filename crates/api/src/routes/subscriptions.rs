//! The subscription lifecycle: a user's subscriptions, cancel and resume (for the user and for
//! operators). Tally asks the provider; the subscription changes when the provider's event
//! arrives, through the same webhook path as every other event. For the sandbox channel Tally
//! is the provider: its event is sent before the answer.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use std::sync::Arc;

use tally_checkout::{
    AppSubscriptionQuery, Channel, CheckoutError, PlanChangeAnswer, SandboxDriver, Subscription,
    SubscriptionChange, SubscriptionChangeAnswer, WebhookHeaders,
};

use crate::AppState;
use crate::auth::{Admin, Caller, User};
use crate::checkout_dto::{
    CancelSubscriptionRequest, ChangePlanRequest, PlanChangeDto, PlanChangePreviewDto,
    SubscriptionChangeDto, SubscriptionDto, SubscriptionPageQuery,
};
use crate::dto::before_cursor_named;
use crate::error::{ApiError, ok};
use crate::routes::{detached, idempotency_key, keyset_page, page};

/// The caller's subscriptions, newest first, past ones included; paged by the `before` cursor.
#[utoipa::path(
    operation_id = "list_my_subscriptions",
    tag = "orders",
    security(("bearer" = [])),
    params(SubscriptionPageQuery),
    responses(
        (status = 200, description = "A page of subscriptions; `meta.next_before` is the cursor of the next page", body = [SubscriptionDto]),
        (status = 400, description = "Bad limit or cursor")
    )
)]
#[get("/subscriptions")]
pub async fn list(
    state: web::Data<AppState>,
    User(caller): User,
    query: web::Query<SubscriptionPageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = page(query.limit, None)?;
    let rows = state
        .checkout
        .app_subscriptions(AppSubscriptionQuery {
            app: caller.app,
            user: Some(caller.user),
            before: before_cursor_named(query.before.as_deref(), "a subscription id")?,
            limit: limit + 1,
            ..AppSubscriptionQuery::default()
        })
        .await?;
    Ok(keyset_page(
        rows,
        (limit, offset),
        |s| s.id.clone(),
        SubscriptionDto::from,
    ))
}

/// Cancels the caller's live subscription: at the end of the paid period (the default) or now.
#[utoipa::path(
    tag = "orders",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Passed to the provider (Stripe)")),
    request_body = CancelSubscriptionRequest,
    responses(
        (status = 200, description = "What was asked; the subscription changes when the provider's event arrives", body = SubscriptionChangeDto),
        (status = 400, description = "Malformed body"),
        (status = 404, description = "No live subscription (NO_ACTIVE_SUBSCRIPTION)"),
        (status = 502, description = "The provider refused or failed; nothing changed")
    )
)]
#[post("/subscription/cancel")]
pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    User(caller): User,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (body, key) = body_and_key::<CancelSubscriptionRequest>(&req, &body)?;
    change_own(&state, &caller, key, body.change()).await
}

/// Undoes a pending cancel at the period end: the caller's subscription renews as before.
#[utoipa::path(
    tag = "orders",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Passed to the provider (Stripe)")),
    responses(
        (status = 200, description = "What was asked; the subscription changes when the provider's event arrives", body = SubscriptionChangeDto),
        (status = 404, description = "No live subscription (NO_ACTIVE_SUBSCRIPTION)"),
        (status = 502, description = "The provider refused or failed; nothing changed")
    )
)]
#[post("/subscription/resume")]
pub async fn resume(
    req: HttpRequest,
    state: web::Data<AppState>,
    User(caller): User,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req, None)?;
    change_own(&state, &caller, key, SubscriptionChange::Resume).await
}

/// Asks for `change` to the caller's live subscription (with the request's idempotency `key`),
/// and answers what was asked.
async fn change_own(
    state: &AppState,
    caller: &Caller,
    key: Option<String>,
    change: SubscriptionChange,
) -> Result<HttpResponse, ApiError> {
    let answer = state
        .checkout
        .change_subscription(&caller.app, &caller.user, change, key)
        .await?;
    Ok(ok(settle(state, answer).await?))
}

/// Cancels one of the app's subscriptions (operators): at the period end (the default) or now.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Subscription id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Passed to the provider (Stripe)")
    ),
    request_body = CancelSubscriptionRequest,
    responses(
        (status = 200, description = "What was asked; the subscription changes when the provider's event arrives", body = SubscriptionChangeDto),
        (status = 400, description = "Malformed body"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such live subscription in this app (NO_ACTIVE_SUBSCRIPTION)"),
        (status = 502, description = "The provider refused or failed; nothing changed")
    )
)]
#[post("/admin/subscriptions/{id}/cancel")]
pub async fn admin_cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let change = optional_body::<CancelSubscriptionRequest>(&body)?.change();
    let id = before_cursor_named(Some(&id), "a subscription id")
        .ok()
        .flatten()
        .ok_or_else(|| {
            ApiError::from(CheckoutError::NoActiveSubscription(
                "no such subscription in this app".into(),
            ))
        })?;
    let key = idempotency_key(&req, None)?;
    let answer = state
        .checkout
        .change_app_subscription(&admin.app, id, change, key)
        .await?;
    Ok(ok(settle(&state, answer).await?))
}

/// A JSON body that may be left out (an empty body is the default request); a body that is
/// there must be the request, whole (see [`object_body`]).
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    object_body(body)
}

/// A JSON body that may be left out (see [`optional_body`]), then the request's idempotency key.
pub(crate) fn body_and_key<T: serde::de::DeserializeOwned + Default>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<(T, Option<String>), ApiError> {
    let body = optional_body(body)?;
    Ok((body, idempotency_key(req, None)?))
}

/// The request as a JSON object (an array is never read by position).
fn object_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice::<crate::extract::Object<T>>(body)
        .map(|o| o.0)
        .map_err(|e| crate::extract::body_error(&e.to_string()))
}

/// What switching the caller's live subscription to another plan would do now.
#[utoipa::path(
    tag = "orders",
    security(("bearer" = [])),
    params(ChangePlanRequest),
    responses(
        (status = 200, description = "The direction, the estimated charge now and the credits", body = PlanChangePreviewDto),
        (status = 400, description = "The plan the subscription is on, a credit pack, another interval, or an unknown parameter"),
        (status = 404, description = "No such plan (NOT_FOUND), or no live subscription (NO_ACTIVE_SUBSCRIPTION)"),
        (status = 422, description = "The plan is archived or has no price for the interval and channel (PLAN_NOT_PURCHASABLE)")
    )
)]
#[get("/subscription/change-preview")]
pub async fn change_preview(
    state: web::Data<AppState>,
    User(caller): User,
    query: web::Query<ChangePlanRequest>,
) -> Result<HttpResponse, ApiError> {
    let (quote, sub) = state
        .checkout
        .preview_plan_change(&caller.app, &caller.user, &query.plan_id, query.interval()?)
        .await?;
    Ok(ok(PlanChangePreviewDto::new(quote, &sub)))
}

/// Switches the caller's live subscription to another plan: an upgrade now (the provider
/// charges the difference pro rata), a downgrade from the next period.
#[utoipa::path(
    tag = "orders",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Passed to the provider (Stripe)")),
    request_body = ChangePlanRequest,
    responses(
        (status = 200, description = "What was asked; the subscription switches when the provider's event arrives", body = PlanChangeDto),
        (status = 400, description = "Malformed body, the plan the subscription is on, a credit pack, or another interval"),
        (status = 404, description = "No such plan (NOT_FOUND), or no live subscription (NO_ACTIVE_SUBSCRIPTION)"),
        (status = 422, description = "The plan is archived or has no price for the interval and channel (PLAN_NOT_PURCHASABLE)"),
        (status = 502, description = "The provider refused or failed; nothing changed")
    )
)]
#[post("/subscription/change")]
pub async fn change_plan(
    req: HttpRequest,
    state: web::Data<AppState>,
    User(caller): User,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: ChangePlanRequest = object_body(&body)?;
    let key = idempotency_key(&req, None)?;
    let answer = state
        .checkout
        .change_plan(
            &caller.app,
            &caller.user,
            &body.plan_id,
            body.interval()?,
            key,
        )
        .await?;
    Ok(ok(settle_plan_change(&state, answer).await?))
}

/// The answer to a plan change. On the sandbox channel Tally plays the provider: its signed
/// event goes through the webhook path first, and the answer shows the switched subscription.
pub(crate) async fn settle_plan_change(
    state: &AppState,
    answer: PlanChangeAnswer,
) -> Result<PlanChangeDto, ApiError> {
    let PlanChangeAnswer {
        quote,
        mut subscription,
        request,
    } = answer;
    let preview = PlanChangePreviewDto::new(quote, &subscription);
    if let Some(driver) = sandbox_driver(state, subscription.channel) {
        let delivery = driver.plan_changed(&subscription, &request, state.checkout.now());
        subscription = sandbox_applied(state, delivery, subscription).await?;
    }
    Ok(PlanChangeDto {
        outcome: "requested".to_owned(),
        preview,
        subscription: subscription.into(),
    })
}

/// The answer to a change. On the sandbox channel Tally plays the provider: its signed event
/// goes through the webhook path first, and the answer shows the changed subscription.
pub(crate) async fn settle(
    state: &AppState,
    answer: SubscriptionChangeAnswer,
) -> Result<SubscriptionChangeDto, ApiError> {
    let SubscriptionChangeAnswer {
        change,
        requested,
        mut subscription,
    } = answer;
    if requested && let Some(driver) = sandbox_driver(state, subscription.channel) {
        let delivery = driver.subscription_changed(&subscription, change, state.checkout.now());
        subscription = sandbox_applied(state, delivery, subscription).await?;
    }
    Ok(SubscriptionChangeDto {
        change: change.as_str().to_owned(),
        outcome: if requested { "requested" } else { "unchanged" }.to_owned(),
        subscription: subscription.into(),
    })
}

/// The sandbox's driver when `channel` is the sandbox (and it is on): Tally then plays the
/// provider and sends the provider's event itself.
pub(crate) fn sandbox_driver(state: &AppState, channel: Channel) -> Option<Arc<dyn SandboxDriver>> {
    state
        .sandbox
        .clone()
        .filter(|_| channel == Channel::Sandbox)
}

/// Applies a sandbox delivery through the webhook path, to the end whatever becomes of the
/// request.
pub(crate) async fn sandbox_deliver(
    state: &AppState,
    (headers, body): (WebhookHeaders, Vec<u8>),
) -> Result<(), ApiError> {
    let checkout = state.checkout.clone();
    detached(async move {
        checkout
            .handle_webhook(Channel::Sandbox, &headers, &body)
            .await
            .map(drop)
    })
    .await
}

/// Applies the sandbox's `delivery` about `subscription`, then reads it again.
async fn sandbox_applied(
    state: &AppState,
    delivery: (WebhookHeaders, Vec<u8>),
    subscription: Subscription,
) -> Result<Subscription, ApiError> {
    sandbox_deliver(state, delivery).await?;
    let id = subscription.id.parse::<i64>().unwrap_or_default();
    Ok(state
        .checkout
        .app_subscription(&subscription.app, id)
        .await?
        .unwrap_or(subscription))
}
