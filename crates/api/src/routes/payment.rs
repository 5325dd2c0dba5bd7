//! Payment sessions, provider webhooks, the sandbox checkout page, and the admin's view of
//! received provider events.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use tally_checkout::{Channel, Order, OrderStatus, OrderType};

use crate::AppState;
use crate::auth::{Admin, User};
use crate::checkout_dto::{BillingEventDto, CreateSessionRequest, SessionDto, WebhookAckDto};
use crate::console::view::{money, number};
use crate::dto::PageQuery;
use crate::error::{ApiError, ok, ok_page};
use crate::extract::Json;
use crate::routes::{detached, idempotency_key, page};

/// Largest webhook body accepted: provider events (an invoice with many lines) can exceed the
/// API's general body limit, and a refused delivery would be retried for days.
const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// Opens a checkout session with the channel's provider and answers where to send the customer.
#[utoipa::path(
    tag = "payment",
    security(("bearer" = [])),
    request_body = CreateSessionRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key; a repeat answers the first session")),
    responses(
        (status = 200, description = "The session", body = SessionDto),
        (status = 400, description = "Bad channel, type, interval or redirect URL (VALIDATION_ERROR)"),
        (status = 404, description = "Unknown plan"),
        (status = 422, description = "PLAN_NOT_PURCHASABLE, COUPON_INVALID, PROVIDER_NOT_CONFIGURED or IDEMPOTENCY_KEY_REUSED"),
        (status = 502, description = "The provider failed or timed out (PROVIDER_ERROR); the order is marked failed")
    )
)]
#[post("/payment/create-session")]
pub async fn create_session(
    state: web::Data<AppState>,
    User(caller): User,
    req: HttpRequest,
    body: Json<CreateSessionRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req, None)?;
    let request = body.into_inner().command()?;
    let checkout = state.checkout.clone();
    let session = detached(async move {
        checkout
            .create_session(&caller.app, &caller.user, request, key)
            .await
    })
    .await?;
    Ok(ok(SessionDto {
        order_id: session.order_id,
        session_id: session.session_id,
        url: session.url,
    }))
}

async fn read_body(payload: web::Payload) -> Result<Vec<u8>, ApiError> {
    match payload.to_bytes_limited(WEBHOOK_BODY_LIMIT).await {
        Ok(Ok(bytes)) => Ok(bytes.to_vec()),
        Ok(Err(e)) => Err(ApiError::validation("body", e.to_string())),
        Err(_) => Err(ApiError::new(
            crate::ErrorCode::PayloadTooLarge,
            format!("request body over {WEBHOOK_BODY_LIMIT} bytes"),
        )),
    }
}

/// A provider's webhook: the raw body is verified against the signature, then the event is
/// recorded and applied in one transaction. Duplicates and events Tally does not act on answer
/// 200 too, so that the provider stops retrying.
#[utoipa::path(
    tag = "payment",
    params(("channel" = String, Path, description = "`stripe`, `creem` or `sandbox`")),
    request_body(content = String, description = "The provider's signed event, verbatim", content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded (applied, duplicate, ignored or unmatched)", body = WebhookAckDto),
        (status = 400, description = "INVALID_SIGNATURE: missing, wrong or too old"),
        (status = 404, description = "Unknown channel"),
        (status = 422, description = "PROVIDER_NOT_CONFIGURED"),
        (status = 500, description = "The event could not be recorded; the provider will retry")
    )
)]
#[post("/payment/webhook/{channel}")]
pub async fn webhook(
    state: web::Data<AppState>,
    metrics: web::Data<crate::Metrics>,
    channel: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let channel = Channel::parse(&channel).ok_or_else(|| ApiError::not_found("no such route"))?;
    let body = read_body(payload).await?;
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            Some((
                name.as_str().to_ascii_lowercase(),
                value.to_str().ok()?.to_owned(),
            ))
        })
        .collect();
    let checkout = state.checkout.clone();
    let outcome =
        detached(async move { checkout.handle_webhook(channel, &headers, &body).await }).await;
    metrics.record_provider_webhook(
        channel.as_str(),
        match &outcome {
            Ok(o) => o.as_str(),
            Err(e) if e.status.is_server_error() => "failed",
            Err(_) => "refused",
        },
    );
    let outcome = outcome?;
    Ok(ok(WebhookAckDto {
        received: true,
        outcome: outcome.as_str().to_owned(),
    }))
}

/// Received provider events of the admin's app (and those traced to no app), newest first.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, description = "A page of events", body = [BillingEventDto]), (status = 403, description = "Not an admin"))
)]
#[get("/admin/billing/events")]
pub async fn admin_events(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = page(query.limit, query.offset)?;
    let mut events = state.checkout.events(&admin.app, limit + 1, offset).await?;
    let has_more = events.len() as i64 > limit;
    events.truncate(usize::try_from(limit).unwrap_or(0));
    let events: Vec<BillingEventDto> = events.into_iter().map(Into::into).collect();
    Ok(ok_page(events, limit, offset, has_more))
}

async fn sandbox_order(state: &AppState, session_id: &str) -> Result<Order, ApiError> {
    if state.sandbox.is_none() {
        return Err(ApiError::not_found("the sandbox channel is not enabled"));
    }
    let order_id = session_id
        .strip_prefix("sbx_")
        .ok_or_else(|| ApiError::not_found("no such sandbox session"))?;
    state
        .checkout
        .order_by_id(order_id)
        .await?
        .filter(|o| o.channel == Channel::Sandbox)
        .ok_or_else(|| ApiError::not_found("no such sandbox session"))
}

/// The free trial a sandbox subscription order starts with: its plan's, if any.
async fn sandbox_trial(state: &AppState, order: &Order) -> Result<Option<u32>, ApiError> {
    if order.order_type != OrderType::Subscription {
        return Ok(None);
    }
    let plan = state.catalog.plan(&order.app, &order.plan_id).await?;
    Ok(plan.and_then(|p| p.trial_days))
}

/// A sandbox page, in the console's look.
fn sandbox_html(title: &str, body: maud::Markup) -> HttpResponse {
    crate::console::html(
        actix_web::http::StatusCode::OK,
        crate::console::view::bare(title, body),
    )
}

/// The note every sandbox page carries.
fn test_note() -> maud::Markup {
    maud::html! {
        p.notice.warn { "Test payment: no money moves. Pay and Cancel send the same signed events a payment provider would." }
    }
}

/// The sandbox's checkout page: the order, and Pay and Cancel buttons.
#[utoipa::path(
    tag = "payment",
    params(("session_id" = String, Path, description = "Sandbox session id (`sbx_…`)")),
    responses((status = 200, description = "HTML page", content_type = "text/html"), (status = 404, description = "Sandbox off or no such session"))
)]
#[get("/payment/sandbox/{session_id}")]
pub async fn sandbox_page(
    state: web::Data<AppState>,
    session_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let order = sandbox_order(&state, &session_id).await?;
    let plan = state.catalog.plan(&order.app, &order.plan_id).await?;
    let trial = plan
        .as_ref()
        .and_then(|p| p.trial_days)
        .filter(|_| order.order_type == OrderType::Subscription);
    let plan_name = plan.map_or_else(|| format!("Plan {}", order.plan_id), |p| p.name);
    let what = match order.interval {
        Some(i) => format!("subscription, billed every {i}"),
        None => "one-time credit pack".to_owned(),
    };
    let amount = money(order.amount_minor - order.discount_minor, &order.currency);
    let pending = order.status == OrderStatus::Pending;
    let body = maud::html! {
        (test_note())
        p { strong { (plan_name) } " — " (what) ", " (number(order.credits)) " credits." }
        @if order.discount_minor > 0 {
            p.muted { "List price " (money(order.amount_minor, &order.currency)) ", coupon " (order.coupon_code.as_deref().unwrap_or("")) " −" (money(order.discount_minor, &order.currency)) }
        }
        p { "Order " code { (order.id) } ": " strong id="status" { (order.status.as_str()) } }
        @if pending {
            div.actions {
                form.inline method="post" action={ "/payment/sandbox/" (session_id) "/pay" } {
                    @if let Some(days) = trial {
                        button id="pay" type="submit" { "Start the " (days) "-day free trial" }
                    } @else {
                        button id="pay" type="submit" { "Pay " (amount) }
                    }
                }
                form.inline method="post" action={ "/payment/sandbox/" (session_id) "/cancel" } {
                    button.secondary id="cancel" type="submit" { "Cancel" }
                }
            }
        }
    };
    Ok(sandbox_html("Sandbox checkout", body))
}

async fn sandbox_finish(
    state: web::Data<AppState>,
    session_id: String,
    pay: bool,
) -> Result<HttpResponse, ApiError> {
    let order = sandbox_order(&state, &session_id).await?;
    let Some(driver) = state.sandbox.clone() else {
        return Err(ApiError::not_found("the sandbox channel is not enabled"));
    };
    let checkout = state.checkout.clone();
    let deliveries = match sandbox_trial(&state, &order).await? {
        Some(days) if pay => driver.trial_deliveries(&order, days, checkout.now()),
        _ => driver.deliveries(&order, pay, checkout.now()),
    };
    detached(async move {
        for (headers, body) in deliveries {
            checkout
                .handle_webhook(Channel::Sandbox, &headers, &body)
                .await?;
        }
        Ok::<_, tally_checkout::CheckoutError>(())
    })
    .await?;
    let order = sandbox_order(&state, &session_id).await?;
    let (headline, text) = if order.status == OrderStatus::Completed {
        (
            "Payment complete",
            format!(
                "{} credits are on their way to the account.",
                number(order.credits)
            ),
        )
    } else {
        ("Checkout canceled", "Nothing was charged.".to_owned())
    };
    let body = maud::html! {
        (test_note())
        p { (text) }
        p { "Order " code { (order.id) } ": " strong id="status" { (order.status.as_str()) } }
    };
    Ok(sandbox_html(headline, body))
}

/// The sandbox page's Pay button: sends the provider's signed payment events through the
/// webhook path.
#[utoipa::path(
    tag = "payment",
    params(("session_id" = String, Path, description = "Sandbox session id")),
    responses((status = 200, description = "HTML result page", content_type = "text/html"), (status = 404, description = "Sandbox off or no such session"))
)]
#[post("/payment/sandbox/{session_id}/pay")]
pub async fn sandbox_pay(
    state: web::Data<AppState>,
    session_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    sandbox_finish(state, session_id.into_inner(), true).await
}

/// The sandbox page's Cancel button: the checkout expires, nothing is charged.
#[utoipa::path(
    tag = "payment",
    params(("session_id" = String, Path, description = "Sandbox session id")),
    responses((status = 200, description = "HTML result page", content_type = "text/html"), (status = 404, description = "Sandbox off or no such session"))
)]
#[post("/payment/sandbox/{session_id}/cancel")]
pub async fn sandbox_cancel(
    state: web::Data<AppState>,
    session_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    sandbox_finish(state, session_id.into_inner(), false).await
}
