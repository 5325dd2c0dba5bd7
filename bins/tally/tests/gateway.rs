//! The `examples/ai-gateway` program (in-process holds for tokens Tally prices) and a running
//! `tally serve` (HTTP consumes) spend from one account at the same time; afterwards every
//! credit is accounted for and `tally verify` passes. On SQLite, and on PostgreSQL when
//! `TALLY_TEST_POSTGRES_URL` is set (a fresh database from `tally-testkit`, dropped afterwards).
//!
//! It shares no helpers with the other HTTP tests beyond the scratch database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tempfile::TempDir;

const JWT_SECRET: &str = "gateway-test-secret-0123456789abcdef0123456789";
const SERVICE_KEY: &str = "gateway-test-service-key-0123";
const USER: &str = "alice";
const GRANTED: i64 = 10_000;
const EXAMPLE_CALLS: u64 = 200;
const HTTP_TASKS: u64 = 3;
const HTTP_MAX_PER_TASK: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_gateway_and_server_share_one_account() {
    let dir = TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    gateway_and_server_share_one_account("sqlite", &url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_gateway_and_server_share_one_account() {
    let Some(db) = tally_testkit::ScratchDb::postgres().await else {
        return;
    };
    let dir = TempDir::new().unwrap();
    gateway_and_server_share_one_account("postgres", &db.url, dir.path()).await;
    drop(db);
}

async fn gateway_and_server_share_one_account(label: &str, database_url: &str, dir: &Path) {
    let example = example_binary();
    let server = Server::start(database_url, dir).await;
    let http = reqwest::Client::new();
    let run = format!("{:012x}", rand::random::<u64>() >> 16);

    // A known amount to start from.
    let (status, body) = server
        .post_service(
            &http,
            "/internal/credits/grant",
            json!({
                "user_id": USER,
                "amount": GRANTED,
                "description": "gateway test top-up",
                "idempotency_key": format!("grant-{run}"),
            }),
        )
        .await;
    assert_eq!(status, 200, "grant: {body}");
    assert_eq!(body["data"]["balance_after"], json!(GRANTED), "{body}");

    // HTTP consumes until the example is done.
    let stop = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for task in 0..HTTP_TASKS {
        let (http, base, stop, run) =
            (http.clone(), server.base.clone(), stop.clone(), run.clone());
        consumers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(task);
            let (mut ok, mut credits, mut refused) = (0_u64, 0_i64, 0_u64);
            for i in 0..HTTP_MAX_PER_TASK {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let amount = rng.gen_range(1..=10_i64);
                let response = http
                    .post(format!("{base}/internal/credits/consume"))
                    .bearer_auth(SERVICE_KEY)
                    .json(&json!({
                        "user_id": USER,
                        "amount": amount,
                        "description": "HTTP usage",
                        "idempotency_key": format!("http-{run}-{task}-{i}"),
                    }))
                    .send()
                    .await
                    .expect("consume request");
                let status = response.status().as_u16();
                let body: Value = response.json().await.expect("JSON body");
                match status {
                    200 => {
                        assert_eq!(body["data"]["amount"], json!(-amount), "{body}");
                        ok += 1;
                        credits += amount;
                    }
                    402 => {
                        assert_eq!(body["error"]["code"], "INSUFFICIENT_CREDITS", "{body}");
                        refused += 1;
                    }
                    other => panic!("consume answered {other}: {body}"),
                }
                tokio::time::sleep(Duration::from_millis(rng.gen_range(1..6))).await;
            }
            (ok, credits, refused)
        }));
    }

    // Meanwhile, the gateway reserves, streams and captures in its own process.
    let started = Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(&example)
            .args(["--calls", &EXAMPLE_CALLS.to_string()])
            .args(["--concurrency", "4", "--top-up", "0", "--user", USER])
            .env("TALLY_DATABASE_URL", database_url)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the example finishes within 180 s")
    .expect("the example runs");
    let example_time = started.elapsed();
    stop.store(true, Ordering::Release);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ai-gateway failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );

    let (mut http_ok, mut http_credits, mut http_refused) = (0, 0, 0);
    for c in consumers {
        let (ok, credits, refused) = c.await.expect("consumer task");
        http_ok += ok;
        http_credits += credits;
        http_refused += refused;
    }

    let summary: Value = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("the last line of the example's output is JSON: {stdout}"));
    let number = |field: &str| {
        summary[field]
            .as_i64()
            .unwrap_or_else(|| panic!("{field} in {summary}"))
    };
    let captured = number("captured_credits");
    let (calls, captured_calls, released, refused) = (
        number("calls"),
        number("captured_calls"),
        number("released_calls"),
        number("refused_calls"),
    );
    eprintln!(
        "[{label}] ai-gateway: {calls} calls in {example_time:.2?} ({captured_calls} captured = \
         {captured} credits, {released} released, {refused} refused); HTTP: {http_ok} consumes = \
         {http_credits} credits, {http_refused} refused"
    );
    assert_eq!(calls, EXAMPLE_CALLS as i64, "{summary}");
    assert_eq!(captured_calls + released + refused, calls, "{summary}");
    assert_eq!(number("top_up"), 0, "{summary}");
    assert!(captured_calls > 0 && captured > 0, "{summary}");
    assert!(
        http_ok > 0,
        "no HTTP consume went through while the example ran"
    );

    // The example reports tokens; Tally priced them (small: 1 and 4 credits per 1,000 input and
    // output tokens, large: 10 and 30), carrying fractions per feature: each feature's charge
    // is the whole part of its exact total.
    let tokens = |model: &str, kind: &str| summary["tokens"][model][kind].as_i64().unwrap_or(0);
    let input = tokens("small", "input") + 10 * tokens("large", "input");
    let output = 4 * tokens("small", "output") + 30 * tokens("large", "output");
    assert!(input > 0 && output > 0, "{summary}");
    assert_eq!(captured, input / 1_000 + output / 1_000, "{summary}");

    let expected = GRANTED - captured - http_credits;
    assert!(expected >= 0, "{expected}");

    // The user's view, with a JWT of their own.
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": USER, "exp": time::OffsetDateTime::now_utc().unix_timestamp() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let response = http
        .get(format!("{}/credits/balance", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    let balance = &body["data"];
    assert_eq!(
        (
            balance["balance"].as_i64(),
            balance["available"].as_i64(),
            balance["held"].as_i64()
        ),
        (Some(expected), Some(expected), Some(0)),
        "granted {GRANTED} - captured {captured} - HTTP {http_credits}: {body}"
    );

    // The service's view agrees.
    let (status, body) = server
        .post_service(
            &http,
            "/internal/credits/check",
            json!({ "user_id": USER, "amount": 1 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["data"]["balance"].as_i64(),
            body["data"]["available"].as_i64()
        ),
        (Some(expected), Some(expected)),
        "{body}"
    );

    // And the ledger's invariants hold.
    let verify = Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("verify")
        .current_dir(dir)
        .env("TALLY_DATABASE_URL", database_url)
        .env("TALLY_JWT_SECRET", JWT_SECRET)
        .env("TALLY_LOG_LEVEL", "warn")
        .env_remove("RUST_LOG")
        .output()
        .expect("tally verify runs");
    let out = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "tally verify:\nstdout: {out}\nstderr: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(out.contains("no violations"), "{out}");
    drop(server);
}

/// Where cargo put the example for this test run.
fn example_binary() -> PathBuf {
    let tally = Path::new(env!("CARGO_BIN_EXE_tally"));
    let path = tally
        .parent()
        .expect("the binary's directory")
        .join("examples")
        .join(format!("ai-gateway{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: build the examples first (`cargo test --workspace` or \
         `cargo build --example ai-gateway` builds them)",
        path.display()
    );
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&path) < modified(tally) {
        eprintln!(
            "note: {} is older than the tally binary; if the ledger changed, rebuild it \
             (`cargo build --example ai-gateway`)",
            path.display()
        );
    }
    path
}

/// A `tally serve` child process; killed when dropped.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    async fn start(database_url: &str, dir: &Path) -> Self {
        let mut last = String::new();
        // A port found free may be taken before the server binds it: then try another.
        for attempt in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let log = dir.join(format!("serve-{attempt}.log"));
            let file = std::fs::File::create(&log).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_tally"))
                .arg("serve")
                .current_dir(dir)
                .env("TALLY_DATABASE_URL", database_url)
                .env("TALLY_BIND", format!("127.0.0.1:{port}"))
                .env("TALLY_JWT_SECRET", JWT_SECRET)
                .env("TALLY_SERVICE_KEYS", SERVICE_KEY)
                .env("TALLY_SWEEP_INTERVAL_SECONDS", "0")
                .env("TALLY_LOG_LEVEL", "warn")
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .expect("tally serve starts");
            let mut server = Self {
                child,
                base: format!("http://127.0.0.1:{port}"),
                log,
            };
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("tally serve did not become ready: {last}");
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("it exited ({status}); log:\n{}", self.log_text()));
            }
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("not ready after 60 s; log:\n{}", self.log_text()))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn post_service(&self, http: &reqwest::Client, path: &str, body: Value) -> (u16, Value) {
        let response = http
            .post(format!("{}{path}", self.base))
            .bearer_auth(SERVICE_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
