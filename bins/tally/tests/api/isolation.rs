//! Users see only their own credits, and apps only their own users.

use serde_json::{Value, json};

use crate::common::{
    Db, OTHER_SERVICE_KEY, SERVICE_KEY, TestApp, app_token, assert_error, user_token,
};

backend_tests!(users_and_apps_are_isolated);

fn users_of(rows: &Value) -> Vec<String> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["user_id"].as_str().unwrap_or("?").to_owned())
        .collect()
}

async fn grant(app: &TestApp, key: &str, user: &str, amount: i64, idempotency_key: &str) {
    let (status, body, _) = app
        .post(
            "/internal/credits/grant",
            key,
            json!({
                "user_id": user, "amount": amount, "description": "x",
                "idempotency_key": idempotency_key,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn users_and_apps_are_isolated(db: Db) {
    let app = TestApp::spawn(db).await;
    grant(&app, SERVICE_KEY, "alice", 100, "a1").await;
    grant(&app, SERVICE_KEY, "bob", 50, "b1").await;
    // Same user id and same key in another app: a separate account, not a replay.
    grant(&app, OTHER_SERVICE_KEY, "alice", 7, "a1").await;
    let (status, body, _) = app.consume("alice", 10, "spend-1").await;
    assert_eq!(status, 200, "{body}");

    let bob = user_token("bob");
    // Naming another user is not a parameter of a user's own history: refused, nothing shown.
    let (status, body, _) = app.get("/credits/transactions?user_id=alice", &bob).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"]["fields"][0]["field"], "user_id");
    assert!(body.get("data").is_none(), "{body}");
    for query in ["", "?limit=100&type=reward"] {
        let (status, body, _) = app
            .get(&format!("/credits/transactions{query}"), &bob)
            .await;
        assert_eq!(status, 200, "{body}");
        let rows = body["data"].as_array().unwrap();
        assert_eq!(
            rows.len(),
            1,
            "bob sees only his grant with {query:?}: {body}"
        );
        assert_eq!(rows[0]["amount"], json!(50));
    }
    assert_eq!(app.balance("bob").await, 50);
    assert_eq!(app.balance("alice").await, 90);

    // App `other`: its users, its admins and its service key see only app `other`.
    assert_eq!(app.balance_in("alice", "other").await, 7);
    let (_, body, _) = app
        .get("/credits/transactions", &app_token("alice", "other", None))
        .await;
    let rows = body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{body}");
    assert_eq!(rows[0]["amount"], json!(7));
    let other_admin = app_token("root", "other", Some("admin"));
    let (_, body, _) = app
        .get("/admin/credits/transactions?limit=100", &other_admin)
        .await;
    assert_eq!(users_of(&body["data"]), vec!["alice"]);
    assert_eq!(body["data"][0]["amount"], json!(7));
    let (_, body, _) = app
        .get("/admin/credits/transactions?user_id=bob", &other_admin)
        .await;
    assert_eq!(body["data"], json!([]), "bob has nothing in app other");
    let default_rows = app.admin_history("default", "").await;
    assert_eq!(default_rows.len(), 3);
    assert!(default_rows.iter().all(|r| r["amount"] != json!(7)));

    let (_, body, _) = app
        .post(
            "/internal/credits/check",
            OTHER_SERVICE_KEY,
            json!({ "user_id": "alice", "amount": 8 }),
        )
        .await;
    assert_eq!(
        body["data"],
        json!({ "sufficient": false, "balance": 7, "available": 7 })
    );
    let reply = app
        .post(
            "/internal/credits/consume",
            OTHER_SERVICE_KEY,
            json!({ "user_id": "alice", "amount": 8, "description": "x", "idempotency_key": "o-1" }),
        )
        .await;
    assert_error(&reply, 402, "INSUFFICIENT_CREDITS");
    // A key replayed in the other app is that app's own first request.
    let (status, body, _) = app
        .post(
            "/internal/credits/consume",
            OTHER_SERVICE_KEY,
            json!({ "user_id": "alice", "amount": 2, "description": "x", "idempotency_key": "spend-1" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["balance_after"], json!(5));

    // An admin of app other adjusts only app other.
    let (status, body, _) = app
        .post(
            "/admin/credits/manual",
            &other_admin,
            json!({ "user_id": "alice", "amount": 1, "description": "x" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.balance_in("alice", "other").await, 6);
    assert_eq!(app.balance("alice").await, 90);
    app.finish().await;
}
