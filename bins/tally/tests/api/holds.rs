//! Holds over HTTP: reserve, capture, release and expiry as a service sees them, replays,
//! scoping, and the refusals that must leave the database as it was.

use reqwest::Method;
use serde_json::{Value, json};
use time::Duration;

use crate::common::{
    Body, Db, OTHER_SERVICE_KEY, Reply, SERVICE_KEY, TestApp, admin_token, assert_error, user_token,
};

backend_tests!(
    reserve_capture_returns_the_rest,
    release_and_expiry,
    capture_replays_with_the_same_key,
    reserve_replays_with_the_same_key,
    holds_belong_to_their_app_and_services,
    bad_hold_input_changes_nothing
);

const HOLDS: &str = "/internal/credits/holds";
const MAX_CREDITS: i64 = 1_000_000_000_000;

/// A refused capture: name, path, headers, body, expected status and code.
type CaptureCase = (
    String,
    String,
    Vec<(&'static str, String)>,
    Body,
    u16,
    &'static str,
);

/// The service of the default app reserves `amount` from `user` for `ttl` seconds.
async fn reserve(app: &TestApp, user: &str, amount: i64, ttl: i64, key: Option<&str>) -> Reply {
    let mut body = json!({
        "user_id": user, "amount": amount, "ttl_seconds": ttl,
        "description": "Chat completion (gpt-4)", "metadata": { "model": "gpt-4" },
    });
    if let Some(k) = key {
        body["idempotency_key"] = json!(k);
    }
    app.post(HOLDS, SERVICE_KEY, body).await
}

/// Reserves and returns the active hold.
async fn reserved(app: &TestApp, user: &str, amount: i64, ttl: i64) -> Value {
    let (status, body, _) = reserve(app, user, amount, ttl, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], json!("active"), "{body}");
    body["data"].clone()
}

/// `POST /internal/credits/holds/{id}/capture` with `key` in the `Idempotency-Key` header.
async fn capture(app: &TestApp, svc: &str, id: &str, body: Value, key: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
    app.request(
        Method::POST,
        &format!("{HOLDS}/{id}/capture"),
        Some(svc),
        &headers,
        Body::Json(body),
    )
    .await
}

/// `POST /internal/credits/holds/{id}/release`.
async fn release(app: &TestApp, svc: &str, id: &str) -> Reply {
    app.request(
        Method::POST,
        &format!("{HOLDS}/{id}/release"),
        Some(svc),
        &[],
        Body::Empty,
    )
    .await
}

/// `GET /internal/credits/holds/{id}`.
async fn get_hold(app: &TestApp, svc: &str, id: &str) -> Reply {
    app.get(&format!("{HOLDS}/{id}"), svc).await
}

/// The hold as the default app's service reads it now.
async fn hold_now(app: &TestApp, id: &str) -> Value {
    let (status, body, _) = get_hold(app, SERVICE_KEY, id).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// `GET /credits/balance` as `user` sees it.
async fn balance_view(app: &TestApp, user: &str) -> Value {
    let (status, body, _) = app.get("/credits/balance", &user_token(user)).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// `(balance, available, held)` of `user`.
async fn figures(app: &TestApp, user: &str) -> (i64, i64, i64) {
    let b = balance_view(app, user).await;
    (
        b["balance"].as_i64().unwrap(),
        b["available"].as_i64().unwrap(),
        b["held"].as_i64().unwrap(),
    )
}

/// Everything a refused request could have changed: histories of both apps, alice's views and
/// the holds given.
async fn snapshot(app: &TestApp, holds: &[&str]) -> Value {
    let other = crate::common::app_token("alice", "other", None);
    let mut hold_views = Vec::new();
    for id in holds {
        hold_views.push(get_hold(app, SERVICE_KEY, id).await.1);
    }
    json!({
        "default": app.admin_history("default", "").await,
        "other": app.admin_history("other", "").await,
        "alice": balance_view(app, "alice").await,
        "alice@other": app.get("/credits/balance", &other).await.1,
        "history": app.get("/credits/transactions?limit=100", &user_token("alice")).await.1,
        "holds": hold_views,
    })
}

async fn reserve_capture_returns_the_rest(db: Db) {
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 100).await;

    app.clock.advance(Duration::minutes(1));
    let (status, body, _) = reserve(&app, "alice", 40, 120, Some("call-7")).await;
    assert_eq!(status, 200, "{body}");
    let hold = body["data"].clone();
    let id = hold["id"].as_str().expect("string id").to_owned();
    assert!(id.parse::<i64>().is_ok(), "{hold}");
    assert_eq!(hold["user_id"], json!("alice"));
    assert_eq!(hold["amount"], json!(40));
    assert_eq!(hold["captured"], Value::Null);
    assert_eq!(hold["status"], json!("active"));
    assert_eq!(hold["description"], json!("Chat completion (gpt-4)"));
    assert_eq!(hold["transaction_id"], Value::Null);
    assert_eq!(hold["created_at"], json!("2026-03-01T12:01:00Z"));
    assert_eq!(hold["expires_at"], json!("2026-03-01T12:03:00Z"));

    // The credits leave `available`, not `balance`; reserving writes no transaction.
    assert_eq!(figures(&app, "alice").await, (100, 60, 40));
    assert_eq!(app.rows_of_type("ai_usage").await.len(), 0);
    assert_eq!(hold_now(&app, &id).await, hold);
    // The service's check sees the same.
    let (status, body, _) = app
        .post(
            "/internal/credits/check",
            SERVICE_KEY,
            json!({ "user_id": "alice", "amount": 61 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({ "sufficient": false, "balance": 100, "available": 60 })
    );

    app.clock.advance(Duration::seconds(30));
    let (status, body, _) = capture(&app, SERVICE_KEY, &id, json!({ "amount": 31 }), None).await;
    assert_eq!(status, 200, "{body}");
    let captured = &body["data"]["hold"];
    let txn = &body["data"]["transaction"];
    assert_eq!(captured["id"], json!(id));
    assert_eq!(captured["status"], json!("captured"));
    assert_eq!(captured["amount"], json!(40));
    assert_eq!(captured["captured"], json!(31));
    assert_eq!(captured["updated_at"], json!("2026-03-01T12:01:30Z"));
    assert_eq!(txn["type"], json!("ai_usage"));
    assert_eq!(txn["amount"], json!(-31));
    assert_eq!(txn["balance_after"], json!(69));
    assert_eq!(txn["user_id"], json!("alice"));
    // The hold's description and metadata carry over to the transaction.
    assert_eq!(txn["description"], json!("Chat completion (gpt-4)"));
    assert_eq!(txn["metadata"], json!({ "model": "gpt-4" }));
    assert_eq!(captured["transaction_id"], txn["id"]);

    // The 9 not used return: nothing held, 69 available.
    assert_eq!(figures(&app, "alice").await, (69, 69, 0));
    let (status, history, _) = app
        .get("/credits/transactions?type=ai_usage", &user_token("alice"))
        .await;
    assert_eq!(status, 200, "{history}");
    let rows = history["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{history}");
    assert_eq!(rows[0]["id"], txn["id"]);
    assert_eq!(rows[0]["amount"], json!(-31));
    assert_eq!(hold_now(&app, &id).await, *captured);

    // A second capture, with or without another amount, and a release after the capture are
    // refused and change nothing.
    let before = snapshot(&app, &[&id]).await;
    app.clock.advance(Duration::seconds(1));
    for amount in [31, 5, 0] {
        let reply = capture(&app, SERVICE_KEY, &id, json!({ "amount": amount }), None).await;
        assert_error(&reply, 409, "HOLD_NOT_ACTIVE");
        assert_eq!(reply.1["error"]["details"]["status"], json!("captured"));
    }
    assert_error(
        &release(&app, SERVICE_KEY, &id).await,
        409,
        "HOLD_NOT_ACTIVE",
    );
    assert_eq!(snapshot(&app, &[&id]).await, before);

    // Capturing the whole hold, more than the hold, and nothing at all.
    let whole = reserved(&app, "alice", 20, 60).await;
    let (status, body, _) = capture(
        &app,
        SERVICE_KEY,
        whole["id"].as_str().unwrap(),
        json!({ "amount": 20, "description": "exact", "metadata": { "tokens": 7 } }),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["transaction"]["amount"], json!(-20));
    assert_eq!(body["data"]["transaction"]["description"], json!("exact"));
    assert_eq!(
        body["data"]["transaction"]["metadata"],
        json!({ "tokens": 7 })
    );
    assert_eq!(figures(&app, "alice").await, (49, 49, 0));

    let over = reserved(&app, "alice", 10, 60).await;
    let (status, body, _) = capture(
        &app,
        SERVICE_KEY,
        over["id"].as_str().unwrap(),
        json!({ "amount": 15 }),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["transaction"]["amount"], json!(-15));
    assert_eq!(figures(&app, "alice").await, (34, 34, 0));

    let zero = reserved(&app, "alice", 10, 60).await;
    let (status, body, _) = capture(
        &app,
        SERVICE_KEY,
        zero["id"].as_str().unwrap(),
        json!({ "amount": 0 }),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["hold"]["status"], json!("captured"));
    assert_eq!(body["data"]["hold"]["captured"], json!(0));
    assert_eq!(body["data"]["hold"]["transaction_id"], Value::Null);
    assert_eq!(body["data"]["transaction"], Value::Null);
    assert_eq!(figures(&app, "alice").await, (34, 34, 0));
    assert_eq!(app.rows_of_type("ai_usage").await.len(), 3);
    app.finish().await;
}

async fn release_and_expiry(db: Db) {
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 100).await;
    let history_len = app.admin_history("default", "").await.len();

    // Release returns the whole hold and writes nothing to the history.
    let hold = reserved(&app, "alice", 30, 300).await;
    let id = hold["id"].as_str().unwrap().to_owned();
    assert_eq!(figures(&app, "alice").await, (100, 70, 30));
    app.clock.advance(Duration::seconds(10));
    let (status, body, _) = release(&app, SERVICE_KEY, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], json!("released"));
    assert_eq!(body["data"]["captured"], Value::Null);
    assert_eq!(body["data"]["updated_at"], json!("2026-03-01T12:00:10Z"));
    assert_eq!(figures(&app, "alice").await, (100, 100, 0));
    assert_eq!(hold_now(&app, &id).await["status"], json!("released"));
    // Releasing again answers the hold as it is; capturing it is refused.
    let before = snapshot(&app, &[&id]).await;
    app.clock.advance(Duration::seconds(10));
    let (status, again, _) = release(&app, SERVICE_KEY, &id).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"], body["data"]);
    let reply = capture(&app, SERVICE_KEY, &id, json!({ "amount": 1 }), None).await;
    assert_error(&reply, 409, "HOLD_NOT_ACTIVE");
    assert_eq!(reply.1["error"]["details"]["status"], json!("released"));
    assert_eq!(snapshot(&app, &[&id]).await, before);

    // A hold runs out at its expires_at: GET reads it as expired and its credits are back.
    let hold = reserved(&app, "alice", 25, 60).await;
    let id = hold["id"].as_str().unwrap().to_owned();
    assert_eq!(figures(&app, "alice").await, (100, 75, 25));
    app.clock.advance(Duration::seconds(59));
    assert_eq!(hold_now(&app, &id).await["status"], json!("active"));
    assert_eq!(figures(&app, "alice").await, (100, 75, 25));
    app.clock.advance(Duration::seconds(2));
    assert_eq!(hold_now(&app, &id).await["status"], json!("expired"));
    assert_eq!(figures(&app, "alice").await, (100, 100, 0));

    let before = snapshot(&app, &[&id]).await;
    for amount in [25, 1, 0] {
        let reply = capture(&app, SERVICE_KEY, &id, json!({ "amount": amount }), None).await;
        assert_error(&reply, 409, "HOLD_EXPIRED");
    }
    assert_eq!(snapshot(&app, &[&id]).await, before);

    // The expired credits can be reserved again, up to the whole balance.
    let again = reserved(&app, "alice", 100, 60).await;
    assert_eq!(figures(&app, "alice").await, (100, 0, 100));
    // That write on the account recorded the expiry: the old hold still reads expired,
    // captures are still refused, and releasing it answers it as it is.
    assert_eq!(hold_now(&app, &id).await["status"], json!("expired"));
    assert_error(
        &capture(&app, SERVICE_KEY, &id, json!({ "amount": 1 }), None).await,
        409,
        "HOLD_EXPIRED",
    );
    let (status, body, _) = release(&app, SERVICE_KEY, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], json!("expired"));
    assert_eq!(figures(&app, "alice").await, (100, 0, 100));

    // Releasing a hold past its time that nothing has marked yet answers it expired, too.
    app.clock.advance(Duration::seconds(61));
    let (status, body, _) = release(&app, SERVICE_KEY, again["id"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], json!("expired"));
    assert_eq!(figures(&app, "alice").await, (100, 100, 0));

    // Nothing of this wrote a transaction.
    assert_eq!(app.admin_history("default", "").await.len(), history_len);
    app.finish().await;
}

async fn capture_replays_with_the_same_key(db: Db) {
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 100).await;
    let hold = reserved(&app, "alice", 50, 300).await;
    let id = hold["id"].as_str().unwrap().to_owned();

    let body = json!({ "amount": 35, "description": "stream done", "metadata": { "tokens": 900 } });
    let (status, first, _) = capture(&app, SERVICE_KEY, &id, body.clone(), Some("cap-1")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["data"]["transaction"]["amount"], json!(-35));
    assert_eq!(figures(&app, "alice").await, (65, 65, 0));

    // The same key with the same body, later and with the fields in another order, answers the
    // first capture again and charges nothing.
    app.clock.advance(Duration::seconds(5));
    let reordered = r#"{"metadata": {"tokens": 900}, "description": "stream done", "amount": 35}"#;
    for body in [
        Body::Json(body.clone()),
        Body::Raw(Some("application/json"), reordered.as_bytes().to_vec()),
    ] {
        let (status, replay, _) = app
            .request(
                Method::POST,
                &format!("{HOLDS}/{id}/capture"),
                Some(SERVICE_KEY),
                &[("Idempotency-Key", "cap-1")],
                body,
            )
            .await;
        assert_eq!(status, 200, "{replay}");
        assert_eq!(replay["data"], first["data"]);
    }
    let usage = app.rows_of_type("ai_usage").await;
    assert_eq!(usage.len(), 1, "{usage:#?}");
    assert_eq!(usage[0]["id"], first["data"]["transaction"]["id"]);
    assert_eq!(figures(&app, "alice").await, (65, 65, 0));

    // A different body under the key, another key, or no key: the hold is no longer active.
    let before = snapshot(&app, &[&id]).await;
    for (body, key) in [
        (
            json!({ "amount": 36, "description": "stream done", "metadata": { "tokens": 900 } }),
            Some("cap-1"),
        ),
        (json!({ "amount": 35 }), Some("cap-1")),
        (body.clone(), Some("cap-2")),
        (body.clone(), None),
    ] {
        let reply = capture(&app, SERVICE_KEY, &id, body, key).await;
        assert_error(&reply, 409, "HOLD_NOT_ACTIVE");
    }
    assert_eq!(snapshot(&app, &[&id]).await, before);

    // A replay of a capture of 0 answers it again, still without a transaction.
    let zero = reserved(&app, "alice", 5, 300).await;
    let zero_id = zero["id"].as_str().unwrap();
    let (status, first, _) = capture(
        &app,
        SERVICE_KEY,
        zero_id,
        json!({ "amount": 0 }),
        Some("cap-0"),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let (status, replay, _) = capture(
        &app,
        SERVICE_KEY,
        zero_id,
        json!({ "amount": 0 }),
        Some("cap-0"),
    )
    .await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["data"], first["data"]);
    assert_eq!(replay["data"]["transaction"], Value::Null);

    // A capture without a key is not replayable, even with the same body.
    let plain = reserved(&app, "alice", 5, 300).await;
    let plain_id = plain["id"].as_str().unwrap();
    let (status, body, _) =
        capture(&app, SERVICE_KEY, plain_id, json!({ "amount": 2 }), None).await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &capture(&app, SERVICE_KEY, plain_id, json!({ "amount": 2 }), None).await,
        409,
        "HOLD_NOT_ACTIVE",
    );
    assert_eq!(app.rows_of_type("ai_usage").await.len(), 2);
    assert_eq!(figures(&app, "alice").await, (63, 63, 0));
    app.finish().await;
}

async fn reserve_replays_with_the_same_key(db: Db) {
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 100).await;

    let (status, first, _) = reserve(&app, "alice", 40, 120, Some("call-1")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(figures(&app, "alice").await, (100, 60, 40));

    // The same request under the key, in the body or in the header, answers the same hold.
    app.clock.advance(Duration::seconds(5));
    let (status, replay, _) = reserve(&app, "alice", 40, 120, Some("call-1")).await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["data"], first["data"]);
    let (status, replay, _) = app
        .request(
            Method::POST,
            HOLDS,
            Some(SERVICE_KEY),
            &[("Idempotency-Key", "call-1")],
            Body::Json(json!({
                "user_id": "alice", "amount": 40, "ttl_seconds": 120,
                "description": "Chat completion (gpt-4)", "metadata": { "model": "gpt-4" },
            })),
        )
        .await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["data"]["id"], first["data"]["id"]);
    assert_eq!(figures(&app, "alice").await, (100, 60, 40));

    // A different request under the key is refused and reserves nothing.
    let id = first["data"]["id"].as_str().unwrap().to_owned();
    let before = snapshot(&app, &[&id]).await;
    for (amount, ttl) in [(41, 120), (40, 121), (1, 120)] {
        let reply = reserve(&app, "alice", amount, ttl, Some("call-1")).await;
        assert_error(&reply, 422, "IDEMPOTENCY_KEY_REUSED");
    }
    // The header and the body must agree.
    let reply = app
        .request(
            Method::POST,
            HOLDS,
            Some(SERVICE_KEY),
            &[("Idempotency-Key", "call-2")],
            Body::Json(json!({ "user_id": "alice", "amount": 1, "idempotency_key": "call-1" })),
        )
        .await;
    assert_error(&reply, 400, "VALIDATION_ERROR");
    // More than available (60) is refused, with the figures in the details.
    let reply = reserve(&app, "alice", 61, 120, Some("call-3")).await;
    assert_error(&reply, 402, "INSUFFICIENT_CREDITS");
    assert_eq!(
        reply.1["error"]["details"],
        json!({ "requested": 61, "available": 60 })
    );
    let reply = reserve(&app, "bob", 1, 120, None).await;
    assert_error(&reply, 402, "INSUFFICIENT_CREDITS");
    assert_eq!(snapshot(&app, &[&id]).await, before);

    // The key is scoped to the account: bob may use it too (once he has credits).
    app.admin_grant("bob", 10).await;
    let (status, bobs, _) = reserve(&app, "bob", 10, 120, Some("call-1")).await;
    assert_eq!(status, 200, "{bobs}");
    assert_ne!(bobs["data"]["id"], first["data"]["id"]);

    // Exactly the available amount may be reserved; then nothing more.
    let (status, body, _) = reserve(&app, "alice", 60, 120, Some("call-4")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(figures(&app, "alice").await, (100, 0, 100));
    let reply = reserve(&app, "alice", 1, 120, None).await;
    assert_error(&reply, 402, "INSUFFICIENT_CREDITS");

    // A replay after the hold was captured answers it as it is now, reserving nothing more.
    let (status, body, _) = capture(&app, SERVICE_KEY, &id, json!({ "amount": 40 }), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, replay, _) = reserve(&app, "alice", 40, 120, Some("call-1")).await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["data"]["id"], json!(id));
    assert_eq!(replay["data"]["status"], json!("captured"));
    assert_eq!(figures(&app, "alice").await, (60, 0, 60));
    app.finish().await;
}

async fn holds_belong_to_their_app_and_services(db: Db) {
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 100).await;
    let hold = reserved(&app, "alice", 40, 300).await;
    let id = hold["id"].as_str().unwrap().to_owned();
    let before = snapshot(&app, &[&id]).await;

    // The other app's service does not see the hold at all.
    assert_error(
        &get_hold(&app, OTHER_SERVICE_KEY, &id).await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &capture(&app, OTHER_SERVICE_KEY, &id, json!({ "amount": 1 }), None).await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &release(&app, OTHER_SERVICE_KEY, &id).await,
        404,
        "NOT_FOUND",
    );

    // People cannot use the service endpoints, whatever their role.
    let tokens = [
        user_token("alice"),
        admin_token("root"),
        crate::common::app_token("root", "other", Some("admin")),
        "svc-unknown-0123456789abcdef".to_owned(),
    ];
    for token in &tokens {
        let reply = app
            .post(
                HOLDS,
                token,
                json!({ "user_id": "alice", "amount": 1, "ttl_seconds": 60 }),
            )
            .await;
        assert_error(&reply, 401, "UNAUTHORIZED");
        assert_error(&get_hold(&app, token, &id).await, 401, "UNAUTHORIZED");
        assert_error(
            &capture(&app, token, &id, json!({ "amount": 1 }), None).await,
            401,
            "UNAUTHORIZED",
        );
        assert_error(&release(&app, token, &id).await, 401, "UNAUTHORIZED");
    }
    for (method, path, body) in [
        (
            Method::POST,
            HOLDS.to_owned(),
            Body::Json(json!({ "user_id": "alice", "amount": 1 })),
        ),
        (Method::GET, format!("{HOLDS}/{id}"), Body::Empty),
        (
            Method::POST,
            format!("{HOLDS}/{id}/capture"),
            Body::Json(json!({ "amount": 1 })),
        ),
        (Method::POST, format!("{HOLDS}/{id}/release"), Body::Empty),
    ] {
        let reply = app.request(method, &path, None, &[], body).await;
        assert_error(&reply, 401, "UNAUTHORIZED");
    }
    assert_eq!(snapshot(&app, &[&id]).await, before);

    // The other app's holds are its own: alice@other has no credits to reserve, and a hold it
    // makes is invisible to the default app.
    let reply = app
        .post(
            HOLDS,
            OTHER_SERVICE_KEY,
            json!({ "user_id": "alice", "amount": 1 }),
        )
        .await;
    assert_error(&reply, 402, "INSUFFICIENT_CREDITS");
    let (status, body, _) = app
        .post(
            "/internal/credits/grant",
            OTHER_SERVICE_KEY,
            json!({ "user_id": "alice", "amount": 5, "description": "r", "idempotency_key": "g" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = app
        .post(
            HOLDS,
            OTHER_SERVICE_KEY,
            json!({ "user_id": "alice", "amount": 5 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let other_id = body["data"]["id"].as_str().unwrap().to_owned();
    // Default TTL: 300 s.
    assert_eq!(body["data"]["expires_at"], json!("2026-03-01T12:05:00Z"));
    assert_error(
        &get_hold(&app, SERVICE_KEY, &other_id).await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &release(&app, SERVICE_KEY, &other_id).await,
        404,
        "NOT_FOUND",
    );
    let (status, body, _) = get_hold(&app, OTHER_SERVICE_KEY, &other_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], json!("active"));
    // alice in the default app is untouched by all of it.
    assert_eq!(figures(&app, "alice").await, (100, 60, 40));
    app.finish().await;
}

async fn bad_hold_input_changes_nothing(db: Db) {
    const JSON: Option<&str> = Some("application/json");
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 100).await;
    let hold = reserved(&app, "alice", 40, 300).await;
    let id = hold["id"].as_str().unwrap().to_owned();
    let (status, body, _) = reserve(&app, "alice", 10, 300, Some("r1")).await;
    assert_eq!(status, 200, "{body}");
    let keyed = body["data"]["id"].as_str().unwrap().to_owned();
    let before = snapshot(&app, &[&id, &keyed]).await;
    assert_eq!(figures(&app, "alice").await, (100, 50, 50));

    let raw = |s: &str| Body::Raw(JSON, s.as_bytes().to_vec());
    let valid = json!({
        "user_id": "alice", "amount": 5, "ttl_seconds": 60, "description": "x",
        "idempotency_key": "bad", "metadata": {},
    });
    let with = |field: &str, value: Value| {
        let mut b = valid.clone();
        b[field] = value;
        Body::Json(b)
    };
    let without = |field: &str| {
        let mut b = valid.clone();
        b.as_object_mut().unwrap().remove(field);
        Body::Json(b)
    };
    let huge = with("description", json!("x".repeat(70 * 1024)));
    let big: Value = serde_json::from_str("18446744073709551616").unwrap();

    let mut reserve_cases: Vec<(String, Body, u16, &str)> = vec![
        (
            "malformed JSON".into(),
            raw("{\"user_id\": \"alice\", "),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "not JSON".into(),
            raw("user_id=alice&amount=5"),
            400,
            "VALIDATION_ERROR",
        ),
        ("empty body".into(), raw(""), 400, "VALIDATION_ERROR"),
        (
            "array".into(),
            Body::Json(json!([valid.clone()])),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "text/plain".into(),
            Body::Raw(Some("text/plain"), valid.to_string().into_bytes()),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "unknown field".into(),
            with("surprise", json!(1)),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "missing user_id".into(),
            without("user_id"),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "missing amount".into(),
            without("amount"),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "user_id a number".into(),
            with("user_id", json!(7)),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "empty user_id".into(),
            with("user_id", json!("")),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "ttl a string".into(),
            with("ttl_seconds", json!("60")),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "ttl 1.5".into(),
            with("ttl_seconds", json!(1.5)),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "ttl 0".into(),
            with("ttl_seconds", json!(0)),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "ttl 86401".into(),
            with("ttl_seconds", json!(86_401)),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "ttl -1".into(),
            with("ttl_seconds", json!(-1)),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "ttl i64::MAX".into(),
            with("ttl_seconds", json!(i64::MAX)),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "metadata not an object".into(),
            with("metadata", json!([1])),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "description too long".into(),
            with("description", json!("d".repeat(501))),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "key too long".into(),
            with("idempotency_key", json!("k".repeat(256))),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "key with a space".into(),
            with("idempotency_key", json!("a b")),
            400,
            "VALIDATION_ERROR",
        ),
        ("70 KiB body".into(), huge, 413, "PAYLOAD_TOO_LARGE"),
        // Reused key with another amount, and more than available.
        (
            "reused key".into(),
            Body::Json(json!({ "user_id": "alice", "amount": 11, "idempotency_key": "r1" })),
            422,
            "IDEMPOTENCY_KEY_REUSED",
        ),
        (
            "more than available".into(),
            with("amount", json!(51)),
            402,
            "INSUFFICIENT_CREDITS",
        ),
    ];
    for (name, amount) in [
        ("0", json!(0)),
        ("-1", json!(-1)),
        ("1e30", json!(1e30)),
        ("1.5", json!(1.5)),
        ("i64::MAX", json!(i64::MAX)),
        ("i64::MIN", json!(i64::MIN)),
        ("MAX_CREDITS + 1", json!(MAX_CREDITS + 1)),
        ("2^64", big.clone()),
        ("a string", json!("5")),
        ("null", Value::Null),
    ] {
        reserve_cases.push((
            format!("amount {name}"),
            with("amount", amount),
            400,
            "VALIDATION_ERROR",
        ));
    }

    let mut failures = Vec::new();
    let mut total = 0;
    for (name, body, status, code) in reserve_cases {
        total += 1;
        let reply = app
            .request(Method::POST, HOLDS, Some(SERVICE_KEY), &[], body)
            .await;
        check(
            &mut failures,
            &format!("reserve: {name}"),
            &reply,
            status,
            code,
        );
    }

    let capture_path = format!("{HOLDS}/{id}/capture");
    let cap_with = |value: Value| Body::Json(json!({ "amount": value }));
    let mut capture_cases: Vec<CaptureCase> = vec![];
    let mut add = |name: &str,
                   path: &str,
                   headers: Vec<(&'static str, String)>,
                   body: Body,
                   status: u16,
                   code: &'static str| {
        capture_cases.push((
            name.to_owned(),
            path.to_owned(),
            headers,
            body,
            status,
            code,
        ));
    };
    for (name, value) in [
        ("-1", json!(-1)),
        ("i64::MIN", json!(i64::MIN)),
        ("1e30", json!(1e30)),
        ("i64::MAX", json!(i64::MAX)),
        ("MAX_CREDITS + 1", json!(MAX_CREDITS + 1)),
        ("2^64", big.clone()),
        ("1.5", json!(1.5)),
        ("a string", json!("5")),
        ("null", Value::Null),
    ] {
        add(
            &format!("amount {name}"),
            &capture_path,
            vec![],
            cap_with(value),
            400,
            "VALIDATION_ERROR",
        );
    }
    add(
        "missing amount",
        &capture_path,
        vec![],
        Body::Json(json!({ "description": "x" })),
        400,
        "VALIDATION_ERROR",
    );
    add(
        "unknown field",
        &capture_path,
        vec![],
        Body::Json(json!({ "amount": 1, "user_id": "alice" })),
        400,
        "VALIDATION_ERROR",
    );
    add(
        "malformed JSON",
        &capture_path,
        vec![],
        raw("{\"amount\": "),
        400,
        "VALIDATION_ERROR",
    );
    add(
        "empty body",
        &capture_path,
        vec![],
        raw(""),
        400,
        "VALIDATION_ERROR",
    );
    add(
        "no body",
        &capture_path,
        vec![],
        Body::Empty,
        400,
        "VALIDATION_ERROR",
    );
    add(
        "description a number",
        &capture_path,
        vec![],
        Body::Json(json!({ "amount": 1, "description": 5 })),
        400,
        "VALIDATION_ERROR",
    );
    add(
        "description too long",
        &capture_path,
        vec![],
        Body::Json(json!({ "amount": 1, "description": "d".repeat(501) })),
        400,
        "VALIDATION_ERROR",
    );
    add(
        "metadata not an object",
        &capture_path,
        vec![],
        Body::Json(json!({ "amount": 1, "metadata": "x" })),
        400,
        "VALIDATION_ERROR",
    );
    add(
        "key too long",
        &capture_path,
        vec![("Idempotency-Key", "k".repeat(256))],
        cap_with(json!(1)),
        400,
        "VALIDATION_ERROR",
    );
    add(
        "70 KiB body",
        &capture_path,
        vec![],
        Body::Json(json!({ "amount": 1, "description": "x".repeat(70 * 1024) })),
        413,
        "PAYLOAD_TOO_LARGE",
    );
    // More than the hold plus what is available (40 + 50): refused, the hold stays active.
    add(
        "cost beyond the account",
        &capture_path,
        vec![],
        cap_with(json!(91)),
        402,
        "INSUFFICIENT_CREDITS",
    );
    // Ids that are not numbers, or no hold at all.
    for bad in ["abc", "1.5", "-", "99999999999999999999", "0x1", "999999"] {
        add(
            &format!("hold {bad}"),
            &format!("{HOLDS}/{bad}/capture"),
            vec![],
            cap_with(json!(1)),
            404,
            "NOT_FOUND",
        );
    }
    for (name, path, headers, body, status, code) in capture_cases {
        total += 1;
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = app
            .request(Method::POST, &path, Some(SERVICE_KEY), &headers, body)
            .await;
        check(
            &mut failures,
            &format!("capture: {name}"),
            &reply,
            status,
            code,
        );
    }
    for bad in ["abc", "1.5", "-1", "99999999999999999999", "999999", "%20"] {
        total += 2;
        let reply = get_hold(&app, SERVICE_KEY, bad).await;
        check(
            &mut failures,
            &format!("GET hold {bad}"),
            &reply,
            404,
            "NOT_FOUND",
        );
        let reply = release(&app, SERVICE_KEY, bad).await;
        check(
            &mut failures,
            &format!("release hold {bad}"),
            &reply,
            404,
            "NOT_FOUND",
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        snapshot(&app, &[&id, &keyed]).await,
        before,
        "a refused request changed the database"
    );

    // The hold is still usable as it was.
    let (status, body, _) = capture(&app, SERVICE_KEY, &id, json!({ "amount": 40 }), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(figures(&app, "alice").await, (60, 50, 10));
    app.finish().await;
}

fn check(failures: &mut Vec<String>, name: &str, reply: &Reply, status: u16, code: &str) {
    let got = (
        reply.0.as_u16(),
        reply.1["error"]["code"].as_str().unwrap_or("-"),
    );
    if got != (status, code) {
        failures.push(format!(
            "{name}: expected {status} {code}, got {} {}: {}",
            got.0, got.1, reply.1
        ));
    }
}
