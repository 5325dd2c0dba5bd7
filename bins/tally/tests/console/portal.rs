//! The end users' billing portal: who may open a portal session, what a portal URL shows (its
//! user's data only, escaped), check-in from the page, and expiry.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Db, SERVICE_KEY, TestApp, admin_token, app_token, assert_error, user_token};

backend_tests!(
    portal_sessions_open_one_users_page,
    portal_checkin_and_expiry
);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A portal URL for `user` of the default app, through the user's own token.
async fn portal_url(app: &TestApp, user: &str) -> String {
    let (status, body, _) = app
        .post(
            "/billing/portal-sessions",
            &user_token(user),
            json!({"return_url": "http://localhost:3000/account"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let url = body["data"]["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{}/portal/", app.address)),
        "{url}"
    );
    assert!(body["data"]["expires_at"].is_string());
    url
}

async fn get(url: &str) -> (StatusCode, String) {
    let reply = client().get(url).send().await.unwrap();
    (reply.status(), reply.text().await.unwrap())
}

async fn portal_sessions_open_one_users_page(db: Db) {
    let app = TestApp::spawn(db).await;
    let (status, body, _) = app
        .post(
            "/admin/credits/manual",
            &admin_token("root"),
            json!({"user_id": "alice", "amount": 1234, "description": "<script>alert(1)</script>"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.admin_grant("bob", 777).await;

    // Refused requests open nothing.
    for (token, body, status, code) in [
        (
            user_token("alice"),
            json!({"return_url": "https://evil.example/"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            user_token("alice"),
            json!({"return_url": "not a url"}),
            400,
            "VALIDATION_ERROR",
        ),
        (user_token("alice"), json!({}), 400, "VALIDATION_ERROR"),
        (
            "not-a-token".to_owned(),
            json!({"return_url": "http://localhost/"}),
            401,
            "UNAUTHORIZED",
        ),
    ] {
        let reply = app
            .post("/billing/portal-sessions", &token, body.clone())
            .await;
        assert_error(&reply, status, code);
    }
    for (key, body, status, code) in [
        (
            SERVICE_KEY,
            json!({"user_id": "", "return_url": "http://localhost/"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            SERVICE_KEY,
            json!({"user_id": "bob", "return_url": "ftp://localhost/"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "svc-wrong",
            json!({"user_id": "bob", "return_url": "http://localhost/"}),
            401,
            "UNAUTHORIZED",
        ),
    ] {
        let reply = app
            .post("/internal/portal-sessions", key, body.clone())
            .await;
        assert_error(&reply, status, code);
    }

    // Alice's page shows Alice's balance and history, escaped, and nothing of Bob's.
    let alice = portal_url(&app, "alice").await;
    let (status, html) = get(&alice).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("1,234"), "{html}");
    // As a figure (the page's links carry random tokens, which may hold any digits).
    assert!(!html.contains(">777<") && !html.contains("+777"), "{html}");
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains("http://localhost:3000/account"),
        "the way back: {html}"
    );
    // A service asks for Bob's; another app's user with the same name sees that app only.
    let (status, body, _) = app
        .post(
            "/internal/portal-sessions",
            SERVICE_KEY,
            json!({"user_id": "bob", "return_url": "http://localhost/"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, html) = get(body["data"]["url"].as_str().unwrap()).await;
    assert!(
        html.contains(r#"id="balance">777<"#) && !html.contains("1,234"),
        "{html}"
    );
    let (status, body, _) = app
        .post(
            "/billing/portal-sessions",
            &app_token("alice", "other", None),
            json!({"return_url": "http://localhost/"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, html) = get(body["data"]["url"].as_str().unwrap()).await;
    assert!(!html.contains("1,234"), "another app's alice: {html}");

    // An altered token opens nothing.
    let mut altered = alice.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'a' { 'b' } else { 'a' });
    for url in [altered, format!("{}/portal/abc", app.address)] {
        let (status, html) = get(&url).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{url}");
        assert!(!html.contains("1,234"));
    }
    app.finish().await;
}

async fn portal_checkin_and_expiry(db: Db) {
    let app = TestApp::spawn(db).await;
    let url = portal_url(&app, "carol").await;
    let checkin = || async {
        let reply = client()
            .post(format!("{url}/checkin"))
            .send()
            .await
            .unwrap();
        (reply.status(), reply.text().await.unwrap())
    };
    let (status, html) = checkin().await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Checked in: +"), "{html}");
    let balance = app.balance("carol").await;
    assert!(balance > 0);
    let (status, html) = checkin().await;
    assert_eq!(status, StatusCode::CONFLICT, "a second check-in today");
    assert!(html.contains("Not applied"), "{html}");
    assert_eq!(app.balance("carol").await, balance);
    // No purchase yet: the provider's portal has no customer to open, and the page says so.
    let reply = client().post(format!("{url}/manage")).send().await.unwrap();
    assert_eq!(reply.status(), StatusCode::NOT_FOUND);
    let html = reply.text().await.unwrap();
    assert!(
        html.contains("Not applied") && html.contains("no billing customer"),
        "{html}"
    );
    // A plan that does not exist cannot be bought.
    let reply = client()
        .post(format!("{url}/buy"))
        .form(&[("plan_id", "999"), ("channel", "sandbox")])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::NOT_FOUND);
    // Fifteen minutes on, the URL opens nothing and changes nothing.
    app.clock.advance(time::Duration::minutes(16));
    let (status, html) = get(&url).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        !html.contains(&balance.to_string()) || !html.contains("Credits"),
        "{html}"
    );
    app.clock.advance(time::Duration::days(1));
    let (status, _) = checkin().await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(app.balance("carol").await, balance);
    let _: Value = json!(null);
    app.finish().await;
}
