//! Free trials: a plan's `trial_days` asked of Stripe at checkout, the trial credits granted once
//! when the trial starts (whichever event says so first), the plan's credits from the first paid
//! invoice; the sandbox's trial; and trial settings refused where they make no sense.

use serde_json::{Value, json};

use crate::common::{Db, TestApp, admin_token, app_token};
use crate::doubles;
use crate::stripe::{checkout_completed, event, invoice_paid, send, subscription_object};
use crate::{create_session, now_unix, orders, spawn, subscription};

backend_tests!(
    sandbox_trial_starts_and_cancelling_charges_nothing,
    stripe_trial_grants_once_in_any_order_then_converts,
    trial_settings_are_checked,
);

const DAY: i64 = 86_400;

/// A plan with a 14-day trial and 100 trial credits (1,000 credits a paid month).
async fn trial_plan(app: &TestApp) -> String {
    let (status, body, _) = app
        .post(
            "/admin/billing/plans",
            &admin_token("root"),
            json!({
                "name": "Pro", "kind": "subscription", "currency": "usd", "price_monthly": 999,
                "credits_included": 1000, "stripe_price_id_monthly": "price_pro_m",
                "trial_days": 14, "trial_credits": 100,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["trial_days"], 14);
    assert_eq!(body["data"]["trial_credits"], 100);
    body["data"]["id"].as_str().unwrap().to_owned()
}

async fn sandbox_trial_starts_and_cancelling_charges_nothing(db: Db) {
    let app = spawn(db, None, None).await;
    let plan = trial_plan(&app).await;
    let (status, plans, _) = app
        .get("/subscription/plans", &app_token("alice", "default", None))
        .await;
    assert_eq!(status, 200, "{plans}");
    assert_eq!(plans["data"][0]["trial_days"], 14, "{plans}");

    let (status, body) = create_session(
        &app,
        "alice",
        json!({"channel": "sandbox", "type": "subscription", "plan_id": plan,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let url = body["data"]["url"].as_str().unwrap().to_owned();
    let page = crate::page_text(&app, &url).await;
    assert!(page.contains("Start the 14-day free trial"), "{page}");
    let paid = app.client.post(format!("{url}/pay")).send().await.unwrap();
    assert_eq!(paid.status(), 200);

    let sub = subscription(&app, "alice").await;
    assert_eq!(sub["status"], "trialing");
    let start = time::OffsetDateTime::from_unix_timestamp(now_unix(&app)).unwrap();
    let end = start + time::Duration::days(14);
    assert_eq!(
        sub["current_period_end"],
        end.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    assert_eq!(app.balance("alice").await, 100, "the trial credits only");
    assert_eq!(orders(&app, "alice").await[0]["status"], "completed");
    // Pressing the button again changes nothing.
    app.client.post(format!("{url}/pay")).send().await.unwrap();
    assert_eq!(app.balance("alice").await, 100);

    // A trialing subscription is live: a second checkout is refused; cancelling ends it and
    // nothing was ever charged.
    let (status, body) = create_session(
        &app,
        "alice",
        json!({"channel": "sandbox", "type": "subscription", "plan_id": plan,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("ALREADY_SUBSCRIBED"))
    );
    let (status, body, _) = app
        .post(
            "/subscription/cancel",
            &app_token("alice", "default", None),
            json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["subscription"]["status"], "canceled");
    assert_eq!(app.balance("alice").await, 100);
    assert!(
        crate::events(&app)
            .await
            .iter()
            .all(|e| e["event_type"] != "period.paid"),
        "no period was ever paid"
    );
    app.assert_verified().await;
    app.finish().await;
}

/// Signed Stripe events starting `user`'s trial of `order` on subscription `sub` at `t`.
fn trial_events(user: &str, order: &str, sub: &str, t: i64) -> Vec<String> {
    let trial_end = t + 14 * DAY;
    let mut completed = checkout_completed(
        &format!("cs_{user}"),
        order,
        "subscription",
        json!({"subscription": sub, "payment_status": "no_payment_required", "amount_total": 0}),
    );
    completed["customer"] = json!(format!("cus_{user}"));
    let mut invoice = invoice_paid(&format!("in_trial_{user}"), sub, order, t, trial_end);
    invoice["billing_reason"] = json!("subscription_create");
    invoice["amount_paid"] = json!(0);
    invoice["customer"] = json!(format!("cus_{user}"));
    let mut created = subscription_object(sub, order, "trialing", false, trial_end);
    created["customer"] = json!(format!("cus_{user}"));
    vec![
        event(
            &format!("evt_cs_{user}"),
            "checkout.session.completed",
            t,
            completed,
        ),
        event(&format!("evt_in_{user}"), "invoice.paid", t, invoice),
        event(
            &format!("evt_sub_{user}"),
            "customer.subscription.created",
            t,
            created,
        ),
    ]
}

async fn start_checkout(app: &TestApp, user: &str, plan: &str) -> String {
    let (status, body) = create_session(
        app,
        user,
        json!({"channel": "stripe", "type": "subscription", "plan_id": plan,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["order_id"].as_str().unwrap().to_owned()
}

async fn stripe_trial_grants_once_in_any_order_then_converts(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let plan = trial_plan(&app).await;
    let alice = start_checkout(&app, "alice", &plan).await;
    let form = stripe.requests_to("/v1/checkout/sessions")[0].form();
    assert_eq!(form["mode"], "subscription");
    assert_eq!(form["subscription_data[trial_period_days]"], "14");
    let bob = start_checkout(&app, "bob", &plan).await;
    let t = now_unix(&app);

    // Alice's events in order, Bob's in reverse, each delivered twice: 100 trial credits each.
    for body in trial_events("alice", &alice, "sub_alice", t) {
        assert_eq!(send(&app, &body).await.0, 200);
        assert_eq!(send(&app, &body).await.1["data"]["outcome"], "duplicate");
    }
    for body in trial_events("bob", &bob, "sub_bob", t).into_iter().rev() {
        let (status, ack) = send(&app, &body).await;
        assert_eq!(status, 200, "{ack}");
        assert_eq!(send(&app, &body).await.1["data"]["outcome"], "duplicate");
    }
    for user in ["alice", "bob"] {
        assert_eq!(app.balance(user).await, 100, "{user}");
        let sub = subscription(&app, user).await;
        assert_eq!(sub["status"], "trialing", "{user}: {sub}");
        assert_eq!(orders(&app, user).await[0]["status"], "completed");
    }
    let trial_grants: Vec<Value> = app.rows_of_type("subscription").await;
    assert_eq!(trial_grants.len(), 2, "{trial_grants:?}");

    // The trial ends: the first paid invoice grants the plan's 1,000; `active` follows.
    let paid = event(
        "evt_in_alice_2",
        "invoice.paid",
        t + 14 * DAY,
        invoice_paid(
            "in_alice_2",
            "sub_alice",
            &alice,
            t + 14 * DAY,
            t + 44 * DAY,
        ),
    );
    assert_eq!(send(&app, &paid).await.0, 200);
    let active = event(
        "evt_sub_alice_2",
        "customer.subscription.updated",
        t + 14 * DAY,
        subscription_object("sub_alice", &alice, "active", false, t + 44 * DAY),
    );
    assert_eq!(send(&app, &active).await.0, 200);
    assert_eq!(app.balance("alice").await, 1100);
    assert_eq!(subscription(&app, "alice").await["status"], "active");

    // Bob cancels during the trial: Stripe ends it with the trial; nothing more is granted.
    let canceled = event(
        "evt_sub_bob_2",
        "customer.subscription.deleted",
        t + 14 * DAY,
        subscription_object("sub_bob", &bob, "canceled", false, t + 14 * DAY),
    );
    assert_eq!(send(&app, &canceled).await.0, 200);
    assert_eq!(subscription(&app, "bob").await["status"], "canceled");
    assert_eq!(app.balance("bob").await, 100);
    app.assert_verified().await;
    app.finish().await;
}

async fn trial_settings_are_checked(db: Db) {
    let app = spawn(db, None, None).await;
    let admin = admin_token("root");
    for (body, field) in [
        (
            json!({"name": "Pack", "kind": "credit_pack", "currency": "usd", "price": 499,
                "credits_included": 500, "trial_days": 7}),
            "trial_days",
        ),
        (
            json!({"name": "Pro", "kind": "subscription", "currency": "usd",
                "price_monthly": 999, "trial_days": 0}),
            "trial_days",
        ),
        (
            json!({"name": "Pro", "kind": "subscription", "currency": "usd",
                "price_monthly": 999, "trial_days": 731}),
            "trial_days",
        ),
        (
            json!({"name": "Pro", "kind": "subscription", "currency": "usd",
                "price_monthly": 999, "trial_credits": 10}),
            "trial_credits",
        ),
        (
            json!({"name": "Pro", "kind": "subscription", "currency": "usd",
                "price_monthly": 999, "trial_days": 7, "trial_credits": -1}),
            "trial_credits",
        ),
    ] {
        let (status, answer, _) = app.post("/admin/billing/plans", &admin, body.clone()).await;
        assert_eq!(
            (
                status.as_u16(),
                answer["error"]["details"]["fields"][0]["field"].as_str()
            ),
            (400, Some(field)),
            "{body}: {answer}"
        );
    }
    let (status, listed, _) = app.get("/admin/billing/plans", &admin).await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"], json!([]), "nothing was created");
    // A trial is added, then taken off, by an update.
    let plan = trial_plan(&app).await;
    let (status, body, _) = app
        .put(
            &format!("/admin/billing/plans/{plan}"),
            &admin,
            json!({"trial_days": null, "trial_credits": 0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["trial_days"], Value::Null);
    let (status, body, _) = app
        .put(
            &format!("/admin/billing/plans/{plan}"),
            &admin,
            json!({"trial_credits": 5}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (400, Some("VALIDATION_ERROR")),
        "trial credits without a trial: {body}"
    );
    app.finish().await;
}
