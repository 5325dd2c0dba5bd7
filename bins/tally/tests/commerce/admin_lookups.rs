//! The operators' lookups: `GET /admin/orders`, `/admin/orders/{id}`, `/admin/subscriptions`
//! and `/admin/subscriptions/{id}` — filters, cursor pages, the events behind an order, app
//! isolation, and refused requests.

use serde_json::{Value, json};

use crate::common::{Db, TestApp, admin_token, app_token, assert_error, user_token};
use crate::{create_session, seed_plans, spawn};

backend_tests!(
    admin_finds_orders_and_subscriptions,
    admin_lookups_refuse_bad_input
);

/// Opens a sandbox checkout for `user` and presses Pay or Cancel; answers the order id.
async fn sandbox_order(app: &TestApp, user: &str, kind: &str, plan: &str, action: &str) -> String {
    let (status, body) = create_session(
        app,
        user,
        json!({"channel": "sandbox", "type": kind, "plan_id": plan,
            "success_url": "https://app.example/ok"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let url = body["data"]["url"].as_str().unwrap();
    let reply = app
        .client
        .post(format!("{url}/{action}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    body["data"]["order_id"].as_str().unwrap().to_owned()
}

/// `GET path` as the default app's admin; asserts 200 and answers the body.
async fn admin_get(app: &TestApp, path: &str) -> Value {
    let (status, body, _) = app.get(path, &admin_token("root")).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn admin_finds_orders_and_subscriptions(db: Db) {
    let app = spawn(db, None, None).await;
    let (pro, pack) = seed_plans(&app).await;
    let alice_sub = sandbox_order(&app, "alice", "subscription", &pro, "pay").await;
    app.clock.advance(time::Duration::seconds(10));
    let bob_pack = sandbox_order(&app, "bob", "credits", &pack, "pay").await;
    app.clock.advance(time::Duration::seconds(10));
    let carol_gone = sandbox_order(&app, "carol", "credits", &pack, "cancel").await;
    // Another app's order, by the same user name: never in this app's answers.
    let other_admin = app_token("root", "other", Some("admin"));
    let (status, other_pack, _) = app
        .post(
            "/admin/billing/plans",
            &other_admin,
            json!({"name": "Other pack", "kind": "credit_pack", "currency": "usd", "price": 100,
                "credits_included": 10}),
        )
        .await;
    assert_eq!(status, 200, "{other_pack}");
    let (status, other_order, _) = app
        .post(
            "/payment/create-session",
            &app_token("alice", "other", None),
            json!({"channel": "sandbox", "type": "credits",
                "plan_id": other_pack["data"]["id"], "success_url": "https://app.example/ok"}),
        )
        .await;
    assert_eq!(status, 200, "{other_order}");
    let other_order = other_order["data"]["order_id"].as_str().unwrap().to_owned();

    // Newest first, with the buyer and the provider's ids.
    let all = admin_get(&app, "/admin/orders").await;
    assert_eq!(
        ids(&all),
        [&carol_gone, &bob_pack, &alice_sub].map(String::clone),
        "{all}"
    );
    let first = &all["data"][2];
    assert_eq!(first["user_id"], "alice");
    assert_eq!(first["type"], "subscription");
    assert_eq!(first["status"], "completed");
    assert!(first["provider_subscription_id"].is_string(), "{first}");
    assert_eq!(all["meta"]["has_more"], false);

    // Each filter alone, and together.
    for (query, expected) in [
        ("status=completed", vec![&bob_pack, &alice_sub]),
        ("status=expired", vec![&carol_gone]),
        ("status=refunded", vec![]),
        ("type=subscription", vec![&alice_sub]),
        ("type=credits", vec![&carol_gone, &bob_pack]),
        ("channel=sandbox", vec![&carol_gone, &bob_pack, &alice_sub]),
        ("channel=stripe", vec![]),
        ("user_id=bob", vec![&bob_pack]),
        ("user_id=bo", vec![]),
        ("type=credits&status=completed", vec![&bob_pack]),
    ] {
        let body = admin_get(&app, &format!("/admin/orders?{query}")).await;
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(ids(&body), expected, "{query}: {body}");
    }
    // A time range: created at or after `from`, before `to`.
    let created = |i: usize| all["data"][i]["created_at"].as_str().unwrap().to_owned();
    let body = admin_get(
        &app,
        &format!(
            "/admin/orders?from={}&to={}",
            urlencode(&created(1)),
            urlencode(&created(0))
        ),
    )
    .await;
    assert_eq!(ids(&body), std::slice::from_ref(&bob_pack), "{body}");

    // Cursor pages: every order once, in order, and the last page says so.
    let mut seen = Vec::new();
    let mut path = "/admin/orders?limit=1".to_owned();
    loop {
        let body = admin_get(&app, &path).await;
        seen.extend(ids(&body));
        match body["meta"]["next_before"].as_str() {
            Some(cursor) => {
                assert_eq!(body["meta"]["has_more"], true);
                path = format!("/admin/orders?limit=1&before={cursor}");
            }
            None => {
                assert_eq!(body["meta"]["has_more"], false);
                break;
            }
        }
    }
    assert_eq!(seen, ids(&all));

    // One order with the provider events that touched it, oldest first.
    let detail = admin_get(&app, &format!("/admin/orders/{alice_sub}")).await;
    assert_eq!(detail["data"]["id"], alice_sub.as_str());
    assert_eq!(detail["data"]["user_id"], "alice");
    let events = detail["data"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{detail}");
    assert!(events.iter().all(|e| e["order_id"] == alice_sub.as_str()));
    assert!(
        events[0]["id"].as_str().unwrap().parse::<i64>().unwrap()
            < events[1]["id"].as_str().unwrap().parse::<i64>().unwrap()
    );
    let expired = admin_get(&app, &format!("/admin/orders/{carol_gone}")).await;
    assert_eq!(expired["data"]["status"], "expired");
    assert_eq!(expired["data"]["events"].as_array().unwrap().len(), 1);
    // The other app's order is not found here, and is there.
    assert_error(
        &app.get(
            &format!("/admin/orders/{other_order}"),
            &admin_token("root"),
        )
        .await,
        404,
        "NOT_FOUND",
    );
    let (status, body, _) = app
        .get(&format!("/admin/orders/{other_order}"), &other_admin)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["events"], json!([]));

    // Subscriptions: alice's one, by each filter, and by id.
    let subs = admin_get(&app, "/admin/subscriptions").await;
    assert_eq!(subs["data"].as_array().unwrap().len(), 1, "{subs}");
    let sub = &subs["data"][0];
    assert_eq!(sub["user_id"], "alice");
    assert_eq!(sub["plan_id"], pro.as_str());
    assert_eq!(sub["order_id"], alice_sub.as_str());
    assert_eq!(sub["status"], "active");
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    for (query, n) in [
        ("status=active", 1),
        ("status=canceled", 0),
        (&format!("plan={pro}") as &str, 1),
        (&format!("plan={pack}"), 0),
        ("user_id=alice", 1),
        ("user_id=bob", 0),
        (&format!("before={sub_id}"), 0),
    ] {
        let body = admin_get(&app, &format!("/admin/subscriptions?{query}")).await;
        assert_eq!(body["data"].as_array().unwrap().len(), n, "{query}: {body}");
    }
    let one = admin_get(&app, &format!("/admin/subscriptions/{sub_id}")).await;
    assert_eq!(one["data"], *sub);
    let (status, body, _) = app.get("/admin/subscriptions", &other_admin).await;
    assert_eq!((status.as_u16(), body["data"].clone()), (200, json!([])));
    assert_error(
        &app.get(&format!("/admin/subscriptions/{sub_id}"), &other_admin)
            .await,
        404,
        "NOT_FOUND",
    );
    app.finish().await;
}

async fn admin_lookups_refuse_bad_input(db: Db) {
    let app = spawn(db, None, None).await;
    let (pro, _) = seed_plans(&app).await;
    let order = sandbox_order(&app, "alice", "subscription", &pro, "pay").await;
    let orders_before = admin_get(&app, "/admin/orders").await;
    let subs_before = admin_get(&app, "/admin/subscriptions").await;
    let sub_id = subs_before["data"][0]["id"].as_str().unwrap().to_owned();

    // Who may ask.
    for path in [
        "/admin/orders".to_owned(),
        format!("/admin/orders/{order}"),
        "/admin/subscriptions".to_owned(),
        format!("/admin/subscriptions/{sub_id}"),
    ] {
        let reply = app.get(&path, &user_token("alice")).await;
        assert_error(&reply, 403, "FORBIDDEN");
        let reply = app.get(&path, "not-a-token").await;
        assert_error(&reply, 401, "UNAUTHORIZED");
    }

    // Malformed and out-of-range queries: 400 naming the field.
    for (path, field) in [
        ("/admin/orders?status=bogus", "status"),
        ("/admin/orders?type=gift", "type"),
        ("/admin/orders?channel=paypal", "channel"),
        ("/admin/orders?limit=0", "limit"),
        ("/admin/orders?limit=101", "limit"),
        ("/admin/orders?limit=abc", "limit"),
        (
            "/admin/orders?before=ord_000000000000000000000000",
            "before",
        ),
        ("/admin/orders?before=", "before"),
        ("/admin/orders?user_id=", "user_id"),
        ("/admin/orders?from=yesterday", "from"),
        (
            "/admin/orders?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z",
            "to",
        ),
        ("/admin/subscriptions?status=paused", "status"),
        ("/admin/subscriptions?before=abc", "before"),
        ("/admin/subscriptions?before=-1", "before"),
        ("/admin/subscriptions?limit=1000", "limit"),
        ("/admin/subscriptions?plan=", "plan"),
    ] {
        let reply = app.get(path, &admin_token("root")).await;
        assert_error(&reply, 400, "VALIDATION_ERROR");
        if field != "limit" || !path.ends_with("abc") {
            assert_eq!(
                reply.1["error"]["details"]["fields"][0]["field"], field,
                "{path}: {}",
                reply.1
            );
        }
    }
    // Unknown and malformed ids are simply not found.
    for path in [
        "/admin/orders/ord_000000000000000000000000",
        "/admin/orders/%3Cscript%3E",
        "/admin/subscriptions/999999",
        "/admin/subscriptions/abc",
        "/admin/subscriptions/0",
    ] {
        assert_error(&app.get(path, &admin_token("root")).await, 404, "NOT_FOUND");
    }

    // Nothing changed.
    assert_eq!(admin_get(&app, "/admin/orders").await, orders_before);
    assert_eq!(admin_get(&app, "/admin/subscriptions").await, subs_before);
    app.finish().await;
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
