//! Orders, subscriptions and received provider events, as the domain sees them.

use serde::Serialize;
use time::OffsetDateTime;

tally_kernel::wire_enum! {
    /// A payment channel: a provider, or the local sandbox.
    pub enum Channel {
        /// Stripe Checkout and Billing.
        Stripe = "stripe",
        /// Creem (merchant of record).
        Creem = "creem",
        /// Tally's own test page; enabled only by configuration.
        Sandbox = "sandbox",
    }
}

tally_kernel::wire_enum! {
    /// What an order buys.
    pub enum OrderType {
        /// A one-time credit pack.
        Credits = "credits",
        /// A subscription plan.
        Subscription = "subscription",
    }
}

tally_kernel::wire_enum! {
    /// Order lifecycle: `pending → completed | failed | expired`, `completed → refunded`.
    pub enum OrderStatus {
        /// Waiting for the customer to pay.
        Pending = "pending",
        /// Paid.
        Completed = "completed",
        /// The provider refused the session, or the payment failed.
        Failed = "failed",
        /// The checkout was abandoned or timed out.
        Expired = "expired",
        /// The payment was refunded (fully or partly).
        Refunded = "refunded",
    }
}

tally_kernel::wire_enum! {
    /// Billing interval of a subscription.
    pub enum Interval {
        /// Billed monthly.
        Month = "month",
        /// Billed yearly.
        Year = "year",
    }
}

tally_kernel::wire_enum! {
    /// Subscription lifecycle.
    pub enum SubscriptionStatus {
        /// Paid and current.
        Active = "active",
        /// In a trial period.
        Trialing = "trialing",
        /// A renewal payment failed; the provider retries.
        PastDue = "past_due",
        /// Ended (terminal).
        Canceled = "canceled",
        /// The period ended without payment.
        Expired = "expired",
    }
}

impl SubscriptionStatus {
    /// Whether no later event may change it (a canceled subscription stays canceled).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Canceled)
    }

    /// Whether the subscription still runs: it renews, or is being retried, or is in its
    /// trial. A user has at most one live subscription per app.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Active | Self::Trialing | Self::PastDue)
    }
}

tally_kernel::wire_enum! {
    /// What a user or an operator asks of a subscription.
    pub enum SubscriptionChange {
        /// Run to the end of the paid period, then end (no renewal).
        CancelAtPeriodEnd = "cancel_at_period_end",
        /// End now.
        CancelNow = "cancel_now",
        /// Undo a pending cancel at the period end: renew as before.
        Resume = "resume",
    }
}

/// An order: one attempt to buy a plan or a credit pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    /// `ord_` + 24 hex digits.
    pub id: String,
    /// App key.
    pub app: String,
    /// Buyer.
    pub user: String,
    /// What it buys.
    pub order_type: OrderType,
    /// Lifecycle state.
    pub status: OrderStatus,
    /// The plan or pack bought.
    pub plan_id: String,
    /// Billing interval (subscriptions only).
    pub interval: Option<Interval>,
    /// Payment channel.
    pub channel: Channel,
    /// Price before discount, minor units.
    pub amount_minor: i64,
    /// Lower-case ISO 4217.
    pub currency: String,
    /// Discount the coupon gives on the first payment, minor units.
    pub discount_minor: i64,
    /// Upper-case coupon code, if one was applied.
    pub coupon_code: Option<String>,
    /// Credits the order grants (per paid period for subscriptions), copied from the plan.
    pub credits: i64,
    /// The plan's `credits_expire_days`, copied at purchase.
    pub credits_expire_days: Option<u32>,
    /// The provider's checkout session id.
    pub provider_session_id: Option<String>,
    /// Where the customer pays.
    pub checkout_url: Option<String>,
    /// The provider's customer id, once known.
    pub provider_customer_id: Option<String>,
    /// The provider's subscription id, once known.
    pub provider_subscription_id: Option<String>,
    /// Why it failed, for people.
    pub failure_reason: Option<String>,
    /// Creation instant.
    pub created_at: OffsetDateTime,
    /// When it was paid.
    pub completed_at: Option<OffsetDateTime>,
    /// Last change.
    pub updated_at: OffsetDateTime,
}

/// A subscription, created when the provider reports the first payment or the checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    /// Decimal string of the stored id.
    pub id: String,
    /// App key.
    pub app: String,
    /// Subscriber.
    pub user: String,
    /// The plan.
    pub plan_id: String,
    /// Billing interval.
    pub interval: Interval,
    /// Payment channel.
    pub channel: Channel,
    /// The order that started it.
    pub order_id: String,
    /// The provider's subscription id.
    pub provider_subscription_id: String,
    /// The provider's customer id.
    pub provider_customer_id: Option<String>,
    /// Lifecycle state.
    pub status: SubscriptionStatus,
    /// Start of the paid period.
    pub current_period_start: Option<OffsetDateTime>,
    /// End of the paid period.
    pub current_period_end: Option<OffsetDateTime>,
    /// Start of the period before the current one (kept when a payment moves the period on).
    pub previous_period_start: Option<OffsetDateTime>,
    /// Ends at `current_period_end` instead of renewing.
    pub cancel_at_period_end: bool,
    /// Credits granted per paid period.
    pub credits_per_period: i64,
    /// Whether each period's credits expire at the period's end.
    pub credits_expire: bool,
    /// Creation instant.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
}

/// A provider event as received and recorded, with what Tally did about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BillingEvent {
    /// Decimal string of the stored id.
    pub id: String,
    /// Which provider sent it.
    pub channel: Channel,
    /// The provider's event id (the deduplication key).
    pub event_id: String,
    /// The provider's event type, verbatim.
    pub event_type: String,
    /// App the event was traced to, if any.
    pub app: Option<String>,
    /// User the event was traced to, if any.
    pub user: Option<String>,
    /// Order the event was traced to, if any.
    pub order_id: Option<String>,
    /// `applied`, `ignored` or `unmatched`.
    pub outcome: String,
    /// What was done, for people.
    pub detail: String,
    /// When the provider created the event.
    pub provider_created_at: Option<OffsetDateTime>,
    /// When Tally received it.
    pub received_at: OffsetDateTime,
}
