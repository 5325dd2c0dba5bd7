//! The production series on `/metrics`: credits moved by app, type and direction, errors by
//! code, provider webhooks by channel and outcome, the delivery backlog, write batches and the
//! runs of writes applied together.

use reqwest::Method;
use serde_json::json;
use time::Duration;

use crate::common::{Body, Db, TestApp, app_token, user_token};

backend_tests!(business_series);

async fn scrape(app: &TestApp) -> String {
    let (status, body, _) = app
        .request(Method::GET, "/metrics", None, &[], Body::Empty)
        .await;
    assert_eq!(status, 200);
    body.as_str().unwrap().to_owned()
}

/// The value of the series line that starts with `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn business_series(db: Db) {
    let app = TestApp::spawn(db).await;
    // The first scrape starts the credits count.
    let first = scrape(&app).await;
    assert_eq!(
        value(&first, "tally_webhook_deliveries{state=\"pending\"}"),
        Some(0.0),
        "{first}"
    );

    app.admin_grant("alice", 500).await;
    let (status, body, _) = app.consume("alice", 50, "m1").await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = app.consume("alice", 5_000, "m2").await;
    assert_eq!(status, 402, "{body}");
    let (status, _, _) = app.consume("alice", 50, "m1").await;
    assert_eq!(status, 200, "a replay moves nothing");
    let (status, _, _) = app
        .get("/credits/balance", &app_token("alice", "nowhere", None))
        .await;
    assert_eq!(status, 403);
    let (status, _, _) = app
        .request(
            Method::POST,
            "/payment/webhook/stripe",
            None,
            &[("stripe-signature", "t=1,v1=00")],
            Body::Json(json!({ "id": "evt_1" })),
        )
        .await;
    assert!(status.is_client_error(), "{status}");

    // Counted once settled: 60 s after their instant.
    let early = scrape(&app).await;
    let granted = "tally_credits_total{app=\"default\",type=\"admin_adjustment\",direction=\"in\"}";
    let spent = "tally_credits_total{app=\"default\",type=\"ai_usage\",direction=\"out\"}";
    assert_eq!(value(&early, granted), None, "{early}");
    app.clock.advance(Duration::seconds(30));
    let unsettled = scrape(&app).await;
    assert_eq!(value(&unsettled, granted), None, "{unsettled}");
    app.clock.advance(Duration::seconds(31));
    let text = scrape(&app).await;
    assert_eq!(value(&text, granted), Some(500.0), "{text}");
    assert_eq!(value(&text, spent), Some(50.0), "{text}");
    assert_eq!(
        value(
            &text,
            "tally_transactions_total{app=\"default\",type=\"ai_usage\"}"
        ),
        Some(1.0),
        "{text}"
    );
    for (code, n) in [("INSUFFICIENT_CREDITS", 1.0), ("UNKNOWN_APP", 1.0)] {
        assert_eq!(
            value(&text, &format!("tally_errors_total{{code=\"{code}\"}}")),
            Some(n),
            "{text}"
        );
    }
    assert_eq!(
        value(
            &text,
            "tally_provider_webhooks_total{channel=\"stripe\",outcome=\"refused\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(&text, "tally_write_batch_size_count").is_some_and(|n| n >= 2.0),
        "{text}"
    );
    // The runs applied together (PostgreSQL's batches; the process's own count, which other
    // tests' servers in this process add to): a series per kind and outcome.
    for kind in ["debits", "checkins"] {
        for outcome in ["together", "one_at_a_time"] {
            let series =
                format!("tally_write_batch_units_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}");
            assert!(value(&text, &series).is_some(), "{series}: {text}");
        }
    }
    assert_eq!(
        value(&text, "tally_webhook_oldest_pending_seconds"),
        Some(0.0),
        "{text}"
    );

    // Scraped again, later: nothing counted twice; a later movement adds to the series.
    app.clock.advance(Duration::seconds(5));
    let again = scrape(&app).await;
    assert_eq!(value(&again, spent), Some(50.0), "{again}");
    assert_eq!(value(&again, granted), Some(500.0), "{again}");
    let (status, body, _) = app.consume("alice", 7, "m3").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = app.checkin(&user_token("bob")).await;
    assert_eq!(status, 200);
    app.clock.advance(Duration::seconds(61));
    let later = scrape(&app).await;
    assert_eq!(value(&later, spent), Some(57.0), "{later}");
    assert_eq!(
        value(
            &later,
            "tally_credits_total{app=\"default\",type=\"checkin\",direction=\"in\"}"
        ),
        Some(10.0),
        "{later}"
    );
    app.finish().await;
}
