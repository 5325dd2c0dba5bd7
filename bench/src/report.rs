//! The results: one table on stdout and the same rows as JSON.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::load::LoadResult;

/// Peak RSS the server should stay under, MiB.
pub const RSS_TARGET_MIB: f64 = 60.0;

/// The console pages' latency target (p99), ms; those rows answer to it, not to the RSS target
/// of the API's own scenarios.
pub const CONSOLE_P99_TARGET_MS: f64 = 50.0;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario name, e.g. `balance`, `baseline-db:consume`, `growth:history`.
    pub scenario: String,
    /// `ok`, or why it did not run.
    pub status: String,
    /// Operations completed in the measured window.
    pub requests: u64,
    /// Measured window, seconds.
    pub window_seconds: f64,
    /// Operations per second.
    pub requests_per_second: Option<f64>,
    /// Median latency, ms.
    pub p50_ms: Option<f64>,
    /// 90th percentile latency, ms.
    pub p90_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub p99_ms: Option<f64>,
    /// Slowest operation, ms.
    pub max_ms: Option<f64>,
    /// Unexpected statuses and failures (warm-up included).
    pub errors: u64,
    /// A few of them.
    pub error_samples: Vec<String>,
    /// The row this one is compared with.
    pub baseline: Option<String>,
    /// Its operations per second.
    pub baseline_requests_per_second: Option<f64>,
    /// This row's rate divided by the baseline's.
    pub ratio: Option<f64>,
    /// The ratio the target asks for.
    pub target_ratio: Option<f64>,
    /// Whether the ratio meets it.
    pub target_met: Option<bool>,
    /// Server peak RSS (VmHWM) during this scenario, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Server CPU seconds (user + system) per 1,000 operations.
    pub cpu_seconds_per_1000: Option<f64>,
    /// Anything worth knowing about the row.
    pub note: Option<String>,
}

impl Row {
    /// A row from a measured run.
    pub fn measured(scenario: &str, r: &LoadResult, peak_rss_kib: Option<u64>) -> Self {
        let cpu = r
            .server_cpu_seconds
            .and_then(|cpu| (r.completed > 0).then(|| cpu / (r.completed as f64 / 1000.0)));
        Self {
            scenario: scenario.to_owned(),
            status: "ok".into(),
            requests: r.completed,
            window_seconds: r.window.as_secs_f64(),
            requests_per_second: Some(r.rate()),
            p50_ms: r.percentile_ms(50.0),
            p90_ms: r.percentile_ms(90.0),
            p99_ms: r.percentile_ms(99.0),
            max_ms: r.latencies_us.last().map(|&us| f64::from(us) / 1000.0),
            errors: r.errors,
            error_samples: r.error_samples.clone(),
            baseline: None,
            baseline_requests_per_second: None,
            ratio: None,
            target_ratio: None,
            target_met: None,
            peak_rss_mib: peak_rss_kib.map(|k| k as f64 / 1024.0),
            cpu_seconds_per_1000: cpu,
            note: None,
        }
    }

    /// Compares with `baseline` (when it ran) against a target ratio.
    pub fn compare(&mut self, baseline: Option<&Row>, name: &str, target: Option<f64>) {
        self.baseline = Some(name.to_owned());
        self.target_ratio = target;
        let Some(b) = baseline.and_then(|b| b.requests_per_second) else {
            return;
        };
        self.baseline_requests_per_second = Some(b);
        if let (Some(rate), true) = (self.requests_per_second, b > 0.0) {
            let ratio = rate / b;
            self.ratio = Some(ratio);
            self.target_met = target.map(|t| ratio >= t);
        }
    }
}

/// Everything a run reports.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `sqlite` or `postgres`.
    pub database: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// The machine.
    pub machine: Machine,
    /// How the run was set up.
    pub settings: serde_json::Value,
    /// Seeding and preloading.
    pub setup: Vec<String>,
    /// The rows, in the order they ran.
    pub rows: Vec<Row>,
    /// `tally verify` results.
    pub verify: Vec<Verify>,
    /// Warnings and errors the servers logged.
    pub server_log_problems: Vec<String>,
    /// Targets and whether they were met.
    pub summary: Vec<String>,
    /// Why the run stopped early, if it did.
    pub failure: Option<String>,
}

/// One `tally verify`.
#[derive(Debug, Serialize)]
pub struct Verify {
    /// Which database.
    pub database: String,
    /// Whether it passed.
    pub passed: bool,
    /// Seconds it took.
    pub seconds: f64,
    /// What it printed.
    pub output: String,
}

/// The machine the numbers come from.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// `/proc/cpuinfo` model name.
    pub cpu: String,
    /// Logical CPUs.
    pub cores: usize,
    /// `/proc/meminfo` MemTotal, MiB.
    pub memory_mib: u64,
    /// 1-minute load average when the run started.
    pub load_average_at_start: String,
}

impl Machine {
    /// Reads `/proc`.
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_mib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |k| k / 1024);
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default();
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib,
            load_average_at_start: load,
        }
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

impl Report {
    /// Works out the summary lines from the rows.
    pub fn summarise(&mut self) {
        let mut lines = Vec::new();
        for r in &self.rows {
            if let (Some(t), Some(ratio)) = (r.target_ratio, r.ratio) {
                lines.push(format!(
                    "{}: {:.0}% of {} (target ≥ {:.0}%): {}",
                    r.scenario,
                    ratio * 100.0,
                    r.baseline.as_deref().unwrap_or("?"),
                    t * 100.0,
                    if ratio >= t { "met" } else { "MISSED" }
                ));
            }
        }
        let peak = self
            .rows
            .iter()
            .filter(|r| !r.scenario.starts_with("baseline") && !is_console(r))
            .filter_map(|r| r.peak_rss_mib)
            .fold(None::<f64>, |m, v| Some(m.map_or(v, |m| m.max(v))));
        if let Some(p) = peak {
            lines.push(format!(
                "tally peak RSS: {p:.1} MiB (target < {RSS_TARGET_MIB:.0} MiB): {}",
                if p < RSS_TARGET_MIB { "met" } else { "MISSED" }
            ));
        }
        for r in self.rows.iter().filter(|r| is_console(r)) {
            if let Some(p99) = r.p99_ms {
                lines.push(format!(
                    "{} p99: {p99:.1} ms (target < {CONSOLE_P99_TARGET_MS:.0} ms): {}",
                    r.scenario,
                    if p99 < CONSOLE_P99_TARGET_MS {
                        "met"
                    } else {
                        "MISSED"
                    }
                ));
            }
        }
        let errors: u64 = self.rows.iter().map(|r| r.errors).sum();
        lines.push(format!(
            "unexpected errors: {errors} (target 0): {}",
            if errors == 0 { "met" } else { "MISSED" }
        ));
        for v in &self.verify {
            lines.push(format!(
                "tally verify on the {} database: {}",
                v.database,
                if v.passed { "passed" } else { "FAILED" }
            ));
        }
        self.summary = lines;
    }

    /// The table, as printed.
    pub fn table(&self) -> String {
        let header = [
            "scenario",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "baseline",
            "base req/s",
            "ratio",
            "target",
            "peak RSS MiB",
            "CPU s/1k req",
        ];
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut notes = Vec::new();
        for r in &self.rows {
            if r.status != "ok" {
                let mut cells = vec![r.scenario.clone(), "skipped".to_owned()];
                cells.resize(header.len(), "-".to_owned());
                rows.push(cells);
                notes.push(format!("{}: {}", r.scenario, r.status));
                continue;
            }
            rows.push(vec![
                r.scenario.clone(),
                num(r.requests_per_second, 0),
                num(r.p50_ms, 2),
                num(r.p99_ms, 2),
                r.errors.to_string(),
                r.baseline.clone().unwrap_or_else(|| "-".into()),
                num(r.baseline_requests_per_second, 0),
                r.ratio
                    .map_or_else(|| "-".into(), |v| format!("{:.0}%", v * 100.0)),
                match (r.target_ratio, r.target_met) {
                    (Some(t), Some(true)) => format!("≥{:.0}% met", t * 100.0),
                    (Some(t), Some(false)) => format!("≥{:.0}% MISSED", t * 100.0),
                    (Some(t), None) => format!("≥{:.0}%", t * 100.0),
                    _ => "-".into(),
                },
                num(r.peak_rss_mib, 1),
                num(r.cpu_seconds_per_1000, 3),
            ]);
            if let Some(n) = &r.note {
                notes.push(format!("{}: {n}", r.scenario));
            }
        }
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (i, c) in row.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String| {
            out.push('|');
            for (i, c) in cells.iter().enumerate() {
                let pad = " ".repeat(widths[i].saturating_sub(c.chars().count()));
                // Names left-aligned, figures right-aligned.
                if matches!(i, 0 | 5 | 8) {
                    let _ = write!(out, " {c}{pad} |");
                } else {
                    let _ = write!(out, " {pad}{c} |");
                }
            }
            out.push('\n');
        };
        let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
        line(&header, &mut out);
        let rule: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if matches!(i, 0 | 5 | 8) {
                    "-".repeat(*w)
                } else {
                    format!("{}:", "-".repeat(w.saturating_sub(1)))
                }
            })
            .collect();
        line(&rule, &mut out);
        for row in &rows {
            line(row, &mut out);
        }
        for n in notes {
            let _ = writeln!(out, "\n{n}");
        }
        out
    }

    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> Result<(), String> {
        let text =
            serde_json::to_string_pretty(self).map_err(|e| format!("encoding the report: {e}"))?;
        std::fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))
    }
}

/// A console page's row.
fn is_console(row: &Row) -> bool {
    row.scenario.contains(":console-")
}
