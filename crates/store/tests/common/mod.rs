//! Fresh databases for the storage tests, one per test on either backend (the scratch databases
//! and the two-backend test macro are `tally-testkit`'s), and a migrated store or ledger on them.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::Arc;

use tally_ledger::{Ledger, ManualClock};
use tally_store::Store;
use tally_testkit::ScratchDb;
use time::OffsetDateTime;
use time::macros::datetime;

pub use tally_testkit::Backend;

/// Where the tests' manual clocks start.
pub const START: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

/// A fresh, empty database that lives as long as this value (see [`ScratchDb`]).
#[derive(Debug)]
pub struct TestDb {
    /// A URL `Store::connect` accepts.
    pub url: String,
    /// The file path of an SQLite database; `None` on PostgreSQL.
    pub sqlite_path: Option<String>,
    /// Which backend.
    pub backend: Backend,
    _db: ScratchDb,
}

impl TestDb {
    /// A fresh database on `backend`, or `None` (after a notice) when PostgreSQL is not
    /// configured.
    pub async fn new(backend: Backend) -> Option<Self> {
        ScratchDb::new(backend).await.map(Self::from)
    }

    /// A fresh SQLite database file in its own temporary directory.
    pub fn sqlite() -> Self {
        ScratchDb::sqlite().into()
    }

    /// A fresh PostgreSQL database, or `None` when `TALLY_TEST_POSTGRES_URL` is unset.
    pub async fn postgres() -> Option<Self> {
        Self::new(Backend::Postgres).await
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

impl From<ScratchDb> for TestDb {
    fn from(db: ScratchDb) -> Self {
        Self {
            url: db.url.clone(),
            sqlite_path: db.sqlite_path.clone(),
            backend: db.backend,
            _db: db,
        }
    }
}
