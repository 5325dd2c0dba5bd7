//! How SQLite statements run under async code.
//!
//! `diesel-async` drives a synchronous `SqliteConnection` by sending every statement to tokio's
//! blocking pool and waiting for it: one thread hand-off there and one back per statement, and a
//! write transaction holds the only writer connection across all of them. Instead (see
//! `exec.rs`, which decides which operation runs which way):
//!
//! - a whole operation may move onto one blocking thread, where [`SqliteRuntime`] runs each
//!   statement right away on that thread: one hand-off per operation (writes, and reads of
//!   unbounded size);
//! - a short read (a point lookup, one history page near the top) runs its statements inline
//!   wherever it is awaited ([`Inline`]): no hand-off at all. WAL readers never wait for the
//!   writer, and such a read costs less than a hand-off would;
//! - the money paths' writes join the writer's next group commit ([`GroupCommit`]).
//!
//! Code that uses a connection outside these still gets the per-statement behaviour, so nothing
//! long ever blocks an async worker thread.

use std::cell::Cell;
use std::error::Error;
use std::future::Future;
use std::pin::Pin;

use diesel::connection::AnsiTransactionManager;
use diesel_async::TransactionManager as _;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::sync_connection_wrapper::{SpawnBlocking, SyncTransactionManagerWrapper};

use crate::batch::{self, Finish};
use crate::{SqliteConn, StoreError};

thread_local! {
    /// Set on a thread dedicated to one operation: statements run inline.
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as set aside for one operation while it lives.
pub(crate) struct InlineGuard;

impl InlineGuard {
    pub(crate) fn enter() -> Self {
        INLINE.with(|f| f.set(true));
        Self
    }
}

impl Drop for InlineGuard {
    fn drop(&mut self) {
        INLINE.with(|f| f.set(false));
    }
}

type BoxedResult<'a, R> =
    Pin<Box<dyn Future<Output = Result<R, Box<dyn Error + Send + Sync + 'static>>> + Send + 'a>>;

/// Where a [`SqliteConn`]'s statements run: inline on a thread set aside for the operation, otherwise on tokio's blocking pool (as `diesel-async` does by default).
#[derive(Debug, Clone)]
pub struct SqliteRuntime(Option<tokio::runtime::Handle>);

impl SpawnBlocking for SqliteRuntime {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxedResult<'a, R>
    where
        R: Send + 'static,
    {
        if INLINE.with(Cell::get) {
            return Box::pin(std::future::ready(Ok(task())));
        }
        let handle = match &self.0 {
            Some(h) => h.clone(),
            None => match tokio::runtime::Handle::try_current() {
                Ok(h) => h,
                Err(e) => return Box::pin(std::future::ready(Err(Box::new(e) as _))),
            },
        };
        let join = handle.spawn_blocking(task);
        Box::pin(async move { join.await.map_err(|e| Box::new(e) as _) })
    }

    fn get_runtime() -> Self {
        Self(tokio::runtime::Handle::try_current().ok())
    }
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction: SQLite writers queue for the write lock up front
/// instead of failing with "database is locked" when a read transaction needs upgrading.
pub(crate) async fn immediate_transaction<R, E, F>(conn: &mut SqliteConn, f: F) -> Result<R, E>
where
    for<'r> F: AsyncFnOnce(&'r mut SqliteConn) -> Result<R, E>,
    E: From<diesel::result::Error>,
{
    conn.spawn_blocking(|c| AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE"))
        .await?;
    match f(&mut *conn).await {
        Ok(value) => {
            SyncTransactionManagerWrapper::<AnsiTransactionManager>::commit_transaction(conn)
                .await?;
            Ok(value)
        }
        Err(e) => {
            SyncTransactionManagerWrapper::<AnsiTransactionManager>::rollback_transaction(conn)
                .await?;
            Err(e)
        }
    }
}

/// Polls `F` with statements running inline on the polling thread; restores the previous
/// setting after every poll, so other tasks on the thread are unaffected.
pub(crate) struct Inline<F>(Pin<Box<F>>);

impl<F: Future> Inline<F> {
    pub(crate) fn new(future: F) -> Self {
        Self(Box::pin(future))
    }
}

impl<F: Future> Future for Inline<F> {
    type Output = F::Output;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let previous = INLINE.with(|f| f.replace(true));
        let result = self.0.as_mut().poll(cx);
        INLINE.with(|f| f.set(previous));
        result
    }
}

/// Group commit for SQLite's money paths (ledger movements, holds, check-ins).
///
/// SQLite writes one transaction at a time, and with `synchronous = FULL` every commit syncs the
/// WAL to disk, rewrites the pages every transaction touches (the account, the history table's
/// last leaf and each of its indexes') and hands the single writer connection to the next
/// waiting thread. Instead one writer thread takes every write queued while the previous group
/// committed, runs each in a `SAVEPOINT` of one `BEGIN IMMEDIATE` transaction, and commits them
/// together: one sync and one write of each shared page per group.
///
/// Each write keeps its own outcome. One that fails (an overdraw, a replay with other figures)
/// rolls back to its savepoint, leaving the others untouched, exactly as its own transaction
/// would have; the writes after it see what the writes before it did, as they would have one
/// after another. Nobody hears of success before the group's `COMMIT` returns: when that
/// fails, every write in the group fails with it and none of them happened. A panic inside a
/// write aborts its group (the connection is dropped, which rolls the transaction back); the
/// others fail with an error and the panic continues in the caller.
///
/// The queue is bounded: with [`MAX_QUEUED`] writes waiting, a caller waits for room before its
/// write is queued, so a burst slows callers down instead of piling up memory.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    jobs: tokio::sync::mpsc::Sender<Job>,
}

/// The most writes one group commits.
const MAX_GROUP: usize = 64;

/// The most writes waiting for the writer (sixteen groups).
const MAX_QUEUED: usize = 16 * MAX_GROUP;

/// A queued write: runs in its savepoint on the writer's connection and answers whether the
/// connection is still at the group's transaction level; the [`Finish`] it leaves reports the
/// outcome once the group's commit is known.
type Job = Box<dyn FnOnce(&mut SqliteConn, &tokio::runtime::Handle) -> (Finish, bool) + Send>;

type Txm = SyncTransactionManagerWrapper<AnsiTransactionManager>;

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Starts the writer thread on `pool` (the single writer connection); it ends when the last
    /// clone of the returned handle is dropped.
    pub(crate) fn start(pool: Pool<SqliteConn>) -> std::io::Result<Self> {
        let (jobs, mut queue) = tokio::sync::mpsc::channel::<Job>(MAX_QUEUED);
        let handle = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("tally-sqlite-writer".into())
            .spawn(move || {
                let _inline = InlineGuard::enter();
                while let Some(first) = queue.blocking_recv() {
                    let mut group = Vec::with_capacity(MAX_GROUP);
                    group.push(first);
                    while group.len() < MAX_GROUP {
                        match queue.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    crate::batch::record_batch(group.len());
                    commit_group(&pool, &handle, group);
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `op` as one write of the next group and returns its outcome after the group's
    /// commit. `op` owns what it uses: the write outlives the caller if the caller goes away.
    pub(crate) async fn submit<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: AsyncFnOnce(&mut SqliteConn) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, outcome) = batch::channel::<T>();
        let job: Job = Box::new(move |conn, handle| {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handle.block_on(savepoint(conn, op))
            }));
            let clean = result.is_ok() && batch::at_batch_level(conn);
            (batch::finish(result, answer), clean)
        });
        if self.jobs.send(job).await.is_err() {
            return Err(StoreError::Connection(
                "the SQLite writer has stopped".into(),
            ));
        }
        batch::outcome(outcome).await
    }
}

/// `op` inside a savepoint: released when it succeeds, rolled back to when it fails.
async fn savepoint<T, F>(conn: &mut SqliteConn, op: F) -> Result<T, StoreError>
where
    F: AsyncFnOnce(&mut SqliteConn) -> Result<T, StoreError>,
{
    Txm::begin_transaction(conn).await?;
    match op(&mut *conn).await {
        Ok(value) => {
            Txm::commit_transaction(conn).await?;
            Ok(value)
        }
        Err(e) => {
            Txm::rollback_transaction(conn).await?;
            Err(e)
        }
    }
}

fn commit_group(pool: &Pool<SqliteConn>, handle: &tokio::runtime::Handle, group: Vec<Job>) {
    // Jobs dropped without running tell their callers so (their answer channel closes).
    let mut conn = match handle.block_on(pool.get()) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::error!(error = %e, writes = group.len(), "SQLite writer: no connection; the group was not attempted");
            return;
        }
    };
    let begin =
        handle.block_on(conn.spawn_blocking(|c| {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")
        }));
    if let Err(e) = begin {
        tracing::error!(error = %e, writes = group.len(), "SQLite writer: BEGIN IMMEDIATE failed; the group was not attempted");
        return;
    }
    let mut finishes = Vec::with_capacity(group.len());
    let mut clean = true;
    for job in group {
        if !clean {
            break; // dropped: not attempted
        }
        let (finish, ok) = job(&mut conn, handle);
        finishes.push(finish);
        clean = ok;
    }
    let commit_error = if clean {
        handle
            .block_on(Txm::commit_transaction(&mut *conn))
            .err()
            .map(|e| {
                tracing::error!(error = %e, writes = finishes.len(), "SQLite writer: the group's COMMIT failed");
                e.to_string()
            })
    } else {
        // Closing the connection rolls its transaction back; the pool opens a new one.
        tracing::error!(
            writes = finishes.len(),
            "SQLite writer: a write left the transaction unusable; the group was rolled back"
        );
        drop(Object::take(conn));
        Some("the group was rolled back".to_owned())
    };
    for finish in finishes {
        finish(commit_error.as_deref());
    }
}
