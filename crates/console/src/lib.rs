//! Sign-in to the operators' console, and the end users' billing-portal sessions, without the
//! HTTP.
//!
//! An operator gets in with a one-time link (`tally console-link`): the link carries a random
//! token, the database keeps only its SHA-256, and redeeming it — once, before it expires —
//! opens a session. A session is a second random secret, kept the same way, that expires after
//! an idle time, and carries the CSRF token every state-changing form must echo. The rules are
//! the pure functions here; [`ConsoleRepository`] stores links and sessions.

use std::sync::Arc;

use async_trait::async_trait;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};

/// How long a console link may wait to be opened.
pub const LINK_TTL: Duration = Duration::minutes(10);

/// Most apps the app switcher lists.
pub const MAX_APPS: i64 = 200;

/// How long a billing-portal URL works after the host app asked for it.
pub const PORTAL_TTL: Duration = Duration::minutes(15);

/// A session's last use is written at most this often (so that reading pages is not a write each).
pub const TOUCH_EVERY: Duration = Duration::minutes(1);

/// Everything a console sign-in can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The link is unknown, used or expired (which one is not said).
    #[error("this console link is not valid: it was used, it expired, or it was never issued")]
    LinkInvalid,
    /// The console session is signed out or idle too long.
    #[error("the console session has ended; sign in again")]
    SessionEnded,
    /// No account, plan or setting uses this app.
    #[error("no app of that name is registered")]
    UnknownApp,
    /// The storage backend failed; the source carries the detail.
    #[error("storage failure")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ConsoleError {
    /// Wraps a storage error.
    pub fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Storage(Box::new(e))
    }
}

/// A link to store: only the token's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLink {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// The app the session will act in.
    pub app: String,
    /// Who the operator is, recorded as the actor of what the console does.
    pub operator: String,
    /// Issue instant.
    pub created_at: OffsetDateTime,
    /// After this, the link opens nothing.
    pub expires_at: OffsetDateTime,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// SHA-256 of the session id, hex.
    pub id_hash: String,
    /// The app it acts in.
    pub app: String,
    /// The operator.
    pub operator: String,
    /// The token forms must echo.
    pub csrf_token: String,
    /// When it was opened.
    pub created_at: OffsetDateTime,
    /// Its last recorded use.
    pub last_seen_at: OffsetDateTime,
}

/// A signed-in operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The app they act in.
    pub app: String,
    /// Their name, the actor of what they do.
    pub operator: String,
    /// The session's CSRF token.
    pub csrf_token: String,
}

impl Operator {
    /// Whether a form's token is the session's, compared in constant time.
    pub fn csrf_matches(&self, token: &str) -> bool {
        !token.is_empty() && bool::from(self.csrf_token.as_bytes().ct_eq(token.as_bytes()))
    }
}

/// A user's billing-portal session: who, in which app, and where to send them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSession {
    /// The app.
    pub app: String,
    /// The user whose billing the portal shows.
    pub user: String,
    /// The host app's page to go back to (checked against the redirect allow-list).
    pub return_url: String,
    /// After this the URL opens nothing.
    pub expires_at: OffsetDateTime,
}

/// How an app's billing portal presents itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Branding {
    /// The name the portal shows (the app key when unset).
    pub display_name: Option<String>,
    /// `#rrggbb`, the colour of the portal's buttons and header.
    pub accent_color: Option<String>,
    /// An `https://` image shown in the portal's header.
    pub logo_url: Option<String>,
}

impl Branding {
    /// Normalises (trims, blanks to none, lower-case colour) and checks each field; answers
    /// the first problem as (field, message).
    pub fn validated(self) -> Result<Self, (&'static str, String)> {
        let blank = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let b = Self {
            display_name: blank(self.display_name),
            accent_color: blank(self.accent_color).map(|c| c.to_ascii_lowercase()),
            logo_url: blank(self.logo_url),
        };
        if let Some(name) = &b.display_name
            && (name.chars().count() > 100 || name.chars().any(char::is_control))
        {
            return Err((
                "display_name",
                "at most 100 characters, no control characters".into(),
            ));
        }
        if let Some(c) = &b.accent_color {
            let hex = c.strip_prefix('#').unwrap_or_default();
            if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(("accent_color", "a colour written #rrggbb".into()));
            }
        }
        if let Some(url) = &b.logo_url {
            let ok = url.len() <= 2048
                && url.starts_with("https://")
                && url.len() > "https://".len()
                && !url
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>'));
            if !ok {
                return Err((
                    "logo_url",
                    "an https:// URL of at most 2048 characters".into(),
                ));
            }
        }
        Ok(b)
    }
}

/// Where links and sessions are kept.
#[async_trait]
pub trait ConsoleRepository: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new link.
    async fn insert_link(&self, link: NewLink) -> Result<(), ConsoleError>;

    /// Marks the link used when it is unused and `now` is before its expiry, in one
    /// conditional write, so that of two concurrent openings one wins; answers the link's
    /// (app, operator), or `None` when it cannot be used.
    async fn redeem_link(
        &self,
        token_hash: String,
        now: OffsetDateTime,
    ) -> Result<Option<(String, String)>, ConsoleError>;

    /// Stores a new session.
    async fn insert_session(&self, session: StoredSession) -> Result<(), ConsoleError>;

    /// The session with this id hash, if any.
    async fn session(&self, id_hash: String) -> Result<Option<StoredSession>, ConsoleError>;

    /// Records the session's use at `now`.
    async fn touch_session(&self, id_hash: String, now: OffsetDateTime)
    -> Result<(), ConsoleError>;

    /// Stores a portal session under its token's hash.
    async fn insert_portal_session(
        &self,
        token_hash: String,
        session: PortalSession,
        now: OffsetDateTime,
    ) -> Result<(), ConsoleError>;

    /// The portal session with this token hash, if any (expired or not).
    async fn portal_session(
        &self,
        token_hash: String,
    ) -> Result<Option<PortalSession>, ConsoleError>;

    /// The app's portal branding (all unset when never saved).
    async fn branding(&self, app: String) -> Result<Branding, ConsoleError>;

    /// Replaces the app's portal branding, recording who did it.
    async fn put_branding(
        &self,
        app: String,
        branding: Branding,
        actor: String,
        now: OffsetDateTime,
    ) -> Result<(), ConsoleError>;

    /// The registered apps, in order, at most `limit`.
    async fn apps(&self, limit: i64) -> Result<Vec<String>, ConsoleError>;

    /// Moves the session to `app`; `false` when there is no such session.
    async fn set_session_app(&self, id_hash: String, app: String) -> Result<bool, ConsoleError>;

    /// Ends a session (and, in passing, every session idle since before `idle_before`).
    async fn delete_session(
        &self,
        id_hash: String,
        idle_before: OffsetDateTime,
    ) -> Result<(), ConsoleError>;
}

/// A random secret: 32 bytes, hex.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the database keeps of a secret.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether a session last used at `last_seen_at` is still open at `now`.
pub fn session_alive(last_seen_at: OffsetDateTime, idle: Duration, now: OffsetDateTime) -> bool {
    now < last_seen_at + idle
}

/// Whether a use at `now` should be written (see [`TOUCH_EVERY`]).
pub fn needs_touch(last_seen_at: OffsetDateTime, now: OffsetDateTime) -> bool {
    now >= last_seen_at + TOUCH_EVERY
}

/// Console sign-in over a [`ConsoleRepository`].
#[derive(Clone)]
pub struct Console {
    repo: Arc<dyn ConsoleRepository>,
    idle: Duration,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("idle", &self.idle).finish()
    }
}

impl Console {
    /// Sessions end after `idle` without use.
    pub fn new(repo: Arc<dyn ConsoleRepository>, idle: Duration) -> Self {
        Self { repo, idle }
    }

    /// Issues a one-time link token for `operator` in `app`, valid for [`LINK_TTL`].
    pub async fn create_link(
        &self,
        app: &str,
        operator: &str,
        now: OffsetDateTime,
    ) -> Result<String, ConsoleError> {
        let token = new_secret();
        self.repo
            .insert_link(NewLink {
                token_hash: secret_hash(&token),
                app: app.to_owned(),
                operator: operator.to_owned(),
                created_at: now,
                expires_at: now + LINK_TTL,
            })
            .await?;
        Ok(token)
    }

    /// Redeems a link token: answers the new session's id (for the cookie) and operator.
    pub async fn sign_in(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<(String, Operator), ConsoleError> {
        let (app, operator) = self
            .repo
            .redeem_link(secret_hash(token), now)
            .await?
            .ok_or(ConsoleError::LinkInvalid)?;
        let id = new_secret();
        let csrf_token = new_secret();
        self.repo
            .insert_session(StoredSession {
                id_hash: secret_hash(&id),
                app: app.clone(),
                operator: operator.clone(),
                csrf_token: csrf_token.clone(),
                created_at: now,
                last_seen_at: now,
            })
            .await?;
        Ok((
            id,
            Operator {
                app,
                operator,
                csrf_token,
            },
        ))
    }

    /// The operator of an open session, recording its use; `None` when there is no such
    /// session or it has been idle too long.
    pub async fn operator(
        &self,
        session_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Operator>, ConsoleError> {
        let id_hash = secret_hash(session_id);
        let Some(session) = self.repo.session(id_hash.clone()).await? else {
            return Ok(None);
        };
        if !session_alive(session.last_seen_at, self.idle, now) {
            return Ok(None);
        }
        if needs_touch(session.last_seen_at, now) {
            self.repo.touch_session(id_hash, now).await?;
        }
        Ok(Some(Operator {
            app: session.app,
            operator: session.operator,
            csrf_token: session.csrf_token,
        }))
    }

    /// Opens a billing-portal session for `user`; answers its token, for the URL.
    pub async fn create_portal_session(
        &self,
        app: &str,
        user: &str,
        return_url: &str,
        now: OffsetDateTime,
    ) -> Result<(String, PortalSession), ConsoleError> {
        let token = new_secret();
        let session = PortalSession {
            app: app.to_owned(),
            user: user.to_owned(),
            return_url: return_url.to_owned(),
            expires_at: now + PORTAL_TTL,
        };
        self.repo
            .insert_portal_session(secret_hash(&token), session.clone(), now)
            .await?;
        Ok((token, session))
    }

    /// The portal session a URL's token opens; `None` when unknown or expired.
    pub async fn portal(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Option<PortalSession>, ConsoleError> {
        Ok(self
            .repo
            .portal_session(secret_hash(token))
            .await?
            .filter(|s| now < s.expires_at))
    }

    /// The app's portal branding.
    pub async fn branding(&self, app: &str) -> Result<Branding, ConsoleError> {
        self.repo.branding(app.to_owned()).await
    }

    /// Checks and saves the app's portal branding.
    pub async fn set_branding(
        &self,
        app: &str,
        branding: Branding,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Branding, Result<(&'static str, String), ConsoleError>> {
        let branding = branding.validated().map_err(Ok)?;
        self.repo
            .put_branding(app.to_owned(), branding.clone(), actor.to_owned(), now)
            .await
            .map_err(Err)?;
        Ok(branding)
    }

    /// The apps an operator may switch between, in order (at most [`MAX_APPS`]).
    pub async fn apps(&self) -> Result<Vec<String>, ConsoleError> {
        self.repo.apps(MAX_APPS).await
    }

    /// Moves an open session to another registered app; any other is refused, so a typo
    /// never opens an empty ledger.
    pub async fn switch_app(
        &self,
        session_id: &str,
        app: &str,
        now: OffsetDateTime,
    ) -> Result<(), ConsoleError> {
        if self.operator(session_id, now).await?.is_none() {
            return Err(ConsoleError::SessionEnded);
        }
        if !self.apps().await?.iter().any(|a| a == app) {
            return Err(ConsoleError::UnknownApp);
        }
        if self
            .repo
            .set_session_app(secret_hash(session_id), app.to_owned())
            .await?
        {
            Ok(())
        } else {
            Err(ConsoleError::SessionEnded)
        }
    }

    /// Ends the session.
    pub async fn sign_out(
        &self,
        session_id: &str,
        now: OffsetDateTime,
    ) -> Result<(), ConsoleError> {
        self.repo
            .delete_session(secret_hash(session_id), now - self.idle)
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-05 10:00 UTC);

    #[test]
    fn secrets_are_random_and_stored_hashed() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(secret_hash(&a).len(), 64);
        assert_ne!(secret_hash(&a), a);
        assert_eq!(secret_hash(&a), secret_hash(&a));
    }

    #[test]
    fn sessions_end_after_the_idle_time() {
        let idle = Duration::minutes(30);
        assert!(session_alive(NOW, idle, NOW + Duration::minutes(29)));
        assert!(!session_alive(NOW, idle, NOW + Duration::minutes(30)));
        assert!(!needs_touch(NOW, NOW + Duration::seconds(59)));
        assert!(needs_touch(NOW, NOW + Duration::seconds(60)));
    }

    #[test]
    fn branding_is_checked() {
        let ok = Branding {
            display_name: Some("  Acme AI ".into()),
            accent_color: Some("#1A2B3C".into()),
            logo_url: Some("https://cdn.acme.example/logo.png".into()),
        }
        .validated()
        .unwrap();
        assert_eq!(ok.display_name.as_deref(), Some("Acme AI"));
        assert_eq!(ok.accent_color.as_deref(), Some("#1a2b3c"));
        let blank = Branding {
            display_name: Some("  ".into()),
            ..Default::default()
        };
        assert_eq!(blank.validated().unwrap(), Branding::default());
        for (b, field) in [
            (
                Branding {
                    accent_color: Some("red".into()),
                    ..Default::default()
                },
                "accent_color",
            ),
            (
                Branding {
                    accent_color: Some("#12345".into()),
                    ..Default::default()
                },
                "accent_color",
            ),
            (
                Branding {
                    accent_color: Some("#12345g".into()),
                    ..Default::default()
                },
                "accent_color",
            ),
            (
                Branding {
                    logo_url: Some("http://acme.example/l.png".into()),
                    ..Default::default()
                },
                "logo_url",
            ),
            (
                Branding {
                    logo_url: Some("javascript:alert(1)".into()),
                    ..Default::default()
                },
                "logo_url",
            ),
            (
                Branding {
                    logo_url: Some("https://a.example/\"onerror".into()),
                    ..Default::default()
                },
                "logo_url",
            ),
            (
                Branding {
                    display_name: Some("x".repeat(101)),
                    ..Default::default()
                },
                "display_name",
            ),
        ] {
            assert_eq!(b.validated().unwrap_err().0, field);
        }
    }

    #[test]
    fn csrf_must_match_exactly() {
        let op = Operator {
            app: "default".into(),
            operator: "ops".into(),
            csrf_token: "abc123".into(),
        };
        assert!(op.csrf_matches("abc123"));
        assert!(!op.csrf_matches("abc124"));
        assert!(!op.csrf_matches("abc12"));
        assert!(!op.csrf_matches(""));
    }
}
