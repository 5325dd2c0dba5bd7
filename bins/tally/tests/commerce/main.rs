//! Commerce over HTTP: payment sessions against local doubles of Stripe and Creem, signed
//! webhooks applied exactly once, orders and subscriptions, refunds, the sandbox channel, and
//! refused requests that change nothing — each on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod admin_lookups;
mod bad_input;
mod coupons;
mod creem;
mod doubles;
mod lifecycle;
mod plan_change;
#[path = "../webhooks/receiver.rs"]
mod receiver;
mod refunds;
mod sandbox;
mod stats;
mod stripe;
mod trials;
mod usage;

use reqwest::Method;
use serde_json::{Value, json};

use common::{Body, Db, TestApp, admin_token, app_token};
use doubles::Double;

pub const STRIPE_WHSEC: &str = "whsec_test_commerce";
pub const CREEM_WHSEC: &str = "whsec_creem_commerce";
pub const CREEM_KEY: &str = "creem_test_key_0123456789";
pub const STRIPE_KEY: &str = "sk_test_0123456789";

/// A server wired to the doubles (either may be absent), sandbox on.
pub async fn spawn(db: Db, stripe: Option<&Double>, creem: Option<&Double>) -> TestApp {
    let stripe_base = stripe.map(|d| d.base.clone());
    let creem_base = creem.map(|d| d.base.clone());
    TestApp::spawn_with(db, move |s| {
        if let Some(base) = stripe_base {
            s.stripe_secret_key = Some(tally::Secret::new(STRIPE_KEY));
            s.stripe_webhook_secret = Some(tally::Secret::new(STRIPE_WHSEC));
            s.stripe_api_base = base;
        }
        if let Some(base) = creem_base {
            s.creem_api_key = Some(tally::Secret::new(CREEM_KEY));
            s.creem_webhook_secret = Some(tally::Secret::new(CREEM_WHSEC));
            s.creem_api_base = Some(base);
        }
        s.sandbox_enabled = true;
        s.allowed_redirect_hosts = "app.example,*.example.org".into();
        s.provider_timeout_seconds = 1;
        s.provider_max_attempts = 2;
        s.webhook_allow_private_urls = true;
        s.webhook_poll_ms = 20;
    })
    .await
}

/// A receiver registered for every default event type of the default app.
pub async fn watch(app: &TestApp) -> receiver::Receiver {
    let receiver = receiver::Receiver::ok().await;
    let (status, body, _) = app
        .request(
            Method::POST,
            "/admin/webhooks/endpoints",
            Some(&admin_token("root")),
            &[],
            Body::Json(json!({ "url": receiver.url })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    receiver
}

/// Waits for `n` deliveries, then a moment for any extra; answers (type, data) in creation
/// order.
pub async fn outbound(receiver: &receiver::Receiver, n: usize) -> Vec<(String, Value)> {
    receiver.wait_for(n, 20).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut events: Vec<Value> = receiver.received().iter().map(|r| r.json()).collect();
    events.sort_by(|a, b| {
        (
            a["created_at"].as_str(),
            a["data"]["transaction_id"].as_i64(),
        )
            .cmp(&(
                b["created_at"].as_str(),
                b["data"]["transaction_id"].as_i64(),
            ))
    });
    events
        .into_iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["data"].clone()))
        .collect()
}

/// The `Pro` subscription plan (1,000 credits a period) and the `Pack` credit pack (500
/// credits); answers their ids.
pub async fn seed_plans(app: &TestApp) -> (String, String) {
    let admin = admin_token("root");
    let (status, pro, _) = app
        .post(
            "/admin/billing/plans",
            &admin,
            json!({
                "name": "Pro", "kind": "subscription", "currency": "usd",
                "price_monthly": 999, "price_yearly": 9990, "credits_included": 1000,
                "stripe_price_id_monthly": "price_pro_m", "stripe_price_id_yearly": "price_pro_y",
                "creem_product_id_monthly": "prod_pro_m",
            }),
        )
        .await;
    assert_eq!(status, 200, "{pro}");
    let (status, pack, _) = app
        .post(
            "/admin/billing/plans",
            &admin,
            json!({
                "name": "Pack", "kind": "credit_pack", "currency": "usd", "price": 499,
                "credits_included": 500, "stripe_price_id": "price_pack",
                "creem_product_id": "prod_pack",
            }),
        )
        .await;
    assert_eq!(status, 200, "{pack}");
    (
        pro["data"]["id"].as_str().unwrap().to_owned(),
        pack["data"]["id"].as_str().unwrap().to_owned(),
    )
}

/// `POST /payment/create-session` as `user`.
pub async fn create_session(app: &TestApp, user: &str, body: Value) -> (u16, Value) {
    let (status, body, _) = app
        .post(
            "/payment/create-session",
            &app_token(user, "default", None),
            body,
        )
        .await;
    (status.as_u16(), body)
}

/// Delivers a webhook body with the given headers; answers status and body.
pub async fn deliver(
    app: &TestApp,
    channel: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let (status, body, _) = app
        .request(
            Method::POST,
            &format!("/payment/webhook/{channel}"),
            None,
            headers,
            Body::Raw(Some("application/json"), body.as_bytes().to_vec()),
        )
        .await;
    (status.as_u16(), body)
}

/// The user's orders through the API.
pub async fn orders(app: &TestApp, user: &str) -> Vec<Value> {
    let (status, body, _) = app
        .get("/orders?limit=100", &app_token(user, "default", None))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

/// The user's subscription through the API (`null` when none).
pub async fn subscription(app: &TestApp, user: &str) -> Value {
    let (status, body, _) = app
        .get("/subscription", &app_token(user, "default", None))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// Recorded provider events, newest first.
pub async fn events(app: &TestApp) -> Vec<Value> {
    let (status, body, _) = app
        .get("/admin/billing/events?limit=100", &admin_token("root"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

/// The HTML of the page at `url`.
pub async fn page_text(app: &TestApp, url: &str) -> String {
    app.client
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The server clock's current unix time.
pub fn now_unix(app: &TestApp) -> i64 {
    use tally_ledger::Clock;
    app.clock.now().unix_timestamp()
}
