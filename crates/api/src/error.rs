//! The JSON envelope and the one error type every handler returns.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{Value, json};
use tally_catalog::CatalogError;
use tally_checkout::CheckoutError;
use tally_ledger::LedgerError;
use tally_webhooks::{RepoError, WebhookError};

use crate::telemetry::current_request_id;

/// An error as clients see it: status, stable code, message and optional details.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable SCREAMING_SNAKE code clients branch on.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// Extra structured detail (e.g. the offending field).
    pub details: Option<Value>,
    /// Adds `WWW-Authenticate: Bearer`.
    pub www_authenticate: bool,
    /// Adds `Retry-After` (seconds).
    pub retry_after: Option<i64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            www_authenticate: false,
            retry_after: None,
        }
    }

    /// Attaches details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 401 UNAUTHORIZED.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message);
        e.www_authenticate = true;
        e
    }

    /// 403 FORBIDDEN.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    /// 404 NOT_FOUND.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// 400 VALIDATION_ERROR naming a field.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            format!("{field}: {message}"),
        )
        .with_details(json!({ "fields": [{ "field": field, "message": message }] }))
    }

    /// 500 INTERNAL; the body repeats the request id so operators can find the log line.
    pub fn internal() -> Self {
        let id = current_request_id().unwrap_or_default();
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("internal error; request id {id}"),
        )
        .with_details(json!({ "request_id": id }))
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    success: bool,
    error: ErrorInner<'a>,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Value>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status);
        if self.www_authenticate {
            builder.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            builder.insert_header(("Retry-After", seconds.to_string()));
        }
        builder.json(ErrorBody {
            success: false,
            error: ErrorInner {
                code: self.code,
                message: &self.message,
                details: self.details.as_ref(),
            },
        })
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Validation { field, message } => Self::validation(field, message),
            LedgerError::InsufficientCredits {
                requested,
                available,
            } => Self::new(
                StatusCode::PAYMENT_REQUIRED,
                "INSUFFICIENT_CREDITS",
                format!("{requested} credits requested, {available} available"),
            )
            .with_details(json!({ "requested": requested, "available": available })),
            LedgerError::IdempotencyKeyReused => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                "this idempotency key was already used with a different request",
            ),
            LedgerError::AlreadyCheckedIn { day } => Self::new(
                StatusCode::CONFLICT,
                "ALREADY_CHECKED_IN",
                format!("already checked in on {day}"),
            )
            .with_details(json!({ "day": day })),
            LedgerError::CheckinDisabled => Self::new(
                StatusCode::CONFLICT,
                "CHECKIN_DISABLED",
                "check-in is disabled for this app",
            ),
            LedgerError::HoldNotFound => Self::not_found("no such hold"),
            LedgerError::HoldNotActive { status } => Self::new(
                StatusCode::CONFLICT,
                "HOLD_NOT_ACTIVE",
                format!("the hold is already {status}"),
            )
            .with_details(json!({ "status": status })),
            LedgerError::HoldExpired => Self::new(
                StatusCode::CONFLICT,
                "HOLD_EXPIRED",
                "the hold expired; its credits were returned",
            ),
            LedgerError::CodeNotFound => Self::new(
                StatusCode::NOT_FOUND,
                "CODE_NOT_FOUND",
                "no such redemption code",
            ),
            LedgerError::CodeExpired => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "CODE_EXPIRED",
                "this redemption code has expired",
            ),
            LedgerError::CodeExhausted => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "CODE_EXHAUSTED",
                "this redemption code has no uses left",
            ),
            LedgerError::CodeAlreadyRedeemed => Self::new(
                StatusCode::CONFLICT,
                "CODE_ALREADY_REDEEMED",
                "you already redeemed this code",
            ),
            LedgerError::RateLimited {
                retry_after_seconds,
            } => {
                let mut e = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RATE_LIMITED",
                    format!("too many failed attempts; retry in {retry_after_seconds} s"),
                )
                .with_details(json!({ "retry_after_seconds": retry_after_seconds }));
                e.retry_after = Some(retry_after_seconds);
                e
            }
            LedgerError::Overflow => {
                Self::validation("amount", "the resulting balance is out of range")
            }
            LedgerError::Storage(source) => {
                tracing::error!(error = %tally_ledger::error::error_chain(&*source), "storage failure");
                Self::internal()
            }
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Validation(fields) => {
                let message = fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                let fields: Vec<Value> = fields
                    .into_iter()
                    .map(|f| json!({ "field": f.field, "message": f.message }))
                    .collect();
                Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
                    .with_details(json!({ "fields": fields }))
            }
            CatalogError::Conflict(message) => Self::new(StatusCode::CONFLICT, "CONFLICT", message),
            CatalogError::PlanNotFound => Self::not_found("no such plan"),
            CatalogError::CouponNotFound => Self::not_found("no such coupon"),
            CatalogError::Storage(source) => {
                tracing::error!(error = %tally_ledger::error::error_chain(&*source), "storage failure");
                Self::internal()
            }
        }
    }
}

impl From<CheckoutError> for ApiError {
    fn from(e: CheckoutError) -> Self {
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        match e {
            CheckoutError::Validation(fields) => CatalogError::Validation(fields).into(),
            CheckoutError::PlanNotFound => Self::not_found("no such plan"),
            CheckoutError::PlanNotPurchasable(m) => {
                Self::new(unprocessable, "PLAN_NOT_PURCHASABLE", m)
            }
            CheckoutError::CouponInvalid(m) => Self::new(unprocessable, "COUPON_INVALID", m),
            CheckoutError::ProviderNotConfigured(channel) => Self::new(
                unprocessable,
                "PROVIDER_NOT_CONFIGURED",
                format!("the {channel} channel is not configured"),
            ),
            CheckoutError::Provider(m) => Self::new(
                StatusCode::BAD_GATEWAY,
                "PROVIDER_ERROR",
                format!("the payment provider failed: {m}"),
            ),
            CheckoutError::InvalidSignature(m) => {
                Self::new(StatusCode::BAD_REQUEST, "INVALID_SIGNATURE", m)
            }
            CheckoutError::OrderNotFound => Self::not_found("no such order"),
            CheckoutError::NoCustomer(m) => {
                Self::new(StatusCode::NOT_FOUND, "NO_BILLING_CUSTOMER", m)
            }
            CheckoutError::IdempotencyKeyReused => LedgerError::IdempotencyKeyReused.into(),
            CheckoutError::IdempotencyInProgress => Self::new(
                StatusCode::CONFLICT,
                "IDEMPOTENCY_IN_PROGRESS",
                "a request with this idempotency key is still running",
            ),
            CheckoutError::Storage(source) => {
                tracing::error!(error = %tally_ledger::error::error_chain(&*source), "storage failure");
                Self::internal()
            }
        }
    }
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Validation(message) => {
                let field = webhook_field(&message);
                Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message.clone())
                    .with_details(json!({ "fields": [{ "field": field, "message": message }] }))
            }
            WebhookError::InvalidUrl(e) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_WEBHOOK_URL",
                e.to_string(),
            ),
            WebhookError::NotFound => Self::not_found("no such webhook endpoint or delivery"),
            WebhookError::Storage(RepoError::Storage(source)) => {
                tracing::error!(error = %tally_ledger::error::error_chain(&*source), "storage failure");
                Self::internal()
            }
        }
    }
}

/// The request field a webhook validation message is about: the domain names the field at the
/// start of its messages, except for an unknown event type name.
fn webhook_field(message: &str) -> &'static str {
    ["event_types", "description", "low_balance_threshold", "url"]
        .into_iter()
        .find(|field| message.starts_with(field))
        .or_else(|| {
            message
                .starts_with("unknown event type")
                .then_some("event_types")
        })
        .unwrap_or("body")
}

#[derive(Serialize)]
struct Envelope<T> {
    success: bool,
    data: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<PageMeta>,
}

#[derive(Serialize)]
struct PageMeta {
    limit: i64,
    offset: i64,
    has_more: bool,
    /// Only on keyset-paged lists (where it is written even when null).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    cursor: Option<Cursor>,
}

#[derive(Serialize)]
struct Cursor {
    next_before: Option<String>,
}

/// `{"success": true, "data": …}`.
pub fn ok<T: Serialize>(data: T) -> HttpResponse {
    HttpResponse::Ok().json(Envelope {
        success: true,
        data,
        meta: None,
    })
}

/// `201 Created` with `{"success": true, "data": …}`.
pub fn created<T: Serialize>(data: T) -> HttpResponse {
    HttpResponse::Created().json(Envelope {
        success: true,
        data,
        meta: None,
    })
}

/// `{"success": true, "data": […], "meta": {limit, offset, has_more}}`.
pub fn ok_page<T: Serialize>(
    data: Vec<T>,
    limit: i64,
    offset: i64,
    has_more: bool,
) -> HttpResponse {
    HttpResponse::Ok().json(Envelope {
        success: true,
        data,
        meta: Some(PageMeta {
            limit,
            offset,
            has_more,
            cursor: None,
        }),
    })
}

/// [`ok_page`] for a list that can also be paged by cursor: `meta` adds `next_before`, the
/// `before` value of the next page (`None`, written as null, when there is none).
pub fn ok_cursor_page<T: Serialize>(
    data: Vec<T>,
    limit: i64,
    offset: i64,
    has_more: bool,
    next_before: Option<String>,
) -> HttpResponse {
    HttpResponse::Ok().json(Envelope {
        success: true,
        data,
        meta: Some(PageMeta {
            limit,
            offset,
            has_more,
            cursor: Some(Cursor { next_before }),
        }),
    })
}

#[cfg(test)]
mod tests {
    use tally_webhooks::UrlError;

    use super::*;

    #[test]
    fn webhook_errors_map_to_codes() {
        let e = ApiError::from(WebhookError::InvalidUrl(UrlError::UnsupportedScheme));
        assert_eq!(
            (e.status, e.code, e.message.as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_WEBHOOK_URL",
                "URL scheme must be http or https"
            )
        );
        let e = ApiError::from(WebhookError::NotFound);
        assert_eq!((e.status, e.code), (StatusCode::NOT_FOUND, "NOT_FOUND"));
        let e = ApiError::from(WebhookError::Validation("unknown event type `x.y`".into()));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
        );
        assert_eq!(
            e.details,
            Some(
                json!({"fields": [{"field": "event_types", "message": "unknown event type `x.y`"}]})
            )
        );
        let e = ApiError::from(WebhookError::Validation(
            "low_balance_threshold must be between 0 and 10^12".into(),
        ));
        assert_eq!(
            e.details.as_ref().map(|d| d["fields"][0]["field"].clone()),
            Some(json!("low_balance_threshold"))
        );
    }
}
