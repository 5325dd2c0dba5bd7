//! `PUT /admin/billing/coupons/{id}`: switching a coupon off and on at checkout, changing its
//! limit, expiry and plans, and refused edits that change nothing.

use serde_json::{Value, json};

use crate::common::{Db, TestApp, admin_token, app_token, assert_error, user_token};
use crate::{create_session, orders, seed_plans, spawn};

backend_tests!(
    coupon_switched_off_is_refused_at_checkout,
    coupon_edits_refuse_bad_input
);

async fn create_coupon(app: &TestApp, body: Value) -> Value {
    let (status, reply, _) = app
        .post("/admin/billing/coupons", &admin_token("root"), body)
        .await;
    assert_eq!(status, 200, "{reply}");
    reply["data"].clone()
}

async fn coupons(app: &TestApp) -> Value {
    let (status, reply, _) = app
        .get("/admin/billing/coupons?limit=100", &admin_token("root"))
        .await;
    assert_eq!(status, 200, "{reply}");
    reply["data"].clone()
}

/// A sandbox checkout of the pack with `code`, paid; answers the create-session reply.
async fn buy_with(app: &TestApp, user: &str, pack: &str, code: &str) -> (u16, Value) {
    let (status, body) = create_session(
        app,
        user,
        json!({"channel": "sandbox", "type": "credits", "plan_id": pack, "coupon_code": code,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    if status == 200 {
        let url = body["data"]["url"].as_str().unwrap();
        let paid = app.client.post(format!("{url}/pay")).send().await.unwrap();
        assert_eq!(paid.status(), 200);
    }
    (status, body)
}

async fn coupon_switched_off_is_refused_at_checkout(db: Db) {
    let app = spawn(db, None, None).await;
    let (_, pack) = seed_plans(&app).await;
    let coupon = create_coupon(
        &app,
        json!({"code": "SAVE10", "percent_off": 10, "duration": "once", "max_redemptions": 5}),
    )
    .await;
    let id = coupon["id"].as_str().unwrap().to_owned();
    let admin = admin_token("root");

    let (status, body) = buy_with(&app, "alice", &pack, "save10").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        orders(&app, "alice").await[0]["discount_amount"],
        49,
        "10 % of 499, rounded down"
    );

    // Switched off: refused at checkout, and no order is created.
    let (status, off, _) = app
        .put(
            &format!("/admin/billing/coupons/{id}"),
            &admin,
            json!({"active": false}),
        )
        .await;
    assert_eq!(status, 200, "{off}");
    assert_eq!(off["data"]["active"], false);
    assert_eq!(off["data"]["times_redeemed"], 1);
    assert_eq!(off["data"]["percent_off"], 10);
    let (status, body) = buy_with(&app, "bob", &pack, "SAVE10").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("COUPON_INVALID")),
        "{body}"
    );
    assert!(orders(&app, "bob").await.is_empty());

    // On again, with a limit of exactly the redemptions so far: now exhausted.
    let (status, on, _) = app
        .put(
            &format!("/admin/billing/coupons/{id}"),
            &admin,
            json!({"active": true, "max_redemptions": 1}),
        )
        .await;
    assert_eq!(status, 200, "{on}");
    assert_eq!(
        (
            on["data"]["active"].clone(),
            on["data"]["max_redemptions"].clone()
        ),
        (json!(true), json!(1))
    );
    let (status, body) = buy_with(&app, "bob", &pack, "SAVE10").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("COUPON_INVALID")),
        "{body}"
    );

    // Unlimited, an expiry, and restricted to the pack: bob gets his discount.
    let (status, edited, _) = app
        .put(
            &format!("/admin/billing/coupons/{id}"),
            &admin,
            json!({"max_redemptions": null, "expires_at": "2027-01-01T00:00:00Z",
                "plan_ids": [pack, pack]}),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["data"]["max_redemptions"], Value::Null);
    assert_eq!(edited["data"]["expires_at"], "2027-01-01T00:00:00Z");
    assert_eq!(edited["data"]["plan_ids"], json!([pack]));
    let (status, body) = buy_with(&app, "bob", &pack, "SAVE10").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        orders(&app, "bob").await[0]["discount_amount"],
        49,
        "10 % of 499, rounded down"
    );
    let stored = coupons(&app).await;
    assert_eq!(stored[0]["times_redeemed"], 2, "{stored}");
    app.finish().await;
}

async fn coupon_edits_refuse_bad_input(db: Db) {
    let app = spawn(db, None, None).await;
    let (pro, _) = seed_plans(&app).await;
    let coupon = create_coupon(
        &app,
        json!({"code": "EURO", "amount_off": 100, "currency": "eur", "duration": "once"}),
    )
    .await;
    let id = coupon["id"].as_str().unwrap().to_owned();
    let path = format!("/admin/billing/coupons/{id}");
    let other_admin = app_token("root", "other", Some("admin"));
    let before = coupons(&app).await;
    let admin = admin_token("root");

    for (body, field) in [
        (json!({"percent_off": 50}), None),
        (json!({"code": "OTHER"}), None),
        (json!({"duration": "forever"}), None),
        (json!({"active": null}), None),
        (json!({"active": "no"}), None),
        (json!({"max_redemptions": 0}), Some("max_redemptions")),
        (json!({"max_redemptions": -3}), Some("max_redemptions")),
        (
            json!({"expires_at": "2020-01-01T00:00:00Z"}),
            Some("expires_at"),
        ),
        (json!({"expires_at": "soon"}), None),
        (json!({"plan_ids": ["999999"]}), Some("plan_ids[0]")),
        // A euro coupon cannot be restricted to a dollar plan.
        (json!({"plan_ids": [pro]}), Some("plan_ids[0]")),
        (json!({"plan_ids": null}), None),
    ] {
        let reply = app.put(&path, &admin, body.clone()).await;
        assert_error(&reply, 400, "VALIDATION_ERROR");
        if let Some(field) = field {
            assert_eq!(
                reply.1["error"]["details"]["fields"][0]["field"], field,
                "{body}: {}",
                reply.1
            );
        }
    }
    for missing in [
        "/admin/billing/coupons/999999",
        "/admin/billing/coupons/abc",
    ] {
        let reply = app.put(missing, &admin, json!({"active": false})).await;
        assert_error(&reply, 404, "NOT_FOUND");
    }
    // Another app's admin does not find it; a user may not; no credentials, no entry.
    assert_error(
        &app.put(&path, &other_admin, json!({"active": false})).await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &app.put(&path, &user_token("alice"), json!({"active": false}))
            .await,
        403,
        "FORBIDDEN",
    );
    assert_error(
        &app.put(&path, "not-a-token", json!({"active": false}))
            .await,
        401,
        "UNAUTHORIZED",
    );
    assert_eq!(coupons(&app).await, before);

    // An empty change answers the coupon as it is; a replayed change lands the same.
    let (status, same, _) = app.put(&path, &admin, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(same["data"], before[0]);
    for _ in 0..2 {
        let (status, off, _) = app.put(&path, &admin, json!({"active": false})).await;
        assert_eq!(
            (status.as_u16(), off["data"]["active"].clone()),
            (200, json!(false))
        );
    }
    let after = coupons(&app).await;
    assert_eq!(after.as_array().unwrap().len(), 1);
    assert_eq!(after[0]["active"], false);
    app.finish().await;
}
