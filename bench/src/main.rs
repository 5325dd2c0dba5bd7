//! `tally-bench`: the performance harness. It starts the already-built `tally` binary on a fresh
//! database, seeds it, drives real HTTP/1.1 keep-alive traffic at it, measures ceilings in the
//! same run (a bare actix-web server; the write transactions' SQL alone), and prints one table
//! (also written as JSON). See docs/performance.md.
//!
//! ```text
//! cargo build --release -p tally -p tally-bench
//! cargo run --release -p tally-bench -- [SCENARIO…] [--db sqlite|postgres] [--duration S]
//!     [--concurrency N] [--json PATH]
//! ```

mod baseline;
mod commerce;
mod console;
mod db;
mod delivery;
mod load;
mod lots;
mod report;
mod server;
mod workload;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hyper::Method;
use hyper::header::HeaderValue;

use crate::baseline::{DbDriver, DbOp, DbPool};
use crate::load::{HttpDriver, Plan};
use crate::report::{Machine, Report, Row};
use crate::server::{ServerProcess, Spawn};
use crate::workload::Workload;

/// Which database the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DbKind {
    /// An SQLite file in a temporary directory.
    Sqlite,
    /// A fresh PostgreSQL database, dropped afterwards.
    Postgres,
}

impl DbKind {
    fn name(self) -> &'static str {
        match self {
            DbKind::Sqlite => "sqlite",
            DbKind::Postgres => "postgres",
        }
    }
}

/// Scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Scenario {
    /// The bare actix-web server (also run for `balance`).
    BaselineHttp,
    /// GET /credits/balance for random users.
    Balance,
    /// GET /credits/transactions?limit=20 for random users.
    History,
    /// The write transactions' SQL alone (also run for `consume`, `consume-hot`, `checkin`).
    BaselineDb,
    /// POST /internal/credits/consume on random users.
    Consume,
    /// POST /internal/credits/consume, all on one user.
    ConsumeHot,
    /// POST /checkin, each user once.
    Checkin,
    /// POST /internal/usage/track on random users: tokens priced per model, a message allowance.
    Track,
    /// balance, history and consume again after preloading the history.
    Growth,
    /// Balance, consume, grant and hold on an account of 100,000 lots and 100 holds, and on a
    /// fresh one.
    Lots,
    /// Stripe-signed invoice.paid renewals for distinct subscriptions.
    Webhook,
    /// Outbound webhooks: outbox events fanned out, signed and POSTed to a local receiver.
    Deliver,
}

#[derive(Debug, Parser)]
#[command(
    name = "tally-bench",
    version,
    about = "Load-test the release tally binary against in-run baselines",
    after_help = "Scenarios (default: all): baseline-http balance history baseline-db consume \
                  consume-hot checkin track growth (with the console's pages) lots webhook deliver.\nBuild first: cargo build --release -p tally -p tally-bench"
)]
struct Cli {
    /// Scenarios to run; none means all.
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Database the server runs on.
    #[arg(long, value_enum, default_value = "sqlite")]
    db: DbKind,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Concurrent connections (HTTP) or tasks (baseline-db).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Where the JSON report goes.
    #[arg(long, default_value = "bench-results.json")]
    json: PathBuf,
    /// PostgreSQL server to create the benchmark databases on.
    #[arg(
        long,
        env = "TALLY_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_url: String,
    /// Transactions preloaded for `growth`, spread evenly over the users.
    #[arg(long, default_value_t = 1_000_000)]
    growth_rows: u64,
    /// Users seeded (each with a balance).
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Unmeasured seconds at the start of each scenario (none for check-in, which runs out).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Server worker threads (tally and the bare baseline); default: one per core.
    #[arg(long)]
    workers: Option<usize>,
    /// Threads of this client's runtime; default: one per core.
    #[arg(long)]
    client_threads: Option<usize>,
    /// PostgreSQL pool size of the server (TALLY_PG_MAX_CONNECTIONS) and of baseline-db.
    #[arg(long, default_value_t = 16)]
    pg_pool: usize,
    /// SQLite reader connections of the server (TALLY_SQLITE_READERS).
    #[arg(long, default_value_t = 4)]
    sqlite_readers: usize,
    /// PostgreSQL: the server's lanes batching money-path writes (TALLY_PG_BATCH_LANES); 0 turns
    /// batching off.
    #[arg(long, default_value_t = 8)]
    pg_batch_lanes: usize,
    /// `tally serve` processes on the one PostgreSQL database for balance, history, consume,
    /// consume-hot and check-in; the connections are spread over them.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// The tally binary (default: `tally` next to this executable).
    #[arg(long)]
    tally: Option<PathBuf>,
    /// Internal: serve the bare baseline on this port and exit when stopped.
    #[arg(long, hide = true)]
    serve_baseline_http: Option<u16>,
    /// Internal: serve the Stripe double on this port and exit when stopped.
    #[arg(long, hide = true)]
    serve_stripe_double: Option<u16>,
    /// Internal: serve the webhook receiver on this port and exit when stopped.
    #[arg(long, hide = true)]
    serve_receiver: Option<u16>,
    /// Internal: the bare baseline's body size.
    #[arg(long, hide = true, default_value_t = 0)]
    body_bytes: usize,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(port) = cli.serve_baseline_http {
        let workers = cli.workers.unwrap_or_else(cores);
        return match baseline::serve_http(port, workers, cli.body_bytes) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tally-bench: baseline server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(port) = cli.serve_stripe_double {
        return match commerce::serve_stripe_double(port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tally-bench: Stripe double: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(port) = cli.serve_receiver {
        return match delivery::serve_receiver(port, cli.workers.unwrap_or_else(cores)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tally-bench: webhook receiver: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.client_threads.unwrap_or_else(cores).max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tally-bench: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(main_async(cli))
}

async fn main_async(cli: Cli) -> ExitCode {
    let tally = match server::locate_tally(cli.tally.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tally-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.duration <= 0.0 || cli.warmup < 0.0 || cli.users == 0 || cli.concurrency == 0 {
        eprintln!(
            "tally-bench: --duration, --users and --concurrency must be positive, --warmup not negative"
        );
        return ExitCode::from(2);
    }
    if cli.nodes == 0 || (cli.nodes > 1 && cli.db == DbKind::Sqlite) {
        eprintln!("tally-bench: --nodes is at least 1, and more than 1 only with --db postgres");
        return ExitCode::from(2);
    }
    let selected: BTreeSet<Scenario> = if cli.scenarios.is_empty() {
        Scenario::value_variants().iter().copied().collect()
    } else {
        cli.scenarios.iter().copied().collect()
    };
    let mut dbs = match db::Databases::new(cli.db, &cli.pg_url) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tally-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workers = cli.workers.unwrap_or_else(cores);
    let client_threads = cli.client_threads.unwrap_or_else(cores);
    let mut report = Report {
        database: cli.db.name().into(),
        started_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        machine: Machine::probe(),
        settings: serde_json::json!({
            "scenarios": selected.iter().filter_map(|s| s.to_possible_value().map(|v| v.get_name().to_owned())).collect::<Vec<_>>(),
            "duration_seconds": cli.duration,
            "warmup_seconds": cli.warmup,
            "concurrency": cli.concurrency,
            "users": cli.users,
            "growth_rows": cli.growth_rows,
            "server_workers": workers,
            "client_threads": client_threads,
            "pg_pool": cli.pg_pool,
            "sqlite_readers": cli.sqlite_readers,
            "pg_batch_lanes": cli.pg_batch_lanes,
            "nodes": cli.nodes,
            "tally": tally.display().to_string(),
        }),
        setup: Vec::new(),
        rows: Vec::new(),
        verify: Vec::new(),
        server_log_problems: Vec::new(),
        summary: Vec::new(),
        failure: None,
    };
    eprintln!(
        "tally-bench: {} on {}, {} s per scenario, concurrency {}, {} users; cpu: {} x{}, load {}",
        tally.display(),
        cli.db.name(),
        cli.duration,
        cli.concurrency,
        cli.users,
        report.machine.cpu,
        report.machine.cores,
        report.machine.load_average_at_start
    );
    let ctx = Ctx {
        cli: &cli,
        tally: &tally,
        workers,
        ticks: server::clock_ticks(),
        secret: hex::encode(rand::random::<[u8; 32]>()),
        service_key: format!("bench-{}", hex::encode(rand::random::<[u8; 16]>())),
        run_tag: hex::encode(rand::random::<[u8; 4]>()),
    };
    let outcome = tokio::select! {
        r = bench(&ctx, &selected, &mut dbs, &mut report) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
    };
    for p in dbs.cleanup().await {
        eprintln!("tally-bench: cleanup: {p}");
    }
    if let Err(e) = &outcome {
        report.failure = Some(e.clone());
    }
    report.summarise();
    println!("\n{} — {}", report.database, report.started_at);
    print!("{}", report.table());
    for line in &report.summary {
        println!("{line}");
    }
    for p in &report.server_log_problems {
        println!("server log: {p}");
    }
    if let Err(e) = report.write_json(&cli.json) {
        eprintln!("tally-bench: {e}");
        return ExitCode::FAILURE;
    }
    println!("results written to {}", cli.json.display());
    match outcome {
        Ok(()) if report.verify.iter().all(|v| v.passed) => ExitCode::SUCCESS,
        Ok(()) => {
            eprintln!("tally-bench: tally verify found violations");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tally-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Ctx<'a> {
    cli: &'a Cli,
    tally: &'a Path,
    workers: usize,
    ticks: f64,
    secret: String,
    service_key: String,
    run_tag: String,
}

impl Ctx<'_> {
    fn plan(&self, warmup: bool) -> Plan {
        Plan {
            concurrency: self.cli.concurrency,
            warmup: if warmup {
                Duration::from_secs_f64(self.cli.warmup)
            } else {
                Duration::ZERO
            },
            duration: Duration::from_secs_f64(self.cli.duration),
        }
    }

    /// Starts `tally serve` on `url` with the run's settings plus `extra` environment.
    async fn start_tally(
        &self,
        url: &str,
        log: PathBuf,
        extra: &[(&str, String)],
    ) -> Result<ServerProcess, String> {
        let port = server::free_port()?;
        let mut env = vec![
            ("TALLY_DATABASE_URL".to_owned(), url.to_owned()),
            ("TALLY_BIND".to_owned(), format!("127.0.0.1:{port}")),
            ("TALLY_JWT_SECRET".to_owned(), self.secret.clone()),
            ("TALLY_SERVICE_KEYS".to_owned(), self.service_key.clone()),
            ("TALLY_LOG_LEVEL".to_owned(), "warn".to_owned()),
            ("TALLY_SWEEP_INTERVAL_SECONDS".to_owned(), "0".to_owned()),
            ("TALLY_WORKERS".to_owned(), self.workers.to_string()),
            (
                "TALLY_PG_MAX_CONNECTIONS".to_owned(),
                self.cli.pg_pool.to_string(),
            ),
            (
                "TALLY_SQLITE_READERS".to_owned(),
                self.cli.sqlite_readers.to_string(),
            ),
            (
                "TALLY_PG_BATCH_LANES".to_owned(),
                self.cli.pg_batch_lanes.to_string(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        ServerProcess::start(Spawn {
            name: "tally",
            program: self.tally,
            args: vec!["serve".into()],
            env,
            port,
            ready_path: "/readyz",
            log,
        })
        .await
    }

    fn host(addr: std::net::SocketAddr) -> Result<HeaderValue, String> {
        HeaderValue::from_str(&addr.to_string()).map_err(|e| format!("host header: {e}"))
    }

    fn key(&self) -> Result<HeaderValue, String> {
        HeaderValue::from_str(&format!("Bearer {}", self.service_key))
            .map_err(|e| format!("service key header: {e}"))
    }

    /// Drives `workload` at `srv` and turns the result into a row.
    async fn http_row(
        &self,
        name: &str,
        srv: &ServerProcess,
        workload: Workload,
        warmup: bool,
    ) -> Result<Row, String> {
        self.http_row_on(name, &[srv], workload, warmup).await
    }

    /// Drives `workload` at `nodes` (connection `i` to node `i mod n`) and turns the result into
    /// a row: the server's CPU and peak memory are the nodes' sums.
    async fn http_row_on(
        &self,
        name: &str,
        nodes: &[&ServerProcess],
        workload: Workload,
        warmup: bool,
    ) -> Result<Row, String> {
        let pids: Vec<u32> = nodes.iter().map(|n| n.pid()).collect();
        for &pid in &pids {
            server::reset_peak_rss(pid);
        }
        let workload = Arc::new(workload);
        let addrs: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        let ticks = self.ticks;
        eprintln!("tally-bench: {name} …");
        let result = load::run(
            self.plan(warmup),
            |i| HttpDriver::new(addrs[i % addrs.len()], workload.clone(), i),
            || {
                pids.iter()
                    .map(|&pid| server::cpu_seconds(pid, ticks))
                    .sum()
            },
        )
        .await?;
        let rss = pids.iter().map(|&pid| server::peak_rss_kib(pid)).sum();
        let row = Row::measured(name, &result, rss);
        progress(&row);
        Ok(row)
    }

    /// Runs the bare actix-web server (answering a `body_bytes` JSON body) as a child, drives
    /// it like `balance`, and stops it.
    async fn baseline_http_row(
        &self,
        dir: &Path,
        body_bytes: usize,
        tokens: &[HeaderValue],
        body_is: &str,
    ) -> Result<Row, String> {
        let port = server::free_port()?;
        let me = std::env::current_exe().map_err(|e| format!("locating tally-bench: {e}"))?;
        let bare = ServerProcess::start(Spawn {
            name: "baseline-http server",
            program: &me,
            args: vec![
                "--serve-baseline-http".into(),
                port.to_string(),
                "--body-bytes".into(),
                body_bytes.to_string(),
                "--workers".into(),
                self.workers.to_string(),
            ],
            env: Vec::new(),
            port,
            ready_path: "/healthz",
            log: dir.join("baseline-http.log"),
        })
        .await?;
        let wl = Workload::Balance {
            host: Ctx::host(bare.addr)?,
            tokens: tokens.to_vec(),
        };
        let mut row = self.http_row("baseline-http", &bare, wl, true).await;
        if let Ok(r) = &mut row {
            r.note = Some(format!(
                "bare actix-web, {} workers, {body_bytes}-byte JSON body ({body_is})",
                self.workers
            ));
        }
        bare.stop().await?;
        row
    }

    /// Drives a baseline-db transaction and turns the result into a row.
    async fn db_row(
        &self,
        name: &str,
        pool: &DbPool,
        op: DbOp,
        warmup: bool,
    ) -> Result<Row, String> {
        let op = Arc::new(op);
        eprintln!("tally-bench: {name} …");
        let result = load::run(
            self.plan(warmup),
            |i| DbDriver::new(pool.clone(), op.clone(), i),
            || None,
        )
        .await?;
        let row = Row::measured(name, &result, None);
        progress(&row);
        Ok(row)
    }
}

fn progress(row: &Row) {
    eprintln!(
        "tally-bench:   {:.0} ops/s, p50 {} ms, p99 {} ms, {} errors{}",
        row.requests_per_second.unwrap_or(0.0),
        row.p50_ms.map_or("-".into(), |v| format!("{v:.2}")),
        row.p99_ms.map_or("-".into(), |v| format!("{v:.2}")),
        row.errors,
        row.error_samples
            .first()
            .map_or(String::new(), |e| format!(" (first: {e})"))
    );
}

/// Rows per user that fill one history page (`limit=20`) and make `has_more` true.
const HISTORY_PAGE: u64 = 21;

fn find<'a>(rows: &'a [Row], name: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.scenario == name && r.status == "ok")
}

async fn bench(
    ctx: &Ctx<'_>,
    selected: &BTreeSet<Scenario>,
    dbs: &mut db::Databases,
    report: &mut Report,
) -> Result<(), String> {
    use Scenario as S;
    let cli = ctx.cli;
    let kind = cli.db;
    let has = |s: S| selected.contains(&s);
    let started = Instant::now();
    let tokens = workload::mint_tokens(&ctx.secret, cli.users)?;

    let main_scenarios = [
        S::BaselineHttp,
        S::Balance,
        S::History,
        S::BaselineDb,
        S::Consume,
        S::ConsumeHot,
        S::Checkin,
    ];
    if main_scenarios.iter().any(|s| has(*s)) {
        let url = dbs.create("main").await?;
        let srv = ctx
            .start_tally(&url, dbs.dir().join("tally-main.log"), &[])
            .await?;
        let mut others = Vec::new();
        for n in 2..=cli.nodes {
            let log = dbs.dir().join(format!("tally-main-{n}.log"));
            others.push(ctx.start_tally(&url, log, &[]).await?);
        }
        let nodes: Vec<&ServerProcess> = std::iter::once(&srv).chain(&others).collect();
        let host = Ctx::host(srv.addr)?;

        // Seed: every user gets its balance through the service API, as an app would grant it.
        eprintln!(
            "tally-bench: seeding {} users through POST /internal/credits/grant …",
            cli.users
        );
        let seed = Workload::Grant {
            host: host.clone(),
            service_key: ctx.key()?,
            users: cli.users,
            amount: db::SEED_CREDITS,
            next: AtomicUsize::new(0),
        };
        let seed = Arc::new(seed);
        let addr = srv.addr;
        let seeded = load::run(
            Plan {
                concurrency: cli.concurrency,
                warmup: Duration::ZERO,
                duration: Duration::from_secs(3600),
            },
            |i| HttpDriver::new(addr, seed.clone(), i),
            || None,
        )
        .await?;
        if seeded.errors > 0 {
            return Err(format!(
                "seeding failed: {}",
                seeded.error_samples.join("; ")
            ));
        }
        report.setup.push(format!(
            "seeded {} users via POST /internal/credits/grant in {:.1} s ({:.0} grants/s at concurrency {})",
            seeded.completed,
            seeded.window.as_secs_f64(),
            seeded.rate(),
            cli.concurrency
        ));
        eprintln!(
            "tally-bench: {}",
            report.setup.last().map_or("", String::as_str)
        );
        db::analyze(kind, &url).await?;

        let (status, body) = server::request(srv.addr, "/credits/balance", tokens.first()).await?;
        if status != hyper::StatusCode::OK {
            return Err(format!(
                "GET /credits/balance answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let body_bytes = body.len();

        if has(S::BaselineHttp) || has(S::Balance) {
            let row = ctx
                .baseline_http_row(
                    dbs.dir(),
                    body_bytes,
                    &tokens,
                    "the balance response's size",
                )
                .await?;
            report.rows.push(row);
        }
        if has(S::Balance) {
            let wl = Workload::Balance {
                host: host.clone(),
                tokens: tokens.clone(),
            };
            let mut row = ctx.http_row_on("balance", &nodes, wl, true).await?;
            row.compare(
                find(&report.rows, "baseline-http"),
                "baseline-http",
                Some(0.5),
            );
            report.rows.push(row);
        }
        if has(S::Balance) || has(S::BaselineDb) {
            // The balance statement alone, on the same database while the server idles: what
            // the database costs per balance, for reading the HTTP figure against.
            let (pool, size) =
                DbPool::open_readers(kind, &url, cli.sqlite_readers, cli.pg_pool).await?;
            let mut row = ctx
                .db_row(
                    "baseline-db:balance",
                    &pool,
                    DbOp::Balance { users: cli.users },
                    true,
                )
                .await?;
            row.note = Some(format!(
                "the balance SELECT alone on {size} connection(s){}",
                if kind == DbKind::Sqlite {
                    ", run synchronously on the client's threads"
                } else {
                    ""
                }
            ));
            if let Some(b) = report.rows.iter_mut().find(|r| r.scenario == "balance") {
                b.note = Some(format!(
                    "{:.0}% of baseline-db:balance",
                    100.0 * b.requests_per_second.unwrap_or(0.0)
                        / row.requests_per_second.unwrap_or(f64::NAN)
                ));
            }
            report.rows.push(row);
        }
        if has(S::History) {
            let wl = Workload::History {
                host: host.clone(),
                tokens: tokens.clone(),
            };
            let row = ctx.http_row_on("history", &nodes, wl, true).await?;
            report.rows.push(row);
        }

        let writes = [S::BaselineDb, S::Consume, S::ConsumeHot, S::Checkin];
        let pool = if writes.iter().any(|s| has(*s)) {
            let base_url = dbs.create("base").await?;
            let pre = db::preload(kind, &base_url, cli.users, 0..1, 1).await?;
            report.setup.push(format!(
                "baseline-db database: {} users with the same seed grant, bulk-loaded in {:.1} s",
                cli.users,
                pre.as_secs_f64()
            ));
            let (pool, size) =
                DbPool::open(kind, &base_url, cli.pg_pool, cli.sqlite_readers).await?;
            report.setup.push(format!(
                "baseline-db pool: {size} connection(s), as the server's write pool"
            ));
            Some(pool)
        } else {
            None
        };
        if let Some(pool) = &pool {
            if has(S::BaselineDb) || has(S::Consume) {
                let op = DbOp::Consume {
                    users: cli.users,
                    hot: false,
                    run: format!("bdb-{}", ctx.run_tag),
                };
                report
                    .rows
                    .push(ctx.db_row("baseline-db:consume", pool, op, true).await?);
            }
            if has(S::Consume) {
                let wl = Workload::Consume {
                    host: host.clone(),
                    service_key: ctx.key()?,
                    users: cli.users,
                    hot: false,
                    run: format!("c-{}", ctx.run_tag),
                };
                let mut row = ctx.http_row_on("consume", &nodes, wl, true).await?;
                row.compare(
                    find(&report.rows, "baseline-db:consume"),
                    "baseline-db:consume",
                    Some(0.7),
                );
                report.rows.push(row);
            }
            if has(S::BaselineDb) || has(S::ConsumeHot) {
                let op = DbOp::Consume {
                    users: cli.users,
                    hot: true,
                    run: format!("bdbh-{}", ctx.run_tag),
                };
                report.rows.push(
                    ctx.db_row("baseline-db:consume-hot", pool, op, true)
                        .await?,
                );
            }
            if has(S::ConsumeHot) {
                let wl = Workload::Consume {
                    host: host.clone(),
                    service_key: ctx.key()?,
                    users: cli.users,
                    hot: true,
                    run: format!("h-{}", ctx.run_tag),
                };
                let mut row = ctx.http_row_on("consume-hot", &nodes, wl, true).await?;
                row.compare(
                    find(&report.rows, "baseline-db:consume-hot"),
                    "baseline-db:consume-hot",
                    None,
                );
                report.rows.push(row);
            }
            if has(S::BaselineDb) || has(S::Checkin) {
                let op = DbOp::Checkin {
                    users: cli.users,
                    next: AtomicUsize::new(0),
                    day: time::OffsetDateTime::now_utc().date(),
                };
                let mut row = ctx.db_row("baseline-db:checkin", pool, op, false).await?;
                if row.requests as usize >= cli.users {
                    row.note = Some(format!(
                        "all {} users checked in before the window closed",
                        cli.users
                    ));
                }
                report.rows.push(row);
            }
            if has(S::Checkin) {
                let wl = Workload::Checkin {
                    host: host.clone(),
                    tokens: tokens.clone(),
                    next: AtomicUsize::new(0),
                };
                let mut row = ctx.http_row_on("checkin", &nodes, wl, false).await?;
                row.compare(
                    find(&report.rows, "baseline-db:checkin"),
                    "baseline-db:checkin",
                    Some(0.7),
                );
                if row.requests as usize >= cli.users {
                    row.note = Some(format!(
                        "all {} users checked in before the window closed",
                        cli.users
                    ));
                }
                report.rows.push(row);
            }
        }
        drop(pool);
        if has(S::Track) {
            seed_pricing(&srv, &workload::admin_token(&ctx.secret)?).await?;
            let wl = Workload::Track {
                host: host.clone(),
                service_key: ctx.key()?,
                users: cli.users,
                run: format!("t-{}", ctx.run_tag),
            };
            let mut row = ctx.http_row("track", &srv, wl, true).await?;
            row.compare(find(&report.rows, "consume"), "consume", Some(0.8));
            report.rows.push(row);
        }
        report.server_log_problems.extend(srv.logged_problems());
        srv.stop().await?;
        verify(ctx, report, "main", &url).await?;
    }

    if has(S::Growth) {
        let url = dbs.create("growth").await?;
        let users = cli.users as u64;
        let per_user = (cli.growth_rows / users).max(1);
        // History pages are 20 rows: a freshly seeded user has one. To tell what the table's size
        // costs from what a full page costs, history is also measured once every user has one
        // full page (21 rows: the page and `has_more`), before the preload goes on.
        let page = HISTORY_PAGE.min(per_user);
        eprintln!(
            "tally-bench: growth: preloading {} transactions ({per_user} per user) …",
            per_user * users
        );
        let pre = db::preload(kind, &url, cli.users, 0..page, per_user).await?;
        let mut loaded = pre;
        if page < per_user {
            let srv = ctx
                .start_tally(&url, dbs.dir().join("tally-growth-page.log"), &[])
                .await?;
            let wl = Workload::History {
                host: Ctx::host(srv.addr)?,
                tokens: tokens.clone(),
            };
            let mut row = ctx.http_row("history-page", &srv, wl, true).await?;
            row.note = Some(format!(
                "history with one full page per user: {page} transactions each, {} in all",
                page * users
            ));
            report.rows.push(row);
            report.server_log_problems.extend(srv.logged_problems());
            srv.stop().await?;
            loaded += db::preload(kind, &url, cli.users, page..per_user, per_user).await?;
        }
        report.setup.push(format!(
            "growth database: {} transactions ({per_user} per user over {} users) bulk-loaded in {:.1} s",
            per_user * users,
            cli.users,
            loaded.as_secs_f64()
        ));
        eprintln!(
            "tally-bench: {}",
            report.setup.last().map_or("", String::as_str)
        );
        verify(ctx, report, "growth (after the preload)", &url).await?;
        let srv = ctx
            .start_tally(&url, dbs.dir().join("tally-growth.log"), &[])
            .await?;
        let host = Ctx::host(srv.addr)?;
        let wl = Workload::Balance {
            host: host.clone(),
            tokens: tokens.clone(),
        };
        let mut row = ctx.http_row("growth:balance", &srv, wl, true).await?;
        row.compare(find(&report.rows, "balance"), "balance", Some(0.8));
        report.rows.push(row);
        let wl = Workload::History {
            host: host.clone(),
            tokens: tokens.clone(),
        };
        let mut row = ctx.http_row("growth:history", &srv, wl, true).await?;
        let raw = find(&report.rows, "history").and_then(|h| h.requests_per_second);
        if find(&report.rows, "history-page").is_some() {
            row.compare(
                find(&report.rows, "history-page"),
                "history-page",
                Some(0.8),
            );
            if let (Some(h), Some(r)) = (raw, row.requests_per_second) {
                row.note = Some(format!(
                    "{:.0}% of `history` on the freshly seeded database, whose pages hold 1 row instead of 20",
                    100.0 * r / h
                ));
            }
        } else {
            row.compare(find(&report.rows, "history"), "history", Some(0.8));
        }
        report.rows.push(row);
        let wl = Workload::Consume {
            host: host.clone(),
            service_key: ctx.key()?,
            users: cli.users,
            hot: false,
            run: format!("g-{}", ctx.run_tag),
        };
        let mut row = ctx.http_row("growth:consume", &srv, wl, true).await?;
        row.compare(find(&report.rows, "consume"), "consume", Some(0.8));
        report.rows.push(row);
        // The console's two heaviest pages on the grown database (target: p99 under 50 ms).
        let cookie = console::session(ctx.tally, &url, srv.addr).await?;
        for (name, users, note) in [
            (
                "growth:console-customer",
                Some(cli.users),
                "GET /console/customers/{random user}: balance, lots, holds, check-in, subscription, orders, 25 history rows",
            ),
            (
                "growth:console-overview",
                None,
                "GET /console: 30 days of statistics (finished days rolled up, today's counted at most every 30 s)",
            ),
        ] {
            let wl = Workload::Console {
                host: host.clone(),
                cookie: cookie.clone(),
                users,
            };
            let mut row = ctx.http_row(name, &srv, wl, true).await?;
            row.note = Some(note.to_owned());
            report.rows.push(row);
        }
        // The statistics API counts today's rows on every call; the warm-up's first call rolls
        // the 29 finished days up.
        let wl = Workload::Stats {
            host: host.clone(),
            admin: workload::admin_token(&ctx.secret)?,
        };
        let mut row = ctx.http_row("growth:admin-stats", &srv, wl, true).await?;
        row.note = Some(
            "GET /admin/stats: 30 days per day; finished days from the rollup, today's counted on every call"
                .to_owned(),
        );
        report.rows.push(row);
        report.server_log_problems.extend(srv.logged_problems());
        srv.stop().await?;
        verify(ctx, report, "growth (after the run)", &url).await?;
    }

    if has(S::Lots) {
        lots::scenario(ctx, dbs, report).await?;
    }
    if has(S::Webhook) {
        commerce::scenario(ctx, dbs, report, &tokens).await?;
    }
    if has(S::Deliver) {
        delivery::scenario(ctx, dbs, report).await?;
    }
    report.setup.push(format!(
        "whole run: {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

async fn verify(ctx: &Ctx<'_>, report: &mut Report, name: &str, url: &str) -> Result<(), String> {
    eprintln!("tally-bench: tally verify on the {name} database …");
    let (passed, output, took) = db::verify(ctx.tally, url, &ctx.secret).await?;
    eprintln!(
        "tally-bench:   {} in {:.1} s",
        if passed { "passed" } else { "FAILED" },
        took.as_secs_f64()
    );
    if !passed {
        eprintln!("{output}");
    }
    report.verify.push(report::Verify {
        database: name.to_owned(),
        passed,
        seconds: took.as_secs_f64(),
        output,
    });
    Ok(())
}

/// The `track` scenario's pricing: input and output tokens priced for the model `bench`, and
/// messages with a monthly allowance in the free tier larger than any run sends.
async fn seed_pricing(srv: &ServerProcess, admin: &HeaderValue) -> Result<(), String> {
    let feature = |key: &str, name: &str, unit: &str| {
        format!(r#"{{"key":"{key}","name":"{name}","kind":"metered","unit":"{unit}"}}"#)
    };
    let calls = [
        (
            Method::POST,
            "/admin/pricing/features",
            feature("input_tokens", "Input tokens", "tokens"),
        ),
        (
            Method::POST,
            "/admin/pricing/features",
            feature("output_tokens", "Output tokens", "tokens"),
        ),
        (
            Method::POST,
            "/admin/pricing/features",
            feature("messages", "Messages", "messages"),
        ),
        (
            Method::POST,
            "/admin/pricing/rates",
            r#"{"feature":"input_tokens","dimensions":{"model":"bench"},"credits":1,"per":1000}"#
                .into(),
        ),
        (
            Method::POST,
            "/admin/pricing/rates",
            r#"{"feature":"output_tokens","dimensions":{"model":"bench"},"credits":4,"per":1000}"#
                .into(),
        ),
        (
            Method::POST,
            "/admin/pricing/rates",
            r#"{"feature":"messages","credits":1,"per":1}"#.into(),
        ),
        (
            Method::PUT,
            "/admin/pricing/free-entitlements",
            r#"{"entitlements":[{"feature":"messages","included":1000000000,"reset":"month"}]}"#
                .into(),
        ),
    ];
    for (method, path, body) in calls {
        let (status, answer) = server::send_json(srv.addr, method, path, admin, body).await?;
        if status != hyper::StatusCode::OK {
            return Err(format!(
                "{path} answered {status}: {}",
                String::from_utf8_lossy(&answer)
            ));
        }
    }
    Ok(())
}
