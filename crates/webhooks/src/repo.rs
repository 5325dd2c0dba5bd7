//! The storage port of outbound webhooks and the records it keeps.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::EventType;

/// A receiver an app registered.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `we_` + 24 hex digits.
    pub id: String,
    /// The app whose events it receives.
    pub app: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Free text for the operator.
    pub description: String,
    /// The event types it subscribes to.
    pub event_types: Vec<EventType>,
    /// Whether deliveries are made; an endpoint failing for days is disabled.
    pub enabled: bool,
    /// Why it was disabled automatically, if it was.
    pub disabled_reason: Option<String>,
    /// Since when every attempt has failed; `None` after a success.
    pub failing_since: Option<OffsetDateTime>,
    /// Until when the previous secret still signs, after a rotation.
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    /// When it was registered.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

/// A new endpoint, validated.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// Its id.
    pub id: String,
    /// Its app.
    pub app: String,
    /// Its URL.
    pub url: String,
    /// Its description.
    pub description: String,
    /// Its event types (at least one).
    pub event_types: Vec<EventType>,
    /// Whether it starts enabled.
    pub enabled: bool,
    /// Its signing secret, `whsec_…`.
    pub secret: String,
    /// Now.
    pub now: OffsetDateTime,
}

/// What an update changes; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct EndpointChanges {
    /// A new URL, validated.
    pub url: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// New event types.
    pub event_types: Option<Vec<EventType>>,
    /// Enable or disable; enabling clears the failure record.
    pub enabled: Option<bool>,
    /// A new secret, with the instant until which the current one keeps signing.
    pub rotate: Option<(String, OffsetDateTime)>,
}

tally_kernel::wire_enum! {
    /// Where a delivery stands.
    pub enum DeliveryStatus {
        /// Waiting for its next attempt.
        Pending = "pending",
        /// The receiver answered 2xx.
        Succeeded = "succeeded",
        /// Every attempt failed; nothing more is tried unless an admin retries it.
        Failed = "failed",
    }
}

/// One attempt to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// When it was made.
    pub attempted_at: OffsetDateTime,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// How long it took.
    pub latency_ms: i64,
    /// The first bytes of the receiver's answer.
    pub response_excerpt: Option<String>,
    /// Why it failed without an answer (timeout, connection refused, refused address, ...).
    pub error: Option<String>,
    /// Whether the receiver took it (2xx).
    pub succeeded: bool,
}

/// One event to one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Its id.
    pub id: i64,
    /// The event (also the `webhook-id` header).
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The app.
    pub app: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<OffsetDateTime>,
    /// The last answer's HTTP status.
    pub last_status: Option<u16>,
    /// The last failure without an answer.
    pub last_error: Option<String>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
    /// Every attempt, oldest first (filled for a single delivery, empty in lists).
    pub attempt_log: Vec<Attempt>,
}

/// Which deliveries to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    /// The app.
    pub app: String,
    /// Only this endpoint's.
    pub endpoint_id: Option<String>,
    /// Only this event's.
    pub event_id: Option<String>,
    /// Only in this status.
    pub status: Option<DeliveryStatus>,
    /// Only of this event type.
    pub event_type: Option<EventType>,
    /// Only ids below this one (the cursor of the previous page).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// A delivery claimed by this process for one attempt.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// The delivery.
    pub delivery_id: i64,
    /// The event id, sent as `webhook-id`.
    pub event_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// Where to send it.
    pub url: String,
    /// The `whsec_` secrets that sign it: the current one, and the previous one during rotation.
    pub secrets: Vec<String>,
    /// The JSON body.
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i32,
}

/// The result of one attempt, to record.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    /// The delivery.
    pub delivery_id: i64,
    /// The attempt.
    pub attempt: Attempt,
    /// When to try again; `None` when the attempt succeeded or the last allowed one failed.
    pub next_attempt_at: Option<OffsetDateTime>,
}

/// Storage failures of the webhook port.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The database failed.
    #[error("webhook storage failed: {0}")]
    Storage(Box<dyn std::error::Error + Send + Sync>),
}

impl RepoError {
    /// Wraps a storage failure.
    pub fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Storage(Box::new(e))
    }
}

/// Where endpoints, the outbox and deliveries live. Events themselves are written by the
/// ledger's and checkout's storage, in the transaction of the change they report.
#[async_trait]
pub trait WebhookRepository: Send + Sync + std::fmt::Debug {
    /// Stores a new endpoint.
    async fn create_endpoint(&self, new: NewEndpoint) -> Result<Endpoint, RepoError>;
    /// An app's endpoints, oldest first.
    async fn endpoints(&self, app: &str) -> Result<Vec<Endpoint>, RepoError>;
    /// One endpoint of an app.
    async fn endpoint(&self, app: &str, id: &str) -> Result<Option<Endpoint>, RepoError>;
    /// Changes an endpoint; `None` when the app has no such endpoint.
    async fn update_endpoint(
        &self,
        app: &str,
        id: &str,
        changes: EndpointChanges,
        now: OffsetDateTime,
    ) -> Result<Option<Endpoint>, RepoError>;
    /// Deletes an endpoint and its deliveries; whether it existed.
    async fn delete_endpoint(&self, app: &str, id: &str) -> Result<bool, RepoError>;
    /// Deliveries, newest first.
    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, RepoError>;
    /// One delivery with its attempts.
    async fn delivery(&self, app: &str, id: i64) -> Result<Option<Delivery>, RepoError>;
    /// Makes a delivery due now again (whatever its status); `None` when unknown.
    async fn retry_delivery(
        &self,
        app: &str,
        id: i64,
        now: OffsetDateTime,
    ) -> Result<Option<Delivery>, RepoError>;
    /// The app's low-balance threshold for `credits.low`.
    async fn low_balance_threshold(&self, app: &str) -> Result<Option<i64>, RepoError>;
    /// Sets or clears the app's low-balance threshold.
    async fn set_low_balance_threshold(
        &self,
        app: &str,
        threshold: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<(), RepoError>;
    /// Whether there is a new outbox event or a due delivery (a cheap read that lets an idle
    /// dispatcher skip its write transactions).
    async fn has_work(&self, now: OffsetDateTime) -> Result<bool, RepoError>;
    /// Turns up to `limit` new outbox events into one pending delivery per enabled endpoint
    /// subscribed to their type; answers how many events were processed.
    async fn fan_out(&self, now: OffsetDateTime, limit: i64) -> Result<usize, RepoError>;
    /// Claims up to `limit` due deliveries of enabled endpoints for this process: each is
    /// pushed `lease` into the future, so no other process takes it meanwhile and it becomes due
    /// again if this process dies before recording the attempt.
    async fn claim(
        &self,
        now: OffsetDateTime,
        lease: time::Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, RepoError>;
    /// Records an attempt and its consequences: the delivery's status and next attempt, the
    /// endpoint's failure record, and disabling the endpoint (with an `endpoint.disabled`
    /// event) when it has failed for [`crate::DISABLE_AFTER`] or a delivery gave up without a
    /// success since its first attempt.
    async fn record_attempt(&self, result: AttemptResult) -> Result<(), RepoError>;
    /// Deliveries waiting and given up, across apps (for the operations metrics).
    async fn backlog(&self) -> Result<Backlog, RepoError>;
}

/// The outbound delivery backlog, across apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Deliveries still to be made (first attempt or retry).
    pub pending: i64,
    /// Deliveries given up after their last attempt.
    pub failed: i64,
    /// When the oldest pending delivery was created.
    pub oldest_pending: Option<OffsetDateTime>,
}
