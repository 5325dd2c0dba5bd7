//! Row types of the checkout tables and their conversions to and from the domain's values (the
//! rules of event handling are `tally_checkout::plan`'s).

use diesel::prelude::*;
use tally_checkout::plan::{PaymentFacts, SubscriptionUpdate};
use tally_checkout::{
    BillingEvent, Channel, EventOutcome, Interval, Order, OrderStatus, OrderType, Subscription,
    SubscriptionStatus,
};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::StoreError;
use crate::rows::{from_db, to_db};
use crate::schema::{billing_events, orders, payments, subscriptions};

fn channel(s: &str) -> Result<Channel, StoreError> {
    Channel::parse(s).ok_or(StoreError::Invariant("unknown payment channel stored"))
}

pub(crate) fn days_to_db(d: Option<u32>) -> Option<i32> {
    d.and_then(|d| i32::try_from(d).ok())
}

fn days_from_db(d: Option<i32>) -> Result<Option<u32>, StoreError> {
    d.map(|d| u32::try_from(d).map_err(|_| StoreError::Invariant("negative day count stored")))
        .transpose()
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = orders)]
pub(crate) struct OrderRow {
    pub id: String,
    pub app_key: String,
    pub user_id: String,
    pub order_type: String,
    pub status: String,
    pub plan_id: String,
    pub billing_interval: Option<String>,
    pub channel: String,
    pub amount_minor: i64,
    pub currency: String,
    pub discount_minor: i64,
    pub coupon_code: Option<String>,
    pub credits: i64,
    pub credits_expire_days: Option<i32>,
    pub provider_session_id: Option<String>,
    pub checkout_url: Option<String>,
    pub provider_customer_id: Option<String>,
    pub provider_subscription_id: Option<String>,
    pub failure_reason: Option<String>,
    pub request_hash: String,
    pub created_at: PrimitiveDateTime,
    pub completed_at: Option<PrimitiveDateTime>,
    pub updated_at: PrimitiveDateTime,
}

impl OrderRow {
    pub(crate) fn status(&self) -> Result<OrderStatus, StoreError> {
        OrderStatus::parse(&self.status).ok_or(StoreError::Invariant("unknown order status stored"))
    }

    pub(crate) fn order_type(&self) -> Result<OrderType, StoreError> {
        OrderType::parse(&self.order_type).ok_or(StoreError::Invariant("unknown order type stored"))
    }

    pub(crate) fn interval(&self) -> Result<Option<Interval>, StoreError> {
        self.billing_interval
            .as_deref()
            .map(|i| Interval::parse(i).ok_or(StoreError::Invariant("unknown interval stored")))
            .transpose()
    }
}

impl TryFrom<OrderRow> for Order {
    type Error = StoreError;

    fn try_from(r: OrderRow) -> Result<Self, StoreError> {
        Ok(Order {
            order_type: r.order_type()?,
            status: r.status()?,
            interval: r.interval()?,
            channel: channel(&r.channel)?,
            credits_expire_days: days_from_db(r.credits_expire_days)?,
            id: r.id,
            app: r.app_key,
            user: r.user_id,
            plan_id: r.plan_id,
            amount_minor: r.amount_minor,
            currency: r.currency,
            discount_minor: r.discount_minor,
            coupon_code: r.coupon_code,
            credits: r.credits,
            provider_session_id: r.provider_session_id,
            checkout_url: r.checkout_url,
            provider_customer_id: r.provider_customer_id,
            provider_subscription_id: r.provider_subscription_id,
            failure_reason: r.failure_reason,
            created_at: from_db(r.created_at),
            completed_at: r.completed_at.map(from_db),
            updated_at: from_db(r.updated_at),
        })
    }
}

/// A new order as inserted.
#[derive(Debug, Insertable)]
#[diesel(table_name = orders)]
pub(crate) struct NewOrderRow<'a> {
    pub id: &'a str,
    pub app_key: &'a str,
    pub user_id: &'a str,
    pub order_type: &'static str,
    pub status: &'static str,
    pub plan_id: &'a str,
    pub billing_interval: Option<&'static str>,
    pub channel: &'static str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub discount_minor: i64,
    pub coupon_code: Option<&'a str>,
    pub credits: i64,
    pub credits_expire_days: Option<i32>,
    pub provider_session_id: Option<&'a str>,
    pub checkout_url: Option<&'a str>,
    pub provider_customer_id: Option<&'a str>,
    pub provider_subscription_id: Option<&'a str>,
    pub failure_reason: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: &'a str,
    pub created_at: PrimitiveDateTime,
    pub completed_at: Option<PrimitiveDateTime>,
    pub updated_at: PrimitiveDateTime,
}

impl<'a> NewOrderRow<'a> {
    pub(crate) fn new(
        o: &'a Order,
        idempotency_key: Option<&'a str>,
        request_hash: &'a str,
    ) -> Self {
        Self {
            id: &o.id,
            app_key: &o.app,
            user_id: &o.user,
            order_type: o.order_type.as_str(),
            status: o.status.as_str(),
            plan_id: &o.plan_id,
            billing_interval: o.interval.map(Interval::as_str),
            channel: o.channel.as_str(),
            amount_minor: o.amount_minor,
            currency: &o.currency,
            discount_minor: o.discount_minor,
            coupon_code: o.coupon_code.as_deref(),
            credits: o.credits,
            credits_expire_days: days_to_db(o.credits_expire_days),
            provider_session_id: o.provider_session_id.as_deref(),
            checkout_url: o.checkout_url.as_deref(),
            provider_customer_id: o.provider_customer_id.as_deref(),
            provider_subscription_id: o.provider_subscription_id.as_deref(),
            failure_reason: o.failure_reason.as_deref(),
            idempotency_key,
            request_hash,
            created_at: to_db(o.created_at),
            completed_at: o.completed_at.map(to_db),
            updated_at: to_db(o.updated_at),
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = subscriptions)]
pub(crate) struct SubscriptionRow {
    pub id: i64,
    pub app_key: String,
    pub user_id: String,
    pub plan_id: String,
    pub billing_interval: String,
    pub channel: String,
    pub order_id: String,
    pub provider_subscription_id: String,
    pub provider_customer_id: Option<String>,
    pub status: String,
    pub current_period_start: Option<PrimitiveDateTime>,
    pub current_period_end: Option<PrimitiveDateTime>,
    pub cancel_at_period_end: bool,
    pub credits_per_period: i64,
    pub credits_expire: bool,
    pub status_changed_at: Option<PrimitiveDateTime>,
    pub created_at: PrimitiveDateTime,
    pub updated_at: PrimitiveDateTime,
    pub previous_period_start: Option<PrimitiveDateTime>,
}

impl SubscriptionRow {
    pub(crate) fn status(&self) -> Result<SubscriptionStatus, StoreError> {
        SubscriptionStatus::parse(&self.status)
            .ok_or(StoreError::Invariant("unknown subscription status stored"))
    }
}

impl TryFrom<SubscriptionRow> for Subscription {
    type Error = StoreError;

    fn try_from(r: SubscriptionRow) -> Result<Self, StoreError> {
        Ok(Subscription {
            status: r.status()?,
            interval: Interval::parse(&r.billing_interval)
                .ok_or(StoreError::Invariant("unknown interval stored"))?,
            channel: channel(&r.channel)?,
            id: r.id.to_string(),
            app: r.app_key,
            user: r.user_id,
            plan_id: r.plan_id,
            order_id: r.order_id,
            provider_subscription_id: r.provider_subscription_id,
            provider_customer_id: r.provider_customer_id,
            current_period_start: r.current_period_start.map(from_db),
            current_period_end: r.current_period_end.map(from_db),
            previous_period_start: r.previous_period_start.map(from_db),
            cancel_at_period_end: r.cancel_at_period_end,
            credits_per_period: r.credits_per_period,
            credits_expire: r.credits_expire,
            created_at: from_db(r.created_at),
            updated_at: from_db(r.updated_at),
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = payments)]
pub(crate) struct PaymentRow {
    pub id: i64,
    pub payment_id: String,
    pub app_key: String,
    pub user_id: String,
    pub order_id: Option<String>,
    pub credits_granted: i64,
    pub amount_paid_minor: i64,
    pub refunded_minor: i64,
    pub clawed_back: i64,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = billing_events)]
pub(crate) struct EventRow {
    pub id: i64,
    pub channel: String,
    pub event_id: String,
    pub event_type: String,
    pub app_key: Option<String>,
    pub user_id: Option<String>,
    pub order_id: Option<String>,
    pub outcome: String,
    pub detail: String,
    pub provider_created_at: Option<PrimitiveDateTime>,
    pub received_at: PrimitiveDateTime,
}

impl TryFrom<EventRow> for BillingEvent {
    type Error = StoreError;

    fn try_from(r: EventRow) -> Result<Self, StoreError> {
        Ok(BillingEvent {
            id: r.id.to_string(),
            channel: channel(&r.channel)?,
            event_id: r.event_id,
            event_type: r.event_type,
            app: r.app_key,
            user: r.user_id,
            order_id: r.order_id,
            outcome: r.outcome,
            detail: r.detail,
            provider_created_at: r.provider_created_at.map(from_db),
            received_at: from_db(r.received_at),
        })
    }
}

/// Changes to an order; `None` leaves a column as it is, so that an event sets only what it knows.
#[derive(Debug, AsChangeset)]
#[diesel(table_name = orders)]
pub(crate) struct OrderChanges<'a> {
    pub status: Option<&'static str>,
    pub completed_at: Option<PrimitiveDateTime>,
    pub failure_reason: Option<Option<&'a str>>,
    pub provider_session_id: Option<&'a str>,
    pub checkout_url: Option<&'a str>,
    pub provider_customer_id: Option<&'a str>,
    pub provider_subscription_id: Option<&'a str>,
    pub updated_at: PrimitiveDateTime,
}

impl OrderChanges<'_> {
    pub(crate) fn at(now: OffsetDateTime) -> Self {
        Self {
            status: None,
            completed_at: None,
            failure_reason: None,
            provider_session_id: None,
            checkout_url: None,
            provider_customer_id: None,
            provider_subscription_id: None,
            updated_at: to_db(now),
        }
    }
}

/// Changes to a subscription; `None` leaves a column as it is.
#[derive(Debug, AsChangeset)]
#[diesel(table_name = subscriptions)]
pub(crate) struct SubscriptionChanges<'a> {
    pub status: Option<&'static str>,
    pub provider_customer_id: Option<&'a str>,
    pub current_period_start: Option<Option<PrimitiveDateTime>>,
    pub current_period_end: Option<PrimitiveDateTime>,
    pub previous_period_start: Option<Option<PrimitiveDateTime>>,
    pub cancel_at_period_end: Option<bool>,
    pub status_changed_at: Option<PrimitiveDateTime>,
    pub plan_id: Option<&'a str>,
    pub billing_interval: Option<&'static str>,
    pub credits_per_period: Option<i64>,
    pub credits_expire: Option<bool>,
    pub updated_at: PrimitiveDateTime,
}

impl<'a> SubscriptionChanges<'a> {
    /// The columns the domain's update sets, stamped `now`.
    pub(crate) fn from_update(update: &'a SubscriptionUpdate, now: OffsetDateTime) -> Self {
        Self {
            status: update.status.map(SubscriptionStatus::as_str),
            provider_customer_id: update.provider_customer_id.as_deref(),
            current_period_start: update.period.map(|(start, _)| start.map(to_db)),
            current_period_end: update.period.map(|(_, end)| to_db(end)),
            previous_period_start: update.previous_period_start.map(|start| start.map(to_db)),
            cancel_at_period_end: update.cancel_at_period_end,
            status_changed_at: update.status_changed_at.map(to_db),
            plan_id: update.plan.as_ref().map(|p| p.plan_id.as_str()),
            billing_interval: update.plan.as_ref().map(|p| p.interval.as_str()),
            credits_per_period: update.plan.as_ref().map(|p| p.credits_per_period),
            credits_expire: update.plan.as_ref().map(|p| p.credits_expire),
            updated_at: to_db(now),
        }
    }
}

/// The app, user and order an event was traced to, recorded with it.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub app: Option<String>,
    pub user: Option<String>,
    pub order_id: Option<String>,
    /// Whether the event's outcome and this trace are already written on its row (a path that
    /// writes them beside its own statements, saving a round trip).
    pub recorded: bool,
}

impl Trace {
    pub(crate) fn set(&mut self, app: &str, user: &str, order_id: Option<&str>) {
        self.app = Some(app.to_owned());
        self.user = Some(user.to_owned());
        self.order_id = order_id.map(str::to_owned);
    }
}

pub(crate) fn applied(detail: impl Into<String>) -> EventOutcome {
    EventOutcome::Applied {
        detail: detail.into(),
    }
}

pub(crate) fn ignored(detail: impl Into<String>) -> EventOutcome {
    EventOutcome::Ignored {
        detail: detail.into(),
    }
}

pub(crate) fn unmatched(detail: impl Into<String>) -> EventOutcome {
    EventOutcome::Unmatched {
        detail: detail.into(),
    }
}

pub(crate) fn outcome_detail(outcome: &EventOutcome) -> &str {
    match outcome {
        EventOutcome::Applied { detail }
        | EventOutcome::Ignored { detail }
        | EventOutcome::Unmatched { detail } => detail,
        EventOutcome::Duplicate => "",
    }
}

impl PaymentRow {
    /// The payment as a refund's plan sees it.
    pub(crate) fn facts(&self) -> PaymentFacts {
        PaymentFacts {
            payment_id: self.payment_id.clone(),
            app: self.app_key.clone(),
            user: self.user_id.clone(),
            order_id: self.order_id.clone(),
            credits_granted: self.credits_granted,
            amount_paid_minor: self.amount_paid_minor,
            refunded_minor: self.refunded_minor,
            clawed_back: self.clawed_back,
        }
    }
}

/// The distinct, non-empty ids a refund may name a payment by.
pub(crate) fn refs<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for id in ids {
        if !id.is_empty() && !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// What a paid checkout event says (`CheckoutCompleted` or `CheckoutPaymentSucceeded`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paid<'a> {
    pub order_id: Option<&'a str>,
    pub session_id: &'a str,
    pub customer_id: Option<&'a str>,
    pub subscription_id: Option<&'a str>,
    pub amount_paid_minor: Option<i64>,
    pub payment_refs: &'a [String],
}

/// A payment to record once per (channel, payment id).
#[derive(Debug, Insertable)]
#[diesel(table_name = payments)]
pub(crate) struct NewPayment<'a> {
    pub channel: &'static str,
    pub payment_id: &'a str,
    pub app_key: &'a str,
    pub user_id: &'a str,
    pub order_id: Option<&'a str>,
    pub subscription_id: Option<i64>,
    pub credits_granted: i64,
    pub amount_paid_minor: i64,
    pub refunded_minor: i64,
    pub clawed_back: i64,
    pub created_at: PrimitiveDateTime,
}
