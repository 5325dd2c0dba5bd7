//! Who gets into the console, and what a refused request leaves behind.

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::common::{Db, TestApp, admin_token, console_link};

backend_tests!(
    links_work_once_and_sessions_guard_every_page,
    forms_need_the_session_csrf_token,
    stored_values_are_escaped,
    console_can_be_switched_off
);

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn token_of(url: &str) -> String {
    url.split_once("token=").unwrap().1.to_owned()
}

/// Signs in with a fresh link; answers the `Cookie` header value.
async fn sign_in(app: &TestApp) -> String {
    let url = console_link(app, "default", "ops").await;
    let reply = client()
        .post(format!("{}/console/login", app.address))
        .form(&[("token", token_of(&url))])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert_eq!(reply.headers()[LOCATION], "/console");
    let cookie = reply.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "not over plain http: {cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

async fn page(app: &TestApp, path: &str, cookie: Option<&str>) -> (StatusCode, String) {
    let mut request = client().get(format!("{}{path}", app.address));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let reply = request.send().await.unwrap();
    (reply.status(), reply.text().await.unwrap())
}

/// Posts a form with the session's cookie; answers the status.
async fn post_form<T: serde::Serialize + ?Sized>(
    app: &TestApp,
    cookie: &str,
    path: &str,
    fields: &T,
) -> StatusCode {
    client()
        .post(format!("{}{path}", app.address))
        .header(COOKIE, cookie)
        .form(fields)
        .send()
        .await
        .unwrap()
        .status()
}

/// The CSRF token of the session behind `cookie`, read from a page's forms.
async fn csrf(app: &TestApp, cookie: &str) -> String {
    let (_, html) = page(app, "/console/coupons", Some(cookie)).await;
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..at + 64].to_owned()
}

async fn links_work_once_and_sessions_guard_every_page(db: Db) {
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 100).await;
    // No session: every page redirects to sign-in and shows no data.
    for path in [
        "/console",
        "/console/customers",
        "/console/customers/alice",
        "/console/coupons",
    ] {
        let (status, html) = page(&app, path, None).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
        assert!(!html.contains("alice"), "{path}: {html}");
        let (status, _) = page(&app, path, Some("tally_console=forged")).await;
        assert_eq!(
            status,
            StatusCode::SEE_OTHER,
            "{path} with a made-up session"
        );
    }
    // Tokens a user or an admin uses for the API open nothing here.
    let reply = client()
        .get(format!("{}/console/customers/alice", app.address))
        .bearer_auth(admin_token("root"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);

    // A link works once; an altered one never.
    let url = console_link(&app, "default", "ops").await;
    let token = token_of(&url);
    let (status, html) = page(&app, &url.replace(&app.address, ""), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("id=\"sign-in\""), "{html}");
    let mut altered = token.clone();
    altered.replace_range(0..1, if token.starts_with('a') { "b" } else { "a" });
    for (candidate, expected) in [
        (altered.as_str(), StatusCode::FORBIDDEN),
        (token.as_str(), StatusCode::SEE_OTHER),
        (token.as_str(), StatusCode::FORBIDDEN),
        ("", StatusCode::FORBIDDEN),
    ] {
        let reply = client()
            .post(format!("{}/console/login", app.address))
            .form(&[("token", candidate)])
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), expected, "{candidate:?}");
        if expected == StatusCode::FORBIDDEN {
            assert!(reply.headers().get(SET_COOKIE).is_none());
            let page = reply.text().await.unwrap();
            assert!(page.contains("Link not valid"), "a page for people: {page}");
        }
    }
    // An expired link.
    let url = console_link(&app, "default", "ops").await;
    app.execute_sql(&format!(
        "UPDATE console_links SET expires_at = '2000-01-01 00:00:00' WHERE token_hash = '{}'",
        sha256_hex(&token_of(&url))
    ))
    .await;
    let reply = client()
        .post(format!("{}/console/login", app.address))
        .form(&[("token", token_of(&url))])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);

    // A session reads pages, and ends after its idle time.
    let cookie = sign_in(&app).await;
    let (status, html) = page(&app, "/console/customers", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("alice"), "{html}");
    for header in [
        "content-security-policy",
        "x-frame-options",
        "referrer-policy",
    ] {
        let reply = client()
            .get(format!("{}/console", app.address))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert!(reply.headers().contains_key(header), "{header}");
    }
    app.clock.advance(time::Duration::minutes(61));
    let (status, _) = page(&app, "/console/customers", Some(&cookie)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "idle for over an hour");

    // Signing out ends the session.
    let cookie = sign_in(&app).await;
    let token = csrf(&app, &cookie).await;
    let reply = client()
        .post(format!("{}/console/logout", app.address))
        .header(COOKIE, &cookie)
        .form(&[("csrf", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert!(
        reply.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, _) = page(&app, "/console", Some(&cookie)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    app.finish().await;
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex_lower(&sha2::Sha256::digest(s.as_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn forms_need_the_session_csrf_token(db: Db) {
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 100).await;
    let (status, coupon, _) = app
        .post(
            "/admin/billing/coupons",
            &admin_token("root"),
            json!({"code": "SAVE10", "percent_off": 10, "duration": "once"}),
        )
        .await;
    assert_eq!(status, 200, "{coupon}");
    let coupon_id = coupon["data"]["id"].as_str().unwrap().to_owned();
    let cookie = sign_in(&app).await;
    let other_session = sign_in(&app).await;
    let wrong = csrf(&app, &other_session).await;
    let post = |path: String, fields: Vec<(&'static str, String)>| {
        let (cookie, address) = (cookie.clone(), app.address.clone());
        async move {
            client()
                .post(format!("{address}{path}"))
                .header(COOKIE, cookie)
                .form(&fields)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for csrf in [
        None,
        Some(String::new()),
        Some(wrong.clone()),
        Some("x".repeat(64)),
    ] {
        let mut grant = vec![
            ("amount", "500".to_owned()),
            ("description", "forged".to_owned()),
            ("key", "k-1".to_owned()),
        ];
        let mut switch = vec![("active", "false".to_owned())];
        if let Some(token) = &csrf {
            grant.push(("csrf", token.clone()));
            switch.push(("csrf", token.clone()));
        }
        assert_eq!(
            post("/console/customers/alice/adjust".into(), grant).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            post(
                format!("/console/coupons/{coupon_id}/active"),
                switch.clone()
            )
            .await,
            StatusCode::FORBIDDEN
        );
        let mut plan = vec![
            ("name", "Forged".to_owned()),
            ("kind", "credit_pack".to_owned()),
            ("currency", "usd".to_owned()),
            ("credits", "10".to_owned()),
            ("price", "1.00".to_owned()),
        ];
        let mut endpoint = vec![("url", "https://hooks.example/forged".to_owned())];
        if let Some(token) = &csrf {
            plan.push(("csrf", token.clone()));
            endpoint.push(("csrf", token.clone()));
        }
        for (path, fields) in [
            ("/console/plans", plan),
            ("/console/webhooks/endpoints", endpoint),
            ("/console/webhooks/deliveries/1/retry", switch.clone()),
            ("/console/logout", switch),
        ] {
            assert_eq!(
                post(path.into(), fields).await,
                StatusCode::FORBIDDEN,
                "{path}"
            );
        }
    }
    // Nothing changed, and the session is still open.
    assert_eq!(app.balance("alice").await, 100);
    let (_, plans, _) = app.get("/admin/billing/plans", &admin_token("root")).await;
    assert_eq!(plans["data"], json!([]));
    let (_, endpoints, _) = app
        .get("/admin/webhooks/endpoints", &admin_token("root"))
        .await;
    assert_eq!(endpoints["data"], json!([]));
    assert_eq!(
        page(&app, "/console", Some(&cookie)).await.0,
        StatusCode::OK
    );
    let (_, coupons, _) = app
        .get("/admin/billing/coupons", &admin_token("root"))
        .await;
    assert_eq!(coupons["data"][0]["active"], true);
    // With the right token the same form works, and the operator is the actor.
    let right = csrf(&app, &cookie).await;
    let status = post(
        "/console/customers/alice/adjust".into(),
        vec![
            ("csrf", right.clone()),
            ("amount", "25".into()),
            ("description", "goodwill".into()),
            ("key", "k-2".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // The same form sent twice (same key) grants once.
    let status = post(
        "/console/customers/alice/adjust".into(),
        vec![
            ("csrf", right.clone()),
            ("amount", "25".into()),
            ("description", "goodwill".into()),
            ("key", "k-2".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(app.balance("alice").await, 125);
    let history = app.admin_history("default", "&user_id=alice").await;
    assert_eq!(history[0]["actor"], "console:ops", "{history:?}");
    // A deduction past the balance is refused unless allowed in so many words.
    let status = post(
        "/console/customers/alice/adjust".into(),
        vec![
            ("csrf", right.clone()),
            ("amount", "-500".into()),
            ("description", "too much".into()),
            ("key", "k-3".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(app.balance("alice").await, 125);
    app.finish().await;
}

async fn stored_values_are_escaped(db: Db) {
    let app = TestApp::spawn(db).await;
    let evil = "<script>alert(1)</script>";
    let (status, body, _) = app
        .post(
            "/admin/credits/manual",
            &admin_token("root"),
            json!({"user_id": "<img src=x onerror=alert(1)>", "amount": 5, "description": evil}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let cookie = sign_in(&app).await;
    let customer = "/console/customers/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E";
    for path in ["/console/customers", customer] {
        let (status, html) = page(&app, path, Some(&cookie)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        assert!(!html.contains("<script>alert"), "{path}");
        assert!(!html.contains("<img src=x"), "{path}");
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{path}: {html}"
        );
    }
    // The link to the customer is the percent-encoded path that opened it.
    let (_, list) = page(&app, "/console/customers", Some(&cookie)).await;
    assert!(list.contains(customer), "{list}");
    let (_, html) = page(&app, customer, Some(&cookie)).await;
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    app.finish().await;
}

async fn console_can_be_switched_off(db: Db) {
    let app = TestApp::spawn_with(db, |s| s.console_enabled = false).await;
    let (status, _) = page(&app, "/console", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = page(&app, "/console/login?token=abc", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.finish().await;
}

backend_tests!(orders_show_their_provider_events);

async fn orders_show_their_provider_events(db: Db) {
    let app = TestApp::spawn_with(db, |s| s.sandbox_enabled = true).await;
    let (status, pack, _) = app
        .post(
            "/admin/billing/plans",
            &admin_token("root"),
            json!({"name": "Pack", "kind": "credit_pack", "currency": "usd", "price": 499,
                "credits_included": 500}),
        )
        .await;
    assert_eq!(status, 200, "{pack}");
    let (status, session, _) = app
        .post(
            "/payment/create-session",
            &crate::common::app_token("alice", "default", None),
            json!({"channel": "sandbox", "type": "credits", "plan_id": pack["data"]["id"],
                "success_url": "http://localhost:3000/ok"}),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let order = session["data"]["order_id"].as_str().unwrap().to_owned();
    let paid = client()
        .post(format!("{}/pay", session["data"]["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), StatusCode::OK);
    let cookie = sign_in(&app).await;
    let (status, list) = page(&app, "/console/orders?status=completed", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains(&order) && list.contains("4.99 USD"), "{list}");
    let (_, none) = page(&app, "/console/orders?status=refunded", Some(&cookie)).await;
    assert!(
        !none.contains(&order) && none.contains("No orders match"),
        "{none}"
    );
    let (status, detail) = page(&app, &format!("/console/orders/{order}"), Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(detail.contains("checkout.completed"), "{detail}");
    assert!(detail.contains("Pack (1)"), "the plan by name: {detail}");
    assert!(detail.contains("applied"), "{detail}");
    let (status, log) = page(&app, "/console/events", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        log.contains("checkout.completed") && log.contains(&format!("/console/orders/{order}")),
        "{log}"
    );
    let (status, _) = page(
        &app,
        "/console/orders/ord_000000000000000000000000",
        Some(&cookie),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.finish().await;
}

backend_tests!(checkin_settings_and_codes_from_the_console);

async fn checkin_settings_and_codes_from_the_console(db: Db) {
    let app = TestApp::spawn(db).await;
    let cookie = sign_in(&app).await;
    let token = csrf(&app, &cookie).await;
    let post = |path: &'static str, fields: Vec<(&'static str, String)>| {
        let (cookie, address) = (cookie.clone(), app.address.clone());
        async move {
            let reply = client()
                .post(format!("{address}{path}"))
                .header(COOKIE, cookie)
                .form(&fields)
                .send()
                .await
                .unwrap();
            (reply.status(), reply.text().await.unwrap())
        }
    };
    // Check-in: rewards 5, 10, 20 in Berlin time; a bad time zone is refused and changes nothing.
    let (status, html) = post(
        "/console/checkin",
        vec![
            ("csrf", token.clone()),
            ("enabled", "yes".into()),
            ("rewards", "5, 10, 20".into()),
            ("timezone", "Europe/Berlin".into()),
            ("credits_expire_days", "".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let (_, config, _) = app.get("/admin/checkin/config", &admin_token("root")).await;
    assert_eq!(config["data"]["rewards"], json!([5, 10, 20]));
    assert_eq!(config["data"]["timezone"], "Europe/Berlin");
    let (status, html) = post(
        "/console/checkin",
        vec![
            ("csrf", token.clone()),
            ("rewards", "5".into()),
            ("timezone", "Mars/Olympus".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("Not applied"), "{html}");
    let (_, after, _) = app.get("/admin/checkin/config", &admin_token("root")).await;
    assert_eq!(after, config);

    // Codes: a batch of three, listed and downloadable; a description that looks like a
    // spreadsheet formula is defused in the CSV.
    let (status, _) = post(
        "/console/codes",
        vec![
            ("csrf", token.clone()),
            ("count", "3".into()),
            ("credits", "50".into()),
            ("max_uses", "1".into()),
            ("description", "=HYPERLINK(\"x\")".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = post(
        "/console/codes",
        vec![
            ("csrf", token.clone()),
            ("count", "0".into()),
            ("credits", "50".into()),
            ("max_uses", "1".into()),
            ("description", "none".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, codes, _) = app.get("/admin/credits/codes", &admin_token("root")).await;
    let codes = codes["data"].as_array().unwrap().clone();
    assert_eq!(codes.len(), 3);
    let reply = client()
        .get(format!("{}/console/codes.csv", app.address))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert!(
        reply.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = reply.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("code,batch,credits"));
    for code in &codes {
        assert!(csv.contains(code["code"].as_str().unwrap()), "{csv}");
    }
    assert!(lines[1].contains("\"'=HYPERLINK(\"\"x\"\")\""), "{csv}");
    // Without a session the CSV is not served.
    let (status, _) = page(&app, "/console/codes.csv", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    app.finish().await;
}

backend_tests!(gateway_admins_get_in_and_users_never);

const GATEWAY_SECRET: &str = "console-gateway-secret-0123456789";

async fn gateway_admins_get_in_and_users_never(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.gateway_secret = Some(tally::Secret::new(GATEWAY_SECRET));
    })
    .await;
    app.admin_grant("alice", 100).await;
    let get = |headers: Vec<(&'static str, &'static str)>| {
        let address = app.address.clone();
        async move {
            let mut request = client().get(format!("{address}/console/customers/alice"));
            for (k, v) in headers {
                request = request.header(k, v);
            }
            let reply = request.send().await.unwrap();
            (reply.status(), reply.text().await.unwrap())
        }
    };
    let admin = vec![
        ("x-gateway-secret", GATEWAY_SECRET),
        ("x-user-id", "ops-lead"),
        ("x-user-role", "admin"),
    ];
    let (status, html) = get(admin.clone()).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("ops-lead"), "the operator is named: {html}");
    for refused in [
        vec![
            ("x-gateway-secret", GATEWAY_SECRET),
            ("x-user-id", "alice"),
            ("x-user-role", "user"),
        ],
        vec![("x-gateway-secret", GATEWAY_SECRET), ("x-user-id", "alice")],
        vec![
            ("x-gateway-secret", "wrong-gateway-secret-000000000"),
            ("x-user-id", "ops"),
            ("x-user-role", "admin"),
        ],
        vec![("x-user-id", "ops"), ("x-user-role", "admin")],
    ] {
        let (status, html) = get(refused.clone()).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{refused:?}");
        assert!(!html.contains("alice"));
    }
    // Its forms carry a token the gateway's next request is checked against; the grant records
    // the operator.
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    let token = html[at..at + 64].to_owned();
    let post = |csrf: String| {
        let (address, admin) = (app.address.clone(), admin.clone());
        async move {
            let mut request = client().post(format!("{address}/console/customers/alice/adjust"));
            for (k, v) in admin {
                request = request.header(k, v);
            }
            request
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("amount", "5"),
                    ("description", "via the gateway"),
                    ("key", "gw-1"),
                ])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(post("0".repeat(64)).await, StatusCode::FORBIDDEN);
    assert_eq!(app.balance("alice").await, 100);
    assert_eq!(post(token).await, StatusCode::SEE_OTHER);
    assert_eq!(app.balance("alice").await, 105);
    let history = app.admin_history("default", "&user_id=alice").await;
    assert_eq!(history[0]["actor"], "console:ops-lead");
    app.finish().await;
}

backend_tests!(portal_branding_from_the_console);

async fn portal_branding_from_the_console(db: Db) {
    let app = TestApp::spawn(db).await;
    let cookie = sign_in(&app).await;
    let token = csrf(&app, &cookie).await;
    let save = |fields: Vec<(&'static str, String)>| {
        let (cookie, address) = (cookie.clone(), app.address.clone());
        async move {
            client()
                .post(format!("{address}/console/branding"))
                .header(COOKIE, cookie)
                .form(&fields)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let good = vec![
        ("csrf", token.clone()),
        ("display_name", "Acme <AI>".to_owned()),
        ("accent_color", "#0B7A75".to_owned()),
        ("logo_url", "https://cdn.acme.example/logo.png".to_owned()),
    ];
    assert_eq!(save(good).await, StatusCode::OK);
    for (field, value) in [("accent_color", "red"), ("logo_url", "javascript:alert(1)")] {
        let fields = vec![("csrf", token.clone()), (field, value.to_owned())];
        assert_eq!(save(fields).await, StatusCode::BAD_REQUEST, "{field}");
    }
    let (status, session, _) = app
        .post(
            "/billing/portal-sessions",
            &crate::common::user_token("alice"),
            json!({"return_url": "http://localhost/"}),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    let reply = client()
        .get(session["data"]["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let csp = reply.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let html = reply.text().await.unwrap();
    assert!(
        html.contains("Acme &lt;AI&gt;"),
        "escaped display name: {html}"
    );
    assert!(
        html.contains("src=\"https://cdn.acme.example/logo.png\""),
        "{html}"
    );
    assert!(
        html.contains("--accent:#0b7a75"),
        "the refused edits changed nothing: {html}"
    );
    assert!(
        csp.contains("'sha256-"),
        "the colour rule is allowed by its hash only: {csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    app.finish().await;
}

backend_tests!(overview_figures_are_counted_every_30_seconds);

async fn overview_figures_are_counted_every_30_seconds(db: Db) {
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 1000).await;
    let cookie = sign_in(&app).await;
    let granted = |html: &str| {
        let at = html.find("id=\"granted-30\">").expect("the granted card") + 16;
        html[at..].split('<').next().unwrap_or_default().to_owned()
    };
    let (status, html) = page(&app, "/console", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(granted(&html), "1,000");
    app.admin_grant("bob", 500).await;
    let (_, html) = page(&app, "/console", Some(&cookie)).await;
    assert_eq!(granted(&html), "1,000", "the figures of 30 seconds ago");
    app.clock.advance(time::Duration::seconds(31));
    let (_, html) = page(&app, "/console", Some(&cookie)).await;
    assert_eq!(granted(&html), "1,500", "counted again");
    // The API's statistics are always counted afresh.
    let (_, stats, _) = app.get("/admin/stats", &admin_token("root")).await;
    let total: i64 = stats["data"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["credits"]["granted"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 1500);
    app.finish().await;
}

backend_tests!(plans_are_edited_in_the_console);

async fn plans_are_edited_in_the_console(db: Db) {
    let app = TestApp::spawn(db).await;
    let (status, pack, _) = app
        .post(
            "/admin/billing/plans",
            &admin_token("root"),
            json!({"name": "Pack", "kind": "credit_pack", "currency": "usd", "price": 499,
                "credits_included": 500, "stripe_price_id": "price_pack"}),
        )
        .await;
    assert_eq!(status, 200, "{pack}");
    let id = pack["data"]["id"].as_str().unwrap().to_owned();
    let cookie = sign_in(&app).await;
    let token = csrf(&app, &cookie).await;
    let (status, html) = page(&app, &format!("/console/plans/{id}"), Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("value=\"4.99\"") && html.contains("value=\"price_pack\""),
        "{html}"
    );
    let save = |fields: Vec<(&'static str, &'static str)>, csrf: Option<String>| {
        let (cookie, address, id) = (cookie.clone(), app.address.clone(), id.clone());
        async move {
            let mut fields: Vec<(&str, String)> =
                fields.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
            if let Some(token) = csrf {
                fields.push(("csrf", token));
            }
            client()
                .post(format!("{address}/console/plans/{id}"))
                .header(COOKIE, cookie)
                .form(&fields)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let edit = vec![
        ("name", "Bigger pack"),
        ("credits", "600"),
        ("price", "5.49"),
        ("credits_expire_days", ""),
        ("stripe_price", "price_pack_2"),
        ("creem_product", ""),
        ("description", "600 credits"),
    ];
    let before = app
        .get("/admin/billing/plans", &admin_token("root"))
        .await
        .1;
    assert_eq!(save(edit.clone(), None).await, StatusCode::FORBIDDEN);
    let mut bad = edit.clone();
    bad[2] = ("price", "abc");
    assert_eq!(
        save(bad, Some(token.clone())).await,
        StatusCode::BAD_REQUEST
    );
    let mut no_price = edit.clone();
    no_price[2] = ("price", "");
    assert_eq!(
        save(no_price, Some(token.clone())).await,
        StatusCode::BAD_REQUEST,
        "a pack needs its price"
    );
    assert_eq!(
        app.get("/admin/billing/plans", &admin_token("root"))
            .await
            .1,
        before
    );
    assert_eq!(save(edit, Some(token)).await, StatusCode::SEE_OTHER);
    let (_, plans, _) = app.get("/admin/billing/plans", &admin_token("root")).await;
    let plan = &plans["data"][0];
    assert_eq!(
        (
            plan["name"].clone(),
            plan["price"].clone(),
            plan["credits_included"].clone()
        ),
        (json!("Bigger pack"), json!(549), json!(600))
    );
    assert_eq!(plan["stripe_price_id"], "price_pack_2");
    assert_eq!(plan["updated_by"], "console:ops");
    app.finish().await;
}

backend_tests!(coupons_are_edited_in_the_console);

async fn coupons_are_edited_in_the_console(db: Db) {
    let app = TestApp::spawn(db).await;
    let (status, coupon, _) = app
        .post(
            "/admin/billing/coupons",
            &admin_token("root"),
            json!({"code": "SPRING", "percent_off": 15, "duration": "once", "max_redemptions": 10}),
        )
        .await;
    assert_eq!(status, 200, "{coupon}");
    let id = coupon["data"]["id"].as_str().unwrap().to_owned();
    let cookie = sign_in(&app).await;
    let token = csrf(&app, &cookie).await;
    let (status, html) = page(&app, &format!("/console/coupons/{id}"), Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("value=\"10\""), "{html}");
    let (status, _) = page(&app, "/console/coupons/999999", Some(&cookie)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let save = |max: &'static str, expires: &'static str| {
        let (cookie, address, id, token) = (
            cookie.clone(),
            app.address.clone(),
            id.clone(),
            token.clone(),
        );
        async move {
            client()
                .post(format!("{address}/console/coupons/{id}"))
                .header(COOKIE, cookie)
                .form(&[
                    ("csrf", token.as_str()),
                    ("max_redemptions", max),
                    ("expires_at", expires),
                ])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(save("0", "").await, StatusCode::BAD_REQUEST);
    assert_eq!(
        save("5", "2020-01-01T00:00").await,
        StatusCode::BAD_REQUEST,
        "in the past"
    );
    assert_eq!(save("5", "soon").await, StatusCode::BAD_REQUEST);
    let (_, coupons, _) = app
        .get("/admin/billing/coupons", &admin_token("root"))
        .await;
    assert_eq!(coupons["data"][0]["max_redemptions"], 10);
    assert_eq!(save("", "2027-06-30T18:00").await, StatusCode::SEE_OTHER);
    let (_, coupons, _) = app
        .get("/admin/billing/coupons", &admin_token("root"))
        .await;
    assert_eq!(
        coupons["data"][0]["max_redemptions"],
        serde_json::Value::Null
    );
    assert_eq!(coupons["data"][0]["expires_at"], "2027-06-30T18:00:00Z");
    app.finish().await;
}

backend_tests!(operators_switch_between_apps_in_use);

async fn operators_switch_between_apps_in_use(db: Db) {
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 100).await;
    let (status, body, _) = app
        .post(
            "/admin/credits/manual",
            &crate::common::app_token("root", "acme", Some("admin")),
            json!({"user_id": "<b>bob</b>", "amount": 7, "description": "acme grant"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let cookie = sign_in(&app).await;
    let token = csrf(&app, &cookie).await;

    // Both apps are listed, the current one marked; the layout links to the list.
    let (status, html) = page(&app, "/console/apps", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("href=\"/console/apps\""), "{html}");
    assert!(
        html.contains("<td>acme</td>") && html.contains("<td>default</td>"),
        "{html}"
    );
    assert!(html.contains("aria-label=\"Switch to acme\""), "{html}");
    assert!(
        !html.contains("aria-label=\"Switch to default\""),
        "the current app: {html}"
    );

    let switch = |csrf: String, to: &'static str| {
        let (cookie, address) = (cookie.clone(), app.address.clone());
        async move {
            let reply = client()
                .post(format!("{address}/console/apps"))
                .header(COOKIE, cookie)
                .form(&[("csrf", csrf.as_str()), ("app", to)])
                .send()
                .await
                .unwrap();
            (reply.status(), reply.text().await.unwrap())
        }
    };
    // Refused: a forged form, an app not registered (a typo opens no empty ledger). The session
    // stays where it was.
    let (status, _) = switch("0".repeat(64), "acme").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, html) = switch(token.clone(), "acmee").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        html.contains("no app named &quot;acmee&quot; is registered"),
        "{html}"
    );
    let (_, html) = page(&app, "/console/customers", Some(&cookie)).await;
    assert!(html.contains("alice") && !html.contains("bob"), "{html}");

    // Switched: the pages show the other app's customers, escaped, and not the first app's.
    let (status, _) = switch(token.clone(), "acme").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, html) = page(&app, "/console/customers", Some(&cookie)).await;
    assert!(html.contains("&lt;b&gt;bob&lt;/b&gt;"), "{html}");
    assert!(!html.contains("alice"), "{html}");
    let (status, _) = page(&app, "/console/customers/alice", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "looking never opens an account");
    let (_, html) = page(&app, "/console/customers", Some(&cookie)).await;
    assert!(!html.contains("alice"), "{html}");
    assert_eq!(app.balance_in("<b>bob</b>", "acme").await, 7);
    app.finish().await;
}

backend_tests!(plan_features_yearly_ids_and_coupon_plans_from_the_console);

async fn plan_features_yearly_ids_and_coupon_plans_from_the_console(db: Db) {
    let app = TestApp::spawn(db).await;
    let admin = admin_token("root");
    let (status, pro, _) = app
        .post(
            "/admin/billing/plans",
            &admin,
            json!({"name": "Pro", "kind": "subscription", "currency": "usd",
                "price_monthly": 1999, "price_yearly": 19900, "credits_included": 1000,
                "features": ["Chat"]}),
        )
        .await;
    assert_eq!(status, 200, "{pro}");
    let pro = pro["data"]["id"].as_str().unwrap().to_owned();
    let (status, coupon, _) = app
        .post(
            "/admin/billing/coupons",
            &admin,
            json!({"code": "PROONLY", "percent_off": 20, "duration": "once"}),
        )
        .await;
    assert_eq!(status, 200, "{coupon}");
    let coupon = coupon["data"]["id"].as_str().unwrap().to_owned();
    let cookie = sign_in(&app).await;
    let token = csrf(&app, &cookie).await;
    let post = |path: String, fields: Vec<(String, String)>| {
        let (app, cookie) = (&app, cookie.clone());
        async move { post_form(app, &cookie, &path, &fields).await }
    };
    let fields = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        v.push(("csrf".into(), token.clone()));
        v
    };

    // The subscription's form shows its features and the yearly ids.
    let (_, html) = page(&app, &format!("/console/plans/{pro}"), Some(&cookie)).await;
    assert!(html.contains("id=\"plan-features\""), "{html}");
    assert!(html.contains("name=\"stripe_price_yearly\""), "{html}");
    let plan_form = |features: &str| {
        fields(&[
            ("name", "Pro"),
            ("credits", "1000"),
            ("price_monthly", "19.99"),
            ("price_yearly", "199.00"),
            ("credits_expire_days", ""),
            ("stripe_price", "price_m"),
            ("creem_product", ""),
            ("stripe_price_yearly", "price_y"),
            ("creem_product_yearly", "prod_y"),
            ("description", ""),
            ("features", features),
        ])
    };
    // 51 features is one too many: refused, nothing changed.
    let too_many: String = (0..51).map(|i| format!("F{i}\n")).collect();
    let path = format!("/console/plans/{pro}");
    assert_eq!(
        post(path.clone(), plan_form(&too_many)).await,
        StatusCode::BAD_REQUEST
    );
    let (_, plan, _) = app.get("/admin/billing/plans", &admin).await;
    assert_eq!(plan["data"][0]["features"], json!(["Chat"]), "{plan}");
    assert_eq!(
        post(
            path,
            plan_form("Chat\r\n\r\n  Image generation  \nPriority support")
        )
        .await,
        StatusCode::SEE_OTHER
    );
    let (_, plan, _) = app.get("/admin/billing/plans", &admin).await;
    let plan = &plan["data"][0];
    assert_eq!(
        plan["features"],
        json!(["Chat", "Image generation", "Priority support"]),
        "blank lines dropped, each line trimmed"
    );
    assert_eq!(
        (
            plan["stripe_price_id_yearly"].clone(),
            plan["creem_product_id_yearly"].clone(),
            plan["stripe_price_id_monthly"].clone()
        ),
        (json!("price_y"), json!("prod_y"), json!("price_m"))
    );

    // The coupon's plans: ticking Pro restricts it; an unknown plan is refused; none ticked
    // means every plan again.
    let (_, html) = page(&app, &format!("/console/coupons/{coupon}"), Some(&cookie)).await;
    assert!(html.contains(&format!("name=\"plan:{pro}\"")), "{html}");
    let path = format!("/console/coupons/{coupon}");
    let plan_box = format!("plan:{pro}");
    let restrict = |ticked: &[&str]| {
        let mut f = fields(&[
            ("max_redemptions", ""),
            ("expires_at", ""),
            ("plans_listed", "1"),
        ]);
        f.extend(ticked.iter().map(|k| ((*k).to_owned(), "on".to_owned())));
        f
    };
    assert_eq!(
        post(path.clone(), restrict(&["plan:nope"])).await,
        StatusCode::BAD_REQUEST
    );
    let coupon_plans = || async {
        let (_, list, _) = app.get("/admin/billing/coupons", &admin).await;
        list["data"][0]["plan_ids"].clone()
    };
    assert_eq!(coupon_plans().await, json!([]));
    assert_eq!(
        post(path.clone(), restrict(&[&plan_box])).await,
        StatusCode::SEE_OTHER
    );
    assert_eq!(coupon_plans().await, json!([pro]));
    let (_, html) = page(&app, &format!("/console/coupons/{coupon}"), Some(&cookie)).await;
    assert!(html.contains("value=\"on\" checked"), "ticked now: {html}");
    assert_eq!(post(path, restrict(&[])).await, StatusCode::SEE_OTHER);
    assert_eq!(coupon_plans().await, json!([]));
    app.finish().await;
}

backend_tests!(webhook_endpoints_are_edited_in_the_console);

async fn webhook_endpoints_are_edited_in_the_console(db: Db) {
    let app = TestApp::spawn(db).await;
    let admin = admin_token("root");
    let (status, created, _) = app
        .post(
            "/admin/webhooks/endpoints",
            &admin,
            json!({"url": "https://93.184.216.34/tally", "description": "billing"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    let stored = || async {
        let (_, list, _) = app.get("/admin/webhooks/endpoints", &admin).await;
        list["data"][0].clone()
    };
    let before = stored().await;
    let cookie = sign_in(&app).await;
    let token = csrf(&app, &cookie).await;
    let (status, html) = page(
        &app,
        &format!("/console/webhooks/endpoints/{id}"),
        Some(&cookie),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("value=\"https://93.184.216.34/tally\""),
        "{html}"
    );
    assert!(
        html.contains("name=\"event:credits.granted\" value=\"on\" checked"),
        "{html}"
    );
    assert!(
        !html.contains("name=\"event:credits.spent\" value=\"on\" checked"),
        "off by default: {html}"
    );
    let path = format!("/console/webhooks/endpoints/{id}/edit");
    let form = |csrf: &str, url: &str, events: &[&str]| {
        let mut f = vec![
            ("csrf".to_owned(), csrf.to_owned()),
            ("url".to_owned(), url.to_owned()),
            ("description".to_owned(), "refunds only".to_owned()),
        ];
        f.extend(
            events
                .iter()
                .map(|e| (format!("event:{e}"), "on".to_owned())),
        );
        f
    };
    // Refused, nothing changed: a forged form, no event type, an unknown one, a private URL.
    let forged = form(
        &"0".repeat(64),
        "https://93.184.216.35/new",
        &["order.refunded"],
    );
    assert_eq!(
        post_form(&app, &cookie, &path, &forged).await,
        StatusCode::FORBIDDEN
    );
    for (url, events) in [
        ("https://93.184.216.35/new", &[][..]),
        ("https://93.184.216.35/new", &["order.exploded"][..]),
        ("http://127.0.0.1:9000/hook", &["order.refunded"][..]),
    ] {
        let status = post_form(&app, &cookie, &path, &form(&token, url, events)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url} {events:?}");
    }
    assert_eq!(stored().await, before);
    // Saved: the API shows the new URL, description and event types; the secret stays.
    let good = form(
        &token,
        "https://93.184.216.35/new",
        &["order.refunded", "credits.spent"],
    );
    assert_eq!(
        post_form(&app, &cookie, &path, &good).await,
        StatusCode::SEE_OTHER
    );
    let after = stored().await;
    assert_eq!(after["url"], "https://93.184.216.35/new");
    assert_eq!(after["description"], "refunds only");
    let mut types: Vec<String> = after["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    types.sort();
    assert_eq!(types, ["credits.spent", "order.refunded"]);
    let (status, _) = page(&app, "/console/webhooks/endpoints/nope", Some(&cookie)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.finish().await;
}
