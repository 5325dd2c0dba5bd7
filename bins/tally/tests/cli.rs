//! The `tally` binary: `verify`, `token`, `migrate`, `backup`, and two or three `serve` processes
//! sharing one PostgreSQL database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::collections::BTreeSet;

use serde_json::json;
use tempfile::TempDir;

use common::{Db, JWT_SECRET, TestApp, consume_storm, start_node, tally_command};

backend_tests!(
    verify_command,
    token_command,
    console_link_needs_a_registered_app
);
postgres_tests!(
    two_processes_share_one_database,
    three_processes_share_one_database
);

async fn run(cmd: &mut tokio::process::Command) -> (Option<i32>, String, String) {
    let out = cmd.output().await.expect("tally runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn verify_command(db: Db) {
    let app = TestApp::spawn(db).await;
    let dir = TempDir::new().unwrap();
    app.admin_grant("alice", 100).await;
    let (tally, _) = consume_storm(std::slice::from_ref(&app.address), "alice", 8, 20).await;
    assert_eq!((tally.ok, tally.insufficient, tally.other), (100, 60, 0));

    let verify = || {
        let mut cmd = tally_command(dir.path());
        cmd.arg("verify")
            .env("TALLY_DATABASE_URL", &app.database_url)
            .env("TALLY_LOG_LEVEL", "warn");
        cmd
    };
    let (code, stdout, stderr) = run(&mut verify()).await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("no violations"), "{stdout}");

    // Break the cached balance behind the ledger's back: verify must notice and fail.
    app.execute_sql("UPDATE accounts SET balance = balance + 7 WHERE user_id = 'alice'")
        .await;
    let (code, stdout, _) = run(&mut verify()).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("VIOLATION app=default user=alice rule=\"balance = sum of transactions\""),
        "{stdout}"
    );
    app.execute_sql("UPDATE accounts SET balance = balance - 7 WHERE user_id = 'alice'")
        .await;
    let (code, stdout, _) = run(&mut verify()).await;
    assert_eq!(code, Some(0), "{stdout}");

    // A misspelt setting in the environment stops the command, naming the closest one.
    let mut cmd = verify();
    cmd.env("TALLY_SANDBOX_ENABLE", "true");
    let (code, stdout, stderr) = run(&mut cmd).await;
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        stderr.contains("did you mean TALLY_SANDBOX_ENABLED?"),
        "{stderr}"
    );

    // A mistyped SQLite path is an error, and no database is made there.
    let typo = dir.path().join("tallly.db");
    let mut cmd = tally_command(dir.path());
    cmd.arg("verify")
        .env("TALLY_DATABASE_URL", format!("sqlite://{}", typo.display()));
    let (code, stdout, stderr) = run(&mut cmd).await;
    assert_ne!(code, Some(0), "{stdout}");
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!typo.exists(), "verify created {}", typo.display());
    app.finish().await;
}

/// `tally console-link` signs operators in to registered apps only.
async fn console_link_needs_a_registered_app(db: Db) {
    let app = TestApp::spawn(db).await;
    let dir = TempDir::new().unwrap();
    let link = |app_key: &str| {
        let mut cmd = tally_command(dir.path());
        cmd.args(["console-link", "--app", app_key])
            .env("TALLY_DATABASE_URL", &app.database_url)
            .env("TALLY_LOG_LEVEL", "warn");
        cmd
    };
    let (code, stdout, stderr) = run(&mut link("acmee")).await;
    assert_ne!(code, Some(0), "{stdout}");
    assert!(stderr.contains("app 'acmee' is not registered"), "{stderr}");
    assert!(!stdout.contains("/console/login"), "no link: {stdout}");
    let (code, stdout, stderr) = run(&mut link("acme")).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("/console/login?token="), "{stdout}");
    app.finish().await;
}

async fn token_command(db: Db) {
    let app = TestApp::spawn(db).await;
    let dir = TempDir::new().unwrap();
    app.admin_grant("alice", 12).await;
    let mint = |secret: &str, args: &[&str]| {
        let mut cmd = tally_command(dir.path());
        cmd.arg("token")
            .args(args)
            .env("TALLY_JWT_SECRET", secret)
            .env("TALLY_DATABASE_URL", &app.database_url);
        cmd
    };

    let (code, token, stderr) = run(&mut mint(JWT_SECRET, &["--user", "alice"])).await;
    assert_eq!(code, Some(0), "{stderr}");
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let (status, body, _) = app.get("/credits/balance", token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["balance"], json!(12));
    common::assert_error(
        &app.get("/admin/checkin/config", token).await,
        403,
        "FORBIDDEN",
    );

    let (code, admin, stderr) = run(&mut mint(
        JWT_SECRET,
        &["--user", "root", "--role", "admin"],
    ))
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(app.get("/admin/checkin/config", admin.trim()).await.0, 200);

    let (code, other, stderr) = run(&mut mint(
        JWT_SECRET,
        &["--user", "alice", "--app", "other"],
    ))
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let (_, body, _) = app.get("/credits/balance", other.trim()).await;
    assert_eq!(
        body["data"]["balance"],
        json!(0),
        "app other is another account"
    );

    // A token minted with another secret is refused.
    let (code, foreign, _) = run(&mut mint(
        "some-other-secret-that-is-long-enough-0123456789",
        &["--user", "alice"],
    ))
    .await;
    assert_eq!(code, Some(0));
    common::assert_error(
        &app.get("/credits/balance", foreign.trim()).await,
        401,
        "UNAUTHORIZED",
    );
    if db == Db::Sqlite {
        // With no secret configured, the server generates one beside the database, owner-only,
        // and `tally token` pointed at the same database uses it.
        let fresh = TestApp::spawn_with(db, |s| s.jwt_secret = None).await;
        let path = format!(
            "{}.secret",
            fresh.database_url.strip_prefix("sqlite://").unwrap()
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{path}");
        let mut cmd = tally_command(dir.path());
        cmd.args(["token", "--user", "alice"])
            .env("TALLY_DATABASE_URL", &fresh.database_url);
        let (code, token, stderr) = run(&mut cmd).await;
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(fresh.get("/credits/balance", token.trim()).await.0, 200);
        common::assert_error(
            &app.get("/credits/balance", token.trim()).await,
            401,
            "UNAUTHORIZED",
        );
        fresh.finish().await;
    }
    if db == Db::Postgres {
        // Every PostgreSQL node must share one configured secret; none is made up.
        let mut cmd = tally_command(dir.path());
        cmd.args(["token", "--user", "alice"])
            .env("TALLY_DATABASE_URL", &app.database_url);
        let (code, stdout, stderr) = run(&mut cmd).await;
        assert_ne!(code, Some(0), "{stdout}");
        assert!(
            stderr.contains("TALLY_JWT_SECRET is required with PostgreSQL"),
            "{stderr}"
        );
    }
    // What the server would refuse is not minted.
    for (args, says) in [
        (&["--user", "alice", "--role", "superuser"][..], "--role"),
        (&["--user", ""][..], "--user"),
        (&["--user", "alice", "--app", "bad app!"][..], "--app"),
    ] {
        let (code, stdout, stderr) = run(&mut mint(JWT_SECRET, args)).await;
        assert_ne!(code, Some(0), "{args:?}: {stdout}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // Without the server's secret, nothing is minted and no secret is written.
    let elsewhere = dir.path().join("elsewhere.db");
    let mut cmd = tally_command(dir.path());
    cmd.args(["token", "--user", "alice"])
        .env_remove("TALLY_JWT_SECRET")
        .env(
            "TALLY_DATABASE_URL",
            format!("sqlite://{}", elsewhere.display()),
        );
    let (code, stdout, stderr) = run(&mut cmd).await;
    assert_ne!(code, Some(0), "{stdout}");
    assert!(stderr.contains("no JWT secret"), "{stderr}");
    assert!(!dir.path().join("elsewhere.db.secret").exists());
    // A database URL without its scheme is named as the problem (not taken for PostgreSQL).
    let mut cmd = tally_command(dir.path());
    cmd.args(["token", "--user", "alice"])
        .env_remove("TALLY_JWT_SECRET")
        .env("TALLY_DATABASE_URL", elsewhere.display().to_string());
    let (code, stdout, stderr) = run(&mut cmd).await;
    assert_ne!(code, Some(0), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "an SQLite file is sqlite://{}",
            elsewhere.display()
        )),
        "{stderr}"
    );
    // Nonsense lifetimes are refused.
    let (code, _, stderr) = run(&mut mint(JWT_SECRET, &["--user", "alice", "--ttl", "0"])).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("--ttl"), "{stderr}");
    app.finish().await;
}

/// A second `tally serve` on a SQLite file in use refuses to start, naming the process that
/// holds it; once that one is gone (killed, here), the file can be served again.
#[tokio::test]
async fn one_server_per_sqlite_file() {
    let dir = TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("one.db").display());
    let (first, base) = start_node(&url, dir.path(), &[]).await;
    let mut second = tally_command(dir.path());
    second
        .arg("serve")
        .env("TALLY_DATABASE_URL", &url)
        .env("TALLY_JWT_SECRET", JWT_SECRET)
        .env("TALLY_BIND", "127.0.0.1:0")
        .env("TALLY_LOG_LEVEL", "warn");
    let (code, stdout, stderr) =
        tokio::time::timeout(std::time::Duration::from_secs(30), run(&mut second))
            .await
            .expect("the second server stops at once");
    assert_ne!(code, Some(0), "{stdout}");
    let holder = format!("(process {})", first.0.id());
    assert!(
        stderr.contains("in use by another `tally serve`") && stderr.contains(&holder),
        "{stderr}"
    );
    let ready = common::client()
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "the first one still serves");
    drop(first);
    let (_again, base) = start_node(&url, dir.path(), &[]).await;
    let ready = common::client()
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn migrate_command() {
    let dir = TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("fresh.db").display());
    let migrate = |url: &str| {
        let mut cmd = tally_command(dir.path());
        cmd.arg("migrate").env("TALLY_DATABASE_URL", url);
        cmd
    };
    let (code, stdout, stderr) = run(&mut migrate(&url)).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("creating a new database at"), "{stderr}");
    let applied: usize = stdout
        .trim()
        .strip_prefix("applied ")
        .and_then(|s| s.strip_suffix(" migrations"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output: {stdout}"));
    assert!(applied > 0, "{stdout}");
    let (code, stdout, stderr) = run(&mut migrate(&url)).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("applied 0 migrations"), "{stdout}");
    assert!(!stderr.contains("creating"), "{stderr}");

    let (code, stdout, stderr) = run(&mut migrate("mysql://x")).await;
    assert!(
        code.is_some_and(|c| c != 0),
        "exit {code:?}\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("unsupported scheme 'mysql'"),
        "stderr: {stderr}"
    );
}

/// Each request's log lines name its app and user once authenticated, and the access line its
/// error code.
#[tokio::test]
async fn log_lines_name_the_app_the_user_and_the_error_code() {
    let dir = TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("logs.db").display());
    let log = dir.path().join("tally.log");
    let file = std::fs::File::create(&log).unwrap();
    let (node, base) = common::start_node_to(
        &url,
        dir.path(),
        &[("TALLY_LOG_LEVEL", "info"), ("TALLY_LOG_FORMAT", "json")],
        file.into(),
    )
    .await;
    let client = common::client();
    let consume = json!({
        "user_id": "alice", "amount": 5, "description": "AI call", "idempotency_key": "l1",
    });
    let (status, body, _) = common::send(
        &client,
        &base,
        reqwest::Method::POST,
        "/internal/credits/consume",
        Some(common::SERVICE_KEY),
        &[],
        common::Body::Json(consume),
    )
    .await;
    assert_eq!(status, 402, "{body}");
    let (status, body, _) = common::send(
        &client,
        &base,
        reqwest::Method::GET,
        "/credits/balance",
        Some(&common::app_token("bob", "other", None)),
        &[],
        common::Body::Empty,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    drop(node);
    let served: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["fields"]["message"] == "request served")
        .collect();
    let line = |route: &str| {
        served
            .iter()
            .find(|l| l["span"]["route"] == route)
            .unwrap_or_else(|| panic!("no access line for {route}: {served:?}"))
            .clone()
    };
    let refused = line("/internal/credits/consume");
    assert_eq!(refused["span"]["app"], "default", "{refused}");
    assert_eq!(
        refused["span"]["error_code"], "INSUFFICIENT_CREDITS",
        "{refused}"
    );
    assert_eq!(refused["fields"]["status"], 402, "{refused}");
    let read = line("/credits/balance");
    assert_eq!(
        (&read["span"]["app"], &read["span"]["user"]),
        (&json!("other"), &json!("bob")),
        "{read}"
    );
    assert!(read["span"].get("error_code").is_none(), "{read}");
}

/// `tally backup` copies a SQLite database while a server writes to it: the copy passes
/// `tally verify` and holds every write acknowledged before the backup began.
#[tokio::test]
async fn backup_under_write_load() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    let dir = TempDir::new().unwrap();
    let live = dir.path().join("live.db");
    let url = format!("sqlite://{}", live.display());
    let (node, base) = start_node(&url, dir.path(), &[]).await;
    let client = common::client();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|caller| {
            let (client, base, stop) = (client.clone(), base.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("b-{caller}-{i}");
                    let body = json!({
                        "user_id": format!("u{caller}"), "amount": 1,
                        "description": "reward", "idempotency_key": key,
                    });
                    let (status, body, _) = common::send(
                        &client,
                        &base,
                        reqwest::Method::POST,
                        "/internal/credits/grant",
                        Some(common::SERVICE_KEY),
                        &[],
                        common::Body::Json(body),
                    )
                    .await;
                    assert_eq!(status, 200, "{body}");
                    acked.push((key, Instant::now()));
                    i += 1;
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let copy = dir.path().join("copy.db");
    let backup = |dest: &std::path::Path, url: &str| {
        let mut cmd = tally_command(dir.path());
        cmd.arg("backup")
            .arg(dest)
            .env("TALLY_DATABASE_URL", url)
            .env("TALLY_LOG_LEVEL", "warn");
        cmd
    };
    let began = Instant::now();
    let (code, stdout, stderr) = run(&mut backup(&copy, &url)).await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.starts_with("backed up to"), "{stdout}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut before = BTreeSet::new();
    let mut total = 0;
    for writer in writers {
        for (key, at) in writer.await.unwrap() {
            total += 1;
            if at < began {
                before.insert(key);
            }
        }
    }
    assert!(
        before.len() >= 8,
        "the load ran before the backup: {before:?}"
    );

    let path = copy.to_str().unwrap().to_owned();
    let in_copy: BTreeSet<String> = tokio::task::spawn_blocking(move || {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct Key {
            #[diesel(sql_type = diesel::sql_types::Text)]
            idempotency_key: String,
        }
        let mut conn = diesel::SqliteConnection::establish(&path).unwrap();
        diesel::sql_query(
            "SELECT idempotency_key FROM transactions WHERE idempotency_key LIKE 'b-%'",
        )
        .load::<Key>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|k| k.idempotency_key)
        .collect()
    })
    .await
    .unwrap();
    let missing: Vec<_> = before.difference(&in_copy).collect();
    assert!(
        missing.is_empty(),
        "acknowledged before the backup, missing: {missing:?}"
    );
    eprintln!(
        "backup: {} writes acknowledged before it began, {} in the copy, {total} in all",
        before.len(),
        in_copy.len()
    );

    let copy_url = format!("sqlite://{}", copy.display());
    let mut verify = tally_command(dir.path());
    verify.arg("verify").env("TALLY_DATABASE_URL", &copy_url);
    let (code, stdout, stderr) = run(&mut verify).await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("no violations"), "{stdout}");

    // A backup never overwrites, never copies what is not there, and leaves PostgreSQL to its
    // own tools.
    let size = std::fs::metadata(&copy).unwrap().len();
    let (code, _, stderr) = run(&mut backup(&copy, &url)).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("never overwrites"), "{stderr}");
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), size);
    let elsewhere = dir.path().join("other.db");
    let missing_db = format!("sqlite://{}", dir.path().join("nothere.db").display());
    let (code, _, stderr) = run(&mut backup(&elsewhere, &missing_db)).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!dir.path().join("nothere.db").exists());
    let (code, _, stderr) = run(&mut backup(&elsewhere, "postgres://127.0.0.1:1/none")).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert!(!elsewhere.exists());
    drop(node);
}

async fn two_processes_share_one_database() {
    processes_share_one_database(2).await;
}

async fn three_processes_share_one_database() {
    processes_share_one_database(3).await;
}

/// `n` nodes, each batching its writes, spend from one hot account, from many accounts and
/// under one key sent to every node at once, and take check-ins sent to every node at once:
/// exact counts, and `tally verify` clean.
async fn processes_share_one_database(n: usize) {
    // The nodes start at once on an empty database: they race to migrate it.
    let database = common::fresh_database(Db::Postgres).await;
    let database_url = database.url.clone();
    let dir = TempDir::new().unwrap();
    let (nodes, bases): (Vec<_>, Vec<_>) =
        futures_util::future::join_all((0..n).map(|_| start_node(&database_url, dir.path(), &[])))
            .await
            .into_iter()
            .unzip();
    let (a, b) = (bases[0].clone(), bases[n - 1].clone());
    let client = common::client();
    let call = |base: &str, method: reqwest::Method, path: &str, token: String, body| {
        let (client, base, path) = (client.clone(), base.to_owned(), path.to_owned());
        async move { common::send(&client, &base, method, &path, Some(&token), &[], body).await }
    };

    let (status, body, _) = call(
        &a,
        reqwest::Method::POST,
        "/admin/credits/manual",
        common::admin_token("root"),
        common::Body::Json(json!({ "user_id": "alice", "amount": 3_000, "description": "pool" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    for i in 0..17 {
        // u0 … u15 for the storms, u16 for the replays.
        let (status, body, _) = call(
            &bases[i % n],
            reqwest::Method::POST,
            "/admin/credits/manual",
            common::admin_token("root"),
            common::Body::Json(
                json!({ "user_id": format!("u{i}"), "amount": 100, "description": "pool" }),
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    // One hot account, and sixteen others, at the same time.
    let (callers, per_caller) = (32, 125);
    let hot = consume_storm(&bases, "alice", callers, per_caller);
    let users: Vec<String> = (0..16).map(|i| format!("u{i}")).collect();
    let many =
        futures_util::future::join_all(users.iter().map(|u| consume_storm(&bases, u, 3, 40)));
    let ((tally, rate), many) = tokio::join!(hot, many);
    eprintln!(
        "[Postgres] {n} processes: {callers} callers x {per_caller} consumes: {} ok, {} refused, {rate:.0} requests/s",
        tally.ok, tally.insufficient
    );
    assert_eq!(
        (tally.ok, tally.insufficient, tally.other),
        (3_000, 1_000, 0)
    );
    for (user, (t, _)) in users.iter().zip(&many) {
        assert_eq!((t.ok, t.insufficient, t.other), (100, 20, 0), "{user}");
    }

    // One key sent to every node at once, four times each: charged once.
    let replays = (0..4 * n).map(|i| {
        let client = client.clone();
        let base = bases[i % n].clone();
        async move {
            let body = json!({
                "user_id": "u16", "amount": 7, "description": "AI call", "idempotency_key": "once",
            });
            common::send(
                &client,
                &base,
                reqwest::Method::POST,
                "/internal/credits/consume",
                Some(common::SERVICE_KEY),
                &[],
                common::Body::Json(body),
            )
            .await
        }
    });
    let replies = futures_util::future::join_all(replays).await;
    let charged: BTreeSet<String> = replies
        .iter()
        .map(|(status, body, _)| {
            assert_eq!(*status, 200, "{body}");
            body["data"]["id"].to_string()
        })
        .collect();
    assert_eq!(
        charged.len(),
        1,
        "one transaction for every reply: {charged:?}"
    );

    // Check-ins of twelve users, four with accounts and eight new, each sent to every node
    // twice at once: one reward each, whichever node's batch claims the day.
    let checkins = (0..12).flat_map(|u| (0..2 * n).map(move |i| (u, i)));
    let checkins = checkins.map(|(u, i)| {
        let client = client.clone();
        let base = bases[i % n].clone();
        let user = if u < 4 {
            format!("u{u}")
        } else {
            format!("c{u}")
        };
        async move {
            let token = common::user_token(&user);
            let (status, body, _) = common::send(
                &client,
                &base,
                reqwest::Method::POST,
                "/checkin",
                Some(&token),
                &[],
                common::Body::Empty,
            )
            .await;
            (user, status, body)
        }
    });
    let replies = futures_util::future::join_all(checkins).await;
    let mut claimed = BTreeSet::new();
    for (user, status, body) in &replies {
        match status.as_u16() {
            200 => assert!(claimed.insert(user.clone()), "{user} claimed twice"),
            409 => assert_eq!(body["error"]["code"], json!("ALREADY_CHECKED_IN"), "{body}"),
            _ => panic!("{user}: {status} {body}"),
        }
    }
    assert_eq!(claimed.len(), 12, "one check-in each: {claimed:?}");
    for user in &claimed {
        let (status, body, _) = call(
            &b,
            reqwest::Method::GET,
            "/credits/balance",
            common::user_token(user),
            common::Body::Empty,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["balance"], json!(10), "{user}");
    }

    for base in [&a, &b] {
        let token = common::user_token("alice");
        let (status, body, _) = call(
            base,
            reqwest::Method::GET,
            "/credits/balance",
            token,
            common::Body::Empty,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["balance"], json!(0));
    }
    let usage = common::rows_of_type_at(&client, &b, "ai_usage").await;
    assert_eq!(usage.len(), 3_000 + 16 * 100 + 1);
    let (status, body, _) = call(
        &a,
        reqwest::Method::GET,
        "/credits/balance",
        common::user_token("u16"),
        common::Body::Empty,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["balance"], json!(93));

    let mut verify = tally_command(dir.path());
    verify
        .arg("verify")
        .env("TALLY_DATABASE_URL", &database_url);
    let (code, stdout, stderr) = run(&mut verify).await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("no violations"), "{stdout}");
    // Stop the nodes before the database goes.
    drop(nodes);
    drop(database);
}
