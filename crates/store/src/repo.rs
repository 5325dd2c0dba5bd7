//! [`LedgerRepository`] on the pools: pick the backend, open the right kind of transaction, and
//! call the same query code (see `queries/ledger.rs`) for either database.

use std::sync::Arc;

use async_trait::async_trait;
use tally_ledger::checkin::{CheckinRecord, CheckinRequest};
use tally_ledger::codes::{CodeBatchRequest, RedeemRequest};
use tally_ledger::{
    AccountAudit, AccountQuery, AccountRef, AccountSummary, AccountView, CheckinConfig,
    LedgerError, LedgerRepository, Movement, Transaction, TransactionQuery,
};
use tally_ledger::{CaptureRequest, Hold, RedemptionCode, ReserveRequest};
use time::OffsetDateTime;

use crate::{Pools, Store, StoreError, error_chain};

pub(crate) fn pool_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Connection(e.to_string())
}

/// PostgreSQL's write transaction, the same in [`write_tx!`] and [`grouped_tx!`]: a plain
/// transaction on a pooled connection (row locks are taken by the statements).
macro_rules! pg_tx {
    ($pool:expr, $queries:ident, |$conn:ident, $ops:ident| $body:expr) => {{
        let mut c = $pool.get().await.map_err($crate::repo::pool_error)?;
        diesel_async::AsyncConnection::transaction(&mut *c, async |$conn| {
            use $crate::pg::$queries as $ops;
            $body
        })
        .await
    }};
}

/// Runs `$body` in one write transaction: `BEGIN IMMEDIATE` on SQLite (writers queue up front
/// instead of failing with "database is locked"), a plain transaction plus row locks on
/// PostgreSQL. Inside `$body`, `$ops` names the query module `$queries` (`ledger`, `checkout`,
/// `catalog` or `outbox`) compiled for the pool's backend: `crate::pg::$queries` or
/// `crate::sqlite::$queries`.
macro_rules! write_tx {
    ($store:expr, $queries:ident, |$conn:ident, $ops:ident| $body:expr) => {
        match &$store.pools {
            $crate::Pools::Pg(pool) => $crate::repo::pg_tx!(pool, $queries, |$conn, $ops| $body),
            $crate::Pools::Sqlite { write, .. } => {
                let mut c = write.get().await.map_err($crate::repo::pool_error)?;
                $crate::sqlite_rt::immediate_transaction(&mut c, async |$conn| {
                    use $crate::sqlite::$queries as $ops;
                    $body
                })
                .await
            }
        }
    };
}

/// Like [`write_tx!`], for the money paths (movements, holds, check-ins): on SQLite the
/// transaction joins the writer's next group commit (see `sqlite_rt.rs`). `$body` owns what it
/// uses there, since it runs on the writer thread.
macro_rules! grouped_tx {
    ($store:expr, $queries:ident, |$conn:ident, $ops:ident| $body:expr) => {
        match &$store.pools {
            $crate::Pools::Pg(pool) => $crate::repo::pg_tx!(pool, $queries, |$conn, $ops| $body),
            $crate::Pools::Sqlite { group, .. } => {
                group
                    .submit(async move |$conn: &mut $crate::SqliteConn| {
                        use $crate::sqlite::$queries as $ops;
                        $body
                    })
                    .await
            }
        }
    };
}

/// Runs `$body` on a reader connection, outside any explicit transaction.
macro_rules! read {
    ($store:expr, $queries:ident, |$conn:ident, $ops:ident| $body:expr) => {
        match &$store.pools {
            $crate::Pools::Pg(pool) => {
                let mut c = pool.get().await.map_err($crate::repo::pool_error)?;
                let $conn = &mut *c;
                use $crate::pg::$queries as $ops;
                $body
            }
            $crate::Pools::Sqlite { read, .. } => {
                let mut c = read.get().await.map_err($crate::repo::pool_error)?;
                let $conn = &mut *c;
                use $crate::sqlite::$queries as $ops;
                $body
            }
        }
    };
}

/// Runs `$body` in a read-only transaction that sees one snapshot: a deferred transaction on
/// SQLite (WAL readers keep the snapshot of their first read), REPEATABLE READ on PostgreSQL.
macro_rules! snapshot {
    ($store:expr, $queries:ident, |$conn:ident, $ops:ident| $body:expr) => {
        match &$store.pools {
            $crate::Pools::Pg(pool) => {
                let mut c = pool.get().await.map_err($crate::repo::pool_error)?;
                c.build_transaction()
                    .read_only()
                    .repeatable_read()
                    .run(async |$conn| {
                        use $crate::pg::$queries as $ops;
                        $body
                    })
                    .await
            }
            $crate::Pools::Sqlite { read, .. } => {
                let mut c = read.get().await.map_err($crate::repo::pool_error)?;
                diesel_async::AsyncConnection::transaction(&mut *c, async |$conn| {
                    use $crate::sqlite::$queries as $ops;
                    $body
                })
                .await
            }
        }
    };
}

// The catalog's repository opens its transactions the same way.
pub(crate) use {pg_tx, read, write_tx};

impl Store {
    pub(crate) async fn ping_inner(&self) -> Result<(), StoreError> {
        read!(self, ledger, |conn, ops| ops::ping(conn).await)
    }

    /// One attempt at a movement. The account lock serialises one key's requests, so
    /// [`StoreError::IdempotencyRace`] is rare (two first requests creating the account at
    /// once); the caller retries once and finds the winner's row.
    async fn apply_once(
        &self,
        movement: Arc<Movement>,
        hash: Arc<str>,
        now: OffsetDateTime,
    ) -> Result<Transaction, StoreError> {
        grouped_tx!(self, ledger, |conn, ops| ops::apply(
            conn, &movement, &hash, now
        )
        .await)
    }
}

fn logged(e: StoreError) -> LedgerError {
    if !matches!(e, StoreError::Ledger(_)) {
        tracing::error!(error = %error_chain(&e), "storage operation failed");
    }
    e.into()
}

/// History pages starting at most this deep count as short reads (see [`Store::run_read`]).
const SHORT_READ_OFFSET: i64 = 1_000;

// Every operation goes through `Store::run` (on SQLite: one blocking call, its statements inline
// there) or, when it is a short read, `Store::run_read` (on SQLite: inline where it is awaited);
// on PostgreSQL both simply run. See `sqlite_rt.rs`.
#[async_trait]
impl LedgerRepository for Store {
    async fn apply(
        &self,
        movement: Movement,
        now: OffsetDateTime,
    ) -> Result<Transaction, LedgerError> {
        let hash: Arc<str> = movement.request_hash().into();
        let movement = Arc::new(movement);
        match self.apply_once(movement.clone(), hash.clone(), now).await {
            Err(StoreError::IdempotencyRace) => self.apply_once(movement, hash, now).await,
            other => other,
        }
        .map_err(logged)
    }

    async fn checkin(&self, request: CheckinRequest) -> Result<CheckinRecord, LedgerError> {
        async { grouped_tx!(self, ledger, |conn, ops| ops::checkin(conn, &request).await) }
            .await
            .map_err(logged)
    }

    async fn accounts(&self, query: AccountQuery) -> Result<Vec<AccountSummary>, LedgerError> {
        self.run(move |store| async move {
            read!(store, ledger, |conn, ops| ops::accounts(conn, &query).await)
        })
        .await
        .map_err(logged)
    }

    async fn daily_counts(
        &self,
        query: tally_ledger::stats::StatsQuery,
    ) -> Result<tally_ledger::stats::DailyCounts, LedgerError> {
        self.run(move |store| async move {
            snapshot!(store, stats, |conn, ops| ops::daily_counts(conn, &query)
                .await)
        })
        .await
        .map_err(logged)
    }

    async fn active_subscriptions(&self, app: String) -> Result<i64, LedgerError> {
        self.run_read(async {
            read!(self, stats, |conn, ops| ops::active_subscriptions(
                conn, &app
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn rollup(
        &self,
        app: String,
        from: time::Date,
        to: time::Date,
    ) -> Result<Vec<tally_ledger::stats::RollupRow>, LedgerError> {
        self.run_read(async {
            read!(self, stats, |conn, ops| ops::rollup(conn, &app, from, to)
                .await)
        })
        .await
        .map_err(logged)
    }

    async fn store_rollup(
        &self,
        app: String,
        rows: Vec<tally_ledger::stats::RollupRow>,
    ) -> Result<(), LedgerError> {
        self.run(move |store| async move {
            write_tx!(store, stats, |conn, ops| ops::store_rollup(
                conn, &app, &rows
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn account_summary(
        &self,
        account: AccountRef,
    ) -> Result<Option<AccountSummary>, LedgerError> {
        self.run_read(async {
            read!(self, ledger, |conn, ops| ops::account_summary(
                conn, &account
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn account(&self, account: AccountRef) -> Result<AccountView, LedgerError> {
        let account = &account;
        self.run_read(async {
            // One statement reads the account and its lots consistently. Only an account with
            // holds needs a second statement, and so a snapshot around both.
            let view = match &self.pools {
                Pools::Sqlite { read, .. } => {
                    let mut c = read.get().await.map_err(pool_error)?;
                    let (app, user) = (account.app.clone(), account.user.clone());
                    c.spawn_blocking(move |conn| {
                        crate::ops::sqlite_sync::account_and_lots(conn, &app, &user)
                    })
                    .await?
                    .0
                }
                Pools::Pg(_) => read!(self, ledger, |conn, ops| ops::account_and_lots(
                    conn, account
                )
                .await)?,
            };
            if view.held == 0 {
                return Ok(view);
            }
            snapshot!(self, ledger, |conn, ops| ops::account(conn, account).await)
        })
        .await
        .map_err(logged)
    }

    async fn transactions(&self, query: TransactionQuery) -> Result<Vec<Transaction>, LedgerError> {
        // One user's page near the top, or below a `before` cursor (offset 0), walks at most
        // `offset + limit` index entries: a short read. App-wide listings and deep pages may walk
        // far more (even below a cursor: the planner may walk the primary key past other apps'
        // rows).
        if query.user.is_some() && query.offset <= SHORT_READ_OFFSET {
            let query = &query;
            return self
                .run_read(async {
                    read!(self, ledger, |conn, ops| ops::transactions(conn, query)
                        .await)
                })
                .await
                .map_err(logged);
        }
        self.run(move |store| async move {
            read!(store, ledger, |conn, ops| ops::transactions(conn, &query)
                .await)
        })
        .await
        .map_err(logged)
    }

    async fn latest_checkin(
        &self,
        account: AccountRef,
    ) -> Result<Option<CheckinRecord>, LedgerError> {
        let account = &account;
        self.run_read(async {
            read!(self, ledger, |conn, ops| ops::latest_checkin(conn, account)
                .await)
        })
        .await
        .map_err(logged)
    }

    async fn checkin_config(&self, app: String) -> Result<Option<CheckinConfig>, LedgerError> {
        let app = &app;
        self.run_read(async {
            read!(self, ledger, |conn, ops| ops::checkin_config(conn, app)
                .await)
        })
        .await
        .map_err(logged)
    }

    async fn put_checkin_config(
        &self,
        app: String,
        config: CheckinConfig,
        actor: String,
        now: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        self.run(move |store| async move {
            let (app, config, actor) = (&app, &config, &actor);
            write_tx!(store, ledger, |conn, ops| ops::put_checkin_config(
                conn, app, config, actor, now
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn reserve(
        &self,
        request: ReserveRequest,
        now: OffsetDateTime,
    ) -> Result<Hold, LedgerError> {
        let hash: Arc<str> = request.request_hash().into();
        let request = Arc::new(request);
        let once = |request: Arc<ReserveRequest>, hash: Arc<str>| async move {
            grouped_tx!(self, ledger, |conn, ops| ops::reserve(
                conn, &request, &hash, now
            )
            .await)
        };
        match once(request.clone(), hash.clone()).await {
            Err(StoreError::IdempotencyRace) => once(request, hash).await,
            other => other,
        }
        .map_err(logged)
    }

    async fn capture(
        &self,
        request: CaptureRequest,
        idempotency_key: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(Hold, Option<Transaction>), LedgerError> {
        // A repeated capture is a replay only with the same key and the same figures.
        let hash = idempotency_key
            .map(|key| tally_ledger::model::fingerprint(&(key, request.request_hash())));
        async {
            grouped_tx!(self, ledger, |conn, ops| ops::capture(
                conn,
                &request,
                hash.as_deref(),
                now
            )
            .await)
        }
        .await
        .map_err(logged)
    }

    async fn release(
        &self,
        app: String,
        hold_id: i64,
        now: OffsetDateTime,
    ) -> Result<Hold, LedgerError> {
        async {
            grouped_tx!(self, ledger, |conn, ops| ops::release(
                conn, &app, hold_id, now
            )
            .await)
        }
        .await
        .map_err(logged)
    }

    async fn hold(&self, app: String, hold_id: i64) -> Result<Option<Hold>, LedgerError> {
        let app = &app;
        self.run_read(async {
            read!(self, ledger, |conn, ops| ops::hold(conn, app, hold_id)
                .await)
        })
        .await
        .map_err(logged)
    }

    async fn create_codes(
        &self,
        request: CodeBatchRequest,
        codes: Vec<String>,
        batch: String,
        now: OffsetDateTime,
    ) -> Result<Vec<RedemptionCode>, LedgerError> {
        self.run(move |store| async move {
            let (request, codes, batch) = (&request, &codes, &batch);
            write_tx!(store, ledger, |conn, ops| ops::create_codes(
                conn, request, codes, batch, now
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn codes(
        &self,
        app: String,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<RedemptionCode>, LedgerError> {
        self.run(move |store| async move {
            read!(store, ledger, |conn, ops| ops::codes(
                conn, &app, limit, offset
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn redeem(
        &self,
        request: RedeemRequest,
    ) -> Result<(RedemptionCode, Transaction), LedgerError> {
        self.run(move |store| async move {
            let request = &request;
            write_tx!(store, ledger, |conn, ops| ops::redeem(conn, request).await)
        })
        .await
        .map_err(logged)
    }

    async fn record_redeem_failure(
        &self,
        account: AccountRef,
        now: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        self.run(move |store| async move {
            let account = &account;
            write_tx!(store, ledger, |conn, ops| ops::record_redeem_failure(
                conn, account, now
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn redeem_failures(
        &self,
        account: AccountRef,
        since: OffsetDateTime,
    ) -> Result<(i64, Option<OffsetDateTime>), LedgerError> {
        let account = &account;
        self.run_read(async {
            read!(self, ledger, |conn, ops| ops::redeem_failures(
                conn, account, since
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn expire_due(&self, now: OffsetDateTime, limit: i64) -> Result<u64, LedgerError> {
        let ids = self
            .run(move |store| async move {
                read!(store, ledger, |conn, ops| ops::accounts_with_due_lots(
                    conn, now, limit
                )
                .await)
            })
            .await
            .map_err(logged)?;
        let mut swept = 0;
        for id in ids {
            let done = self
                .run(move |store| async move {
                    write_tx!(store, ledger, |conn, ops| ops::expire_account(
                        conn, id, now
                    )
                    .await)
                })
                .await
                .map_err(logged)?;
            swept += u64::from(done);
        }
        Ok(swept)
    }

    async fn audit(&self) -> Result<Vec<AccountAudit>, LedgerError> {
        self.run(
            move |store| async move { read!(store, ledger, |conn, ops| ops::audit(conn).await) },
        )
        .await
        .map_err(logged)
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        self.run_read(self.ping_inner()).await.map_err(logged)
    }
}
