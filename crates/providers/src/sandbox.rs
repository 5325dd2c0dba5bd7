//! The sandbox: a local payment channel for development and demos. It opens no remote session;
//! Tally's own test page "pays" by building the signed webhook deliveries a real provider would
//! send, and those go through the same verification and event handling as Stripe's.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tally_checkout::refund::RefundReport;
use tally_checkout::{
    Channel, CheckoutRequest, CheckoutSession, CouponRequest, EventKind, Interval, Order,
    OrderType, PaymentEvent, PaymentProvider, PlanChangeRequest, PortalRequest, ProviderError,
    RefundRequest, SandboxDriver, Subscription, SubscriptionChange, SubscriptionRequest,
    SubscriptionStatus, WebhookHeaders,
};
use time::{Date, OffsetDateTime};

use crate::json::malformed;
use crate::signature::{header, stripe_scheme_header, verify_stripe_scheme};

/// Header carrying the sandbox signature (Stripe's `t=…,v1=…` scheme).
pub const SANDBOX_SIGNATURE_HEADER: &str = "tally-sandbox-signature";

/// Sandbox settings; the secret is redacted in `Debug`.
#[derive(Clone)]
pub struct SandboxConfig {
    /// Tally's public URL, e.g. `http://127.0.0.1:8080`: the test page lives under it.
    pub public_base_url: String,
    /// Signs and verifies sandbox deliveries.
    pub webhook_secret: String,
}

impl std::fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("public_base_url", &self.public_base_url)
            .field("webhook_secret", &"[redacted]")
            .finish()
    }
}

/// The sandbox channel.
#[derive(Debug, Clone)]
pub struct SandboxProvider {
    config: SandboxConfig,
}

/// A sandbox event as delivered: `{id, type, created (unix s), data}`.
#[derive(Debug, Serialize, Deserialize)]
struct WireEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    data: WireData,
}

/// Every field any sandbox event uses; each event type reads its own.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct WireData {
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paid: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount_minor: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    payment_refs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    period_start: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    period_end: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_at_period_end: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refunded_total_minor: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dispute_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price_ref: Option<String>,
}

impl SandboxProvider {
    /// A sandbox provider.
    pub fn new(config: SandboxConfig) -> Self {
        Self { config }
    }

    /// The session id the sandbox gives an order.
    pub fn session_id(order_id: &str) -> String {
        format!("sbx_{order_id}")
    }

    /// The signed deliveries a provider would send when the customer pays (`pay`) or gives up
    /// on `order` at `now`. Event ids depend only on the order and the kind, so pressing Pay
    /// twice delivers duplicates, as a provider's retry would.
    pub fn deliveries(
        &self,
        order: &Order,
        pay: bool,
        now: OffsetDateTime,
    ) -> Vec<(WebhookHeaders, Vec<u8>)> {
        self.checkout_deliveries(order, pay, None, now)
    }

    /// The signed deliveries a provider sends when the customer starts a `days`-day free trial
    /// of `order`'s subscription at `now`: the checkout completes paying nothing, and the
    /// subscription is `trialing` until the trial ends. No period is paid (the sandbox does not
    /// end trials).
    pub fn trial_deliveries(
        &self,
        order: &Order,
        days: u32,
        now: OffsetDateTime,
    ) -> Vec<(WebhookHeaders, Vec<u8>)> {
        self.checkout_deliveries(order, true, Some(days), now)
    }

    fn checkout_deliveries(
        &self,
        order: &Order,
        pay: bool,
        trial_days: Option<u32>,
        now: OffsetDateTime,
    ) -> Vec<(WebhookHeaders, Vec<u8>)> {
        let session_id = order
            .provider_session_id
            .clone()
            .unwrap_or_else(|| Self::session_id(&order.id));
        if !pay {
            let data = WireData {
                order_id: Some(order.id.clone()),
                session_id: Some(session_id),
                ..WireData::default()
            };
            return vec![self.sign(&order.id, "checkout.expired", data, now)];
        }
        let customer_id = order
            .provider_customer_id
            .clone()
            .unwrap_or_else(|| customer_id(&order.app, &order.user));
        let subscription_id =
            (order.order_type == OrderType::Subscription).then(|| format!("sbx_sub_{}", order.id));
        let trial_days = trial_days.filter(|_| subscription_id.is_some());
        let paid_minor = if trial_days.is_some() {
            0
        } else {
            (order.amount_minor - order.discount_minor).max(0)
        };
        let completed = WireData {
            order_id: Some(order.id.clone()),
            session_id: Some(session_id),
            customer_id: Some(customer_id.clone()),
            subscription_id: subscription_id.clone(),
            paid: Some(true),
            amount_minor: Some(paid_minor),
            // A subscription's payments are named by their invoices (period.paid).
            payment_refs: if subscription_id.is_some() {
                Vec::new()
            } else {
                vec![format!("sbx_pay_{}", order.id)]
            },
            ..WireData::default()
        };
        let mut out = vec![self.sign(&order.id, "checkout.completed", completed, now)];
        match (trial_days, &subscription_id) {
            (Some(days), Some(sub)) => {
                let trialing = WireData {
                    order_id: Some(order.id.clone()),
                    subscription_id: Some(sub.clone()),
                    customer_id: Some(customer_id),
                    status: Some(SubscriptionStatus::Trialing.as_str().to_owned()),
                    cancel_at_period_end: Some(false),
                    period_start: Some(now.unix_timestamp()),
                    period_end: Some(
                        (now + time::Duration::days(i64::from(days))).unix_timestamp(),
                    ),
                    ..WireData::default()
                };
                out.push(self.sign(&order.id, "subscription.trialing", trialing, now));
            }
            (None, Some(_)) => out.extend(self.period_paid(order, 1, paid_minor, now)),
            _ => {}
        }
        out
    }

    /// The signed `period.paid` of renewal number `period` (2, 3, …) of a subscription order,
    /// paid at `now` for one interval from `now`; `None` for a credit-pack order.
    pub fn renewal(
        &self,
        order: &Order,
        period: u32,
        now: OffsetDateTime,
    ) -> Option<(WebhookHeaders, Vec<u8>)> {
        self.period_paid(order, period, order.amount_minor, now)
    }

    /// The signed `subscription.updated` a provider sends once it has made `change` to
    /// `subscription` at `now`: still running but ending with its period, ended now, or renewing
    /// again. Each change is a new event (its id is unique), as a provider's would be.
    pub fn subscription_changed(
        &self,
        subscription: &Subscription,
        change: SubscriptionChange,
        now: OffsetDateTime,
    ) -> (WebhookHeaders, Vec<u8>) {
        let (status, cancel_at_period_end) = match change {
            SubscriptionChange::CancelAtPeriodEnd => (subscription.status, true),
            SubscriptionChange::CancelNow => (SubscriptionStatus::Canceled, false),
            SubscriptionChange::Resume => (subscription.status, false),
        };
        let data = WireData {
            order_id: Some(subscription.order_id.clone()),
            subscription_id: Some(subscription.provider_subscription_id.clone()),
            customer_id: subscription.provider_customer_id.clone(),
            status: Some(status.as_str().to_owned()),
            cancel_at_period_end: Some(cancel_at_period_end),
            ..WireData::default()
        };
        let id = format!(
            "evt_sbx_{}_{change}_{:016x}",
            subscription.provider_subscription_id,
            rand::random::<u64>()
        );
        self.sign_as(&id, "subscription.updated", data, now)
    }

    /// The signed `subscription.updated` a provider sends once it bills `subscription` at
    /// `request`'s price (from `now`). Each switch is a new event.
    pub fn plan_changed(
        &self,
        subscription: &Subscription,
        request: &PlanChangeRequest,
        now: OffsetDateTime,
    ) -> (WebhookHeaders, Vec<u8>) {
        let data = WireData {
            order_id: Some(subscription.order_id.clone()),
            subscription_id: Some(subscription.provider_subscription_id.clone()),
            customer_id: subscription.provider_customer_id.clone(),
            status: Some(subscription.status.as_str().to_owned()),
            price_ref: Some(request.price_ref.clone()),
            ..WireData::default()
        };
        let id = format!(
            "evt_sbx_{}_plan_{:016x}",
            subscription.provider_subscription_id,
            rand::random::<u64>()
        );
        self.sign_as(&id, "subscription.updated", data, now)
    }

    /// The signed `refund.created` a provider sends once it has refunded `request` at `now`:
    /// this refund's own amount, naming the payment. Each refund is a new event.
    pub fn refunded(
        &self,
        request: &RefundRequest,
        now: OffsetDateTime,
    ) -> (WebhookHeaders, Vec<u8>) {
        let refund = format!("sbx_re_{:016x}", rand::random::<u64>());
        let data = WireData {
            order_id: Some(request.order_id.clone()),
            payment_refs: request.payment_refs.clone(),
            refund_key: Some(refund.clone()),
            amount_minor: Some(request.amount_minor),
            ..WireData::default()
        };
        self.sign_as(&format!("evt_{refund}"), "refund.created", data, now)
    }

    fn period_paid(
        &self,
        order: &Order,
        period: u32,
        amount_minor: i64,
        now: OffsetDateTime,
    ) -> Option<(WebhookHeaders, Vec<u8>)> {
        if order.order_type != OrderType::Subscription {
            return None;
        }
        let months = match order.interval {
            Some(Interval::Year) => 12,
            _ => 1,
        };
        let data = WireData {
            order_id: Some(order.id.clone()),
            subscription_id: Some(subscription_id(order)),
            customer_id: Some(
                order
                    .provider_customer_id
                    .clone()
                    .unwrap_or_else(|| customer_id(&order.app, &order.user)),
            ),
            payment_id: Some(format!("sbx_inv_{}_{period}", order.id)),
            amount_minor: Some(amount_minor),
            period_start: Some(now.unix_timestamp()),
            period_end: Some(add_months(now, months).unix_timestamp()),
            ..WireData::default()
        };
        let id = format!("evt_sbx_{}_period_paid_{period}", order.id);
        Some(self.sign_as(&id, "period.paid", data, now))
    }

    fn sign(
        &self,
        order_id: &str,
        event_type: &str,
        data: WireData,
        now: OffsetDateTime,
    ) -> (WebhookHeaders, Vec<u8>) {
        let id = format!("evt_sbx_{order_id}_{}", event_type.replace('.', "_"));
        self.sign_as(&id, event_type, data, now)
    }

    fn sign_as(
        &self,
        id: &str,
        event_type: &str,
        data: WireData,
        now: OffsetDateTime,
    ) -> (WebhookHeaders, Vec<u8>) {
        let event = WireEvent {
            id: id.to_owned(),
            event_type: event_type.to_owned(),
            created: Some(now.unix_timestamp()),
            data,
        };
        // Serializing plain strings, numbers and options cannot fail.
        let body = serde_json::to_vec(&event).unwrap_or_default();
        let signature =
            stripe_scheme_header(&self.config.webhook_secret, now.unix_timestamp(), &body);
        let headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            (SANDBOX_SIGNATURE_HEADER.to_owned(), signature),
        ];
        (headers, body)
    }
}

fn subscription_id(order: &Order) -> String {
    order
        .provider_subscription_id
        .clone()
        .unwrap_or_else(|| format!("sbx_sub_{}", order.id))
}

/// A stable customer id per app and user that reveals neither.
fn customer_id(app: &str, user: &str) -> String {
    let digest = Sha256::new()
        .chain_update(app.as_bytes())
        .chain_update([0])
        .chain_update(user.as_bytes())
        .finalize();
    format!("sbx_cus_{}", hex::encode(&digest[..8]))
}

/// `t` plus `months` calendar months, the day clamped to the target month's length.
fn add_months(t: OffsetDateTime, months: u32) -> OffsetDateTime {
    let zero_based = i64::from(u8::from(t.month())) - 1 + i64::from(months);
    let year = t.year() + i32::try_from(zero_based / 12).unwrap_or(0);
    let month = u8::try_from(zero_based % 12 + 1)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .unwrap_or(t.month());
    (1..=t.day())
        .rev()
        .find_map(|day| Date::from_calendar_date(year, month, day).ok())
        .map_or(t, |date| t.replace_date(date))
}

fn need(field: Option<String>, name: &str, event_type: &str) -> Result<String, ProviderError> {
    field.ok_or_else(|| malformed(format!("{event_type}: data has no `{name}`")))
}

fn unix(seconds: Option<i64>) -> Option<OffsetDateTime> {
    seconds.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
}

/// Reads a verified sandbox event.
fn parse_event(body: &[u8]) -> Result<PaymentEvent, ProviderError> {
    let event: WireEvent =
        serde_json::from_slice(body).map_err(|e| malformed(format!("not a sandbox event: {e}")))?;
    let t = event.event_type.as_str();
    let d = event.data;
    let kind = match t {
        "checkout.completed" => EventKind::CheckoutCompleted {
            order_id: d.order_id,
            session_id: need(d.session_id, "session_id", t)?,
            customer_id: d.customer_id,
            subscription_id: d.subscription_id,
            paid: d.paid.unwrap_or(false),
            amount_paid_minor: d.amount_minor,
            payment_refs: d.payment_refs,
        },
        "checkout.payment_succeeded" => EventKind::CheckoutPaymentSucceeded {
            order_id: d.order_id,
            session_id: need(d.session_id, "session_id", t)?,
            amount_paid_minor: d.amount_minor,
            payment_refs: d.payment_refs,
        },
        "checkout.failed" => EventKind::CheckoutFailed {
            order_id: d.order_id,
            session_id: need(d.session_id, "session_id", t)?,
        },
        "checkout.expired" => EventKind::CheckoutExpired {
            order_id: d.order_id,
            session_id: need(d.session_id, "session_id", t)?,
        },
        "period.paid" => EventKind::PeriodPaid {
            payment_id: need(d.payment_id, "payment_id", t)?,
            subscription_id: need(d.subscription_id, "subscription_id", t)?,
            customer_id: d.customer_id,
            order_id: d.order_id,
            period_start: unix(d.period_start),
            period_end: unix(d.period_end),
            amount_paid_minor: d.amount_minor.unwrap_or(0),
            payment_refs: d.payment_refs,
            plan_change: false,
        },
        "subscription.updated" | "subscription.trialing" => EventKind::SubscriptionChanged {
            subscription_id: need(d.subscription_id, "subscription_id", t)?,
            customer_id: d.customer_id,
            order_id: d.order_id,
            status: d.status.as_deref().and_then(SubscriptionStatus::parse),
            cancel_at_period_end: d.cancel_at_period_end,
            period_start: unix(d.period_start),
            period_end: unix(d.period_end),
            price_ref: d.price_ref,
        },
        "refund.created" => EventKind::Refunded {
            refund_key: need(d.refund_key, "refund_key", t)?,
            payment_refs: d.payment_refs,
            amount: match (d.refunded_total_minor, d.amount_minor) {
                (Some(total), _) => RefundReport::Cumulative(total),
                (None, Some(amount)) => RefundReport::PerRefund(amount),
                (None, None) => RefundReport::Full,
            },
        },
        "dispute.created" => EventKind::Disputed {
            dispute_id: need(d.dispute_id, "dispute_id", t)?,
            payment_refs: d.payment_refs,
            amount_minor: d.amount_minor.unwrap_or(0),
        },
        _ => EventKind::Ignored,
    };
    Ok(PaymentEvent {
        channel: Channel::Sandbox,
        id: event.id,
        event_type: event.event_type,
        created_at: unix(event.created),
        kind,
    })
}

#[async_trait]
impl PaymentProvider for SandboxProvider {
    fn channel(&self) -> Channel {
        Channel::Sandbox
    }

    async fn create_checkout(
        &self,
        request: &CheckoutRequest,
    ) -> Result<CheckoutSession, ProviderError> {
        let session_id = Self::session_id(&request.order_id);
        let url = format!(
            "{}/payment/sandbox/{session_id}",
            self.config.public_base_url.trim_end_matches('/')
        );
        Ok(CheckoutSession { session_id, url })
    }

    /// The sandbox has no servers to ask: its driver sends the event (see
    /// [`SandboxProvider::subscription_changed`]).
    async fn change_subscription(
        &self,
        _request: &SubscriptionRequest,
    ) -> Result<(), ProviderError> {
        Ok(())
    }

    /// The sandbox has no servers to ask: its driver sends the switch's event (see
    /// [`SandboxProvider::plan_changed`]).
    async fn change_plan(&self, _request: &PlanChangeRequest) -> Result<(), ProviderError> {
        Ok(())
    }

    /// The sandbox has no servers to ask: its driver sends the refund event (see
    /// [`SandboxProvider::refunded`]).
    async fn refund(&self, _request: &RefundRequest) -> Result<(), ProviderError> {
        Ok(())
    }

    /// There is no sandbox portal: the customer goes straight back.
    async fn create_portal(&self, request: &PortalRequest) -> Result<String, ProviderError> {
        Ok(request
            .return_url
            .clone()
            .unwrap_or_else(|| self.config.public_base_url.clone()))
    }

    /// The sandbox applies discounts itself: the code is the coupon.
    async fn create_coupon(&self, request: &CouponRequest) -> Result<String, ProviderError> {
        Ok(request.code.clone())
    }

    fn parse_webhook(
        &self,
        headers: &WebhookHeaders,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<PaymentEvent, ProviderError> {
        verify_stripe_scheme(
            header(headers, SANDBOX_SIGNATURE_HEADER),
            &self.config.webhook_secret,
            body,
            now,
        )?;
        parse_event(body)
    }
}

impl SandboxDriver for SandboxProvider {
    fn deliveries(
        &self,
        order: &Order,
        pay: bool,
        now: OffsetDateTime,
    ) -> Vec<(WebhookHeaders, Vec<u8>)> {
        // The inherent method: also usable without the trait in scope.
        SandboxProvider::deliveries(self, order, pay, now)
    }

    fn trial_deliveries(
        &self,
        order: &Order,
        days: u32,
        now: OffsetDateTime,
    ) -> Vec<(WebhookHeaders, Vec<u8>)> {
        SandboxProvider::trial_deliveries(self, order, days, now)
    }

    fn subscription_changed(
        &self,
        subscription: &Subscription,
        change: SubscriptionChange,
        now: OffsetDateTime,
    ) -> (WebhookHeaders, Vec<u8>) {
        SandboxProvider::subscription_changed(self, subscription, change, now)
    }

    fn plan_changed(
        &self,
        subscription: &Subscription,
        request: &PlanChangeRequest,
        now: OffsetDateTime,
    ) -> (WebhookHeaders, Vec<u8>) {
        SandboxProvider::plan_changed(self, subscription, request, now)
    }

    fn refunded(&self, request: &RefundRequest, now: OffsetDateTime) -> (WebhookHeaders, Vec<u8>) {
        SandboxProvider::refunded(self, request, now)
    }
}
