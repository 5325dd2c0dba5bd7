//! The repository contract: the ledger's observable behaviour over `tally_store::Store`.
//!
//! Each case is written once as an async function over a [`Ctx`] (a `Ledger` built on a fresh,
//! migrated store and a `ManualClock`) and run on both backends by [`contract!`]: the generated
//! tests are `sqlite_<case>` and `postgres_<case>` (the latter skip with a notice when
//! `TALLY_TEST_POSTGRES_URL` is unset). After every case the ledger's invariants must hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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

macro_rules! contract {
    ($($case:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $sqlite() {
            run(Backend::Sqlite, stringify!($case), $case).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $postgres() {
            run(Backend::Postgres, stringify!($case), $case).await;
        }
    )*};
}

contract! {
    grant_then_spend => sqlite_grant_then_spend, postgres_grant_then_spend;
    history_is_newest_first_and_paginated =>
        sqlite_history_is_newest_first_and_paginated, postgres_history_is_newest_first_and_paginated;
    history_pages_by_cursor =>
        sqlite_history_pages_by_cursor, postgres_history_pages_by_cursor;
    spend_never_overdraws => sqlite_spend_never_overdraws, postgres_spend_never_overdraws;
    lots_are_consumed_soonest_expiring_then_oldest =>
        sqlite_lots_are_consumed_soonest_expiring_then_oldest,
        postgres_lots_are_consumed_soonest_expiring_then_oldest;
    expired_lots_stop_counting_at_the_instant_and_sweep_writes_expiries =>
        sqlite_expired_lots_stop_counting_at_the_instant_and_sweep_writes_expiries,
        postgres_expired_lots_stop_counting_at_the_instant_and_sweep_writes_expiries;
    idempotency_replays_and_refuses_reuse =>
        sqlite_idempotency_replays_and_refuses_reuse, postgres_idempotency_replays_and_refuses_reuse;
    admin_overdraft_needs_allow_negative_and_grants_repay_debt =>
        sqlite_admin_overdraft_needs_allow_negative_and_grants_repay_debt,
        postgres_admin_overdraft_needs_allow_negative_and_grants_repay_debt;
    checkin_streaks_and_rewards => sqlite_checkin_streaks_and_rewards, postgres_checkin_streaks_and_rewards;
    checkin_local_day_follows_the_time_zone =>
        sqlite_checkin_local_day_follows_the_time_zone, postgres_checkin_local_day_follows_the_time_zone;
    checkin_disabled => sqlite_checkin_disabled, postgres_checkin_disabled;
    checkin_credits_can_expire => sqlite_checkin_credits_can_expire, postgres_checkin_credits_can_expire;
    apps_are_isolated => sqlite_apps_are_isolated, postgres_apps_are_isolated;
    concurrent_spends_never_overdraw =>
        sqlite_concurrent_spends_never_overdraw, postgres_concurrent_spends_never_overdraw;
    concurrent_checkins_award_once => sqlite_concurrent_checkins_award_once, postgres_concurrent_checkins_award_once;
    concurrent_replays_write_once => sqlite_concurrent_replays_write_once, postgres_concurrent_replays_write_once;
    a_burst_beyond_the_write_queue_completes =>
        sqlite_a_burst_beyond_the_write_queue_completes,
        postgres_a_burst_beyond_the_write_queue_completes;
    reads_are_consistent_snapshots =>
        sqlite_reads_are_consistent_snapshots, postgres_reads_are_consistent_snapshots;
    two_nodes_share_one_database => sqlite_two_nodes_share_one_database, postgres_two_nodes_share_one_database;
    timestamps_keep_whole_microseconds =>
        sqlite_timestamps_keep_whole_microseconds, postgres_timestamps_keep_whole_microseconds;
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
        description: String::new(),
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
    l.repository()
        .account(a.clone())
        .await
        .unwrap()
        .lots
        .into_iter()
        .map(|lot| (lot.id, lot.remaining, lot.expires_at))
        .collect()
}

/// The stored (cached) balance, which the sweep has not necessarily caught up with.
async fn stored_balance(l: &Ledger, a: &AccountRef) -> i64 {
    l.repository().account(a.clone()).await.unwrap().balance
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

// ---------------------------------------------------------------------------------------------
// Movements

async fn grant_then_spend(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");

    let g = grant(l, &a, 100, None).await;
    assert_eq!(g.txn_type, TxnType::Purchase);
    assert_eq!((g.amount, g.balance_after), (100, 100));
    assert_eq!((g.app.as_str(), g.user.as_str()), ("app", "alice"));
    assert_eq!(g.created_at, START);

    t.clock.advance(Duration::seconds(1));
    let s = l
        .spend(
            a.clone(),
            30,
            "chat completion".into(),
            None,
            Some(json!({"model": "m-1", "tokens": 1234})),
        )
        .await
        .unwrap();
    assert_eq!(s.txn_type, TxnType::AiUsage);
    assert_eq!((s.amount, s.balance_after), (-30, 70));
    assert_eq!(s.description, "chat completion");
    assert_eq!(s.metadata, Some(json!({"model": "m-1", "tokens": 1234})));
    assert_eq!(s.created_at, START + Duration::seconds(1));
    assert!(s.id > g.id, "ids increase with time");

    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!((view.balance, view.available, view.held), (70, 70, 0));
    assert!(view.expiring.is_empty());
    assert!(l.check(a.clone(), 70).await.unwrap().sufficient);
    let short = l.check(a.clone(), 71).await.unwrap();
    assert!(!short.sufficient);
    assert_eq!((short.balance, short.available), (70, 70));

    // What the history returns is exactly what the movements returned.
    assert_eq!(history(l, &a).await, vec![s, g]);
}

async fn history_is_newest_first_and_paginated(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    let other = acct("app", "bob");
    grant(l, &a, 1_000, None).await;
    grant(l, &other, 5, None).await;
    t.clock.advance(Duration::minutes(1));
    for i in 1..=11 {
        spend(l, &a, i).await.unwrap();
    }

    let (p1, more1) = l.transactions(query(&a, 5, 0)).await.unwrap();
    let (p2, more2) = l.transactions(query(&a, 5, 5)).await.unwrap();
    let (p3, more3) = l.transactions(query(&a, 5, 10)).await.unwrap();
    assert_eq!((p1.len(), p2.len(), p3.len()), (5, 5, 2));
    assert_eq!((more1, more2, more3), (true, true, false));

    let rows: Vec<Transaction> = [p1, p2, p3].concat();
    assert!(rows.iter().all(|r| r.user == "alice" && r.app == "app"));
    assert!(
        rows.windows(2).all(|w| w[0].id > w[1].id),
        "newest first, no row twice"
    );
    assert_eq!((rows[0].amount, rows[0].balance_after), (-11, 1_000 - 66));
    assert_eq!(rows[11].txn_type, TxnType::Purchase);
    assert_eq!(rows[11].balance_after, 1_000);
    for w in rows.windows(2) {
        assert_eq!(
            w[0].balance_after - w[0].amount,
            w[1].balance_after,
            "balance_after is a running sum"
        );
    }
    assert_eq!(rows, history(l, &a).await);

    // A page that ends exactly at the last row has no more; one row short has.
    assert!(!l.transactions(query(&a, 12, 0)).await.unwrap().1);
    assert!(l.transactions(query(&a, 11, 0)).await.unwrap().1);
    assert!(l.transactions(query(&a, 5, 12)).await.unwrap().0.is_empty());

    // Filters.
    let by_type = TransactionQuery {
        txn_type: Some(TxnType::Purchase),
        ..query(&a, 100, 0)
    };
    let (purchases, _) = l.transactions(by_type).await.unwrap();
    assert_eq!(purchases.len(), 1);
    assert_eq!(purchases[0].amount, 1_000);

    let later = TransactionQuery {
        from: Some(START + Duration::minutes(1)),
        ..query(&a, 100, 0)
    };
    assert_eq!(l.transactions(later).await.unwrap().0.len(), 11);
    let earlier = TransactionQuery {
        to: Some(START + Duration::minutes(1)),
        ..query(&a, 100, 0)
    };
    assert_eq!(l.transactions(earlier).await.unwrap().0.len(), 1);

    let app_wide = TransactionQuery {
        user: None,
        ..query(&a, 100, 0)
    };
    let (all, _) = l.transactions(app_wide).await.unwrap();
    assert_eq!(all.len(), 13);
    assert_eq!(all.iter().filter(|r| r.user == "bob").count(), 1);

    assert!(matches!(
        l.transactions(query(&a, 0, 0)).await,
        Err(LedgerError::Validation { field: "limit", .. })
    ));
    assert!(matches!(
        l.transactions(query(&a, 101, 0)).await,
        Err(LedgerError::Validation { field: "limit", .. })
    ));
}

async fn history_pages_by_cursor(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    let bob = acct("app", "bob");
    // 250 rows for alice, one second apart, alternating purchases and usage, with bob's rows
    // in between so that alice's ids are not contiguous.
    grant(l, &a, 1_000, None).await;
    for i in 1..250 {
        t.clock.advance(Duration::seconds(1));
        if i % 2 == 0 {
            grant(l, &a, 1, None).await;
        } else {
            spend(l, &a, 1).await.unwrap();
        }
        if i % 10 == 0 {
            grant(l, &bob, 1, None).await;
        }
    }
    let all = history(l, &a).await;
    assert_eq!(all.len(), 250);

    // Following the cursor yields every row exactly once, newest first, and the same pages as
    // stepping the offset; a page that ends at the last row says no more follow.
    for limit in [1, 7, 10, 100] {
        let q = query(&a, limit, 0);
        let by_cursor = pages_by_cursor(l, &q).await;
        assert_eq!(by_cursor, pages_by_offset(l, &q).await, "limit {limit}");
        assert_eq!(by_cursor.len(), 250_usize.div_ceil(limit as usize));
        assert!(by_cursor.iter().all(|p| !p.is_empty()), "no empty page");
        let rows = by_cursor.concat();
        assert_eq!(rows, all, "limit {limit}");
        assert!(rows.windows(2).all(|w| w[0].id > w[1].id));
        let ids: BTreeSet<i64> = rows.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), 250);
    }

    // The cursor need not be one of the user's rows, nor exist at all.
    let newest = all[0].id;
    let (rows, more) = l
        .transactions(TransactionQuery {
            before: Some(newest + 1_000),
            ..query(&a, 3, 0)
        })
        .await
        .unwrap();
    assert_eq!((rows.as_slice(), more), (&all[..3], true));
    let bobs = history(l, &bob).await;
    let cut = bobs[2].id;
    let (rows, _) = l
        .transactions(TransactionQuery {
            before: Some(cut),
            ..query(&a, 100, 0)
        })
        .await
        .unwrap();
    let older: Vec<Transaction> = all.iter().filter(|r| r.id < cut).cloned().collect();
    assert_eq!(rows, older[..100.min(older.len())]);
    let oldest = all[249].id;
    assert_eq!(
        l.transactions(TransactionQuery {
            before: Some(oldest),
            ..query(&a, 10, 0)
        })
        .await
        .unwrap(),
        (vec![], false)
    );

    // With filters, for one user and app-wide: the same rows as the offset pages.
    let window = (
        START + Duration::seconds(40),
        START + Duration::seconds(200),
    );
    let app_wide = TransactionQuery {
        user: None,
        ..query(&a, 9, 0)
    };
    for q in [
        TransactionQuery {
            txn_type: Some(TxnType::AiUsage),
            ..query(&a, 9, 0)
        },
        TransactionQuery {
            from: Some(window.0),
            to: Some(window.1),
            ..query(&a, 9, 0)
        },
        app_wide.clone(),
        TransactionQuery {
            txn_type: Some(TxnType::Purchase),
            ..app_wide.clone()
        },
        TransactionQuery {
            txn_type: Some(TxnType::Purchase),
            from: Some(window.0),
            to: Some(window.1),
            ..app_wide.clone()
        },
    ] {
        let by_cursor = pages_by_cursor(l, &q).await;
        assert_eq!(by_cursor, pages_by_offset(l, &q).await, "{q:?}");
        let rows = by_cursor.concat();
        assert!(!rows.is_empty(), "{q:?}");
        assert!(rows.windows(2).all(|w| w[0].id > w[1].id), "{q:?}");
        assert!(
            rows.iter()
                .all(|r| q.txn_type.is_none_or(|t| r.txn_type == t)
                    && q.from.is_none_or(|f| r.created_at >= f)
                    && q.to.is_none_or(|to| r.created_at < to)),
            "{q:?}"
        );
    }
    let app_rows = pages_by_cursor(l, &app_wide).await.concat();
    assert_eq!(app_rows.len(), 250 + 24);
    let purchases_in_window = pages_by_cursor(
        l,
        &TransactionQuery {
            txn_type: Some(TxnType::Purchase),
            from: Some(window.0),
            to: Some(window.1),
            ..app_wide.clone()
        },
    )
    .await
    .concat();
    let expected: Vec<Transaction> = app_rows
        .into_iter()
        .filter(|r| {
            r.txn_type == TxnType::Purchase && r.created_at >= window.0 && r.created_at < window.1
        })
        .collect();
    assert_eq!(purchases_in_window, expected);

    // A cursor excludes a non-zero offset, and must be a positive id.
    for (before, offset) in [(Some(newest), 5), (Some(0), 0), (Some(-1), 0)] {
        assert!(
            matches!(
                l.transactions(TransactionQuery {
                    before,
                    ..query(&a, 10, offset)
                })
                .await,
                Err(LedgerError::Validation {
                    field: "before",
                    ..
                })
            ),
            "before {before:?}, offset {offset}"
        );
    }
}

async fn spend_never_overdraws(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");

    assert!(matches!(
        spend(l, &a, 1).await,
        Err(LedgerError::InsufficientCredits {
            requested: 1,
            available: 0
        })
    ));
    assert!(history(l, &a).await.is_empty());

    grant(l, &a, 10, None).await;
    assert!(matches!(
        spend(l, &a, 11).await,
        Err(LedgerError::InsufficientCredits {
            requested: 11,
            available: 10
        })
    ));
    assert_eq!(
        history(l, &a).await.len(),
        1,
        "a refused spend writes nothing"
    );
    assert_eq!(balance(l, &a).await, 10);
    assert_eq!(lots(l, &a).await.len(), 1);
    assert_eq!(lots(l, &a).await[0].1, 10);

    let all = spend(l, &a, 10).await.unwrap();
    assert_eq!(all.balance_after, 0);
    assert!(matches!(
        spend(l, &a, 1).await,
        Err(LedgerError::InsufficientCredits {
            requested: 1,
            available: 0
        })
    ));
    assert_eq!(history(l, &a).await.len(), 2);
    assert_eq!(balance(l, &a).await, 0);
    assert!(lots(l, &a).await.is_empty());

    assert!(matches!(
        spend(l, &a, 0).await,
        Err(LedgerError::Validation {
            field: "amount",
            ..
        })
    ));
    assert!(matches!(
        spend(l, &a, -5).await,
        Err(LedgerError::Validation {
            field: "amount",
            ..
        })
    ));
}

async fn lots_are_consumed_soonest_expiring_then_oldest(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    let soon = START + Duration::days(5);
    let late = START + Duration::days(30);

    grant(l, &a, 10, None).await; // L1: never expires, oldest
    grant(l, &a, 10, Some(late)).await; // L2
    grant(l, &a, 10, Some(soon)).await; // L3: soonest, older of two
    grant(l, &a, 10, None).await; // L4: never expires, newer
    grant(l, &a, 10, Some(soon)).await; // L5: soonest, newer of two
    let ids: Vec<i64> = lots(l, &a).await.iter().map(|x| x.0).collect();
    assert_eq!(ids.len(), 5);
    let [l1, l2, l3, l4, l5] = ids[..] else {
        unreachable!()
    };
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!(view.balance, 50);
    assert_eq!(view.expiring, expiring(&[(20, soon), (10, late)]));

    // Soonest expiry first; among equal expiries, the oldest lot.
    spend(l, &a, 5).await.unwrap();
    assert_eq!(
        lots(l, &a).await,
        vec![
            (l1, 10, None),
            (l2, 10, Some(late)),
            (l3, 5, Some(soon)),
            (l4, 10, None),
            (l5, 10, Some(soon)),
        ]
    );
    spend(l, &a, 10).await.unwrap();
    assert_eq!(
        lots(l, &a).await,
        vec![
            (l1, 10, None),
            (l2, 10, Some(late)),
            (l4, 10, None),
            (l5, 5, Some(soon)),
        ]
    );
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!(view.balance, 35);
    assert_eq!(view.expiring, expiring(&[(5, soon), (10, late)]));

    // What expires is exactly what consumption left in the soonest lots.
    t.clock.set(soon);
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!(view.balance, 30);
    assert_eq!(view.expiring, expiring(&[(10, late)]));
    assert_eq!(l.sweep_expired(100).await.unwrap(), 1);
    let newest = history(l, &a).await.remove(0);
    assert_eq!(newest.txn_type, TxnType::Expiry);
    assert_eq!((newest.amount, newest.balance_after), (-5, 30));
    assert_eq!(newest.metadata, Some(json!({ "lot_id": l5 })));

    // Expiring lots before never-expiring ones; never-expiring ones oldest first.
    spend(l, &a, 12).await.unwrap();
    assert_eq!(lots(l, &a).await, vec![(l1, 8, None), (l4, 10, None)]);
    spend(l, &a, 10).await.unwrap();
    assert_eq!(lots(l, &a).await, vec![(l4, 8, None)]);
    assert_eq!(balance(l, &a).await, 8);
}

async fn expired_lots_stop_counting_at_the_instant_and_sweep_writes_expiries(t: Ctx) {
    let l = &t.ledger;
    let at = START + Duration::hours(1);
    let a = acct("app", "alice");
    let b = acct("app", "bob");
    let c = acct("app", "carol");
    let d = acct("app", "dave");

    grant(l, &a, 50, Some(at)).await;
    grant(l, &a, 20, None).await;
    spend(l, &a, 10).await.unwrap(); // from the expiring lot: 40 of it are left
    grant(l, &b, 30, Some(at)).await;
    grant(l, &b, 5, None).await;
    grant(l, &c, 7, Some(at)).await;
    grant(l, &d, 8, Some(at)).await;
    let a_expiring_lot = lots(l, &a).await[0].0;

    assert!(matches!(
        l.apply(movement(&a, grant_kind(1, Some(START)))).await,
        Err(LedgerError::Validation {
            field: "expires_at",
            ..
        })
    ));

    t.clock
        .advance(Duration::hours(1) - Duration::microseconds(1));
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!((view.balance, view.available), (60, 60));
    assert_eq!(view.expiring, expiring(&[(40, at)]));

    // At the expiry instant the lot no longer counts, although nothing has been written yet.
    t.clock.advance(Duration::microseconds(1));
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!((view.balance, view.available), (20, 20));
    assert!(view.expiring.is_empty());
    assert_eq!(stored_balance(l, &a).await, 60);
    assert!(!l.check(a.clone(), 21).await.unwrap().sufficient);
    assert!(matches!(
        spend(l, &a, 21).await,
        Err(LedgerError::InsufficientCredits {
            requested: 21,
            available: 20
        })
    ));
    assert_eq!(history(l, &a).await.len(), 3, "nothing written yet");
    assert_clean(l, "before the sweep").await;

    // A movement on an account with due lots writes their expiry first.
    let s = spend(l, &b, 5).await.unwrap();
    assert_eq!(s.balance_after, 0);
    let hb = history(l, &b).await;
    assert_eq!(hb.len(), 4);
    assert_eq!(
        (hb[1].txn_type, hb[1].amount, hb[1].balance_after),
        (TxnType::Expiry, -30, 5)
    );
    assert_eq!(hb[1].created_at, at);
    assert!(lots(l, &b).await.is_empty());

    // The sweep handles the other three accounts, `limit` at a time.
    assert_eq!(l.sweep_expired(1).await.unwrap(), 1);
    assert_eq!(l.sweep_expired(100).await.unwrap(), 2);
    assert_eq!(l.sweep_expired(100).await.unwrap(), 0);

    let ha = history(l, &a).await;
    assert_eq!(ha.len(), 4);
    assert_eq!(ha[0].txn_type, TxnType::Expiry);
    assert_eq!((ha[0].amount, ha[0].balance_after), (-40, 20));
    assert_eq!(ha[0].metadata, Some(json!({ "lot_id": a_expiring_lot })));
    assert_eq!(ha[0].created_at, at);
    assert_eq!(stored_balance(l, &a).await, 20);
    assert_eq!(balance(l, &a).await, 20);
    for (who, amount) in [(&c, -7), (&d, -8)] {
        let h = history(l, who).await;
        assert_eq!(h.len(), 2);
        assert_eq!(
            (h[0].txn_type, h[0].amount, h[0].balance_after),
            (TxnType::Expiry, amount, 0)
        );
        assert_eq!(stored_balance(l, who).await, 0);
    }

    t.clock.advance(Duration::days(400));
    assert_eq!(l.sweep_expired(100).await.unwrap(), 0);
    assert_eq!(balance(l, &a).await, 20);
}

async fn idempotency_replays_and_refuses_reuse(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    grant(l, &a, 100, None).await;

    let request = |credits: i64, description: &str, meta: serde_json::Value| Movement {
        idempotency_key: Some("order-1".into()),
        description: description.into(),
        metadata: Some(meta),
        ..movement(
            &a,
            MovementKind::Debit {
                txn_type: TxnType::AiUsage,
                credits,
            },
        )
    };
    let original = l
        .apply(request(30, "usage", json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(original.idempotency_key.as_deref(), Some("order-1"));
    assert_eq!(original.balance_after, 70);

    t.clock.advance(Duration::minutes(5));
    let replay = l
        .apply(request(30, "usage", json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(
        replay, original,
        "a replay returns the original transaction"
    );
    assert_eq!(history(l, &a).await.len(), 2);
    assert_eq!(balance(l, &a).await, 70);

    for changed in [
        request(31, "usage", json!({"n": 1})),
        request(30, "other usage", json!({"n": 1})),
        request(30, "usage", json!({"n": 2})),
        Movement {
            idempotency_key: Some("order-1".into()),
            ..movement(&a, grant_kind(30, None))
        },
    ] {
        assert!(
            matches!(
                l.apply(changed.clone()).await,
                Err(LedgerError::IdempotencyKeyReused)
            ),
            "reuse not refused: {changed:?}"
        );
    }
    assert_eq!(
        history(l, &a).await.len(),
        2,
        "refused reuses write nothing"
    );
    assert_eq!(balance(l, &a).await, 70);

    let second = l
        .spend(a.clone(), 30, "usage".into(), Some("order-2".into()), None)
        .await
        .unwrap();
    assert_ne!(second.id, original.id);
    assert_eq!(second.balance_after, 40);

    // A refused movement does not consume its key.
    assert!(matches!(
        l.spend(
            a.clone(),
            1_000,
            "usage".into(),
            Some("order-3".into()),
            None
        )
        .await,
        Err(LedgerError::InsufficientCredits { .. })
    ));
    let third = l
        .spend(a.clone(), 10, "usage".into(), Some("order-3".into()), None)
        .await
        .unwrap();
    assert_eq!(third.balance_after, 30);
    assert_eq!(history(l, &a).await.len(), 4);

    // A retried grant still answers its original after the lot's expiry has passed (the request
    // is the same; only a new grant must expire in the future).
    let until = l.now() + Duration::hours(1);
    let timed = Movement {
        idempotency_key: Some("pack-1".into()),
        ..movement(&a, grant_kind(5, Some(until)))
    };
    let granted = l.apply(timed.clone()).await.unwrap();
    t.clock.set(until + Duration::minutes(1));
    assert_eq!(l.apply(timed.clone()).await.unwrap(), granted);
    assert!(matches!(
        l.apply(Movement {
            idempotency_key: Some("pack-2".into()),
            ..timed
        })
        .await,
        Err(LedgerError::Validation {
            field: "expires_at",
            ..
        })
    ));
    assert_eq!(history(l, &a).await.len(), 5);
}

async fn admin_overdraft_needs_allow_negative_and_grants_repay_debt(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    grant(l, &a, 10, None).await;

    assert!(matches!(
        l.apply(movement(&a, adjust_kind(-15, false))).await,
        Err(LedgerError::InsufficientCredits {
            requested: 15,
            available: 10
        })
    ));
    assert_eq!(history(l, &a).await.len(), 1);
    assert_eq!(balance(l, &a).await, 10);

    let overdraft = l
        .apply(Movement {
            actor: Some("admin-1".into()),
            description: "chargeback".into(),
            ..movement(&a, adjust_kind(-15, true))
        })
        .await
        .unwrap();
    assert_eq!(overdraft.txn_type, TxnType::AdminAdjustment);
    assert_eq!((overdraft.amount, overdraft.balance_after), (-15, -5));
    assert_eq!(overdraft.actor.as_deref(), Some("admin-1"));
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!((view.balance, view.available), (-5, 0));
    assert!(lots(l, &a).await.is_empty());
    assert!(matches!(
        spend(l, &a, 1).await,
        Err(LedgerError::InsufficientCredits {
            requested: 1,
            available: 0
        })
    ));
    assert_clean(l, "in debt after an allowed overdraft").await;

    // Grants repay the debt before anything becomes spendable.
    let partial = grant(l, &a, 3, None).await;
    assert_eq!(partial.balance_after, -2);
    assert!(lots(l, &a).await.is_empty());
    assert!(spend(l, &a, 1).await.is_err());
    let repaid = grant(l, &a, 20, None).await;
    assert_eq!(repaid.balance_after, 18);
    let live = lots(l, &a).await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].1, 18);
    assert!(matches!(
        spend(l, &a, 19).await,
        Err(LedgerError::InsufficientCredits {
            requested: 19,
            available: 18
        })
    ));
    assert_eq!(spend(l, &a, 18).await.unwrap().balance_after, 0);

    // A positive adjustment is a grant, with an optional expiry.
    let until = START + Duration::days(1);
    let bonus = l
        .apply(movement(
            &a,
            MovementKind::Adjust {
                credits: 7,
                allow_negative: false,
                expires_at: Some(until),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        (bonus.txn_type, bonus.amount),
        (TxnType::AdminAdjustment, 7)
    );
    assert_eq!(
        l.balance(a.clone()).await.unwrap().expiring,
        expiring(&[(7, until)])
    );
}

// ---------------------------------------------------------------------------------------------
// Check-in

async fn checkin_streaks_and_rewards(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    l.set_checkin_config("app", checkin_config("UTC", &[5, 10, 20]), "admin")
        .await
        .unwrap();

    let status = l.checkin_status(a.clone()).await.unwrap();
    assert!(!status.checked_in_today);
    assert_eq!((status.streak, status.next_reward), (0, 5));
    assert_eq!(status.next_checkin_at, START);

    let first = l.checkin(a.clone()).await.unwrap();
    assert_eq!((first.awarded, first.streak, first.balance), (5, 1, 5));
    assert_eq!(first.day, date!(2026 - 06 - 01));
    assert_eq!(first.next_checkin_at, datetime!(2026-06-02 00:00 UTC));

    match l.checkin(a.clone()).await {
        Err(LedgerError::AlreadyCheckedIn { day }) => assert_eq!(day, "2026-06-01"),
        other => panic!("expected AlreadyCheckedIn, got {other:?}"),
    }
    assert_eq!(
        history(l, &a).await.len(),
        1,
        "a refused check-in writes nothing"
    );
    assert_eq!(balance(l, &a).await, 5);
    let status = l.checkin_status(a.clone()).await.unwrap();
    assert!(status.checked_in_today);
    assert_eq!((status.streak, status.next_reward), (1, 10));
    assert_eq!(status.next_checkin_at, datetime!(2026-06-02 00:00 UTC));

    // Consecutive local days extend the streak; the table's last value repeats.
    let mut got = Vec::new();
    for _ in 0..3 {
        t.clock.advance(Duration::days(1));
        let o = l.checkin(a.clone()).await.unwrap();
        got.push((o.awarded, o.streak, o.balance));
    }
    assert_eq!(got, vec![(10, 2, 15), (20, 3, 35), (20, 4, 55)]);

    // One microsecond across local midnight is the next day.
    t.clock.set(datetime!(2026-06-05 23:59:59.999999 UTC));
    let late = l.checkin(a.clone()).await.unwrap();
    assert_eq!((late.streak, late.day), (5, date!(2026 - 06 - 05)));
    t.clock.advance(Duration::microseconds(1));
    let early = l.checkin(a.clone()).await.unwrap();
    assert_eq!((early.streak, early.day), (6, date!(2026 - 06 - 06)));

    // A skipped day resets the streak.
    t.clock.advance(Duration::days(2));
    let status = l.checkin_status(a.clone()).await.unwrap();
    assert_eq!((status.streak, status.next_reward), (0, 5));
    let reset = l.checkin(a.clone()).await.unwrap();
    assert_eq!((reset.awarded, reset.streak), (5, 1));
    assert_eq!(reset.balance, 5 + 10 + 20 + 20 + 20 + 20 + 5);

    let h = history(l, &a).await;
    assert!(h.iter().all(|r| r.txn_type == TxnType::Checkin));
    let amounts: Vec<i64> = h.iter().map(|r| r.amount).collect();
    assert_eq!(amounts, vec![5, 20, 20, 20, 20, 10, 5]);
}

async fn checkin_local_day_follows_the_time_zone(t: Ctx) {
    let l = &t.ledger;
    let utc = acct("utc-app", "alice");
    let tokyo = acct("tokyo-app", "alice");
    l.set_checkin_config("utc-app", checkin_config("UTC", &[1, 2, 3]), "admin")
        .await
        .unwrap();
    l.set_checkin_config(
        "tokyo-app",
        checkin_config("Asia/Tokyo", &[1, 2, 3]),
        "admin",
    )
    .await
    .unwrap();

    // 12:00 UTC is 21:00 in Tokyo: the same calendar day in both zones.
    let u1 = l.checkin(utc.clone()).await.unwrap();
    let t1 = l.checkin(tokyo.clone()).await.unwrap();
    assert_eq!(u1.day, date!(2026 - 06 - 01));
    assert_eq!(t1.day, date!(2026 - 06 - 01));
    assert_eq!(t1.next_checkin_at, datetime!(2026-06-01 15:00 UTC));

    // 15:30 UTC is already the next day in Tokyo.
    t.clock.advance(Duration::minutes(210));
    assert!(matches!(
        l.checkin(utc.clone()).await,
        Err(LedgerError::AlreadyCheckedIn { .. })
    ));
    let t2 = l.checkin(tokyo.clone()).await.unwrap();
    assert_eq!(
        (t2.day, t2.streak, t2.awarded),
        (date!(2026 - 06 - 02), 2, 2)
    );
    assert_eq!(t2.next_checkin_at, datetime!(2026-06-02 15:00 UTC));

    // Switching the app's zone moves its local day at once.
    l.set_checkin_config("utc-app", checkin_config("Asia/Tokyo", &[1, 2, 3]), "admin")
        .await
        .unwrap();
    let u2 = l.checkin(utc.clone()).await.unwrap();
    assert_eq!(
        (u2.day, u2.streak, u2.awarded),
        (date!(2026 - 06 - 02), 2, 2)
    );
    assert_eq!(balance(l, &utc).await, 3);
    assert_eq!(balance(l, &tokyo).await, 3);

    assert!(matches!(
        l.set_checkin_config("utc-app", checkin_config("Mars/Olympus", &[1]), "admin")
            .await,
        Err(LedgerError::Validation {
            field: "timezone",
            ..
        })
    ));
    assert_eq!(
        l.checkin_config("utc-app").await.unwrap().timezone,
        "Asia/Tokyo"
    );
}

async fn checkin_disabled(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    assert_eq!(
        l.checkin_config("app").await.unwrap(),
        CheckinConfig::default()
    );
    let off = CheckinConfig {
        enabled: false,
        ..checkin_config("UTC", &[3])
    };
    l.set_checkin_config("app", off.clone(), "admin")
        .await
        .unwrap();
    assert_eq!(l.checkin_config("app").await.unwrap(), off);

    assert!(matches!(
        l.checkin(a.clone()).await,
        Err(LedgerError::CheckinDisabled)
    ));
    assert!(!l.checkin_status(a.clone()).await.unwrap().enabled);
    assert!(history(l, &a).await.is_empty());
    assert_eq!(balance(l, &a).await, 0);

    l.set_checkin_config("app", checkin_config("UTC", &[3]), "admin")
        .await
        .unwrap();
    assert_eq!(l.checkin(a.clone()).await.unwrap().awarded, 3);
}

async fn checkin_credits_can_expire(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    let config = CheckinConfig {
        credits_expire_days: Some(2),
        ..checkin_config("UTC", &[10])
    };
    l.set_checkin_config("app", config.clone(), "admin")
        .await
        .unwrap();
    assert_eq!(l.checkin_config("app").await.unwrap(), config);

    l.checkin(a.clone()).await.unwrap();
    let until = START + Duration::days(2);
    assert_eq!(
        l.balance(a.clone()).await.unwrap().expiring,
        expiring(&[(10, until)])
    );
    t.clock.set(until);
    assert_eq!(balance(l, &a).await, 0);
    assert_eq!(l.sweep_expired(10).await.unwrap(), 1);
    let h = history(l, &a).await;
    assert_eq!(
        h.iter().map(|r| (r.txn_type, r.amount)).collect::<Vec<_>>(),
        vec![(TxnType::Expiry, -10), (TxnType::Checkin, 10)]
    );
}

// ---------------------------------------------------------------------------------------------
// Isolation

async fn apps_are_isolated(t: Ctx) {
    let l = &t.ledger;
    let one = acct("app-one", "alice");
    let two = acct("app-two", "alice");

    grant(l, &one, 100, None).await;
    assert_eq!(balance(l, &two).await, 0);
    assert!(matches!(
        spend(l, &two, 1).await,
        Err(LedgerError::InsufficientCredits {
            requested: 1,
            available: 0
        })
    ));
    grant(l, &two, 7, None).await;
    assert_eq!(spend(l, &one, 30).await.unwrap().balance_after, 70);
    assert_eq!(balance(l, &one).await, 70);
    assert_eq!(balance(l, &two).await, 7);

    // One idempotency key in two apps names two movements.
    let k1 = l
        .spend(
            one.clone(),
            1,
            "usage".into(),
            Some("shared-key".into()),
            None,
        )
        .await
        .unwrap();
    let k2 = l
        .spend(
            two.clone(),
            2,
            "usage".into(),
            Some("shared-key".into()),
            None,
        )
        .await
        .unwrap();
    assert_ne!(k1.id, k2.id);
    assert_eq!((k1.balance_after, k2.balance_after), (69, 5));

    let h1 = history(l, &one).await;
    let h2 = history(l, &two).await;
    assert_eq!((h1.len(), h2.len()), (3, 2));
    assert!(h1.iter().all(|r| r.app == "app-one"));
    assert!(h2.iter().all(|r| r.app == "app-two"));
    let app_wide = TransactionQuery {
        user: None,
        ..query(&two, 100, 0)
    };
    assert_eq!(l.transactions(app_wide).await.unwrap().0, h2);

    // Check-in configuration and records are per app.
    l.set_checkin_config(
        "app-two",
        CheckinConfig {
            enabled: false,
            ..CheckinConfig::default()
        },
        "admin",
    )
    .await
    .unwrap();
    assert_eq!(l.checkin(one.clone()).await.unwrap().streak, 1);
    assert!(matches!(
        l.checkin(two.clone()).await,
        Err(LedgerError::CheckinDisabled)
    ));
    l.set_checkin_config("app-two", CheckinConfig::default(), "admin")
        .await
        .unwrap();
    assert_eq!(l.checkin(two.clone()).await.unwrap().streak, 1);
    assert_eq!(balance(l, &one).await, 69 + 10);
    assert_eq!(balance(l, &two).await, 5 + 10);
}

// ---------------------------------------------------------------------------------------------
// Concurrency

async fn concurrent_spends_never_overdraw(t: Ctx) {
    const TASKS: usize = 32;
    const SPENDS_PER_TASK: usize = 200;
    const CREDITS: i64 = 5_000;
    let l = &t.ledger;
    let a = acct("app", "alice");
    grant(l, &a, CREDITS, None).await;

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let (l, a) = (l.clone(), a.clone());
        tasks.spawn(async move {
            let (mut ok, mut insufficient) = (0_i64, 0_i64);
            for _ in 0..SPENDS_PER_TASK {
                match spend(&l, &a, 1).await {
                    Ok(_) => ok += 1,
                    Err(LedgerError::InsufficientCredits { requested: 1, .. }) => insufficient += 1,
                    Err(e) => panic!("unexpected error: {e:?}"),
                }
            }
            (ok, insufficient)
        });
    }
    let (mut ok, mut insufficient) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (o, i) = done.unwrap();
        ok += o;
        insufficient += i;
    }
    let elapsed = started.elapsed();
    let total = (TASKS * SPENDS_PER_TASK) as f64;
    eprintln!(
        "[{}] concurrent spends: {} requests ({TASKS} tasks x {SPENDS_PER_TASK}) in {:.2?} = {:.0} ops/s",
        t.backend.label(),
        total,
        elapsed,
        total / elapsed.as_secs_f64()
    );

    assert_eq!(ok, CREDITS, "successful spends");
    assert_eq!(
        insufficient,
        (TASKS * SPENDS_PER_TASK) as i64 - CREDITS,
        "refused spends"
    );
    assert_eq!(balance(l, &a).await, 0);
    assert_eq!(stored_balance(l, &a).await, 0);
    let h = history(l, &a).await;
    assert_eq!(h.len(), CREDITS as usize + 1);
    let afters: BTreeSet<i64> = h
        .iter()
        .filter(|r| r.txn_type == TxnType::AiUsage)
        .map(|r| r.balance_after)
        .collect();
    assert_eq!(afters, (0..CREDITS).collect::<BTreeSet<_>>());
}

/// More writes at once than the SQLite writer queues (1,024): the rest wait for room, and every
/// one is applied exactly once.
async fn a_burst_beyond_the_write_queue_completes(t: Ctx) {
    const WRITES: usize = 2_500;
    const USERS: usize = 50;
    let mut tasks = JoinSet::new();
    for i in 0..WRITES {
        let l = t.ledger.clone();
        tasks.spawn(async move {
            let a = acct("app", &format!("u{}", i % USERS));
            grant(&l, &a, (i % 7 + 1) as i64, None).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let mut total = 0;
    for u in 0..USERS {
        total += balance(&t.ledger, &acct("app", &format!("u{u}"))).await;
    }
    let expected: i64 = (0..WRITES).map(|i| (i % 7 + 1) as i64).sum();
    assert_eq!(total, expected);
}

async fn concurrent_checkins_award_once(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    let mut tasks = JoinSet::new();
    for _ in 0..50 {
        let (l, a) = (l.clone(), a.clone());
        tasks.spawn(async move { l.checkin(a).await });
    }
    let (mut ok, mut refused) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            Ok(o) => ok.push(o),
            Err(LedgerError::AlreadyCheckedIn { day }) => {
                assert_eq!(day, "2026-06-01");
                refused += 1;
            }
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one check-in succeeds");
    assert_eq!(refused, 49);
    assert_eq!((ok[0].streak, ok[0].awarded, ok[0].balance), (1, 10, 10));
    assert_eq!(history(l, &a).await.len(), 1);
    assert_eq!(balance(l, &a).await, 10);
}

async fn concurrent_replays_write_once(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    let request = Movement {
        idempotency_key: Some("topup-1".into()),
        description: "credit pack".into(),
        metadata: Some(json!({"order": 42})),
        ..movement(&a, grant_kind(250, None))
    };
    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let (l, request) = (l.clone(), request.clone());
        tasks.spawn(async move { l.apply(request).await });
    }
    let mut results = Vec::new();
    while let Some(done) = tasks.join_next().await {
        results.push(done.unwrap().unwrap());
    }
    assert_eq!(results.len(), 32);
    assert!(
        results.iter().all(|r| *r == results[0]),
        "every replay returns the original"
    );
    let h = history(l, &a).await;
    assert_eq!(h, vec![results[0].clone()]);
    assert_eq!(balance(l, &a).await, 250);
}

async fn reads_are_consistent_snapshots(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    let until = START + Duration::days(30);
    grant(l, &a, 1_000, None).await;
    grant(l, &a, 1_000, Some(until)).await;

    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut readers = JoinSet::new();
    for _ in 0..4 {
        let (l, a, writing) = (l.clone(), a.clone(), writing.clone());
        readers.spawn(async move {
            let (mut reads, mut torn) = (0, Vec::new());
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let stored = l.repository().account(a.clone()).await.unwrap();
                let lot_sum: i64 = stored.lots.iter().map(|lot| lot.remaining).sum();
                if stored.balance != lot_sum {
                    torn.push((stored.balance, lot_sum));
                }
                let view = l.balance(a.clone()).await.unwrap();
                let expiring: i64 = view.expiring.iter().map(|e| e.amount).sum();
                if expiring > view.balance {
                    torn.push((view.balance, expiring));
                }
                reads += 1;
            }
            (reads, torn)
        });
    }
    let mut writers = JoinSet::new();
    for _ in 0..8 {
        let (l, a) = (l.clone(), a.clone());
        writers.spawn(async move {
            for _ in 0..100 {
                spend(&l, &a, 1).await.unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let (mut reads, mut torn) = (0, Vec::new());
    while let Some(done) = readers.join_next().await {
        let (r, t) = done.unwrap();
        reads += r;
        torn.extend(t);
    }
    assert!(reads > 0);
    assert!(
        torn.is_empty(),
        "{} of {reads} reads mixed two states (balance, lots): {:?}",
        torn.len(),
        &torn[..torn.len().min(5)]
    );
    assert_eq!(balance(l, &a).await, 1_200);
}

async fn two_nodes_share_one_database(t: Ctx) {
    let one = t.ledger.clone();
    let two = t.second_node().await;
    let a = acct("app", "alice");
    grant(&one, &a, 1_000, None).await;
    assert_eq!(balance(&two, &a).await, 1_000);

    // Spends from both nodes never overdraw between them.
    let mut tasks = JoinSet::new();
    for i in 0..16 {
        let (l, a) = (
            if i % 2 == 0 { one.clone() } else { two.clone() },
            a.clone(),
        );
        tasks.spawn(async move {
            let mut ok = 0;
            for _ in 0..100 {
                match spend(&l, &a, 1).await {
                    Ok(_) => ok += 1,
                    Err(LedgerError::InsufficientCredits { .. }) => {}
                    Err(e) => panic!("unexpected error: {e:?}"),
                }
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        ok += done.unwrap();
    }
    assert_eq!(ok, 1_000);
    assert_eq!(balance(&two, &a).await, 0);

    // Both nodes sweeping at once expire each lot exactly once.
    let at = START + Duration::hours(1);
    let users: Vec<AccountRef> = (0..20).map(|i| acct("app", &format!("u{i}"))).collect();
    for u in &users {
        grant(&one, u, 10, Some(at)).await;
    }
    t.clock.set(at);
    let sweeps: Vec<_> = [one.clone(), two.clone(), one.clone(), two.clone()]
        .into_iter()
        .map(|l| tokio::spawn(async move { l.sweep_expired(1_000).await.unwrap() }))
        .collect();
    let mut swept = 0;
    for s in sweeps {
        swept += s.await.unwrap();
    }
    assert_eq!(swept, 20, "each account swept by exactly one node");
    for u in &users {
        let h = history(&one, u).await;
        assert_eq!(
            h.iter().map(|r| (r.txn_type, r.amount)).collect::<Vec<_>>(),
            vec![(TxnType::Expiry, -10), (TxnType::Purchase, 10)]
        );
    }
    assert_clean(&two, "after sweeping from two nodes").await;
}

async fn timestamps_keep_whole_microseconds(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");

    // The clock only ever reads whole microseconds, however it is moved.
    t.clock.advance(Duration::nanoseconds(1_999));
    let now = l.now();
    assert_eq!(now.nanosecond() % 1_000, 0, "clock reads {now}");
    assert_eq!(now, START + Duration::microseconds(1));

    // Instants are stored to the microsecond, identically on every backend.
    let until = START + Duration::hours(1) + Duration::nanoseconds(999);
    let g = grant(l, &a, 10, Some(until)).await;
    assert_eq!(g.created_at, now);
    assert_eq!(history(l, &a).await[0].created_at, now);
    let whole = START + Duration::hours(1);
    assert_eq!(
        l.balance(a.clone()).await.unwrap().expiring,
        expiring(&[(10, whole)])
    );
    t.clock.set(whole - Duration::microseconds(1));
    assert_eq!(balance(l, &a).await, 10);
    t.clock.set(whole);
    assert_eq!(balance(l, &a).await, 0);
    assert_eq!(l.sweep_expired(10).await.unwrap(), 1);
    assert_eq!(history(l, &a).await[0].created_at, whole);
}
