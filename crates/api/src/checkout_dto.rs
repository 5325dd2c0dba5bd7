//! Wire shapes of orders, subscriptions, payment sessions and provider events.

use serde::{Deserialize, Serialize};
use tally_checkout::{BillingEvent, Order, Subscription, SubscriptionChange};
use tally_kernel::FieldErrors;
use utoipa::IntoParams;
use utoipa::ToSchema;

use crate::ApiError;
use crate::dto::rfc3339;

/// An order: one attempt to buy a plan or a credit pack.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderDto {
    /// `ord_…`.
    pub id: String,
    /// `credits` or `subscription`.
    #[serde(rename = "type")]
    pub order_type: String,
    /// `pending`, `completed`, `failed`, `expired` or `refunded`.
    pub status: String,
    /// The plan or pack.
    pub plan_id: String,
    /// `month` or `year` (subscriptions).
    pub interval: Option<String>,
    /// `stripe`, `creem` or `sandbox`.
    pub channel: String,
    /// List price, minor units.
    pub amount: i64,
    /// Lower-case ISO 4217.
    pub currency: String,
    /// Coupon discount on the first payment, minor units.
    pub discount_amount: i64,
    /// Coupon applied.
    pub coupon_code: Option<String>,
    /// Credits granted (per paid period for subscriptions).
    pub credits: i64,
    /// Where the customer pays (while pending).
    pub checkout_url: Option<String>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once paid.
    pub completed_at: Option<String>,
}

impl From<Order> for OrderDto {
    fn from(o: Order) -> Self {
        Self {
            id: o.id,
            order_type: o.order_type.as_str().to_owned(),
            status: o.status.as_str().to_owned(),
            plan_id: o.plan_id,
            interval: o.interval.map(|i| i.as_str().to_owned()),
            channel: o.channel.as_str().to_owned(),
            amount: o.amount_minor,
            currency: o.currency,
            discount_amount: o.discount_minor,
            coupon_code: o.coupon_code,
            credits: o.credits,
            checkout_url: o
                .checkout_url
                .filter(|_| o.status == tally_checkout::OrderStatus::Pending),
            failure_reason: o.failure_reason,
            created_at: rfc3339(o.created_at),
            completed_at: o.completed_at.map(rfc3339),
        }
    }
}

/// The caller's subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionDto {
    /// Tally subscription id.
    pub id: String,
    /// The plan.
    pub plan_id: String,
    /// `month` or `year`.
    pub interval: String,
    /// `stripe`, `creem` or `sandbox`.
    pub channel: String,
    /// `active`, `trialing`, `past_due`, `canceled` or `expired`.
    pub status: String,
    /// RFC 3339.
    pub current_period_start: Option<String>,
    /// RFC 3339.
    pub current_period_end: Option<String>,
    /// Ends at `current_period_end` instead of renewing.
    pub cancel_at_period_end: bool,
    /// Credits granted per paid period.
    pub credits_per_period: i64,
    /// The order that started it.
    pub order_id: String,
}

impl From<Subscription> for SubscriptionDto {
    fn from(s: Subscription) -> Self {
        Self {
            id: s.id,
            plan_id: s.plan_id,
            interval: s.interval.as_str().to_owned(),
            channel: s.channel.as_str().to_owned(),
            status: s.status.as_str().to_owned(),
            current_period_start: s.current_period_start.map(rfc3339),
            current_period_end: s.current_period_end.map(rfc3339),
            cancel_at_period_end: s.cancel_at_period_end,
            credits_per_period: s.credits_per_period,
            order_id: s.order_id,
        }
    }
}

/// `POST /subscription/cancel` and `POST /admin/subscriptions/{id}/cancel`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelSubscriptionRequest {
    /// `true` (the default): run to the end of the paid period, then end without renewing;
    /// `false`: end now.
    pub at_period_end: Option<bool>,
}

impl CancelSubscriptionRequest {
    /// The change asked for.
    pub fn change(&self) -> SubscriptionChange {
        if self.at_period_end.unwrap_or(true) {
            SubscriptionChange::CancelAtPeriodEnd
        } else {
            SubscriptionChange::CancelNow
        }
    }
}

/// What a cancel or resume asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionChangeDto {
    /// `cancel_at_period_end`, `cancel_now` or `resume`.
    pub change: String,
    /// `requested`: the provider was asked, and the subscription changes when its event
    /// arrives (through the sandbox, before this answer); `unchanged`: it already was so.
    pub outcome: String,
    /// The subscription as Tally knows it when answering.
    pub subscription: SubscriptionDto,
}

/// Pagination of `GET /subscriptions`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionPageQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Keyset cursor: a subscription id (`meta.next_before` of the previous page); the page
    /// holds the older subscriptions.
    pub before: Option<String>,
}

/// `POST /payment/create-session`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// `stripe`, `creem` or `sandbox` (when enabled).
    #[schema(pattern = "^(stripe|creem|sandbox)$")]
    pub channel: String,
    /// `subscription` or `credits`.
    #[serde(rename = "type")]
    #[schema(pattern = "^(subscription|credits)$")]
    pub order_type: String,
    /// Plan or credit-pack id.
    #[schema(min_length = 1)]
    pub plan_id: String,
    /// `month` (default) or `year`; subscriptions only.
    #[schema(pattern = "^(month|year)$")]
    pub interval: Option<String>,
    /// Coupon code.
    pub coupon_code: Option<String>,
    /// Where to send the customer after paying; its host must be allowed.
    pub success_url: String,
    /// Where to send a customer who gives up; its host must be allowed.
    pub cancel_url: Option<String>,
}

impl CreateSessionRequest {
    /// The checkout command: channel, type and interval parsed, refused by name when unknown.
    pub fn command(self) -> Result<tally_checkout::CreateSession, ApiError> {
        use tally_checkout::{Channel, Interval, OrderType};
        let channel = Channel::parse(&self.channel);
        let order_type = OrderType::parse(&self.order_type);
        let interval = self.interval.as_deref().map(Interval::parse);
        let (Some(channel), Some(order_type), None | Some(Some(_))) =
            (channel, order_type, interval)
        else {
            let mut p = FieldErrors::default();
            p.check(channel.is_some(), "channel", CHANNELS);
            p.check(
                order_type.is_some(),
                "type",
                "must be subscription or credits",
            );
            p.check(interval != Some(None), "interval", "must be month or year");
            return Err(ApiError::fields(p.finish().err().unwrap_or_default()));
        };
        let interval = interval.flatten();
        Ok(tally_checkout::CreateSession {
            channel,
            order_type,
            plan_id: self.plan_id,
            interval,
            coupon_code: self.coupon_code,
            success_url: self.success_url,
            cancel_url: self.cancel_url,
        })
    }
}

/// What an unknown channel is told.
pub(crate) const CHANNELS: &str = "must be one of stripe, creem, sandbox";

/// An opened payment session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionDto {
    /// Tally order id.
    pub order_id: String,
    /// Provider session id.
    pub session_id: String,
    /// Redirect the customer here.
    pub url: String,
}

/// `POST /subscription/portal`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalRequestDto {
    /// Where the portal's back link leads; its host must be allowed.
    pub return_url: Option<String>,
}

/// A billing-portal session.
#[derive(Debug, Serialize, ToSchema)]
pub struct UrlDto {
    /// Redirect the customer here.
    pub url: String,
}

/// What a webhook delivery did.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAckDto {
    /// Always true: the event was recorded (or had been).
    pub received: bool,
    /// `applied`, `duplicate`, `ignored` or `unmatched`.
    pub outcome: String,
}

/// A received provider event (admin).
#[derive(Debug, Serialize, ToSchema)]
pub struct BillingEventDto {
    /// Tally's id of the record.
    pub id: String,
    /// `stripe`, `creem` or `sandbox`.
    pub channel: String,
    /// The provider's event id.
    pub event_id: String,
    /// The provider's event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// User the event was traced to.
    pub user_id: Option<String>,
    /// Order the event was traced to.
    pub order_id: Option<String>,
    /// `applied`, `ignored` or `unmatched`.
    pub outcome: String,
    /// What was done.
    pub detail: String,
    /// RFC 3339: when the provider created it.
    pub created_at: Option<String>,
    /// RFC 3339: when Tally received it.
    pub received_at: String,
}

impl From<BillingEvent> for BillingEventDto {
    fn from(e: BillingEvent) -> Self {
        Self {
            id: e.id,
            channel: e.channel.as_str().to_owned(),
            event_id: e.event_id,
            event_type: e.event_type,
            user_id: e.user,
            order_id: e.order_id,
            outcome: e.outcome,
            detail: e.detail,
            created_at: e.provider_created_at.map(rfc3339),
            received_at: rfc3339(e.received_at),
        }
    }
}

/// An order as operators see it: the buyer and the provider's ids besides the buyer's view.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminOrderDto {
    /// The order.
    #[serde(flatten)]
    pub order: OrderDto,
    /// The buyer.
    pub user_id: String,
    /// The provider's checkout session id.
    pub provider_session_id: Option<String>,
    /// The provider's customer id, once known.
    pub provider_customer_id: Option<String>,
    /// The provider's subscription id, once known.
    pub provider_subscription_id: Option<String>,
    /// RFC 3339: the last change.
    pub updated_at: String,
}

impl From<Order> for AdminOrderDto {
    fn from(o: Order) -> Self {
        Self {
            user_id: o.user.clone(),
            provider_session_id: o.provider_session_id.clone(),
            provider_customer_id: o.provider_customer_id.clone(),
            provider_subscription_id: o.provider_subscription_id.clone(),
            updated_at: rfc3339(o.updated_at),
            order: o.into(),
        }
    }
}

/// `POST /subscription/change`, and the query of `GET /subscription/change-preview`.
#[derive(Debug, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChangePlanRequest {
    /// The subscription plan to switch to (of the caller's app).
    #[schema(min_length = 1)]
    pub plan_id: String,
    /// `month` or `year`; left out: the subscription's own. A change keeps the interval.
    pub interval: Option<String>,
}

impl ChangePlanRequest {
    /// The interval asked, parsed.
    pub fn interval(&self) -> Result<Option<tally_checkout::Interval>, ApiError> {
        self.interval
            .as_deref()
            .map(|s| {
                tally_checkout::Interval::parse(s)
                    .ok_or_else(|| ApiError::validation("interval", "must be month or year"))
            })
            .transpose()
    }
}

/// What switching plans does now.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanChangePreviewDto {
    /// The plan switched to.
    pub plan_id: String,
    /// The plan switched from.
    pub current_plan_id: String,
    /// `month` or `year` (a change keeps the interval).
    pub interval: String,
    /// `upgrade` (a dearer price: charged now, pro rata, and in effect now) or `downgrade` (the
    /// same or a cheaper price: billed from the next period, nothing refunded).
    pub direction: String,
    /// The new plan's price per period, minor units.
    pub price_minor: i64,
    /// Lower-case ISO 4217.
    pub currency: String,
    /// Estimated charge now: the price difference for the rest of the period (upgrades only);
    /// the provider's proration invoice is what is charged.
    pub amount_due_now_minor: i64,
    /// Credits granted when the provider reports the switch: the difference in included
    /// credits for the rest of the period (0 when the new plan includes fewer).
    pub credits_now: i64,
    /// Credits each later period grants.
    pub credits_per_period: i64,
    /// Credits each period granted so far.
    pub current_credits_per_period: i64,
    /// RFC 3339: the end of the current period.
    pub current_period_end: Option<String>,
}

impl PlanChangePreviewDto {
    /// The quote for `sub`.
    pub fn new(quote: tally_checkout::change::PlanChangeQuote, sub: &Subscription) -> Self {
        Self {
            plan_id: quote.plan_id,
            current_plan_id: sub.plan_id.clone(),
            interval: quote.interval.as_str().to_owned(),
            direction: quote.direction.as_str().to_owned(),
            price_minor: quote.price_minor,
            currency: quote.currency,
            amount_due_now_minor: quote.amount_due_now_minor,
            credits_now: quote.credits_now,
            credits_per_period: quote.credits_per_period,
            current_credits_per_period: sub.credits_per_period,
            current_period_end: sub.current_period_end.map(rfc3339),
        }
    }
}

/// What a plan change asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanChangeDto {
    /// `requested`: the provider was asked; the subscription switches, and the credits come,
    /// when its event arrives (through the sandbox, before this answer).
    pub outcome: String,
    /// What the switch does, as quoted when asked.
    pub preview: PlanChangePreviewDto,
    /// The subscription as Tally knows it when answering.
    pub subscription: SubscriptionDto,
}

/// `POST /admin/orders/{id}/refund`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundOrderRequest {
    /// Minor units of the order's currency; left out: all that is left of the payment. Creem
    /// refunds in full only.
    #[schema(minimum = 1)]
    pub amount: Option<i64>,
    /// Why, for people: 1-500 characters, no control characters; carried in the provider's
    /// refund metadata (Stripe).
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub reason: Option<String>,
}

/// What a refund asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundDto {
    /// `requested`: the provider was asked; the order and the credits change when its refund
    /// event arrives (through the sandbox, before this answer).
    pub outcome: String,
    /// The provider's id of the refunded payment.
    pub payment_id: String,
    /// What was asked back, minor units.
    pub amount_minor: i64,
    /// Whether that is all that was left of the payment.
    pub full: bool,
    /// The order as Tally knows it when answering.
    pub order: AdminOrderDto,
}

/// `GET /admin/orders/{id}`: the order and the provider events traced to it, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminOrderDetailDto {
    /// The order.
    #[serde(flatten)]
    pub order: AdminOrderDto,
    /// Every received provider event that touched it, oldest first.
    pub events: Vec<BillingEventDto>,
}

/// A subscription as operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminSubscriptionDto {
    /// The subscription.
    #[serde(flatten)]
    pub subscription: SubscriptionDto,
    /// The subscriber.
    pub user_id: String,
    /// The provider's subscription id.
    pub provider_subscription_id: String,
    /// The provider's customer id.
    pub provider_customer_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: the last change.
    pub updated_at: String,
}

impl From<Subscription> for AdminSubscriptionDto {
    fn from(s: Subscription) -> Self {
        Self {
            user_id: s.user.clone(),
            provider_subscription_id: s.provider_subscription_id.clone(),
            provider_customer_id: s.provider_customer_id.clone(),
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
            subscription: s.into(),
        }
    }
}

/// Filters of `GET /admin/orders`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AdminOrderQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Keyset cursor: an order id (`meta.next_before` of the previous page); the page holds the
    /// orders created before it.
    pub before: Option<String>,
    /// `pending`, `completed`, `failed`, `expired` or `refunded`.
    pub status: Option<String>,
    /// `credits` or `subscription`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub order_type: Option<String>,
    /// `stripe`, `creem` or `sandbox`.
    pub channel: Option<String>,
    /// Only this buyer.
    pub user_id: Option<String>,
    /// Created at or after (RFC 3339).
    pub from: Option<String>,
    /// Created before (RFC 3339).
    pub to: Option<String>,
}

/// Filters of `GET /admin/subscriptions`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AdminSubscriptionQuery {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Keyset cursor: a subscription id (`meta.next_before` of the previous page); the page
    /// holds the older subscriptions.
    pub before: Option<String>,
    /// `active`, `trialing`, `past_due`, `canceled` or `expired`.
    pub status: Option<String>,
    /// Only subscriptions to this plan.
    pub plan: Option<String>,
    /// Only this subscriber.
    pub user_id: Option<String>,
}
