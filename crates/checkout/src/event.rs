//! Provider-neutral payment events: what a verified webhook means for Tally, whichever provider
//! sent it.

use time::OffsetDateTime;

use crate::{Channel, SubscriptionStatus};

/// A verified provider event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEvent {
    /// The provider (or the sandbox) that sent it.
    pub channel: Channel,
    /// The provider's event id: recorded once, a second delivery is a duplicate.
    pub id: String,
    /// The provider's event type, verbatim (`invoice.paid`, `subscription.paid`, …).
    pub event_type: String,
    /// When the provider created it; orders status changes of one subscription.
    pub created_at: Option<OffsetDateTime>,
    /// What it means.
    pub kind: EventKind,
}

/// The meaning of an event. Ids are the provider's; `order_id` is Tally's own order id read
/// back from the metadata (or `client_reference_id` / `request_id`) set when the session was
/// created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The customer finished a checkout (`checkout.session.completed`, Creem
    /// `checkout.completed`). A paid credit-pack checkout grants the pack; a subscription
    /// checkout links the provider subscription to the order (its credits come with
    /// [`EventKind::PeriodPaid`]).
    CheckoutCompleted {
        /// Tally order id.
        order_id: Option<String>,
        /// Provider checkout session id.
        session_id: String,
        /// Provider customer id.
        customer_id: Option<String>,
        /// Provider subscription id (subscription checkouts).
        subscription_id: Option<String>,
        /// Whether the money is in (`payment_status == "paid"`); an unpaid completion waits for
        /// [`EventKind::CheckoutPaymentSucceeded`].
        paid: bool,
        /// Amount paid, minor units, when the provider says.
        amount_paid_minor: Option<i64>,
        /// Ids a later refund may name for this payment (PaymentIntent, Creem order and
        /// transaction ids).
        payment_refs: Vec<String>,
    },
    /// A delayed payment of a completed checkout succeeded
    /// (`checkout.session.async_payment_succeeded`); same fields as a paid completion.
    CheckoutPaymentSucceeded {
        /// Tally order id.
        order_id: Option<String>,
        /// Provider checkout session id.
        session_id: String,
        /// Amount paid, minor units.
        amount_paid_minor: Option<i64>,
        /// See [`EventKind::CheckoutCompleted`].
        payment_refs: Vec<String>,
    },
    /// The checkout's payment failed (`checkout.session.async_payment_failed`): the order fails.
    CheckoutFailed {
        /// Tally order id.
        order_id: Option<String>,
        /// Provider checkout session id.
        session_id: String,
    },
    /// The checkout expired or was abandoned (`checkout.session.expired`, sandbox Cancel): a
    /// pending order becomes `expired`.
    CheckoutExpired {
        /// Tally order id.
        order_id: Option<String>,
        /// Provider checkout session id.
        session_id: String,
    },
    /// A subscription period was paid: the first payment or a renewal (`invoice.paid`, Creem
    /// `subscription.paid`). Grants the plan's credits once per `payment_id`.
    PeriodPaid {
        /// The payment's business key: Stripe invoice id, Creem transaction id.
        payment_id: String,
        /// Provider subscription id.
        subscription_id: String,
        /// Provider customer id.
        customer_id: Option<String>,
        /// Tally order id, from the subscription's metadata.
        order_id: Option<String>,
        /// Start of the paid period.
        period_start: Option<OffsetDateTime>,
        /// End of the paid period.
        period_end: Option<OffsetDateTime>,
        /// Amount paid, minor units.
        amount_paid_minor: i64,
        /// Other ids a refund may name for this payment (PaymentIntent, charge).
        payment_refs: Vec<String>,
        /// The payment is a plan change's proration (Stripe `billing_reason` =
        /// `subscription_update`), not a period: recorded, and it grants nothing (the switch's
        /// credits come with the subscription's change).
        plan_change: bool,
    },
    /// A subscription changed state (`customer.subscription.*`, Creem `subscription.*` other
    /// than `paid`). Applied only if newer than the last applied change of that subscription.
    SubscriptionChanged {
        /// Provider subscription id.
        subscription_id: String,
        /// Provider customer id.
        customer_id: Option<String>,
        /// Tally order id, from the subscription's metadata.
        order_id: Option<String>,
        /// New status; `None` when the provider's status has no Tally meaning (left as is).
        status: Option<SubscriptionStatus>,
        /// Whether it ends at the period end, when the event says.
        cancel_at_period_end: Option<bool>,
        /// Period start, when the event says.
        period_start: Option<OffsetDateTime>,
        /// Period end, when the event says.
        period_end: Option<OffsetDateTime>,
        /// The price it bills now (Stripe price id, Creem product id, the sandbox's price
        /// name), when the event says: a price of another of the app's plans is a plan change.
        price_ref: Option<String>,
    },
    /// Money went back to the customer (`charge.refunded`, Creem `refund.created`). Claws back
    /// the credits the payment granted, in proportion to the amount refunded.
    Refunded {
        /// Identifies this refund: each key is applied once.
        refund_key: String,
        /// Ids naming the refunded payment (matched against the refs recorded with grants).
        payment_refs: Vec<String>,
        /// How much, as the provider reports it.
        amount: crate::refund::RefundReport,
    },
    /// A dispute (chargeback) was opened; recorded for people, nothing moves.
    Disputed {
        /// Provider dispute id.
        dispute_id: String,
        /// Ids naming the disputed payment.
        payment_refs: Vec<String>,
        /// Disputed amount, minor units.
        amount_minor: i64,
    },
    /// A valid event Tally does not act on; recorded and answered 200.
    Ignored,
}

/// What applying an event did; recorded with the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// The event was new and its effect applied (`detail` says what, for people).
    Applied {
        /// What was done.
        detail: String,
    },
    /// The event id was already recorded: nothing done.
    Duplicate,
    /// Valid, recorded, nothing to do (unknown type, stale change, already-granted payment).
    Ignored {
        /// Why.
        detail: String,
    },
    /// Recorded, but it names no order, subscription or payment Tally knows.
    Unmatched {
        /// What was looked for.
        detail: String,
    },
}

impl EventOutcome {
    /// `applied`, `duplicate`, `ignored` or `unmatched`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Applied { .. } => "applied",
            Self::Duplicate => "duplicate",
            Self::Ignored { .. } => "ignored",
            Self::Unmatched { .. } => "unmatched",
        }
    }
}
