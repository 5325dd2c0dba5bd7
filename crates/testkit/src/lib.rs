//! What Tally's test suites share (a dev-dependency only): a scratch database on either backend
//! ([`ScratchDb`]) and [`backend_tests!`], which writes one test per backend for each case.
//!
//! SQLite databases are files in a temporary directory that disappears with the [`ScratchDb`].
//! PostgreSQL databases are created on the server `TALLY_TEST_POSTGRES_URL` names and dropped,
//! connections and all, when the [`ScratchDb`] is dropped; without that variable the PostgreSQL
//! variants pass with a notice on stderr.

// A test helper's failure is the test's failure: panicking with the reason is the point.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

/// The variable naming a PostgreSQL server the tests may create databases on.
pub const POSTGRES_ENV: &str = "TALLY_TEST_POSTGRES_URL";

/// Printed by every PostgreSQL variant skipped for want of a server.
pub const POSTGRES_SKIP: &str = "skipping PostgreSQL: TALLY_TEST_POSTGRES_URL not set";

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

/// The PostgreSQL server URL, when the environment names one.
pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Whether PostgreSQL variants can run; prints [`POSTGRES_SKIP`] when they cannot.
pub fn postgres_configured() -> bool {
    let configured = postgres_url().is_some();
    if !configured {
        eprintln!("{POSTGRES_SKIP}");
    }
    configured
}

/// A fresh, empty (not migrated) database that lives as long as this value.
#[derive(Debug)]
pub struct ScratchDb {
    /// A URL `tally_store::Store::connect` accepts.
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
    Postgres { _drop: PgDropGuard },
}

impl ScratchDb {
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

    /// A fresh PostgreSQL database, or `None` (after a notice) when `TALLY_TEST_POSTGRES_URL` is
    /// unset.
    pub async fn postgres() -> Option<Self> {
        if !postgres_configured() {
            return None;
        }
        let server_url = postgres_url()?;
        let name = format!("tally_t_{:016x}", rand::random::<u64>());
        let mut admin = AsyncPgConnection::establish(&server_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_ENV}: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        drop(admin);
        Some(Self {
            url: with_database(&server_url, &name),
            sqlite_path: None,
            backend: Backend::Postgres,
            _guard: Guard::Postgres {
                _drop: PgDropGuard { server_url, name },
            },
        })
    }

    /// The directory an SQLite database lives in (for files beside it); `None` on PostgreSQL.
    pub fn dir(&self) -> Option<&std::path::Path> {
        match &self._guard {
            Guard::Sqlite(dir) => Some(dir.path()),
            Guard::Postgres { .. } => None,
        }
    }
}

/// `url` with its database (the URL path) replaced by `database`, keeping any query string.
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
    server_url: String,
    name: String,
}

impl Drop for PgDropGuard {
    fn drop(&mut self) {
        let (url, name) = (self.server_url.clone(), self.name.clone());
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

/// Writes, for each case, a module of that name holding two tests, `sqlite` and `postgres`
/// (the latter passes with a notice when `TALLY_TEST_POSTGRES_URL` is unset).
///
/// - `backend_tests!(a, b)` calls `a(Backend::Sqlite)`, `a(Backend::Postgres)`, ….
/// - `backend_tests!(run = runner; a, b)` calls `runner(Backend::Sqlite, "a", a)`, …: the
///   runner builds what every case of the file receives and checks what must hold after it.
///
/// The tests run on a multi-threaded Tokio runtime; the calling crate depends on `tokio`.
#[macro_export]
macro_rules! backend_tests {
    (run = $runner:ident; $($case:ident),+ $(,)?) => {$(
        mod $case {
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$runner($crate::Backend::Sqlite, stringify!($case), super::$case).await;
            }

            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if $crate::postgres_configured() {
                    super::$runner($crate::Backend::Postgres, stringify!($case), super::$case)
                        .await;
                }
            }
        }
    )+};
    ($($case:ident),+ $(,)?) => {$(
        mod $case {
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$case($crate::Backend::Sqlite).await;
            }

            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if $crate::postgres_configured() {
                    super::$case($crate::Backend::Postgres).await;
                }
            }
        }
    )+};
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_is_replaced_and_the_query_kept() {
        assert_eq!(
            super::with_database("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            super::with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
    }
}
