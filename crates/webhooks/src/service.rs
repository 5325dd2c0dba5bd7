//! The admin side of outbound webhooks: registering, changing and rotating endpoints, reading
//! and retrying deliveries, and the per-app `credits.low` threshold.

use std::sync::Arc;
use tally_kernel::FieldError;

use rand::RngCore;
use tally_kernel::Clock;

use crate::repo::{
    Delivery, DeliveryQuery, Endpoint, EndpointChanges, NewEndpoint, RepoError, WebhookRepository,
};
use crate::{EventType, UrlError, WebhookSecret, check_url};

/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP: time::Duration = time::Duration::hours(24);
/// The longest description accepted.
pub const MAX_DESCRIPTION_LEN: usize = 500;

/// Why an admin request was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Fields are malformed or out of range; each is named.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Validation(Vec<FieldError>),
    /// The endpoint URL is malformed or points into a private network.
    #[error("invalid endpoint url: {0}")]
    InvalidUrl(#[from] UrlError),
    /// No such endpoint or delivery in this app.
    #[error("not found")]
    NotFound,
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] RepoError),
}

/// A new endpoint as an admin asks for it.
#[derive(Debug, Clone, Default)]
pub struct CreateEndpoint {
    /// `http(s)://…`
    pub url: String,
    /// Event type names; `None` subscribes to every type except the opt-in `credits.spent`.
    pub event_types: Option<Vec<String>>,
    /// Free text.
    pub description: Option<String>,
    /// Defaults to enabled.
    pub enabled: Option<bool>,
}

/// Changes an admin asks for; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct UpdateEndpoint {
    /// A new URL.
    pub url: Option<String>,
    /// New event type names.
    pub event_types: Option<Vec<String>>,
    /// A new description.
    pub description: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// Generate a new secret; the current one keeps signing for [`ROTATION_OVERLAP`].
    pub rotate_secret: bool,
}

/// The admin service.
#[derive(Clone)]
pub struct Webhooks {
    repo: Arc<dyn WebhookRepository>,
    clock: Arc<dyn Clock>,
    allow_private_urls: bool,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("repo", &self.repo)
            .field("allow_private_urls", &self.allow_private_urls)
            .finish_non_exhaustive()
    }
}

/// A fresh endpoint id: `we_` + 24 hex digits.
pub fn new_endpoint_id() -> String {
    let mut bytes = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("we_{}", hex::encode(bytes))
}

fn invalid(field: &str, message: impl Into<String>) -> WebhookError {
    WebhookError::Validation(vec![FieldError::new(field, message)])
}

/// Both values, or every field problem of the two (any other error first).
fn both<A, B>(
    a: Result<A, WebhookError>,
    b: Result<B, WebhookError>,
) -> Result<(A, B), WebhookError> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(WebhookError::Validation(mut x)), Err(WebhookError::Validation(y))) => {
            x.extend(y);
            Err(WebhookError::Validation(x))
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

fn event_types(names: Option<Vec<String>>) -> Result<Option<Vec<EventType>>, WebhookError> {
    let Some(names) = names else {
        return Ok(None);
    };
    if names.is_empty() {
        return Err(invalid("event_types", "must name at least one event type"));
    }
    let mut types = Vec::with_capacity(names.len());
    for name in &names {
        let t = EventType::parse(name)
            .ok_or_else(|| invalid("event_types", format!("unknown event type `{name}`")))?;
        if !types.contains(&t) {
            types.push(t);
        }
    }
    types.sort();
    Ok(Some(types))
}

fn description(d: Option<String>) -> Result<Option<String>, WebhookError> {
    match d {
        Some(d)
            if d.chars().count() > MAX_DESCRIPTION_LEN
                || tally_kernel::has_control_chars(&d, false) =>
        {
            Err(invalid(
                "description",
                format!(
                    "must be at most {MAX_DESCRIPTION_LEN} characters, without control characters"
                ),
            ))
        }
        d => Ok(d),
    }
}

impl Webhooks {
    /// The service over a repository; `allow_private_urls` lets endpoints point at loopback and
    /// private addresses (development and tests only).
    pub fn new(
        repo: Arc<dyn WebhookRepository>,
        clock: Arc<dyn Clock>,
        allow_private_urls: bool,
    ) -> Self {
        Self {
            repo,
            clock,
            allow_private_urls,
        }
    }

    /// The repository (the dispatcher shares it).
    pub fn repo(&self) -> Arc<dyn WebhookRepository> {
        self.repo.clone()
    }

    /// Whether private receiver addresses are allowed.
    pub fn allow_private_urls(&self) -> bool {
        self.allow_private_urls
    }

    async fn url(&self, url: &str) -> Result<String, WebhookError> {
        Ok(check_url(url, self.allow_private_urls)
            .await?
            .as_str()
            .to_owned())
    }

    /// Registers an endpoint; answers it with its secret, which is never shown again.
    pub async fn create(
        &self,
        app: &str,
        request: CreateEndpoint,
    ) -> Result<(Endpoint, WebhookSecret), WebhookError> {
        let (event_types, description) = both(
            event_types(request.event_types),
            description(request.description),
        )?;
        let event_types = event_types.unwrap_or_else(|| {
            EventType::ALL
                .iter()
                .copied()
                .filter(|t| t.default_enabled())
                .collect()
        });
        let description = description.unwrap_or_default();
        let url = self.url(&request.url).await?;
        let secret = WebhookSecret::generate();
        let endpoint = self
            .repo
            .create_endpoint(NewEndpoint {
                id: new_endpoint_id(),
                app: app.to_owned(),
                url,
                description,
                event_types,
                enabled: request.enabled.unwrap_or(true),
                secret: secret.expose(),
                now: self.clock.now(),
            })
            .await?;
        Ok((endpoint, secret))
    }

    /// An app's endpoints.
    pub async fn list(&self, app: &str) -> Result<Vec<Endpoint>, WebhookError> {
        Ok(self.repo.endpoints(app).await?)
    }

    /// One endpoint.
    pub async fn get(&self, app: &str, id: &str) -> Result<Endpoint, WebhookError> {
        self.repo
            .endpoint(app, id)
            .await?
            .ok_or(WebhookError::NotFound)
    }

    /// Changes an endpoint; answers the new secret when it was rotated.
    pub async fn update(
        &self,
        app: &str,
        id: &str,
        request: UpdateEndpoint,
    ) -> Result<(Endpoint, Option<WebhookSecret>), WebhookError> {
        let (event_types, description) = both(
            event_types(request.event_types),
            description(request.description),
        )?;
        let url = match &request.url {
            Some(url) => Some(self.url(url).await?),
            None => None,
        };
        let now = self.clock.now();
        let secret = request.rotate_secret.then(WebhookSecret::generate);
        let changes = EndpointChanges {
            url,
            description,
            event_types,
            enabled: request.enabled,
            rotate: secret
                .as_ref()
                .map(|s| (s.expose(), now + ROTATION_OVERLAP)),
        };
        let endpoint = self
            .repo
            .update_endpoint(app, id, changes, now)
            .await?
            .ok_or(WebhookError::NotFound)?;
        Ok((endpoint, secret))
    }

    /// Deletes an endpoint and its delivery records.
    pub async fn delete(&self, app: &str, id: &str) -> Result<(), WebhookError> {
        if self.repo.delete_endpoint(app, id).await? {
            Ok(())
        } else {
            Err(WebhookError::NotFound)
        }
    }

    /// Deliveries, newest first.
    pub async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, WebhookError> {
        Ok(self.repo.deliveries(query).await?)
    }

    /// One delivery with every attempt.
    pub async fn delivery(&self, app: &str, id: i64) -> Result<Delivery, WebhookError> {
        self.repo
            .delivery(app, id)
            .await?
            .ok_or(WebhookError::NotFound)
    }

    /// Schedules a delivery for an immediate new attempt.
    pub async fn retry(&self, app: &str, id: i64) -> Result<Delivery, WebhookError> {
        self.repo
            .retry_delivery(app, id, self.clock.now())
            .await?
            .ok_or(WebhookError::NotFound)
    }

    /// Deliveries pending and failed across apps, for the operations metrics.
    pub async fn backlog(&self) -> Result<crate::Backlog, WebhookError> {
        self.repo.backlog().await.map_err(Into::into)
    }

    /// The app's `credits.low` threshold.
    pub async fn low_balance_threshold(&self, app: &str) -> Result<Option<i64>, WebhookError> {
        Ok(self.repo.low_balance_threshold(app).await?)
    }

    /// Sets (or with `None` clears) the app's `credits.low` threshold.
    pub async fn set_low_balance_threshold(
        &self,
        app: &str,
        threshold: Option<i64>,
    ) -> Result<(), WebhookError> {
        if threshold.is_some_and(|t| !(0..=1_000_000_000_000).contains(&t)) {
            return Err(invalid(
                "low_balance_threshold",
                "must be between 0 and 10^12",
            ));
        }
        Ok(self
            .repo
            .set_low_balance_threshold(app, threshold, self.clock.now())
            .await?)
    }
}
