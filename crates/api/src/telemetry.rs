//! Request ids, access logs, Prometheus metrics, and the envelope for responses that did not
//! come from a handler (unknown routes, wrong methods).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, web};
use tracing::Instrument;

use crate::error::ErrorCode;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served on this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default, Clone)]
struct Series {
    count: u64,
    sum_seconds: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Pool gauges supplied by the composition root: `(pool, open, idle, max)`.
pub type PoolGauges = Arc<dyn Fn() -> Vec<(&'static str, usize, usize, usize)> + Send + Sync>;

/// The write-batch histogram supplied by the composition root: `(upper bound, batches)` per
/// bucket (not cumulative), and the writes in all batches.
pub type BatchSizes = Arc<dyn Fn() -> (Vec<(u64, u64)>, u64) + Send + Sync>;

/// The runs of writes PostgreSQL's batches tried to apply together, supplied by the composition
/// root: `(kind, applied together, sent back to one write at a time)` per kind.
pub type BatchUnits = Arc<dyn Fn() -> Vec<(&'static str, u64, u64)> + Send + Sync>;

/// How long after a transaction's instant it is counted in `tally_credits_total`. A
/// transaction's instant is read before its write queues and commits; one that commits later
/// than this after it (or on a node whose clock runs this much behind) falls into a range
/// already counted and is left out. The ledger itself, and `/admin/stats`, stay exact.
const SETTLE: time::Duration = time::Duration::seconds(60);

/// The credits series: what has been counted, up to which instant.
#[derive(Debug, Default)]
struct CreditTally {
    /// Transactions recorded before this instant are counted.
    until: Option<time::OffsetDateTime>,
    /// `(app, type)` → (credits in, credits out, transactions).
    totals: BTreeMap<(String, &'static str), (i64, i64, i64)>,
}

/// Request counters and latency histograms by route, method and status.
///
/// Each server thread records into a shard of its own (a thread picks one the first time it
/// records), so the workers never wait on each other's lock; a scrape merges the shards.
pub struct Metrics {
    shards: Box<[Mutex<Shard>]>,
    pools: PoolGauges,
    batches: Option<BatchSizes>,
    units: Option<BatchUnits>,
    /// Error answers by code.
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Provider webhooks by (channel, outcome).
    provider_webhooks: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Held across its database read, so that two scrapes never count one range twice.
    credits: tokio::sync::Mutex<CreditTally>,
}

/// One shard: route → (method, status, series). A request finds its entry without allocating.
type Shard = HashMap<String, Vec<(Method, u16, Series)>>;

const SHARDS: usize = 16;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Empty metrics reading pool gauges from `pools`.
    pub fn new(pools: PoolGauges) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            pools,
            batches: None,
            units: None,
            errors: Mutex::default(),
            provider_webhooks: Mutex::default(),
            credits: tokio::sync::Mutex::default(),
        }
    }

    /// Also exposes the write-batch histogram `batches` reads.
    pub fn with_batches(mut self, batches: BatchSizes) -> Self {
        self.batches = Some(batches);
        self
    }

    /// Also exposes the runs of writes applied together that `units` reads.
    pub fn with_batch_units(mut self, units: BatchUnits) -> Self {
        self.units = Some(units);
        self
    }

    fn record_error(&self, code: ErrorCode) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(code.as_str()).or_default() += 1;
    }

    /// Counts a provider webhook by channel and outcome (`applied`, `duplicate`, `ignored`,
    /// `unmatched`, `refused` for a 4xx answer, `failed` for a 5xx one).
    pub fn record_provider_webhook(&self, channel: &'static str, outcome: &'static str) {
        let mut counts = self
            .provider_webhooks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *counts.entry((channel, outcome)).or_default() += 1;
    }

    fn record(&self, route: String, method: &Method, status: u16, seconds: f64) {
        let shard = &self.shards[SHARD.with(|s| *s)];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let entries = match map.get_mut(route.as_str()) {
            Some(entries) => entries,
            None => map.entry(route).or_default(),
        };
        let i = match entries
            .iter()
            .position(|(m, st, _)| m == method && *st == status)
        {
            Some(i) => i,
            None => {
                entries.push((method.clone(), status, Series::default()));
                entries.len() - 1
            }
        };
        let s = &mut entries[i].2;
        s.count += 1;
        s.sum_seconds += seconds;
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                s.buckets[i] += 1;
            }
        }
    }

    /// Every series, merged over the shards.
    fn merged(&self) -> BTreeMap<(String, String, u16), Series> {
        let mut all: BTreeMap<(String, String, u16), Series> = BTreeMap::new();
        for shard in self.shards.iter() {
            let map = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (route, entries) in map.iter() {
                for (method, status, s) in entries {
                    let t = all
                        .entry((route.clone(), method.as_str().to_owned(), *status))
                        .or_default();
                    t.count += s.count;
                    t.sum_seconds += s.sum_seconds;
                    for (a, b) in t.buckets.iter_mut().zip(s.buckets) {
                        *a += b;
                    }
                }
            }
        }
        all
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let map = self.merged();
        let keys: Vec<_> = map.keys().cloned().collect();
        out.push_str("# HELP tally_http_requests_total HTTP requests served.\n");
        out.push_str("# TYPE tally_http_requests_total counter\n");
        for k in &keys {
            let s = &map[k];
            let _ = writeln!(
                out,
                "tally_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{}\"}} {}",
                k.0, k.1, k.2, s.count
            );
        }
        out.push_str("# HELP tally_http_request_duration_seconds HTTP request latency.\n");
        out.push_str("# TYPE tally_http_request_duration_seconds histogram\n");
        for k in &keys {
            let s = &map[k];
            let labels = format!("route=\"{}\",method=\"{}\",status=\"{}\"", k.0, k.1, k.2);
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "tally_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "tally_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "tally_http_request_duration_seconds_sum{{{labels}}} {}",
                s.sum_seconds
            );
            let _ = writeln!(
                out,
                "tally_http_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        self.render_counters(&mut out);
        out.push_str("# HELP tally_db_pool_connections Database pool connections by state.\n");
        out.push_str("# TYPE tally_db_pool_connections gauge\n");
        for (pool, open, idle, max) in (self.pools)() {
            for (state, v) in [("open", open), ("idle", idle), ("max", max)] {
                let _ = writeln!(
                    out,
                    "tally_db_pool_connections{{pool=\"{pool}\",state=\"{state}\"}} {v}"
                );
            }
        }
        out
    }
}

impl Metrics {
    /// Error answers, provider webhooks and write batches.
    fn render_counters(&self, out: &mut String) {
        use std::fmt::Write;
        out.push_str("# HELP tally_errors_total Error answers by error code.\n");
        out.push_str("# TYPE tally_errors_total counter\n");
        for (code, n) in self.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "tally_errors_total{{code=\"{code}\"}} {n}");
        }
        out.push_str(
            "# HELP tally_provider_webhooks_total Provider webhooks by channel and outcome.\n",
        );
        out.push_str("# TYPE tally_provider_webhooks_total counter\n");
        let webhooks = self
            .provider_webhooks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for ((channel, outcome), n) in webhooks.iter() {
            let _ = writeln!(
                out,
                "tally_provider_webhooks_total{{channel=\"{channel}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        drop(webhooks);
        if let Some(batches) = &self.batches {
            let (buckets, writes) = batches();
            out.push_str("# HELP tally_write_batch_size Writes per batch (SQLite group commit, PostgreSQL batches).\n");
            out.push_str("# TYPE tally_write_batch_size histogram\n");
            let mut cumulative = 0;
            for (le, n) in &buckets {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "tally_write_batch_size_bucket{{le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "tally_write_batch_size_bucket{{le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(out, "tally_write_batch_size_sum {writes}");
            let _ = writeln!(out, "tally_write_batch_size_count {cumulative}");
        }
        if let Some(units) = &self.units {
            out.push_str(
                "# HELP tally_write_batch_units_total Runs of writes of one kind a PostgreSQL \
                 batch tried to apply together: applied so, or sent back to one at a time.\n",
            );
            let series = "tally_write_batch_units_total";
            let _ = writeln!(out, "# TYPE {series} counter");
            for (kind, together, alone) in units() {
                for (outcome, n) in [("together", together), ("one_at_a_time", alone)] {
                    let _ = writeln!(out, "{series}{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}");
                }
            }
        }
    }

    /// The series read from the database at scrape time: credits moved (counted once, as their
    /// transactions settle) and the outbound delivery backlog. A failed read leaves its series
    /// out of this scrape and is logged.
    pub async fn render_business(
        &self,
        ledger: &tally_ledger::Ledger,
        webhooks: &tally_webhooks::Webhooks,
    ) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let now = ledger.now();
        let mut tally = self.credits.lock().await;
        let until = now - SETTLE;
        let from = *tally.until.get_or_insert(until);
        let read = if until > from {
            ledger.credit_flows(from, until).await.map(Some)
        } else {
            Ok(None)
        };
        match read {
            Ok(flows) => {
                for f in flows.into_iter().flatten() {
                    let t = tally
                        .totals
                        .entry((f.app, f.txn_type.as_str()))
                        .or_default();
                    t.0 += f.credited;
                    t.1 += f.debited;
                    t.2 += f.count;
                }
                tally.until = Some(until.max(from));
                out.push_str("# HELP tally_credits_total Credits moved by transactions, by app, type and direction (in: added, out: taken), read from the database, counted from this node's first scrape.\n");
                out.push_str("# TYPE tally_credits_total counter\n");
                for ((app, kind), (credited, debited, _)) in &tally.totals {
                    for (direction, v) in [("in", credited), ("out", debited)] {
                        let _ = writeln!(
                            out,
                            "tally_credits_total{{app=\"{app}\",type=\"{kind}\",direction=\"{direction}\"}} {v}"
                        );
                    }
                }
                out.push_str("# HELP tally_transactions_total Transactions recorded, by app and type, counted as tally_credits_total is.\n");
                out.push_str("# TYPE tally_transactions_total counter\n");
                for ((app, kind), (_, _, n)) in &tally.totals {
                    let _ = writeln!(
                        out,
                        "tally_transactions_total{{app=\"{app}\",type=\"{kind}\"}} {n}"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: reading the credits moved failed"),
        }
        drop(tally);
        match webhooks.backlog().await {
            Ok(b) => {
                out.push_str("# HELP tally_webhook_deliveries Outbound webhook deliveries by state: pending (to be attempted) and failed (given up).\n");
                out.push_str("# TYPE tally_webhook_deliveries gauge\n");
                let _ = writeln!(
                    out,
                    "tally_webhook_deliveries{{state=\"pending\"}} {}",
                    b.pending
                );
                let _ = writeln!(
                    out,
                    "tally_webhook_deliveries{{state=\"failed\"}} {}",
                    b.failed
                );
                let age = b
                    .oldest_pending
                    .map_or(0.0, |t| (now - t).as_seconds_f64().max(0.0));
                out.push_str("# HELP tally_webhook_oldest_pending_seconds Age of the oldest pending delivery; 0 when none is pending.\n");
                out.push_str("# TYPE tally_webhook_oldest_pending_seconds gauge\n");
                let _ = writeln!(out, "tally_webhook_oldest_pending_seconds {age}");
            }
            Err(e) => tracing::warn!(error = %e, "metrics: reading the delivery backlog failed"),
        }
        out
    }
}

fn incoming_id(req: &ServiceRequest) -> Option<String> {
    let v = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| v.to_owned())
}

fn new_id() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

/// Middleware: request id on every response and log line, one access log line, metrics.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let id = incoming_id(&req).unwrap_or_else(new_id);
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let start = Instant::now();
    // `app` and `user` are recorded by the authentication extractors, `error_code` below.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = %route,
        app = tracing::field::Empty,
        user = tracing::field::Empty,
        error_code = tracing::field::Empty,
    );
    let result = REQUEST_ID
        .scope(id.clone(), next.call(req).instrument(span.clone()))
        .await;
    // Every error body is written where the error arises (an `ApiError`, an extractor's error
    // handler, a page); nothing here rewrites a response.
    let mut res = result?.map_into_boxed_body();
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let status = res.status().as_u16();
    let seconds = start.elapsed().as_secs_f64();
    let code = res.response().extensions().get::<ErrorCode>().copied();
    if let Some(code) = code {
        span.record("error_code", code.as_str());
    }
    if let Some(m) = metrics {
        m.record(route, &method, status, seconds);
        if let Some(code) = code {
            m.record_error(code);
        }
    }
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = (seconds * 1000.0 * 1000.0).round() / 1000.0,
            "request served"
        );
    });
    Ok(res)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use actix_web::http::Method;

    use super::Metrics;

    #[test]
    fn series_recorded_on_many_threads_add_up() {
        let metrics = Arc::new(Metrics::new(Arc::new(Vec::new)));
        let threads: Vec<_> = (0..20)
            .map(|i| {
                let m = metrics.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        m.record("/credits/balance".into(), &Method::GET, 200, 0.0007);
                    }
                    if i == 0 {
                        m.record("/credits/balance".into(), &Method::GET, 401, 3.0);
                        m.record("/checkin".into(), &Method::POST, 200, 0.02);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = metrics.render();
        let ok = "route=\"/credits/balance\",method=\"GET\",status=\"200\"";
        assert!(
            text.contains(&format!("tally_http_requests_total{{{ok}}} 1000\n")),
            "{text}"
        );
        // 0.0007 s falls in every bucket from 1 ms up, none below.
        assert!(
            text.contains(&format!(
                "tally_http_request_duration_seconds_bucket{{{ok},le=\"0.0005\"}} 0\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "tally_http_request_duration_seconds_bucket{{{ok},le=\"0.001\"}} 1000\n"
            )),
            "{text}"
        );
        let slow = "route=\"/credits/balance\",method=\"GET\",status=\"401\"";
        assert!(
            text.contains(&format!(
                "tally_http_request_duration_seconds_bucket{{{slow},le=\"+Inf\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(
                "tally_http_requests_total{route=\"/checkin\",method=\"POST\",status=\"200\"} 1\n"
            ),
            "{text}"
        );
        // Series come out sorted: /checkin before /credits/balance.
        let checkin = text.find("route=\"/checkin\"").unwrap();
        let balance = text.find("route=\"/credits/balance\"").unwrap();
        assert!(checkin < balance, "{text}");
    }
}
