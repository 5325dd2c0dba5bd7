//! Tally's storage adapter: one Diesel implementation of the repository ports of the ledger,
//! the catalog, checkout, the webhooks and the console for both SQLite (embedded, the default)
//! and PostgreSQL (pooled, for several stateless nodes).
//!
//! Another Rust service links `tally-ledger` and `tally-store` to spend credits against the same
//! database the server uses, with no HTTP in between:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let url = format!("sqlite://{}", dir.path().join("tally.db").display());
//! use tally_ledger::{AccountRef, CaptureRequest, Ledger, ReserveRequest};
//! use tally_store::Store;
//!
//! // `url` is what the server uses: sqlite://tally.db or postgres://…
//! let store = Store::connect(&url).await?;
//! store.migrate().await?;
//! let ledger = Ledger::new(store);
//! let alice = AccountRef::new("default", "alice")?;
//! ledger.grant(alice.clone(), 100, "Welcome".into(), Some("welcome-alice".into()), None).await?;
//!
//! // Check, then charge a known cost; the key makes a retry charge once.
//! assert!(ledger.check(alice.clone(), 30).await?.sufficient);
//! let charge = ledger.spend(alice.clone(), 30, "Embedding".into(), Some("call-1".into()), None).await?;
//! assert_eq!(charge.balance_after, 70);
//!
//! // A streamed call: reserve an estimate, capture the real cost, the rest returns.
//! let hold = ledger
//!     .reserve(ReserveRequest {
//!         account: alice.clone(),
//!         credits: 50,
//!         ttl_seconds: 60,
//!         description: "Chat completion".into(),
//!         idempotency_key: Some("call-2".into()),
//!         metadata: None,
//!     })
//!     .await?;
//! assert_eq!(ledger.balance(alice.clone()).await?.available, 20);
//! let (_, usage) = ledger
//!     .capture(
//!         CaptureRequest { app: "default".into(), hold_id: hold.id, credits: 35, description: None, metadata: None },
//!         None,
//!     )
//!     .await?;
//! assert_eq!(usage.map(|t| t.amount), Some(-35));
//! assert_eq!(ledger.balance(alice).await?.available, 35);
//! # Ok(()) }
//! ```

mod batch;
pub use batch::{BATCH_SIZE_BOUNDS, UnitKind, batch_sizes, batch_units};
mod cached;
mod catalog_repo;
mod catalog_rows;
mod checkout_repo;
mod checkout_rows;
mod console_repo;
mod exec;
mod ops;
mod outbox;
mod pg;
mod pg_batch;
mod predicates;
mod pricing_cache;
mod read_time;
mod repo;
mod rows;
pub mod schema;
mod sqlite;
mod sqlite_rt;
mod usage_rows;
mod webhook_repo;

use diesel::{Connection, SqliteConnection};
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tally_catalog::CatalogError;
use tally_checkout::CheckoutError;
use tally_ledger::LedgerError;

/// Migrations for PostgreSQL, embedded in the binary.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
/// Migrations for SQLite, embedded in the binary.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

pub use sqlite_rt::SqliteRuntime;

/// A SQLite connection driven from async code: each statement runs on tokio's blocking pool, or
/// inline when the whole store operation was already moved onto a blocking thread (see
/// [`SqliteRuntime`]).
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection, SqliteRuntime>;

// `busy_timeout` comes first: the statements after it (`journal_mode` in particular) may need a
// lock another connection holds, and must wait for it rather than fail with "database is locked".
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;";

/// Storage failures, mapped to [`LedgerError`] at the port boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A domain rule refused the operation.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A catalog rule refused the operation.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A checkout rule refused the operation.
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    /// The database refused or failed a statement.
    #[error("database error")]
    Db(#[from] diesel::result::Error),
    /// No connection could be had.
    #[error("database connection failed: {0}")]
    Connection(String),
    /// The database URL or options are unusable.
    #[error("{0}")]
    Config(String),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Two requests with one idempotency key raced past the account lock.
    #[error("idempotency key raced")]
    IdempotencyRace,
    /// Stored data contradicts the ledger's rules.
    #[error("stored data is inconsistent: {0}")]
    Invariant(&'static str),
}

impl StoreError {
    /// Whether this is a failure of the storage itself, worth an operator's attention: not a
    /// domain rule's refusal, and not the race the store retries.
    pub fn is_failure(&self) -> bool {
        !matches!(
            self,
            Self::Ledger(_) | Self::Catalog(_) | Self::Checkout(_) | Self::IdempotencyRace
        )
    }
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Ledger(e) => e,
            other => LedgerError::storage(other),
        }
    }
}

impl From<StoreError> for CatalogError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Catalog(e) => e,
            other => CatalogError::storage(other),
        }
    }
}

impl From<StoreError> for CheckoutError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Checkout(e) => e,
            StoreError::Catalog(e) => e.into(),
            other => CheckoutError::storage(other),
        }
    }
}

impl From<StoreError> for tally_console::ConsoleError {
    fn from(e: StoreError) -> Self {
        Self::storage(e)
    }
}

impl From<StoreError> for tally_webhooks::RepoError {
    fn from(e: StoreError) -> Self {
        Self::storage(e)
    }
}

/// Which database a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://PATH` (relative) or `sqlite:///ABSOLUTE/PATH`.
    Sqlite(String),
    /// `postgres://…` or `postgresql://…`.
    Postgres(String),
}

impl Backend {
    /// Picks the backend from the URL scheme; anything else is an error naming the scheme.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() || path.contains(":memory:") || path.starts_with("file::memory") {
                return Err(StoreError::Config(
                    "TALLY_DATABASE_URL: an SQLite database must be a file path, e.g. sqlite://tally.db".into(),
                ));
            }
            return Ok(Self::Sqlite(path.to_owned()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let Some((scheme, _)) = url.split_once(':') else {
            return Err(StoreError::Config(format!(
                "TALLY_DATABASE_URL: '{url}' has no scheme; an SQLite file is sqlite://{url}, a \
                 PostgreSQL database postgres://…"
            )));
        };
        Err(StoreError::Config(format!(
            "TALLY_DATABASE_URL: unsupported scheme '{scheme}'; use sqlite://PATH or postgres://…"
        )))
    }
}

/// Pool sizes and limits.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// PostgreSQL connections in use at once per node.
    pub pg_max_connections: usize,
    /// SQLite reader connections (writes always use one connection: SQLite writes serialise).
    pub sqlite_readers: usize,
    /// PostgreSQL: lanes that batch the money paths' writes, each holding one of the
    /// `pg_max_connections` while it commits; 0 gives every write its own transaction.
    pub pg_batch_lanes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pg_max_connections: 16,
            sqlite_readers: 4,
            pg_batch_lanes: 8,
        }
    }
}

#[derive(Clone)]
pub(crate) enum Pools {
    Pg(exec::PgPools),
    Sqlite(exec::SqlitePools),
}

/// The Diesel-backed store. Cheap to clone; implements [`tally_ledger::LedgerRepository`].
#[derive(Clone)]
pub struct Store {
    pub(crate) pools: Pools,
    backend: Backend,
    /// Each app's pricing, kept between usage calls (see `pricing_cache.rs`).
    pub(crate) pricing: pricing_cache::PricingCache,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        };
        f.debug_struct("Store").field("backend", &kind).finish()
    }
}

/// Writes a consistent copy of the SQLite database `url` names to `dest` while servers keep
/// writing to it, and returns the copy's size in bytes.
///
/// `VACUUM INTO` reads one snapshot of the database (a read transaction, so writers go on) and
/// writes it, compacted, to a new file: every write committed before the copy began is in it,
/// none committed after. The copy is written beside `dest` under a `.partial` name (one left
/// by an interrupted backup is replaced), synced to disk, then linked to `dest`, so `dest` is
/// never a half-written file. A `dest` that exists is refused, even one that appears meanwhile.
/// PostgreSQL has its own tools (`pg_dump`, base backups); a PostgreSQL URL is refused.
pub async fn backup_sqlite(url: &str, dest: &std::path::Path) -> Result<u64, StoreError> {
    let path = match Backend::from_url(url)? {
        Backend::Sqlite(path) if path != ":memory:" => path,
        Backend::Sqlite(_) => {
            return Err(StoreError::Config(
                "an in-memory database has nothing to back up".into(),
            ));
        }
        Backend::Postgres(_) => {
            return Err(StoreError::Config(
                "`tally backup` copies SQLite databases; back up PostgreSQL with pg_dump or a base backup".into(),
            ));
        }
    };
    if !std::path::Path::new(&path).exists() {
        return Err(StoreError::Config(format!("no database at {path}")));
    }
    if dest.exists() {
        return Err(StoreError::Config(format!(
            "{} exists; a backup never overwrites a file",
            dest.display()
        )));
    }
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let dest = dest.to_owned();
    tokio::task::spawn_blocking(move || -> Result<u64, StoreError> {
        let target = partial
            .to_str()
            .ok_or_else(|| StoreError::Config(format!("{} is not UTF-8", partial.display())))?;
        // A `.partial` left by an interrupted backup is never a good copy.
        let _ = std::fs::remove_file(&partial);
        let mut conn = SqliteConnection::establish(&path)
            .map_err(|e| StoreError::Connection(e.to_string()))?;
        diesel::connection::SimpleConnection::batch_execute(
            &mut conn,
            "PRAGMA busy_timeout = 10000;",
        )?;
        diesel::RunQueryDsl::execute(
            diesel::sql_query("VACUUM INTO ?").bind::<diesel::sql_types::Text, _>(target),
            &mut conn,
        )?;
        // On disk before it takes its name; the link fails if `dest` appeared meanwhile.
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::Config(format!("syncing {}: {e}", partial.display())))?;
        std::fs::hard_link(&partial, &dest)
            .map_err(|e| StoreError::Config(format!("naming the copy {}: {e}", dest.display())))?;
        let _ = std::fs::remove_file(&partial);
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::Config(format!("syncing {}: {e}", dir.display())))?;
        }
        std::fs::metadata(&dest)
            .map(|m| m.len())
            .map_err(|e| StoreError::Config(format!("{}: {e}", dest.display())))
    })
    .await
    .map_err(|e| StoreError::Connection(e.to_string()))?
}

/// Pool occupancy, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open.
    pub size: usize,
    /// Connections idle. On PostgreSQL, whose connections each runtime keeps for itself, how
    /// many more the node may put in use now.
    pub idle: usize,
    /// Configured maximum (on PostgreSQL, of connections in use at once).
    pub max: usize,
}

impl Store {
    /// Connects with default pool sizes.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// Connects to the database the URL names; does not run migrations.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let backend = Backend::from_url(url)?;
        let pools = match &backend {
            Backend::Postgres(url) => {
                let pool = exec::PgPool::new(url, options.pg_max_connections)?;
                // The lanes are tasks of this runtime: they draw from its pool.
                let batches = match options.pg_batch_lanes {
                    0 => None,
                    lanes => Some(pg_batch::PgBatches::start(&pool, lanes)),
                };
                Pools::Pg(exec::PgPools { pool, batches })
            }
            Backend::Sqlite(path) => {
                if let Some(dir) = std::path::Path::new(path).parent()
                    && !dir.as_os_str().is_empty()
                    && !dir.exists()
                {
                    return Err(StoreError::Config(format!(
                        "TALLY_DATABASE_URL: directory {} does not exist",
                        dir.display()
                    )));
                }
                let write = sqlite_pool(path, 1)?;
                let group = sqlite_rt::GroupCommit::start(write.clone()).map_err(|e| {
                    StoreError::Connection(format!("starting the SQLite writer: {e}"))
                })?;
                Pools::Sqlite(exec::SqlitePools {
                    write,
                    read: sqlite_pool(path, options.sqlite_readers.max(1))?,
                    group,
                })
            }
        };
        let store = Self {
            pools,
            backend,
            pricing: pricing_cache::PricingCache::default(),
        };
        store
            .ping_inner()
            .await
            .map_err(|e| StoreError::Connection(error_chain(&e)))?;
        Ok(store)
    }

    /// The backend this store talks to.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Runs every pending migration. On PostgreSQL this needs a multi-threaded Tokio runtime.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        match &self.backend {
            Backend::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> Result<usize, StoreError> {
                    let mut conn = SqliteConnection::establish(&path)
                        .map_err(|e| StoreError::Connection(e.to_string()))?;
                    diesel::connection::SimpleConnection::batch_execute(&mut conn, SQLITE_PRAGMAS)?;
                    let done = conn
                        .run_pending_migrations(SQLITE_MIGRATIONS)
                        .map_err(|e| StoreError::Migration(e.to_string()))?;
                    Ok(done.len())
                })
                .await
                .map_err(|e| StoreError::Migration(e.to_string()))?
            }
            Backend::Postgres(url) => {
                let mut conn = AsyncPgConnection::establish(url)
                    .await
                    .map_err(|e| StoreError::Connection(e.to_string()))?;
                // Nodes starting together queue here instead of racing on the same DDL; the
                // session lock ends with this connection.
                diesel_async::RunQueryDsl::execute(
                    diesel::sql_query("SELECT pg_advisory_lock(727411)"),
                    &mut conn,
                )
                .await?;
                let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
                let done = harness
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map_err(|e| StoreError::Migration(e.to_string()))?;
                Ok(done.len())
            }
        }
    }

    /// Connection pool occupancy: `(write or only pool, read pool)`.
    pub fn pool_stats(&self) -> Vec<(&'static str, PoolStats)> {
        macro_rules! stats {
            ($pool:expr) => {{
                let s = $pool.status();
                PoolStats {
                    size: s.size,
                    idle: s.available,
                    max: s.max_size,
                }
            }};
        }
        match &self.pools {
            Pools::Pg(p) => {
                // Every runtime's pool; `idle` is how many more the node may put in use.
                let (size, idle, max) = p.pool.stats();
                vec![("postgres", PoolStats { size, idle, max })]
            }
            Pools::Sqlite(p) => {
                vec![
                    ("sqlite_write", stats!(p.write)),
                    ("sqlite_read", stats!(p.read)),
                ]
            }
        }
    }
}

fn sqlite_pool(path: &str, size: usize) -> Result<Pool<SqliteConn>, StoreError> {
    let mut config = ManagerConfig::<SqliteConn>::default();
    // A local file does not drop connections: no `SELECT 1` on every checkout.
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(|url| {
        let url = url.to_owned();
        Box::pin(async move {
            let mut conn = SqliteConn::establish(&url).await?;
            conn.batch_execute(SQLITE_PRAGMAS)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(path, config);
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|e| StoreError::Config(e.to_string()))
}

pub use tally_ledger::error::error_chain;
