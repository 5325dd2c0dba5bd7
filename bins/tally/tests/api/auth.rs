//! Who gets in: bearer JWTs (HS256 and the asymmetric algorithms, audience and issuer), the
//! opt-in gateway headers, service keys; and the 401/403 answers for everyone else.

use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::Method;
use serde_json::json;

use tally::Secret;

use crate::common::{
    Body, Db, GATEWAY_SECRET, OTHER_SERVICE_KEY, Reply, SERVICE_KEY, TestApp, admin_token,
    assert_error, b64url, claims, fixture, hs256, sign, unix_now, user_token,
};

backend_tests!(
    bearer_tokens,
    roles_and_service_keys,
    rs256_public_key,
    es256_and_eddsa_public_keys,
    audience_and_issuer,
    gateway_headers,
);

async fn balance_with(app: &TestApp, headers: &[(&str, &str)]) -> Reply {
    app.request(Method::GET, "/credits/balance", None, headers, Body::Empty)
        .await
}

#[track_caller]
fn assert_unauthorized(reply: &Reply, what: &str) {
    assert_eq!(
        (reply.0.as_u16(), reply.1["error"]["code"].as_str()),
        (401, Some("UNAUTHORIZED")),
        "{what}: {}",
        reply.1
    );
    assert_eq!(
        reply.2.get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..]),
        "{what}: 401 without WWW-Authenticate"
    );
}

async fn bearer_tokens(db: Db) {
    let app = TestApp::spawn(db).await;
    let grant = app.admin_grant("alice", 42).await;
    assert_eq!(grant["balance_after"], json!(42));

    let good = user_token("alice");
    let (status, body, _) = app.get("/credits/balance", &good).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["balance"], json!(42));
    // The scheme is case-insensitive.
    let reply = balance_with(&app, &[("authorization", &format!("bearer {good}"))]).await;
    assert_eq!(reply.0, 200, "{}", reply.1);

    let now = unix_now();
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64url(claims("alice", Some("admin"), None).to_string().as_bytes());
    let alg_none = format!("{header}.{payload}.");
    let mut no_exp = claims("alice", None, None);
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut no_sub = claims("alice", None, None);
    no_sub.as_object_mut().unwrap().remove("sub");
    let mut expired = claims("alice", None, None);
    expired["exp"] = json!(now - 120);
    let mut exp_text = claims("alice", None, None);
    exp_text["exp"] = json!((now + 3600).to_string());
    let mut not_yet = claims("alice", None, None);
    not_yet["nbf"] = json!(now + 600);
    let wrong_secret = sign(
        &claims("alice", None, None),
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-that-is-long-enough-0123456789"),
    );
    let tampered = {
        // Alice's valid signature over a payload that now says bob.
        let parts: Vec<&str> = good.split('.').collect();
        let bob = b64url(claims("bob", None, None).to_string().as_bytes());
        format!("{}.{bob}.{}", parts[0], parts[2])
    };
    let cases: Vec<(&str, String)> = vec![
        ("Token scheme", format!("Token {good}")),
        ("Basic scheme", "Basic YWxpY2U6c2VjcmV0".into()),
        ("bare Bearer", "Bearer".into()),
        ("Bearer and a space", "Bearer ".into()),
        ("token without scheme", good.clone()),
        ("garbage token", "Bearer not.a.jwt".into()),
        ("random text", "Bearer hello".into()),
        (
            "expired beyond leeway",
            format!("Bearer {}", hs256(&expired)),
        ),
        ("not valid yet", format!("Bearer {}", hs256(&not_yet))),
        ("wrong signature", format!("Bearer {wrong_secret}")),
        ("tampered payload", format!("Bearer {tampered}")),
        ("alg none", format!("Bearer {alg_none}")),
        (
            "alg none, signature kept",
            format!("Bearer {alg_none}{}", good.split('.').nth(2).unwrap()),
        ),
        ("no exp", format!("Bearer {}", hs256(&no_exp))),
        ("exp as a string", format!("Bearer {}", hs256(&exp_text))),
        ("no sub", format!("Bearer {}", hs256(&no_sub))),
        (
            "service key as a user token",
            format!("Bearer {SERVICE_KEY}"),
        ),
    ];
    assert_unauthorized(&balance_with(&app, &[]).await, "no Authorization header");
    for (name, value) in &cases {
        let reply = balance_with(&app, &[("authorization", value)]).await;
        assert_unauthorized(&reply, name);
        // The same credentials do not reach any other route either.
        let reply = app
            .request(
                Method::POST,
                "/checkin",
                None,
                &[("authorization", value)],
                Body::Empty,
            )
            .await;
        assert_unauthorized(&reply, name);
    }
    // Within the leeway (30 s) an expired token still counts.
    let mut recent = claims("alice", None, None);
    recent["exp"] = json!(now - 5);
    assert_eq!(app.get("/credits/balance", &hs256(&recent)).await.0, 200);
    assert!(
        app.admin_history("default", "&type=checkin")
            .await
            .is_empty(),
        "a refused check-in was recorded"
    );
    app.finish().await;
}

async fn roles_and_service_keys(db: Db) {
    let app = TestApp::spawn(db).await;
    let (user, admin) = (user_token("alice"), admin_token("root"));
    let explicit_user = hs256(&claims("alice", Some("user"), None));
    let config =
        json!({ "enabled": true, "rewards": [1], "timezone": "UTC", "credits_expire_days": null });
    let manual = json!({ "user_id": "alice", "amount": 5, "description": "x" });
    for token in [&user, &explicit_user] {
        for reply in [
            app.get("/admin/credits/transactions", token).await,
            app.get("/admin/checkin/config", token).await,
            app.put("/admin/checkin/config", token, config.clone())
                .await,
            app.post("/admin/credits/manual", token, manual.clone())
                .await,
        ] {
            assert_error(&reply, 403, "FORBIDDEN");
        }
    }
    assert_eq!(app.get("/admin/credits/transactions", &admin).await.0, 200);
    // Admins are users too.
    assert_eq!(app.get("/credits/balance", &admin).await.0, 200);

    let check = json!({ "user_id": "alice", "amount": 1 });
    let consume =
        json!({ "user_id": "alice", "amount": 1, "description": "x", "idempotency_key": "k" });
    for token in [
        user.as_str(),
        admin.as_str(),
        "svc-not-a-key-0123456789",
        SERVICE_KEY.trim_end_matches('f'),
    ] {
        assert_unauthorized(
            &app.post("/internal/credits/check", token, check.clone())
                .await,
            token,
        );
        assert_unauthorized(
            &app.post("/internal/credits/consume", token, consume.clone())
                .await,
            token,
        );
        assert_unauthorized(
            &app.post("/internal/credits/grant", token, consume.clone())
                .await,
            token,
        );
    }
    let reply = app
        .request(
            Method::POST,
            "/internal/credits/check",
            None,
            &[("x-api-key", SERVICE_KEY)],
            Body::Json(check.clone()),
        )
        .await;
    assert_unauthorized(&reply, "key outside Authorization");
    assert_eq!(
        app.post("/internal/credits/check", SERVICE_KEY, check)
            .await
            .0,
        200
    );
    assert!(app.admin_history("default", "").await.is_empty());
    app.finish().await;
}

async fn rs256_public_key(db: Db) {
    let public_pem = fixture("rs256_public.pem");
    let pem = public_pem.clone();
    let app = TestApp::spawn_with(db, move |s| {
        s.jwt_algorithm = "RS256".into();
        s.jwt_public_key = Some(pem);
    })
    .await;
    let private = EncodingKey::from_rsa_pem(fixture("rs256_private.pem").as_bytes()).unwrap();
    let rs = sign(&claims("alice", None, None), Algorithm::RS256, &private);
    let (status, body, _) = app.get("/credits/balance", &rs).await;
    assert_eq!(status, 200, "{body}");
    let rs_admin = sign(
        &claims("root", Some("admin"), None),
        Algorithm::RS256,
        &private,
    );
    assert_eq!(app.get("/admin/checkin/config", &rs_admin).await.0, 200);

    // HS/RS confusion: an HS256 token "signed" with the public key must not pass.
    let confused = sign(
        &claims("alice", Some("admin"), None),
        Algorithm::HS256,
        &EncodingKey::from_secret(public_pem.as_bytes()),
    );
    assert_unauthorized(
        &app.get("/credits/balance", &confused).await,
        "HS256 with the public key",
    );
    assert_unauthorized(
        &app.get("/credits/balance", &user_token("alice")).await,
        "HS256 with the shared secret",
    );
    let other_key = EncodingKey::from_ec_pem(fixture("es256_private.pem").as_bytes()).unwrap();
    let es = sign(&claims("alice", None, None), Algorithm::ES256, &other_key);
    assert_unauthorized(
        &app.get("/credits/balance", &es).await,
        "ES256 on an RS256 server",
    );
    let mut expired = claims("alice", None, None);
    expired["exp"] = json!(unix_now() - 3600);
    let expired = sign(&expired, Algorithm::RS256, &private);
    assert_unauthorized(
        &app.get("/credits/balance", &expired).await,
        "expired RS256",
    );
    app.finish().await;
}

async fn es256_and_eddsa_public_keys(db: Db) {
    let es_pem = fixture("es256_public.pem");
    let es_app = TestApp::spawn_with(db, move |s| {
        s.jwt_algorithm = "ES256".into();
        s.jwt_public_key = Some(es_pem);
    })
    .await;
    // The EdDSA key is given as a path, which the setting also accepts.
    let ed_path = format!(
        "{}/tests/fixtures/eddsa_public.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let ed_app = TestApp::spawn_with(db, move |s| {
        s.jwt_algorithm = "EdDSA".into();
        s.jwt_public_key = Some(ed_path);
    })
    .await;
    let es_key = EncodingKey::from_ec_pem(fixture("es256_private.pem").as_bytes()).unwrap();
    let ed_key = EncodingKey::from_ed_pem(fixture("eddsa_private.pem").as_bytes()).unwrap();
    let es = sign(&claims("alice", None, None), Algorithm::ES256, &es_key);
    let ed = sign(&claims("alice", None, None), Algorithm::EdDSA, &ed_key);

    assert_eq!(es_app.get("/credits/balance", &es).await.0, 200);
    assert_eq!(ed_app.get("/credits/balance", &ed).await.0, 200);
    assert_unauthorized(&es_app.get("/credits/balance", &ed).await, "EdDSA on ES256");
    assert_unauthorized(&ed_app.get("/credits/balance", &es).await, "ES256 on EdDSA");
    for app in [&es_app, &ed_app] {
        assert_unauthorized(
            &app.get("/credits/balance", &user_token("alice")).await,
            "HS256",
        );
    }
    es_app.finish().await;
    ed_app.finish().await;
}

async fn audience_and_issuer(db: Db) {
    let app = TestApp::spawn_with(db, |s| {
        s.jwt_audience = Some("tally-api".into());
        s.jwt_issuer = Some("https://id.example.test".into());
    })
    .await;
    let token = |aud: Option<&str>, iss: Option<&str>| {
        let mut c = claims("alice", None, None);
        if let Some(a) = aud {
            c["aud"] = json!(a);
        }
        if let Some(i) = iss {
            c["iss"] = json!(i);
        }
        hs256(&c)
    };
    let iss = Some("https://id.example.test");
    let (status, body, _) = app
        .get("/credits/balance", &token(Some("tally-api"), iss))
        .await;
    assert_eq!(status, 200, "{body}");
    for (name, t) in [
        ("no audience", token(None, iss)),
        ("wrong audience", token(Some("another-api"), iss)),
        ("no issuer", token(Some("tally-api"), None)),
        (
            "wrong issuer",
            token(Some("tally-api"), Some("https://evil.example.test")),
        ),
    ] {
        assert_unauthorized(&app.get("/credits/balance", &t).await, name);
    }
    // An audience list containing ours is accepted.
    let mut c = claims("alice", None, None);
    c["aud"] = json!(["billing", "tally-api"]);
    c["iss"] = json!("https://id.example.test");
    assert_eq!(app.get("/credits/balance", &hs256(&c)).await.0, 200);
    app.finish().await;
}

async fn gateway_headers(db: Db) {
    // Without gateway mode the headers mean nothing.
    let plain = TestApp::spawn(db).await;
    let reply = balance_with(
        &plain,
        &[("x-user-id", "alice"), ("x-gateway-secret", GATEWAY_SECRET)],
    )
    .await;
    assert_unauthorized(&reply, "gateway headers without gateway mode");
    plain.finish().await;

    let app =
        TestApp::spawn_with(db, |s| s.gateway_secret = Some(Secret::new(GATEWAY_SECRET))).await;
    app.admin_grant("alice", 30).await;
    let (status, body, _) = app
        .post(
            "/internal/credits/grant",
            OTHER_SERVICE_KEY,
            json!({ "user_id": "alice", "amount": 4, "description": "x", "idempotency_key": "o1" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    assert_unauthorized(
        &balance_with(&app, &[("x-user-id", "alice")]).await,
        "no gateway secret",
    );
    assert_unauthorized(
        &balance_with(
            &app,
            &[
                ("x-user-id", "alice"),
                ("x-gateway-secret", "gateway-secret-wrong-0000000"),
            ],
        )
        .await,
        "wrong gateway secret",
    );
    assert_unauthorized(
        &balance_with(
            &app,
            &[
                ("x-user-id", "alice"),
                ("x-gateway-secret", &GATEWAY_SECRET[..20]),
            ],
        )
        .await,
        "prefix of the gateway secret",
    );
    assert_unauthorized(
        &balance_with(
            &app,
            &[("x-user-id", ""), ("x-gateway-secret", GATEWAY_SECRET)],
        )
        .await,
        "empty user id",
    );
    // A secret alone names nobody.
    assert_unauthorized(
        &balance_with(&app, &[("x-gateway-secret", GATEWAY_SECRET)]).await,
        "no user id",
    );

    let gw = |user: &'static str| [("x-user-id", user), ("x-gateway-secret", GATEWAY_SECRET)];
    let (status, body, _) = balance_with(&app, &gw("alice")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["balance"], json!(30));
    let mut other = gw("alice").to_vec();
    other.push(("x-app-key", "other"));
    let (status, body, _) = balance_with(&app, &other).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["balance"],
        json!(4),
        "X-App-Key scopes the app"
    );
    let mut bad_app = gw("alice").to_vec();
    bad_app.push(("x-app-key", "no spaces allowed"));
    assert_unauthorized(&balance_with(&app, &bad_app).await, "invalid X-App-Key");

    // Roles come from X-User-Role.
    let reply = app
        .request(
            Method::GET,
            "/admin/credits/transactions",
            None,
            &gw("root"),
            Body::Empty,
        )
        .await;
    assert_error(&reply, 403, "FORBIDDEN");
    let mut admin = gw("root").to_vec();
    admin.push(("x-user-role", "admin"));
    let (status, body, _) = app
        .request(
            Method::GET,
            "/admin/credits/transactions",
            None,
            &admin,
            Body::Empty,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    let mut bad_role = gw("root").to_vec();
    bad_role.push(("x-user-role", "owner"));
    assert_unauthorized(&balance_with(&app, &bad_role).await, "unknown X-User-Role");

    // Bearer tokens keep working in gateway mode, and win over the headers.
    let reply = balance_with(
        &app,
        &[
            ("authorization", &format!("Bearer {}", user_token("bob"))),
            ("x-user-id", "alice"),
        ],
    )
    .await;
    assert_eq!(
        reply.1["data"]["balance"],
        json!(0),
        "the token's user, not the header's"
    );
    app.finish().await;
}
