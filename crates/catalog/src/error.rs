//! Domain errors. They know nothing of HTTP; the API shell maps them to status codes.

pub use tally_kernel::FieldError;

/// Everything a catalog operation can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The request is malformed or out of range; every problem found names its field.
    #[error("invalid {}", summary(.0))]
    Validation(Vec<FieldError>),
    /// A unique value is already taken, e.g. a coupon code within the app.
    #[error("conflict: {0}")]
    Conflict(String),
    /// No such plan in the caller's app.
    #[error("plan not found")]
    PlanNotFound,
    /// No such coupon in the caller's app.
    #[error("coupon not found")]
    CouponNotFound,
    /// No such app in the registry.
    #[error("app not registered")]
    AppNotFound,
    /// No such service key in the caller's app.
    #[error("service key not found")]
    ServiceKeyNotFound,
    /// The storage backend failed; the source carries the detail (never shown to clients).
    #[error("storage failure")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn summary(fields: &[FieldError]) -> String {
    fields
        .iter()
        .map(|f| format!("{}: {}", f.field, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl CatalogError {
    /// A validation error about one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// Wraps a storage error.
    pub fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Storage(Box::new(e))
    }
}

/// Collects field problems so that one answer lists all of them.
pub(crate) type Problems = tally_kernel::FieldErrors;

impl From<Vec<FieldError>> for CatalogError {
    fn from(fields: Vec<FieldError>) -> Self {
        Self::Validation(fields)
    }
}
