//! The sandbox channel over HTTP: the checkout page, Pay and Cancel driving the webhook path.

use reqwest::Method;
use serde_json::json;

use crate::common::{Body, Db, TestApp};
use crate::{create_session, events, orders, seed_plans, spawn, subscription};

backend_tests!(sandbox_pay_and_cancel, sandbox_off_by_default);

/// `POST url` with no body, as a page's button does; answers status and page text.
pub(crate) async fn form_post(app: &TestApp, url: &str) -> (u16, String) {
    let r = app.client.post(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn sandbox_pay_and_cancel(db: Db) {
    let app = spawn(db, None, None).await;
    let (pro, pack) = seed_plans(&app).await;
    let (status, body) = create_session(
        &app,
        "alice",
        json!({"channel": "sandbox", "type": "subscription", "plan_id": pro,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let order = body["data"]["order_id"].as_str().unwrap().to_owned();
    let url = body["data"]["url"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("{}/payment/sandbox/sbx_{order}", app.address));

    let page = app.client.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("id=\"pay\"") && html.contains("id=\"cancel\""),
        "{html}"
    );
    assert!(html.contains("pending"));

    let (status, html) = form_post(&app, &format!("{url}/pay")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("completed"), "{html}");
    assert_eq!(app.balance("alice").await, 1000);
    assert_eq!(orders(&app, "alice").await[0]["status"], "completed");
    assert_eq!(subscription(&app, "alice").await["status"], "active");
    // Pressing Pay again delivers the same events: duplicates, nothing more.
    let (status, _) = form_post(&app, &format!("{url}/pay")).await;
    assert_eq!(status, 200);
    assert_eq!(app.balance("alice").await, 1000);
    let recorded = events(&app).await;
    assert!(recorded.iter().all(|e| e["channel"] == "sandbox"));
    assert_eq!(
        recorded.len(),
        2,
        "checkout completed + first period paid: {recorded:?}"
    );

    // A pack abandoned with Cancel: expired, nothing granted.
    let (_, body) = create_session(
        &app,
        "bob",
        json!({"channel": "sandbox", "type": "credits", "plan_id": pack,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    let url = body["data"]["url"].as_str().unwrap().to_owned();
    let (status, html) = form_post(&app, &format!("{url}/cancel")).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(orders(&app, "bob").await[0]["status"], "expired");
    assert_eq!(app.balance("bob").await, 0);
    // The sandbox's webhook refuses what it did not sign.
    let (status, body, _) = app
        .request(
            Method::POST,
            "/payment/webhook/sandbox",
            None,
            &[("tally-sandbox-signature", "t=1,v1=00")],
            Body::Raw(Some("application/json"), b"{}".to_vec()),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (400, Some("INVALID_SIGNATURE"))
    );
    // Unknown sessions are not found.
    let r = app
        .client
        .get(format!("{}/payment/sandbox/sbx_ord_nope", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    app.finish().await;
}

async fn sandbox_off_by_default(db: Db) {
    let app = TestApp::spawn(db).await;
    let (pro, _) = seed_plans(&app).await;
    let (status, body) = create_session(
        &app,
        "alice",
        json!({"channel": "sandbox", "type": "subscription", "plan_id": pro,
            "success_url": "http://localhost:3000/ok"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("PROVIDER_NOT_CONFIGURED"))
    );
    assert!(orders(&app, "alice").await.is_empty());
    let r = app
        .client
        .get(format!("{}/payment/sandbox/sbx_x", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    app.finish().await;
}
