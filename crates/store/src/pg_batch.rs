//! Batched writes for PostgreSQL's money paths (movements, holds, check-ins, usage).
//!
//! One write in its own transaction costs a `BEGIN`, a `COMMIT` and a WAL flush, and holds its
//! account's row lock until that flush: writes to one account then run one flush at a time.
//! Instead each write names the account it locks and joins a *lane*: a task with one pooled
//! connection that takes every write queued while its previous batch committed, runs each in a
//! savepoint of one transaction, and commits them together. An account always maps to the same
//! lane, so its writes meet in one batch and share one lock and one flush.
//!
//! The rules are those of SQLite's group commit (`sqlite_rt.rs`):
//! - each write keeps its own outcome: one that fails (an overdraw, a replay with other figures,
//!   a database error) rolls back to its savepoint, as its own transaction would have;
//! - nobody hears of success before the batch's `COMMIT` returns; when it fails, every write in
//!   the batch fails with it and none of them happened (the commit is as durable as before:
//!   `synchronous_commit` is left alone);
//! - a write that leaves the transaction unusable ends the batch: the transaction is rolled
//!   back and every write in it fails;
//! - the queues are bounded, so a burst slows callers down instead of piling up memory.
//!
//! **Lock order.** A batch locks the rows of several accounts at once, and several nodes (or
//! lanes) batch at the same time, so the order matters: a batch runs its writes sorted by the
//! account's key (app, then user), the same total order on every node; the sort is stable, so
//! one account's writes keep their arrival order. Every batched write locks its own account
//! first and no other account, and debits, check-ins and usage calls applied together (below)
//! lock their accounts in one statement in that same order (bytes, `COLLATE "C"`, as the sort
//! compares them; an upsert takes its rows in the order of its `VALUES`), so two batches never
//! wait on each other in a cycle. Writes that do not know their account before they read (a
//! capture or release by hold id) and redemptions (which also lock the shared code) are not
//! batched: they run in their own transaction, as before.
//!
//! **Debits together.** The debits that follow each other in a sorted batch (most of a batch of
//! spends: one busy account's, or many accounts') are not run write by write: they lock their
//! accounts in one statement, in the batch's order, read their keys and lots in one round trip,
//! plan each debit on what the ones before it leave, and write them all with a few multi-row
//! statements (`ledger::apply_in_turn`), in one savepoint. Each debit keeps the outcome it would
//! have had alone. When they cannot be applied so (a lot comes due first) or their statements
//! fail, they are rolled back to their savepoint and run one at a time like any other write.
//!
//! **Check-ins together.** Check-ins that follow each other are applied the same way
//! (`ledger::checkin_in_turn`): one upsert locks their accounts in the batch's order, creating
//! the new ones, and a few multi-row statements write the rewards, the days and the events.
//!
//! **Usage calls together.** Usage calls that follow each other are recorded the same way
//! (`usage::track_in_turn`): their accounts are locked in one statement, each call is decided on
//! what the ones before it leave, and a few multi-row statements write the debits, the calls,
//! their allowances, meters, lines and events.

use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, SimpleAsyncConnection, TransactionManager,
};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use tally_ledger::checkin::{CheckinConfig, CheckinRecord, CheckinRequest};
use tally_ledger::usage::{UsageOutcome, UsageRequest};
use tally_ledger::{AccountRef, Movement, Transaction};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::StoreError;
use crate::batch::{self, Finish};
use crate::exec::{Body, PgPool};
use crate::pricing_cache::PricingCache;

/// The most writes one batch commits. Each write that changes rows takes a subtransaction id;
/// PostgreSQL keeps 64 per transaction in shared memory and past that every snapshot taken
/// while the batch runs gets slower, so batches stay well below it.
const MAX_BATCH: usize = 32;

/// The most writes waiting for one lane (sixteen batches).
const MAX_QUEUED: usize = 16 * MAX_BATCH;

/// The savepoint each write runs in. One name serves every write: a write that stood is released
/// and the name set again for the next (one round trip), one that failed is rolled back to it
/// (which keeps it set).
const SAVEPOINT: &str = "SAVEPOINT w";
const NEXT_WRITE: &str = "RELEASE SAVEPOINT w; SAVEPOINT w";
const UNDO_WRITE: &str = "ROLLBACK TO SAVEPOINT w";

/// A write waiting in a lane, and the account that orders it in its batch.
struct Job {
    key: AccountRef,
    work: Work,
}

/// What a write does.
enum Work {
    /// Any write, run alone in its savepoint.
    Run(Run),
    /// A debit, which is applied together with the debits beside it (see the module's
    /// documentation).
    Debit(Debit),
    /// A check-in, which is applied together with the check-ins beside it.
    Checkin(Checkin),
    /// A usage call, which is recorded together with the calls beside it.
    Track(Track),
}

/// Writes of one kind that a batch applies together, in one savepoint, when they follow each
/// other in the sorted batch.
trait Together: Sized + Send {
    /// Their kind, in metrics.
    const KIND: batch::UnitKind;
    /// What each answers.
    type Out: Send + 'static;
    /// A unit of them.
    fn unit(run: Vec<Self>) -> Unit;
    /// Runs it alone, as any write runs.
    fn run(self, conn: &mut AsyncPgConnection) -> impl Future<Output = (Finish, bool)> + Send;
    /// Applies `run` together: each one's outcome, or `None` (having written nothing that the
    /// savepoint's rollback does not undo) when they are better run one at a time.
    fn together(
        conn: &mut AsyncPgConnection,
        run: &[Self],
    ) -> impl Future<Output = Outcomes<Self::Out>> + Send;
    /// Where its caller waits.
    fn answer(self) -> batch::Answer<Self::Out>;
}

/// What [`Together::together`] answers.
type Outcomes<T> = Result<Option<Vec<Result<T, StoreError>>>, StoreError>;

/// A debit ([`tally_ledger::MovementKind::plans_in_turn`]) waiting in a lane.
struct Debit {
    movement: Arc<Movement>,
    /// The movement's request hash.
    hash: Arc<str>,
    now: OffsetDateTime,
    answer: batch::Answer<Transaction>,
}

impl Together for Debit {
    const KIND: batch::UnitKind = batch::UnitKind::Debits;
    type Out = Transaction;

    fn unit(run: Vec<Self>) -> Unit {
        Unit::Debits(run)
    }

    async fn run(self, conn: &mut AsyncPgConnection) -> (Finish, bool) {
        let result = crate::pg::ledger::apply(conn, &self.movement, &self.hash, self.now).await;
        finished(result, self.answer)
    }

    async fn together(conn: &mut AsyncPgConnection, run: &[Self]) -> Outcomes<Transaction> {
        let writes: Vec<(&Movement, &str, OffsetDateTime)> = run
            .iter()
            .map(|d| (&*d.movement, &*d.hash, d.now))
            .collect();
        crate::pg::ledger::apply_in_turn(conn, &writes).await
    }

    fn answer(self) -> batch::Answer<Transaction> {
        self.answer
    }
}

/// A check-in waiting in a lane.
struct Checkin {
    request: CheckinRequest,
    answer: batch::Answer<(CheckinRecord, CheckinConfig)>,
}

impl Together for Checkin {
    const KIND: batch::UnitKind = batch::UnitKind::Checkins;
    type Out = (CheckinRecord, CheckinConfig);

    fn unit(run: Vec<Self>) -> Unit {
        Unit::Checkins(run)
    }

    async fn run(self, conn: &mut AsyncPgConnection) -> (Finish, bool) {
        let result = crate::pg::ledger::checkin(conn, &self.request).await;
        finished(result, self.answer)
    }

    async fn together(conn: &mut AsyncPgConnection, run: &[Self]) -> Outcomes<Self::Out> {
        let requests: Vec<&CheckinRequest> = run.iter().map(|c| &c.request).collect();
        crate::pg::ledger::checkin_in_turn(conn, &requests).await
    }

    fn answer(self) -> batch::Answer<Self::Out> {
        self.answer
    }
}

/// A usage call ([`crate::pg::usage::track`]) waiting in a lane.
struct Track {
    request: Arc<UsageRequest>,
    /// The call's request hash.
    hash: Arc<str>,
    now: OffsetDateTime,
    /// The node's pricing; every call of a lane carries the same.
    cache: PricingCache,
    answer: batch::Answer<UsageOutcome>,
}

impl Together for Track {
    const KIND: batch::UnitKind = batch::UnitKind::Calls;
    type Out = UsageOutcome;

    fn unit(run: Vec<Self>) -> Unit {
        Unit::Calls(run)
    }

    async fn run(self, conn: &mut AsyncPgConnection) -> (Finish, bool) {
        let result =
            crate::pg::usage::track(conn, &self.cache, &self.request, &self.hash, self.now).await;
        finished(result, self.answer)
    }

    async fn together(conn: &mut AsyncPgConnection, run: &[Self]) -> Outcomes<Self::Out> {
        let Some(first) = run.first() else {
            return Ok(Some(Vec::new()));
        };
        let calls: Vec<(&UsageRequest, &str, OffsetDateTime)> =
            run.iter().map(|t| (&*t.request, &*t.hash, t.now)).collect();
        crate::pg::usage::track_in_turn(conn, &first.cache, &calls).await
    }

    fn answer(self) -> batch::Answer<Self::Out> {
        self.answer
    }
}

/// How a write that ran alone in its savepoint ended: its [`Finish`], and whether it succeeded.
fn finished<T: Send + 'static>(
    result: Result<T, StoreError>,
    answer: batch::Answer<T>,
) -> (Finish, bool) {
    let ok = result.is_ok();
    (batch::finish(Ok(result), answer), ok)
}

/// What a batch runs in one savepoint: a write, or debits, check-ins or usage calls applied
/// together.
enum Unit {
    One(Run),
    Debits(Vec<Debit>),
    Checkins(Vec<Checkin>),
    Calls(Vec<Track>),
}

/// Runs a write on the batch's connection and answers whether it succeeded; the [`Finish`] it
/// leaves reports the outcome once the batch's commit is known.
type Run = Box<
    dyn for<'c> FnOnce(
            &'c mut AsyncPgConnection,
        ) -> Pin<Box<dyn Future<Output = (Finish, bool)> + Send + 'c>>
        + Send,
>;

/// The lanes of one node. Cheap to clone; the lanes end when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct PgBatches {
    lanes: Vec<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for PgBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBatches")
            .field("lanes", &self.lanes.len())
            .finish()
    }
}

impl PgBatches {
    /// Starts `lanes` lanes (at least one) on `pool`; each holds a connection while it commits.
    pub(crate) fn start(pool: &PgPool, lanes: usize) -> Self {
        let lanes = (0..lanes.max(1))
            .map(|_| {
                let (jobs, queue) = mpsc::channel(MAX_QUEUED);
                tokio::spawn(lane(pool.clone(), queue));
                jobs
            })
            .collect();
        Self { lanes }
    }

    /// Runs `op`, which locks `account` and no other, as one write of its lane's next batch, and
    /// returns its outcome after the batch's commit. `op` owns what it uses: the write outlives
    /// the caller if the caller goes away.
    pub(crate) async fn submit<T, F>(&self, account: &AccountRef, op: F) -> Result<T, StoreError>
    where
        for<'r> F:
            Body<&'r mut AsyncPgConnection, Result<T, StoreError>, Fut: Send> + Send + 'static,
        T: Send + 'static,
    {
        let (answer, outcome) = batch::channel::<T>();
        let run: Run = Box::new(move |conn| {
            Box::pin(async move {
                let result = op(conn).await;
                finished(result, answer)
            })
        });
        self.send(account, Work::Run(run)).await?;
        batch::outcome(outcome).await
    }

    /// Applies `movement`, a debit, in its lane's next batch, together with the debits beside
    /// it; returns its outcome after the batch's commit.
    pub(crate) async fn debit(
        &self,
        movement: Arc<Movement>,
        hash: Arc<str>,
        now: OffsetDateTime,
    ) -> Result<Transaction, StoreError> {
        let (answer, outcome) = batch::channel();
        let account = movement.account.clone();
        let debit = Debit {
            movement,
            hash,
            now,
            answer,
        };
        self.send(&account, Work::Debit(debit)).await?;
        batch::outcome(outcome).await
    }

    /// Applies a check-in in its lane's next batch, together with the check-ins beside it;
    /// returns its outcome after the batch's commit.
    pub(crate) async fn checkin(
        &self,
        request: CheckinRequest,
    ) -> Result<(CheckinRecord, CheckinConfig), StoreError> {
        let (answer, outcome) = batch::channel();
        let account = request.account.clone();
        let checkin = Checkin { request, answer };
        self.send(&account, Work::Checkin(checkin)).await?;
        batch::outcome(outcome).await
    }

    /// Records a usage call in its lane's next batch, together with the calls beside it;
    /// returns its outcome after the batch's commit.
    pub(crate) async fn track(
        &self,
        request: Arc<UsageRequest>,
        hash: Arc<str>,
        now: OffsetDateTime,
        cache: PricingCache,
    ) -> Result<UsageOutcome, StoreError> {
        let (answer, outcome) = batch::channel();
        let account = request.account.clone();
        let track = Track {
            request,
            hash,
            now,
            cache,
            answer,
        };
        self.send(&account, Work::Track(track)).await?;
        batch::outcome(outcome).await
    }

    /// Queues a write in its account's lane.
    async fn send(&self, account: &AccountRef, work: Work) -> Result<(), StoreError> {
        let job = Job {
            key: account.clone(),
            work,
        };
        self.lanes[self.lane_of(account)]
            .send(job)
            .await
            .map_err(|_| StoreError::Connection("the PostgreSQL batch lane has stopped".into()))
    }

    /// The lane an account's writes go to; the same for the node's whole life.
    fn lane_of(&self, account: &AccountRef) -> usize {
        let mut hasher = std::hash::DefaultHasher::new();
        account.hash(&mut hasher);
        (hasher.finish() % self.lanes.len() as u64) as usize
    }
}

/// A lane: takes every write queued while the previous batch committed (up to [`MAX_BATCH`])
/// and commits them together.
async fn lane(pool: PgPool, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // Stable: one account's writes stay in arrival order.
        jobs.sort_by(|a, b| (&a.key.app, &a.key.user).cmp(&(&b.key.app, &b.key.user)));
        let writes = jobs.len();
        crate::batch::record_batch(writes);
        // A panicking write aborts its own batch only: the lane goes on. The batch's connection
        // is dropped inside its transaction, so the pool discards it (rolling the batch back),
        // and the batch's callers hear that their writes were not attempted.
        if let Err(e) = tokio::spawn(commit_batch(pool.clone(), jobs)).await {
            tracing::error!(error = %e, writes, "PostgreSQL batch aborted; none of its writes happened");
        }
    }
}

/// The savepoint units of a batch, in order: each write alone, except that debits that follow
/// each other in the sorted batch (one account's, or several accounts') make one unit, and so do
/// check-ins and usage calls.
fn units(jobs: Vec<Job>) -> std::collections::VecDeque<Unit> {
    let mut units = std::collections::VecDeque::with_capacity(jobs.len());
    for job in jobs {
        match (job.work, units.back_mut()) {
            (Work::Debit(debit), Some(Unit::Debits(run))) => run.push(debit),
            (Work::Debit(debit), _) => units.push_back(Unit::Debits(vec![debit])),
            (Work::Checkin(checkin), Some(Unit::Checkins(run))) => run.push(checkin),
            (Work::Checkin(checkin), _) => units.push_back(Unit::Checkins(vec![checkin])),
            (Work::Track(track), Some(Unit::Calls(run))) => run.push(track),
            (Work::Track(track), _) => units.push_back(Unit::Calls(vec![track])),
            (Work::Run(run), _) => units.push_back(Unit::One(run)),
        }
    }
    units
}

/// How a unit went.
enum Step {
    /// Each write answered; whether the unit stands.
    Done(bool),
    /// Writes applied together were rolled back to the unit's savepoint and put back, to run
    /// one at a time.
    Requeued,
    /// The rollback failed: the transaction is unusable.
    Unusable,
}

/// Runs a unit of writes of one kind: one alone, several together ([`Together`]), their
/// outcomes added to `finishes`; writes that are better run one at a time go back to the front
/// of `units`.
async fn apply_unit<W: Together>(
    conn: &mut AsyncPgConnection,
    mut run: Vec<W>,
    finishes: &mut Vec<Finish>,
    units: &mut std::collections::VecDeque<Unit>,
) -> Step {
    if run.len() == 1 {
        let (finish, ok) = run.remove(0).run(conn).await;
        finishes.push(finish);
        return Step::Done(ok);
    }
    let outcome = W::together(conn, &run).await;
    batch::record_unit(W::KIND, matches!(outcome, Ok(Some(_))));
    match outcome {
        Ok(Some(results)) => {
            for (write, result) in run.into_iter().zip(results) {
                finishes.push(batch::finish(Ok(result), write.answer()));
            }
            Step::Done(true)
        }
        outcome => {
            if let Err(e) = outcome {
                tracing::debug!(error = %e, "PostgreSQL batch: writes applied together failed; they run one at a time");
            }
            if !(conn.batch_execute(UNDO_WRITE).await.is_ok() && batch::at_batch_level(conn)) {
                return Step::Unusable;
            }
            for write in run.into_iter().rev() {
                units.push_front(W::unit(vec![write]));
            }
            Step::Requeued
        }
    }
}

/// Runs `jobs` in one transaction, each unit ([`units`]) in the savepoint [`SAVEPOINT`] (a
/// batch of one runs as a plain transaction), commits, and reports each outcome.
async fn commit_batch(pool: PgPool, jobs: Vec<Job>) {
    // Jobs dropped without running tell their callers so (their answer channel closes).
    // Bound in this order, dropped in the reverse: the connection first (see `PgConn`).
    let (_in_use, mut conn) = match pool.get().await {
        Ok(held) => {
            let (conn, in_use) = held.into_parts();
            (in_use, conn)
        }
        Err(e) => {
            tracing::error!(error = %e, writes = jobs.len(), "PostgreSQL batch: no connection; the batch was not attempted");
            return;
        }
    };
    let (writes, alone) = (jobs.len(), jobs.len() == 1);
    let begin = if alone {
        "BEGIN".to_owned()
    } else {
        format!("BEGIN; {SAVEPOINT}")
    };
    if let Err(e) = AnsiTransactionManager::begin_transaction_sql(&mut *conn, &begin).await {
        tracing::error!(error = %e, writes, "PostgreSQL batch: BEGIN failed; the batch was not attempted");
        return;
    }
    let mut units = units(jobs);
    let mut finishes = Vec::with_capacity(writes);
    let mut clean = true;
    let mut alone_failed = false;
    while let Some(unit) = units.pop_front() {
        let step = match unit {
            Unit::One(run) => {
                let (finish, ok) = run(&mut conn).await;
                finishes.push(finish);
                Step::Done(ok)
            }
            Unit::Debits(run) => apply_unit(&mut conn, run, &mut finishes, &mut units).await,
            Unit::Checkins(run) => apply_unit(&mut conn, run, &mut finishes, &mut units).await,
            Unit::Calls(run) => apply_unit(&mut conn, run, &mut finishes, &mut units).await,
        };
        let ok = match step {
            Step::Done(ok) => ok,
            Step::Requeued => continue,
            Step::Unusable => {
                clean = false;
                break;
            }
        };
        let next = match (alone, ok, units.is_empty()) {
            (true, ok, _) => {
                alone_failed = !ok;
                None
            }
            (false, true, true) => None, // the COMMIT releases it
            (false, true, false) => Some(NEXT_WRITE),
            (false, false, _) => Some(UNDO_WRITE),
        };
        clean = match next {
            Some(sql) => conn.batch_execute(sql).await.is_ok(),
            None => true,
        } && batch::at_batch_level(&mut *conn);
        if !clean {
            break; // the rest are dropped: not attempted
        }
    }
    let commit_error = if !clean {
        tracing::error!(
            writes = finishes.len(),
            "PostgreSQL batch: a write left the transaction unusable; the batch was rolled back"
        );
        // Closing the connection rolls its transaction back; the pool opens a new one.
        drop(Object::take(conn));
        Some("the batch was rolled back".to_owned())
    } else if alone_failed {
        // A batch of one whose write failed: its transaction is rolled back, as its own would
        // have been, and the write answers its own error.
        if let Err(e) = AnsiTransactionManager::rollback_transaction(&mut *conn).await {
            tracing::error!(error = %e, "PostgreSQL batch: ROLLBACK failed");
        }
        None
    } else {
        AnsiTransactionManager::commit_transaction(&mut *conn)
            .await
            .err()
            .map(|e| {
                tracing::error!(error = %e, writes, "PostgreSQL batch: COMMIT failed; none of its writes happened");
                e.to_string()
            })
    };
    for finish in finishes {
        finish(commit_error.as_deref());
    }
}
