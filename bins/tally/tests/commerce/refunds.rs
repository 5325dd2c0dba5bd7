//! Refunds started from Tally (`POST /admin/orders/{id}/refund`): the exact refund calls sent to
//! the Stripe and Creem doubles, the credits clawed back once from the provider's refund event
//! (the sandbox sends its own), and refused requests that ask nobody and change nothing.

use serde_json::{Value, json};

use crate::common::{Db, TestApp, admin_token, app_token};
use crate::creem::send as send_creem;
use crate::doubles;
use crate::stripe::{checkout_completed, event, send};
use crate::{create_session, events, now_unix, orders, seed_plans, spawn};

backend_tests!(
    sandbox_refunds_claw_back_once,
    stripe_refund_asks_stripe_and_follows_its_event,
    creem_refund_is_whole_and_follows_its_event,
    refused_refunds_change_nothing,
);

/// `POST /admin/orders/{order}/refund` as the root operator, with optional extra headers.
async fn refund(app: &TestApp, order: &str, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, body, _) = app
        .request(
            reqwest::Method::POST,
            &format!("/admin/orders/{order}/refund"),
            Some(&admin_token("root")),
            headers,
            crate::common::Body::Json(body),
        )
        .await;
    (status.as_u16(), body)
}

/// Buys the pack for `user` through the sandbox and pays; answers the order id.
async fn sandbox_pack(app: &TestApp, user: &str, pack: &str) -> String {
    let (status, body) = create_session(
        app,
        user,
        json!({"channel": "sandbox", "type": "credits", "plan_id": pack,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let url = body["data"]["url"].as_str().unwrap();
    let paid = app.client.post(format!("{url}/pay")).send().await.unwrap();
    assert_eq!(paid.status(), 200);
    body["data"]["order_id"].as_str().unwrap().to_owned()
}

/// Alice's Stripe pack order, paid through PaymentIntent `intent` by a signed event.
async fn stripe_pack(app: &TestApp, pack: &str, intent: &str) -> String {
    let (status, body) = create_session(
        app,
        "alice",
        json!({"channel": "stripe", "type": "credits", "plan_id": pack,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let order = body["data"]["order_id"].as_str().unwrap().to_owned();
    let session = body["data"]["session_id"].as_str().unwrap();
    let completed = event(
        &format!("evt_paid_{intent}"),
        "checkout.session.completed",
        now_unix(app),
        checkout_completed(
            session,
            &order,
            "payment",
            json!({"payment_intent": intent, "amount_total": 499}),
        ),
    );
    assert_eq!(send(app, &completed).await.0, 200);
    order
}

async fn sandbox_refunds_claw_back_once(db: Db) {
    let app = spawn(db, None, None).await;
    let watcher = crate::watch(&app).await;
    let (_, pack) = seed_plans(&app).await;
    let order = sandbox_pack(&app, "alice", &pack).await;
    assert_eq!(app.balance("alice").await, 500);

    // A fifth of the 499 paid: 99 credits of 500 come back (rounded down per refund).
    let (status, body) = refund(
        &app,
        &order,
        json!({"amount": 100, "reason": "asked nicely"}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["outcome"], "requested");
    assert_eq!(body["data"]["amount_minor"], 100);
    assert_eq!(body["data"]["full"], false);
    assert_eq!(body["data"]["payment_id"], format!("order:{order}"));
    assert_eq!(body["data"]["order"]["status"], "refunded");
    assert_eq!(app.balance("alice").await, 500 - 100);

    // More than is left: refused, nothing asked.
    let (status, body) = refund(&app, &order, json!({"amount": 400}), &[]).await;
    assert_eq!(
        (
            status,
            body["error"]["details"]["fields"][0]["field"].as_str()
        ),
        (400, Some("amount")),
        "{body}"
    );
    // The rest (no amount: all that is left): every credit granted is back.
    let (status, body) = refund(&app, &order, json!({}), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["amount_minor"], 399);
    assert_eq!(body["data"]["full"], true);
    assert_eq!(app.balance("alice").await, 0);
    let clawed: i64 = app
        .rows_of_type("refund")
        .await
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(clawed, -500);

    // Nothing is left to refund: a replay is refused and changes nothing.
    let recorded = events(&app).await.len();
    let (status, body) = refund(&app, &order, json!({}), &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("NOT_REFUNDABLE")),
        "{body}"
    );
    assert_eq!(events(&app).await.len(), recorded);
    assert_eq!(app.balance("alice").await, 0);

    // Two refunds, two `order.refunded`, with the minor units and credits of each.
    let told = crate::outbound(&watcher, 4).await;
    let mut refunds: Vec<_> = told
        .iter()
        .filter(|(t, _)| t == "order.refunded")
        .map(|(_, d)| {
            (
                d["refunded_minor"].as_i64().unwrap(),
                d["credits_clawed_back"].as_i64().unwrap(),
            )
        })
        .collect();
    refunds.sort_unstable();
    assert_eq!(refunds, [(100, 100), (399, 400)], "{told:#?}");
    app.assert_verified().await;
    app.finish().await;
}

async fn stripe_refund_asks_stripe_and_follows_its_event(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let (_, pack) = seed_plans(&app).await;
    let order = stripe_pack(&app, &pack, "pi_1").await;
    assert_eq!(app.balance("alice").await, 500);

    let (status, body) = refund(
        &app,
        &order,
        json!({"amount": 250, "reason": "double charge"}),
        &[("idempotency-key", "refund-ord-1")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["outcome"], "requested");
    assert_eq!(body["data"]["payment_id"], format!("order:{order}"));
    // Tally follows the provider: nothing moves until Stripe's event arrives.
    assert_eq!(body["data"]["order"]["status"], "completed");
    assert_eq!(app.balance("alice").await, 500);
    let sent = stripe.requests_to("/v1/refunds");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "POST");
    assert_eq!(sent[0].headers["idempotency-key"], "refund-ord-1");
    assert_eq!(
        sent[0].headers["authorization"],
        format!("Bearer {}", crate::STRIPE_KEY)
    );
    let form = sent[0].form();
    assert_eq!(form["payment_intent"], "pi_1");
    assert_eq!(form["amount"], "250");
    assert_eq!(form["metadata[order_id]"], order);
    assert_eq!(form["metadata[app]"], "default");
    assert_eq!(form["metadata[reason]"], "double charge");
    assert!(!form.contains_key("charge"));

    // The same request again (a retry): the same key, so Stripe makes no second refund.
    let (status, _) = refund(
        &app,
        &order,
        json!({"amount": 250, "reason": "double charge"}),
        &[("idempotency-key", "refund-ord-1")],
    )
    .await;
    assert_eq!(status, 200);
    let sent = stripe.requests_to("/v1/refunds");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].headers["idempotency-key"], "refund-ord-1");

    // Stripe's event (cumulative 250 of 499), delivered twice: half the credits, once.
    let charge = json!({"id": "ch_1", "object": "charge", "payment_intent": "pi_1",
        "amount": 499, "amount_refunded": 250, "refunded": false, "currency": "usd"});
    let refunded = event("evt_re_1", "charge.refunded", now_unix(&app), charge);
    assert_eq!(send(&app, &refunded).await.0, 200);
    assert_eq!(
        send(&app, &refunded).await.1["data"]["outcome"],
        "duplicate"
    );
    assert_eq!(app.balance("alice").await, 500 - 250);
    assert_eq!(orders(&app, "alice").await[0]["status"], "refunded");

    // The rest: no amount, so Stripe refunds what is left.
    let (status, body) = refund(&app, &order, json!({}), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["amount_minor"], 249);
    assert_eq!(body["data"]["full"], true);
    let sent = stripe.requests_to("/v1/refunds");
    let last = sent.last().unwrap();
    assert!(!last.form().contains_key("amount"), "{}", last.body);
    assert!(last.headers["idempotency-key"].starts_with("tally-refund-"));

    // Stripe refuses, or fails: 502, nothing changed here.
    let refused = stripe_pack(&app, &pack, "pi_refunded").await;
    let down = stripe_pack(&app, &pack, "pi_down").await;
    let balance = app.balance("alice").await;
    for order in [&refused, &down] {
        let (status, body) = refund(&app, order, json!({}), &[]).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (502, Some("PROVIDER_ERROR")),
            "{body}"
        );
    }
    assert_eq!(app.balance("alice").await, balance);
    assert!(
        orders(&app, "alice")
            .await
            .iter()
            .filter(|o| o["id"] == refused.as_str() || o["id"] == down.as_str())
            .all(|o| o["status"] == "completed")
    );
    app.assert_verified().await;
    app.finish().await;
}

async fn creem_refund_is_whole_and_follows_its_event(db: Db) {
    let creem = doubles::creem().await;
    let app = spawn(db, None, Some(&creem)).await;
    let (pro, _) = seed_plans(&app).await;
    let (status, body) = create_session(
        &app,
        "alice",
        json!({"channel": "creem", "type": "subscription", "plan_id": pro,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let order = body["data"]["order_id"].as_str().unwrap().to_owned();
    let t = now_unix(&app);
    let paid = crate::creem::event(
        "evt_p1",
        "subscription.paid",
        t * 1000,
        crate::creem::paid("sub_c", &order, "tran_1", t, t + 2_592_000),
    );
    assert_eq!(send_creem(&app, &paid).await.0, 200);
    assert_eq!(app.balance("alice").await, 1000);

    // Creem refunds whole payments only: a part is refused before asking.
    let (status, body) = refund(&app, &order, json!({"amount": 100}), &[]).await;
    assert_eq!(
        (
            status,
            body["error"]["details"]["fields"][0]["field"].as_str()
        ),
        (400, Some("amount")),
        "{body}"
    );
    assert!(creem.requests_to("/v1/refunds").is_empty());

    let (status, body) = refund(&app, &order, json!({"reason": "changed mind"}), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["payment_id"], "tran_1");
    assert_eq!(body["data"]["amount_minor"], 999);
    let sent = creem.requests_to("/v1/refunds");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].headers["x-api-key"], crate::CREEM_KEY);
    assert_eq!(sent[0].json(), json!({"transaction_id": "tran_1"}));
    assert_eq!(app.balance("alice").await, 1000, "not before Creem's event");

    let refunded = json!({"id": "evt_r1", "eventType": "refund.created",
        "created_at": t * 1000 + 5,
        "object": {"id": "ref_1", "status": "succeeded", "refund_amount": 999,
            "refund_currency": "USD", "transaction": {"id": "tran_1", "amount_paid": 999}}})
    .to_string();
    assert_eq!(send_creem(&app, &refunded).await.0, 200);
    assert_eq!(
        send_creem(&app, &refunded).await.1["data"]["outcome"],
        "duplicate"
    );
    assert_eq!(app.balance("alice").await, 0);
    assert_eq!(orders(&app, "alice").await[0]["status"], "refunded");
    app.assert_verified().await;
    app.finish().await;
}

async fn refused_refunds_change_nothing(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let (pro, pack) = seed_plans(&app).await;
    let paid = stripe_pack(&app, &pack, "pi_9").await;
    // A pending order: nothing was paid.
    let (status, body) = create_session(
        &app,
        "alice",
        json!({"channel": "stripe", "type": "credits", "plan_id": pack,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let pending = body["data"]["order_id"].as_str().unwrap().to_owned();
    // A subscription whose invoice named no PaymentIntent or charge: Stripe cannot refund it.
    let sub_order = crate::stripe::subscribe(&app, "bob", &pro).await;
    let t = now_unix(&app);
    let invoice = event(
        "evt_inv",
        "invoice.paid",
        t,
        crate::stripe::invoice_paid("in_1", "sub_1", &sub_order, t, t + 2_592_000),
    );
    assert_eq!(send(&app, &invoice).await.0, 200);

    let before = (
        app.balance("alice").await,
        app.balance("bob").await,
        orders(&app, "alice").await,
        events(&app).await.len(),
    );
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (&pending, json!({}), 409, "NOT_REFUNDABLE"),
        (&sub_order, json!({}), 409, "NOT_REFUNDABLE"),
        ("ord_000000000000000000000000", json!({}), 404, "NOT_FOUND"),
        (&paid, json!({"amount": 0}), 400, "VALIDATION_ERROR"),
        (&paid, json!({"amount": -5}), 400, "VALIDATION_ERROR"),
        (&paid, json!({"amount": 500}), 400, "VALIDATION_ERROR"),
        (&paid, json!({"amount": 1.5}), 400, "VALIDATION_ERROR"),
        (&paid, json!({"amount": "10"}), 400, "VALIDATION_ERROR"),
        (&paid, json!({"reason": ""}), 400, "VALIDATION_ERROR"),
        (&paid, json!({"reason": "a\u{0}b"}), 400, "VALIDATION_ERROR"),
        (
            &paid,
            json!({"reason": "r".repeat(501)}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            &paid,
            json!({"amount": 1, "when": "now"}),
            400,
            "VALIDATION_ERROR",
        ),
        (&paid, json!([100]), 400, "VALIDATION_ERROR"),
    ];
    for (order, body, want, code) in cases {
        let (status, answer) = refund(&app, order, body.clone(), &[]).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (want, Some(code)),
            "{order} {body}: {answer}"
        );
    }
    // An idempotency key too long for any provider.
    let long = "k".repeat(256);
    let (status, answer) = refund(&app, &paid, json!({}), &[("idempotency-key", &long)]).await;
    assert_eq!(status, 400, "{answer}");
    // A user's token; an operator of another app.
    let path = format!("/admin/orders/{paid}/refund");
    let (status, _, _) = app
        .post(&path, &app_token("alice", "default", None), json!({}))
        .await;
    assert_eq!(status, 403);
    let (status, _, _) = app
        .post(&path, &app_token("ops", "other", Some("admin")), json!({}))
        .await;
    assert_eq!(status, 404);

    assert!(stripe.requests_to("/v1/refunds").is_empty(), "nobody asked");
    let after = (
        app.balance("alice").await,
        app.balance("bob").await,
        orders(&app, "alice").await,
        events(&app).await.len(),
    );
    assert_eq!(after, before);
    app.finish().await;
}
