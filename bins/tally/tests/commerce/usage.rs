//! Pricing AI usage over HTTP: features, rates and entitlements set by an admin, a plan's
//! allowance for its subscribers and the free tier for everyone else, services checking and
//! tracking calls with their service key, users reading `/entitlements` — and every refused
//! request changing nothing.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{
    Body, Db, OTHER_SERVICE_KEY, SERVICE_KEY, TestApp, admin_token, assert_error, user_token,
};
use crate::lifecycle::sandbox_subscribe;
use crate::{outbound, spawn, watch};

backend_tests!(
    a_chat_app_priced_by_tally,
    usage_requests_refused_change_nothing,
    pricing_admin_refuses_bad_input,
    holds_reserve_and_capture_quantities,
    verify_checks_each_call_against_its_lines_and_transaction,
);

const TRACK: &str = "/internal/usage/track";
const CHECK: &str = "/internal/usage/check";

/// The worked example of `docs/api.md`: tokens priced per model, 3 free messages a day, a Pro
/// plan with 5 messages a period and premium models. Answers the Pro plan's id.
async fn chat_pricing(app: &TestApp) -> String {
    let admin = admin_token("root");
    for (key, name, kind, unit) in [
        ("input_tokens", "Input tokens", "metered", Some("tokens")),
        ("messages", "Messages", "metered", Some("messages")),
        ("premium_models", "Premium models", "boolean", None),
    ] {
        let reply = app
            .post(
                "/admin/pricing/features",
                &admin,
                json!({"key": key, "name": name, "kind": kind, "unit": unit}),
            )
            .await;
        assert_eq!(reply.0, 200, "{}", reply.1);
    }
    for body in [
        json!({"feature": "input_tokens", "credits": 1, "per": 1000}),
        json!({"feature": "input_tokens", "dimensions": {"model": "gpt-4o"}, "credits": 25, "per": 10000}),
        json!({"feature": "messages", "credits": 2, "per": 1}),
    ] {
        let reply = app.post("/admin/pricing/rates", &admin, body).await;
        assert_eq!(reply.0, 200, "{}", reply.1);
    }
    let reply = app
        .put(
            "/admin/pricing/free-entitlements",
            &admin,
            json!({"entitlements": [
                {"feature": "messages", "included": 3, "reset": "day", "overage": "block"}
            ]}),
        )
        .await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    let reply = app
        .post(
            "/admin/billing/plans",
            &admin,
            json!({
                "name": "Pro", "kind": "subscription", "currency": "usd", "price_monthly": 999,
                "credits_included": 100, "features": ["5 messages a month", "Premium models"],
                "entitlements": [
                    {"feature": "messages", "included": 5, "reset": "period"},
                    {"feature": "premium_models"}
                ]
            }),
        )
        .await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    assert_eq!(reply.1["data"]["entitlements"][0]["overage"], "credits");
    reply.1["data"]["id"].as_str().unwrap().to_owned()
}

async fn track(
    app: &TestApp,
    user: &str,
    key: &str,
    quantities: Value,
    dims: Value,
) -> (u16, Value) {
    let (status, body, _) = app
        .post(
            TRACK,
            SERVICE_KEY,
            json!({"user_id": user, "quantities": quantities, "dimensions": dims,
                   "description": "chat completion", "idempotency_key": key}),
        )
        .await;
    (status.as_u16(), body)
}

async fn grant(app: &TestApp, user: &str, amount: i64) {
    let reply = app
        .post(
            "/internal/credits/grant",
            SERVICE_KEY,
            json!({"user_id": user, "amount": amount, "description": "welcome",
                   "idempotency_key": format!("welcome-{user}")}),
        )
        .await;
    assert_eq!(reply.0, 200, "{}", reply.1);
}

async fn feature_of(app: &TestApp, user: &str, feature: &str) -> Value {
    let (status, body, _) = app.get("/entitlements", &user_token(user)).await;
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == feature)
        .cloned()
        .unwrap()
}

async fn a_chat_app_priced_by_tally(db: Db) {
    let app = spawn(db, None, None).await;
    let receiver = watch(&app).await;
    let pro = chat_pricing(&app).await;
    // The public plan list shows the structured entitlements beside the display features.
    let (_, plans, _) = app.get("/subscription/plans", &user_token("x")).await;
    let listed = &plans["data"][0];
    assert_eq!(listed["features"][0], "5 messages a month");
    assert_eq!(listed["entitlements"][0]["included"], 5);
    assert_eq!(listed["entitlements"][0]["reset"], "period");
    // A free user: three messages a day, then refused; premium models not included.
    grant(&app, "alice", 50).await;
    for i in 0..3 {
        let (status, body) = track(
            &app,
            "alice",
            &format!("m{i}"),
            json!({"messages": 1}),
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["credits_charged"], 0);
        assert_eq!(body["data"]["features"]["messages"]["included_used"], 1);
    }
    let (status, body) = track(&app, "alice", "m3", json!({"messages": 1}), json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (402, Some("ENTITLEMENT_EXCEEDED")),
        "{body}"
    );
    let (_, check, _) = app
        .post(
            CHECK,
            SERVICE_KEY,
            json!({"user_id": "alice", "quantities": {"input_tokens": 1200}, "features": ["premium_models"],
                   "dimensions": {"model": "gpt-4o"}}),
        )
        .await;
    assert_eq!(check["data"]["allowed"], false, "{check}");
    assert_eq!(check["data"]["reason"], "feature_not_included");
    assert_eq!(check["data"]["estimated_credits"], 3);
    assert_eq!(check["data"]["available_credits"], 50);
    assert_eq!(
        check["data"]["features"]["premium_models"]["granted"],
        false
    );
    // Tokens are priced per model: 1,200 gpt-4o tokens = 3 credits, recorded in the history.
    let (status, body) = track(
        &app,
        "alice",
        "t1",
        json!({"input_tokens": 1200}),
        json!({"model": "gpt-4o"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let line = &body["data"]["features"]["input_tokens"];
    assert_eq!(
        (line["credits"].as_i64(), line["price"].as_str()),
        (Some(3), Some("25/10000"))
    );
    assert_eq!(app.balance("alice").await, 47);
    let (_, history, _) = app
        .get("/credits/transactions?type=ai_usage", &user_token("alice"))
        .await;
    assert_eq!(history["data"][0]["amount"], -3, "{history}");
    let status = feature_of(&app, "alice", "messages").await;
    assert_eq!(
        (status["used"].as_i64(), status["remaining"].as_i64()),
        (Some(3), Some(0))
    );
    assert_eq!(status["reset"], "day");
    // Subscribed to Pro: the plan's allowance for the paid period, then 2 credits a message.
    sandbox_subscribe(&app, "alice", &pro).await;
    let (status, body) = track(&app, "alice", "p1", json!({"messages": 7}), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["features"]["messages"]["included_used"], 5);
    assert_eq!(body["data"]["credits_charged"], 4);
    let messages = feature_of(&app, "alice", "messages").await;
    assert_eq!(
        (messages["included"].as_i64(), messages["used"].as_i64()),
        (Some(5), Some(5))
    );
    assert_eq!(messages["reset"], "period");
    assert!(messages["resets_at"].is_string(), "{messages}");
    assert_eq!(
        feature_of(&app, "alice", "premium_models").await["granted"],
        true
    );
    // A replay answers the original and charges nothing more.
    let before = app.balance("alice").await;
    let (status, replay) = track(&app, "alice", "p1", json!({"messages": 7}), json!({})).await;
    assert_eq!((status, &replay["data"]), (200, &body["data"]));
    assert_eq!(app.balance("alice").await, before);
    // Each allowance running out was announced once.
    let mut limits: Vec<Value> = Vec::new();
    for _ in 0..100 {
        limits = outbound(&receiver, 1)
            .await
            .into_iter()
            .filter(|(t, _)| t == "usage.limit_reached")
            .map(|(_, d)| d)
            .collect();
        if limits.len() >= 2 {
            break;
        }
    }
    // Both happened at the same instant of the test's clock, so their delivery order is not
    // fixed: compare them as a set.
    let mut seen: Vec<(Option<i64>, Option<&str>)> = limits
        .iter()
        .map(|l| (l["included"].as_i64(), l["plan_id"].as_str()))
        .collect();
    seen.sort();
    assert_eq!(seen, [(Some(3), None), (Some(5), Some(pro.as_str()))]);
}

/// Figures a refused request must leave as they were.
async fn figures(app: &TestApp) -> (i64, Value, Value) {
    let (_, history, _) = app
        .get("/credits/transactions?limit=100", &user_token("bob"))
        .await;
    (
        app.balance("bob").await,
        feature_of(app, "bob", "messages").await,
        history["data"].clone(),
    )
}

async fn usage_requests_refused_change_nothing(db: Db) {
    let app = spawn(db, None, None).await;
    chat_pricing(&app).await;
    grant(&app, "bob", 3).await;
    let (status, body) = track(&app, "bob", "ok-1", json!({"messages": 1}), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let before = figures(&app).await;
    let bad: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (
            json!({"user_id": "bob", "quantities": {"images": 1}, "idempotency_key": "b1"}),
            400,
            "VALIDATION_ERROR",
            Some("quantities.images"),
        ),
        (
            json!({"user_id": "bob", "quantities": {"premium_models": 1}, "idempotency_key": "b2"}),
            400,
            "VALIDATION_ERROR",
            Some("quantities.premium_models"),
        ),
        (
            json!({"user_id": "bob", "quantities": {"messages": -1}, "idempotency_key": "b3"}),
            400,
            "VALIDATION_ERROR",
            Some("quantities.messages"),
        ),
        (
            json!({"user_id": "bob", "quantities": {"messages": 1.5}, "idempotency_key": "b4"}),
            400,
            "VALIDATION_ERROR",
            None,
        ),
        (
            json!({"user_id": "bob", "quantities": {"messages": 1}}),
            400,
            "VALIDATION_ERROR",
            Some("idempotency_key"),
        ),
        (
            json!({"user_id": "bob", "quantities": {}, "idempotency_key": "b5"}),
            400,
            "VALIDATION_ERROR",
            Some("quantities"),
        ),
        (
            json!(["bob", {"messages": 1}]),
            400,
            "VALIDATION_ERROR",
            None,
        ),
        // Beyond the free tier's daily allowance, which blocks.
        (
            json!({"user_id": "bob", "quantities": {"messages": 4}, "idempotency_key": "b6"}),
            402,
            "ENTITLEMENT_EXCEEDED",
            None,
        ),
        // 200,000 tokens at 1 credit per 1,000 = 200 credits > 3.
        (
            json!({"user_id": "bob", "quantities": {"messages": 1, "input_tokens": 200000}, "idempotency_key": "b9"}),
            402,
            "INSUFFICIENT_CREDITS",
            None,
        ),
        // The key used above with another request.
        (
            json!({"user_id": "bob", "quantities": {"messages": 2}, "idempotency_key": "ok-1"}),
            422,
            "IDEMPOTENCY_KEY_REUSED",
            None,
        ),
    ];
    for (body, status, code, field) in bad {
        let reply = app.post(TRACK, SERVICE_KEY, body.clone()).await;
        assert_error(&reply, status, code);
        if let Some(field) = field {
            assert_eq!(
                reply.1["error"]["details"]["fields"][0]["field"], field,
                "{body}: {}",
                reply.1
            );
        }
    }
    // No rate for output past the allowance (a new feature without rates), nothing charged.
    app.post(
        "/admin/pricing/features",
        &admin_token("root"),
        json!({"key": "images", "name": "Images", "kind": "metered"}),
    )
    .await;
    let reply = app
        .post(TRACK, SERVICE_KEY, json!({"user_id": "bob", "quantities": {"messages": 1, "images": 1}, "idempotency_key": "b7"}))
        .await;
    assert_error(&reply, 422, "RATE_NOT_FOUND");
    // Unauthorised: no key, a user's token, an admin token; another app's key sees another ledger.
    let body = json!({"user_id": "bob", "quantities": {"messages": 1}, "idempotency_key": "b8"});
    let none = app
        .request(Method::POST, TRACK, None, &[], Body::Json(body.clone()))
        .await;
    assert_error(&none, 401, "UNAUTHORIZED");
    for token in [user_token("bob"), admin_token("root")] {
        let reply = app.post(TRACK, &token, body.clone()).await;
        assert!(matches!(reply.0.as_u16(), 401 | 403), "{}", reply.1);
    }
    let other = app.post(TRACK, OTHER_SERVICE_KEY, body).await;
    assert_error(&other, 400, "VALIDATION_ERROR");
    assert_eq!(figures(&app).await, before);
    // The free tier with `block`: a check says why, and changes nothing either.
    let (_, check, _) = app
        .post(
            CHECK,
            SERVICE_KEY,
            json!({"user_id": "bob", "quantities": {"messages": 3}}),
        )
        .await;
    assert_eq!(
        (
            check["data"]["allowed"].as_bool(),
            check["data"]["reason"].as_str()
        ),
        (Some(false), Some("entitlement_exceeded"))
    );
    assert_eq!(figures(&app).await, before);
}

/// Everything the pricing admin endpoints and the plan list show.
async fn admin_view(app: &TestApp) -> (Value, Value, Value, Value) {
    let admin = admin_token("root");
    let (_, f, _) = app.get("/admin/pricing/features", &admin).await;
    let (_, r, _) = app.get("/admin/pricing/rates", &admin).await;
    let (_, e, _) = app.get("/admin/pricing/free-entitlements", &admin).await;
    let (_, p, _) = app.get("/admin/billing/plans", &admin).await;
    (
        f["data"].clone(),
        r["data"].clone(),
        e["data"].clone(),
        p["data"].clone(),
    )
}

async fn pricing_admin_refuses_bad_input(db: Db) {
    let app = spawn(db, None, None).await;
    let admin = admin_token("root");
    chat_pricing(&app).await;
    let before = admin_view(&app).await;
    assert_eq!(before.0.as_array().unwrap().len(), 3);
    assert_eq!(before.1[0]["version"], 1);
    let cases: Vec<(Method, &str, Value, u16, &str)> = vec![
        (
            Method::POST,
            "/admin/pricing/features",
            json!({"key": "Bad Key", "name": "x", "kind": "metered"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            Method::POST,
            "/admin/pricing/features",
            json!({"key": "messages", "name": "again", "kind": "metered"}),
            409,
            "CONFLICT",
        ),
        (
            Method::POST,
            "/admin/pricing/features",
            json!({"key": "flag", "name": "x", "kind": "boolean", "unit": "calls"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            Method::POST,
            "/admin/pricing/features",
            json!({"key": "nul", "name": "a\u{0}b", "kind": "metered"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            Method::PUT,
            "/admin/pricing/features/messages",
            json!({"name": "Messages", "kind": "boolean"}),
            409,
            "CONFLICT",
        ),
        (
            Method::PUT,
            "/admin/pricing/features/messages",
            json!({"key": "other", "name": "Messages", "kind": "metered"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            Method::POST,
            "/admin/pricing/rates",
            json!({"feature": "messages", "credits": 1, "per": 3}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            Method::POST,
            "/admin/pricing/rates",
            json!({"feature": "messages", "credits": 1.5, "per": 1}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            Method::POST,
            "/admin/pricing/rates",
            json!({"feature": "premium_models", "credits": 1, "per": 1}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            Method::POST,
            "/admin/pricing/rates",
            json!({"feature": "nope", "credits": 1, "per": 1}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            Method::POST,
            "/admin/pricing/rates",
            json!({"feature": "messages", "credits": 1, "per": 1, "effective_from": "2001-01-01T00:00:00Z"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            Method::POST,
            "/admin/pricing/rates",
            json!({"feature": "messages", "credits": 1, "per": 1, "tiers": [{"up_to": 5, "credits": 1, "per": 1}, {"up_to": 5, "credits": 1, "per": 1}]}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            Method::PUT,
            "/admin/pricing/free-entitlements",
            json!({"entitlements": [{"feature": "nope"}]}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            Method::PUT,
            "/admin/pricing/free-entitlements",
            json!({"entitlements": [{"feature": "premium_models", "included": 3}]}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            Method::PUT,
            "/admin/pricing/free-entitlements",
            json!({"entitlements": [{"feature": "messages", "reset": "weekly"}]}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            Method::POST,
            "/admin/billing/plans",
            json!({"name": "Max", "kind": "subscription", "currency": "usd", "price_monthly": 1999, "credits_included": 1, "entitlements": [{"feature": "nope"}]}),
            400,
            "VALIDATION_ERROR",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let reply = app
            .request(method, path, Some(&admin), &[], Body::Json(body.clone()))
            .await;
        assert_error(&reply, status, code);
    }
    // Every refused field of a feature or a rate is named.
    for (path, body, fields) in [
        (
            "/admin/pricing/features",
            json!({"key": "Bad Key", "name": " ", "kind": "boolean", "unit": "calls"}),
            vec!["key", "name", "unit"],
        ),
        (
            "/admin/pricing/rates",
            json!({
                "feature": "Bad", "dimensions": {"Model": "x"}, "credits": -1, "per": 3,
                "tiers": [{"up_to": 0, "credits": 1, "per": 1}],
                "effective_from": "2020-01-01T00:00:00Z",
            }),
            vec![
                "feature",
                "dimensions.Model",
                "credits",
                "tiers[0].up_to",
                "effective_from",
            ],
        ),
    ] {
        let reply = app.post(path, &admin, body).await;
        assert_error(&reply, 400, "VALIDATION_ERROR");
        assert_eq!(
            crate::common::error_fields(&reply.1),
            fields,
            "{path}: {}",
            reply.1
        );
    }
    // Not an admin.
    let reply = app
        .get("/admin/pricing/features", &user_token("alice"))
        .await;
    assert_error(&reply, 403, "FORBIDDEN");
    let reply = app
        .post(
            "/admin/pricing/rates",
            SERVICE_KEY,
            json!({"feature": "messages", "credits": 1, "per": 1}),
        )
        .await;
    assert!(matches!(reply.0.as_u16(), 401 | 403), "{}", reply.1);
    assert_eq!(admin_view(&app).await, before);
}

async fn holds_reserve_and_capture_quantities(db: Db) {
    let app = spawn(db, None, None).await;
    chat_pricing(&app).await;
    grant(&app, "carol", 100).await;
    let holds = "/internal/credits/holds";
    // An estimate of 4,000 gpt-4o tokens: 10 credits held.
    let (status, hold, _) = app
        .post(
            holds,
            SERVICE_KEY,
            json!({"user_id": "carol", "quantities": {"input_tokens": 4000},
                   "dimensions": {"model": "gpt-4o"}, "description": "streamed chat",
                   "idempotency_key": "stream-1"}),
        )
        .await;
    assert_eq!(status, 200, "{hold}");
    assert_eq!(hold["data"]["amount"], 10);
    let id = hold["data"]["id"].as_str().unwrap().to_owned();
    let before = app.balance("carol").await;
    // Refused: both or neither of amount and quantities; quantities on a credits hold.
    for body in [
        json!({"amount": 5, "quantities": {"input_tokens": 1}}),
        json!({}),
        json!({"quantities": {"input_tokens": -1}}),
    ] {
        let reply = app
            .post(&format!("{holds}/{id}/capture"), SERVICE_KEY, body)
            .await;
        assert_error(&reply, 400, "VALIDATION_ERROR");
    }
    let (_, plain, _) = app
        .post(
            holds,
            SERVICE_KEY,
            json!({"user_id": "carol", "amount": 5, "description": "plain"}),
        )
        .await;
    let plain_id = plain["data"]["id"].as_str().unwrap();
    let reply = app
        .post(
            &format!("{holds}/{plain_id}/capture"),
            SERVICE_KEY,
            json!({"quantities": {"input_tokens": 1}}),
        )
        .await;
    assert_error(&reply, 400, "VALIDATION_ERROR");
    assert_eq!(app.balance("carol").await, before);
    // The call used 6,000 tokens: 15 credits, more than the hold, covered by the balance.
    let capture = json!({"quantities": {"input_tokens": 6000}});
    let (status, done, _) = app
        .post(
            &format!("{holds}/{id}/capture"),
            SERVICE_KEY,
            capture.clone(),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["data"]["hold"]["captured"], 15);
    assert_eq!(done["data"]["transaction"]["amount"], -15);
    assert_eq!(
        done["data"]["usage"]["features"]["input_tokens"]["price"],
        "25/10000"
    );
    assert_eq!(app.balance("carol").await, before - 15);
    // The same capture again answers the first.
    let (status, again, _) = app
        .post(&format!("{holds}/{id}/capture"), SERVICE_KEY, capture)
        .await;
    assert_eq!((status.as_u16(), &again["data"]), (200, &done["data"]));
    assert_eq!(app.balance("carol").await, before - 15);
}

/// `tally verify` holds each call to its lines and to a transaction of its own account, and
/// every line to a recorded call: the lines keep no foreign key to their call, nor (on
/// PostgreSQL) the calls to their transaction, so the audit is the check.
async fn verify_checks_each_call_against_its_lines_and_transaction(db: Db) {
    let app = spawn(db, None, None).await;
    chat_pricing(&app).await;
    for user in ["alice", "bob"] {
        grant(&app, user, 50).await;
        // 4,000 input tokens at the default 1 credit per 1,000: the same 4 credits for both.
        let (status, body) =
            track(&app, user, "call", json!({"input_tokens": 4000}), json!({})).await;
        assert_eq!(
            (status, &body["data"]["credits_charged"]),
            (200, &json!(4)),
            "{body}"
        );
    }
    // A message the free tier includes: a line that charges nothing, and no transaction.
    let (status, body) = track(&app, "alice", "free", json!({"messages": 1}), json!({})).await;
    assert_eq!(
        (status, &body["data"]["credits_charged"]),
        (200, &json!(0)),
        "{body}"
    );
    app.assert_verified().await;
    let charges = "a usage call charges its lines in one transaction";
    let belongs = "a usage line belongs to a recorded call";
    let broken = |violations: Vec<tally_ledger::Violation>| -> Vec<(String, &str)> {
        let mut found: Vec<(String, &str)> =
            violations.into_iter().map(|v| (v.user, v.rule)).collect();
        found.sort();
        found
    };

    // Alice's call pointed at Bob's transaction of the same amount: not hers.
    app.execute_sql(
        "UPDATE usage_events SET transaction_id = (SELECT transaction_id FROM usage_events \
         WHERE user_id = 'bob') WHERE user_id = 'alice' AND idempotency_key = 'call'",
    )
    .await;
    let violations = app.ledger().verify().await.unwrap();
    assert_eq!(broken(violations), [("alice".to_owned(), charges)]);
    app.execute_sql(
        "UPDATE usage_events SET transaction_id = (SELECT max(id) FROM transactions \
         WHERE user_id = 'alice' AND txn_type = 'ai_usage') \
         WHERE user_id = 'alice' AND idempotency_key = 'call'",
    )
    .await;
    app.assert_verified().await;

    // Alice's calls moved away from their lines: the charging call has no lines, and both
    // calls' lines (the free one's charging nothing) have no call.
    app.execute_sql("UPDATE usage_events SET id = id + 1000 WHERE user_id = 'alice'")
        .await;
    let violations = app.ledger().verify().await.unwrap();
    assert_eq!(
        broken(violations),
        [
            ("alice".to_owned(), charges),
            ("alice".to_owned(), belongs),
            ("alice".to_owned(), belongs),
        ]
    );
    app.execute_sql("UPDATE usage_events SET id = id - 1000 WHERE user_id = 'alice'")
        .await;
    app.assert_verified().await;

    // Alice's charging call's line moved under Bob's account: the line is not under its call's
    // account, and neither user's meter matches the lines under it.
    let moved = |to: &str| {
        format!(
            "UPDATE usage_lines SET account_id = (SELECT account_id FROM usage_events \
             WHERE user_id = '{to}' AND idempotency_key = 'call') WHERE event_id = \
             (SELECT id FROM usage_events WHERE user_id = 'alice' AND idempotency_key = 'call')"
        )
    };
    app.execute_sql(&moved("bob")).await;
    let meter = "charged credits and the carry equal the exact priced usage";
    let elsewhere = "a usage line is under its call's account";
    let violations = app.ledger().verify().await.unwrap();
    assert_eq!(
        broken(violations),
        [
            ("alice".to_owned(), elsewhere),
            ("alice".to_owned(), meter),
            ("bob".to_owned(), meter),
        ]
    );
    app.execute_sql(&moved("alice")).await;
    app.finish().await;
}
