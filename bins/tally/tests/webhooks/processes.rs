//! `tally serve` as separate processes: killed with SIGKILL while deliveries are pending, and
//! two processes draining one PostgreSQL outbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::common::{self, Body, Db, Node, admin_token, fresh_database, send, start_node};
use crate::receiver::{Received, Receiver};

backend_tests!(sigkill_loses_nothing, outbox_drains_once_each);

/// `tally serve` with the dispatcher allowed to call the local receiver, polling often.
async fn start(database_url: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> (Node, String) {
    let mut all = vec![
        ("TALLY_WEBHOOK_ALLOW_PRIVATE_URLS", "true"),
        ("TALLY_WEBHOOK_POLL_MS", "20"),
    ];
    all.extend_from_slice(env);
    start_node(database_url, dir, &all).await
}

async fn register(base: &str, url: &str) {
    let (status, body, _) = send(
        &common::client(),
        base,
        Method::POST,
        "/admin/webhooks/endpoints",
        Some(&admin_token("root")),
        &[],
        Body::Json(json!({ "url": url, "event_types": ["credits.granted"] })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

/// `n` grants spread over `bases`, 16 at a time; each commits one `credits.granted` event.
async fn grants(bases: &[String], n: usize) {
    let client = common::client();
    let admin = admin_token("root");
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (client, admin, bases) = (client.clone(), admin.clone(), bases.to_vec());
        tasks.spawn(async move {
            for i in (worker..n).step_by(16) {
                let (status, body, _) = send(
                    &client,
                    &bases[i % bases.len()],
                    Method::POST,
                    "/admin/credits/manual",
                    Some(&admin),
                    &[],
                    Body::Json(json!({ "user_id": format!("u{}", i % 50), "amount": 1, "description": "grant" })),
                )
                .await;
                assert_eq!(status, 200, "{body}");
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
}

/// Deliveries per webhook-id; asserts that repeats of one id carry the same body.
fn by_id(received: &[Received]) -> BTreeMap<String, usize> {
    let mut bodies: BTreeMap<String, &str> = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for r in received {
        let body = bodies.entry(r.id().to_owned()).or_insert(&r.body);
        assert_eq!(*body, r.body, "one webhook-id, two bodies");
        assert_eq!(r.json()["id"], r.id());
        *counts.entry(r.id().to_owned()).or_insert(0) += 1;
    }
    counts
}

async fn wait_distinct(receiver: &Receiver, n: usize, secs: u64) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let counts = by_id(&receiver.received());
        if counts.len() >= n {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} events delivered",
            counts.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn sigkill_loses_nothing(db: Db) {
    const EVENTS: usize = 60;
    let scratch = fresh_database(db).await;
    let url = scratch.url.clone();
    let work = tempfile::tempdir().unwrap();
    // Slow receiver, small batches: most deliveries are still pending when the kill comes.
    let receiver = Receiver::start(Arc::new(|_| (200, Duration::from_millis(1000)))).await;
    let env = [
        ("TALLY_WEBHOOK_BATCH", "6"),
        ("TALLY_WEBHOOK_LEASE_SECONDS", "3"),
        ("TALLY_WEBHOOK_TIMEOUT_SECONDS", "2"),
    ];
    let (node, base) = start(&url, work.path(), &env).await;
    register(&base, &receiver.url).await;
    grants(std::slice::from_ref(&base), EVENTS).await;
    receiver.wait_for(6, 30).await;
    drop(node); // SIGKILL, while the receiver still holds the round's requests
    let before_restart = by_id(&receiver.received());
    assert!(
        before_restart.len() < EVENTS,
        "everything was delivered before the kill"
    );

    let (_node, base) = start(&url, work.path(), &env).await;
    assert_eq!(wait_distinct(&receiver, EVENTS, 60).await.len(), EVENTS);
    // Everything is recorded as delivered in the end.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body, _) = send(
            &common::client(),
            &base,
            Method::GET,
            "/admin/webhooks/deliveries?limit=100&status=succeeded",
            Some(&admin_token("root")),
            &[],
            Body::Empty,
        )
        .await;
        assert_eq!(status, 200);
        if body["data"].as_array().unwrap().len() == EVENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries not all recorded: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The round cut off by the kill was delivered again after the lease, under the same
    // webhook-id (by_id checks the bodies match); nothing else was repeated.
    let counts = by_id(&receiver.received());
    let repeated: Vec<_> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(
        !repeated.is_empty(),
        "the interrupted round was not redelivered"
    );
    assert!(repeated.iter().all(|id| before_restart.contains_key(*id)));
    eprintln!(
        "sigkill ({db:?}): {} of {EVENTS} delivered before the kill, {} delivered again after \
         the restart (same webhook-id), none lost",
        before_restart.len(),
        repeated.len()
    );
}

async fn outbox_drains_once_each(db: Db) {
    const EVENTS: usize = 1_000;
    let scratch = fresh_database(db).await;
    let url = scratch.url.clone();
    let work = tempfile::tempdir().unwrap();
    let receiver = Receiver::ok().await;
    // The events are written while no process dispatches; they wait in the outbox.
    let (writer, base) = start(&url, work.path(), &[("TALLY_WEBHOOKS_ENABLED", "false")]).await;
    register(&base, &receiver.url).await;
    grants(std::slice::from_ref(&base), EVENTS).await;
    drop(writer);
    assert!(receiver.received().is_empty());

    // Then dispatchers start: two on PostgreSQL, one on the single-writer SQLite file.
    let processes = if db == Db::Postgres { 2 } else { 1 };
    let started = Instant::now();
    let mut nodes = Vec::new();
    for _ in 0..processes {
        nodes.push(start(&url, work.path(), &[]).await);
    }
    let counts = wait_distinct(&receiver, EVENTS, 120).await;
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = receiver.received();
    assert_eq!(by_id(&received).len(), EVENTS);
    assert_eq!(
        received.len(),
        EVENTS,
        "a delivery was made twice: {:?}",
        counts.iter().filter(|(_, c)| **c > 1).collect::<Vec<_>>()
    );
    eprintln!(
        "webhook delivery throughput ({db:?}, {processes} process(es)): {EVENTS} events in {elapsed:.2} s \
         = {:.0} events/s (process start included)",
        EVENTS as f64 / elapsed
    );
}
