//! Keyset pages of the history: following `meta.next_before` visits every row once, in order, on
//! the user's and the admin's list; a bad cursor is refused and changes nothing.

use serde_json::{Value, json};
use time::Duration;

use crate::common::{TestApp, admin_token, assert_error, user_token};

backend_tests!(
    next_before_walks_the_whole_history,
    bad_cursors_are_refused_and_change_nothing
);

/// Alice: 1 grant, then 24 rows alternating usage and grants, a minute apart; bob: 4 grants in
/// between. 29 rows in all.
async fn seed(app: &TestApp) {
    app.admin_grant("alice", 1_000).await;
    for i in 1..25 {
        app.clock.advance(Duration::minutes(1));
        if i % 2 == 0 {
            app.admin_grant("alice", 1).await;
        } else {
            let (status, body, _) = app.consume("alice", 1, &format!("use-{i}")).await;
            assert_eq!(status, 200, "{body}");
        }
        if i % 5 == 0 {
            app.admin_grant("bob", 1).await;
        }
    }
}

/// Follows `next_before` from the first page of `path?query` (`query` without `before`), checking
/// each page's `meta`; returns the pages' rows.
async fn follow(app: &TestApp, token: &str, path: &str, query: &str, limit: usize) -> Vec<Value> {
    let mut rows: Vec<Value> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let cursor = before
            .as_ref()
            .map_or(String::new(), |b| format!("&before={b}"));
        let (status, body, _) = app
            .get(&format!("{path}?limit={limit}{query}{cursor}"), token)
            .await;
        assert_eq!(status, 200, "{body}");
        let page = body["data"].as_array().unwrap();
        let meta = &body["meta"];
        let has_more = meta["has_more"].as_bool().unwrap();
        let expected_next = if has_more {
            page.last().unwrap()["id"].clone()
        } else {
            Value::Null
        };
        assert_eq!(
            meta,
            &json!({ "limit": limit, "offset": 0, "has_more": has_more, "next_before": expected_next })
        );
        if has_more {
            assert_eq!(page.len(), limit, "a page with more after it is full");
        }
        rows.extend(page.iter().cloned());
        before = expected_next.as_str().map(str::to_owned);
        if before.is_none() {
            return rows;
        }
        assert!(rows.len() <= 1_000, "the cursor does not end");
    }
}

fn ids(rows: &[Value]) -> Vec<i64> {
    rows.iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

async fn next_before_walks_the_whole_history(db: crate::common::Db) {
    let app = TestApp::spawn(db).await;
    seed(&app).await;
    let alice = user_token("alice");
    let admin = admin_token("root");

    // The user's list: every row once, newest first, the same rows as the offset pages, for a
    // page size that divides the history (25 rows) and for one that does not.
    let (status, body, _) = app.get("/credits/transactions?limit=100", &alice).await;
    assert_eq!(status, 200, "{body}");
    let all = body["data"].as_array().unwrap().clone();
    assert_eq!(all.len(), 25);
    assert_eq!(body["meta"]["next_before"], Value::Null);
    for limit in [1, 4, 5, 25] {
        let rows = follow(&app, &alice, "/credits/transactions", "", limit).await;
        assert_eq!(rows, all, "limit {limit}");
        let ids = ids(&rows);
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    }
    // With a type filter.
    let usage = follow(&app, &alice, "/credits/transactions", "&type=ai_usage", 5).await;
    assert_eq!(usage.len(), 12);
    let expected: Vec<Value> = all
        .iter()
        .filter(|r| r["type"] == json!("ai_usage"))
        .cloned()
        .collect();
    assert_eq!(usage, expected);
    // Offset paging answers as before (no cursor asked for, `next_before` still given).
    let (_, body, _) = app
        .get("/credits/transactions?limit=5&offset=5", &alice)
        .await;
    assert_eq!(body["data"].as_array().unwrap(), &all[5..10]);
    assert_eq!(body["meta"]["next_before"], all[9]["id"]);
    // `offset=0` may go with a cursor; an unknown (larger) id is a cursor like any other.
    let newest: i64 = all[0]["id"].as_str().unwrap().parse().unwrap();
    let (status, body, _) = app
        .get(
            &format!(
                "/credits/transactions?limit=3&offset=0&before={}",
                newest + 100
            ),
            &alice,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap(), &all[..3]);

    // The admin list, app-wide and with each filter.
    let everything = app.admin_history("default", "").await;
    assert_eq!(everything.len(), 29);
    let path = "/admin/credits/transactions";
    assert_eq!(follow(&app, &admin, path, "", 7).await, everything);
    for query in [
        "&user_id=alice",
        "&user_id=bob",
        "&type=admin_adjustment",
        "&user_id=alice&type=ai_usage",
        "&from=2026-03-01T12:05:00Z&to=2026-03-01T12:20:00Z",
        "&type=admin_adjustment&from=2026-03-01T12:05:00Z",
    ] {
        let offset_rows = app.admin_history("default", query).await;
        assert!(!offset_rows.is_empty(), "{query}");
        assert_eq!(
            follow(&app, &admin, path, query, 3).await,
            offset_rows,
            "{query}"
        );
    }
    app.finish().await;
}

/// Everything a refused history request could have changed.
async fn snapshot(app: &TestApp) -> Value {
    json!({
        "admin": app.admin_history("default", "").await,
        "alice": app.get("/credits/transactions?limit=100", &user_token("alice")).await.1,
        "balance": app.get("/credits/balance", &user_token("alice")).await.1,
    })
}

async fn bad_cursors_are_refused_and_change_nothing(db: crate::common::Db) {
    let app = TestApp::spawn(db).await;
    seed(&app).await;
    let alice = user_token("alice");
    let admin = admin_token("root");
    let before = snapshot(&app).await;
    let newest = before["admin"][0]["id"].as_str().unwrap().to_owned();

    for (path, token) in [
        ("/credits/transactions", &alice),
        ("/admin/credits/transactions", &admin),
    ] {
        for query in [
            "before=abc".to_owned(),
            "before=-1".to_owned(),
            "before=0".to_owned(),
            "before=".to_owned(),
            "before=1.5".to_owned(),
            "before=%2B5".to_owned(),
            "before=99999999999999999999".to_owned(),
            format!("before={newest}&offset=5"),
            format!("offset=5&before={newest}&limit=10"),
            format!("before={newest}&before={newest}"),
        ] {
            let reply = app.get(&format!("{path}?{query}"), token).await;
            assert_error(&reply, 400, "VALIDATION_ERROR");
            let fields = &reply.1["error"]["details"]["fields"];
            // (A repeated parameter is refused before any field is looked at.)
            if query.matches("before=").count() == 1 {
                assert_eq!(
                    fields[0]["field"],
                    json!("before"),
                    "{path}?{query}: {}",
                    reply.1
                );
            }
        }
    }

    assert_eq!(
        before,
        snapshot(&app).await,
        "a refused request changed the database"
    );
    app.finish().await;
}
