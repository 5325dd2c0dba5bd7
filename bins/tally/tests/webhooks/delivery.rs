//! Deliveries: signatures a receiver verifies, exactly the committed changes reported, retries
//! on the injected clock, the attempt bound and endpoint disabling, checkout events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::{Body, Db, SERVICE_KEY, admin_token, user_token};
use crate::receiver::Receiver;
use crate::{
    create_endpoint, delivery, parse_time, spawn, verify, verify_with_python, wait_deliveries,
};

backend_tests!(
    deliveries_verify_and_report_only_committed_changes,
    retries_back_off_then_succeed,
    failing_receiver_is_bounded_then_disabled,
    checkout_reports_orders_and_subscriptions,
    expiry_and_holds_report_when_swept,
);

fn count_types(received: &[crate::receiver::Received]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in received {
        *counts.entry(r.event_type()).or_default() += 1;
    }
    counts
}

async fn deliveries_verify_and_report_only_committed_changes(db: Db) {
    let app = spawn(db).await;
    let receiver = Receiver::ok().await;
    let all: Vec<&str> = tally_webhooks::EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    let (endpoint, secret) = create_endpoint(&app, &receiver.url, Some(&all)).await;
    let (status, body, _) = app
        .put(
            "/admin/webhooks/settings",
            &admin_token("root"),
            json!({ "low_balance_threshold": 50 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Committed: a grant, a spend crossing the threshold, a check-in (reward and streak).
    app.admin_grant("alice", 100).await;
    let (status, body, _) = app.consume("alice", 60, "call-1").await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = app.checkin(&user_token("alice")).await;
    assert_eq!(status, 200, "{body}");

    // Not committed, or nothing new: a second check-in the same day (its reward was planned,
    // then the day's unique key rolled the transaction back), a replay, an overdraw, a refused
    // provider webhook, a refused admin request.
    let reply = app.checkin(&user_token("alice")).await;
    crate::common::assert_error(&reply, 409, "ALREADY_CHECKED_IN");
    let (status, _, _) = app.consume("alice", 60, "call-1").await;
    assert_eq!(status, 200);
    let (status, body, _) = app.consume("alice", 10_000, "call-2").await;
    assert_eq!(status, 402, "{body}");
    let (status, _, _) = app
        .request(
            Method::POST,
            "/payment/webhook/sandbox",
            None,
            &[("tally-sandbox-signature", "t=1,v1=00")],
            Body::Raw(Some("application/json"), b"{\"id\":\"evt_x\"}".to_vec()),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _, _) = app
        .post(
            "/admin/credits/manual",
            &admin_token("root"),
            json!({ "user_id": "alice", "amount": "lots" }),
        )
        .await;
    assert_eq!(status, 400);

    let received = receiver.wait_for(5, 20).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let received_now = receiver.received();
    assert_eq!(received_now.len(), 5, "{:#?}", count_types(&received_now));
    assert_eq!(
        count_types(&received),
        BTreeMap::from([
            ("checkin.completed".to_owned(), 1),
            ("credits.granted".to_owned(), 2),
            ("credits.low".to_owned(), 1),
            ("credits.spent".to_owned(), 1),
        ])
    );
    let mut python_cases = Vec::new();
    for r in &received {
        verify(r, &secret).unwrap_or_else(|e| panic!("{e}: {r:?}"));
        let body = r.json();
        assert_eq!(body["id"], r.id());
        assert!(r.id().starts_with("evt_"));
        assert_eq!(body["app"], "default");
        assert_eq!(body["user_id"], "alice");
        assert_eq!(r.header("content-type"), "application/json");
        // A tampered body or another secret fails the check.
        let mut tampered = r.clone();
        tampered.body = tampered.body.replacen("alice", "mallory", 1);
        assert!(verify(&tampered, &secret).is_err());
        let other = WebhookSecretExt::random();
        assert!(verify(r, &other).is_err());
        python_cases.push((r.clone(), secret.clone(), true));
        python_cases.push((tampered, secret.clone(), false));
        python_cases.push((r.clone(), other, false));
    }
    verify_with_python(&python_cases);

    let by_type = |t: &str| {
        received
            .iter()
            .find(|r| r.event_type() == t)
            .unwrap()
            .json()["data"]
            .clone()
    };
    let spent = by_type("credits.spent");
    assert_eq!(
        (spent["credits"].as_i64(), spent["balance_after"].as_i64()),
        (Some(60), Some(40))
    );
    let low = by_type("credits.low");
    assert_eq!(
        (
            low["threshold"].as_i64(),
            low["available_before"].as_i64(),
            low["available_after"].as_i64()
        ),
        (Some(50), Some(100), Some(40))
    );
    let checkin = by_type("checkin.completed");
    assert_eq!(checkin["streak"], 1);

    // Every delivery is recorded as succeeded at its first attempt, with the attempt's record.
    let rows = wait_deliveries(&app, "5 succeeded deliveries", |d| {
        d.len() == 5 && d.iter().all(|x| x["status"] == "succeeded")
    })
    .await;
    for row in &rows {
        assert_eq!(row["endpoint_id"], endpoint.as_str());
        assert_eq!(row["attempts"], 1);
        let one = delivery(&app, row["id"].as_str().unwrap()).await;
        let log = one["attempts_log"].as_array().unwrap();
        assert_eq!(log.len(), 1, "{one}");
        assert_eq!(log[0]["status_code"], 200);
        assert_eq!(log[0]["succeeded"], true);
        assert!(log[0]["latency_ms"].as_i64().unwrap() >= 0);
        assert!(
            log[0]["response_excerpt"]
                .as_str()
                .unwrap()
                .starts_with("receiver answer")
        );
    }

    // Rising back to the threshold (the check-in reward) arms it again; spending below it then
    // is a new crossing, and spending further below is not.
    let balance = app.balance("alice").await;
    assert_eq!(balance, checkin["balance_after"].as_i64().unwrap());
    let (status, _, _) = app.consume("alice", balance - 45, "call-3").await;
    assert_eq!(status, 200);
    let (status, _, _) = app.consume("alice", 1, "call-4").await;
    assert_eq!(status, 200);
    let crossed = usize::from(balance >= 50);
    receiver.wait_for(7 + crossed, 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = receiver.received()[5..].to_vec();
    assert_eq!(
        count_types(&later),
        BTreeMap::from_iter(
            [
                ("credits.spent".to_owned(), 2),
                ("credits.low".to_owned(), 1)
            ]
            .into_iter()
            .filter(|(t, _)| crossed == 1 || t != "credits.low")
        )
    );
    app.finish().await;
}

/// A random, valid secret that signed nothing.
struct WebhookSecretExt;
impl WebhookSecretExt {
    fn random() -> String {
        tally_webhooks::WebhookSecret::generate().expose()
    }
}

async fn retries_back_off_then_succeed(db: Db) {
    let app = spawn(db).await;
    // Down for three attempts, then up.
    let receiver = Receiver::start(Arc::new(|n| {
        (if n < 3 { 503 } else { 204 }, Duration::ZERO)
    }))
    .await;
    let (_, secret) = create_endpoint(&app, &receiver.url, Some(&["credits.granted"])).await;
    app.admin_grant("bob", 10).await;

    let bases = [30.0, 120.0, 600.0];
    for (i, base) in bases.iter().enumerate() {
        receiver.wait_for(i + 1, 20).await;
        let rows = wait_deliveries(&app, "the failed attempt recorded", |d| {
            d.len() == 1 && d[0]["attempts"] == i as i64 + 1
        })
        .await;
        let one = delivery(&app, rows[0]["id"].as_str().unwrap()).await;
        assert_eq!(one["status"], "pending");
        assert_eq!(one["last_status"], 503);
        let attempted = parse_time(&one["attempts_log"][i]["attempted_at"]);
        let next = parse_time(&one["next_attempt_at"]);
        let wait = (next - attempted).as_seconds_f64();
        assert!(
            wait >= base * 0.8 - 0.001 && wait <= base * 1.2 + 0.001,
            "attempt {}: waits {wait} s, expected {base} s ± 20 %",
            i + 1
        );
        // Nothing happens before the delay has passed...
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(receiver.received().len(), i + 1);
        // ...and the next attempt comes once the clock reaches it.
        app.clock.set(next);
    }
    let received = receiver.wait_for(4, 20).await;
    let rows = wait_deliveries(&app, "the delivery succeeded", |d| {
        d[0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(rows[0]["attempts"], 4);
    // Every attempt carries the same webhook-id, each signed afresh.
    assert!(received.iter().all(|r| r.id() == received[0].id()));
    for r in &received {
        verify(r, &secret).unwrap();
    }
    let one = delivery(&app, rows[0]["id"].as_str().unwrap()).await;
    let codes: Vec<_> = one["attempts_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [503, 503, 503, 204]);
    assert!(one["next_attempt_at"].is_null());
    app.finish().await;
}

async fn failing_receiver_is_bounded_then_disabled(db: Db) {
    let app = spawn(db).await;
    let failing = Receiver::start(Arc::new(|_| (500, Duration::ZERO))).await;
    let watcher = Receiver::ok().await;
    let (bad, _) = create_endpoint(&app, &failing.url, Some(&["credits.granted"])).await;
    let (_, watcher_secret) =
        create_endpoint(&app, &watcher.url, Some(&["endpoint.disabled"])).await;
    app.admin_grant("carol", 10).await;

    let max = tally_webhooks::MAX_ATTEMPTS as usize;
    for attempt in 1..=max {
        failing.wait_for(attempt, 20).await;
        let rows = wait_deliveries(&app, "the attempt recorded", |d| {
            d.iter()
                .any(|x| x["endpoint_id"] == bad.as_str() && x["attempts"] == attempt as i64)
        })
        .await;
        let row = rows
            .iter()
            .find(|x| x["endpoint_id"] == bad.as_str())
            .unwrap();
        if attempt < max {
            assert_eq!(row["status"], "pending", "{row}");
            app.clock.set(parse_time(&row["next_attempt_at"]));
        } else {
            assert_eq!(row["status"], "failed", "{row}");
            assert!(row["next_attempt_at"].is_null());
        }
    }
    // The endpoint is disabled, and the app's other endpoint is told.
    let (status, body, _) = app
        .get(
            &format!("/admin/webhooks/endpoints/{bad}"),
            &admin_token("root"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["enabled"], false, "{body}");
    assert!(body["data"]["disabled_reason"].is_string());
    let told = watcher.wait_for(1, 20).await;
    assert_eq!(told[0].event_type(), "endpoint.disabled");
    assert_eq!(told[0].json()["data"]["endpoint_id"], bad.as_str());
    verify(&told[0], &watcher_secret).unwrap();

    // No attempt past the bound, however much time passes; new events wait while disabled.
    app.admin_grant("carol", 10).await;
    app.clock.advance(time::Duration::days(10));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(failing.received().len(), max);

    // Re-enabled: events from while it was disabled were not queued for it (like a new
    // endpoint, it receives what happens from now on), a retry of the failed delivery is
    // attempted once more, and new events flow again.
    let (status, body, _) = app
        .put(
            &format!("/admin/webhooks/endpoints/{bad}"),
            &admin_token("root"),
            json!({ "enabled": true }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["enabled"], true);
    assert!(body["data"]["failing_since"].is_null());
    assert!(body["data"]["disabled_reason"].is_null());
    let failed = crate::deliveries(&app, "&status=failed").await;
    assert_eq!(failed.len(), 1);
    let (status, body, _) = app
        .request(
            Method::POST,
            &format!(
                "/admin/webhooks/deliveries/{}/retry",
                failed[0]["id"].as_str().unwrap()
            ),
            Some(&admin_token("root")),
            &[],
            Body::Empty,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "pending");
    let again = failing.wait_for(max + 1, 20).await;
    assert_eq!(again[max].id(), again[0].id());
    app.admin_grant("carol", 10).await;
    let third = failing.wait_for(max + 2, 20).await;
    assert_ne!(third[max + 1].id(), again[0].id());
    app.finish().await;
}

async fn checkout_reports_orders_and_subscriptions(db: Db) {
    let app = spawn(db).await;
    let receiver = Receiver::ok().await;
    let (_, secret) = create_endpoint(&app, &receiver.url, None).await;
    let admin = admin_token("root");
    let (status, pro, _) = app
        .post(
            "/admin/billing/plans",
            &admin,
            json!({
                "name": "Pro", "kind": "subscription", "currency": "usd",
                "price_monthly": 999, "credits_included": 1000,
            }),
        )
        .await;
    assert_eq!(status, 200, "{pro}");
    let (status, body, _) = app
        .request(
            Method::POST,
            "/payment/create-session",
            Some(&user_token("dave")),
            &[("idempotency-key", "sub-1")],
            Body::Json(json!({
                "channel": "sandbox", "type": "subscription", "interval": "month",
                "plan_id": pro["data"]["id"], "success_url": "https://app.example/ok",
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let url = body["data"]["url"].as_str().unwrap();
    let paid = app.client.post(format!("{url}/pay")).send().await.unwrap();
    assert_eq!(paid.status(), 200);

    receiver.wait_for(3, 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = receiver.received();
    assert_eq!(
        count_types(&received),
        BTreeMap::from([
            ("credits.granted".to_owned(), 1),
            ("order.completed".to_owned(), 1),
            ("subscription.created".to_owned(), 1),
        ])
    );
    for r in &received {
        verify(r, &secret).unwrap();
        assert_eq!(r.json()["user_id"], "dave");
    }
    let order = received
        .iter()
        .find(|r| r.event_type() == "order.completed")
        .unwrap()
        .json();
    assert_eq!(order["data"]["status"], "completed");
    assert_eq!(order["data"]["credits"], 1000);
    let sub = received
        .iter()
        .find(|r| r.event_type() == "subscription.created")
        .unwrap()
        .json();
    assert_eq!(sub["data"]["status"], "active");
    assert_eq!(sub["data"]["order_id"], order["data"]["order_id"]);
    app.finish().await;
}

async fn expiry_and_holds_report_when_swept(db: Db) {
    let app = spawn(db).await;
    let receiver = Receiver::ok().await;
    create_endpoint(
        &app,
        &receiver.url,
        Some(&["credits.expired", "hold.expired", "credits.low"]),
    )
    .await;
    let (status, body, _) = app
        .put(
            "/admin/webhooks/settings",
            &admin_token("root"),
            json!({ "low_balance_threshold": 20 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = app
        .post(
            "/admin/credits/manual",
            &admin_token("root"),
            json!({
                "user_id": "frank", "amount": 100, "description": "Trial",
                "expires_at": "2026-03-01T13:00:00Z",
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = app
        .post(
            "/internal/credits/holds",
            SERVICE_KEY,
            json!({ "user_id": "frank", "amount": 30, "ttl_seconds": 60, "description": "stream" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let hold_id = body["data"]["id"].clone();
    // Nothing has happened yet that a receiver subscribed to.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received().is_empty());

    // Two hours on, the sweep writes the expiry and the run-out hold in one transaction.
    app.clock.advance(time::Duration::hours(2));
    assert_eq!(app.ledger().sweep_expired(100).await.unwrap(), 1);
    receiver.wait_for(3, 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = receiver.received();
    assert_eq!(
        count_types(&received),
        BTreeMap::from([
            ("credits.expired".to_owned(), 1),
            ("credits.low".to_owned(), 1),
            ("hold.expired".to_owned(), 1),
        ])
    );
    let data = |t: &str| {
        received
            .iter()
            .find(|r| r.event_type() == t)
            .unwrap()
            .json()["data"]
            .clone()
    };
    assert_eq!(data("credits.expired")["credits"], 100);
    assert_eq!(data("credits.expired")["balance_after"], 0);
    assert_eq!(data("hold.expired")["hold_id"], hold_id);
    assert_eq!(data("credits.low")["available_before"], 70);
    assert_eq!(data("credits.low")["available_after"], 0);
    // A second sweep finds nothing and tells nothing.
    assert_eq!(app.ledger().sweep_expired(100).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 3);
    app.finish().await;
}
