//! `GET /admin/users` and `/admin/users/{user_id}`: the operators' view of accounts — search by
//! prefix, cursor pages, one customer's whole picture, app isolation and refused requests.

use serde_json::{Value, json};

use crate::common::{Db, TestApp, admin_token, app_token, assert_error, user_token};

backend_tests!(admin_finds_customers, admin_users_refuse_bad_input);

async fn admin_get(app: &TestApp, path: &str) -> Value {
    let (status, body, _) = app.get(path, &admin_token("root")).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn users(body: &Value) -> Vec<&str> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect()
}

async fn admin_finds_customers(db: Db) {
    let app = TestApp::spawn(db).await;
    // Accounts open in this order: the newest is listed first.
    for user in ["alice", "Alina", "al_ice", "bob"] {
        app.admin_grant(user, 100).await;
    }
    let (status, body, _) = app
        .post(
            "/admin/credits/manual",
            &admin_token("root"),
            json!({"user_id": "alice", "amount": 50, "description": "expiring",
                "expires_at": "2030-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, hold, _) = app
        .post(
            "/internal/credits/holds",
            crate::common::SERVICE_KEY,
            json!({"user_id": "alice", "amount": 30, "ttl_seconds": 600,
                "description": "stream", "idempotency_key": "h-1"}),
        )
        .await;
    assert_eq!(status, 200, "{hold}");
    let (status, checkin, _) = app.checkin(&user_token("alice")).await;
    assert_eq!(status, 200, "{checkin}");
    let reward = checkin["data"]["awarded"].as_i64().unwrap();
    assert!(reward > 0);
    let total = 100 + 50 + reward;
    // Another app's alice is not this app's.
    let (status, body, _) = app
        .post(
            "/admin/credits/manual",
            &app_token("root", "other", Some("admin")),
            json!({"user_id": "alice", "amount": 7, "description": "other app"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let all = admin_get(&app, "/admin/users").await;
    assert_eq!(users(&all), ["bob", "al_ice", "Alina", "alice"], "{all}");
    let alice = &all["data"][3];
    assert_eq!(
        alice["balance"], total,
        "grants and the check-in reward: {alice}"
    );
    assert_eq!(alice["held"], 30);
    assert!(alice["created_at"].is_string() && alice["last_activity_at"].is_string());

    // Prefix search is exact: case-sensitive, and `_` is no wildcard.
    for (query, expected) in [
        ("al", vec!["al_ice", "alice"]),
        ("Al", vec!["Alina"]),
        ("al_", vec!["al_ice"]),
        ("alice", vec!["alice"]),
        ("alicex", vec![]),
        ("%", vec![]),
        ("", vec!["bob", "al_ice", "Alina", "alice"]),
    ] {
        let body = admin_get(&app, &format!("/admin/users?query={query}")).await;
        assert_eq!(users(&body), expected, "{query}: {body}");
    }

    // Cursor pages: every account once, in order.
    let mut seen = Vec::new();
    let mut path = "/admin/users?limit=3".to_owned();
    loop {
        let body = admin_get(&app, &path).await;
        seen.extend(users(&body).into_iter().map(str::to_owned));
        match body["meta"]["next_before"].as_str() {
            Some(cursor) => path = format!("/admin/users?limit=3&before={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["bob", "al_ice", "Alina", "alice"]);

    // One customer's whole picture.
    let detail = admin_get(&app, "/admin/users/alice").await;
    let d = &detail["data"];
    assert_eq!(d["user_id"], "alice");
    assert_eq!(
        (
            d["credits"]["balance"].clone(),
            d["credits"]["held"].clone(),
            d["credits"]["available"].clone()
        ),
        (json!(total), json!(30), json!(total - 30)),
        "{detail}"
    );
    assert_eq!(
        d["credits"]["expiring"],
        json!([{"amount": 50, "expires_at": "2030-01-01T00:00:00Z"}])
    );
    let lots: Vec<i64> = d["lots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["remaining"].as_i64().unwrap())
        .collect();
    assert_eq!(lots.iter().sum::<i64>(), total, "{detail}");
    assert_eq!(d["lots"].as_array().unwrap().len(), 3);
    assert_eq!(d["holds"].as_array().unwrap().len(), 1);
    assert_eq!(d["holds"][0]["amount"], 30);
    assert_eq!(d["holds"][0]["id"], hold["data"]["id"]);
    assert_eq!(d["checkin"]["checked_in_today"], true);
    assert_eq!(d["checkin"]["streak"], 1);
    assert_eq!(d["subscription"], Value::Null);
    assert_eq!(d["orders"], json!([]));
    // Another app sees its own alice only.
    let (status, other, _) = app
        .get(
            "/admin/users/alice",
            &app_token("root", "other", Some("admin")),
        )
        .await;
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["data"]["balance"], 7);
    app.finish().await;
}

async fn admin_users_refuse_bad_input(db: Db) {
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 10).await;
    let before = admin_get(&app, "/admin/users").await;

    for path in ["/admin/users", "/admin/users/alice"] {
        assert_error(&app.get(path, &user_token("alice")).await, 403, "FORBIDDEN");
        assert_error(&app.get(path, "not-a-token").await, 401, "UNAUTHORIZED");
    }
    for (path, field) in [
        ("/admin/users?limit=0", "limit"),
        ("/admin/users?limit=101", "limit"),
        ("/admin/users?before=nobody", "before"),
        ("/admin/users?before=", "before"),
        ("/admin/users?query=%01", "query"),
    ] {
        let reply = app.get(path, &admin_token("root")).await;
        assert_error(&reply, 400, "VALIDATION_ERROR");
        assert_eq!(
            reply.1["error"]["details"]["fields"][0]["field"], field,
            "{path}: {}",
            reply.1
        );
    }
    let long = "x".repeat(129);
    let reply = app
        .get(&format!("/admin/users?query={long}"), &admin_token("root"))
        .await;
    assert_error(&reply, 400, "VALIDATION_ERROR");
    // No account, a user id no account can have, another app's user: not found.
    for path in [
        "/admin/users/nobody".to_owned(),
        "/admin/users/%01".to_owned(),
        format!("/admin/users/{long}"),
    ] {
        assert_error(
            &app.get(&path, &admin_token("root")).await,
            404,
            "NOT_FOUND",
        );
    }
    assert_error(
        &app.get(
            "/admin/users/alice",
            &app_token("root", "other", Some("admin")),
        )
        .await,
        404,
        "NOT_FOUND",
    );
    // Looking never opens an account.
    assert_eq!(admin_get(&app, "/admin/users").await, before);
    app.finish().await;
}
