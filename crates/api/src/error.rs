//! The JSON envelope and the one error type every handler returns.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{Value, json};
use tally_catalog::CatalogError;
use tally_checkout::CheckoutError;
use tally_kernel::FieldError;
use tally_ledger::LedgerError;
use tally_webhooks::{RepoError, WebhookError};

use crate::telemetry::current_request_id;

/// Declares [`ErrorCode`]: each variant with its wire name and HTTP status, in one table.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $status:ident;)*) => {
        /// Every error code the API answers, with the HTTP status it goes with: the one place
        /// both are decided.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The stable SCREAMING_SNAKE name clients branch on.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }

            /// The HTTP status an error with this code answers.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }
        }
    };
}

error_codes! {
    /// A request field, parameter or body is malformed or out of range.
    ValidationError = "VALIDATION_ERROR", BAD_REQUEST;
    /// No credentials, or credentials that do not verify.
    Unauthorized = "UNAUTHORIZED", UNAUTHORIZED;
    /// The credentials are valid but not allowed to do this.
    Forbidden = "FORBIDDEN", FORBIDDEN;
    /// The credentials name an app that is not registered (`TALLY_APPS`, `POST /admin/apps`).
    UnknownApp = "UNKNOWN_APP", FORBIDDEN;
    /// No such route or object.
    NotFound = "NOT_FOUND", NOT_FOUND;
    /// The route exists with other methods.
    MethodNotAllowed = "METHOD_NOT_ALLOWED", METHOD_NOT_ALLOWED;
    /// The body is larger than the route accepts.
    PayloadTooLarge = "PAYLOAD_TOO_LARGE", PAYLOAD_TOO_LARGE;
    /// The change conflicts with what is stored (a duplicate, an object in use).
    Conflict = "CONFLICT", CONFLICT;
    /// The account cannot cover the amount.
    InsufficientCredits = "INSUFFICIENT_CREDITS", PAYMENT_REQUIRED;
    /// The idempotency key was used with a different request.
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED", UNPROCESSABLE_ENTITY;
    /// A request with this idempotency key is still running.
    IdempotencyInProgress = "IDEMPOTENCY_IN_PROGRESS", CONFLICT;
    /// The user checked in today already.
    AlreadyCheckedIn = "ALREADY_CHECKED_IN", CONFLICT;
    /// Check-in is switched off for the app.
    CheckinDisabled = "CHECKIN_DISABLED", CONFLICT;
    /// The user already has a live subscription; change or cancel it instead of buying another.
    AlreadySubscribed = "ALREADY_SUBSCRIBED", CONFLICT;
    /// No live (active, trialing or past due) subscription to cancel or resume.
    NoActiveSubscription = "NO_ACTIVE_SUBSCRIPTION", NOT_FOUND;
    /// The order cannot be refunded: unpaid, not yet reported paid, or refunded in full.
    NotRefundable = "NOT_REFUNDABLE", CONFLICT;
    /// The hold was captured, released or expired already.
    HoldNotActive = "HOLD_NOT_ACTIVE", CONFLICT;
    /// The hold's time ran out.
    HoldExpired = "HOLD_EXPIRED", CONFLICT;
    /// No such redemption code.
    CodeNotFound = "CODE_NOT_FOUND", NOT_FOUND;
    /// The redemption code has expired.
    CodeExpired = "CODE_EXPIRED", UNPROCESSABLE_ENTITY;
    /// The redemption code has no uses left.
    CodeExhausted = "CODE_EXHAUSTED", UNPROCESSABLE_ENTITY;
    /// The user redeemed this code before.
    CodeAlreadyRedeemed = "CODE_ALREADY_REDEEMED", CONFLICT;
    /// Too many failed attempts; retry later.
    RateLimited = "RATE_LIMITED", TOO_MANY_REQUESTS;
    /// The plan's (or the free tier's) allowance of a feature does not cover the usage.
    EntitlementExceeded = "ENTITLEMENT_EXCEEDED", PAYMENT_REQUIRED;
    /// No rate prices the metered feature for the call's dimensions.
    RateNotFound = "RATE_NOT_FOUND", UNPROCESSABLE_ENTITY;
    /// The plan cannot be bought this way.
    PlanNotPurchasable = "PLAN_NOT_PURCHASABLE", UNPROCESSABLE_ENTITY;
    /// The coupon cannot be applied.
    CouponInvalid = "COUPON_INVALID", UNPROCESSABLE_ENTITY;
    /// The payment channel is not configured.
    ProviderNotConfigured = "PROVIDER_NOT_CONFIGURED", UNPROCESSABLE_ENTITY;
    /// The payment provider failed.
    ProviderError = "PROVIDER_ERROR", BAD_GATEWAY;
    /// A provider webhook's signature does not verify.
    InvalidSignature = "INVALID_SIGNATURE", BAD_REQUEST;
    /// The user has no customer at the provider yet.
    NoBillingCustomer = "NO_BILLING_CUSTOMER", NOT_FOUND;
    /// A webhook endpoint URL is not allowed.
    InvalidWebhookUrl = "INVALID_WEBHOOK_URL", UNPROCESSABLE_ENTITY;
    /// The server cannot serve now (the database is unreachable).
    Unavailable = "UNAVAILABLE", SERVICE_UNAVAILABLE;
    /// The request is not valid HTTP/1.1; the connection is closed.
    MalformedRequest = "MALFORMED_REQUEST", BAD_REQUEST;
    /// The request line and headers are larger than the server reads; the connection is closed.
    HeadersTooLarge = "HEADERS_TOO_LARGE", REQUEST_HEADER_FIELDS_TOO_LARGE;
    /// The request line and headers did not arrive in time; the connection is closed.
    RequestTimeout = "REQUEST_TIMEOUT", REQUEST_TIMEOUT;
    /// Something failed inside the server; the log has the request id.
    Internal = "INTERNAL", INTERNAL_SERVER_ERROR;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An error as clients see it: status, stable code, message and optional details.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status: the code's, except for HTTP-level errors answered with their own.
    pub status: StatusCode,
    /// Stable code clients branch on.
    pub code: ErrorCode,
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
    /// A new error with the code's status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.status(),
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
        let mut e = Self::new(ErrorCode::Unauthorized, message);
        e.www_authenticate = true;
        e
    }

    /// 403 FORBIDDEN.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// 403 UNKNOWN_APP: the credentials name an app that is not registered.
    pub fn unknown_app(app: &str) -> Self {
        Self::new(
            ErrorCode::UnknownApp,
            format!(
                "app '{app}' is not registered: register it with TALLY_APPS or POST /admin/apps"
            ),
        )
    }

    /// 404 NOT_FOUND.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 400 VALIDATION_ERROR naming a field.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::fields(vec![FieldError::new(field, message)])
    }

    /// 400 `VALIDATION_ERROR` naming every refused field: `message` lists them all
    /// (`field: message; …`), `details.fields` has one `{field, message}` each.
    pub fn fields(fields: Vec<FieldError>) -> Self {
        let message = fields
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let fields: Vec<Value> = fields
            .into_iter()
            .map(|f| json!({ "field": f.field, "message": f.message }))
            .collect();
        Self::new(ErrorCode::ValidationError, message).with_details(json!({ "fields": fields }))
    }

    /// 500 INTERNAL; the body repeats the request id so operators can find the log line.
    pub fn internal() -> Self {
        let id = current_request_id().unwrap_or_default();
        Self::new(
            ErrorCode::Internal,
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
        let mut response = builder.json(ErrorBody {
            success: false,
            error: ErrorInner {
                code: self.code.as_str(),
                message: &self.message,
                details: self.details.as_ref(),
            },
        });
        // For the access log line and the refusals series (`telemetry::observe`).
        response.extensions_mut().insert(self.code);
        response
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Validation(fields) => Self::fields(fields),
            LedgerError::InsufficientCredits {
                requested,
                available,
            } => Self::new(
                ErrorCode::InsufficientCredits,
                format!("{requested} credits requested, {available} available"),
            )
            .with_details(json!({ "requested": requested, "available": available })),
            LedgerError::IdempotencyKeyReused => Self::new(
                ErrorCode::IdempotencyKeyReused,
                "this idempotency key was already used with a different request",
            ),
            LedgerError::AlreadyCheckedIn { day } => Self::new(
                ErrorCode::AlreadyCheckedIn,
                format!("already checked in on {day}"),
            )
            .with_details(json!({ "day": day })),
            LedgerError::CheckinDisabled => Self::new(
                ErrorCode::CheckinDisabled,
                "check-in is disabled for this app",
            ),
            LedgerError::HoldNotFound => Self::not_found("no such hold"),
            LedgerError::HoldNotActive { status } => Self::new(
                ErrorCode::HoldNotActive,
                format!("the hold is already {status}"),
            )
            .with_details(json!({ "status": status })),
            LedgerError::HoldExpired => Self::new(
                ErrorCode::HoldExpired,
                "the hold expired; its credits were returned",
            ),
            LedgerError::CodeNotFound => {
                Self::new(ErrorCode::CodeNotFound, "no such redemption code")
            }
            LedgerError::CodeExpired => {
                Self::new(ErrorCode::CodeExpired, "this redemption code has expired")
            }
            LedgerError::CodeExhausted => Self::new(
                ErrorCode::CodeExhausted,
                "this redemption code has no uses left",
            ),
            LedgerError::CodeAlreadyRedeemed => Self::new(
                ErrorCode::CodeAlreadyRedeemed,
                "you already redeemed this code",
            ),
            LedgerError::RateLimited {
                retry_after_seconds,
            } => {
                let mut e = Self::new(
                    ErrorCode::RateLimited,
                    format!("too many failed attempts; retry in {retry_after_seconds} s"),
                )
                .with_details(json!({ "retry_after_seconds": retry_after_seconds }));
                e.retry_after = Some(retry_after_seconds);
                e
            }
            LedgerError::EntitlementExceeded { feature } => Self::new(
                ErrorCode::EntitlementExceeded,
                format!("the allowance of '{feature}' is used up for this window"),
            )
            .with_details(json!({ "feature": feature })),
            LedgerError::RateNotFound { feature } => Self::new(
                ErrorCode::RateNotFound,
                format!("no rate prices '{feature}' for these dimensions; nothing was charged"),
            )
            .with_details(json!({ "feature": feature })),
            LedgerError::Conflict(message) => Self::new(ErrorCode::Conflict, message),
            LedgerError::Overflow => {
                Self::validation("amount", "the resulting balance is out of range")
            }
            LedgerError::Storage(_) => Self::internal(),
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Validation(fields) => Self::fields(fields),
            CatalogError::Conflict(message) => Self::new(ErrorCode::Conflict, message),
            CatalogError::PlanNotFound => Self::not_found("no such plan"),
            CatalogError::CouponNotFound => Self::not_found("no such coupon"),
            CatalogError::AppNotFound => Self::not_found("no such app"),
            CatalogError::ServiceKeyNotFound => Self::not_found("no such service key"),
            CatalogError::Storage(_) => Self::internal(),
        }
    }
}

impl From<CheckoutError> for ApiError {
    fn from(e: CheckoutError) -> Self {
        match e {
            CheckoutError::Validation(fields) => CatalogError::Validation(fields).into(),
            CheckoutError::PlanNotFound => Self::not_found("no such plan"),
            CheckoutError::PlanNotPurchasable(m) => Self::new(ErrorCode::PlanNotPurchasable, m),
            CheckoutError::CouponInvalid(m) => Self::new(ErrorCode::CouponInvalid, m),
            CheckoutError::ProviderNotConfigured(channel) => Self::new(
                ErrorCode::ProviderNotConfigured,
                format!("the {channel} channel is not configured"),
            ),
            CheckoutError::Provider(m) => Self::new(
                ErrorCode::ProviderError,
                format!("the payment provider failed: {m}"),
            ),
            CheckoutError::InvalidSignature(m) => Self::new(ErrorCode::InvalidSignature, m),
            CheckoutError::OrderNotFound => Self::not_found("no such order"),
            CheckoutError::NoCustomer(m) => Self::new(ErrorCode::NoBillingCustomer, m),
            CheckoutError::AlreadySubscribed(m) => Self::new(ErrorCode::AlreadySubscribed, m),
            CheckoutError::NoActiveSubscription(m) => Self::new(ErrorCode::NoActiveSubscription, m),
            CheckoutError::NotRefundable(m) => Self::new(ErrorCode::NotRefundable, m),
            CheckoutError::IdempotencyKeyReused => LedgerError::IdempotencyKeyReused.into(),
            CheckoutError::IdempotencyInProgress => Self::new(
                ErrorCode::IdempotencyInProgress,
                "a request with this idempotency key is still running",
            ),
            CheckoutError::Storage(_) => Self::internal(),
        }
    }
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Validation(fields) => Self::fields(fields),
            WebhookError::InvalidUrl(e) => Self::new(ErrorCode::InvalidWebhookUrl, e.to_string()),
            WebhookError::NotFound => Self::not_found("no such webhook endpoint or delivery"),
            WebhookError::Storage(RepoError::Storage(_)) => Self::internal(),
        }
    }
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
    fn every_code_has_one_name_and_an_error_status() {
        let mut names = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert!(names.insert(code.as_str()), "{code} twice");
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{code}"
            );
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{code}"
            );
        }
        assert_eq!(
            ErrorCode::InsufficientCredits.status(),
            StatusCode::PAYMENT_REQUIRED
        );
        assert_eq!(
            ApiError::new(ErrorCode::CouponInvalid, "x").status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn webhook_errors_map_to_codes() {
        let e = ApiError::from(WebhookError::InvalidUrl(UrlError::UnsupportedScheme));
        assert_eq!(
            (e.status, e.code, e.message.as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidWebhookUrl,
                "URL scheme must be http or https"
            )
        );
        let e = ApiError::from(WebhookError::NotFound);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::NOT_FOUND, ErrorCode::NotFound)
        );
        let e = ApiError::from(WebhookError::Validation(vec![FieldError::new(
            "event_types",
            "unknown event type `x.y`",
        )]));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, ErrorCode::ValidationError)
        );
        assert_eq!(
            e.details,
            Some(
                json!({"fields": [{"field": "event_types", "message": "unknown event type `x.y`"}]})
            )
        );
        assert_eq!(e.message, "event_types: unknown event type `x.y`");
    }
}
