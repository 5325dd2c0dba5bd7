//! Every endpoint refuses bad input with the documented status and code, in the error envelope,
//! and leaves the database exactly as it was.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{
    Body, Db, OTHER_SERVICE_KEY, SERVICE_KEY, TestApp, admin_token, assert_error, claims, hs256,
    raw_http, user_token,
};

backend_tests!(
    bad_input_is_refused_and_changes_nothing,
    chunked_bodies_obey_the_limit,
    unknown_routes,
    every_bad_field_is_listed,
    http_errors_answer_the_envelope
);

const MAX_CREDITS: i64 = 1_000_000_000_000;

struct Case {
    name: String,
    method: Method,
    path: String,
    token: Option<String>,
    headers: Vec<(&'static str, String)>,
    body: Body,
    status: u16,
    code: &'static str,
}

#[derive(Default)]
struct Cases(Vec<Case>);

/// `body` sent as is, with this Content-Type (none when `None`).
fn raw(content_type: Option<&'static str>, body: &str) -> Body {
    Body::Raw(content_type, body.as_bytes().to_vec())
}

impl Cases {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        name: impl Into<String>,
        method: Method,
        path: impl Into<String>,
        token: Option<&str>,
        headers: &[(&'static str, &str)],
        body: Body,
        status: u16,
        code: &'static str,
    ) {
        self.0.push(Case {
            name: name.into(),
            method,
            path: path.into(),
            token: token.map(str::to_owned),
            headers: headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            body,
            status,
            code,
        });
    }

    /// `body` sent to `path` (PUT for the check-in settings, POST elsewhere) with `token`.
    fn body(
        &mut self,
        path: &str,
        token: &str,
        name: &str,
        body: Body,
        status: u16,
        code: &'static str,
    ) {
        let method = if path == "/admin/checkin/config" {
            Method::PUT
        } else {
            Method::POST
        };
        let name = format!("{path}: {name}");
        self.add(name, method, path, Some(token), &[], body, status, code);
    }

    /// A JSON body sent to `path` with `token`.
    fn json(
        &mut self,
        path: &str,
        token: &str,
        name: &str,
        body: Value,
        status: u16,
        code: &'static str,
    ) {
        self.body(path, token, name, Body::Json(body), status, code);
    }

    /// A body that must be refused with 400 VALIDATION_ERROR.
    fn invalid(&mut self, path: &str, token: &str, name: &str, body: Body) {
        self.body(path, token, name, body, 400, "VALIDATION_ERROR");
    }

    /// The refusals every JSON endpoint shares: syntax, encoding, media type, size, unknown,
    /// duplicate and missing fields.
    fn body_basics(&mut self, path: &str, token: &str, valid: Value) {
        const JSON: Option<&str> = Some("application/json");
        let text = valid.to_string();
        let first_key = valid.as_object().unwrap().keys().next().unwrap().clone();
        let duplicated = format!("{{\"{first_key}\": 1, {}", &text[1..]);
        let mut unknown = valid.clone();
        unknown["surprise"] = json!(1);
        for (name, body) in [
            (
                "truncated JSON",
                raw(JSON, "{\"user_id\": \"alice\", \"amount\": "),
            ),
            ("not JSON", raw(JSON, "user_id=alice&amount=1")),
            ("empty body", raw(JSON, "")),
            (
                "invalid UTF-8",
                Body::Raw(JSON, b"{\"\xff\xfe\": 1}".to_vec()),
            ),
            ("duplicate key", raw(JSON, &duplicated)),
            ("array", Body::Json(json!([valid.clone()]))),
            // The request's fields by position, as serde would read a struct from a list.
            (
                "positional array",
                Body::Json(Value::Array(
                    valid.as_object().unwrap().values().cloned().collect(),
                )),
            ),
            ("null", Body::Json(Value::Null)),
            ("text/plain", raw(Some("text/plain"), &text)),
            (
                "form content type",
                raw(Some("application/x-www-form-urlencoded"), &text),
            ),
            ("no content type", raw(None, &text)),
            ("unknown field", Body::Json(unknown)),
        ] {
            self.invalid(path, token, name, body);
        }
        let mut huge = valid.clone();
        huge["padding"] = json!("x".repeat(70 * 1024));
        self.json(path, token, "70 KiB body", huge, 413, "PAYLOAD_TOO_LARGE");
        // Optional fields may be left out; every other one must be there.
        let optional = [
            "idempotency_key",
            "credits_expire_days",
            "expires_at",
            "metadata",
            "allow_negative",
        ];
        for field in valid.as_object().unwrap().keys() {
            if !optional.contains(&field.as_str()) {
                let mut missing = valid.clone();
                missing.as_object_mut().unwrap().remove(field);
                self.invalid(
                    path,
                    token,
                    &format!("missing {field}"),
                    Body::Json(missing),
                );
            }
        }
    }

    /// Refusals of the `amount` field; `more` adds values only this endpoint refuses.
    fn amounts(&mut self, path: &str, token: &str, valid: &Value, more: &[i64]) {
        let big: Value = serde_json::from_str("18446744073709551616").unwrap();
        let mut values = vec![
            ("0".to_owned(), json!(0)),
            ("1e30".into(), json!(1e30)),
            ("1.5".into(), json!(1.5)),
            ("i64::MAX".into(), json!(i64::MAX)),
            ("i64::MIN".into(), json!(i64::MIN)),
            ("MAX_CREDITS + 1".into(), json!(MAX_CREDITS + 1)),
            ("2^64".into(), big),
            ("a string".into(), json!("10")),
            ("a bool".into(), json!(true)),
            ("null".into(), Value::Null),
        ];
        values.extend(more.iter().map(|a| (a.to_string(), json!(a))));
        for (name, amount) in values {
            let mut b = valid.clone();
            b["amount"] = amount;
            // A fresh key each, so that no refusal could pass as a replay.
            if let Some(k) = b.get("idempotency_key").and_then(Value::as_str) {
                b["idempotency_key"] = json!(format!("{k}-{}", name.replace(' ', "_")));
            }
            self.invalid(path, token, &format!("amount {name}"), Body::Json(b));
        }
    }
}

/// Everything a bad request could have changed.
async fn snapshot(app: &TestApp) -> Value {
    let admin = admin_token("root");
    let mut balances = Vec::new();
    for user in ["alice", "bob"] {
        balances.push(app.get("/credits/balance", &user_token(user)).await.1);
        balances.push(app.get("/checkin/status", &user_token(user)).await.1);
    }
    json!({
        "default": app.admin_history("default", "").await,
        "other": app.admin_history("other", "").await,
        "user_view": app.get("/credits/transactions?limit=100", &user_token("alice")).await.1,
        "balances": balances,
        "config": app.get("/admin/checkin/config", &admin).await.1,
    })
}

async fn bad_input_is_refused_and_changes_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    let admin = admin_token("root");
    let alice = user_token("alice");
    let user = alice.as_str();
    let svc = SERVICE_KEY;
    let manual = "/admin/credits/manual";
    let config = "/admin/checkin/config";
    let (check, consume, grant) = (
        "/internal/credits/check",
        "/internal/credits/consume",
        "/internal/credits/grant",
    );

    // Starting state: alice holds credits, one consume, one grant and one manual adjustment
    // carry keys a later request reuses.
    let (status, body, _) = app
        .post(
            manual,
            &admin,
            json!({ "user_id": "alice", "amount": 100, "description": "seed", "idempotency_key": "m1" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = app.consume("alice", 10, "c1").await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = app
        .post(
            grant,
            svc,
            json!({ "user_id": "alice", "amount": 5, "description": "seed", "idempotency_key": "g1" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = app.checkin(user).await;
    assert_eq!(status, 200, "{body}");
    let before = snapshot(&app).await;

    let mut cases = Cases::default();
    let long_user = "u".repeat(129);
    let long_key = "k".repeat(256);
    let long_text = "d".repeat(501);

    // Identities that are signed correctly but unusable.
    let bad_identities = [
        ("empty sub", hs256(&claims("", None, None))),
        (
            "control character in sub",
            hs256(&claims("al\u{7}ice", None, None)),
        ),
        ("129-character sub", hs256(&claims(&long_user, None, None))),
        (
            "numeric sub",
            hs256(&json!({ "sub": 42, "exp": crate::common::unix_now() + 600 })),
        ),
        (
            "bad app claim",
            hs256(&claims("alice", None, Some("bad app!"))),
        ),
        (
            "unknown role",
            hs256(&claims("alice", Some("superuser"), None)),
        ),
    ];
    let user_routes = [
        (Method::GET, "/credits/balance"),
        (Method::GET, "/credits/transactions"),
        (Method::POST, "/checkin"),
        (Method::GET, "/checkin/status"),
        (Method::GET, "/admin/credits/transactions"),
        (Method::GET, "/admin/checkin/config"),
    ];
    for (method, path) in &user_routes {
        for (name, token) in &bad_identities {
            cases.add(
                format!("{method} {path}: {name}"),
                method.clone(),
                *path,
                Some(token),
                &[],
                Body::Empty,
                401,
                "UNAUTHORIZED",
            );
        }
    }

    // Pagination and filters.
    let page_refusals = [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "limit=1e30",
        "limit=99999999999999999999",
        "offset=-1",
        "offset=1000001",
        "offset=x",
        "type=bogus",
        "type=",
        "type=AI_USAGE",
        "limit=10&limit=20",
    ];
    for (path, token) in [
        ("/credits/transactions", user),
        ("/admin/credits/transactions", admin.as_str()),
    ] {
        for q in page_refusals {
            cases.add(
                format!("{path}?{q}"),
                Method::GET,
                format!("{path}?{q}"),
                Some(token),
                &[],
                Body::Empty,
                400,
                "VALIDATION_ERROR",
            );
        }
    }
    for q in [
        "from=yesterday",
        "from=2026-03-01",
        "from=2026-03-01T12:00:00",
        "to=2026-13-01T00:00:00Z",
        "from=1700000000",
    ] {
        let path = format!("/admin/credits/transactions?{q}");
        cases.add(
            path.clone(),
            Method::GET,
            path,
            Some(&admin),
            &[],
            Body::Empty,
            400,
            "VALIDATION_ERROR",
        );
    }

    // Manual adjustments.
    let valid = json!({ "user_id": "alice", "amount": 5, "description": "bonus", "idempotency_key": "m-new" });
    cases.body_basics(manual, &admin, valid.clone());
    cases.amounts(manual, &admin, &valid, &[]);
    let with = |patch: Value| {
        let mut b = valid.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (name, patch) in [
        ("expires_at not a time", json!({ "expires_at": "tomorrow" })),
        ("expires_at a date", json!({ "expires_at": "2026-03-02" })),
        (
            "expires_at without offset",
            json!({ "expires_at": "2026-03-02T00:00:00" }),
        ),
        (
            "expires_at 30 February",
            json!({ "expires_at": "2026-02-30T00:00:00Z" }),
        ),
        (
            "expires_at a number",
            json!({ "expires_at": 1_800_000_000 }),
        ),
        (
            "expires_at in the past",
            json!({ "expires_at": "2026-03-01T11:00:00Z" }),
        ),
        (
            "expires_at now",
            json!({ "expires_at": "2026-03-01T12:00:00Z" }),
        ),
        (
            "negative amount that expires",
            json!({ "amount": -5, "expires_at": "2026-03-02T00:00:00Z" }),
        ),
        ("blank description", json!({ "description": "   " })),
        (
            "501-character description",
            json!({ "description": long_text }),
        ),
        (
            "NUL in description",
            json!({ "description": "AI\u{0}call" }),
        ),
        (
            "escape in description",
            json!({ "description": "AI \u{1b}[31mcall" }),
        ),
        ("description a number", json!({ "description": 5 })),
        ("empty user_id", json!({ "user_id": "" })),
        ("129-character user_id", json!({ "user_id": long_user })),
        ("newline in user_id", json!({ "user_id": "ali\nce" })),
        ("user_id a number", json!({ "user_id": 7 })),
        ("key with a space", json!({ "idempotency_key": "a b" })),
        ("256-character key", json!({ "idempotency_key": long_key })),
        ("empty key", json!({ "idempotency_key": "" })),
        (
            "allow_negative a string",
            json!({ "allow_negative": "yes" }),
        ),
        (
            "balance beyond MAX_CREDITS",
            json!({ "amount": MAX_CREDITS }),
        ),
    ] {
        cases.json(manual, &admin, name, with(patch), 400, "VALIDATION_ERROR");
    }
    cases.json(
        manual,
        &admin,
        "overdraw without allow_negative",
        with(json!({ "amount": -1000 })),
        402,
        "INSUFFICIENT_CREDITS",
    );
    cases.json(
        manual,
        &admin,
        "reused key, other amount",
        with(json!({ "amount": 101, "idempotency_key": "m1", "description": "seed" })),
        422,
        "IDEMPOTENCY_KEY_REUSED",
    );
    cases.add(
        format!("{manual}: header and body keys differ"),
        Method::POST,
        manual,
        Some(&admin),
        &[("Idempotency-Key", "other")],
        Body::Json(valid.clone()),
        400,
        "VALIDATION_ERROR",
    );
    cases.add(
        format!("{manual}: non-ASCII key header"),
        Method::POST,
        manual,
        Some(&admin),
        &[("Idempotency-Key", "clé")],
        Body::Json(with(json!({ "idempotency_key": null }))),
        400,
        "VALIDATION_ERROR",
    );
    cases.json(manual, user, "user token", valid.clone(), 403, "FORBIDDEN");
    cases.json(
        manual,
        svc,
        "service key",
        valid.clone(),
        401,
        "UNAUTHORIZED",
    );

    // Check-in settings.
    let valid =
        json!({ "enabled": true, "rewards": [1, 2], "timezone": "UTC", "credits_expire_days": 3 });
    cases.body_basics(config, &admin, valid.clone());
    let with = |patch: Value| {
        let mut b = valid.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (name, patch) in [
        ("empty rewards", json!({ "rewards": [] })),
        ("zero reward", json!({ "rewards": [5, 0] })),
        ("negative reward", json!({ "rewards": [-5] })),
        (
            "reward above MAX_CREDITS",
            json!({ "rewards": [MAX_CREDITS + 1] }),
        ),
        ("reward 1e30", json!({ "rewards": [1e30] })),
        ("reward a string", json!({ "rewards": ["10"] })),
        ("fractional reward", json!({ "rewards": [1.5] })),
        ("367 rewards", json!({ "rewards": vec![1; 367] })),
        ("rewards not a list", json!({ "rewards": 10 })),
        ("unknown time zone", json!({ "timezone": "Mars/Olympus" })),
        ("empty time zone", json!({ "timezone": "" })),
        ("time zone a number", json!({ "timezone": 9 })),
        ("expire days 0", json!({ "credits_expire_days": 0 })),
        ("expire days -1", json!({ "credits_expire_days": -1 })),
        ("expire days 3651", json!({ "credits_expire_days": 3651 })),
        (
            "expire days 2^32",
            json!({ "credits_expire_days": 4_294_967_296_u64 }),
        ),
        (
            "expire days a string",
            json!({ "credits_expire_days": "7" }),
        ),
        ("enabled a string", json!({ "enabled": "yes" })),
    ] {
        cases.json(config, &admin, name, with(patch), 400, "VALIDATION_ERROR");
    }
    cases.json(config, user, "user token", valid.clone(), 403, "FORBIDDEN");
    cases.add(
        "GET /admin/checkin/config: user token",
        Method::GET,
        config,
        Some(user),
        &[],
        Body::Empty,
        403,
        "FORBIDDEN",
    );
    cases.add(
        "GET /admin/credits/transactions: user token",
        Method::GET,
        "/admin/credits/transactions",
        Some(user),
        &[],
        Body::Empty,
        403,
        "FORBIDDEN",
    );

    // Service: check.
    let valid = json!({ "user_id": "alice", "amount": 5 });
    cases.body_basics(check, svc, valid.clone());
    cases.amounts(check, svc, &valid, &[-1]);
    cases.json(
        check,
        svc,
        "empty user_id",
        json!({ "user_id": "", "amount": 5 }),
        400,
        "VALIDATION_ERROR",
    );
    cases.json(
        check,
        svc,
        "129-character user_id",
        json!({ "user_id": long_user, "amount": 5 }),
        400,
        "VALIDATION_ERROR",
    );

    // Service: consume.
    let valid = json!({ "user_id": "alice", "amount": 5, "description": "AI call", "idempotency_key": "c-new" });
    cases.body_basics(consume, svc, valid.clone());
    // The array that once charged a credit: user, amount, description, key, metadata.
    cases.invalid(
        consume,
        svc,
        "consume fields by position",
        Body::Json(json!(["alice", 1, "array consume", "arr-1", null])),
    );
    cases.amounts(consume, svc, &valid, &[-5]);
    let with = |patch: Value| {
        let mut b = valid.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let big_meta: serde_json::Map<String, Value> = (0..300)
        .map(|i| (format!("field{i}"), json!("value")))
        .collect();
    let mut deep = json!({ "leaf": 1 });
    for _ in 0..200 {
        deep = json!({ "a": deep });
    }
    for (name, patch) in [
        ("no idempotency key", json!({ "idempotency_key": null })),
        ("256-character key", json!({ "idempotency_key": long_key })),
        ("key with a space", json!({ "idempotency_key": "a b" })),
        ("key a number", json!({ "idempotency_key": 7 })),
        ("metadata a list", json!({ "metadata": [1, 2] })),
        ("metadata a string", json!({ "metadata": "gpt-4" })),
        ("metadata over 4 KiB", json!({ "metadata": big_meta })),
        ("metadata nested 200 deep", json!({ "metadata": deep })),
        (
            "501-character description",
            json!({ "description": long_text }),
        ),
        (
            "NUL in description",
            json!({ "description": "AI\u{0}call" }),
        ),
        (
            "escape in description",
            json!({ "description": "AI \u{1b}[31mcall" }),
        ),
        ("empty user_id", json!({ "user_id": "" })),
        (
            "control character in user_id",
            json!({ "user_id": "a\u{0}b" }),
        ),
    ] {
        cases.json(consume, svc, name, with(patch), 400, "VALIDATION_ERROR");
    }
    let mut no_key = valid.clone();
    no_key.as_object_mut().unwrap().remove("idempotency_key");
    cases.json(
        consume,
        svc,
        "key field absent",
        no_key.clone(),
        400,
        "VALIDATION_ERROR",
    );
    cases.add(
        format!("{consume}: header and body keys differ"),
        Method::POST,
        consume,
        Some(svc),
        &[("Idempotency-Key", "c-other")],
        Body::Json(valid.clone()),
        400,
        "VALIDATION_ERROR",
    );
    cases.add(
        format!("{consume}: empty key header"),
        Method::POST,
        consume,
        Some(svc),
        &[("Idempotency-Key", "")],
        Body::Json(no_key.clone()),
        400,
        "VALIDATION_ERROR",
    );
    cases.json(
        consume,
        svc,
        "more than the balance",
        with(json!({ "amount": 1000 })),
        402,
        "INSUFFICIENT_CREDITS",
    );
    cases.json(
        consume,
        svc,
        "reused key, other amount",
        with(json!({ "amount": 11, "idempotency_key": "c1" })),
        422,
        "IDEMPOTENCY_KEY_REUSED",
    );
    cases.json(
        consume,
        svc,
        "reused key, other description",
        with(json!({ "amount": 10, "idempotency_key": "c1", "description": "other" })),
        422,
        "IDEMPOTENCY_KEY_REUSED",
    );
    cases.json(
        consume,
        svc,
        "reused key, added metadata",
        with(json!({ "amount": 10, "idempotency_key": "c1", "metadata": { "a": 1 } })),
        422,
        "IDEMPOTENCY_KEY_REUSED",
    );
    cases.add(
        format!("{consume}: reused key in the header"),
        Method::POST,
        consume,
        Some(svc),
        &[("Idempotency-Key", "c1")],
        Body::Json(json!({ "user_id": "alice", "amount": 9, "description": "AI call" })),
        422,
        "IDEMPOTENCY_KEY_REUSED",
    );

    // Service: grant.
    let valid = json!({ "user_id": "alice", "amount": 5, "description": "reward", "idempotency_key": "g-new" });
    cases.body_basics(grant, svc, valid.clone());
    cases.amounts(grant, svc, &valid, &[-5]);
    let with = |patch: Value| {
        let mut b = valid.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (name, patch) in [
        ("no idempotency key", json!({ "idempotency_key": null })),
        ("expires_at not a time", json!({ "expires_at": "soon" })),
        (
            "expires_at in the past",
            json!({ "expires_at": "2020-01-01T00:00:00Z" }),
        ),
        ("expires_at a date", json!({ "expires_at": "2026-03-02" })),
        ("metadata a list", json!({ "metadata": [] })),
        (
            "balance beyond MAX_CREDITS",
            json!({ "amount": MAX_CREDITS }),
        ),
        (
            "501-character description",
            json!({ "description": long_text }),
        ),
        (
            "NUL in description",
            json!({ "description": "AI\u{0}call" }),
        ),
        (
            "escape in description",
            json!({ "description": "AI \u{1b}[31mcall" }),
        ),
    ] {
        cases.json(grant, svc, name, with(patch), 400, "VALIDATION_ERROR");
    }
    cases.json(
        grant,
        svc,
        "reused key, other amount",
        with(json!({ "amount": 6, "idempotency_key": "g1", "description": "seed" })),
        422,
        "IDEMPOTENCY_KEY_REUSED",
    );

    // Who may call the service API.
    for path in [check, consume, grant] {
        let body = json!({ "user_id": "alice", "amount": 1, "description": "x", "idempotency_key": "auth" });
        let body = if path == check {
            json!({ "user_id": "alice", "amount": 1 })
        } else {
            body
        };
        cases.json(path, user, "user token", body.clone(), 401, "UNAUTHORIZED");
        cases.json(
            path,
            &admin,
            "admin token",
            body.clone(),
            401,
            "UNAUTHORIZED",
        );
        cases.json(
            path,
            "svc-unknown-0123456789abcdef",
            "unknown service key",
            body.clone(),
            401,
            "UNAUTHORIZED",
        );
        cases.add(
            format!("{path}: no key"),
            Method::POST,
            path,
            None,
            &[],
            Body::Json(body),
            401,
            "UNAUTHORIZED",
        );
    }
    // The other app's key cannot spend the default app's credits (alice@other has none).
    cases.json(
        consume,
        OTHER_SERVICE_KEY,
        "other app's key",
        json!({ "user_id": "alice", "amount": 1, "description": "x", "idempotency_key": "x1" }),
        402,
        "INSUFFICIENT_CREDITS",
    );

    let mut failures = Vec::new();
    let total = cases.0.len();
    for case in cases.0 {
        let headers: Vec<(&str, &str)> =
            case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = app
            .request(
                case.method.clone(),
                &case.path,
                case.token.as_deref(),
                &headers,
                case.body,
            )
            .await;
        let got = (
            reply.0.as_u16(),
            reply.1["error"]["code"].as_str().unwrap_or("-").to_owned(),
        );
        if got != (case.status, case.code.to_owned()) {
            failures.push(format!(
                "{}: expected {} {}, got {} {}: {}",
                case.name, case.status, case.code, got.0, got.1, reply.1
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{total} bad requests refused");

    let after = snapshot(&app).await;
    assert_eq!(before, after, "a refused request changed the database");
    app.finish().await;
}

async fn unknown_routes(db: Db) {
    let app = TestApp::spawn(db).await;
    let alice = user_token("alice");
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/nope"),
        (Method::GET, "/credits"),
        (Method::GET, "/credits/balance/extra"),
        (Method::POST, "/internal/credits/refund"),
        (Method::DELETE, "/admin/credits/transactions/1"),
    ] {
        for token in [None, Some(alice.as_str())] {
            let reply = app
                .request(method.clone(), path, token, &[], Body::Empty)
                .await;
            assert_error(&reply, 404, "NOT_FOUND");
        }
    }
    // A known path with the wrong method: 405, and `Allow` names the methods served there.
    for (method, path, allow) in [
        (Method::POST, "/credits/balance", "GET"),
        (Method::DELETE, "/credits/transactions", "GET"),
        (Method::GET, "/checkin", "POST"),
        (Method::POST, "/checkin/status", "GET"),
        (Method::GET, "/admin/credits/manual", "POST"),
        (Method::DELETE, "/admin/checkin/config", "GET, PUT"),
        (Method::GET, "/internal/credits/consume", "POST"),
        (Method::DELETE, "/admin/billing/plans/3", "PUT"),
        (Method::PATCH, "/admin/orders/ord_1", "GET"),
    ] {
        for token in [None, Some(alice.as_str())] {
            let reply = app
                .request(method.clone(), path, token, &[], Body::Empty)
                .await;
            assert_error(&reply, 405, "METHOD_NOT_ALLOWED");
            assert_eq!(
                reply.2.get("allow").and_then(|v| v.to_str().ok()),
                Some(allow),
                "{method} {path}"
            );
        }
    }
    assert!(app.admin_history("default", "").await.is_empty());
    app.finish().await;
}

/// A consume sent with `Transfer-Encoding: chunked` (no Content-Length), `padding` bytes long.
fn chunked_consume(key: &str, padding: usize) -> Vec<u8> {
    let body = json!({
        "user_id": "alice", "amount": 1, "description": "AI call", "idempotency_key": key,
        "metadata": { "padding": "x".repeat(padding) },
    })
    .to_string();
    let mut req = format!(
        "POST /internal/credits/consume HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {SERVICE_KEY}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for piece in body.as_bytes().chunks(8 * 1024) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    req
}

async fn chunked_bodies_obey_the_limit(db: Db) {
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 10).await;
    let small = raw_http(app.port, &chunked_consume("chunked-1", 10)).await;
    assert!(small.starts_with("HTTP/1.1 200"), "{small}");
    assert_eq!(app.balance("alice").await, 9);

    // Without a Content-Length the limit can only bite while reading; it must still bite.
    let big = raw_http(app.port, &chunked_consume("chunked-2", 80 * 1024)).await;
    assert!(
        big.starts_with("HTTP/1.1 413"),
        "{}",
        &big[..big.len().min(500)]
    );
    assert!(
        big.to_ascii_lowercase().contains("\r\nx-request-id: "),
        "{big}"
    );
    assert!(
        big.contains(r#"{"success":false,"error":{"code":"PAYLOAD_TOO_LARGE""#),
        "{big}"
    );
    assert_eq!(app.balance("alice").await, 9);
    assert_eq!(app.rows_of_type("ai_usage").await.len(), 1);
    app.finish().await;
}

/// A body with several bad fields names each of them, and changes nothing.
async fn every_bad_field_is_listed(db: Db) {
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 100).await;
    let before = snapshot(&app).await;
    let (status, body, _) = app
        .post(
            "/internal/credits/consume",
            SERVICE_KEY,
            json!({
                "user_id": 7, "amount": "ten", "description": "AI call",
                "idempotency_key": "many-1", "memo": "x",
            }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
    assert_eq!(
        crate::common::error_fields(&body),
        ["amount", "memo", "user_id"],
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("amount: must be a whole number, not a string")
            && message.contains("user_id: must be a string, not a number"),
        "{message}"
    );

    // Bodies that read, with several values out of range: every one is named too.
    let long = "x".repeat(501);
    let control = "a\u{0}b";
    let huge = json!({ "padding": "x".repeat(5_000) });
    for (path, token, request, fields) in [
        (
            "/internal/credits/consume",
            SERVICE_KEY.to_owned(),
            json!({ "user_id": "", "amount": 0, "description": long, "metadata": huge }),
            vec![
                "idempotency_key",
                "amount",
                "user_id",
                "description",
                "metadata",
            ],
        ),
        (
            "/internal/credits/grant",
            SERVICE_KEY.to_owned(),
            json!({
                "user_id": control, "amount": MAX_CREDITS + 1, "description": "bonus",
                "idempotency_key": "has space",
            }),
            vec!["amount", "user_id", "idempotency_key"],
        ),
        (
            "/admin/credits/manual",
            admin_token("root"),
            json!({
                "user_id": "", "amount": -5, "description": " ",
                "expires_at": "2030-01-01T00:00:00Z", "allow_negative": false,
            }),
            vec!["expires_at", "description", "user_id"],
        ),
        (
            "/internal/credits/holds",
            SERVICE_KEY.to_owned(),
            json!({
                "user_id": "", "amount": -1, "ttl_seconds": 0, "description": control,
                "idempotency_key": "hold-many",
            }),
            vec!["amount", "ttl_seconds", "user_id", "description"],
        ),
        (
            "/admin/credits/codes",
            admin_token("root"),
            json!({ "count": 0, "credits": 0, "max_uses": 0, "description": control }),
            vec!["count", "credits", "max_uses", "description"],
        ),
        (
            "/internal/credits/check",
            SERVICE_KEY.to_owned(),
            json!({ "user_id": "", "amount": i64::MAX }),
            vec!["user_id", "amount"],
        ),
    ] {
        let (status, body, _) = app.post(path, &token, request).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{path}");
        assert_eq!(crate::common::error_fields(&body), fields, "{path}: {body}");
    }
    // The largest integer is out of range, and said so (not "must be a positive integer").
    let (_, body, _) = app
        .post(
            "/internal/credits/check",
            SERVICE_KEY,
            json!({ "user_id": "alice", "amount": i64::MAX }),
        )
        .await;
    assert_eq!(
        body["error"]["details"]["fields"][0]["message"],
        "must be a whole number from 1 to 1000000000000",
        "{body}"
    );
    let (status, body, _) = app
        .put(
            "/admin/checkin/config",
            &admin_token("root"),
            json!({
                "enabled": true, "rewards": [0], "timezone": "Mars/Olympus",
                "credits_expire_days": 0,
            }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        crate::common::error_fields(&body),
        ["rewards", "timezone", "credits_expire_days"],
        "{body}"
    );
    let (status, body, _) = app
        .post(
            "/payment/create-session",
            &user_token("alice"),
            json!({
                "channel": "paypal", "type": "gift", "plan_id": "pro", "interval": "week",
                "success_url": "https://example.com/ok",
            }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        crate::common::error_fields(&body),
        ["channel", "type", "interval"],
        "{body}"
    );
    assert_eq!(snapshot(&app).await, before);
    app.finish().await;
}

/// The error envelope of a raw HTTP answer, with its status line.
fn envelope_of(answer: &str) -> (&str, Value) {
    let status = answer.split("\r\n").next().unwrap_or_default();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    (status, body)
}

/// Requests the HTTP layer refuses before any route sees them answer the JSON envelope too
/// (with their own status), and change nothing.
async fn http_errors_answer_the_envelope(db: Db) {
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 10).await;
    let before = snapshot(&app).await;
    let consume = |headers: &str| {
        format!(
            "POST /internal/credits/consume HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Authorization: Bearer {SERVICE_KEY}\r\nContent-Type: application/json\r\n\
             {headers}\r\n"
        )
    };
    let many_headers: String = (0..200).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let long_uri = format!(
        "GET /credits/balance?padding={} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "x".repeat(140 * 1024)
    );
    for (name, request, status, code) in [
        (
            "a header line without a colon",
            consume("Content-Length: 2\r\nNot a header\r\n\r\n{}"),
            "HTTP/1.1 400 Bad Request",
            "MALFORMED_REQUEST",
        ),
        (
            "a Content-Length that is not a number",
            consume("Content-Length: ten\r\n\r\n{}"),
            "HTTP/1.1 400 Bad Request",
            "MALFORMED_REQUEST",
        ),
        (
            "a request line that is not HTTP",
            "HELLO THERE\r\n\r\n".to_owned(),
            "HTTP/1.1 400 Bad Request",
            "MALFORMED_REQUEST",
        ),
        (
            "too many headers",
            consume(&format!("{many_headers}Content-Length: 2\r\n\r\n{{}}")),
            "HTTP/1.1 431 Request Header Fields Too Large",
            "HEADERS_TOO_LARGE",
        ),
        (
            "a URI over the head limit",
            long_uri,
            "HTTP/1.1 431 Request Header Fields Too Large",
            "HEADERS_TOO_LARGE",
        ),
    ] {
        let answer = raw_http(app.port, request.as_bytes()).await;
        let (got, body) = envelope_of(&answer);
        assert_eq!(got, status, "{name}: {answer}");
        assert_eq!(body["success"], false, "{name}");
        assert_eq!(body["error"]["code"], code, "{name}: {answer}");
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            head.contains("\r\ncontent-type: application/json"),
            "{name}: {head}"
        );
        assert!(head.contains("\r\nconnection: close"), "{name}: {head}");
    }

    // A chunked body whose framing breaks: the route reading it answers, in the same words.
    let broken = raw_http(
        app.port,
        consume("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let (status, body) = envelope_of(&broken);
    assert_eq!(status, "HTTP/1.1 400 Bad Request", "{broken}");
    assert_eq!(body["error"]["code"], "MALFORMED_REQUEST", "{broken}");

    // Pipelined after a good request: the good answer is untouched, the bad one enveloped.
    let pipelined = raw_http(
        app.port,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET / HTTP/1.1\r\nBroken\r\n\r\n",
    )
    .await;
    assert!(pipelined.starts_with("HTTP/1.1 200 OK\r\n"), "{pipelined}");
    let second = &pipelined[pipelined.find("HTTP/1.1 400").unwrap()..];
    let (status, body) = envelope_of(second);
    assert_eq!(status, "HTTP/1.1 400 Bad Request", "{pipelined}");
    assert_eq!(body["error"]["code"], "MALFORMED_REQUEST");

    // A head that never ends: 408 once the request timeout (5 s) runs out.
    let slow = raw_http(
        app.port,
        b"GET /credits/balance HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    )
    .await;
    let (status, body) = envelope_of(&slow);
    assert_eq!(status, "HTTP/1.1 408 Request Timeout", "{slow}");
    assert_eq!(body["error"]["code"], "REQUEST_TIMEOUT");

    // The application's own errors are as they were.
    let bad_json = raw_http(
        app.port,
        consume("Content-Length: 1\r\nConnection: close\r\n\r\n{").as_bytes(),
    )
    .await;
    let (status, body) = envelope_of(&bad_json);
    assert_eq!(status, "HTTP/1.1 400 Bad Request", "{bad_json}");
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{bad_json}");

    assert_eq!(
        before,
        snapshot(&app).await,
        "a refused request changed the database"
    );
    app.finish().await;
}
