//! Server processes under test: `tally serve` and the bare baseline server, started as children
//! and watched through `/proc/<pid>` (peak RSS, CPU time).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HOST;
use hyper::{Request, StatusCode};
use tokio::process::{Child, Command};

use crate::load;

/// The `tally` binary next to this executable (`target/release/tally` beside
/// `target/release/tally-bench`).
pub fn locate_tally(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let me =
                std::env::current_exe().map_err(|e| format!("locating tally-bench itself: {e}"))?;
            let dir = me
                .parent()
                .ok_or("tally-bench has no parent directory")?
                .to_path_buf();
            dir.join(format!("tally{}", std::env::consts::EXE_SUFFIX))
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "the tally binary is missing at {}: build it first with `cargo build --release -p tally` \
             (or `cargo build --release -p tally -p tally-bench`)",
            path.display()
        ))
    }
}

/// A free TCP port on 127.0.0.1 (the listener is closed again, so the child can bind it).
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    Ok(l.local_addr()
        .map_err(|e| format!("finding a free port: {e}"))?
        .port())
}

/// A running child server.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Child,
    pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    log: PathBuf,
}

/// How to start a child server.
#[derive(Debug)]
pub struct Spawn<'a> {
    /// Name in messages.
    pub name: &'a str,
    /// Executable.
    pub program: &'a Path,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment on top of a scrubbed copy of ours (no inherited `TALLY_*`).
    pub env: Vec<(String, String)>,
    /// Port it will listen on.
    pub port: u16,
    /// Path that answers 200 once it is ready.
    pub ready_path: &'static str,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts the child and waits until `ready_path` answers 200 (at most 60 s).
    pub async fn start(spec: Spawn<'_>) -> Result<Self, String> {
        let log = std::fs::File::create(&spec.log)
            .map_err(|e| format!("creating {}: {e}", spec.log.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("creating {}: {e}", spec.log.display()))?;
        let mut cmd = Command::new(spec.program);
        cmd.args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        for (k, _) in std::env::vars() {
            if k.starts_with("TALLY_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {} ({}): {e}", spec.name, spec.program.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| format!("{} exited at once", spec.name))?;
        let mut server = Self {
            name: spec.name.to_owned(),
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], spec.port)),
            log: spec.log,
        };
        server.wait_ready(spec.ready_path).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, path: &'static str) -> Result<(), String> {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited during start-up ({status}); its output:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            if let Ok((StatusCode::OK, _)) = get(self.addr, path).await {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(format!(
                    "{} did not answer {path} within 60 s; its output:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the child has exited, with its exit status and last lines if so.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited ({status}); its output:\n{}",
                self.name,
                self.log_tail()
            )),
            _ => None,
        }
    }

    /// The last lines the child printed.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether the child logged anything at warning level or above (tally logs JSON lines).
    pub fn logged_problems(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
            .take(5)
            .map(|l| l.chars().take(400).collect())
            .collect()
    }

    /// SIGTERM, then up to 30 s for a graceful exit, then SIGKILL.
    pub async fn stop(mut self) -> Result<(), String> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("waiting for {}: {e}", self.name)),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(format!(
                    "{} did not stop within 30 s of SIGTERM; killed",
                    self.name
                ))
            }
        }
    }
}

/// One GET on a fresh connection (readiness checks, single probes).
pub async fn get(addr: SocketAddr, path: &'static str) -> Result<(StatusCode, Bytes), String> {
    request(addr, path, None).await
}

/// One GET with an optional `Authorization` value on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    path: &'static str,
    auth: Option<&hyper::header::HeaderValue>,
) -> Result<(StatusCode, Bytes), String> {
    let mut sender = load::connect(addr).await?;
    let mut b = Request::builder().uri(path).header(HOST, addr.to_string());
    if let Some(a) = auth {
        b = b.header(hyper::header::AUTHORIZATION, a.clone());
    }
    let req = b
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("building a request: {e}"))?;
    load::send(&mut sender, req).await
}

/// One request with a JSON body and an `Authorization` value on a fresh connection (set-up
/// calls).
pub async fn send_json(
    addr: SocketAddr,
    method: hyper::Method,
    path: &'static str,
    auth: &hyper::header::HeaderValue,
    body: String,
) -> Result<(StatusCode, Bytes), String> {
    let mut sender = load::connect(addr).await?;
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string())
        .header(hyper::header::AUTHORIZATION, auth.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("building a request: {e}"))?;
    load::send(&mut sender, req).await
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 if that fails).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// User plus system CPU seconds the process has used, all threads included.
pub fn cpu_seconds(pid: u32, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

/// Peak resident set size so far (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets the peak RSS to the current RSS, so the next reading covers one scenario only.
/// Returns whether the kernel allowed it.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}
