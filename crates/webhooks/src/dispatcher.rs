//! Delivers outbox events: fans new events out to subscribed endpoints, claims due deliveries,
//! POSTs each signed to its receiver, and records the attempt with the next one scheduled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::watch;

use crate::repo::{Attempt, AttemptResult, ClaimedDelivery, RepoError, WebhookRepository};
use crate::{
    HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, WebhookSecret, check_url, is_public_ip,
};
use tally_kernel::Clock;

/// How many bytes of a receiver's answer are kept.
pub const EXCERPT_BYTES: usize = 512;

/// New events fanned out per batch.
const FAN_OUT_BATCH: i64 = 500;

/// Most fan-out batches per round (10,000 events).
const FAN_OUT_ROUNDS: usize = 20;

/// How the dispatcher runs.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// How long to wait between polls when there was nothing to do.
    pub poll_interval: Duration,
    /// How many deliveries one claim takes (and sends concurrently).
    pub batch: i64,
    /// How long a claimed delivery stays invisible to other processes.
    pub lease: Duration,
    /// The request timeout per attempt.
    pub timeout: Duration,
    /// Whether receivers may resolve to loopback and private addresses.
    pub allow_private_urls: bool,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            batch: 32,
            lease: Duration::from_secs(60),
            timeout: Duration::from_secs(15),
            allow_private_urls: false,
        }
    }
}

/// Resolves receiver host names and drops every non-public address, so a name that passed the
/// check when the endpoint was saved cannot be re-pointed at the internal network later.
#[derive(Debug)]
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| is_public_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err("the receiver's host resolves to no public address".into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The delivery loop.
#[derive(Clone)]
pub struct Dispatcher {
    repo: Arc<dyn WebhookRepository>,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    config: DispatcherConfig,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher over the repository. `clock` schedules retries (inject a manual clock in
    /// tests); the `webhook-timestamp` header always carries the wall clock, which is what
    /// receivers compare it with.
    pub fn new(
        repo: Arc<dyn WebhookRepository>,
        clock: Arc<dyn Clock>,
        config: DispatcherConfig,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Tally-Webhooks/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30));
        if !config.allow_private_urls {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Self {
            repo,
            client: builder.build()?,
            clock,
            config,
        })
    }

    /// One round: fan out new events, claim a batch of due deliveries, attempt them all
    /// concurrently and record the results. Answers how many attempts were made.
    pub async fn run_once(&self) -> Result<usize, RepoError> {
        let now = self.clock.now();
        if !self.repo.has_work(now).await? {
            return Ok(0);
        }
        // Fan out at most FAN_OUT_ROUNDS batches per round; a larger backlog continues next
        // round, after this round's deliveries.
        for _ in 0..FAN_OUT_ROUNDS {
            if self.repo.fan_out(now, FAN_OUT_BATCH).await? < FAN_OUT_BATCH as usize {
                break;
            }
        }
        let lease = time::Duration::try_from(self.config.lease).unwrap_or(time::Duration::MINUTE);
        let claimed = self.repo.claim(now, lease, self.config.batch).await?;
        let count = claimed.len();
        let mut tasks = tokio::task::JoinSet::new();
        for delivery in claimed {
            let this = self.clone();
            tasks.spawn(async move {
                let result = this.attempt(&delivery).await;
                this.repo.record_attempt(result).await
            });
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => tracing::error!(error = %e, "webhook delivery task failed"),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    /// Runs rounds until `stop` turns true: immediately again after a full batch, otherwise
    /// after the poll interval.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            if *stop.borrow() {
                return;
            }
            let wait = match self.run_once().await {
                Ok(n) if n as i64 >= self.config.batch => {
                    failures = 0;
                    Duration::ZERO
                }
                Ok(_) => {
                    failures = 0;
                    self.config.poll_interval
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "webhook dispatch round failed");
                    self.config.poll_interval * failures.min(20)
                }
            };
            if wait.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One signed POST; never fails, the outcome is in the result.
    async fn attempt(&self, delivery: &ClaimedDelivery) -> AttemptResult {
        let attempted_at = self.clock.now();
        let started = Instant::now();
        let outcome = self.send(delivery).await;
        let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (status_code, response_excerpt, error) = match outcome {
            Ok((status, excerpt)) => (Some(status), Some(excerpt), None),
            Err(error) => (None, None, Some(error)),
        };
        let succeeded = status_code.is_some_and(|s| (200..300).contains(&s));
        let attempts_made = u32::try_from(delivery.attempts).unwrap_or(0) + 1;
        let next_attempt_at = if succeeded {
            None
        } else {
            crate::next_delay(attempts_made, rand::random::<f64>())
                .and_then(|d| time::Duration::try_from(d).ok())
                .map(|d| attempted_at + d)
        };
        AttemptResult {
            delivery_id: delivery.delivery_id,
            attempt: Attempt {
                attempted_at,
                status_code,
                latency_ms,
                response_excerpt,
                error,
                succeeded,
            },
            next_attempt_at,
        }
    }

    async fn send(&self, delivery: &ClaimedDelivery) -> Result<(u16, String), String> {
        // Literal addresses bypass the resolver: check them (and the scheme) here.
        check_url(&delivery.url, self.config.allow_private_urls)
            .await
            .map_err(|e| format!("refused: {e}"))?;
        let secrets: Vec<WebhookSecret> = delivery
            .secrets
            .iter()
            .filter_map(|s| WebhookSecret::parse(s).ok())
            .collect();
        if secrets.is_empty() {
            return Err("the endpoint has no usable secret".into());
        }
        let secret_refs: Vec<&WebhookSecret> = secrets.iter().collect();
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = crate::sign(
            &secret_refs,
            &delivery.event_id,
            timestamp,
            &delivery.payload,
        );
        let mut response = self
            .client
            .post(&delivery.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(HEADER_ID, &delivery.event_id)
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(HEADER_SIGNATURE, signature)
            .body(delivery.payload.clone())
            .send()
            .await
            .map_err(describe)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        body.truncate(EXCERPT_BYTES);
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text.chars().take(EXCERPT_BYTES).collect()
}
