//! The kernel every Tally domain crate shares, so that the basics exist once: the clock and the
//! microsecond instants both databases store, the rules for app keys and user ids, the one
//! format instants take on the wire, enums with one wire name each ([`wire_enum!`]), and the
//! one shape of a refused field ([`FieldError`]).
//!
//! It depends on nothing but `time` and `serde`; each domain crate wraps the rules' refusals in
//! its own error type.

mod clock;
mod ids;
mod wire;

#[doc(hidden)]
pub use serde;

pub use clock::{Clock, ManualClock, SystemClock, truncate_micros};
pub use ids::{
    APP_KEY_RULE, MAX_APP_KEY_LEN, MAX_USER_ID_CHARS, USER_ID_RULE, has_control_chars, is_app_key,
    is_user_id,
};

/// One problem with one field of a request, in every domain crate's validation errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The offending field, as the wire names it (e.g. `price_monthly`, `features[2]`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Collects the problems of one request, so that one answer lists all of them.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// Records `message` against `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.add(field, message);
        }
    }

    /// Records a problem.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Records the problem of a rule that checks one field, if it found one.
    pub fn take(&mut self, rule: Result<(), FieldError>) {
        if let Err(e) = rule {
            self.0.push(e);
        }
    }

    /// Records problems found elsewhere.
    pub fn extend(&mut self, fields: impl IntoIterator<Item = FieldError>) {
        self.0.extend(fields);
    }

    /// `Ok` when nothing was recorded, else every problem in the order recorded.
    pub fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// An instant as RFC 3339 text (`2026-12-05T13:45:00.123456Z` for UTC), the one way instants
/// appear in API bodies, outbound events and pages.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use time::macros::datetime;

    #[test]
    fn instants_are_rfc3339() {
        assert_eq!(
            super::rfc3339(datetime!(2026-12-05 13:45:00.123456 UTC)),
            "2026-12-05T13:45:00.123456Z"
        );
        assert_eq!(
            super::rfc3339(datetime!(2026-12-05 13:45 +01:00)),
            "2026-12-05T13:45:00+01:00"
        );
    }
}
