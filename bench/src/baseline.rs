//! Ceilings measured in the same run with the same client and concurrency:
//!
//! - `baseline-http`: a bare actix-web server (this binary, `--serve-baseline-http`, as a child
//!   process like `tally`) with the same worker count, answering a JSON body of the balance
//!   response's size — what HTTP alone costs on this machine.
//! - `baseline-db`: the SQL statements of a write endpoint's transaction — the same Diesel
//!   queries `tally-store` issues, against the same schema — through a pool of the size the
//!   server uses, with nothing else around them (for check-in, also the configuration read that
//!   precedes its transaction, on a reader connection). On SQLite a whole transaction runs in one
//!   blocking call on the single writer connection (the least overhead the pool allows); on
//!   PostgreSQL each statement is a round trip on a pooled `AsyncPgConnection`, as in the server.
//!   (SQLite's pool of one is the connection behind a mutex, taken on a blocking thread per
//!   transaction: one hand-off between transactions, the least any pool of one can cost.)
//! - `baseline-db:balance`: the balance `SELECT` alone on connections like the server's readers
//!   (informational: how much of a balance request is the database).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::{App, HttpResponse, HttpServer, web};
use diesel::SqliteConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::{AsyncConnection, AsyncPgConnection};

use crate::DbKind;
use crate::load::{Driver, Outcome, Rng};
use crate::workload::{HOT_USER, user_id};

/// A JSON body of exactly `size` bytes (at least the empty envelope).
pub fn padded_body(size: usize) -> String {
    let head = "{\"success\":true,\"data\":{\"pad\":\"";
    let tail = "\"}}";
    let pad = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// Serves the bare baseline: `GET /credits/balance` and `GET /healthz` answer a fixed JSON body.
pub fn serve_http(port: u16, workers: usize, body_bytes: usize) -> std::io::Result<()> {
    let body = web::Bytes::from(padded_body(body_bytes));
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let body = body.clone();
            App::new()
                .route(
                    "/credits/balance",
                    web::get().to(move || {
                        let body = body.clone();
                        async move {
                            HttpResponse::Ok()
                                .content_type("application/json")
                                .body(body)
                        }
                    }),
                )
                .route(
                    "/healthz",
                    web::get().to(|| async { HttpResponse::Ok().finish() }),
                )
        })
        .workers(workers)
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}

/// Why a baseline transaction failed.
#[derive(Debug)]
pub struct OpError(String);

impl From<diesel::result::Error> for OpError {
    fn from(e: diesel::result::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<tally_ledger::LedgerError> for OpError {
    fn from(e: tally_ledger::LedgerError) -> Self {
        Self(e.to_string())
    }
}

/// The statements of `POST /internal/credits/consume` and `POST /checkin` (their write
/// transactions, as `tally-store`'s `ops.rs` issues them for an existing account without holds),
/// expanded once per backend: synchronous Diesel for SQLite, diesel-async for PostgreSQL.
macro_rules! write_ops {
    ($module:ident, $conn:ty, $run:path, [$($lock:ident)?], [$($kw:ident)?], {$($aw:tt)*}) => {
        pub(crate) mod $module {
            use diesel::prelude::*;
            #[allow(unused_imports)]
            use $run;
            use tally_ledger::checkin::{streak_for, CheckinConfig, CheckinRecord};
            use tally_ledger::plan::{plan_movement, Plan};
            use tally_ledger::{AccountView, LotView, MovementKind, TxnType};
            use tally_store::schema::{
                accounts, checkin_configs, checkins, lots, transactions, webhook_endpoints, webhook_events,
                webhook_settings,
            };
            use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

            use super::{LiveLot, OpError};

            type Conn = $conn;
            type Account = (i64, String, String, i64, i64);
            type TxnTuple = (
                i64, String, String, String, i64, i64, String,
                Option<String>, Option<String>, Option<String>, Option<String>, PrimitiveDateTime,
            );

            fn to_db(t: OffsetDateTime) -> PrimitiveDateTime {
                let utc = tally_ledger::clock::truncate_micros(t).to_offset(UtcOffset::UTC);
                PrimitiveDateTime::new(utc.date(), utc.time())
            }

            $($kw)? fn lock_account(conn: &mut Conn, user: &str) -> Result<Account, OpError> {
                Ok(accounts::table
                    .filter(accounts::app_key.eq("default"))
                    .filter(accounts::user_id.eq(user))
                    .select((accounts::id, accounts::app_key, accounts::user_id, accounts::balance, accounts::held))
                    $(.$lock())?
                    .first(conn)
                    $($aw)*?)
            }

            $($kw)? fn state(conn: &mut Conn, account: &Account) -> Result<AccountView, OpError> {
                let lots: Vec<(i64, i64, Option<PrimitiveDateTime>)> = lots::table
                    .filter(lots::account_id.eq(account.0))
                    .filter(LiveLot)
                    .order(lots::id)
                    .select((lots::id, lots::remaining, lots::expires_at))
                    .load(conn)
                    $($aw)*?;
                Ok(AccountView {
                    balance: account.3,
                    held: account.4,
                    lots: lots
                        .into_iter()
                        .map(|(id, remaining, expires_at)| LotView {
                            id,
                            remaining,
                            expires_at: expires_at.map(PrimitiveDateTime::assume_utc),
                        })
                        .collect(),
                    last_instant_partial: false,
                    holds: Vec::new(),
                })
            }

            /// Lot updates, the movement's row (RETURNING), its new lot, the account update.
            #[allow(clippy::too_many_arguments)]
            $($kw)? fn write_plan(
                conn: &mut Conn,
                account: &Account,
                plan: &Plan,
                description: &str,
                key: Option<&str>,
                hash: Option<&str>,
                metadata: Option<String>,
                now: OffsetDateTime,
            ) -> Result<i64, OpError> {
                let at = to_db(now);
                for &(lot_id, remaining) in &plan.lot_updates {
                    diesel::update(lots::table.find(lot_id))
                        .set(lots::remaining.eq(remaining))
                        .execute(conn)
                        $($aw)*?;
                }
                let entry = plan.main.as_ref().ok_or_else(|| OpError("no movement planned".into()))?;
                let row: TxnTuple = diesel::insert_into(transactions::table)
                    .values((
                        transactions::account_id.eq(account.0),
                        transactions::app_key.eq(&account.1),
                        transactions::user_id.eq(&account.2),
                        transactions::txn_type.eq(entry.txn_type.as_str()),
                        transactions::amount.eq(entry.amount),
                        transactions::balance_after.eq(entry.balance_after),
                        transactions::description.eq(description),
                        key.map(|k| transactions::idempotency_key.eq(k)),
                        hash.map(|h| transactions::request_hash.eq(h)),
                        metadata.map(|m| transactions::metadata.eq(m)),
                        None::<diesel::dsl::Eq<transactions::actor, &str>>,
                        transactions::created_at.eq(at),
                    ))
                    .returning((
                        transactions::id, transactions::app_key, transactions::user_id,
                        transactions::txn_type, transactions::amount, transactions::balance_after,
                        transactions::description, transactions::idempotency_key,
                        transactions::request_hash, transactions::metadata, transactions::actor,
                        transactions::created_at,
                    ))
                    .get_result(conn)
                    $($aw)*?;
                if let Some(lot) = &plan.new_lot {
                    diesel::insert_into(lots::table)
                        .values((
                            lots::account_id.eq(account.0),
                            lots::transaction_id.eq(row.0),
                            lots::source.eq(lot.source.as_str()),
                            lots::amount.eq(lot.amount),
                            lots::remaining.eq(lot.remaining),
                            lots::expires_at.eq(lot.expires_at.map(to_db)),
                            lots::created_at.eq(at),
                        ))
                        .execute(conn)
                        $($aw)*?;
                }
                diesel::update(accounts::table.find(account.0))
                    .set((
                        accounts::balance.eq(plan.balance),
                        accounts::held.eq(plan.held),
                        accounts::updated_at.eq(at),
                    ))
                    .execute(conn)
                    $($aw)*?;
                // The outbox: a lowered balance reads the app's low-balance threshold and whether
                // an endpoint wants `credits.spent`; a grant writes its `credits.granted` event.
                if plan.balance - plan.held < account.3 - account.4 {
                    let threshold = webhook_settings::table
                        .filter(webhook_settings::app_key.eq(&account.1))
                        .select(webhook_settings::low_balance_threshold)
                        .single_value();
                    let wants_spent = diesel::dsl::exists(
                        webhook_endpoints::table
                            .filter(webhook_endpoints::app_key.eq(&account.1))
                            .filter(webhook_endpoints::enabled.eq(true))
                            .filter(webhook_endpoints::wants_spent.eq(true)),
                    );
                    let _: (Option<i64>, bool) = diesel::select((threshold, wants_spent))
                        .get_result(conn)
                        $($aw)*?;
                }
                if entry.amount > 0 {
                    let payload = super::event_payload("credits.granted", &account.2, row.0);
                    outbox(conn, &account.1, &account.2, "credits.granted", &payload, at)$($aw)*?;
                }
                Ok(row.0)
            }

            $($kw)? fn outbox(
                conn: &mut Conn,
                app: &str,
                user: &str,
                event_type: &str,
                payload: &str,
                at: PrimitiveDateTime,
            ) -> Result<(), OpError> {
                diesel::insert_into(webhook_events::table)
                    .values((
                        webhook_events::id.eq(tally_webhooks::new_event_id()),
                        webhook_events::app_key.eq(app),
                        webhook_events::user_id.eq(user),
                        webhook_events::event_type.eq(event_type),
                        webhook_events::payload.eq(payload),
                        webhook_events::fanned_out.eq(false),
                        webhook_events::created_at.eq(at),
                    ))
                    .execute(conn)
                    $($aw)*?;
                Ok(())
            }

            /// `GET /credits/balance`'s one statement: the account with its live lots.
            pub(crate) $($kw)? fn balance(conn: &mut Conn, user: &str) -> Result<(), OpError> {
                type Lot = (i64, i64, Option<PrimitiveDateTime>);
                let rows: Vec<(Account, Option<Lot>)> = accounts::table
                    .left_join(lots::table.on(lots::account_id.eq(accounts::id).and(LiveLot)))
                    .filter(accounts::app_key.eq("default"))
                    .filter(accounts::user_id.eq(user))
                    .order(lots::id)
                    .select((
                        (accounts::id, accounts::app_key, accounts::user_id, accounts::balance, accounts::held),
                        (lots::id, lots::remaining, lots::expires_at).nullable(),
                    ))
                    .load(conn)
                    $($aw)*?;
                if rows.is_empty() {
                    return Err(OpError(format!("no account for {user}")));
                }
                Ok(())
            }

            /// `POST /internal/credits/consume` of 1 credit with a fresh idempotency key.
            pub(crate) $($kw)? fn consume(conn: &mut Conn, user: &str, key: &str) -> Result<(), OpError> {
                let now = OffsetDateTime::now_utc();
                let account = lock_account(conn, user)$($aw)*?;
                let stored: Option<TxnTuple> = transactions::table
                    .filter(transactions::account_id.eq(account.0))
                    .filter(transactions::idempotency_key.eq(key))
                    .select((
                        transactions::id, transactions::app_key, transactions::user_id,
                        transactions::txn_type, transactions::amount, transactions::balance_after,
                        transactions::description, transactions::idempotency_key,
                        transactions::request_hash, transactions::metadata, transactions::actor,
                        transactions::created_at,
                    ))
                    .first(conn)
                    $($aw)*
                    .optional()?;
                if stored.is_some() {
                    return Err(OpError(format!("idempotency key {key} already used")));
                }
                let state = state(conn, &account)$($aw)*?;
                let kind = MovementKind::Debit { txn_type: TxnType::AiUsage, credits: 1 };
                let plan = plan_movement(&state, &kind, now)?;
                write_plan(
                    conn, &account, &plan, "AI chat completion (benchmark)", Some(key),
                    Some(super::REQUEST_HASH), Some("{\"model\":\"bench\"}".to_owned()), now,
                )
                $($aw)*?;
                Ok(())
            }

            /// The check-in configuration read that preceded `POST /checkin`'s transaction (the
            /// server now reads it inside the transaction, with the account's lock).
            pub(crate) $($kw)? fn checkin_config(conn: &mut Conn) -> Result<(), OpError> {
                let _config: Option<(bool, String, String, Option<i32>)> = checkin_configs::table
                    .find("default")
                    .select((
                        checkin_configs::enabled,
                        checkin_configs::rewards,
                        checkin_configs::timezone,
                        checkin_configs::credits_expire_days,
                    ))
                    .first(conn)
                    $($aw)*
                    .optional()?;
                Ok(())
            }

            /// `POST /checkin`'s transaction for `day`.
            pub(crate) $($kw)? fn checkin(conn: &mut Conn, user: &str, day: Date) -> Result<(), OpError> {
                let now = OffsetDateTime::now_utc();
                let account = lock_account(conn, user)$($aw)*?;
                let previous: Option<(String, i64, i64, i64)> = checkins::table
                    .inner_join(transactions::table)
                    .filter(checkins::app_key.eq("default"))
                    .filter(checkins::user_id.eq(user))
                    .order(checkins::day.desc())
                    .select((checkins::day, checkins::streak, checkins::awarded, transactions::balance_after))
                    .first(conn)
                    $($aw)*
                    .optional()?;
                let format = time::macros::format_description!("[year]-[month]-[day]");
                let previous = match previous {
                    Some((d, streak, awarded, balance_after)) => Some(CheckinRecord {
                        day: Date::parse(&d, format).map_err(|e| OpError(e.to_string()))?,
                        streak,
                        awarded,
                        balance_after,
                    }),
                    None => None,
                };
                let streak = streak_for(day, previous.as_ref());
                let config = CheckinConfig::default();
                let reward = config.reward_for(streak);
                let state = state(conn, &account)$($aw)*?;
                let kind = MovementKind::Grant { txn_type: TxnType::Checkin, credits: reward, expires_at: None };
                let plan = plan_movement(&state, &kind, now)?;
                let description = format!("Daily check-in (streak day {streak})");
                let txn_id = write_plan(conn, &account, &plan, &description, None, None, None, now)$($aw)*?;
                diesel::insert_into(checkins::table)
                    .values((
                        checkins::app_key.eq("default"),
                        checkins::user_id.eq(user),
                        checkins::day.eq(day.to_string()),
                        checkins::streak.eq(streak),
                        checkins::awarded.eq(reward),
                        checkins::transaction_id.eq(txn_id),
                        checkins::created_at.eq(to_db(now)),
                    ))
                    .execute(conn)
                    $($aw)*?;
                let payload = super::event_payload("checkin.completed", user, txn_id);
                outbox(conn, "default", user, "checkin.completed", &payload, to_db(now))$($aw)*?;
                Ok(())
            }
        }
    };
}

/// An outbox payload of the size and shape the server writes.
pub(crate) fn event_payload(event_type: &str, user: &str, txn_id: i64) -> String {
    tally_webhooks::OutboundEvent::new(
        tally_webhooks::EventType::parse(event_type)
            .unwrap_or(tally_webhooks::EventType::CreditsGranted),
        "default",
        Some(user.to_owned()),
        time::OffsetDateTime::now_utc(),
        serde_json::json!({
            "transaction_id": txn_id, "type": "checkin", "credits": 10, "balance_after": 110,
            "description": "Daily check-in (streak day 1)", "expires_at": null,
        }),
    )
    .payload()
}

/// `"lots"."remaining" > 0` as the server writes it (in the statement text, cacheable).
#[derive(Debug, Clone, Copy, diesel::query_builder::QueryId)]
pub(crate) struct LiveLot;

impl diesel::expression::Expression for LiveLot {
    type SqlType = diesel::sql_types::Bool;
}

impl<QS> diesel::expression::AppearsOnTable<QS> for LiveLot {}

impl<GB> diesel::expression::ValidGrouping<GB> for LiveLot {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}

impl<DB: diesel::backend::Backend> diesel::query_builder::QueryFragment<DB> for LiveLot {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        out.push_sql("\"lots\".\"remaining\" > 0");
        Ok(())
    }
}

const REQUEST_HASH: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

write_ops!(
    sqlite_ops,
    diesel::SqliteConnection,
    diesel::RunQueryDsl,
    [],
    [],
    {}
);
write_ops!(pg_ops, diesel_async::AsyncPgConnection, diesel_async::RunQueryDsl, [for_update], [async], {.await});

// The server's per-connection settings (tally-store's SQLITE_PRAGMAS).
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;";

/// A pool like the server's write pool: one connection on SQLite, `pg_pool` on PostgreSQL.
#[derive(Clone)]
pub enum DbPool {
    /// The single SQLite writer: each transaction takes it on a blocking thread and runs
    /// whole there, the least a pool of one can cost.
    Sqlite {
        /// The writer.
        writer: Arc<std::sync::Mutex<SqliteConnection>>,
        /// Readers, for the reads an endpoint makes before its transaction.
        readers: Arc<Vec<std::sync::Mutex<SqliteConnection>>>,
    },
    /// PostgreSQL connections.
    Pg(Pool<AsyncPgConnection>),
    /// SQLite reader connections, used synchronously right where the worker runs (as the
    /// server runs its short reads).
    SqliteRead(Arc<Vec<std::sync::Mutex<SqliteConnection>>>),
}

impl std::fmt::Debug for DbPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DbPool::Sqlite { .. } => "DbPool::Sqlite",
            DbPool::Pg(_) => "DbPool::Pg",
            DbPool::SqliteRead(_) => "DbPool::SqliteRead",
        })
    }
}

impl DbPool {
    /// Opens the pool and all of its connections.
    pub async fn open(
        kind: DbKind,
        url: &str,
        pg_pool: usize,
        sqlite_readers: usize,
    ) -> Result<(Self, usize), String> {
        let (pool, size) = match kind {
            DbKind::Sqlite => {
                let path = url
                    .strip_prefix("sqlite://")
                    .ok_or_else(|| format!("not an SQLite URL: {url}"))?;
                use diesel::Connection;
                use diesel::connection::SimpleConnection;
                let mut conn = SqliteConnection::establish(path)
                    .map_err(|e| format!("opening {path}: {e}"))?;
                conn.batch_execute(SQLITE_PRAGMAS)
                    .map_err(|e| format!("pragmas: {e}"))?;
                let writer = Arc::new(std::sync::Mutex::new(conn));
                let readers = Arc::new(sqlite_readers_for(url, sqlite_readers)?);
                (DbPool::Sqlite { writer, readers }, 1)
            }
            DbKind::Postgres => {
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
                let size = pg_pool.max(1);
                let pool = Pool::builder(manager)
                    .max_size(size)
                    .build()
                    .map_err(|e| format!("PostgreSQL pool: {e}"))?;
                (DbPool::Pg(pool), size)
            }
        };
        pool.warm(size).await?;
        Ok((pool, size))
    }

    /// Read connections like the server's: `readers` SQLite connections, or the PostgreSQL pool.
    pub async fn open_readers(
        kind: DbKind,
        url: &str,
        readers: usize,
        pg_pool: usize,
    ) -> Result<(Self, usize), String> {
        match kind {
            DbKind::Postgres => Self::open(kind, url, pg_pool, readers).await,
            DbKind::Sqlite => {
                let conns = sqlite_readers_for(url, readers)?;
                let n = conns.len();
                Ok((DbPool::SqliteRead(Arc::new(conns)), n))
            }
        }
    }

    async fn warm(&self, size: usize) -> Result<(), String> {
        macro_rules! warm {
            ($pool:expr) => {{
                let mut held = Vec::with_capacity(size);
                for _ in 0..size {
                    held.push(
                        $pool
                            .get()
                            .await
                            .map_err(|e| format!("baseline pool: {e}"))?,
                    );
                }
            }};
        }
        match self {
            DbPool::Sqlite { .. } => {}
            DbPool::Pg(p) => warm!(p),
            DbPool::SqliteRead(_) => {}
        }
        Ok(())
    }
}

/// Which transaction a baseline worker repeats.
#[derive(Debug)]
pub enum DbOp {
    /// Read a random user's balance.
    Balance {
        /// Users to pick from.
        users: usize,
    },
    /// Consume 1 credit from a random user (or always the hot user).
    Consume {
        /// Users to pick from.
        users: usize,
        /// Always [`HOT_USER`].
        hot: bool,
        /// Prefix of the idempotency keys.
        run: String,
    },
    /// Check every user in once for `day`.
    Checkin {
        /// Users.
        users: usize,
        /// Next user to check in.
        next: AtomicUsize,
        /// The local day (UTC, the default configuration).
        day: time::Date,
    },
}

/// One baseline worker.
#[derive(Debug)]
pub struct DbDriver {
    pool: DbPool,
    op: Arc<DbOp>,
    rng: Rng,
    worker: usize,
    seq: u64,
}

impl DbDriver {
    /// Worker `worker` repeating `op` on `pool`.
    pub fn new(pool: DbPool, op: Arc<DbOp>, worker: usize) -> Self {
        Self {
            pool,
            op,
            rng: Rng::new(worker as u64 + 1001),
            worker,
            seq: 0,
        }
    }
}

/// `n` SQLite connections with the server's settings.
fn sqlite_readers_for(
    url: &str,
    n: usize,
) -> Result<Vec<std::sync::Mutex<SqliteConnection>>, String> {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let path = url
        .strip_prefix("sqlite://")
        .ok_or_else(|| format!("not an SQLite URL: {url}"))?;
    (0..n.max(1))
        .map(|_| {
            let mut c =
                SqliteConnection::establish(path).map_err(|e| format!("opening {path}: {e}"))?;
            c.batch_execute(SQLITE_PRAGMAS)
                .map_err(|e| format!("pragmas: {e}"))?;
            Ok(std::sync::Mutex::new(c))
        })
        .collect()
}

/// The first free connection of `conns`, else waits for one.
fn take(
    conns: &[std::sync::Mutex<SqliteConnection>],
) -> Result<std::sync::MutexGuard<'_, SqliteConnection>, OpError> {
    if let Some(c) = conns.iter().find_map(|c| c.try_lock().ok()) {
        return Ok(c);
    }
    conns
        .first()
        .ok_or_else(|| OpError("no connection".into()))?
        .lock()
        .map_err(|_| OpError("connection lock poisoned".into()))
}

enum Args {
    Balance { user: String },
    Consume { user: String, key: String },
    Checkin { user: String, day: time::Date },
}

impl Driver for DbDriver {
    async fn prepare(&mut self) -> Result<(), String> {
        Ok(())
    }

    async fn call(&mut self) -> Outcome {
        let args = match &*self.op {
            DbOp::Balance { users } => Args::Balance {
                user: user_id(self.rng.below(*users)),
            },
            DbOp::Consume { users, hot, run } => {
                let user = if *hot {
                    HOT_USER
                } else {
                    self.rng.below(*users)
                };
                Args::Consume {
                    user: user_id(user),
                    key: format!("{run}-{}-{}", self.worker, self.seq),
                }
            }
            DbOp::Checkin { users, next, day } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= *users {
                    return Outcome::Exhausted;
                }
                Args::Checkin {
                    user: user_id(i),
                    day: *day,
                }
            }
        };
        self.seq += 1;
        let result: Result<(), OpError> = match &self.pool {
            DbPool::Sqlite { writer, readers } => {
                let (conn, readers) = (writer.clone(), readers.clone());
                tokio::task::spawn_blocking(move || {
                    if let Args::Checkin { .. } = &args {
                        let mut r = take(&readers)?;
                        sqlite_ops::checkin_config(&mut r)?;
                    }
                    let mut c = conn
                        .lock()
                        .map_err(|_| OpError("connection lock poisoned".into()))?;
                    c.immediate_transaction(|c| match &args {
                        Args::Balance { user } => sqlite_ops::balance(c, user),
                        Args::Consume { user, key } => sqlite_ops::consume(c, user, key),
                        Args::Checkin { user, day } => sqlite_ops::checkin(c, user, *day),
                    })
                })
                .await
                .map_err(|e| OpError(format!("blocking task: {e}")))
                .and_then(|r| r)
            }
            DbPool::Pg(pool) => match pool.get().await {
                Ok(mut conn) => {
                    let args = &args;
                    match args {
                        // A read is one statement, outside any transaction, as in the server.
                        Args::Balance { user } => pg_ops::balance(&mut conn, user).await,
                        _ => {
                            let config = match args {
                                Args::Checkin { .. } => pg_ops::checkin_config(&mut conn).await,
                                _ => Ok(()),
                            };
                            match config {
                                Err(e) => Err(e),
                                Ok(()) => {
                                    AsyncConnection::transaction(&mut *conn, async |c| match args {
                                        Args::Balance { user } => pg_ops::balance(c, user).await,
                                        Args::Consume { user, key } => {
                                            pg_ops::consume(c, user, key).await
                                        }
                                        Args::Checkin { user, day } => {
                                            pg_ops::checkin(c, user, *day).await
                                        }
                                    })
                                    .await
                                }
                            }
                        }
                    }
                }
                Err(e) => Err(OpError(format!("pool: {e}"))),
            },
            DbPool::SqliteRead(conns) => {
                let Args::Balance { user } = &args else {
                    return Outcome::Error("writes go through the writer pool".into());
                };
                // The query runs right here, on the worker's thread.
                take(conns).and_then(|mut c| sqlite_ops::balance(&mut c, user))
            }
        };
        match result {
            Ok(()) => Outcome::Ok,
            Err(OpError(e)) => Outcome::Error(e),
        }
    }
}
