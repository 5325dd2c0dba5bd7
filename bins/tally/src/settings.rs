//! Typed configuration: defaults, then an optional TOML file, then `TALLY_*` environment
//! variables. Unknown keys are rejected; secrets never print.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A value that must not appear in logs or `Debug` output.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Every setting, with its default. Each one is also read from `TALLY_<NAME>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `sqlite://PATH` or `postgres://…`.
    pub database_url: String,
    /// Address to listen on.
    pub bind: String,
    /// HTTP worker threads; default: one per core.
    pub workers: Option<usize>,
    /// HS256 secret; generated beside an SQLite database when absent.
    pub jwt_secret: Option<Secret>,
    /// HS256, RS256, ES256 or EdDSA.
    pub jwt_algorithm: String,
    /// PEM public key (or a path to one) for RS256/ES256/EdDSA.
    pub jwt_public_key: Option<String>,
    /// Required `iss` claim.
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, seconds.
    pub jwt_leeway_seconds: u64,
    /// Enables gateway-header mode; the gateway sends it as `X-Gateway-Secret`.
    pub gateway_secret: Option<Secret>,
    /// `KEY` or `APP=KEY`, comma-separated.
    pub service_keys: Option<Secret>,
    /// Apps registered at start-up besides `default` and the apps of `service_keys`,
    /// comma-separated keys; requests naming any other unregistered app are refused.
    pub apps: String,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// How often the expiry sweep runs; 0 disables it.
    pub sweep_interval_seconds: u64,
    /// PostgreSQL connections in use at once per node.
    pub pg_max_connections: usize,
    /// SQLite reader connections.
    pub sqlite_readers: usize,
    /// PostgreSQL: lanes batching the money paths' writes; 0 turns batching off.
    pub pg_batch_lanes: usize,
    /// Stripe secret API key (`sk_test_…`/`sk_live_…`); the Stripe channel is off without it.
    pub stripe_secret_key: Option<Secret>,
    /// Stripe webhook endpoint secret (`whsec_…`).
    pub stripe_webhook_secret: Option<Secret>,
    /// Stripe API base URL.
    pub stripe_api_base: String,
    /// Creem API key (`creem_test_…` or `creem_…`); the Creem channel is off without it.
    pub creem_api_key: Option<Secret>,
    /// Creem webhook secret.
    pub creem_webhook_secret: Option<Secret>,
    /// Creem API base URL; default: the test host for `creem_test_` keys, else the live host.
    pub creem_api_base: Option<String>,
    /// Enables the `sandbox` channel (a local test checkout page; never in production).
    pub sandbox_enabled: bool,
    /// Secret the sandbox signs its events with; random per start when absent.
    pub sandbox_webhook_secret: Option<Secret>,
    /// Public base URL of this server, for links it hands out (the sandbox page); default:
    /// `http://` + the bound address.
    pub public_url: Option<String>,
    /// Comma-separated hosts that redirect URLs may point at (`*.example.com` allows
    /// sub-domains).
    pub allowed_redirect_hosts: String,
    /// Timeout of one call to a payment provider, seconds.
    pub provider_timeout_seconds: u64,
    /// Attempts per provider call (retries on network errors, 409, 429 and 5xx).
    pub provider_max_attempts: u32,
    /// Comma-separated browser origins allowed to call the API (`https://app.example`, or `*`);
    /// none by default.
    pub cors_origins: String,
    /// Sends `Access-Control-Allow-Credentials: true` to allowed origins (not with `*`).
    pub cors_allow_credentials: bool,
    /// Runs the outbound-webhook dispatcher in this process.
    pub webhooks_enabled: bool,
    /// Lets webhook endpoints point at loopback, private and link-local addresses (development
    /// and tests only).
    pub webhook_allow_private_urls: bool,
    /// How often the dispatcher looks for due deliveries when idle, milliseconds.
    pub webhook_poll_ms: u64,
    /// Timeout of one delivery attempt, seconds.
    pub webhook_timeout_seconds: u64,
    /// How long a claimed delivery is reserved for the process that claimed it, seconds.
    pub webhook_lease_seconds: u64,
    /// Deliveries claimed and sent concurrently per round.
    pub webhook_batch: i64,
    /// Serves the operators' console at `/console`.
    pub console_enabled: bool,
    /// A console session ends after this many minutes without a request.
    pub console_idle_minutes: u64,
    /// `json` or `pretty`.
    pub log_format: String,
    /// Default log filter when `RUST_LOG` is unset.
    pub log_level: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: "sqlite://tally.db".into(),
            bind: "127.0.0.1:8080".into(),
            workers: None,
            jwt_secret: None,
            jwt_algorithm: "HS256".into(),
            jwt_public_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_seconds: 30,
            gateway_secret: None,
            service_keys: None,
            apps: String::new(),
            body_limit_bytes: 64 * 1024,
            sweep_interval_seconds: 60,
            pg_max_connections: 16,
            sqlite_readers: 4,
            pg_batch_lanes: 8,
            stripe_secret_key: None,
            stripe_webhook_secret: None,
            stripe_api_base: "https://api.stripe.com".into(),
            creem_api_key: None,
            creem_webhook_secret: None,
            creem_api_base: None,
            sandbox_enabled: false,
            sandbox_webhook_secret: None,
            public_url: None,
            allowed_redirect_hosts: "localhost,127.0.0.1".into(),
            provider_timeout_seconds: 15,
            provider_max_attempts: 3,
            cors_origins: String::new(),
            cors_allow_credentials: false,
            webhooks_enabled: true,
            webhook_allow_private_urls: false,
            webhook_poll_ms: 500,
            webhook_timeout_seconds: 15,
            webhook_lease_seconds: 60,
            webhook_batch: 32,
            console_enabled: true,
            console_idle_minutes: 60,
            log_format: "json".into(),
            log_level: "info".into(),
        }
    }
}

const KEYS: &[&str] = &[
    "database_url",
    "bind",
    "workers",
    "jwt_secret",
    "jwt_algorithm",
    "jwt_public_key",
    "jwt_issuer",
    "jwt_audience",
    "jwt_leeway_seconds",
    "gateway_secret",
    "service_keys",
    "apps",
    "body_limit_bytes",
    "sweep_interval_seconds",
    "pg_max_connections",
    "sqlite_readers",
    "pg_batch_lanes",
    "stripe_secret_key",
    "stripe_webhook_secret",
    "stripe_api_base",
    "creem_api_key",
    "creem_webhook_secret",
    "creem_api_base",
    "sandbox_enabled",
    "sandbox_webhook_secret",
    "public_url",
    "allowed_redirect_hosts",
    "provider_timeout_seconds",
    "provider_max_attempts",
    "cors_origins",
    "cors_allow_credentials",
    "webhooks_enabled",
    "webhook_allow_private_urls",
    "webhook_poll_ms",
    "webhook_timeout_seconds",
    "webhook_lease_seconds",
    "webhook_batch",
    "console_enabled",
    "console_idle_minutes",
    "log_format",
    "log_level",
];

/// `TALLY_*` names that are not settings: Tally's own test and bench tools read them, and apps
/// receiving its webhooks keep their endpoint secret in one (docs/events.md). Left alone.
const OTHER_TALLY_VARS: &[&str] = &[
    "TALLY_TEST_POSTGRES_URL",
    "TALLY_TEST_PYTHON",
    "TALLY_TEST_CHROMIUM",
    "TALLY_BENCH_POSTGRES_URL",
    "TALLY_ENDPOINT_SECRET",
];

/// Refuses a `TALLY_*` variable that names no setting (a misspelt one would be silently
/// ignored), naming the closest setting, as an unknown key in the TOML file is refused.
pub fn check_environment(names: impl IntoIterator<Item = String>) -> Result<(), String> {
    for name in names {
        let Some(key) = name.strip_prefix("TALLY_") else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        if KEYS.contains(&key.as_str()) || OTHER_TALLY_VARS.contains(&name.as_str()) {
            continue;
        }
        let closest = KEYS
            .iter()
            .min_by_key(|known| strsim::levenshtein(known, &key))
            .map_or_else(String::new, |known| {
                format!("; did you mean TALLY_{}?", known.to_ascii_uppercase())
            });
        return Err(format!(
            "{name} is no setting{closest} (every setting: docs/operations.md)"
        ));
    }
    Ok(())
}

impl Settings {
    /// The apps the configuration registers: `default`, those of `TALLY_APPS`, and those the
    /// service keys act for.
    pub fn configured_apps(
        &self,
        service_keys: &tally_api::ServiceKeys,
    ) -> Result<Vec<String>, String> {
        let mut apps = vec![tally_api::auth::DEFAULT_APP.to_owned()];
        for app in self
            .apps
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            if !tally_kernel::is_app_key(app) {
                return Err(format!(
                    "apps (TALLY_APPS): '{app}' {}",
                    tally_kernel::APP_KEY_RULE
                ));
            }
            apps.push(app.to_owned());
        }
        apps.extend(service_keys.apps());
        apps.sort();
        apps.dedup();
        Ok(apps)
    }

    /// Loads defaults, then `file` (when given, it must exist), then the environment (where a
    /// `TALLY_*` variable that names no setting is refused).
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        check_environment(
            std::env::vars_os().map(|(name, _)| name.to_string_lossy().into_owned()),
        )?;
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("TALLY_").only(KEYS));
        let settings: Settings = figment
            .extract()
            .map_err(|e| format!("configuration: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    /// The base URL of links this server hands out (the sandbox page, console links):
    /// `public_url`, else `http://` + the bound host (loopback for a wildcard bind) and `port`.
    pub fn public_base_url(&self, port: u16) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let host = self
            .bind
            .rsplit_once(':')
            .map_or("127.0.0.1", |(host, _)| host);
        let host = if host == "0.0.0.0" || host == "[::]" {
            "127.0.0.1"
        } else {
            host
        };
        format!("http://{host}:{port}")
    }

    /// The port `bind` names (0 when it names none).
    pub fn bind_port(&self) -> u16 {
        self.bind
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(0)
    }

    fn validate(&self) -> Result<(), String> {
        if !matches!(self.log_format.as_str(), "json" | "pretty") {
            return Err("log_format (TALLY_LOG_FORMAT) must be 'json' or 'pretty'".into());
        }
        if self.body_limit_bytes < 1024 {
            return Err("body_limit_bytes (TALLY_BODY_LIMIT_BYTES) must be at least 1024".into());
        }
        if self.provider_timeout_seconds == 0 {
            return Err(
                "provider_timeout_seconds (TALLY_PROVIDER_TIMEOUT_SECONDS) must be at least 1"
                    .into(),
            );
        }
        if !(1..=10).contains(&self.provider_max_attempts) {
            return Err("provider_max_attempts (TALLY_PROVIDER_MAX_ATTEMPTS) must be 1-10".into());
        }
        if !(1..=300).contains(&self.webhook_timeout_seconds) {
            return Err(
                "webhook_timeout_seconds (TALLY_WEBHOOK_TIMEOUT_SECONDS) must be 1-300".into(),
            );
        }
        if self.webhook_lease_seconds <= self.webhook_timeout_seconds {
            return Err(
                "webhook_lease_seconds (TALLY_WEBHOOK_LEASE_SECONDS) must exceed webhook_timeout_seconds"
                    .into(),
            );
        }
        if !(1..=1000).contains(&self.webhook_batch) {
            return Err("webhook_batch (TALLY_WEBHOOK_BATCH) must be 1-1000".into());
        }
        if !(1..=10_080).contains(&self.console_idle_minutes) {
            return Err(
                "console_idle_minutes (TALLY_CONSOLE_IDLE_MINUTES) must be 1-10080 (a week)".into(),
            );
        }
        if self.webhook_poll_ms == 0 {
            return Err("webhook_poll_ms (TALLY_WEBHOOK_POLL_MS) must be at least 1".into());
        }
        self.cors().validate()?;
        if self.workers == Some(0) {
            return Err("workers (TALLY_WORKERS) must be at least 1".into());
        }
        Ok(())
    }

    /// The CORS configuration.
    pub fn cors(&self) -> tally_api::CorsConfig {
        tally_api::CorsConfig {
            origins: self
                .cors_origins
                .split(',')
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            allow_credentials: self.cors_allow_credentials,
        }
    }

    /// The allowed redirect hosts as a list.
    pub fn redirect_hosts(&self) -> Vec<String> {
        self.allowed_redirect_hosts
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect()
    }

    /// Where a generated JWT secret lives: beside the SQLite database file. PostgreSQL has none
    /// (every node must share a configured one); a URL Tally cannot read says why.
    pub fn secret_file(&self) -> Result<PathBuf, String> {
        match tally_store::Backend::from_url(&self.database_url).map_err(|e| e.to_string())? {
            tally_store::Backend::Sqlite(path) => Ok(PathBuf::from(format!("{path}.secret"))),
            tally_store::Backend::Postgres(_) => Err(
                "TALLY_JWT_SECRET is required with PostgreSQL: every node must share one secret"
                    .to_owned(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_environment;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_misspelt_setting_is_refused_with_the_closest_name() {
        let err = check_environment(names(&["HOME", "TALLY_SANDBOX_ENABLE"])).unwrap_err();
        assert!(err.contains("TALLY_SANDBOX_ENABLE is no setting"), "{err}");
        assert!(err.contains("did you mean TALLY_SANDBOX_ENABLED?"), "{err}");
        let err = check_environment(names(&["TALLY_DATABSE_URL"])).unwrap_err();
        assert!(err.contains("TALLY_DATABASE_URL"), "{err}");
    }

    #[test]
    fn settings_and_the_tools_names_pass() {
        assert!(
            check_environment(names(&[
                "PATH",
                "TALLY_DATABASE_URL",
                "TALLY_log_level",
                "TALLY_TEST_POSTGRES_URL",
                "TALLY_ENDPOINT_SECRET",
                "NOT_TALLY_THING",
            ]))
            .is_ok()
        );
    }
}
