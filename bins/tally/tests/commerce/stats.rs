//! `GET /admin/stats`: credits by type, revenue, new accounts, check-ins and subscriptions per
//! day, week and month, counted by the database; and refused requests.

use serde_json::{Value, json};

use crate::common::{Db, SERVICE_KEY, TestApp, admin_token, app_token, assert_error, user_token};
use crate::{create_session, seed_plans, spawn};

backend_tests!(stats_count_what_happened, stats_refuse_bad_input);

async fn stats(app: &TestApp, query: &str) -> Value {
    let (status, body, _) = app
        .get(&format!("/admin/stats?{query}"), &admin_token("root"))
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    body["data"].clone()
}

async fn sandbox_paid(app: &TestApp, user: &str, kind: &str, plan: &str) {
    let (status, body) = create_session(
        app,
        user,
        json!({"channel": "sandbox", "type": kind, "plan_id": plan,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let url = body["data"]["url"].as_str().unwrap();
    let paid = app.client.post(format!("{url}/pay")).send().await.unwrap();
    assert_eq!(paid.status(), 200);
}

async fn stats_count_what_happened(db: Db) {
    let app = spawn(db, None, None).await;
    let day0 = tally_ledger::Clock::now(&*app.clock).date();
    let (pro, pack) = seed_plans(&app).await;
    sandbox_paid(&app, "alice", "subscription", &pro).await;
    sandbox_paid(&app, "bob", "credits", &pack).await;
    let (status, checkin, _) = app.checkin(&user_token("alice")).await;
    assert_eq!(status, 200, "{checkin}");
    let reward = checkin["data"]["awarded"].as_i64().unwrap();
    let (status, body, _) = app
        .post(
            "/internal/credits/consume",
            SERVICE_KEY,
            json!({"user_id": "bob", "amount": 120, "description": "AI call",
                "idempotency_key": "c-1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Another app's movements never count here.
    let (status, body, _) = app
        .post(
            "/admin/credits/manual",
            &app_token("root", "other", Some("admin")),
            json!({"user_id": "zed", "amount": 7777, "description": "other app"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The next day: a new customer, and a goodwill grant taken back in part.
    app.clock.advance(time::Duration::days(1));
    app.admin_grant("carol", 40).await;
    let (status, body, _) = app
        .post(
            "/admin/credits/manual",
            &admin_token("root"),
            json!({"user_id": "carol", "amount": -15, "description": "correction"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let day1 = day0.next_day().unwrap();
    let s = stats(&app, &format!("from={day0}&to={day1}&bucket=day")).await;
    assert_eq!(
        (s["from"].clone(), s["to"].clone(), s["bucket"].clone()),
        (
            json!(day0.to_string()),
            json!(day1.to_string()),
            json!("day")
        )
    );
    let buckets = s["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 2, "{s}");
    let first = &buckets[0];
    assert_eq!(first["start"], day0.to_string());
    assert_eq!(first["credits"]["granted"], 1000 + 500 + reward, "{first}");
    assert_eq!(first["credits"]["spent"], 120);
    assert_eq!(first["credits"]["expired"], 0);
    assert_eq!(first["credits"]["by_type"]["subscription"], 1000);
    assert_eq!(first["credits"]["by_type"]["purchase"], 500);
    assert_eq!(first["credits"]["by_type"]["ai_usage"], -120);
    assert_eq!(first["credits"]["by_type"]["checkin"], reward);
    assert_eq!(first["revenue"], json!({"usd": 999 + 499}));
    assert_eq!(first["new_accounts"], 2);
    assert_eq!(first["checkins"], 1);
    assert_eq!(first["subscriptions_started"], 1);
    let second = &buckets[1];
    assert_eq!(second["credits"]["granted"], 40);
    assert_eq!(second["credits"]["spent"], 15);
    assert_eq!(
        second["credits"]["by_type"],
        json!({"admin_adjustment": 25})
    );
    assert_eq!(second["revenue"], json!({}));
    assert_eq!(
        (second["new_accounts"].clone(), second["checkins"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(s["active_subscriptions"], 1);

    // The same two days as one month (or the weeks they fall in), and the default range.
    let month = stats(&app, &format!("from={day0}&to={day1}&bucket=month")).await;
    let month = &month["buckets"];
    assert_eq!(month.as_array().unwrap().len(), 1, "{month}");
    assert_eq!(month[0]["credits"]["granted"], 1000 + 500 + reward + 40);
    assert_eq!(month[0]["new_accounts"], 3);
    let weeks = stats(&app, &format!("from={day0}&to={day1}&bucket=week")).await;
    let total: i64 = weeks["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["credits"]["granted"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 1000 + 500 + reward + 40);
    let default = stats(&app, "").await;
    assert_eq!(default["to"], day1.to_string());
    assert_eq!(default["buckets"].as_array().unwrap().len(), 30);
    // A range before anything happened: every bucket there, all zero.
    let empty = stats(&app, "from=2020-01-01&to=2020-01-03").await;
    assert_eq!(empty["buckets"].as_array().unwrap().len(), 3);
    assert!(
        empty["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["new_accounts"] == 0
                && b["credits"]["granted"] == 0
                && b["revenue"] == json!({}))
    );

    // Finished days are counted once and kept. A row written into day 0 behind Tally's back
    // (which Tally itself never does) is not seen until the rollup is cleared.
    app.execute_sql(&format!(
        "INSERT INTO accounts (app_key, user_id, balance, held, created_at, updated_at) \
         VALUES ('default', 'backdated', 0, 0, '{day0} 13:00:00', '{day0} 13:00:00')"
    ))
    .await;
    let again = stats(&app, &format!("from={day0}&to={day1}&bucket=day")).await;
    assert_eq!(
        again, s,
        "day 0 read back from the rollup, day 1 counted again"
    );
    app.execute_sql("DELETE FROM stats_days").await;
    let recounted = stats(&app, &format!("from={day0}&to={day0}&bucket=day")).await;
    assert_eq!(recounted["buckets"][0]["new_accounts"], 3, "{recounted}");
    app.execute_sql("DELETE FROM accounts WHERE user_id = 'backdated'")
        .await;
    app.execute_sql("DELETE FROM stats_days").await;

    // A day later, day 1 is finished too; its figures are the ones counted live before, and
    // what happens on day 2 shows at once.
    app.clock.advance(time::Duration::days(1));
    app.admin_grant("dave", 9).await;
    let day2 = day1.next_day().unwrap();
    let later = stats(&app, &format!("from={day0}&to={day2}&bucket=day")).await;
    assert_eq!(later["buckets"][0], s["buckets"][0]);
    assert_eq!(later["buckets"][1], s["buckets"][1]);
    assert_eq!(later["buckets"][2]["credits"]["granted"], 9, "{later}");
    assert_eq!(later["buckets"][2]["new_accounts"], 1);

    // Many first callers at once over days nobody has rolled up: every answer is the same, and
    // each day is kept once.
    let other = app_token("root", "other", Some("admin"));
    let path = format!("/admin/stats?from={day0}&to={day2}&bucket=day");
    let calls = (0..8).map(|_| app.get(&path, &other));
    let answers = futures_util::future::join_all(calls).await;
    for (status, body, _) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["data"], answers[0].1["data"]);
    }
    assert_eq!(
        answers[0].1["data"]["buckets"][0]["credits"]["granted"],
        7777
    );
    let reread = app.get(&path, &other).await;
    assert_eq!(reread.1["data"], answers[0].1["data"]);
    app.finish().await;
}

async fn stats_refuse_bad_input(db: Db) {
    let app = spawn(db, None, None).await;
    app.admin_grant("alice", 10).await;
    assert_error(
        &app.get("/admin/stats", &user_token("alice")).await,
        403,
        "FORBIDDEN",
    );
    assert_error(
        &app.get("/admin/stats", "not-a-token").await,
        401,
        "UNAUTHORIZED",
    );
    for (query, field) in [
        ("bucket=hour", "bucket"),
        ("bucket=", "bucket"),
        ("from=2026-13-01", "from"),
        ("from=yesterday", "from"),
        ("to=2026-03-01T00:00:00Z", "to"),
        ("from=2026-03-02&to=2026-03-01", "to"),
        ("from=2020-01-01&to=2026-03-01", "from"),
        ("from=1900-01-01&to=2026-03-01&bucket=week", "from"),
    ] {
        let reply = app
            .get(&format!("/admin/stats?{query}"), &admin_token("root"))
            .await;
        assert_error(&reply, 400, "VALIDATION_ERROR");
        assert_eq!(
            reply.1["error"]["details"]["fields"][0]["field"], field,
            "{query}: {}",
            reply.1
        );
    }
    assert_eq!(app.balance("alice").await, 10);
    app.finish().await;
}
