//! The `deliver` scenario: how fast `tally serve` drains its webhook outbox.
//!
//! A receiver (this binary, `--serve-receiver`, as a child process like the Stripe double)
//! answers every POST with 200. On a database of its own, `tally serve` first runs with the
//! dispatcher off only to register one endpoint for `credits.granted` at the receiver through
//! `POST /admin/webhooks/endpoints`; then N events are written straight into `webhook_events` with
//! one bulk statement (as a burst of grants would have left them, `fanned_out = false`), and
//! `tally serve` starts again with the dispatcher on. The harness polls (the receiver's count of
//! POSTs until it reaches N, then the database) until every event has a `succeeded` delivery:
//! events per second is N over the time from the server being ready to the last delivery
//! recorded. Every delivery must have succeeded, each event exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::commerce::{admin_token, call_json};
use crate::db::{self, redact};
use crate::report::{Report, Row};
use crate::server::{self, ServerProcess, Spawn};
use crate::{Ctx, DbKind, load};

/// Events per measured second of `--duration`…
const EVENTS_PER_SECOND_OF_DURATION: f64 = 2_000.0;
/// …at least this many…
const MIN_EVENTS: u64 = 2_000;
/// …and at most this many.
const MAX_EVENTS: u64 = 50_000;

/// How often the harness polls (the receiver's count, then the database's).
const POLL: Duration = Duration::from_millis(50);
/// How long no progress may last before it looks for failed attempts.
const STALL: Duration = Duration::from_secs(1);
/// When it gives up.
const GIVE_UP: Duration = Duration::from_secs(600);

/// The dispatcher's claim size (`TALLY_WEBHOOK_BATCH`, the server's default).
const BATCH: u32 = 32;
/// The dispatcher's idle poll interval during the run (`TALLY_WEBHOOK_POLL_MS`).
const DISPATCHER_POLL_MS: u32 = 20;

/// What the receiver answers.
const RECEIVER_BODY: &str = "{\"ok\":true}";

/// Events written for a `duration_seconds` run: 2,000 per second, clamped to 2,000–50,000.
pub fn event_count(duration_seconds: f64) -> u64 {
    let n = (EVENTS_PER_SECOND_OF_DURATION * duration_seconds).round();
    if n.is_nan() {
        return MIN_EVENTS;
    }
    (n as u64).clamp(MIN_EVENTS, MAX_EVENTS)
}

/// Serves the receiver: every POST is answered 200 with a tiny JSON body (and counted, as are
/// those missing the `webhook-id` or `webhook-signature` header); `GET /healthz` answers 200,
/// `GET /received` the counts.
pub fn serve_receiver(port: u16, workers: usize) -> std::io::Result<()> {
    let posts = Arc::new(AtomicU64::new(0));
    let unsigned = Arc::new(AtomicU64::new(0));
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let (posts, unsigned) = (posts.clone(), unsigned.clone());
            let (posts_seen, unsigned_seen) = (posts.clone(), unsigned.clone());
            App::new()
                .route(
                    "/healthz",
                    web::get().to(|| async { HttpResponse::Ok().finish() }),
                )
                .route(
                    "/received",
                    web::get().to(move || {
                        let body = json!({
                            "posts": posts_seen.load(Ordering::Relaxed),
                            "unsigned": unsigned_seen.load(Ordering::Relaxed),
                        });
                        async move { HttpResponse::Ok().json(body) }
                    }),
                )
                .default_service(web::post().to(move |req: HttpRequest, _body: web::Bytes| {
                    posts.fetch_add(1, Ordering::Relaxed);
                    let headers = req.headers();
                    if !headers.contains_key("webhook-id")
                        || !headers.contains_key("webhook-signature")
                    {
                        unsigned.fetch_add(1, Ordering::Relaxed);
                    }
                    async {
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(RECEIVER_BODY)
                    }
                }))
        })
        .workers(workers.max(1))
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    text: String,
}

/// A direct connection to the scenario's database, for counting.
enum ProbeConn {
    /// Taken out while a blocking task uses it.
    Sqlite(Option<SqliteConnection>),
    Postgres(Box<AsyncPgConnection>),
}

/// The harness's own queries on the scenario's database, and the time they took.
struct Probe {
    conn: ProbeConn,
    queries: u64,
    busy: Duration,
}

impl Probe {
    async fn open(kind: DbKind, url: &str) -> Result<Self, String> {
        let conn = match kind {
            DbKind::Sqlite => {
                let path = sqlite_path(url)?;
                let conn = tokio::task::spawn_blocking(move || -> Result<_, String> {
                    let mut conn = SqliteConnection::establish(&path)
                        .map_err(|e| format!("opening {path}: {e}"))?;
                    conn.batch_execute("PRAGMA busy_timeout = 10000;")
                        .map_err(|e| format!("probe pragmas: {e}"))?;
                    Ok(conn)
                })
                .await
                .map_err(|e| format!("probe task: {e}"))??;
                ProbeConn::Sqlite(Some(conn))
            }
            DbKind::Postgres => ProbeConn::Postgres(Box::new(
                AsyncPgConnection::establish(url)
                    .await
                    .map_err(|e| format!("connecting to {}: {e}", redact(url)))?,
            )),
        };
        Ok(Self {
            conn,
            queries: 0,
            busy: Duration::ZERO,
        })
    }

    /// The rows of `sql`, whose one column is named `n` (a count) or `text`.
    async fn load<T>(&mut self, sql: &'static str) -> Result<Vec<T>, String>
    where
        T: QueryableByName<diesel::sqlite::Sqlite>
            + QueryableByName<diesel::pg::Pg>
            + Send
            + 'static,
    {
        let started = Instant::now();
        let rows = match &mut self.conn {
            ProbeConn::Sqlite(slot) => {
                let mut conn = slot.take().ok_or("the probe connection was lost")?;
                let (conn, rows) = tokio::task::spawn_blocking(move || {
                    let rows = diesel::sql_query(sql).load::<T>(&mut conn);
                    (conn, rows)
                })
                .await
                .map_err(|e| format!("probe task: {e}"))?;
                *slot = Some(conn);
                rows.map_err(|e| format!("{sql}: {e}"))
            }
            ProbeConn::Postgres(conn) => {
                diesel_async::RunQueryDsl::load::<T>(diesel::sql_query(sql), &mut **conn)
                    .await
                    .map_err(|e| format!("{sql}: {e}"))
            }
        };
        self.queries += 1;
        self.busy += started.elapsed();
        rows
    }

    async fn count(&mut self, sql: &'static str) -> Result<i64, String> {
        Ok(self.load::<Count>(sql).await?.first().map_or(0, |c| c.n))
    }

    async fn lines(&mut self, sql: &'static str) -> Result<Vec<String>, String> {
        Ok(self
            .load::<Line>(sql)
            .await?
            .into_iter()
            .map(|l| l.text)
            .collect())
    }
}

fn sqlite_path(url: &str) -> Result<String, String> {
    url.strip_prefix("sqlite://")
        .map(str::to_owned)
        .ok_or_else(|| format!("not an SQLite URL: {url}"))
}

const SUCCEEDED: &str = "SELECT count(*) AS n FROM webhook_deliveries WHERE status = 'succeeded'";
const NOT_SUCCEEDED: &str =
    "SELECT count(*) AS n FROM webhook_deliveries WHERE status <> 'succeeded'";
const FAILED_ATTEMPTS: &str = "SELECT count(*) AS n FROM webhook_attempts WHERE NOT succeeded";
const ATTEMPTS: &str = "SELECT count(*) AS n FROM webhook_attempts";
const DELIVERIES: &str = "SELECT count(*) AS n FROM webhook_deliveries";
const NOT_FANNED_OUT: &str = "SELECT count(*) AS n FROM webhook_events WHERE NOT fanned_out";
const PAYLOAD_BYTES: &str =
    "SELECT CAST(round(avg(length(payload))) AS BIGINT) AS n FROM webhook_events";
const LAST_PAYLOAD: &str = "SELECT payload AS text FROM webhook_events ORDER BY seq DESC LIMIT 1";
const FAILURES: &str = "SELECT coalesce(d.last_error, 'HTTP ' || d.last_status, d.status) AS text \
     FROM webhook_deliveries d WHERE d.status <> 'succeeded' ORDER BY d.id LIMIT 3";

/// Writes `n` `credits.granted` events for `users` users into the outbox with one
/// `INSERT … SELECT` (rows generated by the database: a recursive CTE on SQLite,
/// `generate_series` on PostgreSQL), each with the envelope tally would have stored.
async fn load_events(kind: DbKind, url: &str, n: u64, users: usize) -> Result<Duration, String> {
    let started = Instant::now();
    let now = time::OffsetDateTime::now_utc();
    let at = db::timestamp(now);
    let rfc3339 = format!("{}Z", at.replace(' ', "T"));
    let u = users.max(1);
    // The envelope of docs/events.md, about 259 bytes; `a` is the event's number.
    let payload = format!(
        "'{{\"id\":\"evt_bench_' || a || '\",\"type\":\"credits.granted\",\"app\":\"default\",\
         \"user_id\":\"u' || (a % {u}) || '\",\"created_at\":\"{rfc3339}\",\
         \"data\":{{\"transaction_id\":\"' || (a + 1) || '\",\"type\":\"purchase\",\"credits\":100,\
         \"balance_after\":100,\"description\":\"Credit pack: Starter\",\"expires_at\":null}}}}'"
    );
    let columns = "INSERT INTO webhook_events (id, app_key, user_id, event_type, payload, fanned_out, created_at)";
    let values = |fanned_out: &str, cast: &str| {
        format!(
            "SELECT 'evt_bench_' || a, 'default', 'u' || (a % {u}), 'credits.granted', {payload}, \
             {fanned_out}, '{at}'{cast}"
        )
    };
    match kind {
        DbKind::Sqlite => {
            let last = n.saturating_sub(1);
            let sql = format!(
                "{columns} WITH RECURSIVE s(a) AS (SELECT 0 UNION ALL SELECT a + 1 FROM s WHERE a < {last}) \
                 {} FROM s",
                values("0", "")
            );
            let path = sqlite_path(url)?;
            tokio::task::spawn_blocking(move || -> Result<(), String> {
                let mut conn = SqliteConnection::establish(&path)
                    .map_err(|e| format!("opening {path}: {e}"))?;
                conn.batch_execute(
                    "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;",
                )
                .map_err(|e| format!("event load pragmas: {e}"))?;
                conn.batch_execute(&format!("BEGIN; {sql}; COMMIT;"))
                    .map_err(|e| format!("loading the outbox: {e}"))?;
                conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")
                    .map_err(|e| format!("event load checkpoint: {e}"))?;
                Ok(())
            })
            .await
            .map_err(|e| format!("event load task: {e}"))??;
        }
        DbKind::Postgres => {
            let sql = format!(
                "{columns} {} FROM generate_series(0, {}) AS g(a)",
                values("false", "::timestamp"),
                n as i64 - 1
            );
            let mut conn = AsyncPgConnection::establish(url)
                .await
                .map_err(|e| format!("connecting to {}: {e}", redact(url)))?;
            conn.batch_execute(&format!("BEGIN; {sql}; COMMIT;"))
                .await
                .map_err(|e| format!("loading the outbox: {e}"))?;
            // As autovacuum eventually would: the dispatcher plans on statistics.
            conn.batch_execute("VACUUM ANALYZE webhook_events")
                .await
                .map_err(|e| format!("VACUUM ANALYZE webhook_events: {e}"))?;
        }
    }
    Ok(started.elapsed())
}

/// Registers the receiver as an endpoint for `credits.granted` on a server with the dispatcher
/// off; answers the endpoint's id.
async fn register(
    ctx: &Ctx<'_>,
    url: &str,
    log: std::path::PathBuf,
    hook: &str,
) -> Result<String, String> {
    let srv = ctx
        .start_tally(
            url,
            log,
            &[
                ("TALLY_WEBHOOKS_ENABLED", "false".to_owned()),
                ("TALLY_WEBHOOK_ALLOW_PRIVATE_URLS", "true".to_owned()),
            ],
        )
        .await?;
    let host = Ctx::host(srv.addr)?;
    let admin = admin_token(&ctx.secret)?;
    let mut sender = load::connect(srv.addr).await?;
    let body = json!({"url": hook, "event_types": ["credits.granted"]});
    let answer = call_json(
        &mut sender,
        &host,
        Method::POST,
        "/admin/webhooks/endpoints",
        &admin,
        Some(&body),
    )
    .await;
    drop(sender);
    srv.stop().await?;
    let (status, answer) = answer?;
    match (status, answer["data"]["id"].as_str()) {
        (StatusCode::CREATED, Some(id)) => Ok(id.to_owned()),
        _ => Err(format!(
            "POST /admin/webhooks/endpoints answered {status}: {answer}"
        )),
    }
}

/// What the receiver counted.
async fn received(addr: std::net::SocketAddr) -> Result<(u64, u64), String> {
    let (status, body) = server::get(addr, "/received").await?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("the receiver's counts ({status}): {e}"))?;
    Ok((
        v["posts"].as_u64().unwrap_or(0),
        v["unsigned"].as_u64().unwrap_or(0),
    ))
}

/// Waits until `n` deliveries have succeeded. Until the receiver has been sent `n` POSTs it asks
/// the receiver (a counter in memory: counting `succeeded` rows is a scan of the deliveries, and
/// polling one every 50 ms throughout would load the database under test); from then on it counts
/// `succeeded` deliveries in the database, until all are recorded. When neither count has moved
/// for [`STALL`], it looks for failed attempts and fails at once if there are any; it also fails
/// when the server exits, and after [`GIVE_UP`].
async fn drain(
    probe: &mut Probe,
    srv: &mut ServerProcess,
    receiver: std::net::SocketAddr,
    n: u64,
    started: Instant,
) -> Result<(), String> {
    let mut progress = 0u64;
    let mut moved = Instant::now();
    loop {
        let (posts, _) = received(receiver).await?;
        let now_at = if posts < n {
            posts
        } else {
            let done = u64::try_from(probe.count(SUCCEEDED).await?).unwrap_or(0);
            if done >= n {
                return Ok(());
            }
            n + done
        };
        if let Some(exit) = srv.exited() {
            return Err(format!("deliver: {exit}"));
        }
        if now_at > progress {
            progress = now_at;
            moved = Instant::now();
        } else if moved.elapsed() >= STALL {
            moved = Instant::now();
            if probe.count(FAILED_ATTEMPTS).await? > 0 {
                let samples = probe.lines(FAILURES).await?;
                return Err(format!(
                    "deliver: a delivery attempt failed ({posts} of {n} POSTs received): {}",
                    samples.join("; ")
                ));
            }
        }
        if started.elapsed() > GIVE_UP {
            return Err(format!(
                "deliver: {posts} of {n} POSTs received and not every delivery succeeded after \
                 {} s; gave up",
                GIVE_UP.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The `deliver` scenario, on a database, a receiver and a server of its own.
pub async fn scenario(
    ctx: &Ctx<'_>,
    dbs: &mut db::Databases,
    report: &mut Report,
) -> Result<(), String> {
    let cli = ctx.cli;
    let kind = cli.db;
    let n = event_count(cli.duration);
    let url = dbs.create("deliver").await?;
    let me = std::env::current_exe().map_err(|e| format!("locating tally-bench: {e}"))?;
    let receiver_port = server::free_port()?;
    let receiver = ServerProcess::start(Spawn {
        name: "webhook receiver",
        program: &me,
        args: vec![
            "--serve-receiver".into(),
            receiver_port.to_string(),
            "--workers".into(),
            "1".into(),
        ],
        env: Vec::new(),
        port: receiver_port,
        ready_path: "/healthz",
        log: dbs.dir().join("receiver.log"),
    })
    .await?;
    let hook = format!("http://127.0.0.1:{receiver_port}/hook");
    let endpoint = register(ctx, &url, dbs.dir().join("tally-deliver-setup.log"), &hook).await?;

    eprintln!("tally-bench: deliver: writing {n} outbox events …");
    let loaded = load_events(kind, &url, n, cli.users).await?;
    let mut probe = Probe::open(kind, &url).await?;
    let payload_bytes = probe.count(PAYLOAD_BYTES).await?;
    let sample = probe.lines(LAST_PAYLOAD).await?.pop().unwrap_or_default();
    let envelope: serde_json::Value = serde_json::from_str(&sample)
        .map_err(|e| format!("deliver: a loaded event is not JSON ({e}): {sample}"))?;
    let last = n.saturating_sub(1);
    if envelope["id"] != format!("evt_bench_{last}") || envelope["data"]["credits"] != 100 {
        return Err(format!(
            "deliver: a loaded event is not as written: {sample}"
        ));
    }
    report.setup.push(format!(
        "deliver database: endpoint {endpoint} for credits.granted at {hook} (a local receiver, \
         1 worker), {n} credits.granted events of ~{payload_bytes} bytes bulk-loaded into \
         webhook_events in {:.2} s",
        loaded.as_secs_f64()
    ));
    eprintln!(
        "tally-bench: {}",
        report.setup.last().map_or("", String::as_str)
    );

    eprintln!("tally-bench: deliver …");
    let mut srv = ctx
        .start_tally(
            &url,
            dbs.dir().join("tally-deliver.log"),
            &[
                ("TALLY_WEBHOOK_ALLOW_PRIVATE_URLS", "true".to_owned()),
                ("TALLY_WEBHOOK_POLL_MS", DISPATCHER_POLL_MS.to_string()),
                ("TALLY_WEBHOOK_BATCH", BATCH.to_string()),
            ],
        )
        .await?;
    let ready = Instant::now();
    let pid = srv.pid();
    server::reset_peak_rss(pid);
    let cpu_start = server::cpu_seconds(pid, ctx.ticks);
    let at_ready = probe.count(SUCCEEDED).await?;
    let drained = drain(&mut probe, &mut srv, receiver.addr, n, ready).await;
    let window = ready.elapsed();
    let (polls, polled) = (probe.queries, probe.busy);
    let cpu_end = server::cpu_seconds(pid, ctx.ticks);
    let peak = server::peak_rss_kib(pid);
    let checks = match &drained {
        Ok(()) => Some(
            async {
                Ok::<_, String>((
                    probe.count(NOT_SUCCEEDED).await?,
                    probe.lines(FAILURES).await?,
                    probe.count(DELIVERIES).await?,
                    probe.count(ATTEMPTS).await?,
                    probe.count(NOT_FANNED_OUT).await?,
                ))
            }
            .await,
        ),
        Err(_) => None,
    };
    let counts = received(receiver.addr).await;
    drop(probe);
    report.server_log_problems.extend(
        srv.logged_problems()
            .into_iter()
            // Expected: the receiver is on 127.0.0.1.
            .filter(|l| !l.contains("TALLY_WEBHOOK_ALLOW_PRIVATE_URLS")),
    );
    srv.stop().await?;
    receiver.stop().await?;
    drained?;
    let (not_succeeded, samples, deliveries, attempts, pending_events) =
        checks.unwrap_or_else(|| Err("no run".into()))?;
    let (posts, unsigned) = counts?;

    let seconds = window.as_secs_f64();
    let cpu = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) if n > 0 => Some((b - a) / (n as f64 / 1000.0)),
        _ => None,
    };
    let row = Row {
        scenario: "deliver".into(),
        status: "ok".into(),
        requests: n,
        window_seconds: seconds,
        requests_per_second: Some(n as f64 / seconds.max(1e-9)),
        p50_ms: None,
        p90_ms: None,
        p99_ms: None,
        max_ms: None,
        errors: not_succeeded.max(0) as u64,
        error_samples: samples,
        baseline: None,
        baseline_requests_per_second: None,
        ratio: None,
        target_ratio: None,
        target_met: None,
        peak_rss_mib: peak.map(|k| k as f64 / 1024.0),
        cpu_seconds_per_1000: cpu,
        note: Some(format!(
            "{n} outbox events fanned out, signed and POSTed to a local receiver (batch {BATCH}, \
             poll {DISPATCHER_POLL_MS} ms), one process; events/s from the server ready to the \
             last delivery recorded"
        )),
    };
    eprintln!(
        "tally-bench:   {:.0} events/s ({n} in {seconds:.1} s), {} not succeeded",
        n as f64 / seconds.max(1e-9),
        row.errors
    );
    report.rows.push(row);
    let check = format!(
        "deliver: {deliveries} deliveries for {n} events, {attempts} attempts, {posts} POSTs \
         received ({unsigned} unsigned), {pending_events} events not fanned out; {at_ready} \
         deliveries had succeeded when the server answered /readyz; the harness's own queries \
         during the {:.1} s: {polls} taking {:.2} s",
        window.as_secs_f64(),
        polled.as_secs_f64()
    );
    eprintln!("tally-bench:   {check}");
    report.setup.push(check);
    crate::verify(ctx, report, "deliver", &url).await?;
    if not_succeeded != 0 || deliveries != n as i64 || pending_events != 0 || unsigned != 0 {
        return Err(format!(
            "deliver: {not_succeeded} deliveries not succeeded, {deliveries} deliveries for {n} \
             events, {pending_events} events not fanned out, {unsigned} unsigned POSTs"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_count_scales_with_the_duration_within_bounds() {
        assert_eq!(event_count(0.5), 2_000);
        assert_eq!(event_count(5.0), 10_000);
        assert_eq!(event_count(10.0), 20_000);
        assert_eq!(event_count(600.0), 50_000);
        assert_eq!(event_count(f64::NAN), 2_000);
    }
}
