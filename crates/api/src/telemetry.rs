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

/// Request counters and latency histograms by route, method and status.
///
/// Each server thread records into a shard of its own (a thread picks one the first time it
/// records), so the workers never wait on each other's lock; a scrape merges the shards.
pub struct Metrics {
    shards: Box<[Mutex<Shard>]>,
    pools: PoolGauges,
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
        }
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
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
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
    if let Some(m) = metrics {
        m.record(route, &method, status, seconds);
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
