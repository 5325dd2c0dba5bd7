//! The store's one execution policy: how each kind of operation runs on each backend.
//!
//! Every repository method names the kind of operation it is ([`Exec`]) and goes through
//! [`exec!`] — except that on PostgreSQL debits and check-ins go to their lane's batch through
//! [`PgPools::debit`] and [`PgPools::checkin`], where writes of their kind are applied together;
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

use std::future::Future;

use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use tally_ledger::AccountRef;

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

/// Runs `op` on PostgreSQL as `exec` says.
pub(crate) async fn on_pg<T, F>(
    pool: &Pool<AsyncPgConnection>,
    exec: Exec,
    op: F,
) -> Result<T, StoreError>
where
    for<'r> F: Body<&'r mut AsyncPgConnection, Result<T, StoreError>, Fut: Send> + Send,
    T: Send,
{
    let result = async {
        let mut c = pool.get().await.map_err(pool_error)?;
        match exec {
            Exec::ShortRead | Exec::Read => op(&mut c).await,
            Exec::Snapshot => {
                c.build_transaction()
                    .read_only()
                    .repeatable_read()
                    .run(op)
                    .await
            }
            Exec::Write | Exec::Grouped => AsyncConnection::transaction(&mut *c, op).await,
        }
    }
    .await;
    logged(result)
}

/// PostgreSQL's connections, and the lanes that batch the money paths' writes (none when
/// batching is off).
#[derive(Clone)]
pub(crate) struct PgPools {
    pub(crate) pool: Pool<AsyncPgConnection>,
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
