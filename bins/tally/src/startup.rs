//! Start-up as a value: build the application from settings, learn its port, run it until a
//! signal stops it. The binary and the tests both go through [`Application::build`].

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_http::{HttpService, Protocol};
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::middleware::from_fn;
use actix_web::rt::net::TcpStream;
use actix_web::{App, web};
use jsonwebtoken::Algorithm;
use tally_api::console::ConsoleConfig;
use tally_api::protocol::Enveloped;
use tally_api::{
    AppState, AuthConfig, GatewayAuth, JwtSettings, JwtVerifier, Metrics, ServiceKeys,
};
use tally_catalog::Catalog;
use tally_checkout::{Checkout, CheckoutConfig, Providers, SandboxDriver};
use tally_console::Console;
use tally_ledger::{Clock, Ledger};
use tally_providers::{
    CreemConfig, CreemProvider, HttpClient, HttpConfig, SandboxConfig, SandboxProvider,
    StripeConfig, StripeProvider,
};
use tally_store::{Store, StoreOptions};
use tally_webhooks::{Dispatcher, DispatcherConfig, Webhooks};

use crate::Settings;
use crate::token::{SecretSource, resolve_secret};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Settings are unusable; the message names the setting.
    #[error("{0}")]
    Config(String),
    /// The database could not be reached or migrated.
    #[error("database: {0}")]
    Store(#[from] tally_store::StoreError),
    /// The address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A built, not yet running, Tally server.
pub struct Application {
    server: actix_web::dev::Server,
    port: u16,
    ledger: Ledger,
    sweep_interval: Duration,
    dispatcher: Option<Dispatcher>,
    /// The lock on a SQLite database's `.lock` file, held while the server runs.
    _sqlite_lock: Option<std::fs::File>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

fn jwt_settings(settings: &Settings) -> Result<(JwtSettings, Option<SecretSource>), StartupError> {
    let algorithm = match settings.jwt_algorithm.to_ascii_uppercase().as_str() {
        "HS256" => Algorithm::HS256,
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        "EDDSA" => Algorithm::EdDSA,
        other => {
            return Err(StartupError::Config(format!(
                "jwt_algorithm (TALLY_JWT_ALGORITHM): '{other}' is not one of HS256, RS256, ES256, EdDSA"
            )));
        }
    };
    let (key, source) = if algorithm == Algorithm::HS256 {
        let (secret, source) = resolve_secret(settings).map_err(StartupError::Config)?;
        (secret.expose().as_bytes().to_vec(), Some(source))
    } else {
        let pem = settings.jwt_public_key.as_deref().ok_or_else(|| {
            StartupError::Config(format!(
                "jwt_public_key (TALLY_JWT_PUBLIC_KEY) is required with {}",
                settings.jwt_algorithm
            ))
        })?;
        let pem = if pem.trim_start().starts_with("-----BEGIN") {
            pem.as_bytes().to_vec()
        } else {
            std::fs::read(pem).map_err(|e| {
                StartupError::Config(format!(
                    "jwt_public_key (TALLY_JWT_PUBLIC_KEY): reading {pem}: {e}"
                ))
            })?
        };
        (pem, None)
    };
    Ok((
        JwtSettings {
            algorithm,
            key,
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
            leeway_seconds: settings.jwt_leeway_seconds,
        },
        source,
    ))
}

/// Builds the identity configuration from settings.
pub fn auth_config(
    settings: &Settings,
) -> Result<(AuthConfig, Option<SecretSource>), StartupError> {
    let (jwt, source) = jwt_settings(settings)?;
    let jwt = JwtVerifier::new(&jwt).map_err(|e| StartupError::Config(format!("JWT: {e}")))?;
    let gateway = settings
        .gateway_secret
        .as_ref()
        .map(|s| GatewayAuth::new(s.expose()))
        .transpose()
        .map_err(|e| StartupError::Config(format!("gateway_secret (TALLY_GATEWAY_SECRET): {e}")))?;
    let service_keys = settings
        .service_keys
        .as_ref()
        .map(|s| ServiceKeys::parse(s.expose()))
        .transpose()
        .map_err(|e| StartupError::Config(format!("service_keys (TALLY_SERVICE_KEYS): {e}")))?
        .unwrap_or_default();
    Ok((
        AuthConfig {
            jwt,
            gateway,
            service_keys,
            stored_keys: Arc::default(),
        },
        source,
    ))
}

/// Connects to the configured database and runs pending migrations.
/// One server per SQLite file: an exclusive lock on `<file>.lock`, which the operating system
/// releases when the process ends however it ends, holding the process id for the refusal the
/// next one prints. `None` for PostgreSQL and in-memory databases.
fn lock_sqlite(settings: &Settings) -> Result<Option<std::fs::File>, StartupError> {
    use std::io::{Read, Seek, Write};
    let Ok(tally_store::Backend::Sqlite(path)) =
        tally_store::Backend::from_url(&settings.database_url)
    else {
        return Ok(None);
    };
    if path == ":memory:" {
        return Ok(None);
    }
    let lock_path = format!("{path}.lock");
    let failed = |e: std::io::Error| StartupError::Config(format!("locking {lock_path}: {e}"));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(failed)?;
            file.rewind().map_err(failed)?;
            write!(file, "{}", std::process::id()).map_err(failed)?;
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            file.read_to_string(&mut holder).map_err(failed)?;
            Err(StartupError::Config(format!(
                "{path} is in use by another `tally serve` (process {}): one server per SQLite \
                 file; several nodes share a PostgreSQL database",
                holder.trim()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
    }
}

/// The SQLite file `settings` name, when it does not exist yet (`None` for PostgreSQL, an
/// in-memory database or a file that is there). Only `serve` and `migrate` create a database.
pub fn missing_sqlite_file(settings: &Settings) -> Option<std::path::PathBuf> {
    match tally_store::Backend::from_url(&settings.database_url).ok()? {
        tally_store::Backend::Sqlite(path) if path != ":memory:" => {
            let path = std::path::PathBuf::from(path);
            (!path.exists()).then_some(path)
        }
        _ => None,
    }
}

pub async fn open_store(settings: &Settings) -> Result<Store, StartupError> {
    let store = Store::connect_with(
        &settings.database_url,
        StoreOptions {
            pg_max_connections: settings.pg_max_connections,
            sqlite_readers: settings.sqlite_readers,
            pg_batch_lanes: settings.pg_batch_lanes,
        },
    )
    .await?;
    let applied = store.migrate().await?;
    if applied > 0 {
        tracing::info!(applied, "database migrations applied");
    }
    Ok(store)
}

/// The configured payment channels: a provider whose credentials are absent stays off.
fn payment_providers(
    settings: &Settings,
    port: u16,
) -> Result<(Providers, Option<Arc<dyn SandboxDriver>>), StartupError> {
    let client = HttpClient::new(HttpConfig {
        request_timeout: Duration::from_secs(settings.provider_timeout_seconds),
        max_attempts: settings.provider_max_attempts,
        ..HttpConfig::default()
    })
    .map_err(|e| StartupError::Config(format!("payment providers: {e}")))?;
    let expose = |s: &Option<crate::Secret>| s.as_ref().map(|s| s.expose().to_owned());
    let mut providers = Providers::default();
    if settings.stripe_secret_key.is_some() || settings.stripe_webhook_secret.is_some() {
        providers = providers.with(Arc::new(StripeProvider::new(
            StripeConfig {
                secret_key: expose(&settings.stripe_secret_key),
                webhook_secret: expose(&settings.stripe_webhook_secret),
                api_base: settings.stripe_api_base.trim_end_matches('/').to_owned(),
                ..StripeConfig::default()
            },
            client.clone(),
        )));
    }
    if settings.creem_api_key.is_some() || settings.creem_webhook_secret.is_some() {
        let mut config = CreemConfig::new(
            expose(&settings.creem_api_key),
            expose(&settings.creem_webhook_secret),
        );
        if let Some(base) = &settings.creem_api_base {
            config.api_base = base.trim_end_matches('/').to_owned();
        }
        providers = providers.with(Arc::new(CreemProvider::new(config, client)));
    }
    let mut sandbox: Option<Arc<dyn SandboxDriver>> = None;
    if settings.sandbox_enabled {
        let public_base_url = settings.public_base_url(port);
        let webhook_secret = match &settings.sandbox_webhook_secret {
            Some(s) => s.expose().to_owned(),
            None => {
                let bytes: [u8; 24] = rand::random();
                format!("whsec_sandbox_{}", hex::encode(bytes))
            }
        };
        let provider = SandboxProvider::new(SandboxConfig {
            public_base_url: public_base_url.clone(),
            webhook_secret,
        });
        providers = providers.with(Arc::new(provider.clone()));
        sandbox = Some(Arc::new(provider));
        tracing::warn!(
            page = %format!("{public_base_url}/payment/sandbox/…"),
            "the sandbox payment channel is enabled: anyone who can reach this server can \"pay\" sandbox orders; never enable it in production"
        );
    }
    Ok((providers, sandbox))
}

impl Application {
    /// Connects, migrates, binds. Port 0 picks a free port (see [`Application::port`]).
    pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        let (auth, source) = auth_config(&settings)?;
        match source {
            Some(SecretSource::Generated(path)) => tracing::warn!(
                secret_file = %path.display(),
                "no JWT secret configured: generated one and stored it beside the database; \
                 mint a token with `tally token --user alice` (cargo run --release -- token --user alice)"
            ),
            Some(SecretSource::Stored(path)) => tracing::info!(
                secret_file = %path.display(),
                "using the stored JWT secret; mint a token with `tally token --user alice`"
            ),
            _ => {}
        }
        if auth.service_keys.is_empty() {
            tracing::info!(
                "no service keys configured (TALLY_SERVICE_KEYS): /internal/* refuses every call"
            );
        }
        let sqlite_lock = lock_sqlite(&settings)?;
        let store = open_store(&settings).await?;
        let store_for_checkout = store.clone();
        let store_for_console = store.clone();
        let catalog = Catalog::with_clock(Arc::new(store.clone()), clock.clone());
        let apps = settings
            .configured_apps(&auth.service_keys)
            .map_err(StartupError::Config)?;
        catalog
            .ensure_apps(&apps)
            .await
            .map_err(|e| StartupError::Config(format!("registering the configured apps: {e}")))?;
        let webhooks = Webhooks::new(
            Arc::new(store.clone()),
            clock.clone(),
            settings.webhook_allow_private_urls,
        );
        let dispatcher = if settings.webhooks_enabled {
            let config = DispatcherConfig {
                poll_interval: Duration::from_millis(settings.webhook_poll_ms),
                batch: settings.webhook_batch,
                lease: Duration::from_secs(settings.webhook_lease_seconds),
                timeout: Duration::from_secs(settings.webhook_timeout_seconds),
                allow_private_urls: settings.webhook_allow_private_urls,
            };
            let dispatcher = Dispatcher::new(webhooks.repo(), clock.clone(), config)
                .map_err(|e| StartupError::Config(format!("webhook HTTP client: {e}")))?;
            Some(dispatcher)
        } else {
            None
        };
        if settings.webhook_allow_private_urls {
            tracing::warn!(
                "TALLY_WEBHOOK_ALLOW_PRIVATE_URLS is on: webhook endpoints may point into this network; never enable it in production"
            );
        }
        let checkout_clock = clock.clone();
        let ledger = Ledger::with_clock(Arc::new(store.clone()), clock);
        let pools: tally_api::PoolGauges = Arc::new(move || {
            store
                .pool_stats()
                .into_iter()
                .map(|(name, s)| (name, s.size, s.idle, s.max))
                .collect()
        });
        let batches: tally_api::telemetry::BatchSizes = Arc::new(|| {
            let (buckets, writes) = tally_store::batch_sizes();
            let buckets = tally_store::BATCH_SIZE_BOUNDS.into_iter().zip(buckets);
            (buckets.collect(), writes)
        });
        let units: tally_api::telemetry::BatchUnits = Arc::new(|| {
            let units = tally_store::batch_units().into_iter();
            units
                .map(|(kind, together, alone)| (kind.as_str(), together, alone))
                .collect()
        });
        let metrics = web::Data::new(
            Metrics::new(pools)
                .with_batches(batches)
                .with_batch_units(units),
        );
        let listener = TcpListener::bind(&settings.bind).map_err(|source| StartupError::Bind {
            addr: settings.bind.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                addr: settings.bind.clone(),
                source,
            })?
            .port();
        let (providers, sandbox) = payment_providers(&settings, port)?;
        let channels: Vec<&str> = providers.channels().iter().map(|c| c.as_str()).collect();
        tracing::info!(channels = %channels.join(","), "payment channels");
        let checkout = Checkout::new(
            Arc::new(store_for_checkout),
            catalog.clone(),
            providers,
            CheckoutConfig {
                allowed_redirect_hosts: settings.redirect_hosts(),
            },
            checkout_clock,
        );
        let public_url = settings.public_base_url(port);
        let console = settings.console_enabled.then(|| ConsoleConfig {
            secure_cookie: public_url.starts_with("https://"),
            ..ConsoleConfig::default()
        });
        let sessions = Console::new(
            Arc::new(store_for_console),
            time::Duration::minutes(i64::try_from(settings.console_idle_minutes).unwrap_or(60)),
        );
        let state = web::Data::new(AppState {
            ledger: ledger.clone(),
            catalog,
            checkout,
            sandbox,
            auth,
            webhooks,
            sessions,
            public_url,
            console,
        });
        let body_limit = settings.body_limit_bytes;
        let workers = settings
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let cors = settings.cors();
        cors.validate().map_err(StartupError::Config)?;
        let cors = web::Data::new(cors);
        let local_addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: settings.bind.clone(),
            source,
        })?;
        let builder = actix_server::Server::build();
        let shutdown = builder.graceful_shutdown_signal();
        // What `HttpServer::listen` sets up, with each connection wrapped so the errors the HTTP
        // layer answers itself carry the JSON envelope (`tally_api::protocol`).
        let server = builder
            .workers(workers)
            .shutdown_timeout(30)
            .listen("tally", listener, move || {
                let (state, metrics, cors) = (state.clone(), metrics.clone(), cors.clone());
                let app = App::new()
                    .app_data(cors)
                    .wrap(from_fn(tally_api::cors))
                    .wrap(from_fn(tally_api::observe))
                    .configure(move |cfg| tally_api::configure(cfg, state, metrics, body_limit));
                let shutdown = shutdown.clone();
                let http = HttpService::build()
                    .graceful_shutdown_signal(move || {
                        let shutdown = shutdown.clone();
                        async move { shutdown.notified().await }
                    })
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .local_addr(local_addr)
                    .finish(map_config(
                        app.into_factory()
                            .map_err(|e: actix_web::Error| e.error_response()),
                        |_| AppConfig::default(),
                    ));
                fn_service(|io: TcpStream| async move {
                    let peer = io.peer_addr().ok();
                    Ok((Enveloped::new(io), Protocol::Http1, peer))
                })
                .and_then(http)
            })
            .map_err(|source| StartupError::Bind {
                addr: settings.bind.clone(),
                source,
            })?
            .run();
        tracing::info!(address = %settings.bind, port, workers, "tally listening");
        Ok(Self {
            server,
            port,
            ledger,
            sweep_interval: Duration::from_secs(settings.sweep_interval_seconds),
            dispatcher,
            _sqlite_lock: sqlite_lock,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The ledger the server uses (tests inspect it directly).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Serves until SIGTERM/SIGINT (graceful: in-flight requests finish), sweeping expired lots
    /// in the background.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let sweeper = (!self.sweep_interval.is_zero()).then(|| {
            let (ledger, every) = (self.ledger.clone(), self.sweep_interval);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    match ledger.sweep_expired(1_000).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(accounts = n, "expired credits swept"),
                        Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
                    }
                }
            })
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let dispatcher = self.dispatcher.map(|d| tokio::spawn(d.run(stopped)));
        let result = self.server.await;
        if let Some(s) = sweeper {
            s.abort();
        }
        let _ = stop.send(true);
        if let Some(d) = dispatcher {
            // A round in flight finishes (its attempts are recorded); one stuck past the
            // timeout is left to be retried after its lease.
            if tokio::time::timeout(Duration::from_secs(20), d)
                .await
                .is_err()
            {
                tracing::warn!("webhook dispatcher did not stop in time");
            }
        }
        tracing::info!("tally stopped");
        result
    }
}
