//! Creem: the exact requests Tally sends, and a subscription paid, renewed and refunded through
//! signed Creem webhooks.

use serde_json::{Value, json};

use crate::common::{Db, TestApp};
use crate::doubles::{self, hmac_hex};
use crate::{
    CREEM_KEY, CREEM_WHSEC, create_session, deliver, events, now_unix, orders, seed_plans, spawn,
    subscription,
};

backend_tests!(creem_subscription_flow, creem_signatures_are_checked);

pub(crate) fn event(id: &str, event_type: &str, created_ms: i64, object: Value) -> String {
    json!({"id": id, "eventType": event_type, "created_at": created_ms, "object": object})
        .to_string()
}

pub(crate) async fn send(app: &TestApp, body: &str) -> (u16, Value) {
    let sig = hmac_hex(CREEM_WHSEC, body);
    deliver(app, "creem", &[("creem-signature", &sig)], body).await
}

fn iso(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

pub(crate) fn paid(sub: &str, order: &str, transaction: &str, start: i64, end: i64) -> Value {
    json!({
        "id": sub, "object": "subscription", "status": "active",
        "customer": {"id": "cust_alice", "email": "alice@example.com"},
        "product": {"id": "prod_pro_m", "price": 999},
        "last_transaction_id": transaction, "current_period_start_date": iso(start),
        "current_period_end_date": iso(end), "metadata": {"order_id": order},
    })
}

async fn creem_subscription_flow(db: Db) {
    let creem = doubles::creem().await;
    let app = spawn(db, None, Some(&creem)).await;
    let (pro, _) = seed_plans(&app).await;

    // The yearly interval has no Creem product: not purchasable, no order, no call.
    let (status, body) = create_session(
        &app,
        "alice",
        json!({"channel": "creem", "type": "subscription", "plan_id": pro, "interval": "year",
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("PLAN_NOT_PURCHASABLE"))
    );
    assert!(creem.requests().is_empty());
    assert!(orders(&app, "alice").await.is_empty());

    let (status, body) = create_session(
        &app,
        "alice",
        json!({"channel": "creem", "type": "subscription", "plan_id": pro,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let order = body["data"]["order_id"].as_str().unwrap().to_owned();
    assert_eq!(body["data"]["session_id"], "ch_0");
    assert_eq!(body["data"]["url"], "https://checkout.creem.io/ch_0");
    let sent = creem.requests_to("/v1/checkouts");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "POST");
    assert_eq!(sent[0].headers["x-api-key"], CREEM_KEY);
    assert!(sent[0].headers["content-type"].starts_with("application/json"));
    let json = sent[0].json();
    assert_eq!(json["product_id"], "prod_pro_m");
    assert_eq!(json["request_id"], order);
    assert_eq!(json["success_url"], "https://app.example/ok");
    assert_eq!(json["metadata"]["order_id"], order);
    assert_eq!(json["metadata"]["user_id"], "alice");
    assert!(json.get("discount_code").is_none_or(Value::is_null));

    let t = now_unix(&app);
    let (t1, t2) = (t + 30 * 86_400, t + 60 * 86_400);
    let completed = event(
        "evt_c1",
        "checkout.completed",
        t * 1000,
        json!({
            "id": "ch_0", "object": "checkout", "status": "completed", "request_id": order,
            "order": {"id": "ord_creem_1", "transaction": "tran_1", "status": "paid",
                "amount": 999, "currency": "USD", "type": "recurring"},
            "customer": {"id": "cust_alice", "email": "alice@example.com"},
            "subscription": {"id": "sub_c", "object": "subscription", "metadata": {"order_id": order}},
            "metadata": {"order_id": order},
        }),
    );
    assert_eq!(send(&app, &completed).await.0, 200);
    let first = event(
        "evt_p1",
        "subscription.paid",
        t * 1000 + 1,
        paid("sub_c", &order, "tran_1", t, t1),
    );
    let (status, ack) = send(&app, &first).await;
    assert_eq!(
        (status, ack["data"]["outcome"].as_str()),
        (200, Some("applied")),
        "{ack}"
    );
    assert_eq!(send(&app, &first).await.1["data"]["outcome"], "duplicate");
    assert_eq!(app.balance("alice").await, 1000);
    assert_eq!(orders(&app, "alice").await[0]["status"], "completed");
    assert_eq!(subscription(&app, "alice").await["status"], "active");

    let renewal = event(
        "evt_p2",
        "subscription.paid",
        t1 * 1000,
        paid("sub_c", &order, "tran_2", t1, t2),
    );
    assert_eq!(send(&app, &renewal).await.0, 200);
    assert_eq!(app.balance("alice").await, 2000);

    let scheduled = event(
        "evt_sc",
        "subscription.scheduled_cancel",
        t1 * 1000 + 5,
        json!({"id": "sub_c", "object": "subscription", "status": "scheduled_cancel",
            "customer": "cust_alice", "current_period_end_date": iso(t2),
            "metadata": {"order_id": order}}),
    );
    assert_eq!(send(&app, &scheduled).await.0, 200);
    let sub = subscription(&app, "alice").await;
    assert_eq!(
        (
            sub["status"].as_str(),
            sub["cancel_at_period_end"].as_bool()
        ),
        (Some("active"), Some(true))
    );

    // The renewal is refunded in part: 1000 credits × 500 / 999 → 500 taken back.
    let refund = event(
        "evt_r1",
        "refund.created",
        t1 * 1000 + 10,
        json!({"id": "ref_1", "object": "refund", "status": "succeeded", "refund_amount": 500,
            "refund_currency": "USD", "transaction": {"id": "tran_2", "amount_paid": 999},
            "subscription": {"id": "sub_c"}, "customer": {"id": "cust_alice"}}),
    );
    assert_eq!(send(&app, &refund).await.0, 200);
    assert_eq!(send(&app, &refund).await.0, 200);
    assert_eq!(app.balance("alice").await, 1500);

    let canceled = event(
        "evt_cx",
        "subscription.canceled",
        t2 * 1000,
        json!({"id": "sub_c", "object": "subscription", "status": "canceled",
            "customer": "cust_alice", "metadata": {"order_id": order}}),
    );
    assert_eq!(send(&app, &canceled).await.0, 200);
    assert_eq!(subscription(&app, "alice").await["status"], "canceled");

    // The portal is Creem's customer billing link.
    let (status, body, _) = app
        .post(
            "/subscription/portal",
            &crate::common::app_token("alice", "default", None),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["url"], "https://creem.io/my-orders/login/xyz");
    assert_eq!(
        creem.requests_to("/v1/customers/billing")[0].json()["customer_id"],
        "cust_alice"
    );
    assert_eq!(events(&app).await.len(), 6);
    app.finish().await;
}

async fn creem_signatures_are_checked(db: Db) {
    let creem = doubles::creem().await;
    let app = spawn(db, None, Some(&creem)).await;
    // The known-answer vector of the reference, with its secret, is what the provider checks.
    let body = r#"{"id":"evt_test","eventType":"checkout.completed","created_at":1728734325927,"object":{"id":"ch_test","object":"checkout"}}"#;
    assert_eq!(
        hmac_hex("whsec_creem_test", body),
        "152ee38d44b02e4fe67f36985d67bce634c97ffc9d08d48dc04ccb812a3c4706"
    );
    let good = hmac_hex(CREEM_WHSEC, body);
    let wrong = hmac_hex("whsec_other", body);
    let tampered = body.replace("ch_test", "ch_evil");
    let cases: Vec<(Option<&str>, &str)> = vec![
        (None, body),
        (Some(&wrong), body),
        (Some(&good), &tampered),
        (Some("not-hex"), body),
        (Some(""), body),
        (Some(&good[..32]), body),
    ];
    for (sig, payload) in cases {
        let headers: Vec<(&str, &str)> = sig.iter().map(|s| ("creem-signature", *s)).collect();
        let (status, reply) = deliver(&app, "creem", &headers, payload).await;
        assert_eq!(status, 400, "{sig:?}: {reply}");
        assert_eq!(reply["error"]["code"], "INVALID_SIGNATURE");
    }
    assert!(events(&app).await.is_empty());
    // The right signature: recorded (it names no order Tally knows).
    let (status, ack) = deliver(&app, "creem", &[("creem-signature", &good)], body).await;
    assert_eq!(
        (status, ack["data"]["outcome"].as_str()),
        (200, Some("unmatched")),
        "{ack}"
    );
    app.finish().await;
}
