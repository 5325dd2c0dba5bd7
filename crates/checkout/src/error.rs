//! Domain errors. They know nothing of HTTP; the API shell maps them to status codes.

use tally_catalog::{CatalogError, FieldError};

/// Everything a checkout operation can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// The request is malformed or out of range; every problem names its field.
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    /// The plan does not exist in the caller's app.
    #[error("plan not found")]
    PlanNotFound,
    /// The plan is inactive, of the wrong kind, or lacks the provider id the channel needs.
    #[error("{0}")]
    PlanNotPurchasable(String),
    /// The coupon is unknown, inactive, expired, exhausted or not for this plan.
    #[error("{0}")]
    CouponInvalid(String),
    /// The channel has no credentials configured (or the sandbox is off).
    #[error("{0} is not configured")]
    ProviderNotConfigured(String),
    /// The provider failed or timed out; the order is marked failed.
    #[error("payment provider error: {0}")]
    Provider(String),
    /// The webhook signature is missing, wrong or too old.
    #[error("{0}")]
    InvalidSignature(String),
    /// No such order (or not the caller's).
    #[error("order not found")]
    OrderNotFound,
    /// The user has no customer record at the provider yet.
    #[error("{0}")]
    NoCustomer(String),
    /// The user already has a live subscription (active, trialing or past due); a second
    /// checkout for one is refused (switching plans is a change of that subscription).
    #[error("{0}")]
    AlreadySubscribed(String),
    /// No live subscription to cancel or resume.
    #[error("{0}")]
    NoActiveSubscription(String),
    /// The order cannot be refunded: unpaid, not yet reported paid, or refunded in full.
    #[error("{0}")]
    NotRefundable(String),
    /// The idempotency key was used for a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// The first request with this idempotency key is still running.
    #[error("a request with this idempotency key is in progress")]
    IdempotencyInProgress,
    /// The storage backend failed; the source carries the detail (never shown to clients).
    #[error("storage failure")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl CheckoutError {
    /// A validation error about one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// Wraps a storage error.
    pub fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Storage(Box::new(e))
    }
}

impl From<CatalogError> for CheckoutError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Validation(fields) => Self::Validation(fields),
            CatalogError::PlanNotFound => Self::PlanNotFound,
            CatalogError::CouponNotFound => Self::CouponInvalid("no such coupon".into()),
            CatalogError::Conflict(m) => Self::CouponInvalid(m),
            CatalogError::Storage(source) => Self::Storage(source),
            // Checkout never asks the registry; were it to, a missing app is a broken store.
            e @ (CatalogError::AppNotFound | CatalogError::ServiceKeyNotFound) => {
                Self::Storage(Box::new(e))
            }
        }
    }
}
