//! Changing plans (`GET /subscription/change-preview`, `POST /subscription/change`): through the
//! sandbox, against the Stripe and Creem doubles (the exact calls, and the credits following the
//! provider's signed events, once and in any order), and refused changes that change nothing.

use serde_json::{Value, json};

use crate::common::{Db, TestApp, admin_token, app_token};
use crate::doubles;
use crate::lifecycle::{portal_url, sandbox_subscribe, stripe_subscriber};
use crate::stripe::{
    checkout_completed, event, invoice_paid, send, subscribe, subscription_object,
};
use crate::{create_session, events, now_unix, seed_plans, spawn, subscription};

backend_tests!(
    sandbox_upgrade_then_downgrade,
    stripe_change_follows_the_provider,
    creem_change_asks_for_an_upgrade,
    refused_changes_change_nothing,
    portal_switches_plans,
    a_change_reported_after_its_renewal_ends_the_same,
);

const DAY: i64 = 86_400;

/// The `Basic` plan: 500 a month, 400 credits; answers its id.
async fn basic_plan(app: &TestApp, active: bool) -> String {
    let (status, body, _) = app
        .post(
            "/admin/billing/plans",
            &admin_token("root"),
            json!({
                "name": if active { "Basic" } else { "Old" }, "kind": "subscription",
                "currency": "usd", "price_monthly": 500, "credits_included": 400,
                "stripe_price_id_monthly": if active { "price_basic_m" } else { "price_old_m" },
                "creem_product_id_monthly": "prod_basic_m", "active": active,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["id"].as_str().unwrap().to_owned()
}

/// `GET /subscription/change-preview?{query}` as alice.
async fn preview(app: &TestApp, query: &str) -> (u16, Value) {
    let (status, body, _) = app
        .get(
            &format!("/subscription/change-preview?{query}"),
            &app_token("alice", "default", None),
        )
        .await;
    (status.as_u16(), body)
}

/// `POST /subscription/change` as alice, with optional extra headers.
async fn change(app: &TestApp, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, body, _) = app
        .request(
            reqwest::Method::POST,
            "/subscription/change",
            Some(&app_token("alice", "default", None)),
            headers,
            crate::common::Body::Json(body),
        )
        .await;
    (status.as_u16(), body)
}

async fn sandbox_upgrade_then_downgrade(db: Db) {
    let app = spawn(db, None, None).await;
    let (pro, _) = seed_plans(&app).await;
    let basic = basic_plan(&app, true).await;
    sandbox_subscribe(&app, "alice", &basic).await;
    assert_eq!(app.balance("alice").await, 400);
    // Half of the 31-day period (March) is left.
    app.clock.advance(time::Duration::seconds(31 * DAY / 2));

    let (status, body) = preview(&app, &format!("plan_id={pro}")).await;
    assert_eq!(status, 200, "{body}");
    let quote = &body["data"];
    assert_eq!(quote["direction"], "upgrade");
    assert_eq!(quote["current_plan_id"], basic.as_str());
    assert_eq!(quote["interval"], "month");
    assert_eq!(quote["price_minor"], 999);
    assert_eq!(
        quote["amount_due_now_minor"], 249,
        "half of 499, rounded down"
    );
    assert_eq!(quote["credits_now"], 300, "half of the 600 more credits");
    assert_eq!(quote["credits_per_period"], 1000);
    assert_eq!(quote["current_credits_per_period"], 400);

    let (status, body) = change(&app, json!({"plan_id": pro}), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["outcome"], "requested");
    assert_eq!(body["data"]["preview"]["credits_now"], 300);
    // The sandbox's event has arrived: switched, with the rest of the period's credits.
    assert_eq!(body["data"]["subscription"]["plan_id"], pro.as_str());
    assert_eq!(body["data"]["subscription"]["credits_per_period"], 1000);
    assert_eq!(app.balance("alice").await, 700);
    let grants: Vec<i64> = app
        .rows_of_type("subscription")
        .await
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(grants.len(), 2, "{grants:?}");
    assert!(grants.contains(&300) && grants.contains(&400), "{grants:?}");

    // Asked again: it is on that plan already; nothing is asked or granted.
    let recorded = events(&app).await.len();
    let (status, body) = change(&app, json!({"plan_id": pro}), &[]).await;
    assert_eq!(
        (
            status,
            body["error"]["details"]["fields"][0]["field"].as_str()
        ),
        (400, Some("plan_id")),
        "{body}"
    );
    assert_eq!(events(&app).await.len(), recorded);

    // Down again: no charge, nothing taken back; later periods grant Basic's 400.
    let (status, body) = preview(&app, &format!("plan_id={basic}&interval=month")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["direction"], "downgrade");
    assert_eq!(body["data"]["amount_due_now_minor"], 0);
    assert_eq!(body["data"]["credits_now"], 0);
    let (status, body) = change(&app, json!({"plan_id": basic}), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["subscription"]["plan_id"], basic.as_str());
    assert_eq!(body["data"]["subscription"]["credits_per_period"], 400);
    assert_eq!(app.balance("alice").await, 700);
    app.assert_verified().await;
    app.finish().await;
}

async fn stripe_change_follows_the_provider(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let (pro, _) = seed_plans(&app).await;
    let basic = basic_plan(&app, true).await;
    let order = stripe_subscriber(&app, &basic, "sub_up").await;
    let t0 = now_unix(&app);
    assert_eq!(app.balance("alice").await, 400);
    // Ten of the period's thirty days gone.
    app.clock.advance(time::Duration::days(10));
    let t = now_unix(&app);

    let (status, body) = change(
        &app,
        json!({"plan_id": pro, "interval": "month"}),
        &[("idempotency-key", "change-1")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["preview"]["direction"], "upgrade");
    assert_eq!(body["data"]["preview"]["credits_now"], 400, "20/30 of 600");
    // Tally follows Stripe: nothing switched before its event.
    assert_eq!(body["data"]["subscription"]["plan_id"], basic.as_str());
    let sent = stripe.requests_to("/v1/subscriptions/sub_up");
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(sent[0].method, "GET");
    assert_eq!(sent[1].method, "POST");
    assert_eq!(sent[1].headers["idempotency-key"], "change-1");
    let form = sent[1].form();
    assert_eq!(form["items[0][id]"], "si_sub_up");
    assert_eq!(form["items[0][price]"], "price_pro_m");
    assert_eq!(form["proration_behavior"], "always_invoice");
    assert_eq!(app.balance("alice").await, 400);

    // Stripe charges the proration: recorded as a payment, no period, no credits.
    let mut proration = invoice_paid("in_prorate", "sub_up", &order, t, t0 + 30 * DAY);
    proration["billing_reason"] = json!("subscription_update");
    proration["amount_paid"] = json!(332);
    let proration = event("evt_prorate", "invoice.paid", t, proration);
    let (status, ack) = send(&app, &proration).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(app.balance("alice").await, 400);
    assert_eq!(subscription(&app, "alice").await["plan_id"], basic.as_str());

    // Its subscription event switches the plan and grants 20/30 of the 600 more, once.
    let mut updated = subscription_object("sub_up", &order, "active", false, t0 + 30 * DAY);
    updated["items"]["data"][0]["price"] = json!({"id": "price_pro_m", "object": "price"});
    let switched = event(
        "evt_switch",
        "customer.subscription.updated",
        t,
        updated.clone(),
    );
    let (status, ack) = send(&app, &switched).await;
    assert_eq!(
        (status, ack["data"]["outcome"].as_str()),
        (200, Some("applied")),
        "{ack}"
    );
    assert_eq!(
        send(&app, &switched).await.1["data"]["outcome"],
        "duplicate"
    );
    let again = event(
        "evt_switch_2",
        "customer.subscription.updated",
        t + 1,
        updated,
    );
    assert_eq!(send(&app, &again).await.0, 200);
    assert_eq!(app.balance("alice").await, 800);
    let now = subscription(&app, "alice").await;
    assert_eq!(now["plan_id"], pro.as_str());
    assert_eq!(now["credits_per_period"], 1000);

    // An older event, naming the old price, arrives late: ignored.
    let mut stale = subscription_object("sub_up", &order, "active", false, t0 + 30 * DAY);
    stale["items"]["data"][0]["price"] = json!({"id": "price_basic_m", "object": "price"});
    let stale = event("evt_stale", "customer.subscription.updated", t - 60, stale);
    assert_eq!(send(&app, &stale).await.1["data"]["outcome"], "ignored");
    assert_eq!(subscription(&app, "alice").await["plan_id"], pro.as_str());

    // The renewal grants Pro's credits.
    let renewal = event(
        "evt_renew",
        "invoice.paid",
        t0 + 30 * DAY,
        invoice_paid("in_2", "sub_up", &order, t0 + 30 * DAY, t0 + 60 * DAY),
    );
    assert_eq!(send(&app, &renewal).await.0, 200);
    assert_eq!(app.balance("alice").await, 1800);

    // Down to Basic: no proration; when Stripe reports it, nothing is taken back.
    let (status, body) = change(&app, json!({"plan_id": basic}), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["preview"]["direction"], "downgrade");
    let sent = stripe.requests_to("/v1/subscriptions/sub_up");
    let form = sent.last().unwrap().form();
    assert_eq!(form["items[0][price]"], "price_basic_m");
    assert_eq!(form["proration_behavior"], "none");
    let mut down = subscription_object("sub_up", &order, "active", false, t0 + 60 * DAY);
    down["items"]["data"][0]["price"] = json!({"id": "price_basic_m", "object": "price"});
    let down = event(
        "evt_down",
        "customer.subscription.updated",
        t0 + 30 * DAY + 120,
        down,
    );
    assert_eq!(send(&app, &down).await.0, 200);
    assert_eq!(subscription(&app, "alice").await["plan_id"], basic.as_str());
    assert_eq!(app.balance("alice").await, 1800);
    app.assert_verified().await;
    app.finish().await;
}

async fn creem_change_asks_for_an_upgrade(db: Db) {
    let creem = doubles::creem().await;
    let app = spawn(db, None, Some(&creem)).await;
    let (pro, _) = seed_plans(&app).await;
    let basic = basic_plan(&app, true).await;
    let (status, body) = create_session(
        &app,
        "alice",
        json!({"channel": "creem", "type": "subscription", "plan_id": basic,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let order = body["data"]["order_id"].as_str().unwrap().to_owned();
    let t = now_unix(&app);
    let mut paid = crate::creem::paid("sub_c", &order, "tran_1", t, t + 30 * DAY);
    paid["product"] = json!({"id": "prod_basic_m", "price": 500});
    let paid = crate::creem::event("evt_p1", "subscription.paid", t * 1000, paid);
    assert_eq!(crate::creem::send(&app, &paid).await.0, 200);
    assert_eq!(subscription(&app, "alice").await["plan_id"], basic.as_str());

    let (status, body) = change(&app, json!({"plan_id": pro}), &[]).await;
    assert_eq!(status, 200, "{body}");
    let sent = creem.requests_to("/v1/subscriptions/sub_c/upgrade");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].headers["x-api-key"], crate::CREEM_KEY);
    assert_eq!(
        sent[0].json(),
        json!({"product_id": "prod_pro_m", "update_behavior": "proration-charge-immediately"})
    );
    // Creem's `subscription.update` names the new product: switched, with the extra credits.
    let mut update = crate::creem::paid("sub_c", &order, "tran_1", t, t + 30 * DAY);
    update["product"] = json!({"id": "prod_pro_m"});
    let update = crate::creem::event("evt_u1", "subscription.update", t * 1000, update);
    assert_eq!(crate::creem::send(&app, &update).await.0, 200);
    assert_eq!(subscription(&app, "alice").await["plan_id"], pro.as_str());
    assert_eq!(app.balance("alice").await, 400 + 600);
    app.assert_verified().await;
    app.finish().await;
}

async fn refused_changes_change_nothing(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let (pro, pack) = seed_plans(&app).await;
    let basic = basic_plan(&app, true).await;
    let old = basic_plan(&app, false).await;
    // No subscription yet.
    let (status, body) = preview(&app, &format!("plan_id={pro}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NO_ACTIVE_SUBSCRIPTION"))
    );
    let (status, body) = change(&app, json!({"plan_id": pro}), &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NO_ACTIVE_SUBSCRIPTION"))
    );
    // Stripe does not know this subscription: asking fails.
    stripe_subscriber(&app, &basic, "sub_gone").await;
    let before = (
        subscription(&app, "alice").await,
        app.balance("alice").await,
        events(&app).await.len(),
    );
    let cases = [
        (json!({"plan_id": basic}), 400, "VALIDATION_ERROR"),
        (json!({"plan_id": pack}), 400, "VALIDATION_ERROR"),
        (
            json!({"plan_id": pro, "interval": "year"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            json!({"plan_id": pro, "interval": "weekly"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            json!({"plan_id": pro, "when": "now"}),
            400,
            "VALIDATION_ERROR",
        ),
        (json!({}), 400, "VALIDATION_ERROR"),
        (json!([pro]), 400, "VALIDATION_ERROR"),
        (json!({"plan_id": old}), 422, "PLAN_NOT_PURCHASABLE"),
        (json!({"plan_id": "999999"}), 404, "NOT_FOUND"),
    ];
    for (body, want, code) in cases {
        let (status, answer) = change(&app, body.clone(), &[]).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (want, Some(code)),
            "{body}: {answer}"
        );
    }
    for (query, want) in [
        (format!("plan_id={basic}"), 400),
        (format!("plan_id={pro}&interval=year"), 400),
        (format!("plan_id={pro}&coupon=X"), 400),
        (String::new(), 400),
        (format!("plan_id={old}"), 422),
    ] {
        let (status, answer) = preview(&app, &query).await;
        assert_eq!(status, want, "{query}: {answer}");
    }
    // No token; a too-long idempotency key.
    let (status, _, _) = app
        .request(
            reqwest::Method::POST,
            "/subscription/change",
            None,
            &[],
            crate::common::Body::Json(json!({"plan_id": pro})),
        )
        .await;
    assert_eq!(status, 401);
    let long = "k".repeat(256);
    let (status, _) = change(&app, json!({"plan_id": pro}), &[("idempotency-key", &long)]).await;
    assert_eq!(status, 400);
    assert!(
        stripe
            .requests()
            .iter()
            .all(|r| !r.path.starts_with("/v1/subscriptions/")),
        "nobody asked"
    );
    let (status, answer) = change(&app, json!({"plan_id": pro}), &[]).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (502, Some("PROVIDER_ERROR")),
        "{answer}"
    );
    let after = (
        subscription(&app, "alice").await,
        app.balance("alice").await,
        events(&app).await.len(),
    );
    assert_eq!(after, before);
    app.finish().await;
}

async fn portal_switches_plans(db: Db) {
    let app = spawn(db, None, None).await;
    let (pro, pack) = seed_plans(&app).await;
    let basic = basic_plan(&app, true).await;
    sandbox_subscribe(&app, "alice", &basic).await;
    let url = portal_url(&app, "alice").await;
    let page = crate::page_text(&app, &url).await;
    assert!(
        page.contains(&format!("id=\"switch-{pro}\"")),
        "another plan offers a switch: {page}"
    );
    assert!(!page.contains(&format!("id=\"switch-{basic}\"")), "{page}");
    assert!(page.contains("Your plan."), "{page}");

    let post = |plan: String| {
        let (app, url) = (&app, &url);
        async move {
            let r = app
                .client
                .post(format!("{url}/change"))
                .form(&[("plan_id", plan)])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // A pack is no plan to switch to: refused on the page, nothing changed.
    let (status, page) = post(pack).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("Not applied"), "{page}");
    assert_eq!(subscription(&app, "alice").await["plan_id"], basic.as_str());

    let (status, page) = post(pro.clone()).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Your plan is changed: +600 credits"),
        "{page}"
    );
    assert_eq!(subscription(&app, "alice").await["plan_id"], pro.as_str());
    assert_eq!(app.balance("alice").await, 1000);
    // An altered portal URL opens nothing.
    let r = app
        .client
        .post(format!("{url}x/change"))
        .form(&[("plan_id", basic.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(subscription(&app, "alice").await["plan_id"], pro.as_str());
    app.finish().await;
}

/// `user`'s Stripe subscription `sub` to `plan`, its first period `[t0, t0 + 30 days)` paid.
async fn stripe_sub(app: &TestApp, user: &str, plan: &str, sub: &str, t0: i64) -> String {
    let order = subscribe(app, user, plan).await;
    let completed = event(
        &format!("evt_cs_{sub}"),
        "checkout.session.completed",
        t0,
        checkout_completed(
            &format!("cs_{sub}"),
            &order,
            "subscription",
            json!({"subscription": sub}),
        ),
    );
    assert_eq!(send(app, &completed).await.0, 200);
    let paid = event(
        &format!("evt_in_{sub}"),
        "invoice.paid",
        t0,
        invoice_paid(&format!("in_{sub}"), sub, &order, t0, t0 + 30 * DAY),
    );
    assert_eq!(send(app, &paid).await.0, 200);
    order
}

/// The switch of `sub` to `price` at `at`, and its renewal into `[t0 + 30, t0 + 60 days)`.
fn switch_and_renewal(sub: &str, order: &str, price: &str, at: i64, t0: i64) -> [String; 2] {
    let mut updated = subscription_object(sub, order, "active", false, t0 + 30 * DAY);
    updated["items"]["data"][0]["price"] = json!({"id": price, "object": "price"});
    [
        event(
            &format!("evt_sw_{sub}"),
            "customer.subscription.updated",
            at,
            updated,
        ),
        event(
            &format!("evt_rn_{sub}"),
            "invoice.paid",
            t0 + 30 * DAY,
            invoice_paid(
                &format!("in2_{sub}"),
                sub,
                order,
                t0 + 30 * DAY,
                t0 + 60 * DAY,
            ),
        ),
    ]
}

/// The renewal invoice before the plan change's event: the credits end as in order, for an
/// upgrade and a downgrade, each event delivered twice.
async fn a_change_reported_after_its_renewal_ends_the_same(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let (pro, _) = seed_plans(&app).await;
    let basic = basic_plan(&app, true).await;
    let t0 = now_unix(&app);
    let at = t0 + 10 * DAY;
    let mut finals = Vec::new();
    for (users, from, to, price) in [
        (["up_in_order", "up_reversed"], &basic, &pro, "price_pro_m"),
        (
            ["down_in_order", "down_reversed"],
            &pro,
            &basic,
            "price_basic_m",
        ),
    ] {
        let mut balances = Vec::new();
        for (i, user) in users.iter().enumerate() {
            let sub = format!("sub_{user}");
            let order = stripe_sub(&app, user, from, &sub, t0).await;
            let mut events = switch_and_renewal(&sub, &order, price, at, t0).to_vec();
            if i == 1 {
                events.reverse();
            }
            for body in &events {
                let (status, ack) = send(&app, body).await;
                assert_eq!(status, 200, "{user}: {ack}");
                assert_eq!(send(&app, body).await.1["data"]["outcome"], "duplicate");
            }
            let now = subscription_for(&app, user).await;
            assert_eq!(now["plan_id"], to.as_str(), "{user}");
            balances.push(app.balance(user).await);
        }
        assert_eq!(balances[0], balances[1], "{users:?}");
        finals.push(balances[0]);
    }
    // Up: 400 + 20/30 of 600 + Pro's 1,000. Down: 1,000, nothing back, then Basic's 400.
    assert_eq!(finals, [400 + 400 + 1000, 1000 + 400]);
    app.assert_verified().await;
    app.finish().await;
}

async fn subscription_for(app: &TestApp, user: &str) -> Value {
    let (status, body, _) = app
        .get("/subscription", &app_token(user, "default", None))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}
