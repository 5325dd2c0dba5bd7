//! Refused purchase requests: each answers its documented error and creates no order (and calls
//! no provider).

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Body, Db, admin_token, app_token};
use crate::{create_session, doubles, orders, seed_plans, spawn};

backend_tests!(
    refused_sessions_create_nothing,
    order_visibility_and_pages,
    oversized_webhooks_are_refused,
);

async fn refused_sessions_create_nothing(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let (pro, pack) = seed_plans(&app).await;
    let admin = admin_token("root");
    let (status, inactive, _) = app
        .post(
            "/admin/billing/plans",
            &admin,
            json!({"name": "Old", "kind": "subscription", "currency": "usd", "price_monthly": 100,
                "stripe_price_id_monthly": "price_old", "active": false}),
        )
        .await;
    assert_eq!(status, 200);
    let inactive = inactive["data"]["id"].as_str().unwrap().to_owned();
    let (status, no_stripe, _) = app
        .post(
            "/admin/billing/plans",
            &admin,
            json!({"name": "Creem only", "kind": "credit_pack", "currency": "usd", "price": 100,
                "creem_product_id": "prod_x"}),
        )
        .await;
    assert_eq!(status, 200);
    let no_stripe = no_stripe["data"]["id"].as_str().unwrap().to_owned();
    let coupon = |body: Value| {
        let (app, admin) = (&app, admin.clone());
        async move {
            let (status, reply, _) = app.post("/admin/billing/coupons", &admin, body).await;
            assert_eq!(status, 200, "{reply}");
        }
    };
    coupon(json!({"code": "OFF", "percent_off": 10, "duration": "once", "active": false})).await;
    coupon(
        json!({"code": "SOON", "percent_off": 10, "duration": "once",
        "expires_at": "2026-03-01T12:00:01Z"}),
    )
    .await;
    coupon(json!({"code": "EUR", "amount_off": 100, "currency": "eur", "duration": "once"})).await;
    coupon(json!({"code": "PACKONLY", "percent_off": 10, "duration": "once", "plan_ids": [pack.clone()]})).await;
    app.clock.advance(time::Duration::seconds(5));

    let base = json!({"channel": "stripe", "type": "subscription", "plan_id": pro,
        "success_url": "https://app.example/ok"});
    let with = |changes: Value| {
        let mut b = base.clone();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (with(json!({"channel": "paypal"})), 400, "VALIDATION_ERROR"),
        (
            with(json!({"channel": "creem"})),
            422,
            "PROVIDER_NOT_CONFIGURED",
        ),
        (with(json!({"type": "gift"})), 400, "VALIDATION_ERROR"),
        (with(json!({"interval": "week"})), 400, "VALIDATION_ERROR"),
        (with(json!({"plan_id": "9999"})), 404, "NOT_FOUND"),
        (
            with(json!({"plan_id": inactive})),
            422,
            "PLAN_NOT_PURCHASABLE",
        ),
        (
            with(json!({"plan_id": pack.clone()})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            with(json!({"type": "credits", "plan_id": pack.clone(), "interval": "month"})),
            400,
            "VALIDATION_ERROR",
        ),
        (with(json!({"type": "credits"})), 400, "VALIDATION_ERROR"),
        (
            with(json!({"type": "credits", "plan_id": no_stripe})),
            422,
            "PLAN_NOT_PURCHASABLE",
        ),
        (with(json!({"coupon_code": "NOPE"})), 422, "COUPON_INVALID"),
        (with(json!({"coupon_code": "OFF"})), 422, "COUPON_INVALID"),
        (with(json!({"coupon_code": "SOON"})), 422, "COUPON_INVALID"),
        (with(json!({"coupon_code": "EUR"})), 422, "COUPON_INVALID"),
        (
            with(json!({"coupon_code": "PACKONLY"})),
            422,
            "COUPON_INVALID",
        ),
        (
            with(json!({"success_url": "https://evil.example/ok"})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            with(json!({"success_url": "https://app.example.evil.test/"})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            with(json!({"success_url": "https://user@evil.example/"})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            with(json!({"success_url": "javascript:alert(1)"})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            with(json!({"cancel_url": "http://localhost/"})),
            400,
            "VALIDATION_ERROR",
        ),
        (with(json!({"success_url": null})), 400, "VALIDATION_ERROR"),
        (with(json!({"plan_id": 5})), 400, "VALIDATION_ERROR"),
        (with(json!({"surprise": true})), 400, "VALIDATION_ERROR"),
    ];
    for (body, status, code) in cases {
        let (got, reply) = create_session(&app, "alice", body.clone()).await;
        assert_eq!(
            (got, reply["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {reply}"
        );
    }
    // Malformed JSON, no credentials, a service key instead of a user token.
    let (status, reply, _) = app
        .request(
            Method::POST,
            "/payment/create-session",
            Some(&app_token("alice", "default", None)),
            &[],
            Body::Raw(Some("application/json"), b"{\"channel\":".to_vec()),
        )
        .await;
    assert_eq!(
        (status.as_u16(), reply["error"]["code"].as_str()),
        (400, Some("VALIDATION_ERROR"))
    );
    let (status, _, _) = app
        .request(
            Method::POST,
            "/payment/create-session",
            None,
            &[],
            Body::Json(base.clone()),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _, _) = app
        .request(
            Method::POST,
            "/payment/create-session",
            Some(crate::common::SERVICE_KEY),
            &[],
            Body::Json(base.clone()),
        )
        .await;
    assert_eq!(status, 401);
    assert!(
        orders(&app, "alice").await.is_empty(),
        "no order was created"
    );
    assert!(stripe.requests().is_empty(), "no provider was called");

    // Idempotency: a repeat answers the same session; another body with the key is refused.
    let token = app_token("alice", "default", None);
    let post = |body: Value| {
        let (app, token) = (&app, token.clone());
        async move {
            app.request(
                Method::POST,
                "/payment/create-session",
                Some(&token),
                &[("idempotency-key", "buy-1")],
                Body::Json(body),
            )
            .await
        }
    };
    let (s1, first, _) = post(base.clone()).await;
    let (s2, second, _) = post(base.clone()).await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (200, 200), "{first} {second}");
    assert_eq!(first["data"], second["data"]);
    let (s3, third, _) = post(with(json!({"interval": "year"}))).await;
    assert_eq!(
        (s3.as_u16(), third["error"]["code"].as_str()),
        (422, Some("IDEMPOTENCY_KEY_REUSED"))
    );
    assert_eq!(orders(&app, "alice").await.len(), 1);
    assert_eq!(stripe.requests_to("/v1/checkout/sessions").len(), 1);
    app.finish().await;
}

async fn order_visibility_and_pages(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let (pro, _) = seed_plans(&app).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, body) = create_session(
            &app,
            "alice",
            json!({"channel": "stripe", "type": "subscription", "plan_id": pro,
                "success_url": "https://app.example/ok"}),
        )
        .await;
        assert_eq!(status, 200);
        ids.push(body["data"]["order_id"].as_str().unwrap().to_owned());
    }
    let alice = app_token("alice", "default", None);
    let (status, page, _) = app.get("/orders?limit=2", &alice).await;
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["meta"]["has_more"], true);
    assert_eq!(page["data"][0]["id"], ids[2], "newest first");
    let (status, one, _) = app.get(&format!("/orders/{}", ids[0]), &alice).await;
    assert_eq!(status, 200);
    assert_eq!(one["data"]["status"], "pending");
    assert!(one["data"]["checkout_url"].is_string());
    // Bob, and Alice in another app, see none of it.
    let (status, reply, _) = app
        .get(
            &format!("/orders/{}", ids[0]),
            &app_token("bob", "default", None),
        )
        .await;
    assert_eq!(
        (status.as_u16(), reply["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    let (status, _, _) = app
        .get(
            &format!("/orders/{}", ids[0]),
            &app_token("alice", "other", None),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = app.get("/orders/ord_nope", &alice).await;
    assert_eq!(status, 404);
    for bad in [
        "/orders?limit=0",
        "/orders?limit=101",
        "/orders?offset=-1",
        "/orders?limit=x",
        "/orders?offset=1000001",
        "/orders?type=bogus",
    ] {
        let (status, reply, _) = app.get(bad, &alice).await;
        assert_eq!(
            (status.as_u16(), reply["error"]["code"].as_str()),
            (400, Some("VALIDATION_ERROR")),
            "{bad}"
        );
    }
    // Every list reads its parameters the same way: an unknown one is named, a deep offset
    // refused.
    let admin = admin_token("root");
    for (bad, field) in [
        ("/orders?type=bogus", "type"),
        ("/admin/billing/coupons?before=abc", "before"),
        ("/admin/billing/events?offset=99999999", "offset"),
        ("/admin/orders?offset=1000001", "offset"),
        ("/admin/credits/codes?sort=desc", "sort"),
    ] {
        let token = if bad.starts_with("/admin") {
            &admin
        } else {
            &alice
        };
        let (status, reply, _) = app.get(bad, token).await;
        assert_eq!(status, 400, "{bad}: {reply}");
        assert_eq!(
            reply["error"]["details"]["fields"][0]["field"], field,
            "{bad}: {reply}"
        );
    }
    let (status, _, _) = app
        .get("/admin/billing/events?offset=1000000", &admin)
        .await;
    assert_eq!(status, 200);
    let (status, sub, _) = app
        .get("/subscription", &app_token("bob", "default", None))
        .await;
    assert_eq!(status, 200);
    assert!(sub["data"].is_null());
    let (status, _, _) = app.get("/admin/billing/events", &alice).await;
    assert_eq!(status, 403);
    let (status, _, _) = app
        .request(Method::GET, "/orders", None, &[], Body::Empty)
        .await;
    assert_eq!(status, 401);
    app.finish().await;
}

/// A provider webhook over 1 MiB answers 413 `PAYLOAD_TOO_LARGE` and records nothing.
async fn oversized_webhooks_are_refused(db: Db) {
    let stripe = crate::doubles::stripe().await;
    let app = crate::spawn(db, Some(&stripe), None).await;
    let body = format!(
        "{{\"id\": \"evt_big\", \"type\": \"ping\", \"padding\": \"{}\"}}",
        "x".repeat(1024 * 1024)
    );
    let sig = crate::doubles::stripe_signature(crate::STRIPE_WHSEC, crate::now_unix(&app), &body);
    let (status, answer) =
        crate::deliver(&app, "stripe", &[("stripe-signature", &sig)], &body).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE")),
        "{answer}"
    );
    assert!(crate::events(&app).await.is_empty());
    app.finish().await;
}
