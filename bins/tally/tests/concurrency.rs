//! Many callers at once: the ledger never overdraws, a day is claimed once, a key charges once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use common::{Db, SERVICE_KEY, TestApp, assert_error, consume_storm, user_token};

backend_tests!(
    consume_storm_never_overdraws,
    one_checkin_per_day_under_contention,
    replayed_key_charges_once,
    hang_ups_then_retries_charge_once,
);

/// The storms run one at a time so that their throughput figures mean something.
static HEAVY: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

async fn consume_storm_never_overdraws(db: Db) {
    let _alone = HEAVY.lock().await;
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 5_000).await;
    let (callers, per_caller) = (32, 200);
    let (tally, rate) = consume_storm(
        std::slice::from_ref(&app.address),
        "alice",
        callers,
        per_caller,
    )
    .await;
    eprintln!(
        "[{db:?}] one server: {callers} callers x {per_caller} consumes: {} ok, {} refused, {rate:.0} requests/s",
        tally.ok, tally.insufficient
    );
    assert_eq!(
        (tally.ok, tally.insufficient, tally.other),
        (5_000, 1_400, 0)
    );
    assert_eq!(app.balance("alice").await, 0);
    let rows = app.rows_of_type("ai_usage").await;
    assert_eq!(rows.len(), 5_000);
    // Every intermediate balance appears exactly once: no two debits saw the same balance.
    let after: BTreeSet<i64> = rows
        .iter()
        .map(|r| r["balance_after"].as_i64().unwrap())
        .collect();
    assert_eq!(after, (0..5_000).collect::<BTreeSet<i64>>());
    app.finish().await;
}

async fn one_checkin_per_day_under_contention(db: Db) {
    let _alone = HEAVY.lock().await;
    let app = TestApp::spawn(db).await;
    let alice = user_token("alice");
    let replies = join_all((0..50).map(|_| app.checkin(&alice))).await;
    let ok = replies.iter().filter(|r| r.0 == 200).count();
    let already = replies
        .iter()
        .filter(|r| r.0 == 409 && r.1["error"]["code"] == json!("ALREADY_CHECKED_IN"))
        .count();
    assert_eq!(
        (ok, already),
        (1, 49),
        "{:?}",
        replies.iter().map(|r| &r.1).collect::<Vec<_>>()
    );
    assert_eq!(app.rows_of_type("checkin").await.len(), 1);
    assert_eq!(app.balance("alice").await, 10);
    let (_, body, _) = app.get("/checkin/status", &alice).await;
    assert_eq!(body["data"]["streak"], json!(1));
    app.finish().await;
}

async fn replayed_key_charges_once(db: Db) {
    let _alone = HEAVY.lock().await;
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 100).await;
    let replies = join_all((0..32).map(|_| app.consume("alice", 3, "the-one-call"))).await;
    let ids: BTreeSet<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.0, 200, "{}", r.1);
            r.1["data"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "replays returned different transactions: {ids:?}"
    );
    assert!(
        replies
            .iter()
            .all(|r| r.1["data"]["balance_after"] == json!(97))
    );
    assert_eq!(app.rows_of_type("ai_usage").await.len(), 1);
    assert_eq!(app.balance("alice").await, 97);
    // The key is spent: another request under it is refused, even now.
    assert_error(
        &app.consume("alice", 4, "the-one-call").await,
        422,
        "IDEMPOTENCY_KEY_REUSED",
    );
    // A retry after the credits are gone still gets the original answer, not a 402.
    let (status, body, _) = app.consume("alice", 97, "the-rest").await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = app.consume("alice", 3, "the-one-call").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["id"].as_str(),
        ids.iter().next().map(String::as_str)
    );
    assert_eq!(body["data"]["balance_after"], json!(97));

    // The same race on an account that does not exist yet (the first requests create it).
    let grant = json!({
        "user_id": "newcomer", "amount": 25, "description": "Welcome", "idempotency_key": "welcome",
    });
    let replies =
        join_all((0..32).map(|_| app.post("/internal/credits/grant", SERVICE_KEY, grant.clone())))
            .await;
    let ids: BTreeSet<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.0, 200, "{}", r.1);
            r.1["data"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.balance("newcomer").await, 25);
    assert_eq!(app.rows_of_type("reward").await.len(), 1);
    app.finish().await;
}

async fn hang_ups_then_retries_charge_once(db: Db) {
    let _alone = HEAVY.lock().await;
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 100).await;
    // Callers that give up after 2 ms: the server may or may not have charged them.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(2))
        .build()
        .unwrap();
    let url = format!("{}/internal/credits/consume", app.address);
    let attempts = join_all((0..20).map(|i| {
        impatient
            .post(&url)
            .bearer_auth(SERVICE_KEY)
            .json(&json!({
                "user_id": "alice", "amount": 1, "description": "AI call",
                "idempotency_key": format!("hang-{i}"),
            }))
            .send()
    }))
    .await;
    let gave_up = attempts.iter().filter(|r| r.is_err()).count();
    // Whatever the server started, it finishes (the money path is detached from the request).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let charged = app.rows_of_type("ai_usage").await.len();
    eprintln!("[{db:?}] {gave_up} of 20 callers hung up before the answer; {charged} were charged");
    // Each retries with its key: every call is charged exactly once, whatever happened before.
    let keys: Vec<String> = (0..20).map(|i| format!("hang-{i}")).collect();
    let retries = join_all(keys.iter().map(|k| app.consume("alice", 1, k))).await;
    let ids: BTreeSet<String> = retries
        .iter()
        .map(|r| {
            assert_eq!(r.0, 200, "{}", r.1);
            r.1["data"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 20);
    assert_eq!(app.rows_of_type("ai_usage").await.len(), 20);
    assert_eq!(app.balance("alice").await, 80);
    app.finish().await;
}
