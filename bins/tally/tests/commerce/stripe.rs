//! Stripe: the exact requests Tally sends, and whole flows driven by signed webhooks —
//! duplicated, reordered and delivered concurrently.

use serde_json::{Value, json};

use crate::common::{Db, TestApp, app_token};
use crate::doubles::{self, stripe_signature};
use crate::{
    STRIPE_KEY, STRIPE_WHSEC, create_session, deliver, events, now_unix, orders, seed_plans, spawn,
    subscription,
};

backend_tests!(
    subscription_lifecycle,
    credit_pack_and_refunds,
    concurrent_deliveries_apply_once,
    reordered_first_payment_grants_once,
    provider_errors_fail_the_order,
    signatures_are_checked,
    coupon_and_portal,
);

pub(crate) fn event(id: &str, event_type: &str, created: i64, object: Value) -> String {
    json!({
        "id": id, "object": "event", "type": event_type, "created": created,
        "api_version": "2026-10-28.endive", "livemode": false,
        "data": {"object": object},
    })
    .to_string()
}

pub(crate) async fn send(app: &TestApp, body: &str) -> (u16, Value) {
    let sig = stripe_signature(STRIPE_WHSEC, now_unix(app), body);
    deliver(app, "stripe", &[("stripe-signature", &sig)], body).await
}

pub(crate) fn checkout_completed(session: &str, order: &str, mode: &str, extra: Value) -> Value {
    let mut object = json!({
        "id": session, "object": "checkout.session", "mode": mode, "status": "complete",
        "payment_status": "paid", "client_reference_id": order,
        "metadata": {"order_id": order, "app": "default"},
        "customer": "cus_alice", "amount_total": 999, "currency": "usd",
    });
    for (k, v) in extra.as_object().unwrap() {
        object[k] = v.clone();
    }
    object
}

pub(crate) fn invoice_paid(invoice: &str, sub: &str, order: &str, start: i64, end: i64) -> Value {
    json!({
        "id": invoice, "object": "invoice", "billing_reason": "subscription_cycle",
        "customer": "cus_alice", "status": "paid", "amount_paid": 999, "currency": "usd",
        "parent": {"type": "subscription_details", "subscription_details": {
            "subscription": sub, "metadata": {"order_id": order}}},
        "lines": {"object": "list", "data": [{"period": {"start": start, "end": end}}]},
    })
}

pub(crate) fn subscription_object(
    sub: &str,
    order: &str,
    status: &str,
    cancel: bool,
    end: i64,
) -> Value {
    json!({
        "id": sub, "object": "subscription", "status": status, "customer": "cus_alice",
        "cancel_at_period_end": cancel, "metadata": {"order_id": order},
        "items": {"object": "list", "data": [{"current_period_start": end - 2_592_000,
            "current_period_end": end}]},
    })
}

pub(crate) async fn subscribe(app: &TestApp, user: &str, plan: &str) -> String {
    let (status, body) = create_session(
        app,
        user,
        json!({"channel": "stripe", "type": "subscription", "plan_id": plan,
            "success_url": "https://app.example/ok", "cancel_url": "https://app.example/billing"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["order_id"].as_str().unwrap().to_owned()
}

async fn subscription_lifecycle(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let watcher = crate::watch(&app).await;
    let (pro, _) = seed_plans(&app).await;

    let (status, body) = create_session(
        &app,
        "alice",
        json!({"channel": "stripe", "type": "subscription", "plan_id": pro,
            "success_url": "https://app.example/ok?session={CHECKOUT_SESSION_ID}",
            "cancel_url": "https://app.example/billing"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let order = body["data"]["order_id"].as_str().unwrap().to_owned();
    let session = body["data"]["session_id"].as_str().unwrap().to_owned();
    assert!(order.starts_with("ord_"));
    assert_eq!(
        body["data"]["url"],
        format!("https://checkout.stripe.com/c/pay/{session}")
    );

    // Exactly what Stripe received.
    let sent = stripe.requests_to("/v1/checkout/sessions");
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.headers["authorization"], format!("Bearer {STRIPE_KEY}"));
    assert_eq!(r.headers["stripe-version"], "2026-10-28.endive");
    assert_eq!(
        r.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        r.headers["idempotency-key"],
        format!("tally-checkout-{order}")
    );
    let form = r.form();
    assert_eq!(form["mode"], "subscription");
    assert_eq!(form["line_items[0][price]"], "price_pro_m");
    assert_eq!(form["line_items[0][quantity]"], "1");
    assert_eq!(
        form["success_url"],
        "https://app.example/ok?session={CHECKOUT_SESSION_ID}"
    );
    assert_eq!(form["cancel_url"], "https://app.example/billing");
    assert_eq!(form["client_reference_id"], order);
    assert_eq!(form["metadata[order_id]"], order);
    assert_eq!(form["metadata[user_id]"], "alice");
    assert_eq!(form["metadata[app]"], "default");
    assert_eq!(form["subscription_data[metadata][order_id]"], order);
    assert_eq!(form["subscription_data[metadata][user_id]"], "alice");
    assert!(!form.contains_key("payment_intent_data[metadata][order_id]"));
    assert!(!form.contains_key("customer"), "no customer known yet");

    let orders_now = orders(&app, "alice").await;
    assert_eq!(orders_now[0]["status"], "pending");
    assert_eq!(orders_now[0]["amount"], 999);

    // First payment: Stripe sends the checkout completion and the first invoice.
    let t0 = now_unix(&app);
    let t1 = t0 + 30 * 86_400;
    let t2 = t1 + 30 * 86_400;
    let completed = event(
        "evt_cs",
        "checkout.session.completed",
        t0,
        checkout_completed(
            &session,
            &order,
            "subscription",
            json!({"subscription": "sub_1"}),
        ),
    );
    let (status, ack) = send(&app, &completed).await;
    assert_eq!(
        (status, ack["data"]["outcome"].as_str()),
        (200, Some("applied")),
        "{ack}"
    );
    assert_eq!(
        app.balance("alice").await,
        0,
        "checkout completion grants no period"
    );
    let paid = event(
        "evt_in1",
        "invoice.paid",
        t0 + 1,
        invoice_paid("in_1", "sub_1", &order, t0, t1),
    );
    assert_eq!(send(&app, &paid).await.0, 200);
    assert_eq!(app.balance("alice").await, 1000);
    // Redelivered: nothing more.
    let (status, ack) = send(&app, &paid).await;
    assert_eq!(
        (status, ack["data"]["outcome"].as_str()),
        (200, Some("duplicate"))
    );
    // Another event about the same invoice (e.g. a resend under a new id): still once.
    let same_invoice = event(
        "evt_in1_again",
        "invoice.paid",
        t0 + 2,
        invoice_paid("in_1", "sub_1", &order, t0, t1),
    );
    assert_eq!(send(&app, &same_invoice).await.0, 200);
    assert_eq!(app.balance("alice").await, 1000);

    let sub = subscription(&app, "alice").await;
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["plan_id"], pro);
    assert_eq!(sub["channel"], "stripe");
    assert_eq!(sub["cancel_at_period_end"], false);
    let order_row = &orders(&app, "alice").await[0];
    assert_eq!(order_row["status"], "completed");
    assert!(order_row["completed_at"].is_string());

    // Renewal: a new invoice, a second grant, the period moves forward.
    let renewal = event(
        "evt_in2",
        "invoice.paid",
        t1,
        invoice_paid("in_2", "sub_1", &order, t1, t2),
    );
    assert_eq!(send(&app, &renewal).await.0, 200);
    assert_eq!(app.balance("alice").await, 2000);
    let sub = subscription(&app, "alice").await;
    let end = time::OffsetDateTime::from_unix_timestamp(t2).unwrap();
    assert_eq!(
        sub["current_period_end"],
        end.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    // A late redelivery of the first invoice does not move the period back.
    assert_eq!(send(&app, &paid).await.0, 200);
    assert_eq!(
        subscription(&app, "alice").await["current_period_end"],
        sub["current_period_end"]
    );

    // Cancel at period end, then the end.
    let scheduled = event(
        "evt_upd",
        "customer.subscription.updated",
        t1 + 10,
        subscription_object("sub_1", &order, "active", true, t2),
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
    let deleted = event(
        "evt_del",
        "customer.subscription.deleted",
        t2,
        subscription_object("sub_1", &order, "canceled", true, t2),
    );
    assert_eq!(send(&app, &deleted).await.0, 200);
    assert_eq!(subscription(&app, "alice").await["status"], "canceled");
    // An older update arriving late does not revive it.
    let stale = event(
        "evt_upd_old",
        "customer.subscription.updated",
        t1 + 5,
        subscription_object("sub_1", &order, "active", false, t2),
    );
    let (status, ack) = send(&app, &stale).await;
    assert_eq!(status, 200);
    assert_eq!(ack["data"]["outcome"], "ignored");
    assert_eq!(subscription(&app, "alice").await["status"], "canceled");
    assert_eq!(
        app.balance("alice").await,
        2000,
        "credits already granted stay"
    );

    // An event type Tally does not act on: 200, recorded as ignored.
    let other = event(
        "evt_other",
        "customer.created",
        t2,
        json!({"id": "cus_x", "object": "customer"}),
    );
    let (status, ack) = send(&app, &other).await;
    assert_eq!(
        (status, ack["data"]["outcome"].as_str()),
        (200, Some("ignored"))
    );
    let recorded = events(&app).await;
    assert!(
        recorded
            .iter()
            .any(|e| e["event_id"] == "evt_other" && e["outcome"] == "ignored")
    );
    assert!(
        recorded
            .iter()
            .any(|e| e["event_id"] == "evt_in2" && e["outcome"] == "applied")
    );
    // The host app was told each change once, in the provider's transaction.
    let told = crate::outbound(&watcher, 7).await;
    let types: std::collections::BTreeMap<&str, usize> =
        told.iter().fold(Default::default(), |mut m, (t, _)| {
            *m.entry(t.as_str()).or_default() += 1;
            m
        });
    assert_eq!(
        types,
        std::collections::BTreeMap::from([
            ("credits.granted", 2),
            ("order.completed", 1),
            ("subscription.canceled", 1),
            ("subscription.created", 1),
            ("subscription.renewed", 1),
            ("subscription.updated", 1),
        ])
    );
    let data = |t: &str| told.iter().find(|(x, _)| x == t).unwrap().1.clone();
    assert_eq!(data("order.completed")["order_id"], order.as_str());
    assert_eq!(data("subscription.renewed")["payment_id"], "in_2");
    assert_eq!(data("subscription.updated")["cancel_at_period_end"], true);
    assert_eq!(data("subscription.canceled")["previous_status"], "active");
    app.finish().await;
}

async fn credit_pack_and_refunds(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let watcher = crate::watch(&app).await;
    let (_, pack) = seed_plans(&app).await;
    let (status, body) = create_session(
        &app,
        "alice",
        json!({"channel": "stripe", "type": "credits", "plan_id": pack,
            "success_url": "https://shop.example.org/thanks"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let order = body["data"]["order_id"].as_str().unwrap().to_owned();
    let session = body["data"]["session_id"].as_str().unwrap().to_owned();
    let form = stripe.requests_to("/v1/checkout/sessions")[0].form();
    assert_eq!(form["mode"], "payment");
    assert_eq!(form["line_items[0][price]"], "price_pack");
    assert_eq!(form["payment_intent_data[metadata][order_id]"], order);
    assert!(!form.contains_key("subscription_data[metadata][order_id]"));
    assert!(!form.contains_key("cancel_url"));

    let t = now_unix(&app);
    let completed = event(
        "evt_pack",
        "checkout.session.completed",
        t,
        checkout_completed(
            &session,
            &order,
            "payment",
            json!({"payment_intent": "pi_1", "amount_total": 499}),
        ),
    );
    assert_eq!(send(&app, &completed).await.0, 200);
    assert_eq!(send(&app, &completed).await.0, 200);
    assert_eq!(app.balance("alice").await, 500);
    let purchases = app.rows_of_type("purchase").await;
    assert_eq!(purchases.len(), 1);
    assert_eq!(purchases[0]["amount"], 500);

    // Spend most of it, then refunds: half, then the rest — the balance goes negative.
    let (status, _, _) = app.consume("alice", 400, "spend-1").await;
    assert_eq!(status, 200);
    let charge = |refunded: i64| {
        json!({"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount": 499,
            "amount_refunded": refunded, "refunded": refunded >= 499, "currency": "usd"})
    };
    let half = event("evt_ref1", "charge.refunded", t + 10, charge(250));
    let (status, ack) = send(&app, &half).await;
    assert_eq!(
        (status, ack["data"]["outcome"].as_str()),
        (200, Some("applied")),
        "{ack}"
    );
    assert_eq!(app.balance("alice").await, 100 - 250);
    // The same refund again (new event id, same cumulative amount): once.
    let half_again = event("evt_ref1b", "charge.refunded", t + 11, charge(250));
    assert_eq!(send(&app, &half_again).await.0, 200);
    assert_eq!(app.balance("alice").await, -150);
    let full = event("evt_ref2", "charge.refunded", t + 20, charge(499));
    assert_eq!(send(&app, &full).await.0, 200);
    assert_eq!(
        app.balance("alice").await,
        -400,
        "a full refund takes back all 500"
    );
    let refunds = app.rows_of_type("refund").await;
    let clawed: i64 = refunds.iter().map(|r| r["amount"].as_i64().unwrap()).sum();
    assert_eq!(clawed, -500);
    assert_eq!(orders(&app, "alice").await[0]["status"], "refunded");

    // The debt is repaid first by the next grant.
    app.admin_grant("alice", 1000).await;
    assert_eq!(app.balance("alice").await, 600);
    // Two refunds applied, two `order.refunded`; the repeated one told nothing.
    let told = crate::outbound(&watcher, 5).await;
    let refunds: Vec<_> = told.iter().filter(|(t, _)| t == "order.refunded").collect();
    assert_eq!(refunds.len(), 2, "{told:#?}");
    let mut amounts: Vec<_> = refunds
        .iter()
        .map(|(_, d)| {
            (
                d["refunded_minor"].as_i64(),
                d["credits_clawed_back"].as_i64(),
            )
        })
        .collect();
    amounts.sort();
    assert_eq!(amounts, [(Some(249), Some(250)), (Some(250), Some(250))]);
    assert!(refunds.iter().all(|(_, d)| d["order_id"] == order.as_str()));
    assert_eq!(
        told.iter().filter(|(t, _)| t == "order.completed").count(),
        1
    );
    assert_eq!(
        told.iter().filter(|(t, _)| t == "credits.granted").count(),
        2
    );
    assert_eq!(told.len(), 5);
    app.finish().await;
}

async fn concurrent_deliveries_apply_once(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let (pro, _) = seed_plans(&app).await;
    let order = subscribe(&app, "alice", &pro).await;
    let t = now_unix(&app);
    let paid = event(
        "evt_conc",
        "invoice.paid",
        t,
        invoice_paid("in_c", "sub_c", &order, t, t + 2_592_000),
    );
    let sig = stripe_signature(STRIPE_WHSEC, t, &paid);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (client, address, body, sig) = (
            app.client.clone(),
            app.address.clone(),
            paid.clone(),
            sig.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{address}/payment/webhook/stripe"))
                .header("stripe-signature", sig)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (
                status,
                body["data"]["outcome"].as_str().unwrap_or("").to_owned(),
            )
        }));
    }
    let mut applied = 0;
    for t in tasks {
        let (status, outcome) = t.await.unwrap();
        assert_eq!(status, 200);
        match outcome.as_str() {
            "applied" => applied += 1,
            "duplicate" => {}
            other => panic!("unexpected outcome {other}"),
        }
    }
    assert_eq!(applied, 1, "exactly one delivery applies");
    assert_eq!(app.balance("alice").await, 1000);
    assert_eq!(app.rows_of_type("subscription").await.len(), 1);
    let recorded = events(&app).await;
    assert_eq!(
        recorded
            .iter()
            .filter(|e| e["event_id"] == "evt_conc")
            .count(),
        1
    );
    app.finish().await;
}

async fn reordered_first_payment_grants_once(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let (pro, _) = seed_plans(&app).await;
    let order = subscribe(&app, "bob", &pro).await;
    let session = stripe.requests_to("/v1/checkout/sessions").len() - 1;
    let session = format!("cs_test_{session}");
    let t = now_unix(&app);
    // The subscription update arrives first, then the invoice, then the checkout completion.
    let created = event(
        "evt_sub_created",
        "customer.subscription.created",
        t,
        subscription_object("sub_b", &order, "active", false, t + 2_592_000),
    );
    assert_eq!(send(&app, &created).await.0, 200);
    let paid = event(
        "evt_in_b",
        "invoice.paid",
        t + 1,
        invoice_paid("in_b", "sub_b", &order, t, t + 2_592_000),
    );
    assert_eq!(send(&app, &paid).await.0, 200);
    let completed = event(
        "evt_cs_b",
        "checkout.session.completed",
        t + 2,
        checkout_completed(
            &session,
            &order,
            "subscription",
            json!({"subscription": "sub_b", "customer": "cus_bob"}),
        ),
    );
    assert_eq!(send(&app, &completed).await.0, 200);
    assert_eq!(app.balance("bob").await, 1000);
    assert_eq!(subscription(&app, "bob").await["status"], "active");
    assert_eq!(orders(&app, "bob").await[0]["status"], "completed");
    // An event naming nothing Tally knows is recorded as unmatched, answered 200.
    let stranger = event(
        "evt_stranger",
        "invoice.paid",
        t,
        invoice_paid("in_x", "sub_unknown", "ord_unknown", t, t + 1),
    );
    let (status, ack) = send(&app, &stranger).await;
    assert_eq!(
        (status, ack["data"]["outcome"].as_str()),
        (200, Some("unmatched"))
    );
    app.finish().await;
}

async fn provider_errors_fail_the_order(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let admin = crate::common::admin_token("root");
    let (status, broken, _) = app
        .post(
            "/admin/billing/plans",
            &admin,
            json!({"name": "Broken", "kind": "credit_pack", "currency": "usd", "price": 100,
                "credits_included": 10, "stripe_price_id": "price_broken"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, slow, _) = app
        .post(
            "/admin/billing/plans",
            &admin,
            json!({"name": "Slow", "kind": "credit_pack", "currency": "usd", "price": 100,
                "credits_included": 10, "stripe_price_id": "price_slow"}),
        )
        .await;
    assert_eq!(status, 200);
    for (plan, needle) in [(&broken, "No such price"), (&slow, "")] {
        let (status, body) = create_session(
            &app,
            "alice",
            json!({"channel": "stripe", "type": "credits", "plan_id": plan["data"]["id"],
                "success_url": "https://app.example/ok"}),
        )
        .await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"]["code"], "PROVIDER_ERROR");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
        assert!(
            !body.to_string().contains(crate::STRIPE_KEY),
            "never leaks the key"
        );
    }
    let all = orders(&app, "alice").await;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|o| o["status"] == "failed"), "{all:?}");
    // A 400 is not retried; a timeout is, up to the bound (2 attempts).
    let sent = stripe.requests_to("/v1/checkout/sessions");
    assert_eq!(sent.len(), 3, "1 for the 400, 2 for the timeout");
    assert_eq!(
        sent[1].headers["idempotency-key"],
        sent[2].headers["idempotency-key"]
    );
    assert_eq!(app.balance("alice").await, 0);
    app.finish().await;
}

async fn signatures_are_checked(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let (pro, _) = seed_plans(&app).await;
    let order = subscribe(&app, "alice", &pro).await;
    let t = now_unix(&app);
    let body = event(
        "evt_sig",
        "invoice.paid",
        t,
        invoice_paid("in_s", "sub_s", &order, t, t + 100),
    );
    let good = stripe_signature(STRIPE_WHSEC, t, &body);
    let tampered = body.replace("999", "99999");
    let stale = stripe_signature(STRIPE_WHSEC, t - 301, &body);
    let wrong = stripe_signature("whsec_wrong", t, &body);
    let junk = format!("t={t},v1=zzzz-not-hex");
    let v0_only = good.replace("v1=", "v0=");
    let cases: Vec<(Option<&str>, &str)> = vec![
        (None, &body),
        (Some(&good), &tampered),
        (Some(&stale), &body),
        (Some(&wrong), &body),
        (Some(&junk), &body),
        (Some(&v0_only), &body),
        (Some(""), &body),
    ];
    for (sig, payload) in cases {
        let headers: Vec<(&str, &str)> = sig.iter().map(|s| ("stripe-signature", *s)).collect();
        let (status, reply) = deliver(&app, "stripe", &headers, payload).await;
        assert_eq!(status, 400, "{sig:?}: {reply}");
        assert_eq!(reply["error"]["code"], "INVALID_SIGNATURE");
    }
    assert!(events(&app).await.is_empty(), "nothing recorded");
    assert_eq!(app.balance("alice").await, 0);
    // Several v1 values (a rolled secret): one match is enough.
    let rolled = format!("{},v1={}", wrong, good.split("v1=").nth(1).unwrap());
    let (status, ack) = deliver(&app, "stripe", &[("stripe-signature", &rolled)], &body).await;
    assert_eq!(
        (status, ack["data"]["outcome"].as_str()),
        (200, Some("applied")),
        "{ack}"
    );
    assert_eq!(app.balance("alice").await, 1000);
    // A channel that is not configured, and an unknown one.
    let (status, reply) = deliver(&app, "creem", &[("creem-signature", "00")], &body).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (422, Some("PROVIDER_NOT_CONFIGURED"))
    );
    let (status, _) = deliver(&app, "paypal", &[], &body).await;
    assert_eq!(status, 404);
    app.finish().await;
}

async fn coupon_and_portal(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let (pro, _) = seed_plans(&app).await;
    let admin = crate::common::admin_token("root");
    let (status, body, _) = app
        .post(
            "/admin/billing/coupons",
            &admin,
            json!({"code": "half", "percent_off": 50, "duration": "once", "max_redemptions": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // No customer yet: the portal answers a clear 404.
    let user = app_token("alice", "default", None);
    let (status, body, _) = app
        .post(
            "/subscription/portal",
            &user,
            json!({"return_url": "https://app.example/billing"}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (404, Some("NO_BILLING_CUSTOMER"))
    );

    let (status, body) = create_session(
        &app,
        "alice",
        json!({"channel": "stripe", "type": "subscription", "plan_id": pro, "interval": "year",
            "coupon_code": "HALF", "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let order = body["data"]["order_id"].as_str().unwrap().to_owned();
    let coupons = stripe.requests_to("/v1/coupons");
    assert_eq!(coupons.len(), 1);
    let c = coupons[0].form();
    assert_eq!(c["percent_off"], "50");
    assert_eq!(c["duration"], "once");
    let form = stripe.requests_to("/v1/checkout/sessions")[0].form();
    assert_eq!(form["line_items[0][price]"], "price_pro_y");
    assert_eq!(form["discounts[0][coupon]"], "stripe_coupon_0");
    let o = &orders(&app, "alice").await[0];
    assert_eq!(
        (o["amount"].as_i64(), o["discount_amount"].as_i64()),
        (Some(9990), Some(4995))
    );
    assert_eq!(o["coupon_code"], "HALF");

    let t = now_unix(&app);
    let session = form_session(&stripe);
    let completed = event(
        "evt_cs_c",
        "checkout.session.completed",
        t,
        checkout_completed(
            &session,
            &order,
            "subscription",
            json!({"subscription": "sub_y"}),
        ),
    );
    assert_eq!(send(&app, &completed).await.0, 200);
    // The coupon counted once; its one redemption is used up.
    let (_, list, _) = app.get("/admin/billing/coupons", &admin).await;
    assert_eq!(list["data"][0]["times_redeemed"], 1);
    let (status, body) = create_session(
        &app,
        "bob",
        json!({"channel": "stripe", "type": "subscription", "plan_id": pro, "coupon_code": "half",
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("COUPON_INVALID"))
    );

    // Now Alice has a Stripe customer: the portal opens for it.
    let (status, body, _) = app
        .post(
            "/subscription/portal",
            &user,
            json!({"return_url": "https://app.example/billing"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["url"],
        "https://billing.stripe.com/p/session/test_1"
    );
    let portal = stripe.requests_to("/v1/billing_portal/sessions")[0].form();
    assert_eq!(portal["customer"], "cus_alice");
    assert_eq!(portal["return_url"], "https://app.example/billing");
    // Her next checkout reuses the customer.
    let (status, _) = create_session(
        &app,
        "alice",
        json!({"channel": "stripe", "type": "credits", "plan_id": seed_pack_id(&app).await,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200);
    let last = stripe
        .requests_to("/v1/checkout/sessions")
        .pop()
        .unwrap()
        .form();
    assert_eq!(last["customer"], "cus_alice");
    app.finish().await;
}

fn form_session(stripe: &doubles::Double) -> String {
    let n = stripe.requests_to("/v1/checkout/sessions").len() - 1;
    let index = stripe
        .requests()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.path == "/v1/checkout/sessions")
        .nth(n)
        .map(|(i, _)| i)
        .unwrap();
    format!("cs_test_{index}")
}

async fn seed_pack_id(app: &TestApp) -> String {
    let (_, body, _) = app
        .get("/subscription/plans", &app_token("alice", "default", None))
        .await;
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "credit_pack")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}
