//! Redemption codes over HTTP: admins generate and list batches, users redeem them once each,
//! wrong guesses are rate-limited, races have one winner, and refusals change nothing.

use reqwest::Method;
use serde_json::{Value, json};
use time::Duration;
use time::format_description::well_known::Rfc3339;

use crate::common::{
    Body, Db, Reply, SERVICE_KEY, START, TestApp, admin_token, app_token, assert_error, send,
    user_token,
};

backend_tests!(
    admin_creates_and_lists_codes,
    users_redeem_codes_once,
    wrong_guesses_are_rate_limited,
    concurrent_redemptions_have_one_winner,
    bad_code_input_changes_nothing
);

const CODES: &str = "/admin/credits/codes";
const REDEEM: &str = "/credits/redeem";

/// A refused request: name, method, path, bearer token, body, expected status and code.
type Case = (
    String,
    Method,
    String,
    Option<String>,
    Body,
    u16,
    &'static str,
);

/// RFC 3339 of `START + offset`.
fn at(offset: Duration) -> String {
    (START + offset).format(&Rfc3339).unwrap()
}

/// An admin of the default app creates a batch; returns the codes.
async fn create(app: &TestApp, batch: Value) -> Vec<Value> {
    let (status, body, _) = app.post(CODES, &admin_token("root"), batch).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().expect("codes").clone()
}

/// One code of `credits` credits with `max_uses` uses.
async fn one_code(app: &TestApp, credits: i64, max_uses: i64) -> String {
    let codes = create(
        app,
        json!({ "count": 1, "credits": credits, "max_uses": max_uses }),
    )
    .await;
    codes[0]["code"].as_str().unwrap().to_owned()
}

/// `user` redeems `code`.
async fn redeem(app: &TestApp, user: &str, code: &str) -> Reply {
    app.post(REDEEM, &user_token(user), json!({ "code": code }))
        .await
}

/// The code `code` as the admin's list shows it.
async fn listed(app: &TestApp, code: &str) -> Value {
    let (status, body, _) = app
        .get(&format!("{CODES}?limit=100"), &admin_token("root"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == json!(code))
        .unwrap_or_else(|| panic!("{code} not listed: {body}"))
        .clone()
}

/// Whether `code` has the form `XXXX-XXXX-XXXX` over Crockford's alphabet.
fn well_formed(code: &str) -> bool {
    const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let groups: Vec<&str> = code.split('-').collect();
    groups.len() == 3
        && groups
            .iter()
            .all(|g| g.len() == 4 && g.chars().all(|c| ALPHABET.contains(c)))
}

/// `code` the way a person might type it: lower case, spaces, `o`/`i` for `0`/`1`.
fn sloppy(code: &str) -> String {
    code.to_lowercase()
        .replace('-', " ")
        .replace('0', "o")
        .replace('1', "i")
}

/// Everything a refused request could have changed.
async fn snapshot(app: &TestApp) -> Value {
    let admin = admin_token("root");
    let mut balances = Vec::new();
    for user in ["alice", "bob"] {
        balances.push(app.get("/credits/balance", &user_token(user)).await.1);
        balances.push(
            app.get("/credits/transactions?limit=100", &user_token(user))
                .await
                .1,
        );
    }
    let other_admin = app_token("root", "other", Some("admin"));
    let path = format!("{CODES}?limit=100");
    json!({
        "codes": app.get(&path, &admin).await.1,
        "other_codes": app.get(&path, &other_admin).await.1,
        "default": app.admin_history("default", "").await,
        "other": app.admin_history("other", "").await,
        "balances": balances,
    })
}

async fn admin_creates_and_lists_codes(db: Db) {
    let app = TestApp::spawn(db).await;
    let admin = admin_token("root");

    let (status, body, _) = app.get(CODES, &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([]));
    assert_eq!(
        body["meta"],
        json!({ "limit": 20, "offset": 0, "has_more": false })
    );

    let expires_at = at(Duration::days(30));
    let first = create(
        &app,
        json!({
            "count": 3, "credits": 25, "max_uses": 2, "expires_at": expires_at,
            "credits_expire_days": 30, "description": "Launch week",
        }),
    )
    .await;
    assert_eq!(first.len(), 3);
    let batch = first[0]["batch"].clone();
    assert!(batch.as_str().is_some_and(|b| !b.is_empty()), "{batch}");
    for code in &first {
        assert!(well_formed(code["code"].as_str().unwrap()), "{code}");
        assert!(
            code["id"].as_str().unwrap().parse::<i64>().is_ok(),
            "{code}"
        );
        assert_eq!(code["batch"], batch);
        assert_eq!(code["credits"], json!(25));
        assert_eq!(code["max_uses"], json!(2));
        assert_eq!(code["uses"], json!(0));
        assert_eq!(code["expires_at"], json!("2026-03-31T12:00:00Z"));
        assert_eq!(code["credits_expire_days"], json!(30));
        assert_eq!(code["description"], json!("Launch week"));
        assert_eq!(code["created_by"], json!("root"));
        assert_eq!(code["created_at"], json!("2026-03-01T12:00:00Z"));
    }

    // Defaults: one use, no expiry of the code or of its credits.
    app.clock.advance(Duration::minutes(1));
    let second = create(&app, json!({ "count": 2, "credits": 5 })).await;
    assert_eq!(second.len(), 2);
    assert_ne!(second[0]["batch"], batch);
    for code in &second {
        assert!(well_formed(code["code"].as_str().unwrap()), "{code}");
        assert_eq!(code["max_uses"], json!(1));
        assert_eq!(code["expires_at"], Value::Null);
        assert_eq!(code["credits_expire_days"], Value::Null);
        assert_eq!(code["description"], json!(""));
    }
    let mut all: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|c| c["code"].as_str().unwrap().to_owned())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 5, "codes repeat: {all:?}");

    // Newest first, paginated.
    let (status, body, _) = app.get(&format!("{CODES}?limit=2"), &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["meta"],
        json!({ "limit": 2, "offset": 0, "has_more": true })
    );
    let page1 = body["data"].as_array().unwrap().clone();
    assert_eq!(page1.len(), 2);
    assert!(
        page1.iter().all(|c| c["batch"] == second[0]["batch"]),
        "{body}"
    );
    let (status, body, _) = app.get(&format!("{CODES}?limit=2&offset=2"), &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["meta"],
        json!({ "limit": 2, "offset": 2, "has_more": true })
    );
    let page2 = body["data"].as_array().unwrap().clone();
    let (status, body, _) = app.get(&format!("{CODES}?limit=2&offset=4"), &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["meta"],
        json!({ "limit": 2, "offset": 4, "has_more": false })
    );
    let page3 = body["data"].as_array().unwrap().clone();
    assert_eq!(page3.len(), 1);
    let (status, body, _) = app.get(&format!("{CODES}?limit=5"), &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["meta"]["has_more"], json!(false));
    let listed: Vec<Value> = page1.into_iter().chain(page2).chain(page3).collect();
    assert_eq!(body["data"], json!(listed));
    let ids: Vec<i64> = listed
        .iter()
        .map(|c| c["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {ids:?}"
    );
    let mut created: Vec<Value> = first.iter().chain(&second).cloned().collect();
    created.sort_by_key(|c| std::cmp::Reverse(c["id"].as_str().unwrap().parse::<i64>().unwrap()));
    assert_eq!(listed, created);

    // Codes belong to their app.
    let (status, body, _) = app
        .get(CODES, &app_token("root", "other", Some("admin")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([]));
    let reply = redeem(&app, "alice", &all[0]).await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    let (status, body, _) = app
        .post(
            REDEEM,
            &app_token("alice", "other", None),
            json!({ "code": all[1] }),
        )
        .await;
    assert_eq!(status.as_u16(), 404, "{body}");
    assert_eq!(body["error"]["code"], json!("CODE_NOT_FOUND"));
    app.finish().await;
}

async fn users_redeem_codes_once(db: Db) {
    let app = TestApp::spawn(db).await;
    let codes = create(
        &app,
        json!({
            "count": 1, "credits": 25, "credits_expire_days": 30, "description": "Launch week",
        }),
    )
    .await;
    let code = codes[0]["code"].as_str().unwrap().to_owned();

    // Any case, spaces for dashes, look-alike letters.
    app.clock.advance(Duration::minutes(1));
    let (status, body, _) = redeem(&app, "alice", &sloppy(&code)).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["credits"], json!(25));
    assert_eq!(data["balance"], json!(25));
    let txn = &data["transaction"];
    assert_eq!(txn["type"], json!("redemption"));
    assert_eq!(txn["amount"], json!(25));
    assert_eq!(txn["balance_after"], json!(25));
    assert_eq!(txn["description"], json!("Launch week"));
    assert_eq!(txn["created_at"], json!("2026-03-01T12:01:00Z"));

    // The credits arrive, expiring after credits_expire_days, and the history shows them.
    let (status, body, _) = app.get("/credits/balance", &user_token("alice")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({
            "balance": 25, "available": 25, "held": 0,
            "expiring": [{ "amount": 25, "expires_at": "2026-03-31T12:01:00Z" }],
        })
    );
    let (status, body, _) = app
        .get(
            "/credits/transactions?type=redemption",
            &user_token("alice"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([txn]));
    assert_eq!(listed(&app, &code).await["uses"], json!(1));

    // The same user again, however typed; another user on the used-up code.
    let before = snapshot(&app).await;
    for typed in [code.clone(), code.to_lowercase(), code.replace('-', "")] {
        let reply = redeem(&app, "alice", &typed).await;
        assert_error(&reply, 409, "CODE_ALREADY_REDEEMED");
    }
    assert_error(&redeem(&app, "bob", &code).await, 422, "CODE_EXHAUSTED");
    assert_eq!(snapshot(&app).await, before);

    // Unknown codes, well-formed or not.
    assert_ne!(code, "0000-ZZZZ-ZZZZ");
    for unknown in ["0000-ZZZZ-ZZZZ", "nope", "0000-ZZZZ-ZZZU", ""] {
        assert_error(&redeem(&app, "bob", unknown).await, 404, "CODE_NOT_FOUND");
    }

    // A multi-use code: each user once, until its uses run out.
    let shared = one_code(&app, 7, 2).await;
    for user in ["alice", "bob"] {
        let (status, body, _) = redeem(&app, user, &shared).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_error(&redeem(&app, "carol", &shared).await, 422, "CODE_EXHAUSTED");
    assert_eq!(listed(&app, &shared).await["uses"], json!(2));
    assert_eq!(app.balance("alice").await, 32);
    assert_eq!(app.balance("bob").await, 7);
    assert_eq!(app.balance("carol").await, 0);

    // An expiring code: redeemable until its expires_at, then CODE_EXPIRED.
    let expiring = create(
        &app,
        json!({ "count": 1, "credits": 3, "max_uses": 5, "expires_at": at(Duration::hours(1)) }),
    )
    .await;
    let expiring = expiring[0]["code"].as_str().unwrap().to_owned();
    app.clock
        .set(START + Duration::hours(1) - Duration::seconds(1));
    let (status, body, _) = redeem(&app, "alice", &expiring).await;
    assert_eq!(status, 200, "{body}");
    app.clock.advance(Duration::seconds(2));
    let before = snapshot(&app).await;
    assert_error(&redeem(&app, "bob", &expiring).await, 422, "CODE_EXPIRED");
    assert_error(&redeem(&app, "carol", &expiring).await, 422, "CODE_EXPIRED");
    assert_eq!(snapshot(&app).await, before);
    assert_eq!(listed(&app, &expiring).await["uses"], json!(1));
    assert_eq!(app.rows_of_type("redemption").await.len(), 4);
    app.finish().await;
}

async fn wrong_guesses_are_rate_limited(db: Db) {
    let app = TestApp::spawn(db).await;
    let code = one_code(&app, 10, 3).await;
    // Well-formed codes the app does not have.
    let wrong = |i: usize| {
        let guess = format!("{i:04}-ZZZZ-ZZZZ");
        assert_ne!(guess, code);
        guess
    };

    // Ten wrong guesses, one a minute (malformed ones count too).
    for i in 0..10 {
        let guess = if i % 3 == 0 { "x".to_owned() } else { wrong(i) };
        let reply = redeem(&app, "alice", &guess).await;
        assert_error(&reply, 404, "CODE_NOT_FOUND");
        app.clock.advance(Duration::minutes(1));
    }
    // Now at +10 min; the first guess leaves the window at +15 min: 300 s.
    let before = snapshot(&app).await;
    for guess in [code.clone(), wrong(11)] {
        let reply = redeem(&app, "alice", &guess).await;
        assert_error(&reply, 429, "RATE_LIMITED");
        let retry = reply.2.get("retry-after").expect("Retry-After header");
        let seconds: i64 = retry.to_str().unwrap().parse().expect("an integer");
        assert_eq!(seconds, 300, "{retry:?}");
        assert_eq!(
            reply.1["error"]["details"]["retry_after_seconds"],
            json!(300)
        );
    }
    assert_eq!(snapshot(&app).await, before);
    assert_eq!(listed(&app, &code).await["uses"], json!(0));

    // Another user is not limited.
    let (status, body, _) = redeem(&app, "bob", &code).await;
    assert_eq!(status, 200, "{body}");

    // Still limited a second before the window reopens, with the wait rounded up.
    app.clock
        .advance(Duration::seconds(299) + Duration::milliseconds(500));
    let reply = redeem(&app, "alice", &code).await;
    assert_error(&reply, 429, "RATE_LIMITED");
    let retry: i64 = reply.2["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(retry, 1);
    // Once Retry-After has passed the valid code redeems.
    app.clock.advance(Duration::seconds(retry));
    let (status, body, _) = redeem(&app, "alice", &code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["balance"], json!(10));

    // Nine guesses still count within the window: one more wrong guess is the tenth.
    let reply = redeem(&app, "alice", &wrong(12)).await;
    assert_error(&reply, 404, "CODE_NOT_FOUND");
    let reply = redeem(&app, "alice", &wrong(13)).await;
    assert_error(&reply, 429, "RATE_LIMITED");
    let retry: i64 = reply.2["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0, "{retry}");
    // Past the whole window every guess has left it.
    app.clock.advance(Duration::minutes(15));
    assert_error(
        &redeem(&app, "alice", &wrong(14)).await,
        404,
        "CODE_NOT_FOUND",
    );
    assert_error(
        &redeem(&app, "alice", &code).await,
        409,
        "CODE_ALREADY_REDEEMED",
    );
    app.finish().await;
}

async fn concurrent_redemptions_have_one_winner(db: Db) {
    let app = TestApp::spawn(db).await;

    // Twenty users, one single-use code, all at once.
    let single = one_code(&app, 50, 1).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (client, base, code) = (app.client.clone(), app.address.clone(), single.clone());
            tokio::spawn(async move {
                send(
                    &client,
                    &base,
                    Method::POST,
                    REDEEM,
                    Some(&user_token(&format!("user-{i}"))),
                    &[],
                    Body::Json(json!({ "code": code })),
                )
                .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, task) in futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .enumerate()
    {
        let reply = task.expect("task");
        if reply.0 == 200 {
            winners.push(format!("user-{i}"));
        } else {
            assert_error(&reply, 422, "CODE_EXHAUSTED");
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(listed(&app, &single).await["uses"], json!(1));
    let rows = app.rows_of_type("redemption").await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["user_id"], json!(winners[0]));
    for i in 0..20 {
        let user = format!("user-{i}");
        let expected = if winners.contains(&user) { 50 } else { 0 };
        assert_eq!(app.balance(&user).await, expected, "{user}");
    }

    // One user, one code with many uses, ten times at once.
    let multi = one_code(&app, 30, 100).await;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (client, base, code) = (app.client.clone(), app.address.clone(), multi.clone());
            tokio::spawn(async move {
                send(
                    &client,
                    &base,
                    Method::POST,
                    REDEEM,
                    Some(&user_token("alice")),
                    &[],
                    Body::Json(json!({ "code": code })),
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    for task in futures_util::future::join_all(tasks).await {
        let reply = task.expect("task");
        if reply.0 == 200 {
            ok += 1;
        } else {
            assert_error(&reply, 409, "CODE_ALREADY_REDEEMED");
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(app.balance("alice").await, 30);
    assert_eq!(listed(&app, &multi).await["uses"], json!(1));
    assert_eq!(app.rows_of_type("redemption").await.len(), 2);
    app.finish().await;
}

async fn bad_code_input_changes_nothing(db: Db) {
    const JSON: Option<&str> = Some("application/json");
    let app = TestApp::spawn(db).await;
    let admin = admin_token("root");
    let alice = user_token("alice");
    let code = one_code(&app, 10, 5).await;
    let (status, body, _) = redeem(&app, "bob", &code).await;
    assert_eq!(status, 200, "{body}");
    let before = snapshot(&app).await;

    let raw = |s: &str| Body::Raw(JSON, s.as_bytes().to_vec());
    let valid = json!({
        "count": 2, "credits": 10, "max_uses": 1, "expires_at": at(Duration::days(1)),
        "credits_expire_days": 30, "description": "x",
    });
    let with = |field: &str, value: Value| {
        let mut b = valid.clone();
        b[field] = value;
        Body::Json(b)
    };
    let without = |field: &str| {
        let mut b = valid.clone();
        b.as_object_mut().unwrap().remove(field);
        Body::Json(b)
    };

    let mut cases: Vec<Case> = Vec::new();
    let mut batch = |name: &str, body: Body, status: u16, err: &'static str| {
        cases.push((
            format!("batch: {name}"),
            Method::POST,
            CODES.to_owned(),
            Some(admin.clone()),
            body,
            status,
            err,
        ));
    };
    for (name, value) in [
        ("count 0", json!(0)),
        ("count 1001", json!(1001)),
        ("count -1", json!(-1)),
        ("count 1.5", json!(1.5)),
        ("count a string", json!("2")),
        ("count null", Value::Null),
    ] {
        batch(name, with("count", value), 400, "VALIDATION_ERROR");
    }
    for (name, value) in [
        ("credits 0", json!(0)),
        ("credits -5", json!(-5)),
        ("credits 10^12 + 1", json!(1_000_000_000_001_i64)),
        ("credits 1e30", json!(1e30)),
        ("credits a string", json!("10")),
    ] {
        batch(name, with("credits", value), 400, "VALIDATION_ERROR");
    }
    for (name, value) in [
        ("max_uses 0", json!(0)),
        ("max_uses -1", json!(-1)),
        ("max_uses a string", json!("1")),
    ] {
        batch(name, with("max_uses", value), 400, "VALIDATION_ERROR");
    }
    for (name, value) in [
        ("expires_at in the past", json!(at(-Duration::days(1)))),
        ("expires_at now", json!(at(Duration::ZERO))),
        ("expires_at not a date", json!("tomorrow")),
        ("expires_at without zone", json!("2026-04-01T00:00:00")),
        ("expires_at a number", json!(1_800_000_000)),
    ] {
        batch(name, with("expires_at", value), 400, "VALIDATION_ERROR");
    }
    for (name, value) in [
        ("credits_expire_days 0", json!(0)),
        ("credits_expire_days 3651", json!(3651)),
        ("credits_expire_days -1", json!(-1)),
    ] {
        batch(
            name,
            with("credits_expire_days", value),
            400,
            "VALIDATION_ERROR",
        );
    }
    batch(
        "description too long",
        with("description", json!("d".repeat(501))),
        400,
        "VALIDATION_ERROR",
    );
    batch("missing count", without("count"), 400, "VALIDATION_ERROR");
    batch(
        "missing credits",
        without("credits"),
        400,
        "VALIDATION_ERROR",
    );
    batch(
        "unknown field",
        with("surprise", json!(1)),
        400,
        "VALIDATION_ERROR",
    );
    batch(
        "malformed JSON",
        raw("{\"count\": 2, "),
        400,
        "VALIDATION_ERROR",
    );
    batch("empty body", raw(""), 400, "VALIDATION_ERROR");
    batch(
        "array",
        Body::Json(json!([valid.clone()])),
        400,
        "VALIDATION_ERROR",
    );
    batch(
        "text/plain",
        Body::Raw(Some("text/plain"), valid.to_string().into_bytes()),
        400,
        "VALIDATION_ERROR",
    );
    batch(
        "70 KiB body",
        with("description", json!("x".repeat(70 * 1024))),
        413,
        "PAYLOAD_TOO_LARGE",
    );

    // Who may call what.
    let batch_body = || Body::Json(valid.clone());
    let other_app_user = app_token("alice", "other", None);
    for (name, token, status, err) in [
        ("user token", Some(alice.clone()), 403, "FORBIDDEN"),
        (
            "other app's user token",
            Some(other_app_user.clone()),
            403,
            "FORBIDDEN",
        ),
        ("no token", None, 401, "UNAUTHORIZED"),
        (
            "service key",
            Some(SERVICE_KEY.to_owned()),
            401,
            "UNAUTHORIZED",
        ),
        (
            "garbage token",
            Some("not-a-jwt".to_owned()),
            401,
            "UNAUTHORIZED",
        ),
    ] {
        cases.push((
            format!("POST codes: {name}"),
            Method::POST,
            CODES.into(),
            token.clone(),
            batch_body(),
            status,
            err,
        ));
        cases.push((
            format!("GET codes: {name}"),
            Method::GET,
            CODES.into(),
            token,
            Body::Empty,
            status,
            err,
        ));
    }
    for (name, token) in [
        ("no token", None),
        ("service key", Some(SERVICE_KEY.to_owned())),
        ("garbage token", Some("not-a-jwt".to_owned())),
    ] {
        cases.push((
            format!("redeem: {name}"),
            Method::POST,
            REDEEM.into(),
            token,
            Body::Json(json!({ "code": code })),
            401,
            "UNAUTHORIZED",
        ));
    }
    for q in ["limit=0", "limit=101", "limit=x", "offset=-1"] {
        cases.push((
            format!("GET codes?{q}"),
            Method::GET,
            format!("{CODES}?{q}"),
            Some(admin.clone()),
            Body::Empty,
            400,
            "VALIDATION_ERROR",
        ));
    }

    // Redemption bodies. The over-long code is the real one padded with spaces: only the length
    // refuses it.
    let long_code = format!("{code:<65}");
    assert_eq!(long_code.len(), 65);
    for (name, body, status, err) in [
        (
            "code of 65 characters",
            Body::Json(json!({ "code": long_code })),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "code of 1000 characters",
            Body::Json(json!({ "code": "A".repeat(1000) })),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "code a number",
            Body::Json(json!({ "code": 123_456_789_012_i64 })),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "code null",
            Body::Json(json!({ "code": null })),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "missing code",
            Body::Json(json!({})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "unknown field",
            Body::Json(json!({ "code": code, "user_id": "bob" })),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "malformed JSON",
            raw("{\"code\": "),
            400,
            "VALIDATION_ERROR",
        ),
        ("empty body", raw(""), 400, "VALIDATION_ERROR"),
        ("no body", Body::Empty, 400, "VALIDATION_ERROR"),
        (
            "form",
            Body::Raw(
                Some("application/x-www-form-urlencoded"),
                format!("code={code}").into_bytes(),
            ),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "70 KiB body",
            Body::Json(json!({ "code": "x".repeat(70 * 1024) })),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
    ] {
        cases.push((
            format!("redeem: {name}"),
            Method::POST,
            REDEEM.into(),
            Some(alice.clone()),
            body,
            status,
            err,
        ));
    }

    let total = cases.len();
    let mut failures = Vec::new();
    for (name, method, path, token, body, status, err) in cases {
        let reply = app
            .request(method, &path, token.as_deref(), &[], body)
            .await;
        let got = (
            reply.0.as_u16(),
            reply.1["error"]["code"].as_str().unwrap_or("-"),
        );
        if got != (status, err) {
            failures.push(format!(
                "{name}: expected {status} {err}, got {} {}: {}",
                got.0, got.1, reply.1
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
    assert_eq!(
        snapshot(&app).await,
        before,
        "a refused request changed the database"
    );

    // None of the refused redemptions counted as a wrong guess: nine more leave alice one short
    // of the limit, so the real code still redeems, padded to exactly 64 characters.
    for i in 0..9 {
        let reply = redeem(&app, "alice", &format!("nope-{i}")).await;
        assert_error(&reply, 404, "CODE_NOT_FOUND");
    }
    let padded = format!("{code:<64}");
    let (status, body, _) = redeem(&app, "alice", &padded).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["balance"], json!(10));
    app.finish().await;
}
