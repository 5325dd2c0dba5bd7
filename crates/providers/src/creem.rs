//! Creem (merchant of record): checkouts, the customer portal and discounts over its JSON API,
//! and webhook events (verified with `creem-signature`) read into provider-neutral events.

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Map, Value, json};
use tally_checkout::CouponDuration;
use tally_checkout::refund::RefundReport;
use tally_checkout::{
    Channel, CheckoutRequest, CheckoutSession, CouponRequest, EventKind, PaymentEvent,
    PaymentProvider, PlanChangeRequest, PortalRequest, ProviderError, RefundRequest,
    SubscriptionChange, SubscriptionRequest, SubscriptionStatus, WebhookHeaders,
};
use time::OffsetDateTime;

use crate::http::{ApiCall, Body, HttpClient};
use crate::json::{
    at, bool_at, event_head, i64_at, id_at, malformed, refs, rfc3339_at, str_at, unix_ms_at,
};
use crate::signature::{header, verify_hex_hmac};

/// Creem's live API host.
pub const CREEM_API_BASE: &str = "https://api.creem.io";

/// Creem's test-mode API host (test keys work only there).
pub const CREEM_TEST_API_BASE: &str = "https://test-api.creem.io";

/// The host a key belongs to: `creem_test_…` keys are test mode, the rest live.
pub fn creem_api_base(api_key: Option<&str>) -> &'static str {
    match api_key {
        Some(key) if key.starts_with("creem_test_") => CREEM_TEST_API_BASE,
        _ => CREEM_API_BASE,
    }
}

/// Creem credentials and endpoint; secrets are redacted in `Debug`.
#[derive(Clone)]
pub struct CreemConfig {
    /// `creem_…` or `creem_test_…` key; `None` leaves the API calls unconfigured.
    pub api_key: Option<String>,
    /// The webhook signing secret; `None` rejects every webhook.
    pub webhook_secret: Option<String>,
    /// API host, without `/v1`.
    pub api_base: String,
}

impl CreemConfig {
    /// A config on the host the key belongs to (see [`creem_api_base`]).
    pub fn new(api_key: Option<String>, webhook_secret: Option<String>) -> Self {
        let api_base = creem_api_base(api_key.as_deref()).to_owned();
        Self {
            api_key,
            webhook_secret,
            api_base,
        }
    }
}

impl std::fmt::Debug for CreemConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreemConfig")
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("api_base", &self.api_base)
            .finish()
    }
}

/// The Creem channel.
#[derive(Debug, Clone)]
pub struct CreemProvider {
    config: CreemConfig,
    client: HttpClient,
}

impl CreemProvider {
    /// A Creem provider calling through `client`.
    pub fn new(config: CreemConfig, client: HttpClient) -> Self {
        Self { config, client }
    }

    /// Creem has no idempotency header; a retried create may make a second (unused) object.
    async fn post(&self, path: &str, body: Value) -> Result<Value, ProviderError> {
        let key = self
            .config
            .api_key
            .as_deref()
            .ok_or(ProviderError::NotConfigured(Channel::Creem))?;
        let call = ApiCall {
            provider: "creem",
            method: Method::POST,
            base: &self.config.api_base,
            path,
            headers: vec![("x-api-key", key.to_owned())],
            body: Body::Json(body),
            error_message,
        };
        self.client.send(&call).await.map_err(|e| match e {
            ProviderError::Upstream(m) => ProviderError::Upstream(m.replace(key, "[redacted]")),
            e => e,
        })
    }
}

/// Creem errors carry `message` as a list of strings (validation) or one string.
fn error_message(answer: &Value) -> Option<String> {
    match answer.get("message")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        _ => None,
    }
}

/// The `POST /v1/checkouts` body for `r`.
pub(crate) fn checkout_body(r: &CheckoutRequest) -> Value {
    let mut body = json!({
        "product_id": r.price_ref,
        "request_id": r.order_id,
        "units": 1,
        "success_url": r.success_url,
        "metadata": {
            "order_id": r.order_id,
            "app": r.app,
            "user_id": r.user,
            "credits": r.credits.to_string(),
        },
    });
    if let Value::Object(fields) = &mut body {
        if let Some(code) = &r.discount {
            fields.insert("discount_code".into(), json!(code));
        }
        if let Some(customer) = &r.customer_id {
            fields.insert("customer".into(), json!({ "id": customer }));
        }
    }
    body
}

/// The `POST /v1/discounts` body for `r`.
pub(crate) fn discount_body(r: &CouponRequest) -> Value {
    let mut fields = Map::new();
    fields.insert("name".into(), json!(r.code));
    fields.insert("code".into(), json!(r.code));
    if let Some(percent) = r.percent_off {
        fields.insert("type".into(), json!("percentage"));
        fields.insert("percentage".into(), json!(percent));
    } else {
        fields.insert("type".into(), json!("fixed"));
        fields.insert("amount".into(), json!(r.amount_off.unwrap_or(0)));
        if let Some(currency) = &r.currency {
            fields.insert("currency".into(), json!(currency.to_ascii_uppercase()));
        }
    }
    fields.insert("duration".into(), json!(r.duration.as_str()));
    if r.duration == CouponDuration::Repeating
        && let Some(months) = r.duration_months
    {
        fields.insert("duration_in_months".into(), json!(months));
    }
    fields.insert("applies_to_products".into(), json!([r.price_ref]));
    Value::Object(fields)
}

/// The path and body asking Creem for `r`'s change.
pub(crate) fn subscription_call(r: &SubscriptionRequest) -> (String, Value) {
    let id = &r.subscription_id;
    match r.change {
        SubscriptionChange::CancelAtPeriodEnd => (
            format!("/v1/subscriptions/{id}/cancel"),
            json!({ "mode": "scheduled" }),
        ),
        SubscriptionChange::CancelNow => (
            format!("/v1/subscriptions/{id}/cancel"),
            json!({ "mode": "immediate" }),
        ),
        SubscriptionChange::Resume => (format!("/v1/subscriptions/{id}/resume"), json!({})),
    }
}

/// The `POST /v1/refunds` body for `r`: the payment's transaction (`tran_…`).
pub(crate) fn refund_body(r: &RefundRequest) -> Result<Value, ProviderError> {
    let transaction = r
        .payment_refs
        .iter()
        .find(|id| id.starts_with("tran_"))
        .ok_or_else(|| {
            ProviderError::Unsupported(format!(
                "Creem refunds a transaction, and no event named one for this payment ({}); \
                 refund it in the Creem dashboard",
                r.payment_refs.join(", ")
            ))
        })?;
    Ok(json!({ "transaction_id": transaction }))
}

fn answer_str(answer: &Value, field: &str) -> Result<String, ProviderError> {
    str_at(answer, &[field])
        .ok_or_else(|| ProviderError::Upstream(format!("creem answered without `{field}`")))
}

#[async_trait]
impl PaymentProvider for CreemProvider {
    fn channel(&self) -> Channel {
        Channel::Creem
    }

    async fn create_checkout(
        &self,
        request: &CheckoutRequest,
    ) -> Result<CheckoutSession, ProviderError> {
        let answer = self.post("/v1/checkouts", checkout_body(request)).await?;
        Ok(CheckoutSession {
            session_id: answer_str(&answer, "id")?,
            url: answer_str(&answer, "checkout_url")?,
        })
    }

    async fn create_portal(&self, request: &PortalRequest) -> Result<String, ProviderError> {
        let body = json!({ "customer_id": request.customer_id });
        let answer = self.post("/v1/customers/billing", body).await?;
        answer_str(&answer, "customer_portal_link")
    }

    async fn create_coupon(&self, request: &CouponRequest) -> Result<String, ProviderError> {
        let answer = self.post("/v1/discounts", discount_body(request)).await?;
        Ok(str_at(&answer, &["code"]).unwrap_or_else(|| request.code.clone()))
    }

    /// `POST /v1/subscriptions/{id}/cancel` (`mode`: `scheduled` at the period end, `immediate`
    /// now) or `POST /v1/subscriptions/{id}/resume`.
    async fn change_subscription(
        &self,
        request: &SubscriptionRequest,
    ) -> Result<(), ProviderError> {
        let (path, body) = subscription_call(request);
        self.post(&path, body).await.map(drop)
    }

    /// `POST /v1/subscriptions/{id}/upgrade` with the new product and `update_behavior`
    /// `proration-charge-immediately` (an upgrade) or `proration-none` (from the next period).
    async fn change_plan(&self, request: &PlanChangeRequest) -> Result<(), ProviderError> {
        let path = format!("/v1/subscriptions/{}/upgrade", request.subscription_id);
        let behavior = if request.prorate {
            "proration-charge-immediately"
        } else {
            "proration-none"
        };
        let body = json!({ "product_id": request.price_ref, "update_behavior": behavior });
        self.post(&path, body).await.map(drop)
    }

    /// `POST /v1/refunds` with the payment's transaction id: Creem refunds what is left of a
    /// payment, in full.
    async fn refund(&self, request: &RefundRequest) -> Result<(), ProviderError> {
        self.post("/v1/refunds", refund_body(request)?)
            .await
            .map(drop)
    }

    fn parse_webhook(
        &self,
        headers: &WebhookHeaders,
        body: &[u8],
        _now: OffsetDateTime,
    ) -> Result<PaymentEvent, ProviderError> {
        let secret = self
            .config
            .webhook_secret
            .as_deref()
            .ok_or(ProviderError::NotConfigured(Channel::Creem))?;
        verify_hex_hmac(header(headers, "creem-signature"), secret, body)?;
        parse_event(body)
    }
}

fn required(object: &Value, field: &str, event_type: &str) -> Result<String, ProviderError> {
    str_at(object, &[field])
        .ok_or_else(|| malformed(format!("{event_type}: object has no `{field}`")))
}

/// Reads a verified Creem event (`{id, eventType, created_at (ms), object}`).
pub(crate) fn parse_event(body: &[u8]) -> Result<PaymentEvent, ProviderError> {
    let (event, id, event_type) = event_head(body, "eventType")?;
    let object = at(&event, &["object"]).unwrap_or(&Value::Null);
    let kind = event_kind(&event_type, object)?;
    Ok(PaymentEvent {
        channel: Channel::Creem,
        id,
        event_type,
        created_at: unix_ms_at(&event, &["created_at"]),
        kind,
    })
}

fn event_kind(event_type: &str, o: &Value) -> Result<EventKind, ProviderError> {
    Ok(match event_type {
        "checkout.completed" => EventKind::CheckoutCompleted {
            order_id: str_at(o, &["request_id"]).or_else(|| str_at(o, &["metadata", "order_id"])),
            session_id: required(o, "id", event_type)?,
            customer_id: id_at(o, &["customer"]),
            subscription_id: id_at(o, &["subscription"]),
            paid: str_at(o, &["order", "status"]).as_deref() == Some("paid")
                || str_at(o, &["status"]).as_deref() == Some("completed"),
            amount_paid_minor: i64_at(o, &["order", "amount"]),
            payment_refs: refs([id_at(o, &["order"]), id_at(o, &["order", "transaction"])]),
        },
        "subscription.paid" => {
            let transaction = str_at(o, &["last_transaction_id"]).ok_or_else(|| {
                malformed("subscription.paid: object has no `last_transaction_id`")
            })?;
            EventKind::PeriodPaid {
                payment_id: transaction.clone(),
                subscription_id: required(o, "id", event_type)?,
                customer_id: id_at(o, &["customer"]),
                order_id: str_at(o, &["metadata", "order_id"]),
                period_start: rfc3339_at(o, &["current_period_start_date"]),
                period_end: rfc3339_at(o, &["current_period_end_date"]),
                amount_paid_minor: i64_at(o, &["last_transaction", "amount"])
                    .or_else(|| i64_at(o, &["product", "price"]))
                    .unwrap_or(0),
                payment_refs: vec![transaction],
                plan_change: false,
            }
        }
        "subscription.active"
        | "subscription.trialing"
        | "subscription.canceled"
        | "subscription.scheduled_cancel"
        | "subscription.past_due"
        | "subscription.expired"
        | "subscription.paused"
        | "subscription.update"
        | "subscription.unpaid" => {
            // The event name is the status change; `update` carries it only in the object.
            let name = match event_type.strip_prefix("subscription.") {
                Some("update") => str_at(o, &["status"]).unwrap_or_default(),
                Some(name) => name.to_owned(),
                None => String::new(),
            };
            let (status, scheduled_cancel) = subscription_status(&name);
            let cancel_at_period_end = if scheduled_cancel {
                Some(true)
            } else if matches!(event_type, "subscription.active" | "subscription.update") {
                bool_at(o, &["cancel_at_period_end"])
            } else {
                None
            };
            EventKind::SubscriptionChanged {
                subscription_id: required(o, "id", event_type)?,
                customer_id: id_at(o, &["customer"]),
                order_id: str_at(o, &["metadata", "order_id"]),
                status,
                cancel_at_period_end,
                period_start: rfc3339_at(o, &["current_period_start_date"]),
                period_end: rfc3339_at(o, &["current_period_end_date"]),
                price_ref: id_at(o, &["product"])
                    .or_else(|| str_at(o, &["items", "0", "product_id"])),
            }
        }
        "refund.created" => EventKind::Refunded {
            refund_key: required(o, "id", event_type)?,
            payment_refs: refs([
                id_at(o, &["transaction"]),
                id_at(o, &["order"]),
                id_at(o, &["checkout"]),
            ]),
            amount: i64_at(o, &["refund_amount"])
                .map_or(RefundReport::Full, RefundReport::PerRefund),
        },
        "dispute.created" => EventKind::Disputed {
            dispute_id: required(o, "id", event_type)?,
            payment_refs: refs([
                id_at(o, &["transaction"]),
                id_at(o, &["order"]),
                id_at(o, &["checkout"]),
            ]),
            amount_minor: i64_at(o, &["amount"]).unwrap_or(0),
        },
        _ => EventKind::Ignored,
    })
}

/// Creem's subscription status in Tally's terms, and whether it is a scheduled cancellation.
fn subscription_status(status: &str) -> (Option<SubscriptionStatus>, bool) {
    match status {
        "active" => (Some(SubscriptionStatus::Active), false),
        "trialing" => (Some(SubscriptionStatus::Trialing), false),
        "canceled" => (Some(SubscriptionStatus::Canceled), false),
        // Still active until the period ends, and can be resumed.
        "scheduled_cancel" => (Some(SubscriptionStatus::Active), true),
        "past_due" | "unpaid" => (Some(SubscriptionStatus::PastDue), false),
        // Not terminal at Creem: a later payment can bring it back.
        "expired" => (Some(SubscriptionStatus::Expired), false),
        // `paused` and unknown values have no Tally meaning.
        _ => (None, false),
    }
}
