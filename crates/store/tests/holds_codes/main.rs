//! Holds (reserve, capture, release, expiry) and redemption codes over `tally_store::Store`.
//!
//! Like the ledger contract, each case is one async function over a [`Ctx`] and runs on both
//! backends through `tally_testkit::backend_tests!`: `<case>::sqlite` and `<case>::postgres` (the
//! latter pass with a notice when `TALLY_TEST_POSTGRES_URL` is unset). After every case the ledger's invariants must hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use common::{Backend, START, TestDb};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tally_ledger::{
    AccountRef, AccountView, BalanceView, CaptureRequest, CodeBatchRequest, ExpiringCredits, Hold,
    HoldStatus, Ledger, LedgerError, ManualClock, Movement, MovementKind, RedemptionCode,
    ReserveRequest, Transaction, TransactionQuery, TxnType,
};
use time::Duration;
use tokio::task::JoinSet;

/// What each case receives.
struct Ctx {
    ledger: Ledger,
    clock: Arc<ManualClock>,
    backend: Backend,
    /// The database, for statements behind the ledger's back.
    db: Arc<TestDb>,
}

/// Runs one case on a fresh database, then checks every ledger invariant.
async fn run<F, Fut>(backend: Backend, name: &str, case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let db = Arc::new(db);
    let (ledger, clock) = db.ledger().await;
    case(Ctx {
        ledger: ledger.clone(),
        clock,
        backend,
        db: db.clone(),
    })
    .await;
    assert_clean(&ledger, &format!("{name} on {}", backend.label())).await;
    drop(ledger);
    drop(db);
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Asserts that a result is the given error, printing what came instead.
macro_rules! assert_err {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!(
                "expected Err({}), got {:?}",
                stringify!($pattern $(if $guard)?),
                other
            ),
        }
    };
}

const APP: &str = "app";

fn acct(app: &str, user: &str) -> AccountRef {
    AccountRef::new(app, user).unwrap()
}

async fn grant(l: &Ledger, a: &AccountRef, credits: i64) -> Transaction {
    l.apply(Movement {
        account: a.clone(),
        kind: MovementKind::Grant {
            txn_type: TxnType::Purchase,
            credits,
            expires_at: None,
        },
        description: "top-up".into(),
        idempotency_key: None,
        metadata: None,
        actor: None,
    })
    .await
    .unwrap()
}

fn reserve_request(a: &AccountRef, credits: i64, ttl_seconds: i64) -> ReserveRequest {
    ReserveRequest {
        account: a.clone(),
        credits,
        ttl_seconds,
        description: "chat completion".into(),
        idempotency_key: None,
        metadata: Some(json!({"model": "m-1"})),
    }
}

async fn reserve(l: &Ledger, a: &AccountRef, credits: i64) -> Result<Hold, LedgerError> {
    l.reserve(reserve_request(a, credits, 60)).await
}

fn capture_request(app: &str, hold: &Hold, credits: i64) -> CaptureRequest {
    CaptureRequest {
        app: app.into(),
        hold_id: hold.id,
        credits,
        description: None,
        metadata: None,
    }
}

async fn capture(
    l: &Ledger,
    hold: &Hold,
    credits: i64,
) -> Result<(Hold, Option<Transaction>), LedgerError> {
    l.capture(capture_request(&hold.app, hold, credits), None)
        .await
}

/// `(balance, available, held)` as the user sees them now.
async fn figures(l: &Ledger, a: &AccountRef) -> (i64, i64, i64) {
    let v = l.balance(a.clone()).await.unwrap();
    (v.balance, v.available, v.held)
}

/// The account's whole history, newest first.
async fn history(l: &Ledger, a: &AccountRef) -> Vec<Transaction> {
    let mut all = Vec::new();
    loop {
        let (rows, more) = l
            .transactions(TransactionQuery {
                app: a.app.clone(),
                user: Some(a.user.clone()),
                limit: 100,
                offset: all.len() as i64,
                ..TransactionQuery::default()
            })
            .await
            .unwrap();
        all.extend(rows);
        if !more {
            return all;
        }
    }
}

/// Everything observable about an account: the balance view, the stored state (cached balance
/// and held, live lots, active holds) and the history.
#[derive(Debug, PartialEq)]
struct Snapshot {
    view: BalanceView,
    stored: AccountView,
    history: Vec<Transaction>,
}

async fn snapshot(l: &Ledger, a: &AccountRef) -> Snapshot {
    Snapshot {
        view: l.balance(a.clone()).await.unwrap(),
        stored: stored_account(l, a).await,
        history: history(l, a).await,
    }
}

/// The hold as stored, without the read-time expiry of [`Ledger::hold`].
async fn stored_hold(l: &Ledger, hold: &Hold) -> Hold {
    l.repository()
        .hold(hold.app.clone(), hold.id)
        .await
        .unwrap()
        .expect("hold exists")
}

async fn assert_clean(l: &Ledger, context: &str) {
    let violations = l.verify().await.unwrap();
    assert!(
        violations.is_empty(),
        "{context}: invariant violations: {violations:#?}"
    );
}

/// Runs SQL behind the ledger's back (to break an invariant on purpose).
async fn execute_sql(db: &TestDb, sql: &str) {
    match db.backend {
        Backend::Sqlite => {
            use diesel::Connection;
            use diesel::connection::SimpleConnection;
            let path = db.sqlite_path.clone().unwrap();
            let sql = sql.to_owned();
            tokio::task::spawn_blocking(move || {
                let mut conn = diesel::SqliteConnection::establish(&path).unwrap();
                conn.batch_execute("PRAGMA busy_timeout = 10000;").unwrap();
                conn.batch_execute(&sql).unwrap();
            })
            .await
            .unwrap();
        }
        Backend::Postgres => {
            use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
            let mut conn = AsyncPgConnection::establish(&db.url).await.unwrap();
            conn.batch_execute(sql).await.unwrap();
        }
    }
}

fn batch(app: &str, count: i64, credits: i64, max_uses: i64) -> CodeBatchRequest {
    CodeBatchRequest {
        app: app.into(),
        count,
        credits,
        max_uses,
        expires_at: None,
        credits_expire_days: None,
        description: "Launch promo".into(),
        created_by: "admin-1".into(),
    }
}

async fn one_code(l: &Ledger, request: CodeBatchRequest) -> RedemptionCode {
    let mut codes = l.create_codes(request).await.unwrap();
    assert_eq!(codes.len(), 1);
    codes.pop().unwrap()
}

/// A well-formed code no batch generated (60 random bits make a collision negligible).
const UNKNOWN_CODE: &str = "ZZZZ-ZZZZ-ZZZZ";

fn is_code(code: &str) -> bool {
    const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let groups: Vec<&str> = code.split('-').collect();
    groups.len() == 3
        && groups
            .iter()
            .all(|g| g.len() == 4 && g.chars().all(|c| ALPHABET.contains(c)))
}

// The cases, by topic (declared last: they use the macros above).
mod codes;
mod holds;

/// The account as stored: its cached figures, every live lot (in the order they are spent) and
/// every active hold.
async fn stored_account(l: &Ledger, a: &AccountRef) -> tally_ledger::AccountView {
    l.repository()
        .account_contents(a.clone(), time::OffsetDateTime::now_utc(), i64::MAX)
        .await
        .unwrap()
}
