//! PostgreSQL's batched writes (`pg_batch.rs`), seen from outside: writes that queue while a
//! batch commits are committed together in one transaction, each with its own outcome, one
//! account's in arrival order; a batch whose commit fails applies none of its writes.
//!
//! To put chosen writes in one batch, a test holds a row lock on the account from a connection
//! of its own: the lane's first write waits on it, the writes sent meanwhile queue behind it,
//! and when the test lets go they form the next batch. The store runs one lane, so every
//! account's writes meet in it.

use super::*;
use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tally_ledger::ReserveRequest;
use tokio::task::JoinHandle;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

pub(super) async fn count(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .await
        .unwrap()
        .n
}

/// A fresh PostgreSQL database and a ledger whose store batches on one lane; `None` without
/// PostgreSQL.
async fn one_lane() -> Option<(TestDb, Ledger, AsyncPgConnection)> {
    let db = TestDb::postgres().await?;
    db.store().await; // migrated
    let ledger = node(&db).await;
    let admin = AsyncPgConnection::establish(&db.url).await.unwrap();
    Some((db, ledger, admin))
}

/// A ledger on a store of its own that batches on one lane: one node.
async fn node(db: &TestDb) -> Ledger {
    node_with_clock(db).await.0
}

/// [`node`], and the clock it reads.
async fn node_with_clock(db: &TestDb) -> (Ledger, Arc<tally_ledger::ManualClock>) {
    let store = tally_store::Store::connect_with(
        &db.url,
        tally_store::StoreOptions {
            pg_batch_lanes: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let clock = Arc::new(tally_ledger::ManualClock::new(START));
    (Ledger::with_clock(Arc::new(store), clock.clone()), clock)
}

/// Waits until `n` statements wait for a lock.
async fn until_waiting(conn: &mut AsyncPgConnection, n: i64) {
    let waiting = "SELECT count(*) AS n FROM pg_locks WHERE NOT granted";
    for _ in 0..500 {
        if count(conn, waiting).await >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} statements ever waited on a lock");
}

/// Holds `user`'s account row locked on `conn` until [`let_go`], and starts a 1-credit spend on
/// it that the lane takes alone and waits in; returns once it waits.
async fn block_lane(l: &Ledger, conn: &mut AsyncPgConnection, user: &str) -> JoinHandle<()> {
    conn.batch_execute(&format!(
        "BEGIN; SELECT id FROM accounts WHERE user_id = '{user}' FOR UPDATE"
    ))
    .await
    .unwrap();
    let (l, a) = (l.clone(), acct("app", user));
    let blocker = tokio::spawn(async move {
        l.spend(a, 1, "blocker".into(), Some("blocker".into()), None)
            .await
            .unwrap();
    });
    until_waiting(conn, 1).await;
    blocker
}

async fn let_go(conn: &mut AsyncPgConnection, blocker: JoinHandle<()>) {
    conn.batch_execute("COMMIT").await.unwrap();
    blocker.await.unwrap();
}

type Outcome = Result<i64, LedgerError>;

/// Starts the writes one after another, each queued before the next starts.
async fn queue(
    writes: Vec<std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>>>,
) -> Vec<JoinHandle<Outcome>> {
    let mut started = Vec::new();
    for write in writes {
        started.push(tokio::spawn(write));
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    started
}

async fn outcomes(started: Vec<JoinHandle<Outcome>>) -> Vec<Outcome> {
    let mut out = Vec::new();
    for s in started {
        out.push(s.await.unwrap());
    }
    out
}

fn spend_w(
    l: &Ledger,
    user: &str,
    credits: i64,
    key: &str,
) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>> {
    described_spend_w(l, user, credits, key, "batch")
}

fn described_spend_w(
    l: &Ledger,
    user: &str,
    credits: i64,
    key: &str,
    description: &str,
) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>> {
    let (l, a, key) = (l.clone(), acct("app", user), key.to_owned());
    let description = description.to_owned();
    Box::pin(async move {
        l.spend(a, credits, description, Some(key), None)
            .await
            .map(|t| t.id)
    })
}

fn grant_w(
    l: &Ledger,
    user: &str,
    credits: i64,
    description: &str,
    key: Option<&str>,
) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>> {
    let mut m = movement(&acct("app", user), grant_kind(credits, None));
    m.description = description.to_owned();
    m.idempotency_key = key.map(str::to_owned);
    let l = l.clone();
    Box::pin(async move { l.apply(m).await.map(|t| t.id) })
}

fn hold_w(
    l: &Ledger,
    user: &str,
    credits: i64,
) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>> {
    let (l, a) = (l.clone(), acct("app", user));
    Box::pin(async move {
        l.reserve(ReserveRequest {
            account: a,
            credits,
            ttl_seconds: 600,
            description: "batch".into(),
            idempotency_key: None,
            metadata: None,
        })
        .await
        .map(|h| h.id)
    })
}

/// Makes inserting a transaction described "poison" fail: at once, or (`at_commit`) when the
/// transaction commits.
async fn refuse_poison(conn: &mut AsyncPgConnection, at_commit: bool) {
    let trigger = if at_commit {
        "CREATE CONSTRAINT TRIGGER poison AFTER INSERT ON transactions
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_poison();"
    } else {
        "CREATE TRIGGER poison BEFORE INSERT ON transactions
         FOR EACH ROW EXECUTE FUNCTION refuse_poison();"
    };
    conn.batch_execute(&format!(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.description = 'poison' THEN RAISE EXCEPTION 'poison'; END IF;
         RETURN NEW; END $$;
         {trigger}"
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_keeps_each_writes_outcome_in_arrival_order() {
    let Some((db, l, mut admin)) = one_lane().await else {
        return;
    };
    // Which transaction wrote each row: `txid_current()` names the top-level transaction even
    // inside a savepoint (a row's `xmin` would name the savepoint's own).
    admin
        .batch_execute(
            "CREATE TABLE seen (description TEXT, xid BIGINT);
             CREATE FUNCTION note_xid() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO seen VALUES (NEW.description, txid_current()); RETURN NULL; END $$;
             CREATE TRIGGER note AFTER INSERT ON transactions
             FOR EACH ROW EXECUTE FUNCTION note_xid();
             CREATE TRIGGER note AFTER INSERT ON holds
             FOR EACH ROW EXECUTE FUNCTION note_xid();",
        )
        .await
        .unwrap();
    let (alice, bob) = (acct("app", "alice"), acct("app", "bob"));
    let mut setup = movement(&alice, grant_kind(100, None));
    setup.description = "setup".into();
    setup.idempotency_key = Some("g0".into());
    let g0 = l.apply(setup).await.unwrap().id;
    grant(&l, &bob, 10, None).await;

    let blocker = block_lane(&l, &mut admin, "alice").await;
    let started = queue(vec![
        spend_w(&l, "alice", 60, "s60"),                // 99 → 39
        spend_w(&l, "alice", 50, "s50"),                // refused: only 39 left, after the 60
        grant_w(&l, "bob", 5, "batch", None),           // 10 → 15
        spend_w(&l, "alice", 60, "s60"),                // replay inside the batch
        grant_w(&l, "alice", 100, "setup", Some("g0")), // replay across batches
        spend_w(&l, "alice", 7, "g0"),                  // the key again, other figures
        hold_w(&l, "bob", 12),                          // 3 left available
        spend_w(&l, "bob", 4, "b4"),                    // refused: the hold counts
        spend_w(&l, "alice", 39, "s39"),                // 39 → 0
    ])
    .await;
    let_go(&mut admin, blocker).await;
    let got = outcomes(started).await;

    let s60 = *got[0].as_ref().unwrap();
    assert!(
        matches!(got[1], Err(LedgerError::InsufficientCredits { .. })),
        "{:?}",
        got[1]
    );
    assert!(got[2].is_ok());
    assert_eq!(
        got[3].as_ref().unwrap(),
        &s60,
        "a replay answers the first write"
    );
    assert_eq!(
        got[4].as_ref().unwrap(),
        &g0,
        "a replay answers the first write"
    );
    assert!(
        matches!(got[5], Err(LedgerError::IdempotencyKeyReused)),
        "{:?}",
        got[5]
    );
    assert!(got[6].is_ok());
    assert!(
        matches!(got[7], Err(LedgerError::InsufficientCredits { .. })),
        "{:?}",
        got[7]
    );
    assert!(got[8].is_ok());

    assert_eq!(balance(&l, &alice).await, 0);
    let bob_now = l.balance(bob.clone()).await.unwrap();
    assert_eq!((bob_now.balance, bob_now.held), (15, 12));
    // The writes that stood are the rows of one transaction, not the blocker's.
    let rows = "SELECT count(*) AS n FROM seen WHERE description = 'batch'";
    assert_eq!(
        count(&mut admin, rows).await,
        4,
        "three transactions and a hold"
    );
    let xids =
        "SELECT count(DISTINCT xid) AS n FROM seen WHERE description IN ('batch', 'blocker')";
    assert_eq!(
        count(&mut admin, xids).await,
        2,
        "the blocker's, and the batch's"
    );
    assert_clean(&l, "one batch").await;
    drop((l, admin));
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_leaves_the_rest_of_its_batch() {
    let Some((db, l, mut admin)) = one_lane().await else {
        return;
    };
    // A database error inside one write (here a trigger's), not a domain refusal.
    refuse_poison(&mut admin, false).await;
    let alice = acct("app", "alice");
    grant(&l, &alice, 100, None).await;

    let blocker = block_lane(&l, &mut admin, "alice").await;
    let started = queue(vec![
        spend_w(&l, "alice", 10, "s10"),
        grant_w(&l, "alice", 1, "poison", None),
        grant_w(&l, "bob", 5, "batch", None),
    ])
    .await;
    let_go(&mut admin, blocker).await;
    let got = outcomes(started).await;
    assert!(got[0].is_ok() && got[2].is_ok(), "{got:?}");
    assert!(
        matches!(got[1], Err(LedgerError::Storage(_))),
        "{:?}",
        got[1]
    );
    assert_eq!(balance(&l, &alice).await, 89);
    assert_eq!(balance(&l, &acct("app", "bob")).await, 5);
    assert_clean(&l, "a failing write").await;
    drop((l, admin));
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_commit_applies_none_of_its_writes() {
    let Some((db, l, mut admin)) = one_lane().await else {
        return;
    };
    // Checked at COMMIT: the batch's whole transaction fails there.
    refuse_poison(&mut admin, true).await;
    let alice = acct("app", "alice");
    grant(&l, &alice, 100, None).await;

    let blocker = block_lane(&l, &mut admin, "alice").await;
    let started = queue(vec![
        spend_w(&l, "alice", 10, "s10"),
        grant_w(&l, "bob", 5, "batch", None),
        grant_w(&l, "alice", 1, "poison", None),
        hold_w(&l, "alice", 5),
    ])
    .await;
    let_go(&mut admin, blocker).await;
    for (i, outcome) in outcomes(started).await.into_iter().enumerate() {
        assert!(
            matches!(outcome, Err(LedgerError::Storage(_))),
            "write {i}: {outcome:?}"
        );
    }
    // Only the blocker's spend happened.
    let now = l.balance(alice.clone()).await.unwrap();
    assert_eq!((now.balance, now.held), (99, 0));
    assert_eq!(balance(&l, &acct("app", "bob")).await, 0);
    let written = "SELECT count(*) AS n FROM transactions WHERE description IN ('batch', 'poison')
        OR idempotency_key = 's10'";
    assert_eq!(count(&mut admin, written).await, 0);
    assert_eq!(
        count(&mut admin, "SELECT count(*) AS n FROM holds").await,
        0
    );
    // The lane goes on.
    spend(&l, &alice, 9).await.unwrap();
    assert_eq!(balance(&l, &alice).await, 90);
    assert_clean(&l, "a failed commit").await;
    drop((l, admin));
    drop(db);
}

/// Two nodes spend `credits` of alice's under one key, "k", while a third party holds her
/// account's lock; both outcomes once the lock is let go.
async fn one_key_on_two_nodes(
    l: &Ledger,
    other: &Ledger,
    admin: &mut AsyncPgConnection,
    credits: i64,
) -> (Outcome, Outcome) {
    admin
        .batch_execute("BEGIN; SELECT id FROM accounts WHERE user_id = 'alice' FOR UPDATE")
        .await
        .unwrap();
    let first = tokio::spawn(spend_w(l, "alice", credits, "k"));
    let second = tokio::spawn(spend_w(other, "alice", credits, "k"));
    until_waiting(admin, 2).await;
    admin.batch_execute("COMMIT").await.unwrap();
    (first.await.unwrap(), second.await.unwrap())
}

/// Two nodes take one key for one account while a third party holds the account's lock: the
/// node that gets the lock second looks the key up in the statement that waited for the lock, whose
/// snapshot predates the first node's commit, so the unique key refuses its insert and the write
/// is retried — and answered as a replay. One movement; both callers are told its id. With
/// `drained`, the first write spends all there is: the second node's plan is refused (nothing
/// left) before its insert could meet the key, and it is still answered as the replay.
async fn one_movement_for_one_key(drained: bool) {
    let Some((db, l, mut admin)) = one_lane().await else {
        return;
    };
    let other = node(&db).await;
    let alice = acct("app", "alice");
    grant(&l, &alice, if drained { 10 } else { 100 }, None).await;

    let (first, second) = one_key_on_two_nodes(&l, &other, &mut admin, 10).await;
    let first = first.unwrap();
    assert!(
        matches!(second, Ok(id) if id == first),
        "both callers are told the one movement: {first} and {second:?}"
    );
    assert_eq!(balance(&l, &alice).await, if drained { 0 } else { 90 });
    let keyed = "SELECT count(*) AS n FROM transactions WHERE idempotency_key = 'k'";
    assert_eq!(count(&mut admin, keyed).await, 1);
    assert_clean(&l, "one key on two nodes").await;
    drop((l, other, admin));
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_another_node_commits_meanwhile_is_answered_as_a_replay() {
    one_movement_for_one_key(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_racing_the_spend_that_drained_the_account_is_answered_as_a_replay() {
    one_movement_for_one_key(true).await;
}

/// [`one_movement_for_one_key`] for a reported call (`track`), on an account that does not
/// exist yet: two nodes report alice's first call (5 messages, inside her free tier's allowance)
/// under the key "k" while a third party is creating her account. Both look the key up, find
/// nothing and wait to create the account; once it exists, one node locks it first and commits,
/// and the other's lookup is stale. With `block` (an allowance of exactly 5 messages) the
/// winner used the allowance up, so the loser's plan is refused and it looks its key up again;
/// otherwise its insert meets the unique key and the write is retried. Either way it is told the
/// winner's outcome, and one call is recorded.
async fn one_first_call_for_one_key(block: bool) {
    use tally_ledger::pricing::{FeatureKind, FeatureSpec};
    use tally_ledger::usage::{Entitlement, FREE_SCOPE, Overage, Reset, UsageRequest};
    let Some((db, l, mut admin)) = one_lane().await else {
        return;
    };
    let other = node(&db).await;
    let messages = FeatureSpec {
        key: "messages".into(),
        name: "Messages".into(),
        kind: FeatureKind::Metered,
        unit: Some("messages".into()),
    };
    l.put_feature("app", messages, true).await.unwrap();
    let free = Entitlement {
        feature: "messages".into(),
        included: Some(if block { 5 } else { 10 }),
        reset: Reset::Month,
        overage: if block {
            Overage::Block
        } else {
            Overage::Credits
        },
    };
    l.set_entitlements("app", FREE_SCOPE.into(), vec![free])
        .await
        .unwrap();

    admin
        .batch_execute(
            "BEGIN; INSERT INTO accounts (app_key, user_id, balance, held, created_at, updated_at)
             VALUES ('app', 'alice', 0, 0, now(), now())",
        )
        .await
        .unwrap();
    let call = |l: &Ledger| {
        let (l, account) = (l.clone(), acct("app", "alice"));
        tokio::spawn(async move {
            l.track(UsageRequest {
                account,
                quantities: [("messages".to_owned(), 5)].into(),
                features: vec![],
                dimensions: Default::default(),
                description: "chat".into(),
                metadata: None,
                idempotency_key: Some("k".into()),
            })
            .await
        })
    };
    let (first, second) = (call(&l), call(&other));
    until_waiting(&mut admin, 2).await;
    admin.batch_execute("COMMIT").await.unwrap();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    let first = first.unwrap();
    assert_eq!((first.credits, first.lines[0].included_used), (0, 5));
    assert!(
        matches!(&second, Ok(out) if *out == first),
        "both callers are told the one call: {first:?} and {second:?}"
    );
    let calls = "SELECT count(*) AS n FROM usage_events WHERE idempotency_key = 'k'";
    assert_eq!(count(&mut admin, calls).await, 1);
    let used = "SELECT coalesce(sum(used), 0)::bigint AS n FROM allowances";
    assert_eq!(count(&mut admin, used).await, 5);
    assert_clean(&l, "one first call on two nodes").await;
    drop((l, other, admin));
    drop(db);
}

/// Messages with a free allowance of `included` a month and 2 credits each beyond it, and
/// input tokens at 25 credits per 10,000 (a call of 1,000 costs 2.5).
async fn chat_pricing(l: &Ledger, included: i64) {
    use tally_ledger::pricing::{FeatureKind, FeatureSpec, RateSpec};
    use tally_ledger::usage::{Entitlement, FREE_SCOPE, Overage, Reset};
    for key in ["messages", "input_tokens"] {
        let spec = FeatureSpec {
            key: key.into(),
            name: key.into(),
            kind: FeatureKind::Metered,
            unit: None,
        };
        l.put_feature("app", spec, true).await.unwrap();
    }
    for (feature, credits, per) in [("messages", 2, 1), ("input_tokens", 25, 10_000)] {
        let spec = RateSpec {
            feature: feature.into(),
            dimensions: Default::default(),
            credits,
            per,
            tiers: vec![],
            effective_from: None,
        };
        l.add_rate("app", spec, "admin").await.unwrap();
    }
    let free = Entitlement {
        feature: "messages".into(),
        included: Some(included),
        reset: Reset::Month,
        overage: Overage::Credits,
    };
    l.set_entitlements("app", FREE_SCOPE.into(), vec![free])
        .await
        .unwrap();
}

type Call = Result<tally_ledger::usage::UsageOutcome, LedgerError>;

/// `user`'s call under `key` reporting `quantities`.
fn track_w(
    l: &Ledger,
    user: &str,
    key: &str,
    quantities: &[(&str, i64)],
) -> std::pin::Pin<Box<dyn Future<Output = Call> + Send>> {
    let request = tally_ledger::usage::UsageRequest {
        account: acct("app", user),
        quantities: quantities
            .iter()
            .map(|(k, q)| ((*k).to_owned(), *q))
            .collect(),
        features: vec![],
        dimensions: Default::default(),
        description: "chat".into(),
        metadata: None,
        idempotency_key: Some(key.into()),
    };
    let l = l.clone();
    Box::pin(async move { l.track(request).await })
}

/// The usage calls that meet in a batch, of one account or several, are decided in turn and
/// recorded together — their debits' transactions in one statement — and each is answered as
/// if it had run alone after the ones before it: the allowance used up across calls (announced
/// once), fractions carried from call to call, a replay of the run or of the account's history,
/// a key reused with another request, a refusal for want of credits that uses nothing, and an
/// unknown feature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_calls_in_a_batch_are_recorded_together() {
    let Some((db, l, mut admin)) = one_lane().await else {
        return;
    };
    chat_pricing(&l, 3).await;
    let (alice, bob) = (acct("app", "alice"), acct("app", "bob"));
    grant(&l, &alice, 20, None).await;
    grant(&l, &bob, 3, None).await;
    grant(&l, &acct("app", "carol"), 5, None).await;
    let pre = l
        .track(tally_ledger::usage::UsageRequest {
            account: alice.clone(),
            quantities: [("input_tokens".to_owned(), 400)].into(),
            features: vec![],
            dimensions: Default::default(),
            description: "chat".into(),
            metadata: None,
            idempotency_key: Some("pre".into()),
        })
        .await
        .unwrap(); // exactly 1 credit: 19 left
    note_inserts(&mut admin).await;
    let (together, _) = units_of(tally_store::UnitKind::Calls);

    let blocker = block_lane(&l, &mut admin, "carol").await;
    let tokens_and_messages = [("input_tokens", 1_000), ("messages", 2)];
    let mut calls = Vec::new();
    for (user, key, quantities) in [
        ("alice", "k1", &tokens_and_messages[..]), // 2 included, 2.5 credits: 2 charged
        ("alice", "k1", &tokens_and_messages[..]), // the run's replay
        ("alice", "k2", &[("messages", 2)][..]),   // the last included, 1 at 2 credits
        ("alice", "k1", &[("messages", 1)][..]),   // the run's key, another request
        ("bob", "b1", &[("messages", 5)][..]),     // 3 included, 4 credits: bob has 3
        ("alice", "k3", &[("input_tokens", 1_000)][..]), // 2.5 and the 0.5 carried: 3
        ("alice", "pre", &[("input_tokens", 400)][..]), // the history's replay
        ("bob", "b2", &[("messages", 3)][..]),     // all 3 included: no credits
        ("alice", "k4", &[("images", 1)][..]),     // no such feature
    ] {
        calls.push(tokio::spawn(track_w(&l, user, key, quantities)));
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    let_go(&mut admin, blocker).await;
    let mut got = Vec::new();
    for call in calls {
        got.push(call.await.unwrap());
    }

    let charged = |o: &Call| -> Option<(i64, bool)> {
        o.as_ref()
            .ok()
            .map(|o| (o.credits, o.transaction_id.is_some()))
    };
    let k1 = got[0].as_ref().unwrap();
    assert_eq!(charged(&got[0]).unwrap(), (2, true));
    assert_eq!(
        k1.lines
            .iter()
            .map(|l| (l.feature.as_str(), l.included_used, l.credits))
            .collect::<Vec<_>>(),
        [("input_tokens", 0, 2), ("messages", 2, 0)]
    );
    assert_eq!(got[1].as_ref().ok(), Some(k1), "the run's replay");
    assert_eq!(charged(&got[2]).unwrap(), (2, true));
    assert_eq!(got[2].as_ref().unwrap().lines[0].included_used, 1);
    assert!(
        matches!(got[3], Err(LedgerError::IdempotencyKeyReused)),
        "{:?}",
        got[3]
    );
    assert!(
        matches!(got[4], Err(LedgerError::InsufficientCredits { .. })),
        "{:?}",
        got[4]
    );
    assert_eq!(charged(&got[5]).unwrap(), (3, true), "the carry is charged");
    assert_eq!(got[6].as_ref().ok(), Some(&pre), "the history's replay");
    assert_eq!(charged(&got[7]).unwrap(), (0, false));
    assert_eq!(got[7].as_ref().unwrap().lines[0].included_used, 3);
    assert!(
        matches!(got[8], Err(LedgerError::Validation(_))),
        "{:?}",
        got[8]
    );

    assert_eq!(balance(&l, &alice).await, 19 - 2 - 2 - 3);
    assert_eq!(
        balance(&l, &bob).await,
        3,
        "the refused call charged nothing"
    );
    assert_eq!(
        inserts(&mut admin).await,
        vec![1, 3],
        "the blocker's transaction alone, then the calls' three in one statement"
    );
    let (now_together, _) = units_of(tally_store::UnitKind::Calls);
    assert!(
        now_together > together,
        "the run was counted as applied together"
    );
    let figures = [
        ("SELECT count(*) AS n FROM usage_events", 5),
        (
            "SELECT used AS n FROM allowances a JOIN accounts c ON c.id = a.account_id
             WHERE c.user_id = 'alice'",
            3,
        ),
        (
            "SELECT used AS n FROM allowances a JOIN accounts c ON c.id = a.account_id
             WHERE c.user_id = 'bob'",
            3,
        ),
        (
            "SELECT charged AS n FROM usage_meters m JOIN accounts c ON c.id = m.account_id
             WHERE c.user_id = 'alice' AND feature_key = 'input_tokens'",
            1 + 2 + 3,
        ),
        (
            "SELECT quantity AS n FROM usage_meters m JOIN accounts c ON c.id = m.account_id
             WHERE c.user_id = 'alice' AND feature_key = 'input_tokens'",
            2_400,
        ),
        (
            "SELECT carry AS n FROM usage_meters m JOIN accounts c ON c.id = m.account_id
             WHERE c.user_id = 'alice' AND feature_key = 'input_tokens'",
            0,
        ),
        (
            "SELECT charged AS n FROM usage_meters m JOIN accounts c ON c.id = m.account_id
             WHERE c.user_id = 'alice' AND feature_key = 'messages'",
            2,
        ),
        ("SELECT count(*) AS n FROM usage_lines", 1 + 2 + 1 + 1 + 1),
        (
            "SELECT count(*) AS n FROM webhook_events WHERE event_type = 'usage.limit_reached'",
            2,
        ),
    ];
    for (sql, n) in figures {
        assert_eq!(count(&mut admin, sql).await, n, "{sql}");
    }
    assert_clean(&l, "usage calls recorded together").await;
    drop((l, admin));
    drop(db);
}

/// A run of usage calls that names an account not created yet is recorded one call at a time
/// (the first call creates the account), with the outcomes it would have had together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_usage_calls_with_a_new_account_runs_one_at_a_time() {
    let Some((db, l, mut admin)) = one_lane().await else {
        return;
    };
    chat_pricing(&l, 3).await;
    grant(&l, &acct("app", "alice"), 10, None).await;
    grant(&l, &acct("app", "carol"), 5, None).await;
    let (_, alone) = units_of(tally_store::UnitKind::Calls);

    let blocker = block_lane(&l, &mut admin, "carol").await;
    let mut calls = Vec::new();
    for (user, key, messages) in [("alice", "a1", 4), ("dave", "d1", 2), ("dave", "d2", 2)] {
        calls.push(tokio::spawn(track_w(
            &l,
            user,
            key,
            &[("messages", messages)],
        )));
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    let_go(&mut admin, blocker).await;
    let mut got = Vec::new();
    for call in calls {
        got.push(call.await.unwrap());
    }
    let figures: Vec<(i64, i64)> = got[..2]
        .iter()
        .map(|o| {
            let o = o.as_ref().unwrap();
            (o.lines[0].included_used, o.credits)
        })
        .collect();
    // alice: 3 included, 1 at 2 credits; dave, who holds no credits: 2 included, then the last
    // one and 1 he cannot pay for (refused).
    assert_eq!(figures, [(3, 2), (2, 0)]);
    assert!(
        matches!(got[2], Err(LedgerError::InsufficientCredits { .. })),
        "{:?}",
        got[2]
    );
    let (_, now_alone) = units_of(tally_store::UnitKind::Calls);
    assert!(now_alone > alone, "the run was sent back to one at a time");
    assert_eq!(balance(&l, &acct("app", "alice")).await, 8);
    let dave = "SELECT used AS n FROM allowances a JOIN accounts c ON c.id = a.account_id
        WHERE c.user_id = 'dave'";
    assert_eq!(
        count(&mut admin, dave).await,
        2,
        "dave's refused call used nothing"
    );
    assert_clean(&l, "usage calls one at a time").await;
    drop((l, admin));
    drop(db);
}

/// Two calls of one batch on either side of the month's end use two windows of the monthly
/// allowance: the run goes back to one call at a time, and the second call finds the new
/// month's allowance whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_calls_across_a_window_reset_in_one_batch_use_their_own_windows() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    db.store().await;
    let (l, clock) = node_with_clock(&db).await;
    let mut admin = AsyncPgConnection::establish(&db.url).await.unwrap();
    chat_pricing(&l, 3).await;
    grant(&l, &acct("app", "alice"), 10, None).await;
    grant(&l, &acct("app", "carol"), 5, None).await;
    let (_, alone) = units_of(tally_store::UnitKind::Calls);
    // START is 1 June, noon (UTC): thirty seconds before July.
    clock.advance(
        Duration::days(29) + Duration::hours(11) + Duration::minutes(59) + Duration::seconds(30),
    );

    let blocker = block_lane(&l, &mut admin, "carol").await;
    let june = tokio::spawn(track_w(&l, "alice", "june", &[("messages", 3)]));
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    clock.advance(Duration::minutes(1));
    let july = tokio::spawn(track_w(&l, "alice", "july", &[("messages", 3)]));
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let_go(&mut admin, blocker).await;
    let (june, july) = (june.await.unwrap().unwrap(), july.await.unwrap().unwrap());

    assert_eq!((june.lines[0].included_used, june.credits), (3, 0));
    assert_eq!(
        (july.lines[0].included_used, july.credits),
        (3, 0),
        "July's allowance is whole"
    );
    let (_, now_alone) = units_of(tally_store::UnitKind::Calls);
    assert!(now_alone > alone, "the run was sent back to one at a time");
    let windows = "SELECT count(*) AS n FROM allowances WHERE used = 3";
    assert_eq!(count(&mut admin, windows).await, 2, "one row per month");
    assert_eq!(balance(&l, &acct("app", "alice")).await, 10);
    assert_clean(&l, "calls across a window reset").await;
    drop((l, admin));
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_call_another_node_reports_meanwhile_is_answered_as_a_replay() {
    one_first_call_for_one_key(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_call_refused_after_its_twin_used_the_allowance_is_answered_as_a_replay() {
    one_first_call_for_one_key(true).await;
}

#[derive(QueryableByName)]
struct EventType {
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_type: String,
}

/// The rows `sql` answers.
async fn rows<R>(conn: &mut AsyncPgConnection, sql: &str) -> Vec<R>
where
    R: diesel::deserialize::QueryableByName<diesel::pg::Pg> + Send + 'static,
{
    diesel::sql_query(sql).load(conn).await.unwrap()
}

/// The outbox's event types, in the order they are delivered.
async fn outbox_types(conn: &mut AsyncPgConnection) -> Vec<String> {
    let sql = "SELECT event_type FROM webhook_events ORDER BY seq";
    let types: Vec<EventType> = rows(conn, sql).await;
    types.into_iter().map(|e| e.event_type).collect()
}

/// A check-in's reward, its day and its events share the write's last round trip: the grant's
/// events come before `checkin.completed`, and a refused second check-in adds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_announces_its_grant_then_itself_and_a_refused_one_nothing() {
    let Some((db, l, mut admin)) = one_lane().await else {
        return;
    };
    let a = acct("app", "alice");
    l.set_checkin_config("app", checkin_config("UTC", &[5, 10]), "admin")
        .await
        .unwrap();
    let first = l.checkin(a.clone()).await.unwrap();
    assert_eq!((first.awarded, first.balance), (5, 5));
    let told = outbox_types(&mut admin).await;
    assert_eq!(told, ["credits.granted", "checkin.completed"]);
    assert!(matches!(
        l.checkin(a.clone()).await,
        Err(LedgerError::AlreadyCheckedIn { .. })
    ));
    assert_eq!(outbox_types(&mut admin).await, told);
    assert_eq!(
        count(&mut admin, "SELECT count(*) AS n FROM lots").await,
        1,
        "the refused check-in's lot is not kept"
    );
    assert_eq!(balance(&l, &a).await, 5);
    assert_clean(&l, "after the check-ins").await;
    drop((l, admin));
    drop(db);
}

/// From now on, records how many transactions each `INSERT` statement adds, in order.
async fn note_inserts(conn: &mut AsyncPgConnection) {
    conn.batch_execute(
        "CREATE TABLE inserts (seq BIGSERIAL, n BIGINT);
         CREATE FUNCTION note_insert() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO inserts (n) SELECT count(*) FROM new_rows; RETURN NULL; END $$;
         CREATE TRIGGER note_insert AFTER INSERT ON transactions
         REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION note_insert();",
    )
    .await
    .unwrap();
}

/// The rows each `INSERT` into `transactions` added since [`note_inserts`], in order.
async fn inserts(conn: &mut AsyncPgConnection) -> Vec<i64> {
    let counts: Vec<Count> = rows(conn, "SELECT n FROM inserts ORDER BY seq").await;
    counts.into_iter().map(|c| c.n).collect()
}

/// How many runs of `kind` this process's batches have applied together, and sent back to one
/// write at a time. Tests running beside this one in the process add to them: a test compares
/// its own before and after.
fn units_of(kind: tally_store::UnitKind) -> (u64, u64) {
    let units = tally_store::batch_units();
    let (_, together, alone) = units.into_iter().find(|u| u.0 == kind).unwrap();
    (together, alone)
}

/// The debits to one account that meet in a batch are planned in turn and written together —
/// their transactions in one statement — and each is answered as if it had run alone after the
/// ones before it: spent, replayed (of the run or of the account's history), refused for want
/// of credits, or refused for reusing a key with other figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debits_of_one_account_in_a_batch_are_written_together() {
    let Some((db, l, mut admin)) = one_lane().await else {
        return;
    };
    let alice = acct("app", "alice");
    grant(&l, &alice, 100, None).await;
    let pre = l
        .spend(alice.clone(), 5, "batch".into(), Some("pre".into()), None)
        .await
        .unwrap()
        .id;
    note_inserts(&mut admin).await;
    let (together, _) = units_of(tally_store::UnitKind::Debits);

    let blocker = block_lane(&l, &mut admin, "alice").await; // 95 → 94
    let started = queue(vec![
        spend_w(&l, "alice", 10, "a"),   // 94 → 84
        spend_w(&l, "alice", 10, "a"),   // the run's replay
        spend_w(&l, "alice", 200, "z"),  // refused: 84 left
        spend_w(&l, "alice", 11, "a"),   // the run's key, other figures
        spend_w(&l, "alice", 5, "pre"),  // a replay of the history
        spend_w(&l, "alice", 6, "pre"),  // the history's key, other figures
        spend_w(&l, "alice", 84, "b"),   // 84 → 0
        spend_w(&l, "alice", 1, "c"),    // refused: nothing left
        spend_w(&l, "alice", 200, "z2"), // refused
    ])
    .await;
    let_go(&mut admin, blocker).await;
    let got = outcomes(started).await;

    let a = *got[0].as_ref().unwrap();
    assert_eq!(got[1].as_ref().ok(), Some(&a), "the run's replay");
    let refused = |o: &Outcome| matches!(o, Err(LedgerError::InsufficientCredits { .. }));
    assert!(refused(&got[2]), "{:?}", got[2]);
    let reused = |o: &Outcome| matches!(o, Err(LedgerError::IdempotencyKeyReused));
    assert!(reused(&got[3]), "{:?}", got[3]);
    assert_eq!(got[4].as_ref().ok(), Some(&pre), "the history's replay");
    assert!(reused(&got[5]), "{:?}", got[5]);
    let b = *got[6].as_ref().unwrap();
    assert!(b > a, "written in arrival order: {a}, {b}");
    assert!(refused(&got[7]) && refused(&got[8]), "{got:?}");

    assert_eq!(balance(&l, &alice).await, 0);
    assert_eq!(
        inserts(&mut admin).await,
        vec![1, 2],
        "the blocker's transaction alone, then the run's two in one statement"
    );
    let (now_together, _) = units_of(tally_store::UnitKind::Debits);
    assert!(
        now_together > together,
        "the run was counted as applied together"
    );
    let after = "SELECT count(*) AS n FROM transactions
        WHERE (idempotency_key = 'a' AND balance_after = 84 AND amount = -10)
           OR (idempotency_key = 'b' AND balance_after = 0 AND amount = -84)";
    assert_eq!(count(&mut admin, after).await, 2);
    assert_clean(&l, "debits written together").await;
    drop((l, admin));
    drop(db);
}

/// A node on a clock of its own, and alice holding 10 credits that expire in a minute and 100
/// that never do (bob holds 10); `None` without PostgreSQL.
async fn a_lot_due_in_a_minute() -> Option<(
    TestDb,
    Ledger,
    Arc<tally_ledger::ManualClock>,
    AsyncPgConnection,
)> {
    let db = TestDb::postgres().await?;
    db.store().await;
    let (l, clock) = node_with_clock(&db).await;
    let admin = AsyncPgConnection::establish(&db.url).await.unwrap();
    let alice = acct("app", "alice");
    grant(&l, &alice, 10, Some(START + Duration::minutes(1))).await;
    grant(&l, &alice, 100, None).await;
    grant(&l, &acct("app", "bob"), 10, None).await;
    Some((db, l, clock, admin))
}

/// Alice's debits `spends` (credits, key), queued as one run behind bob's blocked lane two
/// minutes after her lot of 10 was due: the run must be sent back to one debit at a time, which
/// expires the lot once (written and announced before the first debit), then writes each debit
/// that passes with a statement of its own — two of them here. Answers the debits' outcomes and
/// alice's balance; `None` without PostgreSQL.
async fn debits_finding_a_lot_due(spends: &[(i64, &str)]) -> Option<(Vec<Outcome>, i64)> {
    let (db, l, clock, mut admin) = a_lot_due_in_a_minute().await?;
    clock.advance(Duration::minutes(2));
    note_inserts(&mut admin).await;
    let (_, alone) = units_of(tally_store::UnitKind::Debits);

    // The lane waits on bob's account; alice's debits queue behind.
    let blocker = block_lane(&l, &mut admin, "bob").await;
    let writes = spends
        .iter()
        .map(|&(credits, key)| spend_w(&l, "alice", credits, key))
        .collect();
    let started = queue(writes).await;
    let_go(&mut admin, blocker).await;
    let got = outcomes(started).await;
    assert_eq!(
        inserts(&mut admin).await,
        vec![1, 1, 1, 1],
        "bob's spend, then alice's expiry, and her two debits one statement each"
    );
    let (_, now_alone) = units_of(tally_store::UnitKind::Debits);
    assert!(
        now_alone > alone,
        "the run was counted as sent back to one at a time"
    );
    let expired =
        "SELECT count(*) AS n FROM transactions WHERE txn_type = 'expiry' AND amount = -10";
    assert_eq!(count(&mut admin, expired).await, 1);
    let left = balance(&l, &acct("app", "alice")).await;
    assert_clean(&l, "a run with a lot due").await;
    drop((l, admin));
    drop(db);
    Some((got, left))
}

/// A run of debits that finds a lot due is applied one debit at a time instead, with the same
/// outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_debits_that_finds_a_lot_due_runs_one_at_a_time() {
    let spends = [(5, "x"), (5, "y"), (91, "z")]; // z refused: 90 left
    let Some((got, left)) = debits_finding_a_lot_due(&spends).await else {
        return;
    };
    assert!(got[0].is_ok() && got[1].is_ok(), "{got:?}");
    assert!(
        matches!(
            got[2],
            Err(LedgerError::InsufficientCredits { available: 90, .. })
        ),
        "{:?}",
        got[2]
    );
    assert_eq!(left, 90);
}

/// The same with one-credit debits, whose first read takes only as many lots of each kind as the
/// run's credits: the lot due among them still sends the run back to one debit at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_one_credit_debits_that_finds_a_lot_due_runs_one_at_a_time() {
    let Some((got, left)) = debits_finding_a_lot_due(&[(1, "x"), (1, "y")]).await else {
        return;
    };
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    assert_eq!(left, 98);
}

/// A run of debits whose statements fail (here a trigger refuses one debit's row) is rolled
/// back and applied one debit at a time: the others stand, the failing one fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_debits_whose_insert_fails_runs_one_at_a_time() {
    let Some((db, l, mut admin)) = one_lane().await else {
        return;
    };
    refuse_poison(&mut admin, false).await;
    let alice = acct("app", "alice");
    grant(&l, &alice, 100, None).await;

    let blocker = block_lane(&l, &mut admin, "alice").await; // 100 → 99
    let started = queue(vec![
        spend_w(&l, "alice", 10, "p1"),
        described_spend_w(&l, "alice", 10, "p2", "poison"),
        spend_w(&l, "alice", 10, "p3"),
    ])
    .await;
    let_go(&mut admin, blocker).await;
    let got = outcomes(started).await;
    assert!(got[0].is_ok() && got[2].is_ok(), "{got:?}");
    assert!(
        matches!(got[1], Err(LedgerError::Storage(_))),
        "{:?}",
        got[1]
    );
    // The insert of the three together formed p1's and p2's rows, taking two ids, before the
    // trigger refused p2's: p1 alone then took the third after the blocker's.
    let blocker_id = "SELECT id AS n FROM transactions WHERE idempotency_key = 'blocker'";
    let blocker_id = count(&mut admin, blocker_id).await;
    assert_eq!(
        got[0].as_ref().unwrap() - blocker_id,
        3,
        "the debits were tried together first"
    );
    assert_eq!(balance(&l, &alice).await, 79);
    let keyed =
        "SELECT count(*) AS n FROM transactions WHERE idempotency_key IN ('p1', 'p2', 'p3')";
    assert_eq!(count(&mut admin, keyed).await, 2);
    assert_clean(&l, "a run whose insert fails").await;
    drop((l, admin));
    drop(db);
}

/// Debits to several accounts that meet in a batch are written together too — every account's
/// transactions in one statement — each answered as if alone; a debit to an account that does
/// not exist is refused and creates none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debits_of_several_accounts_in_a_batch_are_written_together() {
    let Some((db, l, mut admin)) = one_lane().await else {
        return;
    };
    for (user, credits) in [("alice", 10), ("bob", 20), ("carol", 30), ("dave", 5)] {
        grant(&l, &acct("app", user), credits, None).await;
    }
    note_inserts(&mut admin).await;

    // The lane waits on dave's account; the others' debits queue behind, out of order.
    let blocker = block_lane(&l, &mut admin, "dave").await; // 5 → 4
    let started = queue(vec![
        spend_w(&l, "carol", 25, "c1"), // 30 → 5
        spend_w(&l, "bob", 21, "b1"),   // refused: 20
        spend_w(&l, "alice", 10, "a1"), // 10 → 0
        spend_w(&l, "nobody", 1, "n1"), // refused: no account
        spend_w(&l, "bob", 20, "b2"),   // 20 → 0
        spend_w(&l, "carol", 25, "c1"), // replay
        spend_w(&l, "carol", 6, "c2"),  // refused: 5 left
        spend_w(&l, "alice", 10, "b1"), // alice's own key space: 0 left, refused
    ])
    .await;
    let_go(&mut admin, blocker).await;
    let got = outcomes(started).await;
    let refused = |o: &Outcome| matches!(o, Err(LedgerError::InsufficientCredits { .. }));
    assert!(
        got[0].is_ok() && got[2].is_ok() && got[4].is_ok(),
        "{got:?}"
    );
    assert_eq!(got[5].as_ref().ok(), got[0].as_ref().ok(), "carol's replay");
    for i in [1, 3, 6, 7] {
        assert!(refused(&got[i]), "write {i}: {:?}", got[i]);
    }
    for (user, left) in [("alice", 0), ("bob", 0), ("carol", 5), ("dave", 4)] {
        assert_eq!(balance(&l, &acct("app", user)).await, left, "{user}");
    }
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) AS n FROM accounts WHERE user_id = 'nobody'"
        )
        .await,
        0,
        "a refused debit creates no account"
    );
    assert_eq!(
        inserts(&mut admin).await,
        vec![1, 3],
        "dave's transaction alone, then alice's, bob's and carol's in one statement"
    );
    assert_clean(&l, "several accounts together").await;
    drop((l, admin));
    drop(db);
}

/// Debits applied together are each planned at their own instant: one that arrives after a lot
/// came due finds it due (its expiry comes first) although the debit before it did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debits_in_one_batch_are_each_planned_at_their_own_instant() {
    let Some((db, l, clock, mut admin)) = a_lot_due_in_a_minute().await else {
        return;
    };
    let alice = acct("app", "alice");

    let blocker = block_lane(&l, &mut admin, "bob").await;
    let mut started = queue(vec![spend_w(&l, "alice", 5, "before")]).await;
    clock.advance(Duration::minutes(2));
    started.extend(queue(vec![spend_w(&l, "alice", 5, "after")]).await);
    let_go(&mut admin, blocker).await;
    let got = outcomes(started).await;
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    // 110: "before" takes 5 of the expiring lot; "after" finds its other 5 expired, then takes
    // 5 of the lasting one.
    assert_eq!(balance(&l, &alice).await, 95);
    let expired =
        "SELECT count(*) AS n FROM transactions WHERE txn_type = 'expiry' AND amount = -5";
    assert_eq!(count(&mut admin, expired).await, 1);
    assert_clean(&l, "debits at two instants").await;
    drop((l, admin));
    drop(db);
}

/// The events of debits applied together are those each would have announced alone, in order:
/// every `credits.spent`, and `credits.low` where a debit crosses the threshold from what the
/// one before it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debits_applied_together_announce_what_each_would_alone() {
    let Some((db, l, mut admin)) = one_lane().await else {
        return;
    };
    for (user, credits) in [("alice", 100), ("bob", 60), ("dave", 100)] {
        grant(&l, &acct("app", user), credits, None).await;
    }
    admin
        .batch_execute(
            "INSERT INTO webhook_settings (app_key, low_balance_threshold, updated_at)
             VALUES ('app', 50, now());
             INSERT INTO webhook_endpoints (id, app_key, url, description, event_types,
               wants_spent, enabled, secret, created_at, updated_at)
             VALUES ('we_1', 'app', 'https://example.com/hook', '', '[\"credits.spent\"]',
               true, true, 'whsec_test', now(), now());",
        )
        .await
        .unwrap();
    let before = outbox_types(&mut admin).await.len();

    let blocker = block_lane(&l, &mut admin, "dave").await; // 100 → 99
    let started = queue(vec![
        spend_w(&l, "bob", 20, "b1"),   // 60 → 40: crosses 50
        spend_w(&l, "alice", 30, "a1"), // 100 → 70
        spend_w(&l, "alice", 30, "a2"), // 70 → 40: crosses 50
        spend_w(&l, "alice", 10, "a3"), // 40 → 30: already under
    ])
    .await;
    let_go(&mut admin, blocker).await;
    let got = outcomes(started).await;
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    let (spent, low) = ("credits.spent", "credits.low");
    assert_eq!(
        outbox_types(&mut admin).await[before..],
        [spent, spent, spent, low, spent, spent, low],
        "dave's; then alice's three, the second crossing; then bob's, crossing"
    );
    assert_clean(&l, "events of debits together").await;
    drop((l, admin));
    drop(db);
}

/// A check-in by `user` of `app` that answers the balance after it.
fn checkin_w(
    l: &Ledger,
    app: &str,
    user: &str,
) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>> {
    let (l, a) = (l.clone(), acct(app, user));
    Box::pin(async move { l.checkin(a).await.map(|o| o.balance) })
}

/// The check-ins that meet in a batch are written together — their rewards' transactions in one
/// statement, across apps — and each is answered as if it had run alone: a streak continued
/// from the history, a new user's first (its account created) under each app's rewards, a day
/// the history already holds refused, and a second check-in of the day in the batch refused.
/// Each day, lot and event names its own user's reward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_ins_of_a_batch_are_written_together() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    db.store().await;
    let (l, clock) = node_with_clock(&db).await;
    let mut admin = AsyncPgConnection::establish(&db.url).await.unwrap();
    l.set_checkin_config("app", checkin_config("UTC", &[5, 10]), "admin")
        .await
        .unwrap();
    l.set_checkin_config("other", checkin_config("UTC", &[7]), "admin")
        .await
        .unwrap();
    for user in ["alice", "bob", "dave"] {
        grant(&l, &acct("app", user), 1, None).await;
    }
    l.checkin(acct("app", "alice")).await.unwrap(); // 1 → 6
    clock.advance(Duration::days(1));
    l.checkin(acct("app", "bob")).await.unwrap(); // today
    let told = outbox_types(&mut admin).await.len();
    note_inserts(&mut admin).await;
    let (together, _) = units_of(tally_store::UnitKind::Checkins);

    let blocker = block_lane(&l, &mut admin, "dave").await;
    let started = queue(vec![
        checkin_w(&l, "other", "erin"), // new, another app's reward: 7
        checkin_w(&l, "app", "carol"),  // new: 5
        checkin_w(&l, "app", "alice"),  // streak day 2: 6 → 16
        checkin_w(&l, "app", "bob"),    // the history holds today
        checkin_w(&l, "app", "alice"),  // the batch holds today
    ])
    .await;
    let_go(&mut admin, blocker).await;
    let got = outcomes(started).await;

    assert_eq!(got[0].as_ref().ok(), Some(&7), "{got:?}");
    assert_eq!(got[1].as_ref().ok(), Some(&5), "{got:?}");
    assert_eq!(got[2].as_ref().ok(), Some(&16), "{got:?}");
    let today = (START + Duration::days(1)).date().to_string();
    for i in [3, 4] {
        assert!(
            matches!(&got[i], Err(LedgerError::AlreadyCheckedIn { day }) if *day == today),
            "check-in {i}: {:?}",
            got[i]
        );
    }
    assert_eq!(
        inserts(&mut admin).await,
        vec![1, 3],
        "dave's spend alone, then alice's, carol's and erin's rewards in one statement"
    );
    let (now_together, _) = units_of(tally_store::UnitKind::Checkins);
    assert!(
        now_together > together,
        "the check-ins were counted as applied together"
    );
    let status = l.checkin_status(acct("app", "alice")).await.unwrap();
    assert_eq!((status.streak, status.checked_in_today), (2, true));
    for (user, left) in [("alice", 16), ("bob", 6), ("carol", 5)] {
        assert_eq!(balance(&l, &acct("app", user)).await, left, "{user}");
    }
    assert_eq!(balance(&l, &acct("other", "erin")).await, 7);
    let days = "SELECT count(*) AS n FROM checkins";
    assert_eq!(count(&mut admin, days).await, 5);
    // Each day's and each lot's transaction is its own user's reward, and each event names it.
    let astray =
        "SELECT count(*) AS n FROM checkins c JOIN transactions t ON t.id = c.transaction_id
        WHERE t.app_key <> c.app_key OR t.user_id <> c.user_id OR t.amount <> c.awarded
           OR t.txn_type <> 'checkin'";
    assert_eq!(count(&mut admin, astray).await, 0);
    let astray = "SELECT count(*) AS n FROM lots l JOIN transactions t ON t.id = l.transaction_id
        WHERE t.account_id <> l.account_id OR t.amount <> l.amount";
    assert_eq!(count(&mut admin, astray).await, 0);
    let told_right = "SELECT count(*) AS n FROM webhook_events e
        JOIN checkins c ON c.app_key = e.app_key AND c.user_id = e.user_id
        JOIN transactions t ON t.id = c.transaction_id
        WHERE e.event_type = 'checkin.completed'
          AND e.payload::jsonb -> 'data' ->> 'transaction_id' = c.transaction_id::text
          AND (e.payload::jsonb -> 'data' ->> 'balance_after')::bigint = t.balance_after
          AND e.payload::jsonb ->> 'user_id' = c.user_id";
    assert_eq!(count(&mut admin, told_right).await, 5);
    // alice's, carol's and erin's reward and check-in, in the batch's order.
    let new: Vec<String> = outbox_types(&mut admin).await.split_off(told);
    let (granted, completed) = ("credits.granted", "checkin.completed");
    assert_eq!(
        new,
        [granted, completed, granted, completed, granted, completed]
    );
    assert_clean(&l, "check-ins written together").await;
    drop((l, admin));
    drop(db);
}

/// Check-ins in a batch with a lot due on one of their accounts run one at a time: the lot's
/// expiry is written before the reward, as alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_ins_that_find_a_lot_due_run_one_at_a_time() {
    let Some((db, l, clock, mut admin)) = a_lot_due_in_a_minute().await else {
        return;
    };
    l.set_checkin_config("app", checkin_config("UTC", &[5]), "admin")
        .await
        .unwrap();
    clock.advance(Duration::minutes(2));
    note_inserts(&mut admin).await;
    let (_, alone) = units_of(tally_store::UnitKind::Checkins);

    let blocker = block_lane(&l, &mut admin, "bob").await;
    let started = queue(vec![
        checkin_w(&l, "app", "alice"),
        checkin_w(&l, "app", "carol"),
    ])
    .await;
    let_go(&mut admin, blocker).await;
    let got = outcomes(started).await;

    // alice: 110, of which 10 expired, plus 5.
    assert_eq!(got[0].as_ref().ok(), Some(&105), "{got:?}");
    assert_eq!(got[1].as_ref().ok(), Some(&5), "{got:?}");
    assert_eq!(
        inserts(&mut admin).await,
        vec![1, 1, 1, 1],
        "bob's spend, alice's expiry, alice's reward, carol's reward: one at a time"
    );
    let (_, now_alone) = units_of(tally_store::UnitKind::Checkins);
    assert!(
        now_alone > alone,
        "the check-ins were counted as sent back to one at a time"
    );
    assert_clean(&l, "check-ins one at a time").await;
    drop((l, admin));
    drop(db);
}

/// A check-in refused by its app's settings (switched off) sends its batch's check-ins back to
/// one at a time: it creates no account, and the others are claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_to_an_app_switched_off_creates_no_account_in_a_batch() {
    let Some((db, l, mut admin)) = one_lane().await else {
        return;
    };
    let off = CheckinConfig {
        enabled: false,
        ..checkin_config("UTC", &[5])
    };
    l.set_checkin_config("off", off, "admin").await.unwrap();
    grant(&l, &acct("app", "dave"), 1, None).await;
    note_inserts(&mut admin).await;

    let blocker = block_lane(&l, &mut admin, "dave").await;
    let started = queue(vec![
        checkin_w(&l, "off", "zed"),
        checkin_w(&l, "app", "carol"),
    ])
    .await;
    let_go(&mut admin, blocker).await;
    let got = outcomes(started).await;

    assert!(
        matches!(got[0], Err(LedgerError::CheckinDisabled)),
        "{got:?}"
    );
    assert_eq!(
        got[1].as_ref().ok(),
        Some(&10),
        "the default reward: {got:?}"
    );
    let zed = "SELECT count(*) AS n FROM accounts WHERE user_id = 'zed'";
    assert_eq!(
        count(&mut admin, zed).await,
        0,
        "no account for a refused check-in"
    );
    assert_eq!(
        inserts(&mut admin).await,
        vec![1, 1],
        "dave's spend, then carol's reward alone: the check-ins ran one at a time"
    );
    assert_clean(&l, "a switched-off app in a batch").await;
    drop((l, admin));
    drop(db);
}
