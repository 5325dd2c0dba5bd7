//! The `webhook` scenario: Stripe-signed `invoice.paid` renewals for distinct subscriptions.
//!
//! `tally serve` runs on a database of its own with Stripe configured against a tiny local double
//! of Stripe's API (this binary, `--serve-stripe-double`, as a child process like the bare
//! baseline), which answers `POST /v1/checkout/sessions` as Stripe does. The seed goes through the
//! API: an admin creates a subscription plan, then each of up to [`MAX_SUBSCRIPTIONS`] users opens
//! a Stripe checkout session (`POST /payment/create-session`) — a pending order each. The load is
//! one fresh `invoice.paid` event per request (unique event and invoice ids) for a random seeded
//! subscription `sub_bench_<i>` whose metadata names that order, its period moving forward, signed
//! like Stripe signs (`Stripe-Signature: t=…,v1=…`) at the current time. Each must be answered
//! 200 with outcome `applied`: the first event of a subscription creates it from its order, and
//! every one grants the plan's credits once. After the run the number of `subscription`
//! transactions must equal the number of applied events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use actix_web::{App, HttpResponse, HttpServer, web};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::load::{self, Outcome, Rng};
use crate::server::{ServerProcess, Spawn};
use crate::workload::Workload;
use crate::{Ctx, db, find};

/// Subscriptions seeded at most (one per user, the first users).
pub const MAX_SUBSCRIPTIONS: usize = 2_000;

/// Credits the plan grants per paid period.
pub const PLAN_CREDITS: i64 = 1_000;

/// Length of a billing period in the events (30 days).
const PERIOD_SECONDS: i64 = 30 * 86_400;

/// What the webhook answers when an event was applied (the envelope is compact JSON).
const APPLIED: &[u8] = b"\"outcome\":\"applied\"";

/// Serves the Stripe double: `POST /v1/checkout/sessions` answers a new open session
/// (`cs_bench_<n>`) with its hosted-checkout URL, `GET /healthz` answers 200, anything else
/// Stripe's 404.
pub fn serve_stripe_double(port: u16) -> std::io::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let next = next.clone();
            App::new()
                .route(
                    "/v1/checkout/sessions",
                    web::post().to(move || {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        async move {
                            let id = format!("cs_bench_{n}");
                            HttpResponse::Ok().json(json!({
                                "id": id, "object": "checkout.session", "status": "open",
                                "mode": "subscription",
                                "url": format!("https://checkout.stripe.com/c/pay/{id}"),
                            }))
                        }
                    }),
                )
                .route(
                    "/healthz",
                    web::get().to(|| async { HttpResponse::Ok().finish() }),
                )
                .default_service(web::to(|| async {
                    HttpResponse::NotFound().json(json!({"error": {
                        "type": "invalid_request_error", "message": "Unrecognized request URL"}}))
                }))
        })
        .workers(1)
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>`, as Stripe signs.
pub fn stripe_signature(secret: &str, t: i64, body: &str) -> Result<String, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|e| format!("signing key: {e}"))?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Ok(format!(
        "t={t},v1={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[derive(Serialize)]
struct AdminClaims<'a> {
    sub: &'a str,
    role: &'a str,
    exp: i64,
}

/// An HS256 admin token of the default app.
pub fn admin_token(secret: &str) -> Result<HeaderValue, String> {
    let claims = AdminClaims {
        sub: "bench-admin",
        role: "admin",
        exp: unix_now() + 24 * 3600,
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("signing a token: {e}"))?;
    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| format!("token header: {e}"))
}

/// One request with a JSON answer on `sender`'s connection.
pub async fn call_json(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &HeaderValue,
    method: Method,
    path: &str,
    auth: &HeaderValue,
    body: Option<&Value>,
) -> Result<(StatusCode, Value), String> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, host.clone())
        .header(AUTHORIZATION, auth.clone());
    if body.is_some() {
        b = b.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let req = b
        .body(Full::new(
            body.map(|v| Bytes::from(v.to_string())).unwrap_or_default(),
        ))
        .map_err(|e| format!("building a request: {e}"))?;
    let (status, bytes) = load::send(sender, req).await?;
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        Value::String(String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned())
    });
    Ok((status, value))
}

/// The renewals the load sends, and what came back.
#[derive(Debug)]
pub struct Renewals {
    host: HeaderValue,
    webhook_secret: String,
    /// Order id of subscription `i` (`sub_bench_<i>`).
    orders: Vec<String>,
    /// Events sent so far per subscription: the next event's period index.
    periods: Vec<AtomicU32>,
    next: AtomicU64,
    tag: String,
    period_base: i64,
    /// Events answered `applied`, warm-up included.
    pub applied: Arc<AtomicU64>,
    /// Size of an `applied` answer's body.
    pub answer_bytes: Arc<AtomicUsize>,
}

impl Renewals {
    /// The next event: a new invoice for a random subscription, signed now.
    pub fn request(&self, rng: &mut Rng) -> Result<Request<Full<Bytes>>, String> {
        let i = rng.below(self.orders.len());
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let k = i64::from(self.periods[i].fetch_add(1, Ordering::Relaxed));
        let start = self.period_base + k * PERIOD_SECONDS;
        let end = start + PERIOD_SECONDS;
        let now = unix_now();
        let reason = if k == 0 {
            "subscription_create"
        } else {
            "subscription_cycle"
        };
        let tag = &self.tag;
        let order = &self.orders[i];
        let body = format!(
            "{{\"id\":\"evt_bench_{tag}_{n}\",\"object\":\"event\",\"type\":\"invoice.paid\",\
             \"created\":{now},\"api_version\":\"2026-10-28.endive\",\"livemode\":false,\
             \"data\":{{\"object\":{{\"id\":\"in_bench_{tag}_{n}\",\"object\":\"invoice\",\
             \"billing_reason\":\"{reason}\",\"customer\":\"cus_bench_{i}\",\"status\":\"paid\",\
             \"amount_paid\":999,\"currency\":\"usd\",\"parent\":{{\"type\":\"subscription_details\",\
             \"subscription_details\":{{\"subscription\":\"sub_bench_{i}\",\
             \"metadata\":{{\"order_id\":\"{order}\"}}}}}},\"lines\":{{\"object\":\"list\",\
             \"data\":[{{\"period\":{{\"start\":{start},\"end\":{end}}}}}]}}}}}}}}"
        );
        let signature = stripe_signature(&self.webhook_secret, now, &body)?;
        Request::builder()
            .method(Method::POST)
            .uri("/payment/webhook/stripe")
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                "stripe-signature",
                HeaderValue::from_str(&signature).map_err(|e| format!("signature header: {e}"))?,
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("building a request: {e}"))
    }

    /// A 200 answer is a success only when the event was applied.
    pub fn accept(&self, body: &[u8]) -> Outcome {
        if body.windows(APPLIED.len()).any(|w| w == APPLIED) {
            self.applied.fetch_add(1, Ordering::Relaxed);
            self.answer_bytes.store(body.len(), Ordering::Relaxed);
            Outcome::Ok
        } else {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            Outcome::Error(format!("HTTP 200 but not applied: {text}"))
        }
    }
}

/// Opens one Stripe checkout session per user `0..count` at `concurrency`; answers the order
/// ids by user.
async fn open_sessions(
    addr: SocketAddr,
    host: &HeaderValue,
    tokens: &[HeaderValue],
    plan_id: &str,
    count: usize,
    concurrency: usize,
) -> Result<Vec<String>, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let tokens: Arc<Vec<HeaderValue>> = Arc::new(tokens[..count].to_vec());
    let body = Arc::new(json!({
        "channel": "stripe", "type": "subscription", "plan_id": plan_id,
        "success_url": "https://bench.example/ok", "cancel_url": "https://bench.example/billing",
    }));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let (next, tokens, body, host) = (next.clone(), tokens.clone(), body.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = load::connect(addr).await?;
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(token) = tokens.get(i) else {
                    return Ok::<_, String>(out);
                };
                let (status, answer) = call_json(
                    &mut sender,
                    &host,
                    Method::POST,
                    "/payment/create-session",
                    token,
                    Some(&body),
                )
                .await?;
                let order = answer["data"]["order_id"].as_str().map(str::to_owned);
                match (status, order) {
                    (StatusCode::OK, Some(order)) => out.push((i, order)),
                    _ => {
                        return Err(format!(
                            "POST /payment/create-session answered {status}: {answer}"
                        ));
                    }
                }
            }
        }));
    }
    let mut orders = vec![String::new(); count];
    for t in tasks {
        for (i, order) in t.await.map_err(|e| format!("seeding task failed: {e}"))?? {
            orders[i] = order;
        }
    }
    Ok(orders)
}

/// Whether exactly `applied` `subscription` transactions exist: the admin listing at offset
/// `applied - 1` must hold one row and nothing after it. Answers a description.
async fn count_grants(
    addr: SocketAddr,
    host: &HeaderValue,
    admin: &HeaderValue,
    applied: u64,
) -> Result<(bool, String), String> {
    let mut sender = load::connect(addr).await?;
    let offset = applied.saturating_sub(1);
    let path = format!("/admin/credits/transactions?type=subscription&limit=1&offset={offset}");
    let (status, answer) = call_json(&mut sender, host, Method::GET, &path, admin, None).await?;
    if status != StatusCode::OK {
        return Err(format!("GET {path} answered {status}: {answer}"));
    }
    let rows = answer["data"].as_array().map_or(0, Vec::len);
    let more = answer["meta"]["has_more"].as_bool().unwrap_or(true);
    let expected_rows = usize::from(applied > 0);
    Ok(if rows == expected_rows && !more {
        (
            true,
            format!("{applied} events applied, {applied} subscription transactions: equal"),
        )
    } else {
        (
            false,
            format!(
                "{applied} events applied, but GET {path} found {rows} row(s), has_more {more}: \
                 the subscription transactions are not one per applied event"
            ),
        )
    })
}

/// The `webhook` scenario, on a database and server of its own.
pub async fn scenario(
    ctx: &Ctx<'_>,
    dbs: &mut db::Databases,
    report: &mut crate::report::Report,
    tokens: &[HeaderValue],
) -> Result<(), String> {
    let cli = ctx.cli;
    let url = dbs.create("webhook").await?;
    let me = std::env::current_exe().map_err(|e| format!("locating tally-bench: {e}"))?;
    let double_port = crate::server::free_port()?;
    let double = ServerProcess::start(Spawn {
        name: "Stripe double",
        program: &me,
        args: vec!["--serve-stripe-double".into(), double_port.to_string()],
        env: Vec::new(),
        port: double_port,
        ready_path: "/healthz",
        log: dbs.dir().join("stripe-double.log"),
    })
    .await?;
    let webhook_secret = format!("whsec_bench_{}", hex::encode(rand::random::<[u8; 16]>()));
    let extra = [
        ("TALLY_STRIPE_SECRET_KEY", "sk_test_bench".to_owned()),
        ("TALLY_STRIPE_WEBHOOK_SECRET", webhook_secret.clone()),
        (
            "TALLY_STRIPE_API_BASE",
            format!("http://127.0.0.1:{double_port}"),
        ),
        ("TALLY_ALLOWED_REDIRECT_HOSTS", "bench.example".to_owned()),
    ];
    let srv = ctx
        .start_tally(&url, dbs.dir().join("tally-webhook.log"), &extra)
        .await?;
    let host = Ctx::host(srv.addr)?;
    let admin = admin_token(&ctx.secret)?;

    // Seed: the plan, then one pending Stripe subscription order per user.
    let mut sender = load::connect(srv.addr).await?;
    let plan = json!({
        "name": "Bench Pro", "kind": "subscription", "currency": "usd", "price_monthly": 999,
        "credits_included": PLAN_CREDITS, "stripe_price_id_monthly": "price_bench_monthly",
    });
    let (status, answer) = call_json(
        &mut sender,
        &host,
        Method::POST,
        "/admin/billing/plans",
        &admin,
        Some(&plan),
    )
    .await?;
    let plan_id = match (status, answer["data"]["id"].as_str()) {
        (StatusCode::OK, Some(id)) => id.to_owned(),
        _ => {
            return Err(format!(
                "POST /admin/billing/plans answered {status}: {answer}"
            ));
        }
    };
    drop(sender);
    let count = cli.users.min(MAX_SUBSCRIPTIONS).min(tokens.len());
    eprintln!(
        "tally-bench: webhook: opening {count} Stripe checkout sessions through POST /payment/create-session …"
    );
    let t0 = Instant::now();
    let orders = open_sessions(srv.addr, &host, tokens, &plan_id, count, cli.concurrency).await;
    let took = t0.elapsed();
    double.stop().await?;
    let orders = orders?;
    report.setup.push(format!(
        "webhook database: a subscription plan ({PLAN_CREDITS} credits a period) and {count} \
         pending Stripe orders via POST /payment/create-session (against a local Stripe double) \
         in {:.1} s ({:.0} sessions/s at concurrency {})",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64().max(1e-9),
        cli.concurrency
    ));
    eprintln!(
        "tally-bench: {}",
        report.setup.last().map_or("", String::as_str)
    );
    db::analyze(cli.db, &url).await?;

    let applied = Arc::new(AtomicU64::new(0));
    let answer_bytes = Arc::new(AtomicUsize::new(0));
    let renewals = Renewals {
        host: host.clone(),
        webhook_secret,
        periods: orders.iter().map(|_| AtomicU32::new(0)).collect(),
        orders,
        next: AtomicU64::new(0),
        tag: ctx.run_tag.clone(),
        period_base: unix_now() - 60,
        applied: applied.clone(),
        answer_bytes: answer_bytes.clone(),
    };
    let measured = ctx
        .http_row("webhook", &srv, Workload::Webhook(renewals), true)
        .await;
    let check = match &measured {
        Ok(_) => Some(count_grants(srv.addr, &host, &admin, applied.load(Ordering::Relaxed)).await),
        Err(_) => None,
    };
    report.server_log_problems.extend(srv.logged_problems());
    srv.stop().await?;
    let mut row = measured?;
    let (matched, check) = check.unwrap_or_else(|| Err("no run".into()))?;
    report.setup.push(format!("webhook: {check}"));
    eprintln!("tally-bench:   {check}");

    if find(&report.rows, "baseline-http").is_none() {
        // Run alone: the bare server answers a body of the webhook answer's size.
        let size = answer_bytes.load(Ordering::Relaxed).max(2);
        let bare = ctx
            .baseline_http_row(
                dbs.dir(),
                size,
                tokens,
                "the webhook answer's size; run after `webhook`",
            )
            .await?;
        report.rows.push(bare);
    }
    row.compare(find(&report.rows, "baseline-http"), "baseline-http", None);
    row.note = Some(format!(
        "{count} subscriptions, random one per event; {}",
        if matched {
            "one subscription grant per applied event"
        } else {
            "subscription grants do NOT match applied events"
        }
    ));
    report.rows.push(row);
    crate::verify(ctx, report, "webhook", &url).await?;
    if !matched {
        return Err(check);
    }
    Ok(())
}
