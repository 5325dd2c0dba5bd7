//! The catalog over HTTP: `GET /subscription/plans` and the admin plan and coupon endpoints,
//! through the real server (`Application::build`) on a random port, on SQLite and — when
//! `TALLY_TEST_POSTGRES_URL` is set — PostgreSQL. Every refused request must change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tally::{Application, Secret, Settings};
use tally_ledger::ManualClock;
use tally_testkit::{Backend, ScratchDb};
use time::macros::datetime;

const SECRET: &str = "catalog-http-test-secret-0123456789abcdef";
struct App {
    base: String,
    client: reqwest::Client,
    _db: ScratchDb,
}

/// Starts a server on a fresh database; `None` (after a notice) for PostgreSQL when it is not
/// configured.
async fn spawn(db: Backend) -> Option<App> {
    let scratch = ScratchDb::new(db).await?;
    let url = scratch.url.clone();
    let settings = Settings {
        database_url: url,
        bind: "127.0.0.1:0".into(),
        workers: Some(2),
        jwt_secret: Some(Secret::new(SECRET)),
        // The second app the isolation checks use.
        apps: "other".into(),
        sweep_interval_seconds: 0,
        pg_max_connections: 5,
        log_level: "warn".into(),
        ..Settings::default()
    };
    let clock = Arc::new(ManualClock::new(datetime!(2026-06-01 12:00 UTC)));
    let app = Application::build(settings, clock).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    Some(App {
        base,
        client,
        _db: scratch,
    })
}

fn token(user: &str, role: &str, app: &str) -> String {
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": user, "role": role, "app": app, "exp": exp }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn admin() -> String {
    token("root", "admin", "default")
}

fn other_admin() -> String {
    token("boss", "admin", "other")
}

/// A request body: JSON, or raw text sent as `application/json`.
enum Body {
    None,
    Json(Value),
    Raw(&'static str),
}

impl App {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Body,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Raw(s) => req.header("content-type", "application/json").body(s),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["success"],
            json!(status.is_success()),
            "envelope of {path}: {body}"
        );
        (status, body)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, &[], Body::None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Body) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, &[], body).await
    }

    async fn put(&self, path: &str, token: Option<&str>, body: Body) -> (StatusCode, Value) {
        self.call(Method::PUT, path, token, &[], body).await
    }

    /// Creates a plan as `token`'s admin; returns it.
    async fn plan(&self, token: &str, body: Value) -> Value {
        let (status, reply) = self
            .post("/admin/billing/plans", Some(token), Body::Json(body))
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        reply["data"].clone()
    }

    async fn admin_plans(&self, token: &str) -> Value {
        let (status, reply) = self.get("/admin/billing/plans", Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        reply["data"].clone()
    }

    async fn coupons(&self, token: &str) -> Value {
        let (status, reply) = self
            .get("/admin/billing/coupons?limit=100", Some(token))
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        reply["data"].clone()
    }
}

fn pro_body() -> Value {
    json!({
        "name": "Pro", "description": "For growing teams", "kind": "subscription",
        "currency": "usd", "price_monthly": 999, "price_yearly": 9990,
        "credits_included": 10000, "features": ["Unlimited AI chat", "Priority support"],
        "stripe_price_id_monthly": "price_pro_m", "stripe_price_id_yearly": "price_pro_y",
        "sort_order": 2
    })
}

fn pack_body() -> Value {
    json!({
        "name": "5k credits", "kind": "credit_pack", "currency": "usd", "price": 499,
        "credits_included": 5000, "creem_product_id": "prod_pack", "sort_order": 1,
        "credits_expire_days": 365
    })
}

/// Asserts an error reply: status, code, and (for validation errors) the field named.
fn assert_error(reply: &(StatusCode, Value), status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(reply.0, status, "{}", reply.1);
    assert_eq!(reply.1["error"]["code"], code, "{}", reply.1);
    if let Some(field) = field {
        let fields = reply.1["error"]["details"]["fields"].as_array().unwrap();
        assert!(
            fields.iter().any(|f| f["field"] == field),
            "expected field {field} in {}",
            reply.1
        );
    }
}

/// Runs one case against a server on a fresh database.
async fn run<F, Fut>(db: Backend, _name: &str, case: F)
where
    F: FnOnce(App) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if let Some(app) = spawn(db).await {
        case(app).await;
    }
}

tally_testkit::backend_tests!(
    run = run;
    public_plans_are_active_ordered_and_per_app,
    admin_plans_create_list_and_partial_update,
    bad_plan_input_changes_nothing,
    coupons_create_list_and_refuse_bad_input,
    admin_endpoints_need_an_admin,
);

// ---------------------------------------------------------------------------------------------
// Cases

async fn public_plans_are_active_ordered_and_per_app(app: App) {
    let (status, reply) = app.get("/subscription/plans", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["data"], json!([]));

    let a = admin();
    let pro = app.plan(&a, pro_body()).await;
    let pack = app.plan(&a, pack_body()).await;
    let mut hidden = pro_body();
    hidden["name"] = json!("Legacy");
    hidden["active"] = json!(false);
    hidden["sort_order"] = json!(0);
    app.plan(&a, hidden).await;
    let mut theirs = pro_body();
    theirs["name"] = json!("Other app's plan");
    app.plan(&other_admin(), theirs).await;

    // No credentials needed; the default app; active only, by sort_order.
    let (status, reply) = app.get("/subscription/plans", None).await;
    assert_eq!(status, StatusCode::OK);
    let listed = reply["data"].as_array().unwrap();
    let ids: Vec<_> = listed.iter().map(|p| p["id"].clone()).collect();
    assert_eq!(ids, [pack["id"].clone(), pro["id"].clone()]);
    let first = &listed[1];
    assert_eq!(first["name"], "Pro");
    assert_eq!(first["kind"], "subscription");
    assert_eq!(first["price_monthly"], 999);
    assert_eq!(first["price_yearly"], 9990);
    assert_eq!(first["price"], Value::Null);
    assert_eq!(first["credits_included"], 10000);
    assert_eq!(
        first["features"],
        json!(["Unlimited AI chat", "Priority support"])
    );
    assert_eq!(first["currency"], "usd");
    assert!(
        first.get("created_by").is_none(),
        "admin fields stay private"
    );
    assert_eq!(listed[0]["kind"], "credit_pack");
    assert_eq!(listed[0]["credits_expire_days"], 365);

    // X-App-Key picks the app; an invalid key falls back to `default`.
    let (_, reply) = app
        .call(
            Method::GET,
            "/subscription/plans",
            None,
            &[("X-App-Key", "other")],
            Body::None,
        )
        .await;
    let names: Vec<_> = reply["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, [json!("Other app's plan")]);
    let (_, reply) = app
        .call(
            Method::GET,
            "/subscription/plans",
            None,
            &[("X-App-Key", "no such app!")],
            Body::None,
        )
        .await;
    assert_eq!(reply["data"].as_array().unwrap().len(), 2);
    let (_, reply) = app
        .call(
            Method::GET,
            "/subscription/plans",
            None,
            &[("X-App-Key", "unused")],
            Body::None,
        )
        .await;
    assert_eq!(reply["data"], json!([]));
}

async fn admin_plans_create_list_and_partial_update(app: App) {
    let a = admin();
    let created = app.plan(&a, pro_body()).await;
    assert!(created["id"].as_str().unwrap().parse::<i64>().is_ok());
    assert_eq!(created["created_by"], "root");
    assert_eq!(created["updated_by"], "root");
    assert_eq!(created["active"], true);
    assert_eq!(created["credits_expire_days"], Value::Null);
    assert_eq!(created["created_at"], "2026-06-01T12:00:00Z");
    let id = created["id"].as_str().unwrap().to_owned();

    let mut upper = pack_body();
    upper["currency"] = json!("EUR");
    let eur = app.plan(&a, upper).await;
    assert_eq!(eur["currency"], "eur");
    assert_eq!(
        app.admin_plans(&a).await,
        json!([eur.clone(), created.clone()])
    );

    // Partial: given fields replace, omitted fields stay, null clears; the actor is recorded.
    let editor = token("editor", "admin", "default");
    let (status, reply) = app
        .put(
            &format!("/admin/billing/plans/{id}"),
            Some(&editor),
            Body::Json(json!({"description": "Now bigger", "price_yearly": null,
                              "stripe_price_id_yearly": null, "active": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let updated = &reply["data"];
    assert_eq!(updated["description"], "Now bigger");
    assert_eq!(updated["price_yearly"], Value::Null);
    assert_eq!(updated["stripe_price_id_yearly"], Value::Null);
    assert_eq!(updated["active"], false);
    assert_eq!(updated["price_monthly"], 999);
    assert_eq!(updated["name"], "Pro");
    assert_eq!(updated["features"], created["features"]);
    assert_eq!(updated["created_by"], "root");
    assert_eq!(updated["updated_by"], "editor");
    assert_eq!(app.admin_plans(&a).await[1], *updated);
    let (_, public) = app.get("/subscription/plans", None).await;
    assert_eq!(
        public["data"].as_array().unwrap().len(),
        1,
        "inactive plans are not public"
    );

    // An empty body changes nothing.
    let (status, reply) = app
        .put(
            &format!("/admin/billing/plans/{id}"),
            Some(&a),
            Body::Json(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["data"], *updated);

    // Another app's admin sees neither the plan nor can change it.
    let before = app.admin_plans(&a).await;
    let o = other_admin();
    assert_eq!(app.admin_plans(&o).await, json!([]));
    let reply = app
        .put(
            &format!("/admin/billing/plans/{id}"),
            Some(&o),
            Body::Json(json!({"name": "Mine"})),
        )
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "NOT_FOUND", None);
    for missing in ["999999", "not-a-number"] {
        let reply = app
            .put(
                &format!("/admin/billing/plans/{missing}"),
                Some(&a),
                Body::Json(json!({"name": "X"})),
            )
            .await;
        assert_error(&reply, StatusCode::NOT_FOUND, "NOT_FOUND", None);
    }
    assert_eq!(app.admin_plans(&a).await, before);
}

async fn bad_plan_input_changes_nothing(app: App) {
    let a = admin();
    let existing = app.plan(&a, pro_body()).await;
    let id = existing["id"].as_str().unwrap().to_owned();
    let before = app.admin_plans(&a).await;

    let with = |k: &str, v: Value| {
        let mut b = pro_body();
        b[k] = v;
        Body::Json(b)
    };
    let without = |k: &str| {
        let mut b = pro_body();
        b.as_object_mut().unwrap().remove(k);
        Body::Json(b)
    };
    let cases: Vec<(Body, Option<&str>)> = vec![
        (Body::Raw("{\"name\": \"Pro\", "), Some("body")),
        (Body::Raw("[1, 2, 3]"), Some("body")),
        (with("price_monthly", json!("999")), Some("price_monthly")),
        (with("features", json!("one")), Some("features")),
        (with("kind", json!("lifetime")), Some("kind")),
        (with("surprise", json!(true)), Some("surprise")),
        (without("name"), Some("name")),
        (with("price_monthly", json!(-1)), Some("price_monthly")),
        (
            with("credits_included", json!(-5)),
            Some("credits_included"),
        ),
        (with("currency", json!("xyz")), Some("currency")),
        (with("name", json!("   ")), Some("name")),
        (with("name", json!("Pro\u{0}")), Some("name")),
        (
            with("description", json!("Best\u{1b}[31m plan")),
            Some("description"),
        ),
        (
            with("features", json!(["500 credits\u{7f}"])),
            Some("features[0]"),
        ),
        (
            with("credits_expire_days", json!(0)),
            Some("credits_expire_days"),
        ),
        (with("price", json!(100)), Some("price")),
        (
            Body::Json(json!({"name": "Sub", "kind": "subscription", "currency": "usd"})),
            Some("price_monthly"),
        ),
        (
            Body::Json(
                json!({"name": "Pack", "kind": "credit_pack", "currency": "usd",
                              "price_monthly": 100}),
            ),
            Some("price"),
        ),
    ];
    for (body, field) in cases {
        let reply = app.post("/admin/billing/plans", Some(&a), body).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", field);
    }
    // Wrong content type.
    let reply = app
        .call(
            Method::POST,
            "/admin/billing/plans",
            Some(&a),
            &[("content-type", "text/plain")],
            Body::None,
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", None);

    let path = format!("/admin/billing/plans/{id}");
    let updates: Vec<(Body, Option<&str>)> = vec![
        (Body::Raw("{\"name\": "), Some("body")),
        // Fields by position once renamed the plan.
        (Body::Json(json!(["Renamed via array"])), Some("body")),
        (Body::Json(json!({"nmae": "typo"})), Some("nmae")),
        (Body::Json(json!({"name": null})), Some("name")),
        (
            Body::Json(json!({"price_monthly": "cheap"})),
            Some("price_monthly"),
        ),
        (
            Body::Json(json!({"price_monthly": -10})),
            Some("price_monthly"),
        ),
        (
            Body::Json(json!({"currency": "doubloons"})),
            Some("currency"),
        ),
        // The merged plan must still be valid: no price left for a subscription…
        (
            Body::Json(json!({"price_monthly": null, "price_yearly": null,
                              "stripe_price_id_monthly": null, "stripe_price_id_yearly": null})),
            Some("price_monthly"),
        ),
        // …and a credit pack needs its price.
        (Body::Json(json!({"kind": "credit_pack"})), Some("price")),
    ];
    for (body, field) in updates {
        let reply = app.put(&path, Some(&a), body).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", field);
    }
    assert_eq!(app.admin_plans(&a).await, before);
}

async fn coupons_create_list_and_refuse_bad_input(app: App) {
    let a = admin();
    let pro = app.plan(&a, pro_body()).await;
    let pro_id = pro["id"].as_str().unwrap().to_owned();
    let theirs = app.plan(&other_admin(), pro_body()).await;
    let theirs_id = theirs["id"].as_str().unwrap().to_owned();

    let (status, reply) = app
        .post(
            "/admin/billing/coupons",
            Some(&a),
            Body::Json(
                json!({"code": "launch-50", "percent_off": 50, "duration": "repeating",
                              "duration_months": 3, "max_redemptions": 100,
                              "expires_at": "2026-12-31T00:00:00Z", "plan_ids": [pro_id]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let launch = reply["data"].clone();
    assert_eq!(launch["code"], "LAUNCH-50");
    assert_eq!(launch["percent_off"], 50);
    assert_eq!(launch["amount_off"], Value::Null);
    assert_eq!(launch["duration"], "repeating");
    assert_eq!(launch["duration_months"], 3);
    assert_eq!(launch["times_redeemed"], 0);
    assert_eq!(launch["expires_at"], "2026-12-31T00:00:00Z");
    assert_eq!(launch["plan_ids"], json!([pro_id]));
    assert_eq!(launch["active"], true);
    assert_eq!(launch["created_by"], "root");

    let (status, reply) = app
        .post(
            "/admin/billing/coupons",
            Some(&a),
            Body::Json(json!({"code": "FIVE", "amount_off": 500, "currency": "usd",
                              "duration": "once"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let five = reply["data"].clone();
    assert_eq!(five["plan_ids"], json!([]));
    assert_eq!(app.coupons(&a).await, json!([five.clone(), launch.clone()]));
    let (_, page) = app.get("/admin/billing/coupons?limit=1", Some(&a)).await;
    assert_eq!(page["data"], json!([five]));
    assert_eq!(
        page["meta"],
        json!({"limit": 1, "offset": 0, "has_more": true})
    );
    let reply = app.get("/admin/billing/coupons?limit=0", Some(&a)).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
        Some("limit"),
    );

    let before = app.coupons(&a).await;
    let reply = app
        .post(
            "/admin/billing/coupons",
            Some(&a),
            Body::Json(json!({"code": "Launch-50", "percent_off": 10, "duration": "once"})),
        )
        .await;
    assert_error(&reply, StatusCode::CONFLICT, "CONFLICT", None);

    let bad: Vec<(Body, Option<&str>)> = vec![
        (Body::Raw("{\"code\": "), Some("body")),
        (
            Body::Json(json!({"code": "A", "percent_off": "ten", "duration": "once"})),
            Some("percent_off"),
        ),
        (
            Body::Json(json!({"code": "A", "percent_off": 10, "duration": "weekly"})),
            Some("duration"),
        ),
        (
            Body::Json(json!({"code": "A", "percent_off": 10, "duration": "once", "extra": 1})),
            Some("extra"),
        ),
        (
            Body::Json(
                json!({"code": "A", "percent_off": 10, "duration": "once", "expires_at": "soon"}),
            ),
            Some("expires_at"),
        ),
        (
            Body::Json(
                json!({"code": "A", "percent_off": 10, "amount_off": 100, "currency": "usd",
                              "duration": "once"}),
            ),
            Some("amount_off"),
        ),
        (
            Body::Json(json!({"code": "A", "duration": "once"})),
            Some("percent_off"),
        ),
        (
            Body::Json(json!({"code": "A", "percent_off": 0, "duration": "once"})),
            Some("percent_off"),
        ),
        (
            Body::Json(json!({"code": "A", "percent_off": 101, "duration": "once"})),
            Some("percent_off"),
        ),
        (
            Body::Json(
                json!({"code": "A", "amount_off": -5, "currency": "usd", "duration": "once"}),
            ),
            Some("amount_off"),
        ),
        (
            Body::Json(json!({"code": "A", "amount_off": 100, "duration": "once"})),
            Some("currency"),
        ),
        (
            Body::Json(
                json!({"code": "A", "amount_off": 100, "currency": "abc", "duration": "once"}),
            ),
            Some("currency"),
        ),
        (
            Body::Json(json!({"code": "A", "percent_off": 10, "duration": "repeating"})),
            Some("duration_months"),
        ),
        (
            Body::Json(
                json!({"code": "A", "percent_off": 10, "duration": "once", "duration_months": 2}),
            ),
            Some("duration_months"),
        ),
        (
            Body::Json(
                json!({"code": "A", "percent_off": 10, "duration": "repeating", "duration_months": 37}),
            ),
            Some("duration_months"),
        ),
        (
            Body::Json(
                json!({"code": "A", "percent_off": 10, "duration": "once", "max_redemptions": 0}),
            ),
            Some("max_redemptions"),
        ),
        (
            Body::Json(json!({"code": "not ok!", "percent_off": 10, "duration": "once"})),
            Some("code"),
        ),
        (
            Body::Json(json!({"code": "A", "percent_off": 10, "duration": "once",
                           "expires_at": "2026-01-01T00:00:00Z"})),
            Some("expires_at"),
        ),
        (
            Body::Json(
                json!({"code": "A", "percent_off": 10, "duration": "once", "plan_ids": ["424242"]}),
            ),
            Some("plan_ids[0]"),
        ),
        (
            Body::Json(
                json!({"code": "A", "percent_off": 10, "duration": "once", "plan_ids": [pro_id, theirs_id]}),
            ),
            Some("plan_ids[1]"),
        ),
        (
            Body::Json(
                json!({"code": "A", "amount_off": 100, "currency": "eur", "duration": "once",
                              "plan_ids": [pro_id]}),
            ),
            Some("plan_ids[0]"),
        ),
    ];
    for (body, field) in bad {
        let reply = app.post("/admin/billing/coupons", Some(&a), body).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", field);
    }
    assert_eq!(app.coupons(&a).await, before);
    assert_eq!(app.coupons(&other_admin()).await, json!([]));
}

async fn admin_endpoints_need_an_admin(app: App) {
    let a = admin();
    let plan = app.plan(&a, pro_body()).await;
    let put_path = format!("/admin/billing/plans/{}", plan["id"].as_str().unwrap());
    let user = token("alice", "user", "default");
    let plans_before = app.admin_plans(&a).await;

    let calls: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/admin/billing/plans", None),
        (Method::POST, "/admin/billing/plans", Some(pack_body())),
        (Method::PUT, &put_path, Some(json!({"name": "Hacked"}))),
        (Method::GET, "/admin/billing/coupons", None),
        (
            Method::POST,
            "/admin/billing/coupons",
            Some(json!({"code": "FREE", "percent_off": 100, "duration": "forever"})),
        ),
    ];
    for (method, path, body) in calls {
        let body = || body.clone().map_or(Body::None, Body::Json);
        let reply = app
            .call(method.clone(), path, Some(&user), &[], body())
            .await;
        assert_error(&reply, StatusCode::FORBIDDEN, "FORBIDDEN", None);
        let reply = app.call(method.clone(), path, None, &[], body()).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", None);
        let reply = app.call(method, path, Some("not-a-jwt"), &[], body()).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", None);
    }
    assert_eq!(app.admin_plans(&a).await, plans_before);
    assert_eq!(app.coupons(&a).await, json!([]));

    // The public list needs no credentials and ignores a user token's app.
    let (status, reply) = app.get("/subscription/plans", Some(&user)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["data"].as_array().unwrap().len(), 1);
}
