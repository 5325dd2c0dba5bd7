//! The sandbox checkout end to end in a real browser: headless Chromium, driven over the
//! Chrome DevTools Protocol, opens the checkout page Tally serves, presses Pay (or Cancel),
//! and the API then shows the order, the subscription and the credits that follow — on SQLite
//! and PostgreSQL.
//!
//! Without a Chromium (`chromium`, `chromium-browser`, `google-chrome` on `PATH`, or the
//! binary `$TALLY_TEST_CHROMIUM` names) the tests pass with a note on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "common/mod.rs"]
mod common;

#[path = "browser/cdp.rs"]
mod cdp;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use cdp::{Browser, CHROMIUM_ENV, Page, find_chromium};
use common::{Db, TestApp, admin_token, app_token};

/// How long the page may take to load, and the order to settle after a button press.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

backend_tests!(checkout_in_the_browser);

/// A server with the sandbox on.
async fn spawn(db: Db) -> TestApp {
    TestApp::spawn_with(db, |s| s.sandbox_enabled = true).await
}

/// An admin creates a plan; answers its id.
async fn create_plan(app: &TestApp, plan: Value) -> String {
    let (status, body, _) = app
        .post("/admin/billing/plans", &admin_token("root"), plan)
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["id"].as_str().expect("plan id").to_owned()
}

/// `user` opens a sandbox checkout for `plan`; answers the order id and the page URL.
async fn create_session(
    app: &TestApp,
    user: &str,
    order_type: &str,
    plan: &str,
) -> (String, String) {
    let (status, body, _) = app
        .post(
            "/payment/create-session",
            &app_token(user, "default", None),
            json!({
                "channel": "sandbox", "type": order_type, "plan_id": plan,
                "success_url": "http://localhost:3000/ok",
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert!(data["session_id"].is_string(), "{body}");
    (
        data["order_id"].as_str().expect("order id").to_owned(),
        data["url"].as_str().expect("session url").to_owned(),
    )
}

/// `GET path` as `user` of the default app; answers `data`.
async fn data_of(app: &TestApp, user: &str, path: &str) -> Value {
    let (status, body, _) = app.get(path, &app_token(user, "default", None)).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// The text of the element with this id (`null` when there is none).
async fn text_of(page: &mut Page, id: &str) -> Value {
    page.eval(&format!(
        "document.getElementById({})?.textContent ?? null",
        json!(id)
    ))
    .await
    .expect("evaluating")
}

/// Opens the checkout page at `url`, checks it shows `order` pending with both buttons, presses
/// the button `button`, and waits for the result page to show `outcome`.
async fn press(page: &mut Page, url: &str, order: &str, button: &str, outcome: &str) {
    page.goto(url, PAGE_TIMEOUT).await.expect("the page loads");
    assert_eq!(text_of(page, "status").await, "pending");
    let body = page
        .eval("document.body.innerText")
        .await
        .expect("page text");
    assert!(body.as_str().unwrap_or_default().contains(order), "{body}");
    assert!(text_of(page, "pay").await.is_string(), "no Pay: {body}");
    assert!(
        text_of(page, "cancel").await.is_string(),
        "no Cancel: {body}"
    );

    page.eval(&format!(
        "document.getElementById({}).click()",
        json!(button)
    ))
    .await
    .expect("clicking");
    page.wait_until(
        &format!(
            "document.readyState === 'complete' && \
             document.getElementById('status')?.textContent === {}",
            json!(outcome)
        ),
        PAGE_TIMEOUT,
    )
    .await
    .expect("the result page");
    // The result page is the form's answer, on Tally's own origin.
    let at = page.eval("location.pathname").await.expect("location");
    let session = url.rsplit('/').next().unwrap_or_default();
    assert_eq!(at, format!("/payment/sandbox/{session}/{button}"));
}

async fn checkout_in_the_browser(db: Db) {
    let Some(chromium) = find_chromium() else {
        eprintln!(
            "skipping the browser test: no chromium, chromium-browser or google-chrome on PATH \
             (or set {CHROMIUM_ENV})"
        );
        return;
    };
    let started = Instant::now();
    let app = spawn(db).await;
    let pro = create_plan(
        &app,
        json!({
            "name": "Pro", "kind": "subscription", "currency": "usd",
            "price_monthly": 999, "credits_included": 1000,
        }),
    )
    .await;
    let pack = create_plan(
        &app,
        json!({
            "name": "Pack", "kind": "credit_pack", "currency": "usd",
            "price": 499, "credits_included": 500,
        }),
    )
    .await;

    let browser = Browser::launch(&chromium)
        .await
        .unwrap_or_else(|e| panic!("launching {}: {e}", chromium.display()));
    let mut page = browser.new_page().await.expect("a tab");
    // The DevTools client copes with frames of every length encoding, both ways.
    for n in [10, 1_000, 70_000] {
        let length = page
            .eval(&format!("'{}'.repeat(2).length", "x".repeat(n)))
            .await
            .expect("evaluating");
        assert_eq!(length, 2 * n);
        let text = page
            .eval(&format!("'y'.repeat({n})"))
            .await
            .expect("evaluating");
        assert_eq!(text.as_str().map(str::len), Some(n));
    }

    // Alice pays for Pro: the order completes, the subscription is active, 1,000 credits.
    let (order, url) = create_session(&app, "alice", "subscription", &pro).await;
    assert!(url.starts_with(&app.address), "{url}");
    press(&mut page, &url, &order, "pay", "completed").await;
    let orders = data_of(&app, "alice", "/orders").await;
    assert_eq!(orders[0]["id"], order.as_str(), "{orders}");
    assert_eq!(orders[0]["status"], "completed", "{orders}");
    let subscription = data_of(&app, "alice", "/subscription").await;
    assert_eq!(subscription["status"], "active", "{subscription}");
    assert_eq!(app.balance("alice").await, 1000);

    // Bob gives up on a credit pack: the order expires, nothing is granted.
    let (order, url) = create_session(&app, "bob", "credits", &pack).await;
    press(&mut page, &url, &order, "cancel", "expired").await;
    let orders = data_of(&app, "bob", "/orders").await;
    assert_eq!(orders[0]["id"], order.as_str(), "{orders}");
    assert_eq!(orders[0]["status"], "expired", "{orders}");
    assert_eq!(app.balance("bob").await, 0);
    // Alice's purchase is untouched.
    assert_eq!(app.balance("alice").await, 1000);

    page.close().await;
    browser.close().await;
    app.finish().await;
    eprintln!(
        "browser checkout on {db:?} took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
