//! Who is calling: JWT bearer tokens, the opt-in gateway headers, and service API keys.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::{Either, LocalBoxFuture};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tally_ledger::AccountRef;
use tally_ledger::model::{validate_app_key, validate_user_id};

use crate::AppState;
use crate::error::ApiError;

/// The app key used when a caller names none.
pub const DEFAULT_APP: &str = "default";
const GATEWAY_SECRET_HEADER: &str = "x-gateway-secret";

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An end user.
    User,
    /// An administrator of the app.
    Admin,
}

/// An authenticated end user or admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// App scope.
    pub app: String,
    /// User id.
    pub user: String,
    /// Role.
    pub role: Role,
}

impl Caller {
    /// The caller's own account.
    pub fn account(&self) -> AccountRef {
        AccountRef {
            app: self.app.clone(),
            user: self.user.clone(),
        }
    }
}

/// How JWTs are checked.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

/// The key material and claims policy for [`JwtVerifier`].
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// The one accepted algorithm: HS256, RS256, ES256 or EdDSA.
    pub algorithm: Algorithm,
    /// HS256 shared secret, or the PEM public key for the asymmetric algorithms.
    pub key: Vec<u8>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub leeway_seconds: u64,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    app: Option<String>,
}

impl JwtVerifier {
    /// Builds a verifier; fails on a key that does not fit the algorithm.
    pub fn new(s: &JwtSettings) -> Result<Self, String> {
        let key =
            match s.algorithm {
                Algorithm::HS256 => {
                    if s.key.len() < 32 {
                        return Err("the HS256 secret must be at least 32 bytes".into());
                    }
                    DecodingKey::from_secret(&s.key)
                }
                Algorithm::RS256 => DecodingKey::from_rsa_pem(&s.key)
                    .map_err(|e| format!("RS256 public key: {e}"))?,
                Algorithm::ES256 => DecodingKey::from_ec_pem(&s.key)
                    .map_err(|e| format!("ES256 public key: {e}"))?,
                Algorithm::EdDSA => DecodingKey::from_ed_pem(&s.key)
                    .map_err(|e| format!("EdDSA public key: {e}"))?,
                other => {
                    return Err(format!(
                        "unsupported JWT algorithm {other:?}; use HS256, RS256, ES256 or EdDSA"
                    ));
                }
            };
        let mut validation = Validation::new(s.algorithm);
        validation.leeway = s.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &s.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &s.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Self { key, validation })
    }

    fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))?;
        let c = data.claims;
        caller(c.sub, c.role.as_deref(), c.app)
    }
}

fn caller(user: String, role: Option<&str>, app: Option<String>) -> Result<Caller, ApiError> {
    validate_user_id(&user)
        .map_err(|_| ApiError::unauthorized("invalid user id in credentials"))?;
    let app = app.unwrap_or_else(|| DEFAULT_APP.to_owned());
    validate_app_key(&app).map_err(|_| ApiError::unauthorized("invalid app key in credentials"))?;
    let role = match role {
        Some("admin") => Role::Admin,
        None | Some("user") => Role::User,
        Some(_) => return Err(ApiError::unauthorized("unknown role in credentials")),
    };
    Ok(Caller { app, user, role })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Accepts `X-User-Id`/`X-User-Role`/`X-App-Key` from a gateway that proves itself with a
/// shared secret.
#[derive(Clone)]
pub struct GatewayAuth {
    secret_hash: [u8; 32],
}

impl std::fmt::Debug for GatewayAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayAuth(..)")
    }
}

impl GatewayAuth {
    /// Gateway mode with this shared secret (at least 16 characters).
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.len() < 16 {
            return Err("the gateway secret must be at least 16 characters".into());
        }
        Ok(Self {
            secret_hash: sha256(secret.as_bytes()),
        })
    }

    fn verify(&self, req: &HttpRequest) -> Result<Caller, ApiError> {
        let presented = header(req, GATEWAY_SECRET_HEADER)
            .ok_or_else(|| ApiError::unauthorized("gateway headers need the gateway secret"))?;
        if !bool::from(sha256(presented.as_bytes()).ct_eq(&self.secret_hash)) {
            return Err(ApiError::unauthorized("wrong gateway secret"));
        }
        let user = header(req, "x-user-id").unwrap_or_default().to_owned();
        caller(
            user,
            header(req, "x-user-role"),
            header(req, "x-app-key").map(str::to_owned),
        )
    }

    /// The console operator a gateway request names: an admin's headers with the right secret,
    /// `None` for anything else (no gateway secret, a wrong one, a user's role). Its CSRF token
    /// is derived from the gateway secret and the operator, so that the forms it posts back
    /// through the gateway check without a stored session.
    pub fn console_operator(&self, req: &HttpRequest) -> Option<tally_console::Operator> {
        header(req, GATEWAY_SECRET_HEADER)?;
        let caller = self.verify(req).ok()?;
        if caller.role != Role::Admin {
            return None;
        }
        let mut material = self.secret_hash.to_vec();
        for part in ["console-csrf", caller.app.as_str(), caller.user.as_str()] {
            material.extend_from_slice(part.as_bytes());
            material.push(0);
        }
        Some(tally_console::Operator {
            csrf_token: hex::encode(sha256(&material)),
            app: caller.app,
            operator: caller.user,
        })
    }
}

/// Service API keys, kept only as SHA-256 hashes and compared in constant time.
#[derive(Clone, Default)]
pub struct ServiceKeys {
    entries: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceKeys({} keys)", self.entries.len())
    }
}

impl ServiceKeys {
    /// Parses `KEY` or `APP=KEY` entries separated by commas; a bare key means app `default`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (app, key) = match item.split_once('=') {
                Some((app, key)) => (app.trim(), key.trim()),
                None => (DEFAULT_APP, item),
            };
            validate_app_key(app)
                .map_err(|_| format!("service key for app '{app}': invalid app key"))?;
            if key.len() < 16 {
                return Err(format!(
                    "service key for app '{app}' must be at least 16 characters"
                ));
            }
            entries.push((app.to_owned(), sha256(key.as_bytes())));
        }
        Ok(Self { entries })
    }

    /// Whether no key is configured (the service API is then closed).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The apps the keys act for: registered by configuration at start-up.
    pub fn apps(&self) -> Vec<String> {
        let mut apps: Vec<String> = self.entries.iter().map(|(app, _)| app.clone()).collect();
        apps.sort();
        apps.dedup();
        apps
    }

    /// The app a key belongs to. Every entry is compared, so timing reveals nothing.
    fn app_for(&self, key: &str) -> Option<String> {
        let presented = sha256(key.as_bytes());
        let mut found = None;
        for (app, hash) in &self.entries {
            if bool::from(presented.ct_eq(hash)) && found.is_none() {
                found = Some(app.clone());
            }
        }
        found
    }
}

/// How long a node trusts a stored service key it has looked up: a key revoked on another
/// node stops opening calls here within this time (on the node that revoked it, at once).
pub const STORED_KEY_TTL: Duration = Duration::from_secs(5);

const STORED_KEY_CACHE_MAX: usize = 10_000;

/// Stored service keys this node found recently, by the hash of their secret, so that a call
/// does not read the database each time.
#[derive(Debug, Default)]
pub struct StoredKeyCache {
    found: Mutex<Found>,
}

#[derive(Debug, Default)]
struct Found {
    /// Bumped by every revocation on this node: a lookup that began before it is not kept.
    generation: u64,
    keys: HashMap<[u8; 32], (String, Instant)>,
}

impl StoredKeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Found> {
        self.found.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The app of a key found recently, or the generation a database lookup starts in.
    fn get(&self, hash: &[u8; 32]) -> Result<String, u64> {
        let found = self.lock();
        found
            .keys
            .get(hash)
            .filter(|(_, at)| at.elapsed() < STORED_KEY_TTL)
            .map(|(app, _)| app.clone())
            .ok_or(found.generation)
    }

    /// Keeps what a lookup begun in `generation` found, unless a revocation came since.
    fn put(&self, hash: [u8; 32], app: String, generation: u64) {
        let mut found = self.lock();
        if found.generation != generation {
            return;
        }
        if found.keys.len() >= STORED_KEY_CACHE_MAX {
            found.keys.clear();
        }
        found.keys.insert(hash, (app, Instant::now()));
    }

    /// Forgets every key found, after a revocation on this node.
    pub fn forget_all(&self) {
        let mut found = self.lock();
        found.generation += 1;
        found.keys.clear();
    }
}

/// Whether `key` has the shape of a stored key's secret (`tally_sk_` and 48 hex digits): only
/// those are looked up in the database, so that a wrong key costs no database read.
fn looks_stored(key: &str) -> bool {
    key.strip_prefix("tally_sk_")
        .is_some_and(|hex| hex.len() == 48 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A service key just made: its secret (shown once), the hash stored and the prefix kept.
#[derive(Debug)]
pub struct MadeKey {
    /// `tally_sk_` and 48 hex digits.
    pub secret: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// The secret's first 13 characters.
    pub prefix: String,
}

/// Makes a service key secret from 24 random bytes.
pub fn new_service_key() -> MadeKey {
    let secret = format!("tally_sk_{}", hex::encode(rand::random::<[u8; 24]>()));
    MadeKey {
        hash: hex::encode(sha256(secret.as_bytes())),
        prefix: secret.chars().take(13).collect(),
        secret,
    }
}

/// Identity configuration shared by the extractors.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Bearer-token verification.
    pub jwt: JwtVerifier,
    /// Gateway-header mode, off unless configured.
    pub gateway: Option<GatewayAuth>,
    /// Keys for `/internal/*` from the configuration (`TALLY_SERVICE_KEYS`).
    pub service_keys: ServiceKeys,
    /// Keys stored in the database that this node found recently.
    pub stored_keys: Arc<StoredKeyCache>,
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn bearer(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    match header(req, "authorization") {
        None => Ok(None),
        Some(v) => match v.split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                Ok(Some(token.trim()))
            }
            _ => Err(ApiError::unauthorized(
                "malformed Authorization header; use 'Bearer <token>'",
            )),
        },
    }
}

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(ApiError::internal)
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let auth = &state(req)?.auth;
    let caller = if let Some(token) = bearer(req)? {
        auth.jwt.verify(token)
    } else {
        match &auth.gateway {
            Some(gw) if req.headers().contains_key("x-user-id") => gw.verify(req),
            _ => Err(ApiError::unauthorized("missing credentials")),
        }
    }?;
    // On the request's span, so that every later log line of the request names them.
    let span = tracing::Span::current();
    span.record("app", caller.app.as_str());
    span.record("user", caller.user.as_str());
    Ok(caller)
}

/// An extractor's answer: at once when memory settles it, else after one database read.
type Checked<T> = Either<Ready<Result<T, ApiError>>, LocalBoxFuture<'static, Result<T, ApiError>>>;

/// Lets `found` through only when its app is registered, so that a typo in a token's `app`
/// claim or an `X-App-Key` header never opens a new, empty ledger. A registered app is known
/// from memory after its first request; an unknown one is looked up each time.
fn in_registered_app<T: 'static>(
    req: &HttpRequest,
    found: Result<T, ApiError>,
    app_of: fn(&T) -> &str,
) -> Checked<T> {
    let (found, state) = match found.and_then(|f| Ok((f, state(req)?))) {
        Ok(pair) => pair,
        Err(e) => return Either::Left(ready(Err(e))),
    };
    if state.catalog.is_known(app_of(&found)) {
        return Either::Left(ready(Ok(found)));
    }
    let catalog = state.catalog.clone();
    Either::Right(Box::pin(async move {
        let app = app_of(&found);
        if catalog.is_registered(app).await? {
            Ok(found)
        } else {
            Err(ApiError::unknown_app(app))
        }
    }))
}

/// An authenticated user (any role).
#[derive(Debug, Clone)]
pub struct User(pub Caller);

impl FromRequest for User {
    type Error = ApiError;
    type Future = Checked<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        in_registered_app(req, authenticate(req).map(User), |u| &u.0.app)
    }
}

/// An authenticated admin.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Checked<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let admin = authenticate(req).and_then(|c| match c.role {
            Role::Admin => Ok(Admin(c)),
            Role::User => Err(ApiError::forbidden("admin role required")),
        });
        in_registered_app(req, admin, |a| &a.0.app)
    }
}

/// A calling service, identified by its API key; the key decides the app.
#[derive(Debug, Clone)]
pub struct Service {
    /// App scope of the key.
    pub app: String,
}

/// Where the `Service` extractor finds a key's app.
enum KeyLookup {
    /// In memory: a configured key, or a stored one found recently.
    Known(Service),
    /// In the database: a stored key's hash, and the cache generation the lookup starts in.
    Stored(web::Data<AppState>, [u8; 32], u64),
}

impl FromRequest for Service {
    type Error = ApiError;
    type Future = Checked<Self>;

    /// A configured key is found in memory; a stored one in the cache of recent finds, else in
    /// the database. Both name registered apps (configuration's at start-up, stored keys by a
    /// foreign key).
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let lookup = (|| {
            let state = state(req)?;
            let key = bearer(req)?.ok_or_else(|| ApiError::unauthorized("missing service key"))?;
            if let Some(app) = state.auth.service_keys.app_for(key) {
                return Ok(KeyLookup::Known(Service { app }));
            }
            if !looks_stored(key) {
                return Err(ApiError::unauthorized("unknown service key"));
            }
            let hash = sha256(key.as_bytes());
            Ok(match state.auth.stored_keys.get(&hash) {
                Ok(app) => KeyLookup::Known(Service { app }),
                Err(generation) => KeyLookup::Stored(state.clone(), hash, generation),
            })
        })();
        match lookup {
            Err(e) => Either::Left(ready(Err(e))),
            Ok(KeyLookup::Known(found)) => {
                tracing::Span::current().record("app", found.app.as_str());
                Either::Left(ready(Ok(found)))
            }
            Ok(KeyLookup::Stored(state, hash, generation)) => Either::Right(Box::pin(async move {
                match state.catalog.service_key_app(&hex::encode(hash)).await? {
                    Some(app) => {
                        tracing::Span::current().record("app", app.as_str());
                        state.auth.stored_keys.put(hash, app.clone(), generation);
                        Ok(Service { app })
                    }
                    None => Err(ApiError::unauthorized("unknown service key")),
                }
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stored_shaped_keys_are_looked_up() {
        let made = new_service_key();
        assert!(looks_stored(&made.secret), "{}", made.secret);
        assert_eq!(made.prefix, made.secret[..13]);
        assert_eq!(made.hash, hex::encode(sha256(made.secret.as_bytes())));
        for other in [
            "ci-service-key-0123456789",
            "tally_sk_",
            &made.secret[..made.secret.len() - 1],
            &format!("{}g", &made.secret[..made.secret.len() - 1]),
        ] {
            assert!(!looks_stored(other), "{other}");
        }
    }

    #[test]
    fn a_lookup_begun_before_a_revocation_is_not_kept() {
        let cache = StoredKeyCache::default();
        let (a, b) = ([1; 32], [2; 32]);
        let generation = cache.get(&a).unwrap_err();
        cache.put(a, "default".into(), generation);
        assert_eq!(cache.get(&a).as_deref(), Ok("default"));
        // A lookup starts, a revocation lands, then the lookup answers: not kept.
        let before = cache.get(&b).unwrap_err();
        cache.forget_all();
        cache.put(b, "default".into(), before);
        assert!(cache.get(&b).is_err());
        assert!(cache.get(&a).is_err(), "every key is forgotten");
    }

    #[test]
    fn service_keys_parse_apps_and_bare_keys() {
        let keys = ServiceKeys::parse("0123456789abcdef, shop=fedcba9876543210").unwrap();
        assert_eq!(keys.app_for("0123456789abcdef").as_deref(), Some("default"));
        assert_eq!(keys.app_for("fedcba9876543210").as_deref(), Some("shop"));
        assert_eq!(keys.app_for("nope-nope-nope-nope"), None);
        assert!(ServiceKeys::parse("short").is_err());
        assert!(ServiceKeys::parse("bad app=0123456789abcdef").is_err());
    }
}
