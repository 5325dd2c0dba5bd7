//! The kernel every Tally domain crate shares, so that the basics exist once: the clock and the
//! microsecond instants both databases store, the rules for app keys and user ids, and the one
//! format instants take on the wire.
//!
//! It depends on nothing but `time`; each domain crate wraps the rules' refusals in its own
//! error type.

mod clock;
mod ids;

pub use clock::{Clock, ManualClock, SystemClock, truncate_micros};
pub use ids::{
    APP_KEY_RULE, MAX_APP_KEY_LEN, MAX_USER_ID_CHARS, USER_ID_RULE, is_app_key, is_user_id,
};

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
