//! What the two backends' batched writes share (SQLite's group commit in `sqlite_rt.rs`,
//! PostgreSQL's batches in `pg_batch.rs`): each write runs in its own savepoint of the batch's
//! transaction, and hears its outcome only once the batch's commit is known.

use diesel_async::{AsyncConnection, TransactionManager};
use tokio::sync::oneshot;

use crate::StoreError;

/// Reports a write's outcome; the argument is the batch's commit error, if any.
pub(crate) type Finish = Box<dyn FnOnce(Option<&str>) + Send>;

/// A panic caught inside a write, resumed in its caller.
pub(crate) type Panic = Box<dyn std::any::Any + Send + 'static>;

/// Where a write's outcome goes.
pub(crate) type Answer<T> = oneshot::Sender<Result<Result<T, StoreError>, Panic>>;

/// Where its caller waits for it.
pub(crate) type Outcome<T> = oneshot::Receiver<Result<Result<T, StoreError>, Panic>>;

pub(crate) fn channel<T>() -> (Answer<T>, Outcome<T>) {
    oneshot::channel()
}

/// The [`Finish`] of a write that ended with `result` in its savepoint: a success stands only if
/// the batch commits.
pub(crate) fn finish<T: Send + 'static>(
    result: Result<Result<T, StoreError>, Panic>,
    answer: Answer<T>,
) -> Finish {
    Box::new(move |commit_error| {
        let result = match result {
            Ok(Ok(value)) => match commit_error {
                None => Ok(Ok(value)),
                Some(e) => Ok(Err(StoreError::Connection(format!(
                    "the write's batch commit failed: {e}"
                )))),
            },
            other => other,
        };
        let _ = answer.send(result);
    })
}

/// What the caller of a batched write gets: its outcome, its panic resumed, or an error when its
/// batch was dropped before the write ran.
pub(crate) async fn outcome<T>(outcome: Outcome<T>) -> Result<T, StoreError> {
    match outcome.await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => Err(StoreError::Connection(
            "the write was not attempted: its batch was aborted (see the log)".into(),
        )),
    }
}

/// Whether `conn` is back at the batch's own transaction (depth 1) and usable (the depth is an
/// error when the transaction manager is in an error state).
pub(crate) fn at_batch_level<C: AsyncConnection>(conn: &mut C) -> bool {
    matches!(
        C::TransactionManager::transaction_manager_status_mut(conn).transaction_depth(),
        Ok(Some(depth)) if depth.get() == 1
    )
}

/// The upper bounds of the batch-size histogram's buckets.
pub const BATCH_SIZE_BOUNDS: [u64; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Batches by size, since the process started: one counter per bucket of
/// [`BATCH_SIZE_BOUNDS`] (not cumulative), then the writes in all of them.
static BATCH_SIZES: [std::sync::atomic::AtomicU64; 8] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 8];

/// Counts one batch (a SQLite group or a PostgreSQL batch) of `writes` writes, as it starts to
/// commit. Batches never exceed the last bound (64).
pub(crate) fn record_batch(writes: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    let writes = writes as u64;
    let bucket = BATCH_SIZE_BOUNDS
        .iter()
        .position(|&le| writes <= le)
        .unwrap_or(BATCH_SIZE_BOUNDS.len() - 1);
    BATCH_SIZES[bucket].fetch_add(1, Relaxed);
    BATCH_SIZES[BATCH_SIZE_BOUNDS.len()].fetch_add(writes, Relaxed);
}

/// The batch-size histogram of this process: batches per bucket of [`BATCH_SIZE_BOUNDS`] (not
/// cumulative) and the writes in all batches.
pub fn batch_sizes() -> ([u64; 7], u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut buckets = [0; 7];
    for (b, counter) in buckets.iter_mut().zip(&BATCH_SIZES) {
        *b = counter.load(Relaxed);
    }
    (buckets, BATCH_SIZES[BATCH_SIZE_BOUNDS.len()].load(Relaxed))
}

/// Runs of writes of one kind that a PostgreSQL batch tries to apply together in one savepoint
/// (see `pg_batch.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    /// Debits (spends).
    Debits,
    /// Check-ins.
    Checkins,
    /// Usage calls (`POST /internal/usage/track`).
    Calls,
}

impl UnitKind {
    /// Every kind.
    pub const ALL: [Self; 3] = [Self::Debits, Self::Checkins, Self::Calls];

    /// The kind's name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debits => "debits",
            Self::Checkins => "checkins",
            Self::Calls => "calls",
        }
    }
}

/// Runs tried, since the process started: per kind, applied together, then sent back to one
/// write at a time.
static UNITS: [std::sync::atomic::AtomicU64; 2 * UnitKind::ALL.len()] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 2 * UnitKind::ALL.len()];

/// Counts a run of several writes of `kind` that a batch tried to apply together: `together`
/// when it was, else it went back to one write at a time.
pub(crate) fn record_unit(kind: UnitKind, together: bool) {
    UNITS[kind as usize * 2 + usize::from(!together)]
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// For each kind, the runs of this process applied together and those sent back to one write at
/// a time.
pub fn batch_units() -> [(UnitKind, u64, u64); UnitKind::ALL.len()] {
    use std::sync::atomic::Ordering::Relaxed;
    UnitKind::ALL.map(|kind| {
        let at = kind as usize * 2;
        (kind, UNITS[at].load(Relaxed), UNITS[at + 1].load(Relaxed))
    })
}
