//! The load driver: `concurrency` workers, each with its own driver (one keep-alive HTTP/1.1
//! connection, or one database task), issuing one operation after another until the deadline,
//! and recording every operation's latency.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::workload::Workload;

/// What one operation came to.
#[derive(Debug)]
pub enum Outcome {
    /// The expected answer.
    Ok,
    /// Anything else: an unexpected status, a transport or database error.
    Error(String),
    /// The workload has nothing left to do for this worker (check-in: every user checked in).
    Exhausted,
}

/// One worker's way of doing an operation.
pub trait Driver: Send + 'static {
    /// Gets ready (connects) before the clock starts.
    fn prepare(&mut self) -> impl Future<Output = Result<(), String>> + Send;
    /// Performs one operation.
    fn call(&mut self) -> impl Future<Output = Outcome> + Send;
}

/// Latencies and counts of one measured run.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Operations that completed inside the measured window.
    pub completed: u64,
    /// Unexpected outcomes over the whole run (warm-up included).
    pub errors: u64,
    /// A few unexpected outcomes, for the report.
    pub error_samples: Vec<String>,
    /// Per-operation latency in microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// Length of the measured window.
    pub window: Duration,
    /// Server CPU seconds spent in the window, when a server process was watched.
    pub server_cpu_seconds: Option<f64>,
}

impl LoadResult {
    /// Operations per second over the window.
    pub fn rate(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.completed as f64 / secs
        } else {
            0.0
        }
    }

    /// A latency percentile in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.latencies_us.len() as f64).ceil() as usize;
        let idx = rank.clamp(1, self.latencies_us.len()) - 1;
        Some(f64::from(self.latencies_us[idx]) / 1000.0)
    }
}

struct WorkerStats {
    completed: u64,
    errors: u64,
    samples: Vec<String>,
    latencies_us: Vec<u32>,
    last_done: Option<Instant>,
}

/// How long and how hard to drive.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Parallel workers.
    pub concurrency: usize,
    /// Unmeasured lead-in.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
}

/// Runs `plan.concurrency` drivers made by `make` until the window closes (or every driver is
/// exhausted). `cpu` reads the watched server's CPU seconds, sampled when the window opens and
/// when it closes.
pub async fn run<D, F>(
    plan: Plan,
    make: F,
    cpu: impl Fn() -> Option<f64>,
) -> Result<LoadResult, String>
where
    D: Driver,
    F: Fn(usize) -> D,
{
    let mut drivers = Vec::with_capacity(plan.concurrency);
    for i in 0..plan.concurrency.max(1) {
        let mut d = make(i);
        d.prepare().await?;
        drivers.push(d);
    }
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let deadline = measure_from + plan.duration;
    let mut handles = Vec::with_capacity(drivers.len());
    for mut driver in drivers {
        handles.push(tokio::spawn(async move {
            let mut s = WorkerStats {
                completed: 0,
                errors: 0,
                samples: Vec::new(),
                latencies_us: Vec::with_capacity(4096),
                last_done: None,
            };
            loop {
                let t0 = Instant::now();
                if t0 >= deadline {
                    break;
                }
                let outcome = driver.call().await;
                let t1 = Instant::now();
                match outcome {
                    Outcome::Exhausted => break,
                    Outcome::Ok => {}
                    Outcome::Error(e) => {
                        s.errors += 1;
                        if s.samples.len() < 3 {
                            s.samples.push(e);
                        }
                    }
                }
                if t1 >= measure_from && t1 <= deadline {
                    s.completed += 1;
                    let us = u32::try_from(t1.duration_since(t0).as_micros()).unwrap_or(u32::MAX);
                    s.latencies_us.push(us);
                    s.last_done = Some(t1);
                }
            }
            s
        }));
    }
    // Sample the server's CPU when the window opens (right away when there is no warm-up).
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_start = cpu();
    let mut result = LoadResult::default();
    let mut last_done = None::<Instant>;
    for h in handles {
        let s = h.await.map_err(|e| format!("load worker failed: {e}"))?;
        result.completed += s.completed;
        result.errors += s.errors;
        for e in s.samples {
            if result.error_samples.len() < 5 {
                result.error_samples.push(e);
            }
        }
        result.latencies_us.extend(s.latencies_us);
        last_done = last_done.max(s.last_done);
    }
    let cpu_end = cpu();
    let end = Instant::now().min(deadline);
    // Exhausted before the deadline: the window ends with the last completed operation.
    let end = match last_done {
        Some(t) if end < deadline => t.max(measure_from),
        _ => end,
    };
    result.window = end.saturating_duration_since(measure_from);
    result.server_cpu_seconds = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => Some((b - a).max(0.0)),
        _ => None,
    };
    result.latencies_us.sort_unstable();
    Ok(result)
}

/// A worker on one keep-alive HTTP/1.1 connection.
pub struct HttpDriver {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
    workload: Arc<Workload>,
    rng: Rng,
    worker: usize,
    seq: u64,
}

impl HttpDriver {
    /// A driver for worker `worker` of `workload` against `addr`.
    pub fn new(addr: SocketAddr, workload: Arc<Workload>, worker: usize) -> Self {
        Self {
            addr,
            sender: None,
            workload,
            rng: Rng::new(worker as u64 + 1),
            worker,
            seq: 0,
        }
    }

    async fn connect(&mut self) -> Result<(), String> {
        let sender = connect(self.addr).await?;
        self.sender = Some(sender);
        Ok(())
    }
}

/// Opens one HTTP/1.1 connection; its I/O runs on a task of its own.
pub async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request on a connection; answers the status and the body.
pub async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

impl Driver for HttpDriver {
    async fn prepare(&mut self) -> Result<(), String> {
        self.connect().await
    }

    async fn call(&mut self) -> Outcome {
        let req = match self.workload.request(&mut self.rng, self.worker, self.seq) {
            Some(Ok(req)) => req,
            Some(Err(e)) => return Outcome::Error(e),
            None => return Outcome::Exhausted,
        };
        self.seq += 1;
        if self.sender.is_none()
            && let Err(e) = self.connect().await
        {
            return Outcome::Error(e);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Outcome::Error("no connection".into());
        };
        match send(sender, req).await {
            Ok((status, body)) if status == StatusCode::OK => self.workload.accept(&body),
            Ok((status, body)) => {
                let body = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                Outcome::Error(format!("HTTP {status}: {body}"))
            }
            Err(e) => {
                // Start over on a fresh connection.
                self.sender = None;
                Outcome::Error(e)
            }
        }
    }
}

/// xorshift64*: cheap, per worker, good enough to pick users.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r % n.max(1) as u64) as usize
    }
}
