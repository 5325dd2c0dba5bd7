//! How SQLite statements run under async code.
//!
//! `diesel-async` drives a synchronous `SqliteConnection` by sending every statement to tokio's
//! blocking pool and waiting for it: one thread hand-off there and one back per statement, and a
//! write transaction holds the only writer connection across all of them. Instead:
//!
//! - [`Store::run`] moves a whole store operation onto one blocking thread, where
//!   [`SqliteRuntime`] runs each statement right away on that thread: one hand-off per operation
//!   (writes, and reads of unbounded size);
//! - [`Store::run_read`] runs a short read (a point lookup, one history page near the top) with
//!   its statements inline wherever it is awaited: no hand-off at all. WAL readers never wait for
//!   the writer, and such a read costs less than a hand-off would.
//!
//! Code that uses a connection outside these two still gets the per-statement behaviour, so
//! nothing else changes, and nothing long ever blocks an async worker thread.

use std::cell::Cell;
use std::error::Error;
use std::future::Future;
use std::pin::Pin;

use diesel::connection::AnsiTransactionManager;
use diesel_async::TransactionManager as _;
use diesel_async::sync_connection_wrapper::{SpawnBlocking, SyncTransactionManagerWrapper};

use crate::{Pools, SqliteConn, Store, StoreError};

thread_local! {
    /// Set on a thread that [`Store::run`] dedicated to one operation: statements run inline.
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

struct InlineGuard;

impl InlineGuard {
    fn enter() -> Self {
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

/// Where a [`SqliteConn`]'s statements run: inline on a thread [`Store::run`] set aside for the
/// operation, otherwise on tokio's blocking pool (as `diesel-async` does by default).
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
struct Inline<F>(Pin<Box<F>>);

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

impl Store {
    /// Runs a short read: on SQLite its statements run inline on the calling thread — a point
    /// lookup or one bounded page costs less than the hand-off to a blocking thread would, and
    /// WAL readers never wait for the writer; on PostgreSQL it simply runs.
    pub(crate) async fn run_read<T, Fut>(&self, op: Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        match &self.pools {
            Pools::Pg(_) => op.await,
            Pools::Sqlite { .. } => Inline(Box::pin(op)).await,
        }
    }

    /// Runs one store operation. On SQLite the whole of it — pool checkout, every statement,
    /// commit — runs in one call on tokio's blocking pool, its statements inline there; on
    /// PostgreSQL it simply runs here.
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Store) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
        T: Send + 'static,
    {
        let store = self.clone();
        match &self.pools {
            Pools::Pg(_) => op(store).await,
            Pools::Sqlite { .. } => {
                let handle = tokio::runtime::Handle::current();
                let task = tokio::task::spawn_blocking(move || {
                    let _inline = InlineGuard::enter();
                    // Nothing in the operation waits on I/O or timers: statements complete
                    // inline, and a wait for a pooled connection is woken by the releasing task.
                    handle.block_on(op(store))
                });
                match task.await {
                    Ok(result) => result,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => Err(StoreError::Connection(format!("blocking task: {e}"))),
                }
            }
        }
    }
}
