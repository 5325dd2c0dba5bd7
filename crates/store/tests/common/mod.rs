//! Fresh databases for the storage tests: one per test, on either backend.
//!
//! SQLite databases are files in a temporary directory that disappears with the [`TestDb`].
//! PostgreSQL databases are created on the server named by `TALLY_TEST_POSTGRES_URL` and dropped
//! (best effort) when the [`TestDb`] is dropped; without that variable the PostgreSQL variants
//! are skipped with a notice on stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::Arc;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tally_ledger::{Ledger, ManualClock};
use tally_store::Store;
use time::OffsetDateTime;
use time::macros::datetime;

/// The variable naming a PostgreSQL server the tests may create databases on.
pub const PG_ENV: &str = "TALLY_TEST_POSTGRES_URL";

/// Where the tests' manual clocks start.
pub const START: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

/// The two storage backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A file-backed SQLite database.
    Sqlite,
    /// A database on the server `TALLY_TEST_POSTGRES_URL` names.
    Postgres,
}

impl Backend {
    /// A short label for messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A fresh, empty database that lives as long as this value.
#[derive(Debug)]
pub struct TestDb {
    /// A URL `Store::connect` accepts.
    pub url: String,
    /// The file path of an SQLite database; `None` on PostgreSQL.
    pub sqlite_path: Option<String>,
    /// Which backend.
    pub backend: Backend,
    _guard: Guard,
}

#[derive(Debug)]
enum Guard {
    Sqlite(tempfile::TempDir),
    Postgres(PgDropGuard),
}

impl TestDb {
    /// A fresh database on `backend`, or `None` (after a notice) when PostgreSQL is not
    /// configured.
    pub async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite()),
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// A fresh SQLite database file in its own temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::TempDir::new().expect("temporary directory");
        let path = dir.path().join("tally.db");
        let path = path.to_str().expect("UTF-8 temp path").to_owned();
        Self {
            url: format!("sqlite://{path}"),
            sqlite_path: Some(path),
            backend: Backend::Sqlite,
            _guard: Guard::Sqlite(dir),
        }
    }

    /// A fresh PostgreSQL database, or `None` when `TALLY_TEST_POSTGRES_URL` is unset.
    pub async fn postgres() -> Option<Self> {
        let Some(admin_url) = std::env::var(PG_ENV).ok().filter(|u| !u.trim().is_empty()) else {
            eprintln!("skipping PostgreSQL: {PG_ENV} not set");
            return None;
        };
        let name = format!("tally_t_{:016x}", rand::random::<u64>());
        let mut admin = AsyncPgConnection::establish(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {PG_ENV}: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        drop(admin);
        Some(Self {
            url: with_database(&admin_url, &name),
            sqlite_path: None,
            backend: Backend::Postgres,
            _guard: Guard::Postgres(PgDropGuard { admin_url, name }),
        })
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }

    /// A ledger over a migrated store, with a manual clock stopped at [`START`].
    pub async fn ledger(&self) -> (Ledger, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(START));
        let ledger = Ledger::with_clock(Arc::new(self.store().await), clock.clone());
        (ledger, clock)
    }
}

/// Replaces the database name (the URL path) of a PostgreSQL URL, keeping any query string.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{database}?{q}"),
        None => format!("{host_part}/{database}"),
    }
}

/// Drops the test database when the test ends, whatever its outcome.
#[derive(Debug)]
struct PgDropGuard {
    admin_url: String,
    name: String,
}

impl Drop for PgDropGuard {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // A thread of its own: this may run inside (or after) the test's runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut admin = AsyncPgConnection::establish(&url).await.ok()?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}
