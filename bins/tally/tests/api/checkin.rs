//! Daily check-in through HTTP, with the server's clock moved by the test (no sleeping).

use serde_json::{Value, json};
use time::Duration;
use time::macros::datetime;

use crate::common::{Db, TestApp, admin_token, app_token, assert_error, user_token};

backend_tests!(streaks, local_days_follow_the_time_zone, disabled);

async fn set_config(app: &TestApp, token: &str, config: Value) {
    let (status, body, _) = app
        .put("/admin/checkin/config", token, config.clone())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], config);
    let (status, body, _) = app.get("/admin/checkin/config", token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], config, "GET returns what PUT stored");
}

/// `(awarded, streak, day)` of a successful check-in.
async fn check_in(app: &TestApp, token: &str) -> (i64, i64, String) {
    let (status, body, _) = app.checkin(token).await;
    assert_eq!(status, 200, "{body}");
    let d = &body["data"];
    (
        d["awarded"].as_i64().unwrap(),
        d["streak"].as_i64().unwrap(),
        d["day"].as_str().unwrap().to_owned(),
    )
}

/// `(checked_in_today, streak, next_reward)`.
async fn checkin_status(app: &TestApp, token: &str) -> (bool, i64, i64) {
    let (status, body, _) = app.get("/checkin/status", token).await;
    assert_eq!(status, 200, "{body}");
    let d = &body["data"];
    (
        d["checked_in_today"].as_bool().unwrap(),
        d["streak"].as_i64().unwrap(),
        d["next_reward"].as_i64().unwrap(),
    )
}

async fn streaks(db: Db) {
    let app = TestApp::spawn(db).await;
    let (admin, alice) = (admin_token("root"), user_token("alice"));

    let (status, body, _) = app.get("/admin/checkin/config", &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({ "enabled": true, "rewards": [10], "timezone": "UTC", "credits_expire_days": null }),
        "defaults before any PUT"
    );
    set_config(
        &app,
        &admin,
        json!({ "enabled": true, "rewards": [5, 10, 20], "timezone": "UTC", "credits_expire_days": null }),
    )
    .await;

    assert_eq!(checkin_status(&app, &alice).await, (false, 0, 5));
    assert_eq!(check_in(&app, &alice).await, (5, 1, "2026-03-01".into()));
    assert_eq!(checkin_status(&app, &alice).await, (true, 1, 10));
    let again = app.checkin(&alice).await;
    assert_error(&again, 409, "ALREADY_CHECKED_IN");

    // Late the same day is still the same day.
    app.clock.set(datetime!(2026-03-01 23:59:59 UTC));
    assert_error(&app.checkin(&alice).await, 409, "ALREADY_CHECKED_IN");

    let days = [
        (10, 2, "2026-03-02"),
        (20, 3, "2026-03-03"),
        (20, 4, "2026-03-04"),
    ];
    for (i, (awarded, streak, day)) in days.into_iter().enumerate() {
        app.clock
            .set(datetime!(2026-03-02 00:00 UTC) + Duration::days(i as i64));
        assert_eq!(
            checkin_status(&app, &alice).await,
            (false, streak - 1, awarded)
        );
        assert_eq!(
            check_in(&app, &alice).await,
            (awarded, streak, day.to_owned())
        );
    }
    assert_eq!(checkin_status(&app, &alice).await, (true, 4, 20));

    // Skipping 2026-03-05 breaks the streak.
    app.clock.set(datetime!(2026-03-06 08:00 UTC));
    assert_eq!(checkin_status(&app, &alice).await, (false, 0, 5));
    assert_eq!(check_in(&app, &alice).await, (5, 1, "2026-03-06".into()));

    assert_eq!(app.balance("alice").await, 5 + 10 + 20 + 20 + 5);
    let (_, body, _) = app.get("/credits/transactions?type=checkin", &alice).await;
    let amounts: Vec<i64> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![5, 20, 20, 10, 5]);
    // Bob's streak is his own.
    assert_eq!(
        check_in(&app, &user_token("bob")).await,
        (5, 1, "2026-03-06".into())
    );
    app.finish().await;
}

async fn local_days_follow_the_time_zone(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = user_token("alice");
    set_config(
        &app,
        &admin_token("root"),
        json!({ "enabled": true, "rewards": [1, 2], "timezone": "Asia/Tokyo", "credits_expire_days": null }),
    )
    .await;

    // 14:00Z is 23:00 in Tokyo on 1 March; 16:00Z is 01:00 on 2 March.
    app.clock.set(datetime!(2026-03-01 14:00 UTC));
    let (status, body, _) = app.checkin(&alice).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["day"], json!("2026-03-01"));
    assert_eq!(
        body["data"]["next_checkin_at"],
        json!("2026-03-01T15:00:00Z")
    );
    let (_, body, _) = app.get("/checkin/status", &alice).await;
    assert_eq!(body["data"]["checked_in_today"], json!(true));
    assert_eq!(body["data"]["day"], json!("2026-03-01"));
    assert_eq!(
        body["data"]["next_checkin_at"],
        json!("2026-03-01T15:00:00Z")
    );
    app.clock.set(datetime!(2026-03-01 16:00 UTC));
    let (_, body, _) = app.get("/checkin/status", &alice).await;
    assert_eq!(body["data"]["day"], json!("2026-03-02"));
    assert_eq!(body["data"]["checked_in_today"], json!(false));
    assert_eq!(body["data"]["streak"], json!(1));
    assert_eq!(body["data"]["next_reward"], json!(2));
    assert_eq!(
        body["data"]["next_checkin_at"],
        json!("2026-03-01T16:00:00Z"),
        "open now"
    );
    let (status, body, _) = app.checkin(&alice).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["day"], json!("2026-03-02"));
    assert_eq!(body["data"]["streak"], json!(2));
    assert_eq!(body["data"]["awarded"], json!(2));
    assert_eq!(app.balance("alice").await, 3);

    // The same two instants are one day in an app that counts days in UTC.
    let other_admin = app_token("root", "other", Some("admin"));
    set_config(
        &app,
        &other_admin,
        json!({ "enabled": true, "rewards": [7], "timezone": "UTC", "credits_expire_days": null }),
    )
    .await;
    let alice_other = app_token("alice", "other", None);
    app.clock.set(datetime!(2026-03-01 14:00 UTC));
    let (status, body, _) = app.checkin(&alice_other).await;
    assert_eq!(status, 200, "{body}");
    app.clock.set(datetime!(2026-03-01 16:00 UTC));
    assert_error(&app.checkin(&alice_other).await, 409, "ALREADY_CHECKED_IN");
    assert_eq!(app.balance_in("alice", "other").await, 7);
    app.finish().await;
}

async fn disabled(db: Db) {
    let app = TestApp::spawn(db).await;
    let (admin, alice) = (admin_token("root"), user_token("alice"));
    set_config(
        &app,
        &admin,
        json!({ "enabled": false, "rewards": [10], "timezone": "UTC", "credits_expire_days": null }),
    )
    .await;
    assert_error(&app.checkin(&alice).await, 409, "CHECKIN_DISABLED");
    let (_, body, _) = app.get("/checkin/status", &alice).await;
    assert_eq!(body["data"]["enabled"], json!(false));
    assert_eq!(body["data"]["checked_in_today"], json!(false));
    assert!(app.admin_history("default", "").await.is_empty());
    assert_eq!(app.balance("alice").await, 0);

    set_config(
        &app,
        &admin,
        json!({ "enabled": true, "rewards": [10], "timezone": "UTC", "credits_expire_days": 7 }),
    )
    .await;
    let (status, body, _) = app.checkin(&alice).await;
    assert_eq!(status, 200, "{body}");
    // Check-in credits with credits_expire_days expire that many days later.
    let (_, body, _) = app.get("/credits/balance", &alice).await;
    assert_eq!(
        body["data"]["expiring"],
        json!([{ "amount": 10, "expires_at": "2026-03-08T12:00:00Z" }])
    );
    app.finish().await;
}
