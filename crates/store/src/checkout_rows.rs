//! Row types of the checkout tables, their conversions to domain values, and the pure pieces of
//! event handling (descriptions, expiries) that need no connection.

use diesel::prelude::*;
use tally_checkout::{
    BillingEvent, Channel, EventOutcome, Interval, Order, OrderStatus, OrderType, Subscription,
    SubscriptionStatus,
};
use tally_ledger::{AccountRef, Movement, MovementKind, TxnType};
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
    pub cancel_at_period_end: Option<bool>,
    pub status_changed_at: Option<PrimitiveDateTime>,
    pub updated_at: PrimitiveDateTime,
}

impl<'a> SubscriptionChanges<'a> {
    pub(crate) fn at(now: OffsetDateTime) -> Self {
        Self {
            status: None,
            provider_customer_id: None,
            current_period_start: None,
            current_period_end: None,
            cancel_at_period_end: None,
            status_changed_at: None,
            updated_at: to_db(now),
        }
    }

    /// Moves the period to `(start, end)` if `end` is later than the stored end: a late event
    /// about an earlier period never moves it back.
    pub(crate) fn period(
        &mut self,
        stored_end: Option<PrimitiveDateTime>,
        start: Option<OffsetDateTime>,
        end: Option<OffsetDateTime>,
    ) {
        if let Some(end) = end.map(to_db) {
            if stored_end.is_none_or(|stored| end > stored) {
                self.current_period_end = Some(end);
                self.current_period_start = Some(start.map(to_db));
            }
        }
    }

    /// A new status, unless the stored one is terminal (a canceled subscription stays canceled).
    pub(crate) fn status(&mut self, current: SubscriptionStatus, new: SubscriptionStatus) {
        if !current.is_terminal() {
            self.status = Some(new.as_str());
        }
    }

    pub(crate) fn customer(&mut self, stored: Option<&str>, new: Option<&'a str>) {
        if new.is_some() && new != stored {
            self.provider_customer_id = new;
        }
    }
}

/// The app, user and order an event was traced to, recorded with it.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub app: Option<String>,
    pub user: Option<String>,
    pub order_id: Option<String>,
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

/// Credits a provider payment grants, as a ledger movement keyed by the payment.
#[derive(Debug)]
pub(crate) struct PaymentGrant<'a> {
    pub app: &'a str,
    pub user: &'a str,
    pub channel: Channel,
    pub payment_id: &'a str,
    pub order_id: Option<&'a str>,
    pub txn_type: TxnType,
    pub credits: i64,
    pub expires_at: Option<OffsetDateTime>,
    pub description: String,
}

impl PaymentGrant<'_> {
    pub(crate) fn movement(&self) -> Result<Movement, StoreError> {
        let movement = Movement {
            account: AccountRef::new(self.app, self.user)?,
            kind: MovementKind::Grant {
                txn_type: self.txn_type,
                credits: self.credits,
                expires_at: self.expires_at,
            },
            description: self.description.clone(),
            idempotency_key: Some(format!("payment:{}:{}", self.channel, self.payment_id)),
            metadata: Some(serde_json::json!({
                "order_id": self.order_id,
                "payment_id": self.payment_id,
                "channel": self.channel.as_str(),
            })),
            actor: Some(format!("provider:{}", self.channel)),
        };
        movement.validate()?;
        Ok(movement)
    }
}

/// The clawback of one refund, keyed by the refund.
pub(crate) fn clawback_movement(
    payment: &PaymentRow,
    channel: Channel,
    refund_key: &str,
    credits: i64,
) -> Result<Movement, StoreError> {
    let movement = Movement {
        account: AccountRef::new(&payment.app_key, &payment.user_id)?,
        kind: MovementKind::Clawback { credits },
        description: format!("Refund of payment {}", payment.payment_id),
        idempotency_key: Some(format!("refund:{channel}:{refund_key}")),
        metadata: Some(serde_json::json!({
            "order_id": payment.order_id,
            "payment_id": payment.payment_id,
            "refund_key": refund_key,
            "channel": channel.as_str(),
        })),
        actor: Some(format!("provider:{channel}")),
    };
    movement.validate()?;
    Ok(movement)
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

/// The ledger description of a subscription period's credits.
pub(crate) fn period_description(plan: &str, interval: &str) -> String {
    let period = match Interval::parse(interval) {
        Some(Interval::Year) => "yearly",
        _ => "monthly",
    };
    format!("{plan} plan — {period} credits")
}

/// When the credits of a paid period expire: at the period's end, if the plan's credits expire
/// and that end is still ahead (the ledger refuses an expiry in the past).
pub(crate) fn period_expiry(
    credits_expire: bool,
    period_end: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    period_end.filter(|end| credits_expire && *end > now)
}

/// When a pack's credits expire: `days` after payment, when the pack says.
pub(crate) fn pack_expiry(days: Option<i32>, now: OffsetDateTime) -> Option<OffsetDateTime> {
    days.filter(|d| *d > 0)
        .map(|d| now + time::Duration::days(i64::from(d)))
}

/// The refunded total after a refund: cumulative reports (Stripe) only move it forward, per-refund
/// amounts (Creem) add up; a refund that states no amount refunds everything.
pub(crate) fn refunded_total(
    stored_minor: i64,
    paid_minor: i64,
    total_minor: Option<i64>,
    this_minor: Option<i64>,
) -> i64 {
    match (total_minor, this_minor) {
        (Some(total), _) => total.max(stored_minor),
        (None, Some(amount)) => stored_minor.saturating_add(amount.max(0)),
        (None, None) => paid_minor.max(stored_minor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn refunded_totals() {
        assert_eq!(
            refunded_total(300, 1000, Some(200), None),
            300,
            "never backwards"
        );
        assert_eq!(refunded_total(300, 1000, Some(700), Some(1)), 700);
        assert_eq!(refunded_total(300, 1000, None, Some(200)), 500);
        assert_eq!(refunded_total(300, 1000, None, None), 1000);
    }

    #[test]
    fn expiries() {
        let now = datetime!(2026-06-01 12:00 UTC);
        let end = datetime!(2026-07-01 12:00 UTC);
        assert_eq!(period_expiry(true, Some(end), now), Some(end));
        assert_eq!(period_expiry(false, Some(end), now), None);
        assert_eq!(period_expiry(true, Some(now), now), None);
        assert_eq!(pack_expiry(Some(30), now), Some(end));
        assert_eq!(pack_expiry(None, now), None);
        assert_eq!(
            period_description("Pro", "year"),
            "Pro plan — yearly credits"
        );
    }
}
