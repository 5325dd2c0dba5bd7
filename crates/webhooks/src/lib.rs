//! Tally's outbound webhooks domain: the pure pieces a dispatcher needs to tell an app's servers
//! what happened, with no storage or HTTP server code.
//!
//! - [`event`]: the [`EventType`]s an endpoint can subscribe to and the [`OutboundEvent`] whose
//!   [`payload`](OutboundEvent::payload) is the JSON body receivers get.
//! - [`signing`]: [Standard Webhooks](https://www.standardwebhooks.com/) signatures
//!   (`webhook-id`, `webhook-timestamp`, `webhook-signature`) with `whsec_` secrets
//!   ([`WebhookSecret`]), several signatures at once while a secret is rotated, and the matching
//!   [`verify`] a receiver runs.
//! - [`ssrf`]: [`check_url`] refuses endpoint URLs that point into the deployment's own network
//!   (loopback, private, link-local, metadata addresses, ...); the dispatcher re-checks the
//!   address it connects to with [`is_public_ip`] against DNS rebinding.
//! - [`retry`]: the delivery schedule ([`next_delay`], [`MAX_ATTEMPTS`]) and when an endpoint that
//!   keeps failing is disabled ([`DISABLE_AFTER`]).
//! - [`repo`]: the storage port ([`WebhookRepository`]): endpoints, the outbox fan-out, claims
//!   and the record of every attempt.
//! - [`service`]: the admin operations ([`Webhooks`]).
//! - [`dispatcher`]: the delivery loop ([`Dispatcher`]) that runs inside `tally serve`.

pub mod dispatcher;
pub mod event;
pub mod payload;
pub mod repo;
pub mod retry;
pub mod service;
pub mod signing;
pub mod ssrf;

pub use dispatcher::{Dispatcher, DispatcherConfig};
pub use event::{EventType, OutboundEvent, new_event_id};
pub use repo::{
    Attempt, AttemptResult, Backlog, ClaimedDelivery, Delivery, DeliveryQuery, DeliveryStatus,
    Endpoint, EndpointChanges, NewEndpoint, RepoError, WebhookRepository,
};
pub use retry::{DISABLE_AFTER, MAX_ATTEMPTS, NO_JITTER, SCHEDULE, next_delay};
pub use service::{CreateEndpoint, UpdateEndpoint, WebhookError, Webhooks};
pub use signing::{
    DEFAULT_TOLERANCE_SECONDS, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SecretError,
    VerifyError, WebhookSecret, sign, verify,
};
pub use ssrf::{MAX_URL_LEN, UrlError, ValidatedUrl, check_url, is_public_ip};
