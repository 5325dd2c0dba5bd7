//! CORS: configured origins get the headers and their preflight answered; other origins, and
//! every origin when nothing is configured, get none.

use reqwest::Method;

use crate::common::{Db, TestApp, user_token};

backend_tests!(cors_for_configured_origins_only);

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, format!("{}/credits/balance", app.address))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap()
}

async fn get_from(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .get(format!("{}/credits/balance", app.address))
        .header("origin", origin)
        .bearer_auth(user_token("alice"))
        .send()
        .await
        .unwrap()
}

async fn cors_for_configured_origins_only(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.cors_origins = "https://app.example, http://localhost:3000".into();
    })
    .await;
    let r = preflight(&app, "https://app.example").await;
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert!(h.get("access-control-allow-credentials").is_none());
    let r = get_from(&app, "http://localhost:3000").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!(r.headers()["vary"], "Origin");
    // Another origin: no CORS headers, and its preflight is not answered.
    let r = get_from(&app, "https://evil.example").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = preflight(&app, "https://evil.example").await;
    assert_ne!(r.status(), 204);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    app.finish().await;

    // Nothing configured: no origin is allowed.
    let app = TestApp::spawn(db).await;
    let r = preflight(&app, "https://app.example").await;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = get_from(&app, "https://app.example").await;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    app.finish().await;

    // A wildcard never comes with credentials.
    let error = TestApp::startup_error(db, |s| {
        s.cors_origins = "*".into();
        s.cors_allow_credentials = true;
    })
    .await;
    assert!(error.contains("cors_allow_credentials"), "{error}");
    let error = TestApp::startup_error(db, |s| s.cors_origins = "app.example".into()).await;
    assert!(error.contains("cors_origins"), "{error}");
}
