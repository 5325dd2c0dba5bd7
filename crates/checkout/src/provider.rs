//! The payment-provider port. `tally-providers` implements it for Stripe, Creem and the sandbox.

use async_trait::async_trait;
use time::OffsetDateTime;

pub use tally_catalog::CouponDuration;

use crate::{Channel, PaymentEvent, SubscriptionChange};

/// Whether a checkout starts a subscription or takes one payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutMode {
    /// Recurring: Stripe `mode=subscription`.
    Subscription,
    /// One-time: Stripe `mode=payment`.
    Payment,
}

/// A checkout session to open with the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRequest {
    /// Tally order id: Stripe `client_reference_id` and `metadata[order_id]`, Creem
    /// `request_id` and `metadata.order_id`.
    pub order_id: String,
    /// App key, carried in metadata.
    pub app: String,
    /// Buyer, carried in metadata.
    pub user: String,
    /// Subscription or one payment.
    pub mode: CheckoutMode,
    /// Stripe price id or Creem product id for the plan (and interval).
    pub price_ref: String,
    /// Where the provider sends the customer after paying.
    pub success_url: String,
    /// Where the provider sends the customer who gives up.
    pub cancel_url: Option<String>,
    /// The provider customer id when the user already has one (Stripe `customer`).
    pub customer_id: Option<String>,
    /// The provider-side discount: Stripe coupon id, Creem discount code.
    pub discount: Option<String>,
    /// Sent as the provider's idempotency key (Stripe `Idempotency-Key`).
    pub idempotency_key: String,
    /// Price after discount, minor units (the sandbox shows and charges it).
    pub amount_minor: i64,
    /// Lower-case ISO 4217.
    pub currency: String,
    /// Plan name, for the sandbox page.
    pub plan_name: String,
    /// Credits the order grants, carried in metadata.
    pub credits: i64,
    /// Days of free trial the subscription starts with (Stripe
    /// `subscription_data[trial_period_days]`; Creem sets trials on the product).
    pub trial_days: Option<u32>,
}

/// An opened checkout session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    /// Provider session id (`cs_…`, `ch_…`, `sbx_…`).
    pub session_id: String,
    /// Where to send the customer's browser.
    pub url: String,
}

/// A billing-portal session to open for a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalRequest {
    /// The provider customer id.
    pub customer_id: String,
    /// Where the portal's back link leads.
    pub return_url: Option<String>,
}

/// A coupon to create on the provider side (Stripe coupon, Creem discount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponRequest {
    /// App key (carried in the provider-side coupon's metadata where the provider has it).
    pub app: String,
    /// Upper-case code.
    pub code: String,
    /// Percentage off.
    pub percent_off: Option<i64>,
    /// Minor units off.
    pub amount_off: Option<i64>,
    /// Currency of `amount_off`.
    pub currency: Option<String>,
    /// How long the discount lasts.
    pub duration: CouponDuration,
    /// Months, for `repeating`.
    pub duration_months: Option<u32>,
    /// The price or product it is used with (Creem discounts name their products).
    pub price_ref: String,
    /// Sent as the provider's idempotency key.
    pub idempotency_key: String,
}

/// A change of a subscription to ask the provider for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRequest {
    /// The provider's subscription id.
    pub subscription_id: String,
    /// What to change.
    pub change: SubscriptionChange,
    /// Sent as the provider's idempotency key where it takes one (Stripe's POSTs).
    pub idempotency_key: String,
}

/// A switch of a subscription to another plan's price, to ask the provider for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanChangeRequest {
    /// The provider's subscription id.
    pub subscription_id: String,
    /// The new price: Stripe price id, Creem product id, the sandbox's price name.
    pub price_ref: String,
    /// Charge the difference now, pro rata for the rest of the period (an upgrade); otherwise
    /// the new price applies from the next period and nothing is charged or refunded now.
    pub prorate: bool,
    /// Sent as the provider's idempotency key where it takes one (Stripe).
    pub idempotency_key: String,
}

/// A refund to ask the provider for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// Tally order id, carried in metadata where the provider has it.
    pub order_id: String,
    /// App key, carried in metadata.
    pub app: String,
    /// Every id the provider may know the payment by; each provider picks the one its refund
    /// call takes (Stripe a PaymentIntent or charge, Creem a transaction).
    pub payment_refs: Vec<String>,
    /// How much, minor units.
    pub amount_minor: i64,
    /// Whether that is all that is left of the payment.
    pub full: bool,
    /// Why, for people (carried in metadata).
    pub reason: Option<String>,
    /// Sent as the provider's idempotency key where it takes one (Stripe).
    pub idempotency_key: String,
}

/// Request headers of a webhook delivery, names lower-case.
pub type WebhookHeaders = Vec<(String, String)>;

/// What a provider call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The channel has no credentials configured.
    #[error("{0} is not configured")]
    NotConfigured(Channel),
    /// The provider answered an error, or could not be reached in time (after retries).
    #[error("{0}")]
    Upstream(String),
    /// The provider cannot do what was asked for this object (a refund of a payment it knows
    /// no refundable id of); nothing was sent.
    #[error("{0}")]
    Unsupported(String),
    /// The webhook's signature is missing, wrong or too old.
    #[error("{0}")]
    InvalidSignature(String),
    /// The webhook is signed but is not an event Tally can read.
    #[error("{0}")]
    Malformed(String),
}

/// One payment provider.
#[async_trait]
pub trait PaymentProvider: Send + Sync + std::fmt::Debug + 'static {
    /// Which channel it serves.
    fn channel(&self) -> Channel;

    /// Opens a checkout session.
    async fn create_checkout(
        &self,
        request: &CheckoutRequest,
    ) -> Result<CheckoutSession, ProviderError>;

    /// Opens a billing-portal session; answers its URL.
    async fn create_portal(&self, request: &PortalRequest) -> Result<String, ProviderError>;

    /// Creates the provider-side coupon; answers what [`CheckoutRequest::discount`] needs.
    async fn create_coupon(&self, request: &CouponRequest) -> Result<String, ProviderError>;

    /// Asks the provider to cancel or resume a subscription. Tally's own record changes only
    /// when the provider's event about it arrives.
    async fn change_subscription(&self, request: &SubscriptionRequest)
    -> Result<(), ProviderError>;

    /// Asks the provider to bill the subscription at another plan's price. Tally's record
    /// switches plans when the provider's event about it arrives.
    async fn change_plan(&self, request: &PlanChangeRequest) -> Result<(), ProviderError>;

    /// Asks the provider to refund a payment. The credits are clawed back when the provider's
    /// refund event arrives, as for a refund made in its dashboard.
    async fn refund(&self, request: &RefundRequest) -> Result<(), ProviderError>;

    /// Verifies a delivery's signature over the raw `body` (at `now`), then parses it.
    fn parse_webhook(
        &self,
        headers: &WebhookHeaders,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<PaymentEvent, ProviderError>;
}

/// The sandbox channel's stand-in for a provider's servers: the signed deliveries it sends when
/// its page's Pay or Cancel button is pressed, fed through the same webhook path as a real
/// provider's.
pub trait SandboxDriver: Send + Sync + std::fmt::Debug + 'static {
    /// Deliveries for paying (`pay`) or abandoning the order's checkout at `now`.
    fn deliveries(
        &self,
        order: &crate::Order,
        pay: bool,
        now: OffsetDateTime,
    ) -> Vec<(WebhookHeaders, Vec<u8>)>;

    /// Deliveries for starting a `days`-day free trial of the order's subscription at `now`.
    fn trial_deliveries(
        &self,
        order: &crate::Order,
        days: u32,
        now: OffsetDateTime,
    ) -> Vec<(WebhookHeaders, Vec<u8>)>;

    /// The delivery a provider sends once it has made `change` to `subscription` at `now`.
    fn subscription_changed(
        &self,
        subscription: &crate::Subscription,
        change: SubscriptionChange,
        now: OffsetDateTime,
    ) -> (WebhookHeaders, Vec<u8>);

    /// The delivery a provider sends once it has switched `subscription` as `request` asks, at
    /// `now`.
    fn plan_changed(
        &self,
        subscription: &crate::Subscription,
        request: &PlanChangeRequest,
        now: OffsetDateTime,
    ) -> (WebhookHeaders, Vec<u8>);

    /// The delivery a provider sends once it has refunded `request` at `now`.
    fn refunded(&self, request: &RefundRequest, now: OffsetDateTime) -> (WebhookHeaders, Vec<u8>);
}
