//! The storage port. The `tally-store` crate implements it for SQLite and PostgreSQL.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{
    BillingEvent, Channel, CheckoutError, EventOutcome, Order, OrderStatus, OrderType,
    PaymentEvent, Subscription, SubscriptionStatus,
};

/// A pending order to store.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// The order, status `pending`, no session yet.
    pub order: Order,
    /// The caller's `Idempotency-Key`, unique per (app, user).
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request, to tell a replay from a reuse of the key.
    pub request_hash: String,
}

/// The session a provider opened for an order.
#[derive(Debug, Clone)]
pub struct SessionAttached {
    /// Order id.
    pub order_id: String,
    /// Provider session id.
    pub session_id: String,
    /// Where the customer pays.
    pub url: String,
    /// When.
    pub now: OffsetDateTime,
}

/// A page of one user's orders, newest first.
#[derive(Debug, Clone)]
pub struct OrderQuery {
    /// App key.
    pub app: String,
    /// Buyer.
    pub user: String,
    /// Rows to fetch.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// A page of an app's orders for its operators, newest first, every filter optional.
#[derive(Debug, Clone, Default)]
pub struct AppOrderQuery {
    /// App key.
    pub app: String,
    /// Only this buyer's orders.
    pub user: Option<String>,
    /// Only orders in this state.
    pub status: Option<OrderStatus>,
    /// Only credit packs or only subscriptions.
    pub order_type: Option<OrderType>,
    /// Only orders paid through this channel.
    pub channel: Option<Channel>,
    /// Created at or after this instant.
    pub from: Option<OffsetDateTime>,
    /// Created before this instant.
    pub to: Option<OffsetDateTime>,
    /// Keyset cursor: an order id of the app; the page holds the orders created before it.
    pub before: Option<String>,
    /// Rows to fetch.
    pub limit: i64,
}

/// A page of an app's subscriptions for its operators, newest first, every filter optional.
#[derive(Debug, Clone, Default)]
pub struct AppSubscriptionQuery {
    /// App key.
    pub app: String,
    /// Only this subscriber's subscriptions.
    pub user: Option<String>,
    /// Only subscriptions in this state.
    pub status: Option<SubscriptionStatus>,
    /// Only subscriptions to this plan.
    pub plan_id: Option<String>,
    /// Keyset cursor: a subscription id; the page holds the older ones.
    pub before: Option<i64>,
    /// Rows to fetch.
    pub limit: i64,
}

/// A page of received provider events, newest first.
#[derive(Debug, Clone)]
pub struct EventQuery {
    /// Events traced to this app, plus those traced to no app.
    pub app: String,
    /// Rows to fetch.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// Everything checkout needs from a database. Each write is one database transaction.
#[async_trait]
pub trait CheckoutRepository: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a pending order. When the (app, user, idempotency key) is taken, answers the
    /// stored order and its request hash instead (`Err` only for storage failures).
    async fn insert_order(&self, order: NewOrder) -> Result<(Order, String), CheckoutError>;

    /// Records the provider session of a pending order.
    async fn attach_session(&self, session: SessionAttached) -> Result<Order, CheckoutError>;

    /// Marks a pending order failed with a reason.
    async fn fail_order(
        &self,
        order_id: String,
        reason: String,
        now: OffsetDateTime,
    ) -> Result<Order, CheckoutError>;

    /// One order by id (the service checks app and user).
    async fn order(&self, id: String) -> Result<Option<Order>, CheckoutError>;

    /// A page of the user's orders.
    async fn orders(&self, query: OrderQuery) -> Result<Vec<Order>, CheckoutError>;

    /// The user's current subscription: the newest one that is not canceled or expired, else
    /// the newest one.
    async fn subscription(
        &self,
        app: String,
        user: String,
    ) -> Result<Option<Subscription>, CheckoutError>;

    /// The user's customer id at the provider, once a checkout or event has told it.
    async fn customer(
        &self,
        app: String,
        user: String,
        channel: Channel,
    ) -> Result<Option<String>, CheckoutError>;

    /// The provider-side id of a coupon for a price/product, if created before.
    async fn provider_coupon(
        &self,
        app: String,
        code: String,
        channel: Channel,
        price_ref: String,
    ) -> Result<Option<String>, CheckoutError>;

    /// Remembers the provider-side id of a coupon at `now` (first writer wins; answers the
    /// stored one).
    async fn put_provider_coupon(
        &self,
        app: String,
        code: String,
        channel: Channel,
        price_ref: String,
        provider_id: String,
        now: time::OffsetDateTime,
    ) -> Result<String, CheckoutError>;

    /// Records the event and applies its effect in **one** transaction; a second delivery of
    /// the same (channel, event id) answers [`EventOutcome::Duplicate`] and changes nothing.
    /// `payload` is the verified raw body, kept for audit.
    ///
    /// Effects (each idempotent on its business key, so distinct events about one payment act
    /// once, in any order):
    /// - `CheckoutCompleted`/`CheckoutPaymentSucceeded` (paid): the order (by id, else by
    ///   session id) becomes `completed`; the customer id is remembered for (app, user,
    ///   channel). A credit pack grants `order.credits` as a `purchase` once per order, expiring
    ///   `credits_expire_days` after payment when set, with the payment refs recorded. A
    ///   subscription order records the provider subscription id (creating the subscription if
    ///   the period payment has not yet).
    /// - `CheckoutFailed`/`CheckoutExpired`: a pending order becomes `failed`/`expired`.
    /// - `PeriodPaid`: finds the subscription by provider id, else creates it from the order
    ///   named in the metadata (which completes); grants `credits_per_period` as `subscription`
    ///   once per `payment_id` (expiring at `period_end` when the plan's credits expire); moves
    ///   the period forward (never back) and sets status `active` unless canceled.
    /// - `SubscriptionChanged`: applied when `created_at` is newer than the last applied change
    ///   (older ones are `Ignored`); a canceled subscription stays canceled.
    /// - `Refunded`: finds the payment by any ref; once per `refund_key`, claws back
    ///   [`crate::refund::clawback_credits`] as a `refund` movement that may take the balance
    ///   negative; the order becomes `refunded`.
    /// - `Disputed`, `Ignored`: recorded only.
    async fn apply_event(
        &self,
        event: PaymentEvent,
        payload: String,
        now: OffsetDateTime,
    ) -> Result<EventOutcome, CheckoutError>;

    /// A page of received events.
    async fn events(&self, query: EventQuery) -> Result<Vec<BillingEvent>, CheckoutError>;

    /// A page of the app's orders. A `before` cursor that names no order of the app is a
    /// validation error on `before`.
    async fn app_orders(&self, query: AppOrderQuery) -> Result<Vec<Order>, CheckoutError>;

    /// The received events traced to one order of the app, oldest first.
    async fn order_events(
        &self,
        app: String,
        order_id: String,
    ) -> Result<Vec<BillingEvent>, CheckoutError>;

    /// A page of the app's subscriptions.
    async fn app_subscriptions(
        &self,
        query: AppSubscriptionQuery,
    ) -> Result<Vec<Subscription>, CheckoutError>;

    /// The order's own payment (a pack's, or a subscription's first period's) with every id
    /// it is known by; `None` until the provider has reported it paid.
    async fn order_payment(
        &self,
        app: String,
        order_id: String,
    ) -> Result<Option<crate::plan::RecordedPayment>, CheckoutError>;

    /// One subscription of the app by id.
    async fn app_subscription(
        &self,
        app: String,
        id: i64,
    ) -> Result<Option<Subscription>, CheckoutError>;
}
