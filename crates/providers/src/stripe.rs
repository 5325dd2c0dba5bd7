//! Stripe: Checkout Sessions, the billing portal and coupons over the v1 form API, and webhook
//! events (verified with the `Stripe-Signature` scheme) read into provider-neutral events.

use async_trait::async_trait;
use reqwest::Method;
use serde_json::Value;
use tally_checkout::CouponDuration;
use tally_checkout::refund::RefundReport;
use tally_checkout::{
    Channel, CheckoutMode, CheckoutRequest, CheckoutSession, CouponRequest, EventKind,
    PaymentEvent, PaymentProvider, PlanChangeRequest, PortalRequest, ProviderError, RefundRequest,
    SubscriptionChange, SubscriptionRequest, SubscriptionStatus, WebhookHeaders,
};
use time::OffsetDateTime;

use crate::http::{ApiCall, Body, HttpClient};
use crate::json::{at, bool_at, event_head, i64_at, id_at, malformed, refs, str_at, unix_at};
use crate::signature::{header, verify_stripe_scheme};

/// The Stripe API version Tally speaks: sent as `Stripe-Version` on every request; webhook
/// endpoints should be created with the same version.
pub const STRIPE_API_VERSION: &str = "2026-10-28.endive";

/// Stripe's API host.
pub const STRIPE_API_BASE: &str = "https://api.stripe.com";

/// Stripe credentials and endpoint; secrets are redacted in `Debug`.
#[derive(Clone)]
pub struct StripeConfig {
    /// `sk_…` or restricted `rk_…` key; `None` leaves the API calls unconfigured.
    pub secret_key: Option<String>,
    /// The endpoint's `whsec_…` signing secret; `None` rejects every webhook.
    pub webhook_secret: Option<String>,
    /// API host, without `/v1` (tests point it at a local double).
    pub api_base: String,
    /// `Stripe-Version` header value.
    pub api_version: String,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            secret_key: None,
            webhook_secret: None,
            api_base: STRIPE_API_BASE.to_owned(),
            api_version: STRIPE_API_VERSION.to_owned(),
        }
    }
}

impl std::fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeConfig")
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("api_base", &self.api_base)
            .field("api_version", &self.api_version)
            .finish()
    }
}

/// The Stripe channel.
#[derive(Debug, Clone)]
pub struct StripeProvider {
    config: StripeConfig,
    client: HttpClient,
}

impl StripeProvider {
    /// A Stripe provider calling through `client`.
    pub fn new(config: StripeConfig, client: HttpClient) -> Self {
        Self { config, client }
    }

    async fn post(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<Value, ProviderError> {
        self.call(Method::POST, path, form, Some(idempotency_key))
            .await
    }

    /// One API call; Stripe takes idempotency keys on POST only.
    async fn call(
        &self,
        method: Method,
        path: &str,
        form: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> Result<Value, ProviderError> {
        let key = self
            .config
            .secret_key
            .as_deref()
            .ok_or(ProviderError::NotConfigured(Channel::Stripe))?;
        let mut headers = vec![
            ("authorization", format!("Bearer {key}")),
            ("stripe-version", self.config.api_version.clone()),
        ];
        if let Some(idempotency_key) = idempotency_key {
            headers.push(("idempotency-key", idempotency_key.to_owned()));
        }
        let call = ApiCall {
            provider: "stripe",
            method,
            base: &self.config.api_base,
            path,
            headers,
            body: Body::Form(encode_form(form)),
            error_message: |v| str_at(v, &["error", "message"]),
        };
        self.client.send(&call).await.map_err(|e| redact(e, key))
    }
}

/// Stripe masks keys in its messages; this makes sure ours never reach a log or a client.
fn redact(e: ProviderError, key: &str) -> ProviderError {
    match e {
        ProviderError::Upstream(m) if !key.is_empty() => {
            ProviderError::Upstream(m.replace(key, "[redacted]"))
        }
        e => e,
    }
}

/// Form-encodes like the official SDKs: brackets percent-encoded, spaces as `+`.
fn encode_form(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn pair(key: &str, value: impl Into<String>) -> (String, String) {
    (key.to_owned(), value.into())
}

/// The `POST /v1/checkout/sessions` form for `r`.
pub(crate) fn checkout_form(r: &CheckoutRequest) -> Vec<(String, String)> {
    let subscription = r.mode == CheckoutMode::Subscription;
    let mut form = vec![
        pair(
            "mode",
            if subscription {
                "subscription"
            } else {
                "payment"
            },
        ),
        pair("line_items[0][price]", &r.price_ref),
        pair("line_items[0][quantity]", "1"),
        pair("success_url", &r.success_url),
    ];
    if let Some(cancel) = &r.cancel_url {
        form.push(pair("cancel_url", cancel));
    }
    form.extend([
        pair("client_reference_id", &r.order_id),
        pair("metadata[order_id]", &r.order_id),
        pair("metadata[app]", &r.app),
        pair("metadata[user_id]", &r.user),
        pair("metadata[credits]", r.credits.to_string()),
    ]);
    // Session metadata stays on the session; the copies let later subscription, invoice and
    // refund events name the order too.
    let carrier = if subscription {
        "subscription_data"
    } else {
        "payment_intent_data"
    };
    form.extend([
        pair(&format!("{carrier}[metadata][order_id]"), &r.order_id),
        pair(&format!("{carrier}[metadata][app]"), &r.app),
        pair(&format!("{carrier}[metadata][user_id]"), &r.user),
    ]);
    match &r.customer_id {
        Some(customer) => form.push(pair("customer", customer)),
        // Subscription mode always makes a Customer; payment mode only when asked, and the
        // billing portal needs one.
        None if !subscription => form.push(pair("customer_creation", "always")),
        None => {}
    }
    if let Some(coupon) = &r.discount {
        form.push(pair("discounts[0][coupon]", coupon));
    }
    if let Some(days) = r.trial_days.filter(|_| subscription) {
        form.push(pair(
            "subscription_data[trial_period_days]",
            days.to_string(),
        ));
    }
    form
}

/// The `POST /v1/coupons` form for `r`.
pub(crate) fn coupon_form(r: &CouponRequest) -> Vec<(String, String)> {
    let mut form = Vec::new();
    if let Some(percent) = r.percent_off {
        form.push(pair("percent_off", percent.to_string()));
    }
    if let Some(amount) = r.amount_off {
        form.push(pair("amount_off", amount.to_string()));
        if let Some(currency) = &r.currency {
            form.push(pair("currency", currency.to_ascii_lowercase()));
        }
    }
    form.push(pair("duration", r.duration.as_str()));
    if r.duration == CouponDuration::Repeating
        && let Some(months) = r.duration_months
    {
        form.push(pair("duration_in_months", months.to_string()));
    }
    form.extend([
        pair("name", &r.code),
        pair("metadata[app]", &r.app),
        pair("metadata[code]", &r.code),
    ]);
    form
}

/// The `POST /v1/refunds` form for `r`: Stripe refunds a PaymentIntent or a charge, so a
/// payment known only by its invoice cannot be refunded from Tally.
pub(crate) fn refund_form(r: &RefundRequest) -> Result<Vec<(String, String)>, ProviderError> {
    let by = |prefix: &str| r.payment_refs.iter().find(|id| id.starts_with(prefix));
    let mut form = match (by("pi_"), by("ch_")) {
        (Some(intent), _) => vec![pair("payment_intent", intent)],
        (None, Some(charge)) => vec![pair("charge", charge)],
        (None, None) => {
            return Err(ProviderError::Unsupported(format!(
                "Stripe refunds a PaymentIntent or a charge, and no event named one for this \
                 payment ({}); refund it in the Stripe dashboard",
                r.payment_refs.join(", ")
            )));
        }
    };
    if !r.full {
        form.push(pair("amount", r.amount_minor.to_string()));
    }
    form.push(pair("metadata[order_id]", &r.order_id));
    form.push(pair("metadata[app]", &r.app));
    if let Some(reason) = &r.reason {
        form.push(pair("metadata[reason]", reason));
    }
    Ok(form)
}

fn answer_str(answer: &Value, field: &str) -> Result<String, ProviderError> {
    str_at(answer, &[field])
        .ok_or_else(|| ProviderError::Upstream(format!("stripe answered without `{field}`")))
}

/// A fresh key for calls that carry none of their own, so their retries are safe too (as the
/// official SDKs do for every POST).
fn random_idempotency_key() -> String {
    format!("tally-{}", hex::encode(rand::random::<[u8; 16]>()))
}

#[async_trait]
impl PaymentProvider for StripeProvider {
    fn channel(&self) -> Channel {
        Channel::Stripe
    }

    async fn create_checkout(
        &self,
        request: &CheckoutRequest,
    ) -> Result<CheckoutSession, ProviderError> {
        let answer = self
            .post(
                "/v1/checkout/sessions",
                &checkout_form(request),
                &request.idempotency_key,
            )
            .await?;
        Ok(CheckoutSession {
            session_id: answer_str(&answer, "id")?,
            url: answer_str(&answer, "url")?,
        })
    }

    async fn create_portal(&self, request: &PortalRequest) -> Result<String, ProviderError> {
        let mut form = vec![pair("customer", &request.customer_id)];
        if let Some(back) = &request.return_url {
            form.push(pair("return_url", back));
        }
        let answer = self
            .post(
                "/v1/billing_portal/sessions",
                &form,
                &random_idempotency_key(),
            )
            .await?;
        answer_str(&answer, "url")
    }

    async fn create_coupon(&self, request: &CouponRequest) -> Result<String, ProviderError> {
        let answer = self
            .post(
                "/v1/coupons",
                &coupon_form(request),
                &request.idempotency_key,
            )
            .await?;
        answer_str(&answer, "id")
    }

    /// `POST /v1/subscriptions/{id}` with `cancel_at_period_end=true|false` (cancel at the period
    /// end, or resume), or `DELETE /v1/subscriptions/{id}` (cancel now).
    async fn change_subscription(
        &self,
        request: &SubscriptionRequest,
    ) -> Result<(), ProviderError> {
        let path = format!("/v1/subscriptions/{}", request.subscription_id);
        let at_period_end = |on: bool| vec![pair("cancel_at_period_end", on.to_string())];
        match request.change {
            SubscriptionChange::CancelAtPeriodEnd => {
                self.post(&path, &at_period_end(true), &request.idempotency_key)
                    .await
            }
            SubscriptionChange::Resume => {
                self.post(&path, &at_period_end(false), &request.idempotency_key)
                    .await
            }
            SubscriptionChange::CancelNow => self.call(Method::DELETE, &path, &[], None).await,
        }
        .map(drop)
    }

    /// `GET /v1/subscriptions/{id}` for its item, then `POST /v1/subscriptions/{id}` moving that
    /// item to the new price, with `proration_behavior=always_invoice` (an upgrade: the
    /// difference is invoiced and charged now) or `none` (from the next period).
    async fn change_plan(&self, request: &PlanChangeRequest) -> Result<(), ProviderError> {
        let path = format!("/v1/subscriptions/{}", request.subscription_id);
        let current = self.call(Method::GET, &path, &[], None).await?;
        let item = id_at(&current, &["items", "data", "0"]).ok_or_else(|| {
            ProviderError::Upstream(format!(
                "stripe answered subscription {} without an item",
                request.subscription_id
            ))
        })?;
        let form = vec![
            pair("items[0][id]", item),
            pair("items[0][price]", &request.price_ref),
            pair(
                "proration_behavior",
                if request.prorate {
                    "always_invoice"
                } else {
                    "none"
                },
            ),
        ];
        self.post(&path, &form, &request.idempotency_key)
            .await
            .map(drop)
    }

    /// `POST /v1/refunds` naming the PaymentIntent (else the charge), with `amount` unless the
    /// refund takes all that is left.
    async fn refund(&self, request: &RefundRequest) -> Result<(), ProviderError> {
        let form = refund_form(request)?;
        self.post("/v1/refunds", &form, &request.idempotency_key)
            .await
            .map(drop)
    }

    fn parse_webhook(
        &self,
        headers: &WebhookHeaders,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<PaymentEvent, ProviderError> {
        let secret = self
            .config
            .webhook_secret
            .as_deref()
            .ok_or(ProviderError::NotConfigured(Channel::Stripe))?;
        verify_stripe_scheme(header(headers, "stripe-signature"), secret, body, now)?;
        parse_event(body)
    }
}

fn required(object: &Value, field: &str, event_type: &str) -> Result<String, ProviderError> {
    str_at(object, &[field])
        .ok_or_else(|| malformed(format!("{event_type}: data.object has no `{field}`")))
}

/// Reads a verified Stripe event. Unknown types and unknown enum values are not errors: Stripe
/// adds both without notice.
pub(crate) fn parse_event(body: &[u8]) -> Result<PaymentEvent, ProviderError> {
    let (event, id, event_type) = event_head(body, "type")?;
    let object = at(&event, &["data", "object"]).unwrap_or(&Value::Null);
    let kind = event_kind(&event_type, object)?;
    Ok(PaymentEvent {
        channel: Channel::Stripe,
        id,
        event_type,
        created_at: unix_at(&event, &["created"]),
        kind,
    })
}

fn event_kind(event_type: &str, o: &Value) -> Result<EventKind, ProviderError> {
    let session_order_id =
        || str_at(o, &["client_reference_id"]).or_else(|| str_at(o, &["metadata", "order_id"]));
    Ok(match event_type {
        "checkout.session.completed" => EventKind::CheckoutCompleted {
            order_id: session_order_id(),
            session_id: required(o, "id", event_type)?,
            customer_id: id_at(o, &["customer"]),
            subscription_id: id_at(o, &["subscription"]),
            paid: matches!(
                str_at(o, &["payment_status"]).as_deref(),
                Some("paid" | "no_payment_required")
            ),
            amount_paid_minor: i64_at(o, &["amount_total"]),
            payment_refs: refs([id_at(o, &["payment_intent"])]),
        },
        "checkout.session.async_payment_succeeded" => EventKind::CheckoutPaymentSucceeded {
            order_id: session_order_id(),
            session_id: required(o, "id", event_type)?,
            amount_paid_minor: i64_at(o, &["amount_total"]),
            payment_refs: refs([id_at(o, &["payment_intent"])]),
        },
        "checkout.session.async_payment_failed" => EventKind::CheckoutFailed {
            order_id: session_order_id(),
            session_id: required(o, "id", event_type)?,
        },
        "checkout.session.expired" => EventKind::CheckoutExpired {
            order_id: session_order_id(),
            session_id: required(o, "id", event_type)?,
        },
        "invoice.paid" => invoice_paid(o, event_type)?,
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted"
        | "customer.subscription.paused"
        | "customer.subscription.resumed" => {
            let status = if event_type == "customer.subscription.deleted" {
                Some(SubscriptionStatus::Canceled)
            } else {
                str_at(o, &["status"]).and_then(|s| subscription_status(&s))
            };
            // Basil moved the period onto the items; older versions keep it at the top.
            let period = |field: &str| {
                unix_at(o, &["items", "data", "0", field]).or_else(|| unix_at(o, &[field]))
            };
            EventKind::SubscriptionChanged {
                subscription_id: required(o, "id", event_type)?,
                customer_id: id_at(o, &["customer"]),
                order_id: str_at(o, &["metadata", "order_id"]),
                status,
                cancel_at_period_end: bool_at(o, &["cancel_at_period_end"]),
                period_start: period("current_period_start"),
                period_end: period("current_period_end"),
                price_ref: id_at(o, &["items", "data", "0", "price"]),
            }
        }
        "charge.refunded" => {
            let charge = required(o, "id", event_type)?;
            let refunded = i64_at(o, &["amount_refunded"]);
            EventKind::Refunded {
                // Cumulative amount: each further partial refund is a new key.
                refund_key: format!("{charge}:{}", refunded.unwrap_or(0)),
                payment_refs: refs([
                    id_at(o, &["payment_intent"]),
                    Some(charge),
                    id_at(o, &["invoice"]),
                ]),
                amount: refunded.map_or(RefundReport::Full, RefundReport::Cumulative),
            }
        }
        "charge.dispute.created" => EventKind::Disputed {
            dispute_id: required(o, "id", event_type)?,
            payment_refs: refs([id_at(o, &["charge"]), id_at(o, &["payment_intent"])]),
            amount_minor: i64_at(o, &["amount"]).unwrap_or(0),
        },
        // `invoice.payment_succeeded` duplicates `invoice.paid`; only the latter grants.
        _ => EventKind::Ignored,
    })
}

fn invoice_paid(o: &Value, event_type: &str) -> Result<EventKind, ProviderError> {
    const PARENT: [&str; 2] = ["parent", "subscription_details"];
    // Basil (2025-03-31) moved the subscription under `parent`; older endpoint versions still
    // send the top-level fields.
    let Some(subscription_id) =
        id_at(o, &[PARENT[0], PARENT[1], "subscription"]).or_else(|| id_at(o, &["subscription"]))
    else {
        return Ok(EventKind::Ignored);
    };
    let order_id = str_at(o, &[PARENT[0], PARENT[1], "metadata", "order_id"])
        .or_else(|| str_at(o, &["subscription_details", "metadata", "order_id"]))
        .or_else(|| str_at(o, &["lines", "data", "0", "metadata", "order_id"]));
    let mut candidates = vec![id_at(o, &["payment_intent"]), id_at(o, &["charge"])];
    if let Some(Value::Array(payments)) = at(o, &["payments", "data"]) {
        candidates.extend(
            payments
                .iter()
                .map(|p| id_at(p, &["payment", "payment_intent"])),
        );
    }
    Ok(EventKind::PeriodPaid {
        payment_id: required(o, "id", event_type)?,
        subscription_id,
        customer_id: id_at(o, &["customer"]),
        order_id,
        period_start: unix_at(o, &["lines", "data", "0", "period", "start"]),
        period_end: unix_at(o, &["lines", "data", "0", "period", "end"]),
        amount_paid_minor: i64_at(o, &["amount_paid"]).unwrap_or(0),
        payment_refs: refs(candidates),
        plan_change: str_at(o, &["billing_reason"]).as_deref() == Some("subscription_update"),
    })
}

/// Stripe's subscription status in Tally's terms; `None` leaves Tally's as it is.
fn subscription_status(status: &str) -> Option<SubscriptionStatus> {
    match status {
        "active" => Some(SubscriptionStatus::Active),
        "trialing" => Some(SubscriptionStatus::Trialing),
        "past_due" | "unpaid" => Some(SubscriptionStatus::PastDue),
        "canceled" => Some(SubscriptionStatus::Canceled),
        // A paused subscription does not renew: its credits stop like an expired one's.
        "incomplete_expired" | "paused" => Some(SubscriptionStatus::Expired),
        // `incomplete` waits for the first payment; unknown values are new to us.
        _ => None,
    }
}
