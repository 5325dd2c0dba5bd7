//! Fresh databases for a run (an SQLite file in a temporary directory, or a new PostgreSQL
//! database `tally_bench_<hex>` dropped at the end), the bulk preload, and `tally verify`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tokio::process::Command;

use crate::DbKind;

/// Credits each user is granted by the seed: enough that no benchmark runs out.
pub const SEED_CREDITS: i64 = 1_000_000_000;

/// The databases of one run, removed by [`Databases::cleanup`].
#[derive(Debug)]
pub struct Databases {
    kind: DbKind,
    dir: tempfile::TempDir,
    pg_admin: String,
    tag: String,
    created: Vec<String>,
}

/// `url` with its database name replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> Result<String, String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base
        .find("://")
        .ok_or_else(|| format!("not a PostgreSQL URL: {url}"))?
        + 3;
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

impl Databases {
    /// A fresh set; for PostgreSQL `pg_admin` is where databases are created and dropped.
    pub fn new(kind: DbKind, pg_admin: &str) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("tally-bench-")
            .tempdir()
            .map_err(|e| format!("creating a temporary directory: {e}"))?;
        Ok(Self {
            kind,
            dir,
            pg_admin: pg_admin.to_owned(),
            tag: hex::encode(rand::random::<[u8; 6]>()),
            created: Vec::new(),
        })
    }

    /// The run's scratch directory (SQLite files, server logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new, empty database for `role`; answers its URL.
    pub async fn create(&mut self, role: &str) -> Result<String, String> {
        match self.kind {
            DbKind::Sqlite => {
                let path: PathBuf = self.dir.path().join(format!("{role}.db"));
                Ok(format!("sqlite://{}", path.display()))
            }
            DbKind::Postgres => {
                let name = if role == "main" {
                    format!("tally_bench_{}", self.tag)
                } else {
                    format!("tally_bench_{}_{role}", self.tag)
                };
                let mut conn = AsyncPgConnection::establish(&self.pg_admin)
                    .await
                    .map_err(|e| {
                        format!(
                            "PostgreSQL is not reachable at {} ({e}); pass --pg-url or set \
                         TALLY_BENCH_POSTGRES_URL",
                            redact(&self.pg_admin)
                        )
                    })?;
                conn.batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .map_err(|e| format!("creating database {name}: {e}"))?;
                self.created.push(name.clone());
                with_database(&self.pg_admin, &name)
            }
        }
    }

    /// Drops every database this run created (the temporary directory goes with `self`).
    pub async fn cleanup(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.created.is_empty() {
            return problems;
        }
        match AsyncPgConnection::establish(&self.pg_admin).await {
            Ok(mut conn) => {
                for name in self.created.drain(..) {
                    if let Err(e) = conn
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await
                    {
                        problems.push(format!("dropping database {name}: {e}"));
                    }
                }
            }
            Err(e) => problems.push(format!(
                "reconnecting to drop {}: {e}",
                self.created.join(", ")
            )),
        }
        problems
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Applies the server's migrations (the same embedded ones `tally serve` runs).
pub async fn migrate(url: &str) -> Result<(), String> {
    let store = tally_store::Store::connect(url).await.map_err(|e| {
        format!(
            "connecting to {}: {}",
            redact(url),
            tally_store::error_chain(&e)
        )
    })?;
    store.migrate().await.map_err(|e| {
        format!(
            "migrating {}: {}",
            redact(url),
            tally_store::error_chain(&e)
        )
    })?;
    Ok(())
}

const REQUEST_HASH: &str = "5e1f4b0a6c3d2e8f9a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f";

/// `t` in UTC as `YYYY-MM-DD HH:MM:SS`, the text both backends read as a `TIMESTAMP`.
pub fn timestamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Writes, with bulk `INSERT … SELECT` statements (one per round of users, rows generated by
/// the database itself), `users` accounts holding a history of `total` transactions each: a
/// `reward` grant of [`SEED_CREDITS`] with its lot, then `total − 1` `ai_usage` debits of 1
/// credit. This call writes rounds `rounds` of that history (starting at 0 creates the accounts
/// and lots; a later range tops an earlier preload up) and leaves every ledger invariant holding:
/// balances, `balance_after` running sums, the lot remainder, one movement per idempotency key.
/// Ids interleave users the way real traffic does (round `k` of user `a` is id `k·users + a`),
/// so one user's rows are spread out; round `k` is stamped `(total − k)/total` of 29 days before
/// now, so the rows cover a month.
pub async fn preload(
    kind: DbKind,
    url: &str,
    users: usize,
    rounds: std::ops::Range<u64>,
    total: u64,
) -> Result<Duration, String> {
    let started = Instant::now();
    let fresh = rounds.start == 0;
    if fresh {
        migrate(url).await?;
    }
    let total = total.max(rounds.end).max(1);
    let u = users as u64;
    let end = rounds.end.max(1);
    let balance = SEED_CREDITS - (end as i64 - 1);
    let now = time::OffsetDateTime::now_utc();
    // History ends a minute before the first call and spreads its rounds evenly over the 29
    // days before, as a month of real traffic would: the statistics then have finished days
    // to roll up and today's rows to count.
    let span = 29 * 86_400;
    let at = |k: u64| {
        let back = (total - k) as i64 * span / total as i64;
        timestamp(now - time::Duration::seconds(back + 60))
    };
    let t0 = at(0);
    let tn = at(end - 1);
    let mut statements = Vec::new();
    match kind {
        DbKind::Sqlite => {
            let users_cte = format!(
                "WITH RECURSIVE s(a) AS (SELECT 1 UNION ALL SELECT a + 1 FROM s WHERE a < {u})"
            );
            let user = "printf('user-%05d', a - 1)";
            if fresh {
                statements.push(format!(
                    "INSERT INTO accounts (id, app_key, user_id, balance, held, created_at, updated_at) \
                     {users_cte} SELECT a, 'default', {user}, {balance}, 0, '{t0}', '{tn}' FROM s"
                ));
            }
            for k in rounds.clone() {
                statements.push(txn_round(&users_cte, "s", user, k, u, &at(k), ""));
            }
            if fresh {
                statements.push(format!(
                    "INSERT INTO lots (id, account_id, transaction_id, source, amount, remaining, expires_at, created_at) \
                     {users_cte} SELECT a, a, a, 'reward', {SEED_CREDITS}, {balance}, NULL, '{t0}' FROM s"
                ));
            } else {
                statements.push(format!(
                    "UPDATE accounts SET balance = {balance}, updated_at = '{tn}'"
                ));
                statements.push(format!("UPDATE lots SET remaining = {balance}"));
            }
            run_bulk(kind, url, statements).await?;
        }
        DbKind::Postgres => {
            let user = "'user-' || CASE WHEN a - 1 < 100000 THEN lpad((a - 1)::text, 5, '0') ELSE (a - 1)::text END";
            let series = format!("generate_series(1, {u}) AS g(a)");
            if fresh {
                statements.push(format!(
                    "INSERT INTO accounts (id, app_key, user_id, balance, held, created_at, updated_at) \
                     SELECT a, 'default', {user}, {balance}, 0, '{t0}'::timestamp, '{tn}'::timestamp FROM {series}"
                ));
            }
            for k in rounds.clone() {
                statements.push(txn_round("", &series, user, k, u, &at(k), "::timestamp"));
            }
            if fresh {
                statements.push(format!(
                    "INSERT INTO lots (id, account_id, transaction_id, source, amount, remaining, expires_at, created_at) \
                     SELECT a, a, a, 'reward', {SEED_CREDITS}, {balance}, NULL, '{t0}'::timestamp FROM {series}"
                ));
            } else {
                statements.push(format!(
                    "UPDATE accounts SET balance = {balance}, updated_at = '{tn}'::timestamp"
                ));
                statements.push(format!("UPDATE lots SET remaining = {balance}"));
            }
            for (table, seq) in [
                ("accounts", "accounts_id_seq"),
                ("transactions", "transactions_id_seq"),
                ("lots", "lots_id_seq"),
            ] {
                statements.push(format!(
                    "SELECT setval('{seq}', (SELECT MAX(id) FROM {table}))"
                ));
            }
            run_bulk(kind, url, statements).await?;
        }
    }
    Ok(started.elapsed())
}

/// Runs a bulk load's statements, 20 to a transaction, on a connection of its own that does not
/// wait for each commit to reach the disk (nothing is lost if the loader crashes: the run fails),
/// then checkpoints (SQLite) or analyzes (PostgreSQL) the result.
pub async fn run_bulk(kind: DbKind, url: &str, statements: Vec<String>) -> Result<(), String> {
    match kind {
        DbKind::Sqlite => {
            let path = url
                .strip_prefix("sqlite://")
                .ok_or_else(|| format!("not an SQLite URL: {url}"))?
                .to_owned();
            tokio::task::spawn_blocking(move || -> Result<(), String> {
                let mut conn = SqliteConnection::establish(&path)
                    .map_err(|e| format!("opening {path}: {e}"))?;
                conn.batch_execute(
                    "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;",
                )
                .map_err(|e| format!("bulk load pragmas: {e}"))?;
                for chunk in statements.chunks(20) {
                    conn.batch_execute(&format!("BEGIN; {}; COMMIT;", chunk.join("; ")))
                        .map_err(|e| format!("bulk load: {e}"))?;
                }
                conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")
                    .map_err(|e| format!("bulk load checkpoint: {e}"))?;
                Ok(())
            })
            .await
            .map_err(|e| format!("bulk load task: {e}"))?
        }
        DbKind::Postgres => {
            let mut conn = AsyncPgConnection::establish(url)
                .await
                .map_err(|e| format!("connecting to {}: {e}", redact(url)))?;
            conn.batch_execute("SET synchronous_commit = off")
                .await
                .map_err(|e| format!("bulk load: {e}"))?;
            for chunk in statements.chunks(20) {
                conn.batch_execute(&format!("BEGIN; {}; COMMIT;", chunk.join("; ")))
                    .await
                    .map_err(|e| format!("bulk load: {e}"))?;
            }
            drop(conn);
            analyze(kind, url).await
        }
    }
}

/// Round `k` of the preload: one transaction per user.
fn txn_round(
    cte: &str,
    from: &str,
    user: &str,
    k: u64,
    users: u64,
    at: &str,
    cast: &str,
) -> String {
    let (txn_type, amount, description, metadata) = if k == 0 {
        ("reward", SEED_CREDITS, "Benchmark seed", "NULL".to_owned())
    } else {
        (
            "ai_usage",
            -1,
            "AI chat completion (preloaded)",
            "'{\"model\":\"bench\"}'".to_owned(),
        )
    };
    let key = if k == 0 {
        "seed".to_owned()
    } else {
        format!("pre-{k}")
    };
    let balance_after = SEED_CREDITS - k as i64;
    format!(
        "INSERT INTO transactions (id, account_id, app_key, user_id, txn_type, amount, balance_after, \
         description, idempotency_key, request_hash, metadata, actor, created_at) {cte} \
         SELECT {k} * {users} + a, a, 'default', {user}, '{txn_type}', {amount}, {balance_after}, \
         '{description}', '{key}', '{REQUEST_HASH}', {metadata}, NULL, '{at}'{cast} FROM {from}"
    )
}

/// Runs `tally verify` on `url`; answers whether it passed and what it printed.
pub async fn verify(
    tally: &Path,
    url: &str,
    secret: &str,
) -> Result<(bool, String, Duration), String> {
    let started = Instant::now();
    let mut cmd = Command::new(tally);
    for (k, _) in std::env::vars() {
        if k.starts_with("TALLY_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg("verify")
        .env("TALLY_DATABASE_URL", url)
        .env("TALLY_JWT_SECRET", secret)
        .env("TALLY_LOG_LEVEL", "warn")
        .output()
        .await
        .map_err(|e| format!("running tally verify: {e}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let text: String = text.lines().take(20).collect::<Vec<_>>().join("\n");
    Ok((out.status.success(), text, started.elapsed()))
}

/// `VACUUM ANALYZE` of the ledger tables (PostgreSQL), so that every run plans on statistics
/// rather than on whenever autovacuum got round to it.
pub async fn analyze(kind: DbKind, url: &str) -> Result<(), String> {
    if kind != DbKind::Postgres {
        return Ok(());
    }
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .map_err(|e| format!("connecting to {}: {e}", redact(url)))?;
    for table in ["accounts", "transactions", "lots", "holds"] {
        conn.batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await
            .map_err(|e| format!("VACUUM ANALYZE {table}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h", "x").unwrap(),
            "postgres://h/x"
        );
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
