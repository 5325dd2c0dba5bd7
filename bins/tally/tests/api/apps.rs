//! The app registry: a request naming an unregistered app is refused and opens nothing; apps
//! are registered by configuration and through the admin API; service keys can live in the
//! database, shown once, listed without their secret, and revoked.

use reqwest::Method;
use serde_json::{Value, json};
use tally::Secret;

use crate::common::{
    Body, Db, GATEWAY_SECRET, OTHER_SERVICE_KEY, SERVICE_KEY, TestApp, admin_token, app_token,
    assert_error, user_token,
};

backend_tests!(
    unknown_apps_are_refused_and_open_nothing,
    apps_are_registered_and_changed,
    service_keys_live_in_the_database
);

/// Every registered app, as the default app's admins see them.
async fn registry(app: &TestApp) -> Value {
    let (status, body, _) = app.get("/admin/apps", &admin_token("root")).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

fn keys(apps: &Value) -> Vec<&str> {
    apps.as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap())
        .collect()
}

async fn unknown_apps_are_refused_and_open_nothing(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.apps = " acme, tokyo ".into();
        s.gateway_secret = Some(Secret::new(GATEWAY_SECRET));
    })
    .await;
    // `default`, those of TALLY_APPS, and `other`, which a configured service key acts for.
    let before = registry(&app).await;
    assert_eq!(keys(&before), ["acme", "default", "other", "tokyo"]);
    assert_eq!(before[0]["name"], "acme");
    assert_eq!(before[0]["time_zone"], "UTC");
    assert_eq!(before[0]["currency"], "usd");

    // A typo in a token's app claim, for a user and for an admin, or in the gateway's header.
    let typo_user = app_token("alice", "acmee", None);
    let typo_admin = app_token("root", "acmee", Some("admin"));
    let grant = json!({ "user_id": "alice", "amount": 5, "description": "x" });
    let replies = [
        app.get("/credits/balance", &typo_user).await,
        app.checkin(&typo_user).await,
        app.post("/admin/credits/manual", &typo_admin, grant.clone())
            .await,
        app.get("/admin/apps", &typo_admin).await,
        app.request(
            Method::GET,
            "/credits/balance",
            None,
            &[
                ("x-gateway-secret", GATEWAY_SECRET),
                ("x-user-id", "alice"),
                ("x-app-key", "acmee"),
            ],
            Body::Empty,
        )
        .await,
    ];
    for reply in &replies {
        assert_error(reply, 403, "UNKNOWN_APP");
        let message = reply.1["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("'acmee' is not registered") && message.contains("TALLY_APPS"),
            "{message}"
        );
    }
    // The same requests in a registered app are served.
    let (status, body, _) = app
        .post(
            "/admin/credits/manual",
            &app_token("root", "tokyo", Some("admin")),
            grant.clone(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.balance_in("alice", "tokyo").await, 5);

    // Nothing was opened: registering the typo now shows an empty app.
    assert_eq!(registry(&app).await, before);
    let (status, body, _) = app
        .post(
            "/admin/apps",
            &admin_token("root"),
            json!({ "key": "acmee" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(app.balance_in("alice", "acmee").await, 0);
    assert!(app.admin_history("acmee", "").await.is_empty());
    let (status, body, _) = app.checkin(&typo_user).await;
    assert_eq!(status, 200, "served once registered: {body}");
    app.finish().await;
}

async fn apps_are_registered_and_changed(db: Db) {
    let app = TestApp::spawn(db).await;
    let root = admin_token("root");
    let other_admin = app_token("root", "other", Some("admin"));
    let before = registry(&app).await;

    // Refused, and nothing registered: malformed, out of range, unauthorised.
    let refusals = [
        (
            app.post("/admin/apps", &root, json!({ "key": "bad key" }))
                .await,
            400,
            "VALIDATION_ERROR",
        ),
        (
            app.post("/admin/apps", &root, json!(["tokyo"])).await,
            400,
            "VALIDATION_ERROR",
        ),
        (
            app.post("/admin/apps", &root, json!({ "key": "tokyo", "tz": "UTC" }))
                .await,
            400,
            "VALIDATION_ERROR",
        ),
        (
            app.post(
                "/admin/apps",
                &root,
                json!({ "key": "tokyo", "name": null }),
            )
            .await,
            400,
            "VALIDATION_ERROR",
        ),
        (
            app.post(
                "/admin/apps",
                &user_token("root"),
                json!({ "key": "tokyo" }),
            )
            .await,
            403,
            "FORBIDDEN",
        ),
        (
            app.post("/admin/apps", &other_admin, json!({ "key": "tokyo" }))
                .await,
            403,
            "FORBIDDEN",
        ),
        (
            app.request(
                Method::POST,
                "/admin/apps",
                None,
                &[],
                Body::Json(json!({ "key": "tokyo" })),
            )
            .await,
            401,
            "UNAUTHORIZED",
        ),
    ];
    for (reply, status, code) in &refusals {
        assert_error(reply, *status, code);
    }
    // Every problem of one request is listed.
    let (status, body, _) = app
        .post(
            "/admin/apps",
            &root,
            json!({ "key": "tokyo", "name": "a\u{0}b", "time_zone": "Mars/Olympus", "currency": "xyz" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        crate::common::error_fields(&body),
        ["name", "time_zone", "currency"],
        "{body}"
    );
    assert_eq!(registry(&app).await, before);

    // Registered, then replayed: a conflict that changes nothing.
    let spec = json!({ "key": "tokyo", "name": "Tokyo shop", "time_zone": "Asia/Tokyo", "currency": "JPY" });
    let (status, created, _) = app.post("/admin/apps", &root, spec.clone()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["data"]["currency"], "jpy");
    assert_eq!(created["data"]["time_zone"], "Asia/Tokyo");
    let (status, body, _) = app
        .post(
            "/admin/apps",
            &root,
            json!({ "key": "tokyo", "name": "Another" }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "CONFLICT");
    let after = registry(&app).await;
    assert_eq!(keys(&after), ["acme", "default", "other", "tokyo"]);
    assert_eq!(after[3]["name"], "Tokyo shop");

    // The app's defaults: a check-in day in its time zone, new plans in its currency.
    let tokyo_admin = app_token("root", "tokyo", Some("admin"));
    let (status, body, _) = app.get("/admin/checkin/config", &tokyo_admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["timezone"], "Asia/Tokyo");
    let (status, body, _) = app
        .post(
            "/admin/billing/plans",
            &tokyo_admin,
            json!({ "name": "Pack", "kind": "credit_pack", "price": 500, "credits_included": 100 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["currency"], "jpy");

    // Changed: fields named replace, the rest stay; others' admins change their own only.
    let (status, body, _) = app
        .put("/admin/apps/tokyo", &root, json!({ "name": "Tokyo" }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["data"]["name"], &body["data"]["time_zone"]),
        (&json!("Tokyo"), &json!("Asia/Tokyo"))
    );
    let unchanged = registry(&app).await;
    for (reply, status, code) in [
        (
            app.put("/admin/apps/tokyo", &other_admin, json!({ "name": "Mine" }))
                .await,
            403,
            "FORBIDDEN",
        ),
        (
            app.put("/admin/apps/nowhere", &root, json!({ "name": "X" }))
                .await,
            404,
            "NOT_FOUND",
        ),
        (
            app.put("/admin/apps/tokyo", &root, json!({ "currency": "btc" }))
                .await,
            400,
            "VALIDATION_ERROR",
        ),
        (
            app.put("/admin/apps/tokyo", &root, json!({ "key": "kyoto" }))
                .await,
            400,
            "VALIDATION_ERROR",
        ),
    ] {
        assert_error(&reply, status, code);
    }
    assert_eq!(registry(&app).await, unchanged);
    let (status, body, _) = app
        .put(
            "/admin/apps/other",
            &other_admin,
            json!({ "currency": "EUR" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = app.get("/admin/apps", &other_admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        keys(&body["data"]),
        ["other"],
        "an app's admins see their own"
    );
    assert_eq!(body["data"][0]["currency"], "eur");
    app.finish().await;
}

async fn service_keys_live_in_the_database(db: Db) {
    let app = TestApp::spawn(db).await;
    let root = admin_token("root");
    let other_admin = app_token("root", "other", Some("admin"));
    let grant = |key: String, n: u32| {
        let app = &app;
        async move {
            app.post(
                "/internal/credits/grant",
                &key,
                json!({
                    "user_id": "alice", "amount": 3, "description": "reward",
                    "idempotency_key": format!("k{n}"),
                }),
            )
            .await
        }
    };

    // Refused, and nothing stored.
    for (body, status) in [
        (json!({ "name": "" }), 400),
        (json!({ "name": "two\nlines" }), 400),
        (
            json!({ "name": "x", "secret": "mine-0123456789abcdef" }),
            400,
        ),
        (json!({}), 400),
    ] {
        let reply = app.post("/admin/service-keys", &root, body).await;
        assert_eq!(reply.0, status, "{}", reply.1);
    }
    assert_error(
        &app.post(
            "/admin/service-keys",
            &user_token("root"),
            json!({ "name": "x" }),
        )
        .await,
        403,
        "FORBIDDEN",
    );
    let (status, body, _) = app.get("/admin/service-keys", &root).await;
    assert_eq!((status.as_u16(), body["data"].clone()), (200, json!([])));

    // Made: the secret is shown once and opens the service API of the admin's app.
    let (status, made, _) = app
        .post(
            "/admin/service-keys",
            &root,
            json!({ "name": "chat backend" }),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let secret = made["data"]["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("tally_sk_") && secret.len() == 57,
        "{secret}"
    );
    assert_eq!(made["data"]["prefix"], json!(&secret[..13]));
    assert_eq!(made["data"]["created_by"], "root");
    let id = made["data"]["id"].as_str().unwrap().to_owned();
    let (status, body, _) = grant(secret.clone(), 1).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.balance("alice").await, 3);

    // Listed without the secret, to its own app only.
    let (_, list, _) = app.get("/admin/service-keys", &root).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["data"][0]["name"], "chat backend");
    assert!(!list.to_string().contains(&secret[13..]), "{list}");
    let (_, theirs, _) = app.get("/admin/service-keys", &other_admin).await;
    assert_eq!(theirs["data"], json!([]));

    // Another app's admin cannot revoke it; its own app's key acts in its own app.
    assert_error(
        &app.request(
            Method::DELETE,
            &format!("/admin/service-keys/{id}"),
            Some(&other_admin),
            &[],
            Body::Empty,
        )
        .await,
        404,
        "NOT_FOUND",
    );
    let (status, body, _) = grant(secret.clone(), 2).await;
    assert_eq!(status, 200, "{body}");
    let (status, theirs, _) = app
        .post(
            "/admin/service-keys",
            &other_admin,
            json!({ "name": "other's" }),
        )
        .await;
    assert_eq!(status, 201, "{theirs}");
    let (status, body, _) = grant(theirs["data"]["secret"].as_str().unwrap().into(), 3).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.balance_in("alice", "other").await, 3);
    assert_eq!(app.balance("alice").await, 6);

    // Revoked: calls with it are refused; revoking again answers the same record.
    let path = format!("/admin/service-keys/{id}");
    let revoke = || app.request(Method::DELETE, &path, Some(&root), &[], Body::Empty);
    let (status, revoked, _) = revoke().await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["data"]["revoked_at"].is_string(), "{revoked}");
    let reply = grant(secret.clone(), 4).await;
    assert_error(&reply, 401, "UNAUTHORIZED");
    let (status, again, _) = revoke().await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["revoked_at"], revoked["data"]["revoked_at"]);
    assert_eq!(app.balance("alice").await, 6);
    for missing in [
        "/admin/service-keys/999999",
        "/admin/service-keys/not-an-id",
    ] {
        let reply = app
            .request(Method::DELETE, missing, Some(&root), &[], Body::Empty)
            .await;
        assert_error(&reply, 404, "NOT_FOUND");
    }

    // The configured keys keep working beside the stored ones.
    let (status, body, _) = grant(SERVICE_KEY.into(), 5).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = grant(OTHER_SERVICE_KEY.into(), 6).await;
    assert_eq!(status, 200, "{body}");
    app.finish().await;
}
