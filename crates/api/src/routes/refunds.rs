//! Refunds started from Tally: an operator asks the order's provider to refund its payment. The
//! credits are clawed back when the provider's refund event arrives, through the same webhook
//! path (and with the same arithmetic) as a refund made in the provider's dashboard. For the
//! sandbox channel Tally is the provider: its event is sent before the answer.

use actix_web::{HttpRequest, HttpResponse, post, web};
use tally_checkout::{RefundAnswer, RefundOrder};

use crate::AppState;
use crate::auth::Admin;
use crate::checkout_dto::{RefundDto, RefundOrderRequest};
use crate::error::{ApiError, ok};
use crate::routes::subscriptions::{body_and_key, sandbox_deliver, sandbox_driver};

/// Refunds an order's payment (all that is left, or `amount`) through its provider.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Order id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Passed to the provider (Stripe): a repeat asks for the same refund")
    ),
    request_body = RefundOrderRequest,
    responses(
        (status = 200, description = "What was asked; the order and the credits change when the provider's refund event arrives", body = RefundDto),
        (status = 400, description = "Malformed body, an amount out of range, or a partial refund on Creem"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such order in this app"),
        (status = 409, description = "Unpaid, not yet reported paid, or refunded in full (NOT_REFUNDABLE)"),
        (status = 502, description = "The provider refused or failed; nothing changed")
    )
)]
#[post("/admin/orders/{id}/refund")]
pub async fn refund(
    req: HttpRequest,
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (body, key) = body_and_key::<RefundOrderRequest>(&req, &body)?;
    let answer = state
        .checkout
        .refund_order(
            &admin.app,
            &id,
            RefundOrder {
                amount_minor: body.amount,
                reason: body.reason,
            },
            key,
        )
        .await?;
    Ok(ok(settle(&state, answer).await?))
}

/// The answer to a refund. On the sandbox channel Tally plays the provider: its signed refund
/// event goes through the webhook path first, and the answer shows the refunded order.
async fn settle(state: &AppState, answer: RefundAnswer) -> Result<RefundDto, ApiError> {
    let RefundAnswer {
        mut order,
        payment_id,
        request,
    } = answer;
    if let Some(driver) = sandbox_driver(state, order.channel) {
        sandbox_deliver(state, driver.refunded(&request, state.checkout.now())).await?;
        order = state.checkout.app_order(&order.app, &order.id).await?.0;
    }
    Ok(RefundDto {
        outcome: "requested".to_owned(),
        payment_id,
        amount_minor: request.amount_minor,
        full: request.full,
        order: order.into(),
    })
}
