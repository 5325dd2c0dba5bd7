//! The store's one execution policy: how each kind of operation runs on each backend.
//!
//! Every repository method names the kind of operation it is ([`Exec`]) and goes through
//! [`exec!`] — except that on PostgreSQL debits, check-ins and usage calls go to their lane's
//! batch through [`PgPools::debit`], [`PgPools::checkin`] and [`PgPools::track`], where writes of
//! their kind are applied together;
//! the two functions below are the only places that open connections, transactions and threads
//! for them:
//!
//! | [`Exec`]    | PostgreSQL                              | SQLite                                              |
//! |-------------|-----------------------------------------|-----------------------------------------------------|
//! | `ShortRead` | a pooled connection, no transaction     | a reader, statements inline where awaited           |
//! | `Read`      | a pooled connection, no transaction     | a reader, the whole read on one blocking thread     |
//! | `Snapshot`  | read-only `REPEATABLE READ` transaction | a reader's deferred transaction, on a blocking thread |
//! | `Write`     | a transaction (statements lock rows)    | `BEGIN IMMEDIATE` on the writer, on a blocking thread |
//! | `Grouped`   | a savepoint in its lane's next batch    | a savepoint in the writer's next group commit       |
//!
//! See `sqlite_rt.rs` for why SQLite runs statements inline on a thread set aside for the
//! operation, and for the group commit; `pg_batch.rs` for PostgreSQL's batches. A `Grouped`
//! write names the one account it locks (`Grouped(account)`); one that cannot (a capture by
//! hold id) is written `Grouped` and runs in its own transaction on PostgreSQL.
//!
//! Failures of the database itself are logged here, once; domain refusals are not failures and
//! pass through silently.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};

use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use tally_ledger::AccountRef;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::pg_batch::PgBatches;
use crate::sqlite_rt::{GroupCommit, Inline, InlineGuard, immediate_transaction};
use crate::{SqliteConn, StoreError, error_chain};

/// What kind of operation a repository method is; [`exec!`] runs it accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exec {
    /// A point lookup or one bounded page (a few index entries): cheaper run where it is awaited
    /// than handed to another thread.
    ShortRead,
    /// A read whose size the caller does not bound (app-wide lists, deep pages, the audit).
    Read,
    /// Several reads that must see one state of the database.
    Snapshot,
    /// A write, in one transaction.
    Write,
    /// A write on a money path (movements, holds, check-ins, usage): it shares its commit with the
    /// writes queued beside it (on PostgreSQL only when it names its account). Its body owns what
    /// it uses: it runs on the writer's thread or in a lane's task.
    Grouped,
}

/// The body of an operation for connection `C`: an async closure whose future is `Send`
/// (written as a trait so that the bound can name the future; `diesel-async` does the same).
pub(crate) trait Body<C, R>:
    AsyncFnOnce(C) -> R + FnOnce(C) -> <Self as Body<C, R>>::Fut
{
    /// The closure's future.
    type Fut: Future<Output = R>;
}

impl<F, C, Fut, R> Body<C, R> for F
where
    F: AsyncFnOnce(C) -> R + FnOnce(C) -> Fut,
    Fut: Future<Output = R>,
{
    type Fut = Fut;
}

/// Runs `$body` as the [`Exec`] kind `$exec` says, on the store's backend. Inside `$body`,
/// `$conn` is the connection and `$ops` the query module `$queries` (`ledger`, `usage`,
/// `checkout`, `apps`, `catalog`, `console`, `outbox` or `stats`) compiled for that backend:
/// `crate::pg::$queries` or `crate::sqlite::$queries`. The body is written once and compiled for each; it moves in
/// what it uses (only one of the two runs).
macro_rules! exec {
    ($store:expr, Grouped($account:expr), $queries:ident, |$conn:ident, $ops:ident| $body:expr) => {
        match &$store.pools {
            $crate::Pools::Pg(pg) => {
                // Taken before the body moves in what it uses.
                let account: tally_ledger::AccountRef = ::std::clone::Clone::clone($account);
                pg.grouped(&account, async move |$conn: &mut $crate::pg::Conn| {
                    use $crate::pg::$queries as $ops;
                    $body
                })
                .await
            }
            $crate::Pools::Sqlite(pools) => {
                pools
                    .exec(
                        $crate::exec::Exec::Grouped,
                        async move |$conn: &mut $crate::sqlite::Conn| {
                            use $crate::sqlite::$queries as $ops;
                            $body
                        },
                    )
                    .await
            }
        }
    };
    ($store:expr, $exec:ident, $queries:ident, |$conn:ident, $ops:ident| $body:expr) => {
        match &$store.pools {
            $crate::Pools::Pg(pg) => {
                $crate::exec::on_pg(
                    &pg.pool,
                    $crate::exec::Exec::$exec,
                    async move |$conn: &mut $crate::pg::Conn| {
                        use $crate::pg::$queries as $ops;
                        $body
                    },
                )
                .await
            }
            $crate::Pools::Sqlite(pools) => {
                pools
                    .exec(
                        $crate::exec::Exec::$exec,
                        async move |$conn: &mut $crate::sqlite::Conn| {
                            use $crate::sqlite::$queries as $ops;
                            $body
                        },
                    )
                    .await
            }
        }
    };
}
pub(crate) use exec;

pub(crate) fn pool_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Connection(e.to_string())
}

/// Logs a failure of the database (not a domain refusal, not a retried race) and passes it on.
fn logged<T>(result: Result<T, StoreError>) -> Result<T, StoreError> {
    if let Err(e) = &result
        && e.is_failure()
    {
        tracing::error!(error = %error_chain(e), "storage operation failed");
    }
    result
}

/// PostgreSQL's connections: a pool for each Tokio runtime that uses the store (each HTTP
/// worker's, and the one the lanes and background tasks run on).
///
/// A connection's socket is driven by a task on the runtime that opened it (`diesel-async`
/// spawns it there): each answer from the database wakes that task, which then wakes the task
/// awaiting the answer. A connection opened by one HTTP worker and used by another makes both
/// threads run for every round trip, and on two busy cores each switch between them is paid
/// in the kernel. Drawing every connection from its own runtime's pool keeps a round trip on
/// one thread.
///
/// The configured size is the node's for connections in use: at most that many at once
/// ([`PgPool::get`]). Each runtime keeps what it opened, up to that size, and closes what it
/// has not used for [`IDLE_CLOSE`]; so a node holds more open than in use while the load moves
/// between runtimes. Handing connections from one runtime to another instead (closing an idle
/// one to open one) was tried: under load nearly every checkout then opened a connection.
#[derive(Clone)]
pub(crate) struct PgPool {
    url: Arc<str>,
    size: usize,
    pools: Arc<RwLock<HashMap<tokio::runtime::Id, Pool<AsyncPgConnection>>>>,
    in_use: Arc<Semaphore>,
}

/// How long a runtime keeps a connection it has not used.
const IDLE_CLOSE: std::time::Duration = std::time::Duration::from_secs(60);

/// A connection checked out of a [`PgPool`], and its place among the node's connections in
/// use. The fields drop in this order: the connection is back in its pool before the place is
/// given to the next caller, who then finds it idle instead of opening another.
pub(crate) struct PgConn {
    pub(crate) conn: Object<AsyncPgConnection>,
    in_use: OwnedSemaphorePermit,
}

impl PgConn {
    /// The connection and its place, to be dropped in that order.
    pub(crate) fn into_parts(self) -> (Object<AsyncPgConnection>, OwnedSemaphorePermit) {
        (self.conn, self.in_use)
    }
}

/// A runtime's entry in [`PgPool`], removed (and its pool closed) when the runtime ends: it is
/// held by a task of that runtime, which the runtime drops as it shuts down.
struct Entry {
    runtime: tokio::runtime::Id,
    pools: std::sync::Weak<RwLock<HashMap<tokio::runtime::Id, Pool<AsyncPgConnection>>>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(pools) = self.pools.upgrade() {
            let mut pools = pools.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(pool) = pools.remove(&self.runtime) {
                pool.close();
            }
        }
    }
}

impl PgPool {
    /// The pools of up to `size` connections each to `url`; none is opened yet.
    pub(crate) fn new(url: &str, size: usize) -> Result<Self, StoreError> {
        let pool = Self {
            url: url.into(),
            size: size.max(1),
            pools: Arc::default(),
            in_use: Arc::new(Semaphore::new(size.max(1))),
        };
        // The configuration is checked once, here: the pools built later are built alike.
        pool.build()?;
        Ok(pool)
    }

    fn build(&self) -> Result<Pool<AsyncPgConnection>, StoreError> {
        let mut config = ManagerConfig::<AsyncPgConnection>::default();
        // No `SELECT 1` round trip on every checkout: a connection the server closed is noticed
        // (and replaced) through `is_broken`, any other failure on first use.
        config.recycling_method = RecyclingMethod::Fast;
        let manager =
            AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(&*self.url, config);
        Pool::builder(manager)
            .max_size(self.size)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))
    }

    /// The pool of the runtime this is called on; a runtime's first call creates it, and a task
    /// on that runtime that closes its idle connections and, with the runtime, the pool.
    pub(crate) fn current(&self) -> Result<Pool<AsyncPgConnection>, StoreError> {
        let runtime = tokio::runtime::Handle::current().id();
        let pools = self.pools.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get(&runtime) {
            return Ok(pool.clone());
        }
        drop(pools);
        let mut pools = self.pools.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get(&runtime) {
            return Ok(pool.clone());
        }
        let pool = self.build()?;
        pools.insert(runtime, pool.clone());
        // Released before the task is spawned: on a runtime shutting down the task is dropped at
        // once, and its entry's `Drop` takes this lock.
        drop(pools);
        let entry = Entry {
            runtime,
            pools: Arc::downgrade(&self.pools),
        };
        let idle = pool.clone();
        tokio::spawn(async move {
            let _entry = entry;
            loop {
                tokio::time::sleep(IDLE_CLOSE / 2).await;
                idle.retain(|_, used| used.last_used() < IDLE_CLOSE);
            }
        });
        Ok(pool)
    }

    /// A connection of this runtime's pool, once fewer than the node's size are in use.
    pub(crate) async fn get(&self) -> Result<PgConn, StoreError> {
        let in_use = Arc::clone(&self.in_use)
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Connection(e.to_string()))?;
        let conn = self.current()?.get().await.map_err(pool_error)?;
        Ok(PgConn { conn, in_use })
    }

    /// The node's figures: connections open in every runtime's pool, how many more it may put
    /// in use now, and the most it uses at once.
    pub(crate) fn stats(&self) -> (usize, usize, usize) {
        let pools = self.pools.read().unwrap_or_else(PoisonError::into_inner);
        let open = pools.values().map(|p| p.status().size).sum();
        (open, self.in_use.available_permits(), self.size)
    }
}

/// Runs `op` on PostgreSQL as `exec` says.
pub(crate) async fn on_pg<T, F>(pool: &PgPool, exec: Exec, op: F) -> Result<T, StoreError>
where
    for<'r> F: Body<&'r mut AsyncPgConnection, Result<T, StoreError>, Fut: Send> + Send,
    T: Send,
{
    let result = async {
        let mut held = pool.get().await?;
        let c: &mut AsyncPgConnection = &mut held.conn;
        match exec {
            Exec::ShortRead | Exec::Read => op(c).await,
            Exec::Snapshot => {
                c.build_transaction()
                    .read_only()
                    .repeatable_read()
                    .run(op)
                    .await
            }
            Exec::Write | Exec::Grouped => AsyncConnection::transaction(c, op).await,
        }
    }
    .await;
    logged(result)
}

/// PostgreSQL's connections, and the lanes that batch the money paths' writes (none when
/// batching is off).
#[derive(Clone)]
pub(crate) struct PgPools {
    pub(crate) pool: PgPool,
    pub(crate) batches: Option<PgBatches>,
}

impl PgPools {
    /// Runs `op`, a write that locks `account` and no other, in its lane's next batch; in its
    /// own transaction when batching is off.
    pub(crate) async fn grouped<T, F>(&self, account: &AccountRef, op: F) -> Result<T, StoreError>
    where
        for<'r> F:
            Body<&'r mut AsyncPgConnection, Result<T, StoreError>, Fut: Send> + Send + 'static,
        T: Send + 'static,
    {
        match &self.batches {
            Some(batches) => logged(batches.submit(account, op).await),
            None => on_pg(&self.pool, Exec::Grouped, op).await,
        }
    }

    /// Applies `movement`, a debit ([`tally_ledger::MovementKind::plans_in_turn`]), in its
    /// lane's next batch, where the debits to one account are applied together; in its own
    /// transaction when batching is off.
    pub(crate) async fn debit(
        &self,
        movement: std::sync::Arc<tally_ledger::Movement>,
        hash: std::sync::Arc<str>,
        now: time::OffsetDateTime,
    ) -> Result<tally_ledger::Transaction, StoreError> {
        match &self.batches {
            Some(batches) => logged(batches.debit(movement, hash, now).await),
            None => {
                on_pg(&self.pool, Exec::Grouped, async move |conn| {
                    crate::pg::ledger::apply(conn, &movement, &hash, now).await
                })
                .await
            }
        }
    }

    /// Applies a check-in in its lane's next batch, where the check-ins beside it are applied
    /// together; in its own transaction when batching is off.
    pub(crate) async fn checkin(
        &self,
        request: tally_ledger::CheckinRequest,
    ) -> Result<(tally_ledger::CheckinRecord, tally_ledger::CheckinConfig), StoreError> {
        match &self.batches {
            Some(batches) => logged(batches.checkin(request).await),
            None => {
                on_pg(&self.pool, Exec::Grouped, async move |conn| {
                    crate::pg::ledger::checkin(conn, &request).await
                })
                .await
            }
        }
    }

    /// Records a usage call in its lane's next batch, where the calls beside it are recorded
    /// together; in its own transaction when batching is off.
    pub(crate) async fn track(
        &self,
        request: std::sync::Arc<tally_ledger::usage::UsageRequest>,
        hash: std::sync::Arc<str>,
        now: time::OffsetDateTime,
        cache: crate::pricing_cache::PricingCache,
    ) -> Result<tally_ledger::usage::UsageOutcome, StoreError> {
        match &self.batches {
            Some(batches) => logged(batches.track(request, hash, now, cache).await),
            None => {
                on_pg(&self.pool, Exec::Grouped, async move |conn| {
                    crate::pg::usage::track(conn, &cache, &request, &hash, now).await
                })
                .await
            }
        }
    }
}

/// SQLite's connections: one writer (SQLite writes serialise), a few readers, and the writer's
/// group commit.
#[derive(Clone)]
pub(crate) struct SqlitePools {
    pub(crate) write: Pool<SqliteConn>,
    pub(crate) read: Pool<SqliteConn>,
    /// The money paths' writes, committed in groups on `write` (see `sqlite_rt.rs`).
    pub(crate) group: GroupCommit,
}

impl SqlitePools {
    /// Runs `op` on SQLite as `exec` says.
    pub(crate) async fn exec<T, F>(&self, exec: Exec, op: F) -> Result<T, StoreError>
    where
        for<'r> F: Body<&'r mut SqliteConn, Result<T, StoreError>, Fut: Send> + Send + 'static,
        T: Send + 'static,
    {
        let result = match exec {
            Exec::ShortRead => {
                let read = self.read.clone();
                Inline::new(async move {
                    let mut c = read.get().await.map_err(pool_error)?;
                    op(&mut c).await
                })
                .await
            }
            Exec::Read => {
                let read = self.read.clone();
                on_blocking_thread(move || async move {
                    let mut c = read.get().await.map_err(pool_error)?;
                    op(&mut c).await
                })
                .await
            }
            Exec::Snapshot => {
                let read = self.read.clone();
                on_blocking_thread(move || async move {
                    let mut c = read.get().await.map_err(pool_error)?;
                    AsyncConnection::transaction(&mut *c, op).await
                })
                .await
            }
            Exec::Write => {
                let write = self.write.clone();
                on_blocking_thread(move || async move {
                    let mut c = write.get().await.map_err(pool_error)?;
                    immediate_transaction(&mut c, op).await
                })
                .await
            }
            Exec::Grouped => self.group.submit(op).await,
        };
        logged(result)
    }
}

/// Runs `attempt`, and once more when it lost the race between two requests with one idempotency
/// key: two first requests creating the account at once, or on PostgreSQL one that waited for
/// the account's lock while the other committed (its key's lookup saw the older snapshot, see
/// `lock_account_keyed`, or ran before the lock, see `usage::track`); the second attempt finds
/// the winner's row.
pub(crate) async fn retry_race<T, Fut>(attempt: impl Fn() -> Fut) -> Result<T, StoreError>
where
    Fut: Future<Output = Result<T, StoreError>>,
{
    match attempt().await {
        Err(StoreError::IdempotencyRace) => attempt().await,
        other => other,
    }
}

/// Runs `op` whole — pool checkout, every statement, commit — in one call on tokio's blocking
/// pool, its statements inline there: one thread hand-off per operation instead of two per
/// statement.
async fn on_blocking_thread<T, G, Fut>(op: G) -> Result<T, StoreError>
where
    G: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, StoreError>>,
    T: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        let _inline = InlineGuard::enter();
        // Nothing in the operation waits on I/O or timers: statements complete inline, and a
        // wait for a pooled connection is woken by the releasing task.
        handle.block_on(op())
    });
    match task.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Connection(format!("blocking task: {e}"))),
    }
}
