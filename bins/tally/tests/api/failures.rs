//! When the database fails a request: 500 INTERNAL that names the request id and nothing of the
//! database, the whole movement rolled back, and service again once the database is back.

use reqwest::Method;
use serde_json::json;

use crate::common::{Body, Db, Reply, SERVICE_KEY, TestApp, admin_token, user_token};

backend_tests!(storage_failures_change_nothing);

#[track_caller]
fn assert_internal(reply: &Reply) {
    assert_eq!(reply.0, 500, "{}", reply.1);
    assert_eq!(reply.1["error"]["code"], json!("INTERNAL"));
    let id = reply.2["x-request-id"].to_str().unwrap();
    assert_eq!(reply.1["error"]["details"]["request_id"], json!(id));
    let text = reply.1.to_string().to_lowercase();
    for leak in [
        "boom",
        "lots",
        "checkin_configs",
        "sql",
        "relation",
        "table",
    ] {
        assert!(!text.contains(leak), "{leak:?} leaked: {text}");
    }
}

async fn storage_failures_change_nothing(db: Db) {
    let app = TestApp::spawn(db).await;
    app.admin_grant("alice", 50).await;
    let before = app.admin_history("default", "").await;

    // Every new lot now fails to insert: a grant writes its transaction row first, then fails.
    app.execute_sql(match db {
        Db::Sqlite => {
            "CREATE TRIGGER boom BEFORE INSERT ON lots BEGIN SELECT RAISE(ABORT, 'boom'); END;"
        }
        Db::Postgres => {
            "CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$ \
             LANGUAGE plpgsql; \
             CREATE TRIGGER boom BEFORE INSERT ON lots FOR EACH ROW EXECUTE FUNCTION boom();"
        }
    })
    .await;
    let grant = json!({
        "user_id": "alice", "amount": 10, "description": "Reward", "idempotency_key": "g1",
    });
    assert_internal(
        &app.post("/internal/credits/grant", SERVICE_KEY, grant.clone())
            .await,
    );
    assert_internal(
        &app.post("/admin/credits/manual", &admin_token("root"), grant.clone())
            .await,
    );
    assert_internal(&app.checkin(&user_token("alice")).await);
    assert_eq!(
        app.admin_history("default", "").await,
        before,
        "a failed movement left rows"
    );
    assert_eq!(app.balance("alice").await, 50);
    app.assert_verified().await;

    app.execute_sql(match db {
        Db::Sqlite => "DROP TRIGGER boom;",
        Db::Postgres => "DROP TRIGGER boom ON lots; DROP FUNCTION boom();",
    })
    .await;
    // The key was never used: the retry is the first grant.
    let (status, body, _) = app
        .post("/internal/credits/grant", SERVICE_KEY, grant)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["balance_after"], json!(60));
    let (status, body, _) = app.checkin(&user_token("alice")).await;
    assert_eq!(status, 200, "{body}");

    // Reads fail the same way.
    app.execute_sql("ALTER TABLE checkin_configs RENAME TO checkin_configs_away")
        .await;
    assert_internal(&app.get("/admin/checkin/config", &admin_token("root")).await);
    app.execute_sql("ALTER TABLE checkin_configs_away RENAME TO checkin_configs")
        .await;
    assert_eq!(
        app.get("/admin/checkin/config", &admin_token("root"))
            .await
            .0,
        200
    );

    if db == Db::Postgres {
        // The database drops every connection (a restart, a failover): the pool reconnects.
        app.execute_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await;
        // A pooled connection whose socket was just closed can be handed out once before the
        // pool notices; within a moment every request is served by fresh connections.
        let mut ready = None;
        for _ in 0..50 {
            let (status, body, _) = app
                .request(Method::GET, "/readyz", None, &[], Body::Empty)
                .await;
            if status == 200 {
                ready = Some(body);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(
            ready.is_some(),
            "/readyz never recovered after the connections dropped"
        );
        assert_eq!(app.balance("alice").await, 70);
    }
    app.finish().await;
}
