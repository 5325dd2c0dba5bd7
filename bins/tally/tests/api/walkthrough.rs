//! One user's day through every endpoint: check-in, balance, history, an admin grant, and a
//! service checking, consuming and granting.

use reqwest::Method;
use serde_json::json;
use time::Duration;

use crate::common::{Body, Db, SERVICE_KEY, TestApp, admin_token, user_token};

backend_tests!(walk_through, overdraft_and_repayment, system_endpoints);

async fn walk_through(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = user_token("alice");
    let admin = admin_token("root");
    let minute = Duration::minutes(1);

    let (status, body, _) = app.get("/credits/balance", &alice).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({ "balance": 0, "available": 0, "held": 0, "expiring": [] })
    );

    // Default check-in settings: 10 credits a day, days in UTC.
    let (status, body, _) = app.checkin(&alice).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({
            "awarded": 10, "balance": 10, "streak": 1, "day": "2026-03-01",
            "next_checkin_at": "2026-03-02T00:00:00Z",
        })
    );
    let (status, body, _) = app.get("/checkin/status", &alice).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["checked_in_today"], json!(true));
    assert_eq!(body["data"]["streak"], json!(1));
    assert_eq!(body["data"]["next_reward"], json!(10));

    app.clock.advance(minute);
    let (status, body, _) = app
        .post(
            "/admin/credits/manual",
            &admin,
            json!({
                "user_id": "alice", "amount": 100, "description": "Welcome bonus",
                "idempotency_key": "welcome-alice",
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let grant = &body["data"];
    assert_eq!(grant["type"], json!("admin_adjustment"));
    assert_eq!(grant["amount"], json!(100));
    assert_eq!(grant["balance_after"], json!(110));
    assert_eq!(grant["user_id"], json!("alice"));
    assert_eq!(grant["actor"], json!("root"));
    assert_eq!(grant["idempotency_key"], json!("welcome-alice"));
    assert_eq!(grant["created_at"], json!("2026-03-01T12:01:00Z"));

    // The service asks before it spends.
    let (status, body, _) = app
        .post(
            "/internal/credits/check",
            SERVICE_KEY,
            json!({ "user_id": "alice", "amount": 110 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({ "sufficient": true, "balance": 110, "available": 110 })
    );
    let (_, body, _) = app
        .post(
            "/internal/credits/check",
            SERVICE_KEY,
            json!({ "user_id": "alice", "amount": 111 }),
        )
        .await;
    assert_eq!(body["data"]["sufficient"], json!(false));

    app.clock.advance(minute);
    let consumed_at = "2026-03-01T12:02:00Z";
    let (status, body, _) = app
        .post(
            "/internal/credits/consume",
            SERVICE_KEY,
            json!({
                "user_id": "alice", "amount": 30, "description": "AI chat completion (gpt-4)",
                "idempotency_key": "call-1", "metadata": { "model": "gpt-4", "tokens": 1234 },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let usage = body["data"].clone();
    assert_eq!(usage["type"], json!("ai_usage"));
    assert_eq!(usage["amount"], json!(-30));
    assert_eq!(usage["balance_after"], json!(80));
    assert_eq!(usage["description"], json!("AI chat completion (gpt-4)"));
    assert_eq!(
        usage["metadata"],
        json!({ "model": "gpt-4", "tokens": 1234 })
    );
    assert_eq!(usage["idempotency_key"], json!("call-1"));
    assert_eq!(usage["created_at"], json!(consumed_at));

    // A retry of the same call is answered, not charged again, however its JSON is laid out
    // (key in the header this time, fields and metadata keys in another order).
    let retry = r#"{ "metadata": {"tokens": 1234, "model": "gpt-4"},
        "description": "AI chat completion (gpt-4)", "amount": 30, "user_id": "alice" }"#;
    let (status, body, _) = app
        .request(
            Method::POST,
            "/internal/credits/consume",
            Some(SERVICE_KEY),
            &[("Idempotency-Key", "call-1")],
            Body::Raw(Some("application/json"), retry.as_bytes().to_vec()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], usage);

    app.clock.advance(minute);
    let (status, body, _) = app
        .post(
            "/internal/credits/grant",
            SERVICE_KEY,
            json!({
                "user_id": "alice", "amount": 5, "description": "Referral reward",
                "idempotency_key": "referral-1",
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["type"], json!("reward"));
    assert_eq!(body["data"]["balance_after"], json!(85));

    app.clock.advance(minute);
    let (status, body, _) = app
        .post(
            "/admin/credits/manual",
            &admin,
            json!({ "user_id": "alice", "amount": -15, "description": "Correction" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["balance_after"], json!(70));

    // History: newest first, each row with the balance right after it.
    let (status, body, _) = app.get("/credits/transactions", &alice).await;
    assert_eq!(status, 200, "{body}");
    let rows = body["data"].as_array().unwrap();
    let summary: Vec<_> = rows
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
        ("admin_adjustment", -15, 70),
        ("reward", 5, 85),
        ("ai_usage", -30, 80),
        ("admin_adjustment", 100, 110),
        ("checkin", 10, 10),
    ]
    .into_iter()
    .map(|(t, a, b)| (t.to_owned(), a, b))
    .collect();
    assert_eq!(summary, expected);
    let ids: Vec<i64> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "ids {ids:?}");
    assert_eq!(
        body["meta"],
        json!({ "limit": 20, "offset": 0, "has_more": false, "next_before": null })
    );
    // Users see their own rows without the admin-only fields.
    assert!(rows[0].get("user_id").is_none() && rows[0].get("actor").is_none());

    let (_, body, _) = app.get("/credits/transactions?limit=2", &alice).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        body["meta"],
        json!({ "limit": 2, "offset": 0, "has_more": true, "next_before": body["data"][1]["id"] })
    );
    let (_, body, _) = app
        .get("/credits/transactions?limit=2&offset=4", &alice)
        .await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert_eq!(body["data"][0]["type"], json!("checkin"));
    assert_eq!(body["meta"]["has_more"], json!(false));
    let (_, body, _) = app.get("/credits/transactions?type=ai_usage", &alice).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    assert_eq!(body["data"][0]["id"], usage["id"]);

    assert_eq!(app.balance("alice").await, 70);

    // Admin history: filters by user, type and time.
    let rows = app.admin_history("default", "&user_id=alice").await;
    assert_eq!(rows.len(), 5);
    let rows = app
        .admin_history("default", &format!("&from={consumed_at}"))
        .await;
    assert_eq!(rows.len(), 3, "rows from the consume on: {rows:?}");
    // The same instant written with an offset ('+' encoded) selects the same rows.
    let rows = app
        .admin_history("default", "&from=2026-03-01T21:02:00%2B09:00")
        .await;
    assert_eq!(rows.len(), 3, "rows from 21:02+09:00 on: {rows:?}");
    let rows = app
        .admin_history("default", &format!("&to={consumed_at}"))
        .await;
    assert_eq!(rows.len(), 2, "rows before the consume: {rows:?}");
    let rows = app.admin_history("default", "&type=reward").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["idempotency_key"], json!("referral-1"));
    assert!(
        app.admin_history("default", "&user_id=bob")
            .await
            .is_empty()
    );

    app.finish().await;
}

async fn overdraft_and_repayment(db: Db) {
    let app = TestApp::spawn(db).await;
    let admin = admin_token("root");
    app.admin_grant("alice", 10).await;
    let (status, body, _) = app.consume("alice", 4, "c1").await;
    assert_eq!(status, 200, "{body}");
    let adjust = |amount: i64, allow_negative: bool| {
        json!({
            "user_id": "alice", "amount": amount, "description": "Chargeback",
            "allow_negative": allow_negative,
        })
    };
    let refused = app
        .post("/admin/credits/manual", &admin, adjust(-30, false))
        .await;
    crate::common::assert_error(&refused, 402, "INSUFFICIENT_CREDITS");
    let (status, body, _) = app
        .post("/admin/credits/manual", &admin, adjust(-30, true))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["balance_after"], json!(-24));
    let (_, body, _) = app.get("/credits/balance", &user_token("alice")).await;
    assert_eq!(
        body["data"],
        json!({ "balance": -24, "available": 0, "held": 0, "expiring": [] })
    );
    crate::common::assert_error(
        &app.consume("alice", 1, "c2").await,
        402,
        "INSUFFICIENT_CREDITS",
    );
    let (_, body, _) = app
        .post(
            "/internal/credits/check",
            SERVICE_KEY,
            json!({ "user_id": "alice", "amount": 1 }),
        )
        .await;
    assert_eq!(
        body["data"],
        json!({ "sufficient": false, "balance": -24, "available": 0 })
    );
    app.assert_verified().await;

    // A grant repays the debt first; only the rest can be spent.
    let (status, body, _) = app
        .post(
            "/internal/credits/grant",
            SERVICE_KEY,
            json!({ "user_id": "alice", "amount": 50, "description": "Top-up", "idempotency_key": "t1" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["balance_after"], json!(26));
    crate::common::assert_error(
        &app.consume("alice", 27, "c3").await,
        402,
        "INSUFFICIENT_CREDITS",
    );
    let (status, body, _) = app.consume("alice", 26, "c4").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["balance_after"], json!(0));
    app.finish().await;
}

async fn system_endpoints(db: Db) {
    let app = TestApp::spawn(db).await;
    for path in ["/healthz", "/readyz"] {
        let (status, body, _) = app.request(Method::GET, path, None, &[], Body::Empty).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    app.get("/credits/balance", &user_token("alice")).await;
    let (status, body, headers) = app
        .request(Method::GET, "/metrics", None, &[], Body::Empty)
        .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = body.as_str().unwrap();
    assert!(
        text.contains(
            "tally_http_requests_total{route=\"/credits/balance\",method=\"GET\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("tally_db_pool_connections"), "{text}");
    let (status, body, _) = app
        .request(Method::GET, "/openapi.json", None, &[], Body::Empty)
        .await;
    assert_eq!(status, 200);
    assert!(body["paths"]["/internal/credits/consume"].is_object());

    // A request id the caller sends is kept; one that is unsafe to log is replaced.
    let (_, _, headers) = app
        .request(
            Method::GET,
            "/healthz",
            None,
            &[("x-request-id", "trace-abc_123")],
            Body::Empty,
        )
        .await;
    assert_eq!(headers["x-request-id"], "trace-abc_123");
    let (_, _, headers) = app
        .request(
            Method::GET,
            "/healthz",
            None,
            &[("x-request-id", "bad id\"<script>")],
            Body::Empty,
        )
        .await;
    assert_ne!(headers["x-request-id"], "bad id\"<script>");
    app.finish().await;
}
