//! The `lots` scenario: what an account holding a great many lots and holds costs per request,
//! against a fresh account, in the same run and on the same server.

use hyper::header::HeaderValue;

use crate::DbKind;
use crate::db::{self, timestamp};
use crate::workload::{AccountOp, Workload, user_token};
use crate::{Ctx, find};

/// Live lots of the large account: small grants, every other one expiring.
pub const LOTS: i64 = 100_000;
/// Credits in each of its lots.
const LOT_CREDITS: i64 = 10;
/// Active holds on the large account, one credit each.
pub const HOLDS: i64 = 100;
/// The large account's user.
pub const LARGE_USER: &str = "lots-large";
/// The fresh account's user: one grant, one lot.
pub const FRESH_USER: &str = "lots-fresh";
/// The fresh account's grant.
const FRESH_CREDITS: i64 = 1_000_000;
/// A small account whose balance answers what the large one's does (eight expiries, a hold):
/// nine lots of [`LOT_CREDITS`] expiring like the large account's first, and one hold.
pub const SMALL_USER: &str = "lots-small";

/// Writes, with bulk statements, the two accounts: [`LARGE_USER`] with [`LOTS`] `reward` grants
/// of [`LOT_CREDITS`] (the odd ones expiring a minute apart, 30 days on; the even ones never)
/// and [`HOLDS`] active holds, [`FRESH_USER`] with one grant, and [`SMALL_USER`]. Every ledger
/// invariant holds: balances, `balance_after` running sums, lot remainders, held credits.
pub async fn load(kind: DbKind, url: &str) -> Result<std::time::Duration, String> {
    let started = std::time::Instant::now();
    db::migrate(url).await?;
    let now = time::OffsetDateTime::now_utc();
    let t0 = timestamp(now - time::Duration::days(1));
    let expiry_base = timestamp(now + time::Duration::days(30));
    let hold_base = timestamp(now + time::Duration::days(1));
    let (series, ts, lot_expiry, hold_expiry) = match kind {
        DbKind::Sqlite => (
            format!(
                "(WITH RECURSIVE s(a) AS (SELECT 1 UNION ALL SELECT a + 1 FROM s WHERE a < {LOTS}) SELECT a FROM s) AS g"
            ),
            "",
            format!(
                "CASE WHEN a % 2 = 1 THEN datetime('{expiry_base}', '+' || a || ' minutes') END"
            ),
            format!("datetime('{hold_base}', '+' || a || ' minutes')"),
        ),
        DbKind::Postgres => (
            format!("generate_series(1, {LOTS}) AS g(a)"),
            "::timestamp",
            format!(
                "CASE WHEN a % 2 = 1 THEN '{expiry_base}'::timestamp + a * interval '1 minute' END"
            ),
            format!("'{hold_base}'::timestamp + a * interval '1 minute'"),
        ),
    };
    let large_balance = LOTS * LOT_CREDITS;
    let fresh = LOTS + 1;
    // The small account's nine lots and transactions, and its hold, follow the others' ids.
    let small = |n: i64| LOTS + 1 + n;
    let small_expiry =
        |n: i64| timestamp(now + time::Duration::days(30) + time::Duration::minutes(2 * n - 1));
    let mut statements = vec![
        format!(
            "INSERT INTO accounts (id, app_key, user_id, balance, held, created_at, updated_at) VALUES \
             (1, 'default', '{LARGE_USER}', {large_balance}, {HOLDS}, '{t0}'{ts}, '{t0}'{ts}), \
             (2, 'default', '{FRESH_USER}', {FRESH_CREDITS}, 0, '{t0}'{ts}, '{t0}'{ts}), \
             (3, 'default', '{SMALL_USER}', {small_balance}, 1, '{t0}'{ts}, '{t0}'{ts})",
            small_balance = 9 * LOT_CREDITS
        ),
        format!(
            "INSERT INTO transactions (id, account_id, app_key, user_id, txn_type, amount, balance_after, \
             description, idempotency_key, request_hash, metadata, actor, created_at) \
             SELECT a, 1, 'default', '{LARGE_USER}', 'reward', {LOT_CREDITS}, a * {LOT_CREDITS}, \
             'Benchmark lot', NULL, NULL, NULL, NULL, '{t0}'{ts} FROM {series}"
        ),
        format!(
            "INSERT INTO lots (id, account_id, transaction_id, source, amount, remaining, expires_at, created_at) \
             SELECT a, 1, a, 'reward', {LOT_CREDITS}, {LOT_CREDITS}, {lot_expiry}, '{t0}'{ts} FROM {series}"
        ),
        format!(
            "INSERT INTO holds (id, account_id, app_key, user_id, amount, status, description, \
             expires_at, created_at, updated_at) \
             SELECT a, 1, 'default', '{LARGE_USER}', 1, 'active', 'Benchmark hold', {hold_expiry}, \
             '{t0}'{ts}, '{t0}'{ts} FROM {series} WHERE a <= {HOLDS}"
        ),
        format!(
            "INSERT INTO transactions (id, account_id, app_key, user_id, txn_type, amount, balance_after, \
             description, idempotency_key, request_hash, metadata, actor, created_at) VALUES \
             ({fresh}, 2, 'default', '{FRESH_USER}', 'reward', {FRESH_CREDITS}, {FRESH_CREDITS}, \
             'Benchmark seed', NULL, NULL, NULL, NULL, '{t0}'{ts})"
        ),
        format!(
            "INSERT INTO lots (id, account_id, transaction_id, source, amount, remaining, expires_at, created_at) \
             VALUES ({fresh}, 2, {fresh}, 'reward', {FRESH_CREDITS}, {FRESH_CREDITS}, NULL, '{t0}'{ts})"
        ),
    ];
    for n in 1..=9 {
        statements.push(format!(
            "INSERT INTO transactions (id, account_id, app_key, user_id, txn_type, amount, balance_after, \
             description, idempotency_key, request_hash, metadata, actor, created_at) VALUES \
             ({id}, 3, 'default', '{SMALL_USER}', 'reward', {LOT_CREDITS}, {after}, 'Benchmark lot', \
             NULL, NULL, NULL, NULL, '{t0}'{ts})",
            id = small(n),
            after = n * LOT_CREDITS
        ));
        statements.push(format!(
            "INSERT INTO lots (id, account_id, transaction_id, source, amount, remaining, expires_at, created_at) \
             VALUES ({id}, 3, {id}, 'reward', {LOT_CREDITS}, {LOT_CREDITS}, '{at}'{ts}, '{t0}'{ts})",
            id = small(n),
            at = small_expiry(n)
        ));
    }
    statements.push(format!(
        "INSERT INTO holds (id, account_id, app_key, user_id, amount, status, description, \
         expires_at, created_at, updated_at) VALUES ({id}, 3, 'default', '{SMALL_USER}', 1, 'active', \
         'Benchmark hold', '{hold_base}'{ts}, '{t0}'{ts}, '{t0}'{ts})",
        id = HOLDS + 1
    ));
    if kind == DbKind::Postgres {
        for table in ["accounts", "transactions", "lots", "holds"] {
            statements.push(format!(
                "SELECT setval('{table}_id_seq', (SELECT MAX(id) FROM {table}))"
            ));
        }
    }
    db::run_bulk(kind, url, statements).await?;
    Ok(started.elapsed())
}

/// The `lots` scenario on a database and server of its own: balance, consume, grant and hold,
/// each on the fresh account and then on the large one (target: the large ≥ 0.8× the fresh).
pub async fn scenario(
    ctx: &Ctx<'_>,
    dbs: &mut db::Databases,
    report: &mut crate::report::Report,
) -> Result<(), String> {
    let kind = ctx.cli.db;
    let url = dbs.create("lots").await?;
    eprintln!("tally-bench: lots: loading {LOTS} lots and {HOLDS} holds on one account …");
    let took = load(kind, &url).await?;
    report.setup.push(format!(
        "lots database: `{LARGE_USER}` with {LOTS} live lots of {LOT_CREDITS} credits (every \
         other one expiring) and {HOLDS} active holds, `{FRESH_USER}` with one lot, `{SMALL_USER}` \
         with 9 expiring lots and 1 hold, bulk-loaded in {:.1} s",
        took.as_secs_f64()
    ));
    let srv = ctx
        .start_tally(&url, dbs.dir().join("tally-lots.log"), &[])
        .await?;
    let host = Ctx::host(srv.addr)?;
    let key = ctx.key()?;
    for op in [
        AccountOp::Balance,
        AccountOp::Consume,
        AccountOp::Grant,
        AccountOp::Hold,
    ] {
        let fresh_name = format!("lots:{}-fresh", op.name());
        let mut accounts = vec![(FRESH_USER, fresh_name.clone())];
        if matches!(op, AccountOp::Balance) {
            accounts.push((SMALL_USER, "lots:balance-small".to_owned()));
        }
        accounts.push((LARGE_USER, format!("lots:{}", op.name())));
        for (user, name) in accounts {
            let auth: HeaderValue = match op {
                AccountOp::Balance => user_token(&ctx.secret, user)?,
                _ => key.clone(),
            };
            let wl = Workload::Account {
                host: host.clone(),
                auth,
                user: user.to_owned(),
                op,
                run: format!("{}-{user}-{}", op.name(), ctx.run_tag),
            };
            let mut row = ctx.http_row(&name, &srv, wl, true).await?;
            if user == LARGE_USER {
                row.compare(find(&report.rows, &fresh_name), &fresh_name, Some(0.8));
                if let Some(small) = find(&report.rows, "lots:balance-small")
                    .and_then(|r| r.requests_per_second)
                    .filter(|_| matches!(op, AccountOp::Balance))
                    && let Some(large) = row.requests_per_second
                {
                    row.note = Some(format!(
                        "{:.0}% of `lots:balance-small`, an account of 9 lots and 1 hold whose \
                         balance answers the same 8 expiries",
                        100.0 * large / small
                    ));
                }
            }
            report.rows.push(row);
        }
    }
    report.server_log_problems.extend(srv.logged_problems());
    srv.stop().await?;
    crate::verify(ctx, report, "lots", &url).await
}
