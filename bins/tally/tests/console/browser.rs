//! An operator's round in headless Chromium: open a console link, look at the overview, create a
//! credit pack and a coupon through the forms, find a customer, grant credits and see the row in
//! the history, switch the coupon off, add a webhook endpoint and retry its failed delivery — and
//! the API agrees. Each page visited is saved as a PNG under `target/screenshots/`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cdp::{Browser, CHROMIUM_ENV, Page, find_chromium};
use crate::common::{Db, TestApp, admin_token, app_token, console_link};

const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

backend_tests!(
    operator_round_in_the_browser,
    end_user_round_in_the_browser,
    subscription_round_in_the_browser
);

fn shot_path(db: Db, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/screenshots")
        .join(format!(
            "console-{name}-{}.png",
            format!("{db:?}").to_lowercase()
        ))
}

async fn shot(page: &mut Page, db: Db, name: &str) {
    let path = shot_path(db, name);
    page.screenshot(&path).await.expect("a screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// Clicks the element matched by `selector` and waits for `condition`.
async fn click_then(page: &mut Page, selector: &str, condition: &str) {
    page.eval(&format!(
        "document.querySelector({}).click()",
        json!(selector)
    ))
    .await
    .expect("clicking");
    page.wait_until(
        &format!("document.readyState === 'complete' && ({condition})"),
        PAGE_TIMEOUT,
    )
    .await
    .unwrap_or_else(|e| panic!("after clicking {selector}: {e}"));
}

/// Loads `url` until `condition` holds (what the page shows changes behind its back).
async fn reload_until(page: &mut Page, url: &str, condition: &str) {
    for _ in 0..100 {
        page.goto(url, PAGE_TIMEOUT).await.expect("the page loads");
        if page.eval(condition).await.expect("evaluating") == Value::Bool(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{condition} never held at {url}");
}

async fn text(page: &mut Page, expression: &str) -> String {
    page.eval(expression)
        .await
        .expect("evaluating")
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn operator_round_in_the_browser(db: Db) {
    let Some(chromium) = find_chromium() else {
        eprintln!("skipping the console browser test: no Chromium (or set {CHROMIUM_ENV})");
        return;
    };
    let app = TestApp::spawn_with(db, |s| {
        s.sandbox_enabled = true;
        s.webhook_allow_private_urls = true;
        s.webhook_poll_ms = 20;
    })
    .await;
    // The receiver fails the first delivery and takes the rest.
    let receiver = crate::receiver::Receiver::start(Arc::new(|n| {
        (if n == 0 { 500 } else { 204 }, Duration::ZERO)
    }))
    .await;
    let admin = admin_token("root");
    for (user, amount) in [("alice", 1200), ("alex", 300), ("bob", 50)] {
        app.admin_grant(user, amount).await;
    }
    app.consume("alice", 200, "c-1").await;

    let browser = Browser::launch(&chromium)
        .await
        .unwrap_or_else(|e| panic!("launching {}: {e}", chromium.display()));
    let mut page = browser.new_page().await.expect("a tab");
    page.viewport(1280, 900).await.expect("viewport");
    // The operator reads the console in Tokyo (UTC+9, no daylight saving).
    page.timezone("Asia/Tokyo").await.expect("time zone");

    // The link's page, then the overview.
    let link = console_link(&app, "default", "ops").await;
    page.goto(&link, PAGE_TIMEOUT)
        .await
        .expect("the link page loads");
    shot(&mut page, db, "sign-in").await;
    click_then(&mut page, "#sign-in", "location.pathname === '/console'").await;
    let granted = text(
        &mut page,
        "document.getElementById('granted-30')?.textContent",
    )
    .await;
    assert_eq!(granted, "1,550", "thousands separators");
    shot(&mut page, db, "overview").await;

    // A credit pack through the plan form: $4.99 for 500 credits.
    page.goto(&format!("{}/console/plans", app.address), PAGE_TIMEOUT)
        .await
        .expect("plans");
    page.eval(
        "document.getElementById('plan-name').value = 'Starter pack'; \
         document.getElementById('plan-kind').value = 'credit_pack'; \
         document.getElementById('plan-credits').value = '500'; \
         document.getElementById('plan-price').value = '4.99';",
    )
    .await
    .expect("filling the plan form");
    click_then(
        &mut page,
        "#create-plan",
        "document.querySelector('#plans tbody tr') !== null",
    )
    .await;
    let row = text(
        &mut page,
        "document.querySelector('#plans tbody tr').innerText",
    )
    .await;
    assert!(
        row.contains("Starter pack") && row.contains("4.99 USD") && row.contains("500"),
        "{row}"
    );
    shot(&mut page, db, "plans").await;
    let (status, plans, _) = app.get("/admin/billing/plans", &admin).await;
    assert_eq!(status, 200);
    let pack = plans["data"][0].clone();
    assert_eq!(
        (pack["price"].clone(), pack["credits_included"].clone()),
        (json!(499), json!(500))
    );

    // A coupon through the coupon form.
    page.goto(&format!("{}/console/coupons", app.address), PAGE_TIMEOUT)
        .await
        .expect("coupons");
    page.eval(
        "document.getElementById('coupon-code').value = 'launch'; \
         document.getElementById('coupon-percent').value = '20';",
    )
    .await
    .expect("filling the coupon form");
    click_then(
        &mut page,
        "#create-coupon",
        "document.getElementById('coupon-LAUNCH') !== null",
    )
    .await;

    // Pricing, set through the admin API, shown read-only (names escaped).
    for (path, body) in [
        (
            "/admin/pricing/features",
            json!({"key": "messages", "name": "<b>Messages</b>", "kind": "metered", "unit": "messages"}),
        ),
        (
            "/admin/pricing/features",
            json!({"key": "input_tokens", "name": "Input tokens", "kind": "metered", "unit": "tokens"}),
        ),
        (
            "/admin/pricing/rates",
            json!({"feature": "input_tokens", "dimensions": {"model": "gpt-4o"}, "credits": 25, "per": 10000}),
        ),
        (
            "/admin/pricing/rates",
            json!({"feature": "messages", "credits": 2, "per": 1,
                   "tiers": [{"up_to": 10, "credits": 3, "per": 1}]}),
        ),
    ] {
        let (status, answer, _) = app.post(path, &admin, body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, answer, _) = app
        .put(
            "/admin/pricing/free-entitlements",
            &admin,
            json!({"entitlements": [{"feature": "messages", "included": 20, "reset": "day", "overage": "block"}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    page.goto(&format!("{}/console/pricing", app.address), PAGE_TIMEOUT)
        .await
        .expect("pricing");
    let name = text(
        &mut page,
        "document.querySelector('#feature-messages td:nth-child(2)')?.textContent",
    )
    .await;
    assert_eq!(name, "<b>Messages</b>", "shown as text, not markup");
    let rows = text(
        &mut page,
        "String(document.querySelectorAll('#rates tbody tr').length)",
    )
    .await;
    assert_eq!(rows, "2");
    let free = text(
        &mut page,
        "document.querySelector('#entitlements tbody tr')?.textContent",
    )
    .await;
    assert!(
        free.contains("Free tier") && free.contains("20 per day, then refused"),
        "{free}"
    );
    shot(&mut page, db, "pricing").await;

    // A webhook endpoint: its secret is shown once, on the answer.
    page.goto(&format!("{}/console/webhooks", app.address), PAGE_TIMEOUT)
        .await
        .expect("webhooks");
    page.eval(&format!(
        "document.getElementById('endpoint-url').value = {};",
        json!(receiver.url)
    ))
    .await
    .expect("filling the endpoint form");
    click_then(
        &mut page,
        "#create-endpoint",
        "document.getElementById('notice') !== null",
    )
    .await;
    let added = text(&mut page, "document.getElementById('notice').textContent").await;
    assert!(added.contains("whsec_"), "{added}");

    // Find alice by prefix, open her page.
    page.goto(
        &format!("{}/console/customers?query=al", app.address),
        PAGE_TIMEOUT,
    )
    .await
    .expect("customers");
    let rows = text(
        &mut page,
        "[...document.querySelectorAll('tbody tr')].map(r => r.cells[0].textContent).join(',')",
    )
    .await;
    assert_eq!(rows, "alex,alice");
    shot(&mut page, db, "customers").await;
    click_then(
        &mut page,
        "a[href='/console/customers/alice']",
        "location.pathname === '/console/customers/alice'",
    )
    .await;
    assert_eq!(
        text(&mut page, "document.getElementById('balance').textContent").await,
        "1,000"
    );

    // Grant 250 with a reason: the notice, the balance and the history's first row say so.
    page.eval(
        "document.getElementById('amount').value = '250'; \
         document.getElementById('description').value = 'Goodwill for ticket 4711';",
    )
    .await
    .expect("filling the form");
    click_then(
        &mut page,
        "#apply",
        "document.getElementById('notice') !== null",
    )
    .await;
    assert_eq!(
        text(&mut page, "document.getElementById('balance').textContent").await,
        "1,250"
    );
    let first_row = text(
        &mut page,
        "document.querySelector('#history tbody tr').innerText",
    )
    .await;
    assert!(
        first_row.contains("Goodwill for ticket 4711"),
        "{first_row}"
    );
    assert!(first_row.contains("console:ops"), "{first_row}");
    // Its instant is shown in the operator's zone, with the exact UTC instant on hover.
    let when = page
        .eval(
            "(() => { const t = document.querySelector('#history tbody tr time'); \
             return [t.textContent, t.title, t.getAttribute('datetime')]; })()",
        )
        .await
        .expect("the row's instant");
    let (shown, hover, utc) = (
        when[0].as_str().unwrap_or_default(),
        when[1].as_str().unwrap_or_default(),
        when[2].as_str().unwrap_or_default(),
    );
    assert!(shown.contains("GMT+9"), "shown in Tokyo time: {shown:?}");
    assert!(!shown.contains("UTC"), "{shown:?}");
    assert_eq!(hover, format!("{utc} (UTC)"));
    let utc_at = time::OffsetDateTime::parse(utc, &time::format_description::well_known::Rfc3339)
        .expect("an RFC 3339 instant");
    let tokyo = utc_at.to_offset(time::macros::offset!(+9));
    // The reader's locale picks a 24- or 12-hour clock.
    let (h24, m) = (tokyo.hour(), tokyo.minute());
    let h12 = if h24 % 12 == 0 { 12 } else { h24 % 12 };
    assert!(
        shown.contains(&format!("{h24:02}:{m:02}")) || shown.contains(&format!("{h12:02}:{m:02}")),
        "{shown:?} is {tokyo} in Tokyo"
    );
    shot(&mut page, db, "customer").await;
    assert_eq!(app.balance("alice").await, 1250);

    // The grant's event: the first delivery fails, and the console retries it now.
    let failed = "[...document.querySelectorAll('#deliveries tbody tr')]\
                  .some(r => r.innerText.includes('HTTP 500'))";
    let webhooks = format!("{}/console/webhooks", app.address);
    reload_until(&mut page, &webhooks, failed).await;
    shot(&mut page, db, "webhooks").await;
    click_then(
        &mut page,
        "#deliveries form button",
        "location.pathname === '/console/webhooks'",
    )
    .await;
    reload_until(
        &mut page,
        &webhooks,
        "document.querySelector('#deliveries .pill')?.textContent === 'succeeded'",
    )
    .await;
    assert_eq!(
        receiver.received().len(),
        2,
        "one failed attempt, one retry"
    );

    // The customer's page at phone width.
    page.goto(
        &format!("{}/console/customers/alice", app.address),
        PAGE_TIMEOUT,
    )
    .await
    .expect("the customer page");
    page.viewport(390, 844).await.expect("viewport");
    shot(&mut page, db, "customer-390").await;
    page.viewport(1280, 900).await.expect("viewport");

    // Switch the coupon off: the page shows it, and checkout refuses it.
    page.goto(&format!("{}/console/coupons", app.address), PAGE_TIMEOUT)
        .await
        .expect("coupons");
    click_then(
        &mut page,
        "#coupon-LAUNCH button",
        "document.querySelector('#coupon-LAUNCH .pill')?.textContent === 'off'",
    )
    .await;
    shot(&mut page, db, "coupons").await;
    let (status, refused, _) = app
        .post(
            "/payment/create-session",
            &app_token("alice", "default", None),
            json!({"channel": "sandbox", "type": "credits", "plan_id": pack["id"],
                "coupon_code": "LAUNCH", "success_url": "http://localhost:3000/ok"}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), refused["error"]["code"].clone()),
        (422, Value::from("COUPON_INVALID"))
    );

    // A second app in use: the operator switches to it and sees its customers only.
    let (status, body, _) = app
        .post(
            "/admin/credits/manual",
            &app_token("root", "acme", Some("admin")),
            json!({"user_id": "zoe", "amount": 70, "description": "acme welcome"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    page.goto(&format!("{}/console", app.address), PAGE_TIMEOUT)
        .await
        .expect("overview");
    click_then(
        &mut page,
        "a.switch",
        "location.pathname === '/console/apps'",
    )
    .await;
    shot(&mut page, db, "apps").await;
    click_then(
        &mut page,
        "button[aria-label='Switch to acme']",
        "location.pathname === '/console'",
    )
    .await;
    assert_eq!(
        text(
            &mut page,
            "document.querySelector('.app strong').textContent"
        )
        .await,
        "acme"
    );
    page.goto(&format!("{}/console/customers", app.address), PAGE_TIMEOUT)
        .await
        .expect("customers");
    let listed = text(&mut page, "document.getElementById('main').innerText").await;
    assert!(
        listed.contains("zoe") && !listed.contains("alice"),
        "{listed}"
    );

    page.close().await;
    browser.close().await;
    app.finish().await;
}

/// An end user's round: the host app asks for a portal URL, the user buys a credit pack through
/// the sandbox, comes back, checks in, and sees the balance follow.
async fn end_user_round_in_the_browser(db: Db) {
    let Some(chromium) = find_chromium() else {
        eprintln!("skipping the portal browser test: no Chromium (or set {CHROMIUM_ENV})");
        return;
    };
    let app = TestApp::spawn_with(db, |s| s.sandbox_enabled = true).await;
    let admin = admin_token("root");
    for plan in [
        json!({"name": "Starter pack", "kind": "credit_pack", "currency": "usd", "price": 499,
            "credits_included": 500, "description": "500 credits, never expire"}),
        json!({"name": "Pro", "kind": "subscription", "currency": "usd", "price_monthly": 1999,
            "price_yearly": 19900, "credits_included": 5000}),
    ] {
        let (status, body, _) = app.post("/admin/billing/plans", &admin, plan).await;
        assert_eq!(status, 200, "{body}");
    }
    app.admin_grant("dana", 120).await;
    // The app's portal branding, as the console's Portal page saves it.
    app.execute_sql(
        "INSERT INTO app_branding (app_key, display_name, accent_color, logo_url, updated_by, \
         updated_at) VALUES ('default', 'Acme AI', '#0b7a75', NULL, 'console:ops', \
         '2026-03-01 12:00:00')",
    )
    .await;
    let (status, session, _) = app
        .post(
            "/billing/portal-sessions",
            &app_token("dana", "default", None),
            json!({"return_url": "http://localhost:3000/account"}),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let portal = session["data"]["url"].as_str().unwrap().to_owned();

    let browser = Browser::launch(&chromium)
        .await
        .unwrap_or_else(|e| panic!("launching {}: {e}", chromium.display()));
    let mut page = browser.new_page().await.expect("a tab");
    page.viewport(1280, 900).await.expect("viewport");
    page.goto(&portal, PAGE_TIMEOUT)
        .await
        .expect("the portal loads");
    assert_eq!(
        text(&mut page, "document.getElementById('balance').textContent").await,
        "120"
    );
    assert_eq!(
        text(
            &mut page,
            "document.querySelector('.portal-head .brand').textContent"
        )
        .await,
        "Acme AI"
    );
    // The branding's colour is applied: its style rule passed the page's CSP.
    let header = text(
        &mut page,
        "getComputedStyle(document.querySelector('.portal-head')).backgroundColor",
    )
    .await;
    assert_eq!(header, "rgb(11, 122, 117)");
    shot(&mut page, db, "portal").await;

    // Buy the pack: the sandbox checkout opens; Pay completes it.
    click_then(
        &mut page,
        "[id^='plan-'] form button",
        "location.pathname.startsWith('/payment/sandbox/')",
    )
    .await;
    let checkout = text(&mut page, "document.body.innerText").await;
    assert!(
        checkout.contains("Starter pack") && checkout.contains("Pay 4.99 USD"),
        "{checkout}"
    );
    shot(&mut page, db, "sandbox").await;
    click_then(
        &mut page,
        "#pay",
        "document.getElementById('status')?.textContent === 'completed'",
    )
    .await;
    assert_eq!(app.balance("dana").await, 620);

    // Back on the portal: the new balance, then a check-in.
    page.goto(&portal, PAGE_TIMEOUT)
        .await
        .expect("the portal loads");
    assert_eq!(
        text(&mut page, "document.getElementById('balance').textContent").await,
        "620"
    );
    click_then(
        &mut page,
        "#checkin",
        "document.getElementById('notice') !== null",
    )
    .await;
    let after = app.balance("dana").await;
    assert!(after > 620, "the check-in's reward: {after}");
    assert_eq!(
        text(&mut page, "document.getElementById('balance').textContent").await,
        after.to_string()
    );
    assert_eq!(
        text(&mut page, "document.getElementById('streak').textContent").await,
        "1"
    );
    shot(&mut page, db, "portal-after").await;
    page.viewport(390, 844).await.expect("viewport");
    shot(&mut page, db, "portal-390").await;

    page.close().await;
    browser.close().await;
    app.finish().await;
}

/// A subscriber's round on the billing page: subscribe through the sandbox, cancel at the period
/// end, change their mind and keep it — and the API agrees at each step.
async fn subscription_round_in_the_browser(db: Db) {
    let Some(chromium) = find_chromium() else {
        eprintln!("skipping the subscription browser test: no Chromium (or set {CHROMIUM_ENV})");
        return;
    };
    let app = TestApp::spawn_with(db, |s| s.sandbox_enabled = true).await;
    let (status, body, _) = app
        .post(
            "/admin/billing/plans",
            &admin_token("root"),
            json!({"name": "Pro", "kind": "subscription", "currency": "usd",
                "price_monthly": 1999, "credits_included": 5000}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, max, _) = app
        .post(
            "/admin/billing/plans",
            &admin_token("root"),
            json!({"name": "Max", "kind": "subscription", "currency": "usd",
                "price_monthly": 4999, "credits_included": 8000}),
        )
        .await;
    assert_eq!(status, 200, "{max}");
    let max = max["data"]["id"].as_str().unwrap().to_owned();
    let (status, session, _) = app
        .post(
            "/billing/portal-sessions",
            &app_token("erin", "default", None),
            json!({"return_url": "http://localhost:3000/account"}),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let portal = session["data"]["url"].as_str().unwrap().to_owned();
    let subscription = || async {
        let (status, body, _) = app
            .get("/subscription", &app_token("erin", "default", None))
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    };

    let browser = Browser::launch(&chromium)
        .await
        .unwrap_or_else(|e| panic!("launching {}: {e}", chromium.display()));
    let mut page = browser.new_page().await.expect("a tab");
    page.viewport(1280, 900).await.expect("viewport");
    page.goto(&portal, PAGE_TIMEOUT)
        .await
        .expect("the portal loads");
    click_then(
        &mut page,
        "[id^='plan-'] form button",
        "location.pathname.startsWith('/payment/sandbox/')",
    )
    .await;
    click_then(
        &mut page,
        "#pay",
        "document.getElementById('status')?.textContent === 'completed'",
    )
    .await;
    assert_eq!(app.balance("erin").await, 5000);

    page.goto(&portal, PAGE_TIMEOUT)
        .await
        .expect("the portal loads");
    click_then(
        &mut page,
        "#cancel",
        "document.getElementById('resume') !== null",
    )
    .await;
    let shown = text(&mut page, "document.body.innerText").await;
    assert!(
        shown.contains("ends with the current period") && shown.contains("ends then"),
        "{shown}"
    );
    assert_eq!(subscription().await["cancel_at_period_end"], true);
    shot(&mut page, db, "portal-canceling").await;

    click_then(
        &mut page,
        "#resume",
        "document.getElementById('cancel') !== null",
    )
    .await;
    let shown = text(&mut page, "document.body.innerText").await;
    assert!(shown.contains("renews as before"), "{shown}");
    let sub = subscription().await;
    assert_eq!(
        (
            sub["status"].as_str(),
            sub["cancel_at_period_end"].as_bool()
        ),
        (Some("active"), Some(false))
    );
    assert_eq!(
        app.balance("erin").await,
        5000,
        "cancelling takes nothing back"
    );

    // Up to Max: the whole period is left, so all 3,000 more credits come now.
    click_then(
        &mut page,
        &format!("#switch-{max}"),
        "document.body.innerText.includes('Your plan is changed')",
    )
    .await;
    let shown = text(&mut page, "document.body.innerText").await;
    assert!(shown.contains("+3,000 credits"), "{shown}");
    assert_eq!(subscription().await["plan_id"], max.as_str());
    assert_eq!(app.balance("erin").await, 8000);
    shot(&mut page, db, "portal-plan-changed").await;

    page.close().await;
    browser.close().await;
    app.finish().await;
}
