//! The one HTTP client every provider shares: timeouts, bounded retries with backoff, and error
//! answers turned into [`ProviderError::Upstream`] with the provider's own message.

use std::time::Duration;

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tally_checkout::ProviderError;

/// Timeouts and retry policy of [`HttpClient`].
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one whole attempt (connect, send, answer).
    pub request_timeout: Duration,
    /// Attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles for each further one, with jitter.
    pub backoff_base: Duration,
    /// Upper bound of one backoff.
    pub backoff_max: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            max_attempts: 3,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// A shared `reqwest` client with Tally's timeouts and retry policy; cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    config: HttpConfig,
}

/// A request body, already encoded.
#[derive(Debug)]
pub(crate) enum Body {
    /// `application/x-www-form-urlencoded` (Stripe v1).
    Form(String),
    /// `application/json` (Creem).
    Json(Value),
}

/// One API call, described so it can be sent again unchanged on retry.
#[derive(Debug)]
pub(crate) struct ApiCall<'a> {
    /// Names the provider in error messages.
    pub provider: &'static str,
    pub method: Method,
    pub base: &'a str,
    pub path: &'a str,
    /// Includes credentials: never logged.
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    /// Reads the provider's error message out of an error answer.
    pub error_message: fn(&Value) -> Option<String>,
}

enum Attempt {
    Done(Value),
    Retry(String),
    Fail(String),
}

impl HttpClient {
    /// Builds the client; fails only if the TLS backend cannot start.
    pub fn new(config: HttpConfig) -> Result<Self, ProviderError> {
        let inner = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Upstream(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { inner, config })
    }

    /// The policy it was built with.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// Sends `call`, retrying transient failures with the same headers (so the same
    /// idempotency key), and answers the JSON of the 2xx answer.
    pub(crate) async fn send(&self, call: &ApiCall<'_>) -> Result<Value, ProviderError> {
        let attempts = self.config.max_attempts.max(1);
        let what = format!("{} {} {}", call.provider, call.method, call.path);
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.attempt(call).await {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fail(message) => return Err(ProviderError::Upstream(message)),
                Attempt::Retry(message) => {
                    tracing::warn!(call = %what, attempt, error = %message, "provider call failed");
                    last = message;
                    if attempt < attempts {
                        tokio::time::sleep(self.backoff(attempt)).await;
                    }
                }
            }
        }
        Err(ProviderError::Upstream(format!(
            "{last} (gave up after {attempts} attempts)"
        )))
    }

    async fn attempt(&self, call: &ApiCall<'_>) -> Attempt {
        let url = format!("{}{}", call.base.trim_end_matches('/'), call.path);
        let mut request = self.inner.request(call.method.clone(), url);
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        request = match &call.body {
            Body::Form(form) => request
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form.clone()),
            Body::Json(json) => request.json(json),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return transport_failure(call.provider, e),
        };
        let status = response.status();
        let should_retry = response
            .headers()
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.eq_ignore_ascii_case("true"));
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => return transport_failure(call.provider, e),
        };
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return match json {
                Some(value) => Attempt::Done(value),
                None => Attempt::Fail(format!("{} answered with unreadable JSON", call.provider)),
            };
        }
        let detail = json
            .as_ref()
            .and_then(call.error_message)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        let message = format!(
            "{} answered HTTP {}: {detail}",
            call.provider,
            status.as_u16()
        );
        if should_retry.unwrap_or_else(|| retryable(status)) {
            Attempt::Retry(message)
        } else {
            Attempt::Fail(message)
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .config
            .backoff_base
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(self.config.backoff_max);
        // Full jitter in the upper half: spreads retries of many callers without ever
        // retrying immediately.
        exponential.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }
}

/// Conflicts (concurrent use of one idempotency key), rate limits and server errors pass.
fn retryable(status: StatusCode) -> bool {
    status == StatusCode::CONFLICT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

fn transport_failure(provider: &str, e: reqwest::Error) -> Attempt {
    let transient = e.is_timeout() || e.is_connect() || e.is_request() || e.is_body();
    let reason = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        // Without the URL (noise for people), with the causes (what went wrong).
        let e = e.without_url();
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        reason
    };
    let message = format!("{provider} unreachable: {reason}");
    if transient {
        Attempt::Retry(message)
    } else {
        Attempt::Fail(message)
    }
}
