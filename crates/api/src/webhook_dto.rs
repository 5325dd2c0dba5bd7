//! Wire shapes of outbound webhook administration: endpoints, deliveries and settings.

use serde::{Deserialize, Serialize};
use tally_webhooks::{Attempt, CreateEndpoint, Delivery, Endpoint, EventType, UpdateEndpoint};
use utoipa::{IntoParams, ToSchema};

use crate::dto::{given, rfc3339};

/// A webhook endpoint. Its signing secret is shown only when it is created or rotated.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpointDto {
    /// `we_` + 24 hex digits.
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Free text for the operator.
    pub description: String,
    /// Event type names it subscribes to, e.g. `credits.granted`.
    pub event_types: Vec<String>,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Why Tally disabled it, when it did (it kept failing).
    pub disabled_reason: Option<String>,
    /// RFC 3339: since when every attempt has failed; null after a success.
    pub failing_since: Option<String>,
    /// RFC 3339: until when the previous secret also signs, after a rotation.
    pub previous_secret_expires_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<Endpoint> for WebhookEndpointDto {
    fn from(e: Endpoint) -> Self {
        Self {
            id: e.id,
            url: e.url,
            description: e.description,
            event_types: e
                .event_types
                .into_iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since.map(rfc3339),
            previous_secret_expires_at: e.previous_secret_expires_at.map(rfc3339),
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
        }
    }
}

/// A new endpoint with its signing secret, which is not shown again.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpointWithSecretDto {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: WebhookEndpointDto,
    /// `whsec_…`: the Standard Webhooks signing secret.
    pub secret: String,
}

/// A changed endpoint; `secret` only when it was rotated.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpdatedWebhookEndpointDto {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: WebhookEndpointDto,
    /// `whsec_…`: the new signing secret, present only after `rotate_secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A list of event type names: at least one, each a known type.
fn event_type_names() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(EventType::ALL.iter().map(|t| t.as_str()))),
        )
        .min_items(Some(1))
        .build()
}

/// `POST /admin/webhooks/endpoints`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookEndpointRequest {
    /// `http(s)://…`, at most 2048 bytes, no credentials; must reach a public address unless
    /// private URLs are allowed.
    #[schema(
        min_length = 8,
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://"
    )]
    pub url: String,
    /// Event type names (at least one); absent = every type except `credits.spent`.
    #[schema(schema_with = event_type_names)]
    pub event_types: Option<Vec<String>>,
    /// Up to 500 characters; default empty.
    #[schema(max_length = 500, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub description: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

impl From<CreateWebhookEndpointRequest> for CreateEndpoint {
    fn from(r: CreateWebhookEndpointRequest) -> Self {
        Self {
            url: r.url,
            event_types: r.event_types,
            description: r.description,
            enabled: r.enabled,
        }
    }
}

/// `PUT /admin/webhooks/endpoints/{id}`: fields given replace, fields omitted stay (`null` is
/// refused).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookEndpointRequest {
    /// A new URL, checked like on creation.
    #[serde(default, deserialize_with = "given")]
    #[schema(
        value_type = String,
        required = false,
        min_length = 8,
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://"
    )]
    pub url: Option<String>,
    /// The whole new list of event type names (at least one).
    #[serde(default, deserialize_with = "given")]
    #[schema(schema_with = event_type_names, required = false)]
    pub event_types: Option<Vec<String>>,
    /// A new description.
    #[serde(default, deserialize_with = "given")]
    #[schema(
        value_type = String,
        required = false,
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub description: Option<String>,
    /// Enable or disable; enabling clears `disabled_reason` and `failing_since`.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = bool, required = false)]
    pub enabled: Option<bool>,
    /// Generate a new secret; the current one keeps signing for 24 hours. Default false.
    #[serde(default)]
    pub rotate_secret: bool,
}

impl From<UpdateWebhookEndpointRequest> for UpdateEndpoint {
    fn from(r: UpdateWebhookEndpointRequest) -> Self {
        Self {
            url: r.url,
            event_types: r.event_types,
            description: r.description,
            enabled: r.enabled,
            rotate_secret: r.rotate_secret,
        }
    }
}

/// What a delete did.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedDto {
    /// Always true.
    pub deleted: bool,
}

/// One event sent to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryDto {
    /// Delivery id.
    pub id: String,
    /// `evt_…`, also the `webhook-id` header (the same on every attempt).
    pub event_id: String,
    /// The event's type, e.g. `credits.granted`.
    pub event_type: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// RFC 3339: when the next attempt is due (pending only).
    pub next_attempt_at: Option<String>,
    /// HTTP status of the last answer.
    pub last_status: Option<u16>,
    /// Why the last attempt failed without an answer.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<Delivery> for WebhookDeliveryDto {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id.to_string(),
            event_id: d.event_id,
            event_type: d.event_type,
            endpoint_id: d.endpoint_id,
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.map(rfc3339),
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: rfc3339(d.created_at),
            updated_at: rfc3339(d.updated_at),
        }
    }
}

/// One attempt to deliver.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAttemptDto {
    /// RFC 3339.
    pub attempted_at: String,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// How long the attempt took.
    pub latency_ms: i64,
    /// The first bytes of the receiver's answer.
    pub response_excerpt: Option<String>,
    /// Why it failed without an answer (timeout, connection refused, refused address, …).
    pub error: Option<String>,
    /// Whether the receiver took it (2xx).
    pub succeeded: bool,
}

impl From<Attempt> for WebhookAttemptDto {
    fn from(a: Attempt) -> Self {
        Self {
            attempted_at: rfc3339(a.attempted_at),
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            response_excerpt: a.response_excerpt,
            error: a.error,
            succeeded: a.succeeded,
        }
    }
}

/// A delivery with every attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryDetailDto {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: WebhookDeliveryDto,
    /// Every attempt, oldest first.
    pub attempts_log: Vec<WebhookAttemptDto>,
}

impl From<Delivery> for WebhookDeliveryDetailDto {
    fn from(mut d: Delivery) -> Self {
        let attempts_log = std::mem::take(&mut d.attempt_log)
            .into_iter()
            .map(Into::into)
            .collect();
        Self {
            delivery: d.into(),
            attempts_log,
        }
    }
}

/// Filters of `GET /admin/webhooks/deliveries`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WebhookDeliveryQuery {
    /// Only this endpoint's.
    pub endpoint_id: Option<String>,
    /// Only this event's.
    pub event_id: Option<String>,
    /// `pending`, `succeeded` or `failed`.
    pub status: Option<String>,
    /// Only this event type, e.g. `credits.granted`.
    pub event_type: Option<String>,
    /// Keyset cursor: a delivery id (`meta.next_before` of the previous page); the page holds
    /// the deliveries older than it.
    pub before: Option<String>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// The app's webhook settings (`GET`/`PUT /admin/webhooks/settings`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettingsDto {
    /// `credits.low` fires when a balance falls below this many credits (0–10¹²); null = never.
    /// Required in `PUT`; `null` clears it.
    #[serde(deserialize_with = "nullable")]
    #[schema(required = true)]
    pub low_balance_threshold: Option<i64>,
}

/// Reads a field that must be present but may be `null`.
fn nullable<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;
    use tally_webhooks::{DeliveryStatus, EventType};
    use time::macros::datetime;

    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint {
            id: "we_0123456789abcdef01234567".into(),
            app: "default".into(),
            url: "https://hooks.example/tally".into(),
            description: "billing sync".into(),
            event_types: vec![EventType::CreditsGranted, EventType::OrderCompleted],
            enabled: true,
            disabled_reason: None,
            failing_since: None,
            previous_secret_expires_at: Some(datetime!(2026-11-27 12:00:00 UTC)),
            created_at: datetime!(2026-11-26 12:00:00 UTC),
            updated_at: datetime!(2026-11-26 12:00:00 UTC),
        }
    }

    #[test]
    fn endpoint_shape() {
        let v = serde_json::to_value(WebhookEndpointWithSecretDto {
            endpoint: endpoint().into(),
            secret: "whsec_abc".into(),
        })
        .unwrap();
        assert_eq!(
            v,
            json!({
                "id": "we_0123456789abcdef01234567",
                "url": "https://hooks.example/tally",
                "description": "billing sync",
                "event_types": ["credits.granted", "order.completed"],
                "enabled": true,
                "disabled_reason": null,
                "failing_since": null,
                "previous_secret_expires_at": "2026-11-27T12:00:00Z",
                "created_at": "2026-11-26T12:00:00Z",
                "updated_at": "2026-11-26T12:00:00Z",
                "secret": "whsec_abc",
            })
        );
        let updated = serde_json::to_value(UpdatedWebhookEndpointDto {
            endpoint: endpoint().into(),
            secret: None,
        })
        .unwrap();
        assert!(updated.get("secret").is_none());
    }

    #[test]
    fn delivery_shape() {
        let attempt = Attempt {
            attempted_at: datetime!(2026-11-26 12:00:01 UTC),
            status_code: Some(500),
            latency_ms: 87,
            response_excerpt: Some("oops".into()),
            error: None,
            succeeded: false,
        };
        let delivery = Delivery {
            id: 42,
            event_id: "evt_0123456789abcdef01234567".into(),
            event_type: "credits.granted".into(),
            endpoint_id: "we_0123456789abcdef01234567".into(),
            app: "default".into(),
            status: DeliveryStatus::Pending,
            attempts: 1,
            next_attempt_at: Some(datetime!(2026-11-26 12:00:06 UTC)),
            last_status: Some(500),
            last_error: None,
            created_at: datetime!(2026-11-26 12:00:00 UTC),
            updated_at: datetime!(2026-11-26 12:00:01 UTC),
            attempt_log: vec![attempt],
        };
        let v = serde_json::to_value(WebhookDeliveryDetailDto::from(delivery)).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "42",
                "event_id": "evt_0123456789abcdef01234567",
                "event_type": "credits.granted",
                "endpoint_id": "we_0123456789abcdef01234567",
                "status": "pending",
                "attempts": 1,
                "next_attempt_at": "2026-11-26T12:00:06Z",
                "last_status": 500,
                "last_error": null,
                "created_at": "2026-11-26T12:00:00Z",
                "updated_at": "2026-11-26T12:00:01Z",
                "attempts_log": [{
                    "attempted_at": "2026-11-26T12:00:01Z",
                    "status_code": 500,
                    "latency_ms": 87,
                    "response_excerpt": "oops",
                    "error": null,
                    "succeeded": false,
                }],
            })
        );
    }

    #[test]
    fn settings_threshold_is_required_and_nullable() {
        let set: WebhookSettingsDto =
            serde_json::from_value(json!({"low_balance_threshold": 100})).unwrap();
        assert_eq!(set.low_balance_threshold, Some(100));
        let cleared: WebhookSettingsDto =
            serde_json::from_value(json!({"low_balance_threshold": null})).unwrap();
        assert_eq!(cleared.low_balance_threshold, None);
        assert!(serde_json::from_value::<WebhookSettingsDto>(json!({})).is_err());
        assert!(
            serde_json::from_value::<WebhookSettingsDto>(
                json!({"low_balance_threshold": 1, "other": 2})
            )
            .is_err()
        );
    }

    #[test]
    fn update_keeps_omitted_fields_and_refuses_null() {
        let empty: UpdateWebhookEndpointRequest = serde_json::from_value(json!({})).unwrap();
        assert!(empty.url.is_none() && empty.enabled.is_none() && !empty.rotate_secret);
        let rotate: UpdateWebhookEndpointRequest =
            serde_json::from_value(json!({"rotate_secret": true, "enabled": false})).unwrap();
        assert!(rotate.rotate_secret);
        assert_eq!(rotate.enabled, Some(false));
        assert!(
            serde_json::from_value::<UpdateWebhookEndpointRequest>(json!({"url": null})).is_err()
        );
        assert!(
            serde_json::from_value::<UpdateWebhookEndpointRequest>(json!({"secret": "x"})).is_err()
        );
    }

    #[test]
    fn create_refuses_unknown_fields_and_needs_url() {
        let ok: CreateWebhookEndpointRequest =
            serde_json::from_value(json!({"url": "https://hooks.example"})).unwrap();
        assert!(ok.event_types.is_none() && ok.enabled.is_none());
        assert!(serde_json::from_value::<CreateWebhookEndpointRequest>(json!({})).is_err());
        assert!(
            serde_json::from_value::<CreateWebhookEndpointRequest>(
                json!({"url": "https://hooks.example", "secret": "whsec_x"})
            )
            .is_err()
        );
    }
}
