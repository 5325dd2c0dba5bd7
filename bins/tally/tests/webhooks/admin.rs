//! The admin API: SSRF refusals, bad input that changes nothing, app isolation, secret rotation.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Body, Db, TestApp, admin_token, app_token, assert_error, user_token};
use crate::receiver::Receiver;
use crate::{create_endpoint, spawn, verify};

backend_tests!(
    private_receiver_urls_are_refused_by_default,
    bad_requests_change_nothing,
    rotation_signs_with_both_secrets_for_a_day,
);

async fn endpoints(app: &TestApp) -> Vec<Value> {
    let (status, body, _) = app
        .get("/admin/webhooks/endpoints", &admin_token("root"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

async fn post_endpoint(app: &TestApp, body: Value) -> crate::common::Reply {
    app.request(
        Method::POST,
        "/admin/webhooks/endpoints",
        Some(&admin_token("root")),
        &[],
        Body::Json(body),
    )
    .await
}

/// This machine's host name, which resolves (through /etc/hosts) to a loopback address on
/// most systems; an unresolvable name is refused all the same.
fn own_hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost.localdomain".into())
}

async fn private_receiver_urls_are_refused_by_default(db: Db) {
    let app = TestApp::spawn(db).await;
    let host = own_hostname();
    let refused = [
        "http://127.0.0.1:9000/hook".to_owned(),
        "http://10.1.2.3/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://192.168.1.10/".to_owned(),
        "http://[::1]:8080/".to_owned(),
        "http://localhost:8080/hook".to_owned(),
        "http://api.localhost/hook".to_owned(),
        format!("http://{host}/hook"),
        "http://0x7f000001/".to_owned(),
        "ftp://93.184.216.34/hook".to_owned(),
        "http://user:pass@93.184.216.34/hook".to_owned(),
        "not a url".to_owned(),
    ];
    for url in &refused {
        let reply = post_endpoint(&app, json!({ "url": url })).await;
        assert!(
            matches!(reply.0.as_u16(), 400 | 422),
            "{url} was not refused: {}",
            reply.1
        );
        if reply.0 == 422 {
            assert_error(&reply, 422, "INVALID_WEBHOOK_URL");
        }
    }
    assert!(endpoints(&app).await.is_empty());

    // A public address is accepted; moving it into the private network is refused.
    let (status, body, _) =
        post_endpoint(&app, json!({ "url": "https://93.184.216.34/hook" })).await;
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    let reply = app
        .put(
            &format!("/admin/webhooks/endpoints/{id}"),
            &admin_token("root"),
            json!({ "url": "http://10.0.0.5/hook" }),
        )
        .await;
    assert_error(&reply, 422, "INVALID_WEBHOOK_URL");
    assert_eq!(
        endpoints(&app).await[0]["url"],
        "https://93.184.216.34/hook"
    );

    // The development switch allows them.
    let dev = spawn(db).await;
    let (status, body, _) =
        post_endpoint(&dev, json!({ "url": "http://127.0.0.1:9000/hook" })).await;
    assert_eq!(status, 201, "{body}");
    app.finish().await;
    dev.finish().await;
}

async fn bad_requests_change_nothing(db: Db) {
    let app = spawn(db).await;
    let receiver = Receiver::ok().await;
    let (id, _) = create_endpoint(&app, &receiver.url, Some(&["credits.granted"])).await;
    let before = endpoints(&app).await;
    assert!(
        before[0].get("secret").is_none(),
        "the secret is shown once"
    );
    let admin = admin_token("root");
    let path = format!("/admin/webhooks/endpoints/{id}");

    // Unauthenticated and non-admin callers.
    for (method, p) in [
        (Method::GET, "/admin/webhooks/endpoints".to_owned()),
        (Method::POST, "/admin/webhooks/endpoints".to_owned()),
        (Method::PUT, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::GET, "/admin/webhooks/deliveries".to_owned()),
        (Method::PUT, "/admin/webhooks/settings".to_owned()),
    ] {
        let body = Body::Json(json!({ "url": receiver.url, "low_balance_threshold": 1 }));
        let reply = app
            .request(method.clone(), &p, None, &[], body.clone())
            .await;
        assert_error(&reply, 401, "UNAUTHORIZED");
        let reply = app
            .request(method, &p, Some(&user_token("alice")), &[], body)
            .await;
        assert_error(&reply, 403, "FORBIDDEN");
    }

    // Malformed and out-of-range bodies.
    for body in [
        json!({}),
        json!({ "url": receiver.url, "event_types": [] }),
        json!({ "url": receiver.url, "event_types": ["credits.granted", "credits.stolen"] }),
        json!({ "url": receiver.url, "description": "x".repeat(501) }),
        json!({ "url": receiver.url, "description": "billing\u{0}hook" }),
        json!({ "url": receiver.url, "secret": "whsec_mine" }),
        json!({ "url": 7 }),
    ] {
        let reply = post_endpoint(&app, body.clone()).await;
        assert_error(&reply, 400, "VALIDATION_ERROR");
    }
    // Both refused fields of one request are named.
    let reply = post_endpoint(
        &app,
        json!({ "url": receiver.url, "event_types": ["credits.stolen"], "description": "a\u{7}" }),
    )
    .await;
    assert_error(&reply, 400, "VALIDATION_ERROR");
    assert_eq!(
        crate::common::error_fields(&reply.1),
        ["event_types", "description"]
    );
    for body in [
        json!({ "event_types": ["nope"] }),
        json!({ "enabled": "yes" }),
        json!({ "url": null }),
        json!({ "rotate": true }),
    ] {
        let reply = app.put(&path, &admin, body).await;
        assert_error(&reply, 400, "VALIDATION_ERROR");
    }
    for body in [
        json!({ "low_balance_threshold": -1 }),
        json!({}),
        json!({ "low_balance_threshold": "1" }),
    ] {
        let reply = app.put("/admin/webhooks/settings", &admin, body).await;
        assert_error(&reply, 400, "VALIDATION_ERROR");
    }
    for query in [
        "status=bogus",
        "limit=0",
        "limit=101",
        "event_type=nope",
        "before=x",
    ] {
        let reply = app
            .get(&format!("/admin/webhooks/deliveries?{query}"), &admin)
            .await;
        assert_error(&reply, 400, "VALIDATION_ERROR");
    }

    // Another app sees nothing of this one.
    let other = app_token("root", "other", Some("admin"));
    assert_error(&app.get(&path, &other).await, 404, "NOT_FOUND");
    assert_error(
        &app.put(&path, &other, json!({ "enabled": false })).await,
        404,
        "NOT_FOUND",
    );
    let reply = app
        .request(Method::DELETE, &path, Some(&other), &[], Body::Empty)
        .await;
    assert_error(&reply, 404, "NOT_FOUND");
    let reply = app
        .request(
            Method::POST,
            "/admin/webhooks/deliveries/999/retry",
            Some(&admin),
            &[],
            Body::Empty,
        )
        .await;
    assert_error(&reply, 404, "NOT_FOUND");

    assert_eq!(endpoints(&app).await, before);
    let (_, settings, _) = app.get("/admin/webhooks/settings", &admin).await;
    assert!(settings["data"]["low_balance_threshold"].is_null());

    // Deleting is for real, and twice is 404.
    let reply = app
        .request(Method::DELETE, &path, Some(&admin), &[], Body::Empty)
        .await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    let reply = app
        .request(Method::DELETE, &path, Some(&admin), &[], Body::Empty)
        .await;
    assert_error(&reply, 404, "NOT_FOUND");
    assert!(endpoints(&app).await.is_empty());
    app.finish().await;
}

async fn rotation_signs_with_both_secrets_for_a_day(db: Db) {
    let app = spawn(db).await;
    let receiver = Receiver::ok().await;
    let (id, old) = create_endpoint(&app, &receiver.url, Some(&["credits.granted"])).await;
    let (status, body, _) = app
        .put(
            &format!("/admin/webhooks/endpoints/{id}"),
            &admin_token("root"),
            json!({ "rotate_secret": true }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let new = body["data"]["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(new.starts_with("whsec_"));
    assert!(body["data"]["previous_secret_expires_at"].is_string());

    app.admin_grant("erin", 1).await;
    let first = receiver.wait_for(1, 20).await;
    assert_eq!(first[0].header("webhook-signature").split(' ').count(), 2);
    verify(&first[0], &old).expect("the old secret still verifies");
    verify(&first[0], &new).expect("the new secret verifies");

    // A day later only the new secret signs.
    app.clock
        .advance(time::Duration::hours(24) + time::Duration::seconds(1));
    app.admin_grant("erin", 1).await;
    let both = receiver.wait_for(2, 20).await;
    assert_eq!(both[1].header("webhook-signature").split(' ').count(), 1);
    verify(&both[1], &new).unwrap();
    assert!(verify(&both[1], &old).is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.finish().await;
}
