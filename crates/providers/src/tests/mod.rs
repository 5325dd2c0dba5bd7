//! Unit tests: signature known-answer vectors, event fixtures, and API calls against a local
//! HTTP double.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod creem_events;
mod double;
mod http_calls;
mod sandbox;
mod signatures;
mod stripe_events;

use std::time::Duration;

use time::OffsetDateTime;

use crate::{HttpClient, HttpConfig};

/// A client that fails fast, so retry tests take milliseconds.
pub(crate) fn fast_client(request_timeout: Duration) -> HttpClient {
    HttpClient::new(HttpConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout,
        max_attempts: 3,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(40),
    })
    .unwrap()
}

/// Unix seconds as an instant.
pub(crate) fn ts(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).unwrap()
}

/// Headers as a provider sends them (names lower-case).
pub(crate) fn headers(pairs: &[(&str, &str)]) -> tally_checkout::WebhookHeaders {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
