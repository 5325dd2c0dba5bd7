//! The subscription lifecycle over HTTP: one live subscription per user, cancel and resume by the
//! user and by operators — through the sandbox (which plays the provider) and against the local
//! Stripe and Creem doubles, where Tally's record follows the provider's signed events.

use serde_json::{Value, json};

use crate::common::{Db, TestApp, admin_token, app_token, user_token};
use crate::doubles::{self, hmac_hex};
use crate::sandbox::form_post;
use crate::stripe::{
    checkout_completed, event, invoice_paid, send, subscribe, subscription_object,
};
use crate::{
    CREEM_WHSEC, create_session, deliver, events, now_unix, seed_plans, spawn, subscription,
};

backend_tests!(
    sandbox_cancel_resume_and_one_live_subscription,
    lifecycle_requests_refused_change_nothing,
    stripe_cancel_and_resume_follow_the_provider,
    creem_cancel_follows_the_provider,
    portal_cancel_and_resume,
    stripe_failed_renewal_is_past_due_until_paid,
    sandbox_portal_is_the_billing_page,
);

/// Subscribes `user` to `plan` through the sandbox and pays.
pub(crate) async fn sandbox_subscribe(app: &TestApp, user: &str, plan: &str) -> String {
    let (status, body) = create_session(
        app,
        user,
        json!({"channel": "sandbox", "type": "subscription", "plan_id": plan,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let url = body["data"]["url"].as_str().unwrap().to_owned();
    let paid = app.client.post(format!("{url}/pay")).send().await.unwrap();
    assert_eq!(paid.status(), 200);
    body["data"]["order_id"].as_str().unwrap().to_owned()
}

/// `POST path` as `user` with `body`; answers status and body.
async fn post_as(app: &TestApp, user: &str, path: &str, body: Value) -> (u16, Value) {
    let (status, body, _) = app
        .post(path, &app_token(user, "default", None), body)
        .await;
    (status.as_u16(), body)
}

/// The user's subscriptions, newest first.
async fn subscriptions(app: &TestApp, user: &str) -> Vec<Value> {
    let (status, body, _) = app
        .get("/subscriptions", &app_token(user, "default", None))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

async fn sandbox_cancel_resume_and_one_live_subscription(db: Db) {
    let app = spawn(db, None, None).await;
    let (pro, pack) = seed_plans(&app).await;
    sandbox_subscribe(&app, "alice", &pro).await;
    assert_eq!(app.balance("alice").await, 1000);
    let first = subscription(&app, "alice").await;
    assert_eq!(first["status"], "active");

    // A second subscription while one runs: refused, and no order is made.
    let (status, body) = create_session(
        &app,
        "alice",
        json!({"channel": "sandbox", "type": "subscription", "plan_id": pro,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("ALREADY_SUBSCRIBED")),
        "{body}"
    );
    assert_eq!(crate::orders(&app, "alice").await.len(), 1);
    // A credit pack is not a subscription: still sold.
    let (status, body) = create_session(
        &app,
        "alice",
        json!({"channel": "sandbox", "type": "credits", "plan_id": pack,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Cancel at the period end (the default; the body may be left out): still active, ends
    // with the period.
    let (status, body, _) = app
        .request(
            reqwest::Method::POST,
            "/subscription/cancel",
            Some(&app_token("alice", "default", None)),
            &[],
            crate::common::Body::Empty,
        )
        .await;
    let status = status.as_u16();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["change"], "cancel_at_period_end");
    assert_eq!(body["data"]["outcome"], "requested");
    assert_eq!(body["data"]["subscription"]["status"], "active");
    assert_eq!(body["data"]["subscription"]["cancel_at_period_end"], true);
    assert_eq!(
        subscription(&app, "alice").await["cancel_at_period_end"],
        true
    );
    let recorded = events(&app).await.len();
    // Asked again: nothing to ask, nothing sent.
    let (status, body) = post_as(&app, "alice", "/subscription/cancel", json!({})).await;
    assert_eq!(
        (status, body["data"]["outcome"].as_str()),
        (200, Some("unchanged"))
    );
    assert_eq!(events(&app).await.len(), recorded);

    // Resume: renews again.
    let (status, body) = post_as(&app, "alice", "/subscription/resume", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["outcome"], "requested");
    assert_eq!(body["data"]["subscription"]["cancel_at_period_end"], false);
    let (status, body) = post_as(&app, "alice", "/subscription/resume", json!({})).await;
    assert_eq!(
        (status, body["data"]["outcome"].as_str()),
        (200, Some("unchanged"))
    );
    assert_eq!(events(&app).await.len(), recorded + 1);

    // Cancel now: ended. The credits already granted stay.
    let (status, body) = post_as(
        &app,
        "alice",
        "/subscription/cancel",
        json!({"at_period_end": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["change"], "cancel_now");
    assert_eq!(body["data"]["subscription"]["status"], "canceled");
    assert_eq!(app.balance("alice").await, 1000);
    // Nothing left to cancel or resume.
    for path in ["/subscription/cancel", "/subscription/resume"] {
        let (status, body) = post_as(&app, "alice", path, json!({})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("NO_ACTIVE_SUBSCRIPTION")),
            "{path}: {body}"
        );
    }

    // With the first ended, a new subscription is sold; both are listed, newest first.
    sandbox_subscribe(&app, "alice", &pro).await;
    assert_eq!(app.balance("alice").await, 2000);
    let all = subscriptions(&app, "alice").await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0]["status"], "active");
    assert_eq!(all[1]["id"], first["id"]);
    assert_eq!(all[1]["status"], "canceled");
    assert_eq!(subscription(&app, "alice").await["id"], all[0]["id"]);
    // Pages by cursor.
    let (status, page, _) = app
        .get(
            "/subscriptions?limit=1",
            &app_token("alice", "default", None),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"][0]["id"], all[0]["id"]);
    let next = page["meta"]["next_before"].as_str().unwrap().to_owned();
    let (_, page, _) = app
        .get(
            &format!("/subscriptions?limit=1&before={next}"),
            &app_token("alice", "default", None),
        )
        .await;
    assert_eq!(page["data"][0]["id"], all[1]["id"]);
    assert_eq!(page["meta"]["has_more"], false);
    // Another user sees none of them.
    assert!(subscriptions(&app, "bob").await.is_empty());

    // An operator ends the new one now.
    let id = all[0]["id"].as_str().unwrap();
    let (status, body, _) = app
        .post(
            &format!("/admin/subscriptions/{id}/cancel"),
            &admin_token("ops"),
            json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["subscription"]["status"], "canceled");
    assert_eq!(subscription(&app, "alice").await["status"], "canceled");
    app.finish().await;
}

async fn lifecycle_requests_refused_change_nothing(db: Db) {
    let app = spawn(db, None, None).await;
    let (pro, _) = seed_plans(&app).await;
    // No subscription at all.
    for path in ["/subscription/cancel", "/subscription/resume"] {
        let (status, body) = post_as(&app, "carol", path, json!({})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("NO_ACTIVE_SUBSCRIPTION")),
            "{body}"
        );
    }
    sandbox_subscribe(&app, "alice", &pro).await;
    let before = subscription(&app, "alice").await;
    let recorded = events(&app).await.len();
    // Malformed bodies: refused, nothing asked.
    for bad in [
        json!({"at_period_end": "yes"}),
        json!({"at_period_end": true, "when": "now"}),
        json!({"at_period_end": 1}),
    ] {
        let (status, body) = post_as(&app, "alice", "/subscription/cancel", bad.clone()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("VALIDATION_ERROR")),
            "{bad}: {body}"
        );
    }
    // No token; a token of another app (no subscription there).
    let (status, _, _) = app
        .request(
            reqwest::Method::POST,
            "/subscription/cancel",
            None,
            &[],
            crate::common::Body::Json(json!({})),
        )
        .await;
    assert_eq!(status, 401);
    let (status, body, _) = app
        .post(
            "/subscription/cancel",
            &app_token("alice", "other", None),
            json!({}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (404, Some("NO_ACTIVE_SUBSCRIPTION"))
    );
    // A bad Idempotency-Key.
    let long = "k".repeat(256);
    let (status, _, _) = app
        .request(
            reqwest::Method::POST,
            "/subscription/cancel",
            Some(&app_token("alice", "default", None)),
            &[("idempotency-key", &long)],
            crate::common::Body::Json(json!({})),
        )
        .await;
    assert_eq!(status, 400);
    // Operators: a user's token, an unknown id, a malformed id, another app's subscription.
    let id = before["id"].as_str().unwrap();
    let path = format!("/admin/subscriptions/{id}/cancel");
    let (status, _, _) = app
        .post(&path, &app_token("alice", "default", None), json!({}))
        .await;
    assert_eq!(status, 403);
    for wrong in ["999999", "abc", "-1"] {
        let (status, body, _) = app
            .post(
                &format!("/admin/subscriptions/{wrong}/cancel"),
                &admin_token("ops"),
                json!({}),
            )
            .await;
        assert_eq!(status, 404, "{wrong}: {body}");
    }
    let (status, _, _) = app
        .post(&path, &app_token("ops", "other", Some("admin")), json!({}))
        .await;
    assert_eq!(status, 404);
    // Nothing changed, nothing was sent.
    assert_eq!(subscription(&app, "alice").await, before);
    assert_eq!(events(&app).await.len(), recorded);
    app.finish().await;
}

/// Alice's Stripe subscription `sub`, paid for one period, through signed events.
pub(crate) async fn stripe_subscriber(app: &TestApp, pro: &str, sub: &str) -> String {
    let order = subscribe(app, "alice", pro).await;
    let t0 = now_unix(app);
    let completed = event(
        &format!("evt_cs_{sub}"),
        "checkout.session.completed",
        t0,
        checkout_completed("cs_1", &order, "subscription", json!({"subscription": sub})),
    );
    assert_eq!(send(app, &completed).await.0, 200);
    let paid = event(
        &format!("evt_in_{sub}"),
        "invoice.paid",
        t0,
        invoice_paid("in_1", sub, &order, t0, t0 + 30 * 86_400),
    );
    assert_eq!(send(app, &paid).await.0, 200);
    assert_eq!(subscription(app, "alice").await["status"], "active");
    order
}

async fn stripe_cancel_and_resume_follow_the_provider(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let (pro, _) = seed_plans(&app).await;
    let order = stripe_subscriber(&app, &pro, "sub_1").await;

    // Asked: Stripe receives exactly this; Tally's record waits for Stripe's event.
    let (status, body, _) = app
        .request(
            reqwest::Method::POST,
            "/subscription/cancel",
            Some(&app_token("alice", "default", None)),
            &[("idempotency-key", "cancel-1")],
            crate::common::Body::Json(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["outcome"], "requested");
    assert_eq!(body["data"]["subscription"]["cancel_at_period_end"], false);
    let sent = stripe.requests_to("/v1/subscriptions/sub_1");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "POST");
    assert_eq!(sent[0].headers["idempotency-key"], "cancel-1");
    assert_eq!(
        sent[0].form().into_iter().collect::<Vec<_>>(),
        vec![("cancel_at_period_end".to_owned(), "true".to_owned())]
    );
    assert_eq!(
        subscription(&app, "alice").await["cancel_at_period_end"],
        false
    );

    // Stripe's event, delivered twice: applied once.
    let end = now_unix(&app) + 30 * 86_400;
    let updated = event(
        "evt_sub_cancel",
        "customer.subscription.updated",
        now_unix(&app) + 1,
        subscription_object("sub_1", &order, "active", true, end),
    );
    assert_eq!(send(&app, &updated).await.0, 200);
    let (_, ack) = send(&app, &updated).await;
    assert_eq!(ack["data"]["outcome"], "duplicate");
    assert_eq!(
        subscription(&app, "alice").await["cancel_at_period_end"],
        true
    );

    // Resume: cancel_at_period_end=false, under a key of Tally's own.
    let (status, body) = post_as(&app, "alice", "/subscription/resume", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let sent = stripe.requests_to("/v1/subscriptions/sub_1");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].form()["cancel_at_period_end"], "false");
    assert!(sent[1].headers["idempotency-key"].starts_with("tally-sub_1-resume-"));
    // An older event arriving late does not undo a newer one.
    let resumed = event(
        "evt_sub_resume",
        "customer.subscription.updated",
        now_unix(&app) + 2,
        subscription_object("sub_1", &order, "active", false, end),
    );
    assert_eq!(send(&app, &resumed).await.0, 200);
    assert_eq!(send(&app, &updated).await.0, 200);
    assert_eq!(
        subscription(&app, "alice").await["cancel_at_period_end"],
        false
    );

    // End now: DELETE; the subscription ends with Stripe's `deleted` event.
    let (status, _) = post_as(
        &app,
        "alice",
        "/subscription/cancel",
        json!({"at_period_end": false}),
    )
    .await;
    assert_eq!(status, 200);
    let sent = stripe.requests_to("/v1/subscriptions/sub_1");
    assert_eq!((sent.len(), sent[2].method.as_str()), (3, "DELETE"));
    assert!(!sent[2].headers.contains_key("idempotency-key"));
    let deleted = event(
        "evt_sub_deleted",
        "customer.subscription.deleted",
        now_unix(&app) + 3,
        subscription_object("sub_1", &order, "canceled", false, end),
    );
    assert_eq!(send(&app, &deleted).await.0, 200);
    assert_eq!(subscription(&app, "alice").await["status"], "canceled");
    assert_eq!(app.balance("alice").await, 1000);
    app.finish().await;
}

async fn creem_cancel_follows_the_provider(db: Db) {
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
    let creem_event = |id: &str, kind: &str, object: Value| {
        json!({"id": id, "eventType": kind, "created_at": 1_790_000_000_000_i64, "object": object})
            .to_string()
    };
    let send_creem = |body: String| {
        let app = &app;
        async move {
            let sig = hmac_hex(CREEM_WHSEC, &body);
            deliver(app, "creem", &[("creem-signature", &sig)], &body).await
        }
    };
    let sub = json!({"id": "sub_c1", "object": "subscription", "status": "active",
        "customer": "cust_1", "metadata": {"order_id": order},
        "current_period_start_date": "2026-03-01T12:00:00.000Z",
        "current_period_end_date": "2026-04-01T12:00:00.000Z",
        "last_transaction_id": "tran_1"});
    let (status, ack) =
        send_creem(creem_event("evt_c_paid", "subscription.paid", sub.clone())).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(subscription(&app, "alice").await["status"], "active");

    let (status, body) = post_as(&app, "alice", "/subscription/cancel", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let sent = creem.requests_to("/v1/subscriptions/sub_c1/cancel");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].json(), json!({"mode": "scheduled"}));
    assert_eq!(sent[0].headers["x-api-key"], crate::CREEM_KEY);
    let (status, _) = send_creem(creem_event(
        "evt_c_sched",
        "subscription.scheduled_cancel",
        sub.clone(),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        subscription(&app, "alice").await["cancel_at_period_end"],
        true
    );

    let (status, _) = post_as(&app, "alice", "/subscription/resume", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        creem.requests_to("/v1/subscriptions/sub_c1/resume").len(),
        1
    );
    app.finish().await;
}

/// The user's billing page (`/portal/{token}`), opened through the user's own token.
pub(crate) async fn portal_url(app: &TestApp, user: &str) -> String {
    let (status, body, _) = app
        .post(
            "/billing/portal-sessions",
            &user_token(user),
            json!({"return_url": "https://app.example/account"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["url"].as_str().unwrap().to_owned()
}

async fn portal_cancel_and_resume(db: Db) {
    let app = spawn(db, None, None).await;
    let (pro, _) = seed_plans(&app).await;
    sandbox_subscribe(&app, "alice", &pro).await;
    let url = portal_url(&app, "alice").await;
    let page = crate::page_text(&app, &url).await;
    assert!(
        page.contains("id=\"cancel\"") && !page.contains("id=\"resume\""),
        "{page}"
    );

    let (status, page) = form_post(&app, &format!("{url}/cancel")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("ends with the current period"), "{page}");
    assert!(
        page.contains("id=\"resume\"") && !page.contains("id=\"cancel\""),
        "{page}"
    );
    assert_eq!(
        subscription(&app, "alice").await["cancel_at_period_end"],
        true
    );

    let (status, page) = form_post(&app, &format!("{url}/resume")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("renews as before"), "{page}");
    assert_eq!(
        subscription(&app, "alice").await["cancel_at_period_end"],
        false
    );

    // Bob has no subscription: no button, and a forged post is refused and changes nothing.
    let bob = portal_url(&app, "bob").await;
    let page = crate::page_text(&app, &bob).await;
    assert!(!page.contains("id=\"cancel\""), "{page}");
    let (status, page) = form_post(&app, &format!("{bob}/cancel")).await;
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("Not applied"), "{page}");
    assert_eq!(
        subscription(&app, "alice").await["cancel_at_period_end"],
        false
    );
    // An altered portal URL opens nothing.
    let (status, _) = form_post(&app, &format!("{url}x/cancel")).await;
    assert_eq!(status, 403);
    assert_eq!(
        subscription(&app, "alice").await["cancel_at_period_end"],
        false
    );
    app.finish().await;
}

/// A renewal payment fails: Stripe moves the subscription to `past_due` (the host app hears
/// `subscription.past_due` once, however often the event arrives) and grants nothing; the retry
/// succeeds, the next period is paid and granted, and the subscription is `active` again (with
/// `subscription.renewed`).
async fn stripe_failed_renewal_is_past_due_until_paid(db: Db) {
    let stripe = doubles::stripe().await;
    let app = spawn(db, Some(&stripe), None).await;
    let watcher = crate::watch(&app).await;
    let (pro, _) = seed_plans(&app).await;
    let order = stripe_subscriber(&app, &pro, "sub_pd").await;
    let t0 = now_unix(&app);
    let t1 = t0 + 30 * 86_400;
    let failing = event(
        "evt_pd",
        "customer.subscription.updated",
        t0 + 10,
        subscription_object("sub_pd", &order, "past_due", false, t1),
    );
    assert_eq!(send(&app, &failing).await.0, 200);
    assert_eq!(send(&app, &failing).await.1["data"]["outcome"], "duplicate");
    assert_eq!(subscription(&app, "alice").await["status"], "past_due");
    assert_eq!(
        app.balance("alice").await,
        1000,
        "a failed payment grants nothing"
    );
    // Still live: no second subscription is sold meanwhile.
    let (status, _) = create_session(
        &app,
        "alice",
        json!({"channel": "stripe", "type": "subscription", "plan_id": pro,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 409);

    // The retry is paid: the next period's credits, and active again.
    let paid = event(
        "evt_in_pd2",
        "invoice.paid",
        t0 + 20,
        invoice_paid("in_pd2", "sub_pd", &order, t1, t1 + 30 * 86_400),
    );
    assert_eq!(send(&app, &paid).await.0, 200);
    // A paid period makes it active at once; Stripe's own status event then changes nothing.
    assert_eq!(subscription(&app, "alice").await["status"], "active");
    let recovered = event(
        "evt_pd_ok",
        "customer.subscription.updated",
        t0 + 21,
        subscription_object("sub_pd", &order, "active", false, t1 + 30 * 86_400),
    );
    assert_eq!(send(&app, &recovered).await.0, 200);
    assert_eq!(subscription(&app, "alice").await["status"], "active");
    assert_eq!(app.balance("alice").await, 2000);

    // order.completed, subscription.created and credits.granted for the first period;
    // subscription.past_due; subscription.renewed and credits.granted for the second.
    let told = crate::outbound(&watcher, 6).await;
    assert_eq!(told.len(), 6, "{told:?}");
    let of_type = |t: &str| -> Vec<Value> {
        told.iter()
            .filter(|(x, _)| x == t)
            .map(|(_, d)| d.clone())
            .collect()
    };
    let past_due = of_type("subscription.past_due");
    assert_eq!(past_due.len(), 1, "{told:?}");
    assert_eq!(
        (
            past_due[0]["status"].as_str(),
            past_due[0]["previous_status"].as_str()
        ),
        (Some("past_due"), Some("active"))
    );
    assert_eq!(of_type("subscription.renewed").len(), 1, "{told:?}");
    app.finish().await;
}

/// The sandbox has no portal of its own: `POST /subscription/portal` answers Tally's billing page
/// (where cancel, resume and plan changes are), which offers no provider portal button.
async fn sandbox_portal_is_the_billing_page(db: Db) {
    let app = spawn(db, None, None).await;
    let (pro, _) = seed_plans(&app).await;
    sandbox_subscribe(&app, "alice", &pro).await;
    let (status, body) = post_as(
        &app,
        "alice",
        "/subscription/portal",
        json!({"return_url": "https://app.example/account"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let url = body["data"]["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/portal/", app.address)),
        "{url}"
    );
    let page = crate::page_text(&app, url).await;
    assert!(page.contains("id=\"cancel\""), "{page}");
    assert!(!page.contains("id=\"manage\""), "{page}");
    assert!(page.contains("https://app.example/account"), "{page}");
    // A back link to a host not allowed: refused.
    let (status, body) = post_as(
        &app,
        "alice",
        "/subscription/portal",
        json!({"return_url": "https://evil.example/"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    app.finish().await;
}
