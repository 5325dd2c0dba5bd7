//! What every HTTP test shares: [`TestApp`] starts the real server the way the binary does
//! (`Application::build`, `run_until_stopped`) on a random port over a fresh database, with a
//! manual clock the test moves; plus token minting and request helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tally::{Application, Secret, Settings};
use tally_ledger::{Ledger, ManualClock};
use tally_testkit::ScratchDb;
use time::OffsetDateTime;
use time::macros::datetime;

/// The HS256 secret every test server (and `tally token` in the CLI tests) uses.
pub const JWT_SECRET: &str = "tally-test-secret-0123456789abcdef-0123456789abcdef";
/// Service key of the `default` app.
pub const SERVICE_KEY: &str = "svc-default-0123456789abcdef";
/// Service key of the `other` app.
pub const OTHER_SERVICE_KEY: &str = "svc-other-0123456789abcdef";
/// Gateway secret, when a test turns gateway mode on.
pub const GATEWAY_SECRET: &str = "gateway-secret-0123456789abcdef";
/// Where every test's clock starts.
pub const START: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);
/// Which database a test runs on (`Db::Sqlite`, a temporary file; `Db::Postgres`, a fresh
/// database on the server `TALLY_TEST_POSTGRES_URL` names).
pub use tally_testkit::Backend as Db;

/// `backend_tests!(a, b)` writes `a::sqlite`, `a::postgres`, `b::sqlite`, … test functions, each
/// calling the async fn of that name with a [`Db`] (see `tally_testkit::backend_tests!`).
#[allow(unused_macros)]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        tally_testkit::backend_tests!($($name),+);
    };
}

/// `postgres_tests!(a)` writes `a::postgres` only.
#[allow(unused_macros)]
macro_rules! postgres_tests {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if tally_testkit::postgres_configured() {
                    super::$name().await;
                }
            }
        }
    )+};
}

/// A database no test has used (not migrated yet), kept as long as the value lives.
pub async fn fresh_database(db: Db) -> ScratchDb {
    ScratchDb::new(db)
        .await
        .expect("the PostgreSQL variants run only when it is configured")
}

/// The settings every test server starts from.
pub fn base_settings(database_url: String) -> Settings {
    Settings {
        database_url,
        bind: "127.0.0.1:0".into(),
        workers: Some(2),
        jwt_secret: Some(Secret::new(JWT_SECRET)),
        service_keys: Some(Secret::new(format!(
            "{SERVICE_KEY}, other={OTHER_SERVICE_KEY}"
        ))),
        // The app the console and catalog tests use besides `default` and `other`.
        apps: "acme".into(),
        sweep_interval_seconds: 0,
        pg_max_connections: 10,
        log_level: "warn".into(),
        ..Settings::default()
    }
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body.
    Empty,
    /// JSON, sent as `application/json`.
    Json(Value),
    /// These bytes with this Content-Type (none when `None`).
    Raw(Option<&'static str>, Vec<u8>),
}

/// Status, body (JSON, or a JSON string holding a non-JSON body) and headers.
pub type Reply = (StatusCode, Value, HeaderMap);

/// A running server over its own database.
#[derive(Debug)]
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// The bound port.
    pub port: u16,
    /// The backend.
    pub db: Db,
    /// The URL the server was given (CLI tests hand it to the binary).
    pub database_url: String,
    /// The server's clock.
    pub clock: Arc<ManualClock>,
    /// A client with a timeout, shared by the test's callers.
    pub client: reqwest::Client,
    ledger: Ledger,
    _db: ScratchDb,
}

impl TestApp {
    /// A server with the default test settings.
    pub async fn spawn(db: Db) -> Self {
        Self::spawn_with(db, |_| {}).await
    }

    /// A server whose settings `configure` adjusts first.
    pub async fn spawn_with(db: Db, configure: impl FnOnce(&mut Settings)) -> Self {
        let scratch = fresh_database(db).await;
        let database_url = scratch.url.clone();
        let mut settings = base_settings(database_url.clone());
        configure(&mut settings);
        let clock = Arc::new(ManualClock::new(START));
        let app = Application::build(settings, clock.clone())
            .await
            .expect("the server starts");
        let port = app.port();
        let ledger = app.ledger().clone();
        tokio::spawn(app.run_until_stopped());
        Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            db,
            database_url,
            clock,
            client: client(),
            ledger,
            _db: scratch,
        }
    }

    /// Why the server refuses to start with the test settings as `configure` leaves them.
    pub async fn startup_error(db: Db, configure: impl FnOnce(&mut Settings)) -> String {
        let scratch = fresh_database(db).await;
        let mut settings = base_settings(scratch.url.clone());
        configure(&mut settings);
        match Application::build(settings, Arc::new(ManualClock::new(START))).await {
            Ok(app) => panic!("the server started: {app:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// The ledger the server uses, for direct checks.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Asserts that no ledger invariant is broken.
    pub async fn assert_verified(&self) {
        let violations = self.ledger.verify().await.expect("verify runs");
        assert!(violations.is_empty(), "ledger violations: {violations:#?}");
    }

    /// The end of every test: the ledger must verify clean.
    pub async fn finish(self) {
        self.assert_verified().await;
    }

    /// Any request; `token` goes in `Authorization: Bearer`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Reply {
        send(
            &self.client,
            &self.address,
            method,
            path,
            token,
            headers,
            body,
        )
        .await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.request(Method::GET, path, Some(token), &[], Body::Empty)
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.request(Method::POST, path, Some(token), &[], Body::Json(body))
            .await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.request(Method::PUT, path, Some(token), &[], Body::Json(body))
            .await
    }

    /// `POST /checkin` as the bearer of `token`.
    pub async fn checkin(&self, token: &str) -> Reply {
        self.request(Method::POST, "/checkin", Some(token), &[], Body::Empty)
            .await
    }

    /// The user's balance in the default app, through the API.
    pub async fn balance(&self, user: &str) -> i64 {
        self.balance_in(user, "default").await
    }

    /// The user's balance in `app`, through the API.
    pub async fn balance_in(&self, user: &str, app: &str) -> i64 {
        let (status, body, _) = self
            .get("/credits/balance", &app_token(user, app, None))
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["balance"].as_i64().expect("balance")
    }

    /// An admin of the default app grants `amount` to `user`; returns the transaction.
    pub async fn admin_grant(&self, user: &str, amount: i64) -> Value {
        let (status, body, _) = self
            .post(
                "/admin/credits/manual",
                &admin_token("root"),
                json!({ "user_id": user, "amount": amount, "description": "test grant" }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    }

    /// The service of the default app consumes `amount` from `user` under `key`.
    pub async fn consume(&self, user: &str, amount: i64, key: &str) -> Reply {
        self.post(
            "/internal/credits/consume",
            SERVICE_KEY,
            json!({
                "user_id": user, "amount": amount, "description": "AI call", "idempotency_key": key,
            }),
        )
        .await
    }

    /// Every transaction of `app` an admin can page through (at most 100, newest first).
    pub async fn admin_history(&self, app: &str, query: &str) -> Vec<Value> {
        let (status, body, _) = self
            .get(
                &format!("/admin/credits/transactions?limit=100{query}"),
                &app_token("root", app, Some("admin")),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().expect("rows").clone()
    }

    /// Every transaction of `txn_type` in the default app, paged through the admin API.
    pub async fn rows_of_type(&self, txn_type: &str) -> Vec<Value> {
        rows_of_type_at(&self.client, &self.address, txn_type).await
    }

    /// Runs raw SQL against the test database, behind the server's back (for tests that need
    /// to break the ledger on purpose).
    pub async fn execute_sql(&self, sql: &str) {
        match self.db {
            Db::Postgres => {
                let mut conn = AsyncPgConnection::establish(&self.database_url)
                    .await
                    .expect("connecting");
                conn.batch_execute(sql).await.expect("SQL runs");
            }
            Db::Sqlite => {
                use diesel::Connection;
                use diesel::connection::SimpleConnection;
                let path = self
                    .database_url
                    .strip_prefix("sqlite://")
                    .expect("sqlite URL")
                    .to_owned();
                let sql = format!("PRAGMA busy_timeout = 10000; {sql}");
                tokio::task::spawn_blocking(move || {
                    let mut conn = diesel::SqliteConnection::establish(&path).expect("opening");
                    conn.batch_execute(&sql).expect("SQL runs");
                })
                .await
                .expect("blocking task");
            }
        }
    }
}

/// The `tally` binary with no `TALLY_*` variable inherited, run in `dir`.
pub fn tally_command(dir: &std::path::Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TALLY_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir).kill_on_drop(true);
    cmd
}

/// A one-time console link for the server's database, minted by `tally console-link`.
pub async fn console_link(app: &TestApp, app_key: &str, operator: &str) -> String {
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = tally_command(dir.path())
        .args(["console-link", "--app", app_key, "--operator", operator])
        .env("TALLY_DATABASE_URL", &app.database_url)
        .env("TALLY_PUBLIC_URL", &app.address)
        .env("TALLY_LOG_LEVEL", "warn")
        .output()
        .await
        .expect("running tally console-link");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "console-link failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = stdout.trim().to_owned();
    assert!(
        url.starts_with(&format!("{}/console/login?token=", app.address)),
        "{url}"
    );
    url
}

/// Every transaction of `txn_type` in the default app of the server at `base`.
pub async fn rows_of_type_at(client: &reqwest::Client, base: &str, txn_type: &str) -> Vec<Value> {
    let admin = admin_token("root");
    let mut rows = Vec::new();
    loop {
        let path = format!(
            "/admin/credits/transactions?limit=100&offset={}&type={txn_type}",
            rows.len()
        );
        let (status, body, _) = send(
            client,
            base,
            Method::GET,
            &path,
            Some(&admin),
            &[],
            Body::Empty,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        rows.extend(body["data"].as_array().expect("rows").iter().cloned());
        if body["meta"]["has_more"] != json!(true) {
            return rows;
        }
    }
}

/// A client with timeouts, so that a hung server fails the test instead of hanging it.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(64)
        .build()
        .expect("HTTP client")
}

/// Sends one request and checks what every response must carry: an `x-request-id`, and on
/// errors the `{"success": false, "error": {"code", "message"}}` envelope.
pub async fn send(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Body,
) -> Reply {
    let mut req = client.request(method.clone(), format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req = match body {
        Body::Empty => req,
        Body::Json(v) => req.json(&v),
        Body::Raw(content_type, bytes) => {
            let req = match content_type {
                Some(ct) => req.header("content-type", ct),
                None => req,
            };
            req.body(bytes)
        }
    };
    let res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        !id.is_empty(),
        "{method} {path} → {status}: no x-request-id header"
    );
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(
            body["success"],
            json!(false),
            "{method} {path} → {status}: not an error envelope: {body}"
        );
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{method} {path} → {status}: not an error envelope: {body}"
        );
    } else if status == StatusCode::OK && body.is_object() && path != "/openapi.json" {
        assert_eq!(body["success"], json!(true), "{method} {path}: {body}");
    }
    (status, body, headers)
}

/// Asserts an error reply's status and code.
#[track_caller]
/// The fields a `VALIDATION_ERROR` body names, in its order.
pub fn error_fields(body: &Value) -> Vec<String> {
    body["error"]["details"]["fields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .map(|f| f["field"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn assert_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(
        (reply.0.as_u16(), reply.1["error"]["code"].as_str()),
        (status, Some(code)),
        "unexpected reply: {}",
        reply.1
    );
}

/// Seconds since the epoch, by the wall clock (tokens are checked against it).
pub fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Claims for `user`, valid for an hour; `role` and `app` only when given.
pub fn claims(user: &str, role: Option<&str>, app: Option<&str>) -> Value {
    let now = unix_now();
    let mut c = json!({ "sub": user, "iat": now, "exp": now + 3600 });
    if let Some(r) = role {
        c["role"] = json!(r);
    }
    if let Some(a) = app {
        c["app"] = json!(a);
    }
    c
}

/// Signs `claims` with `algorithm` and `key`.
pub fn sign(claims: &Value, algorithm: Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("signing")
}

/// Signs `claims` with HS256 and the test secret.
pub fn hs256(claims: &Value) -> String {
    sign(
        claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
}

/// A user of the default app.
pub fn user_token(user: &str) -> String {
    hs256(&claims(user, None, None))
}

/// An admin of the default app.
pub fn admin_token(user: &str) -> String {
    hs256(&claims(user, Some("admin"), None))
}

/// A caller of `app` with an optional role.
pub fn app_token(user: &str, app: &str, role: Option<&str>) -> String {
    hs256(&claims(user, role, Some(app)))
}

/// base64url without padding, for hand-built tokens.
pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A test key under `tests/fixtures/`.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Sends `request` as is over a new connection; returns everything the server answers.
pub async fn raw_http(port: u16, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // The server may answer (and close) before it has read everything; that is fine.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Status counts of a batch of replies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// 200s.
    pub ok: usize,
    /// 402 INSUFFICIENT_CREDITS.
    pub insufficient: usize,
    /// Anything else.
    pub other: usize,
}

/// `callers` concurrent tasks, caller `i` sending to `bases[i % bases.len()]`, each consuming
/// 1 credit from `user` `per_caller` times under unique keys. Returns the counts and the
/// operations per second.
pub async fn consume_storm(
    bases: &[String],
    user: &str,
    callers: usize,
    per_caller: usize,
) -> (Tally, f64) {
    let client = client();
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let (client, base, user) = (
                client.clone(),
                bases[caller % bases.len()].clone(),
                user.to_owned(),
            );
            tokio::spawn(async move {
                let mut t = Tally::default();
                for i in 0..per_caller {
                    let body = json!({
                        "user_id": user,
                        "amount": 1,
                        "description": "AI call",
                        "idempotency_key": format!("storm-{caller}-{i}"),
                    });
                    let (status, body, _) = send(
                        &client,
                        &base,
                        Method::POST,
                        "/internal/credits/consume",
                        Some(SERVICE_KEY),
                        &[],
                        Body::Json(body),
                    )
                    .await;
                    match (status.as_u16(), body["error"]["code"].as_str()) {
                        (200, _) => t.ok += 1,
                        (402, Some("INSUFFICIENT_CREDITS")) => t.insufficient += 1,
                        (s, _) => {
                            eprintln!("unexpected consume reply {s}: {body}");
                            t.other += 1;
                        }
                    }
                }
                t
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in futures_util::future::join_all(tasks).await {
        let t = task.expect("caller task");
        total.ok += t.ok;
        total.insufficient += t.insufficient;
        total.other += t.other;
    }
    let rate = (callers * per_caller) as f64 / start.elapsed().as_secs_f64();
    (total, rate)
}

/// A `tally serve` child process; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Node(pub std::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// Starts the `tally` binary's `serve` on `database_url` with the test secrets, no inherited
/// `TALLY_*` variable, and `env` on top; waits for `/readyz`. Answers the process and its base
/// URL.
pub async fn start_node(
    database_url: &str,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (Node, String) {
    start_node_to(database_url, dir, env, std::process::Stdio::null()).await
}

/// [`start_node`], its log lines (stdout) going to `stdout`.
pub async fn start_node_to(
    database_url: &str,
    dir: &std::path::Path,
    env: &[(&str, &str)],
    stdout: std::process::Stdio,
) -> (Node, String) {
    let port = free_port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tally"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TALLY_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("serve")
        .current_dir(dir)
        .env("TALLY_BIND", format!("127.0.0.1:{port}"))
        .env("TALLY_DATABASE_URL", database_url)
        .env("TALLY_JWT_SECRET", JWT_SECRET)
        .env(
            "TALLY_SERVICE_KEYS",
            format!("{SERVICE_KEY},other={OTHER_SERVICE_KEY}"),
        )
        .env("TALLY_SWEEP_INTERVAL_SECONDS", "0")
        .env("TALLY_LOG_LEVEL", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .spawn()
        .expect("tally serve starts");
    let mut node = Node(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = client();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = node.0.try_wait().expect("child status") {
            panic!("tally serve exited early: {status}");
        }
        if let Ok(res) = client.get(format!("{base}/readyz")).send().await
            && res.status() == 200
        {
            return (node, base);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tally serve did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
