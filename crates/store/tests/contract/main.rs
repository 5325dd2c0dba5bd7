//! The repository contract: the ledger's observable behaviour over `tally_store::Store`.
//!
//! Each case is written once as an async function over a [`Ctx`] (a `Ledger` built on a fresh,
//! migrated store and a `ManualClock`) and run on both backends by `tally_testkit::backend_tests!`:
//! the generated tests are `<case>::sqlite` and `<case>::postgres` (the latter pass with a notice
//! when `TALLY_TEST_POSTGRES_URL` is unset), in one module per topic. After every case the ledger's invariants must hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use common::{Backend, START, TestDb};
use serde_json::json;
use tally_ledger::{
    AccountRef, CheckinConfig, ExpiringCredits, Ledger, LedgerError, ManualClock, Movement,
    MovementKind, Transaction, TransactionQuery, TxnType,
};
use time::macros::{date, datetime};
use time::{Duration, OffsetDateTime};
use tokio::task::JoinSet;

/// What each contract case receives.
struct Ctx {
    ledger: Ledger,
    clock: Arc<ManualClock>,
    backend: Backend,
    /// The database's URL, for a second node on the same data.
    url: String,
}

impl Ctx {
    /// Another node: a ledger over a store of its own on the same database and clock.
    async fn second_node(&self) -> Ledger {
        let store = tally_store::Store::connect(&self.url).await.unwrap();
        assert_eq!(store.migrate().await.unwrap(), 0, "already migrated");
        Ledger::with_clock(Arc::new(store), self.clock.clone())
    }
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
    let (ledger, clock) = db.ledger().await;
    case(Ctx {
        ledger: ledger.clone(),
        clock,
        backend,
        url: db.url.clone(),
    })
    .await;
    assert_clean(&ledger, &format!("{name} on {}", backend.label())).await;
    drop(ledger);
    drop(db);
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn acct(app: &str, user: &str) -> AccountRef {
    AccountRef::new(app, user).unwrap()
}

fn movement(account: &AccountRef, kind: MovementKind) -> Movement {
    Movement {
        account: account.clone(),
        kind,
        description: "contract movement".into(),
        idempotency_key: None,
        metadata: None,
        actor: None,
    }
}

fn grant_kind(credits: i64, expires_at: Option<OffsetDateTime>) -> MovementKind {
    MovementKind::Grant {
        txn_type: TxnType::Purchase,
        credits,
        expires_at,
    }
}

fn adjust_kind(credits: i64, allow_negative: bool) -> MovementKind {
    MovementKind::Adjust {
        credits,
        allow_negative,
        expires_at: None,
    }
}

async fn grant(
    l: &Ledger,
    a: &AccountRef,
    credits: i64,
    expires_at: Option<OffsetDateTime>,
) -> Transaction {
    l.apply(movement(a, grant_kind(credits, expires_at)))
        .await
        .unwrap()
}

async fn spend(l: &Ledger, a: &AccountRef, credits: i64) -> Result<Transaction, LedgerError> {
    l.spend(a.clone(), credits, "usage".into(), None, None)
        .await
}

async fn balance(l: &Ledger, a: &AccountRef) -> i64 {
    l.balance(a.clone()).await.unwrap().balance
}

fn query(a: &AccountRef, limit: i64, offset: i64) -> TransactionQuery {
    TransactionQuery {
        app: a.app.clone(),
        user: Some(a.user.clone()),
        limit,
        offset,
        ..TransactionQuery::default()
    }
}

/// The account's whole history, newest first, read page by page.
async fn history(l: &Ledger, a: &AccountRef) -> Vec<Transaction> {
    let mut all = Vec::new();
    loop {
        let (rows, more) = l
            .transactions(query(a, 100, all.len() as i64))
            .await
            .unwrap();
        all.extend(rows);
        if !more {
            return all;
        }
    }
}

/// Every page of `q` (its `limit`, filters and scope), following the `before` cursor from the
/// top: each page starts below the previous page's last row.
async fn pages_by_cursor(l: &Ledger, q: &TransactionQuery) -> Vec<Vec<Transaction>> {
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let (rows, more) = l
            .transactions(TransactionQuery {
                before,
                ..q.clone()
            })
            .await
            .unwrap();
        before = rows.last().map(|r| r.id);
        pages.push(rows);
        if !more {
            return pages;
        }
        assert!(before.is_some(), "more rows follow an empty page");
    }
}

/// Every page of `q`, stepping `offset` by `limit` from the top.
async fn pages_by_offset(l: &Ledger, q: &TransactionQuery) -> Vec<Vec<Transaction>> {
    let mut pages = Vec::new();
    loop {
        let (rows, more) = l
            .transactions(TransactionQuery {
                offset: pages.len() as i64 * q.limit,
                ..q.clone()
            })
            .await
            .unwrap();
        pages.push(rows);
        if !more {
            return pages;
        }
    }
}

/// Stored lots with a positive remainder, `(id, remaining, expires_at)`, in id order.
async fn lots(l: &Ledger, a: &AccountRef) -> Vec<(i64, i64, Option<OffsetDateTime>)> {
    let mut lots: Vec<_> = stored_account(l, a)
        .await
        .lots
        .into_iter()
        .map(|lot| (lot.id, lot.remaining, lot.expires_at))
        .collect();
    lots.sort_unstable();
    lots
}

/// The stored (cached) balance, which the sweep has not necessarily caught up with.
async fn stored_balance(l: &Ledger, a: &AccountRef) -> i64 {
    stored_account(l, a).await.balance
}

fn expiring(list: &[(i64, OffsetDateTime)]) -> Vec<ExpiringCredits> {
    list.iter()
        .map(|&(amount, expires_at)| ExpiringCredits { amount, expires_at })
        .collect()
}

async fn assert_clean(l: &Ledger, context: &str) {
    let violations = l.verify().await.unwrap();
    assert!(
        violations.is_empty(),
        "{context}: invariant violations: {violations:#?}"
    );
}

fn checkin_config(tz: &str, rewards: &[i64]) -> CheckinConfig {
    CheckinConfig {
        enabled: true,
        rewards: rewards.to_vec(),
        timezone: tz.to_owned(),
        credits_expire_days: None,
    }
}

// The cases, by topic (declared last: they use the macros above).
mod batches;
mod checkin;
mod concurrency;
mod history;
mod isolation;
mod movements;
mod pools;
mod scale;

/// The account as stored: its cached figures, every live lot (in the order they are spent) and
/// every active hold.
async fn stored_account(l: &Ledger, a: &AccountRef) -> tally_ledger::AccountView {
    l.repository()
        .account_contents(a.clone(), time::OffsetDateTime::now_utc(), i64::MAX)
        .await
        .unwrap()
}
