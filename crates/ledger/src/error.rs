//! Domain errors. They know nothing of HTTP; the API shell maps them to status codes.

pub use tally_kernel::FieldError;
use tally_kernel::FieldErrors;

/// Everything a ledger operation can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The request is malformed or out of range; the error names each refused field.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Validation(Vec<FieldError>),
    /// A debit larger than what the account has available.
    #[error("insufficient credits: {requested} requested, {available} available")]
    InsufficientCredits {
        /// Credits the caller asked for.
        requested: i64,
        /// Credits the account could spend at that instant.
        available: i64,
    },
    /// The idempotency key was used before with a different request.
    #[error("idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    /// The user already checked in on this local day.
    #[error("already checked in on {day}")]
    AlreadyCheckedIn {
        /// The local day, `YYYY-MM-DD`.
        day: String,
    },
    /// Check-in is switched off for this app.
    #[error("check-in is disabled for this app")]
    CheckinDisabled,
    /// No such hold in the caller's app.
    #[error("hold not found")]
    HoldNotFound,
    /// The hold was already captured or released.
    #[error("hold is {status}")]
    HoldNotActive {
        /// Its status.
        status: &'static str,
    },
    /// The hold's time ran out; its credits are available again.
    #[error("hold expired")]
    HoldExpired,
    /// No such redemption code in the caller's app.
    #[error("unknown redemption code")]
    CodeNotFound,
    /// The code's redemption window closed.
    #[error("redemption code expired")]
    CodeExpired,
    /// The code has no uses left.
    #[error("redemption code fully used")]
    CodeExhausted,
    /// This user already redeemed this code.
    #[error("redemption code already redeemed by this user")]
    CodeAlreadyRedeemed,
    /// Too many failed attempts; try again later.
    #[error("too many attempts; retry in {retry_after_seconds} s")]
    RateLimited {
        /// Seconds until the next attempt is allowed.
        retry_after_seconds: i64,
    },
    /// A `block` allowance does not cover the reported usage.
    #[error("the plan's allowance of '{feature}' is used up")]
    EntitlementExceeded {
        /// The feature.
        feature: String,
    },
    /// Usage beyond the allowance has no rate for its dimensions.
    #[error("no rate prices '{feature}' for these dimensions")]
    RateNotFound {
        /// The feature.
        feature: String,
    },
    /// The change conflicts with what is stored (a duplicate, a kind that cannot change).
    #[error("{0}")]
    Conflict(String),
    /// A balance would leave the range the ledger can represent.
    #[error("amount out of range")]
    Overflow,
    /// The storage backend failed; the source carries the detail (never shown to clients).
    #[error("storage failure")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl LedgerError {
    /// Shorthand for a validation error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// Wraps a storage error.
    pub fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Storage(Box::new(e))
    }
}

impl From<FieldError> for LedgerError {
    fn from(field: FieldError) -> Self {
        Self::Validation(vec![field])
    }
}

impl From<Vec<FieldError>> for LedgerError {
    fn from(fields: Vec<FieldError>) -> Self {
        Self::Validation(fields)
    }
}

/// Records the field problems of a rule's answer in `p`; any other error is passed on.
pub(crate) fn gather(
    p: &mut FieldErrors,
    rule: Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    match rule {
        Err(LedgerError::Validation(fields)) => {
            p.extend(fields);
            Ok(())
        }
        other => other,
    }
}

/// Formats an error with its whole `source()` chain, for logs.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
