//! Credits with an expiry stop counting at that instant, whether or not a sweep has run.

use serde_json::json;
use time::Duration;
use time::macros::datetime;

use crate::common::{Db, SERVICE_KEY, TestApp, admin_token, assert_error, user_token};

backend_tests!(
    expired_credits_stop_counting_at_the_instant,
    the_background_sweep_records_expiries
);

async fn expired_credits_stop_counting_at_the_instant(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = user_token("alice");
    let (status, body, _) = app
        .post(
            "/admin/credits/manual",
            &admin_token("root"),
            json!({
                "user_id": "alice", "amount": 100, "description": "Trial credits",
                "expires_at": "2026-03-01T22:00:00+09:00",
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = app
        .post(
            "/internal/credits/grant",
            SERVICE_KEY,
            json!({ "user_id": "alice", "amount": 20, "description": "Kept", "idempotency_key": "g1" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body, _) = app.get("/credits/balance", &alice).await;
    assert_eq!(
        body["data"],
        json!({
            "balance": 120, "available": 120, "held": 0,
            "expiring": [{ "amount": 100, "expires_at": "2026-03-01T13:00:00Z" }],
        })
    );
    // Spending takes the soonest-expiring credits first.
    let (status, body, _) = app.consume("alice", 30, "c1").await;
    assert_eq!(status, 200, "{body}");
    let (_, body, _) = app.get("/credits/balance", &alice).await;
    assert_eq!(body["data"]["balance"], json!(90));
    assert_eq!(body["data"]["expiring"][0]["amount"], json!(70));

    app.clock
        .set(datetime!(2026-03-01 13:00 UTC) - Duration::microseconds(1));
    assert_eq!(app.balance("alice").await, 90);

    app.clock.set(datetime!(2026-03-01 13:00 UTC));
    let (_, body, _) = app.get("/credits/balance", &alice).await;
    assert_eq!(
        body["data"],
        json!({ "balance": 20, "available": 20, "held": 0, "expiring": [] })
    );
    let (_, body, _) = app
        .post(
            "/internal/credits/check",
            SERVICE_KEY,
            json!({ "user_id": "alice", "amount": 21 }),
        )
        .await;
    assert_eq!(
        body["data"],
        json!({ "sufficient": false, "balance": 20, "available": 20 })
    );
    // No sweep has run: nothing is written yet, and the ledger is consistent as it stands.
    assert!(
        app.admin_history("default", "&type=expiry")
            .await
            .is_empty()
    );
    app.assert_verified().await;

    let refused = app.consume("alice", 21, "c2").await;
    assert_error(&refused, 402, "INSUFFICIENT_CREDITS");
    assert_eq!(
        refused.1["error"]["details"],
        json!({ "requested": 21, "available": 20 })
    );
    let (status, body, _) = app.consume("alice", 20, "c3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["balance_after"], json!(0));

    // The next movement wrote the expiry first.
    let (_, body, _) = app.get("/credits/transactions", &alice).await;
    let rows: Vec<_> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap().to_owned(),
                r["amount"].as_i64().unwrap(),
                r["balance_after"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, i64, i64)> = [
        ("ai_usage", -20, 0),
        ("expiry", -70, 20),
        ("ai_usage", -30, 90),
        ("reward", 20, 120),
        ("admin_adjustment", 100, 100),
    ]
    .into_iter()
    .map(|(t, a, b)| (t.to_owned(), a, b))
    .collect();
    assert_eq!(rows, expected);

    // The sweep writes due expiries for accounts nobody touches.
    let (status, body, _) = app
        .post(
            "/internal/credits/grant",
            SERVICE_KEY,
            json!({
                "user_id": "bob", "amount": 40, "description": "Promo", "idempotency_key": "g2",
                "expires_at": "2026-03-02T00:00:00Z",
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.clock.set(datetime!(2026-03-02 00:00 UTC));
    assert_eq!(app.balance("bob").await, 0);
    assert_eq!(app.ledger().sweep_expired(100).await.unwrap(), 1);
    assert_eq!(app.ledger().sweep_expired(100).await.unwrap(), 0);
    let rows = app
        .admin_history("default", "&user_id=bob&type=expiry")
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["amount"], json!(-40));
    assert_eq!(rows[0]["balance_after"], json!(0));
    app.finish().await;
}

async fn the_background_sweep_records_expiries(db: Db) {
    let app = TestApp::spawn_with(db, |s| s.sweep_interval_seconds = 1).await;
    let (status, body, _) = app
        .post(
            "/internal/credits/grant",
            SERVICE_KEY,
            json!({
                "user_id": "bob", "amount": 40, "description": "Promo", "idempotency_key": "g1",
                "expires_at": "2026-03-01T13:00:00Z",
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.clock.set(datetime!(2026-03-01 13:00 UTC));
    // Nobody touches bob's account; the sweep (every second) writes the expiry on its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let rows = loop {
        let rows = app.admin_history("default", "&type=expiry").await;
        if !rows.is_empty() || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(rows.len(), 1, "no expiry recorded by the sweep");
    assert_eq!(rows[0]["user_id"], json!("bob"));
    assert_eq!(rows[0]["amount"], json!(-40));
    assert_eq!(rows[0]["created_at"], json!("2026-03-01T13:00:00Z"));
    app.finish().await;
}
