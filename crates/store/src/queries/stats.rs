//! The operators' statistics: per-day counts computed by the database with `GROUP BY`, one
//! statement per figure, over the range's UTC days. The day is the first ten characters of the
//! timestamp's text form, the same on both databases (`YYYY-MM-DD…`); the placeholders are
//! numbered ([`super::bind`]) so one bound value serves every mention.

use diesel::sql_types::{BigInt, Text, Timestamp};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncConnectionCore, RunQueryDsl};
use tally_ledger::TxnType;
use tally_ledger::stats::{CreditFlow, DailyCounts, RollupMetric, RollupRow, StatsQuery};
use time::{Date, Duration, PrimitiveDateTime, Time};

use super::{Conn, bind};
use crate::StoreError;

#[derive(QueryableByName)]
struct CreditsDay {
    #[diesel(sql_type = Text)]
    day: String,
    #[diesel(sql_type = Text)]
    txn_type: String,
    #[diesel(sql_type = BigInt)]
    credits_in: i64,
    #[diesel(sql_type = BigInt)]
    credits_out: i64,
}

#[derive(QueryableByName)]
struct RevenueDay {
    #[diesel(sql_type = Text)]
    day: String,
    #[diesel(sql_type = Text)]
    currency: String,
    #[diesel(sql_type = BigInt)]
    amount: i64,
}

#[derive(QueryableByName)]
struct CountDay {
    #[diesel(sql_type = Text)]
    day: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// `alias.created_at` as a `YYYY-MM-DD` day.
fn day_of(alias: &str) -> String {
    format!("substr(CAST({alias}.created_at AS TEXT), 1, 10)")
}

/// `alias` belongs to the app (`bind(1)`) and was created within the range (`bind(2)`, `bind(3)`).
fn in_range(alias: &str, app_column: &str) -> String {
    format!(
        "{app_column} = {} AND {alias}.created_at >= {} AND {alias}.created_at < {}",
        bind(1),
        bind(2),
        bind(3)
    )
}

/// The rows of `sql` with the app and the range bound to the placeholders [`in_range`] writes.
async fn load_in_range<T>(
    conn: &mut Conn,
    sql: String,
    app: &str,
    range: (PrimitiveDateTime, PrimitiveDateTime),
) -> Result<Vec<T>, StoreError>
where
    T: QueryableByName<<Conn as AsyncConnectionCore>::Backend> + Send + 'static,
{
    let rows = sql_query(sql)
        .bind::<Text, _>(app)
        .bind::<Timestamp, _>(range.0)
        .bind::<Timestamp, _>(range.1)
        .load(conn)
        .await?;
    Ok(rows)
}

fn parse_day(s: &str) -> Result<Date, StoreError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s, &format)
        .map_err(|_| StoreError::Invariant("a timestamp's day is not YYYY-MM-DD"))
}

/// Counts rows of `table` per day.
async fn count_per_day(
    conn: &mut Conn,
    query: &StatsQuery,
    table: &str,
    range: (PrimitiveDateTime, PrimitiveDateTime),
) -> Result<Vec<(Date, i64)>, StoreError> {
    let sql = format!(
        "SELECT {day} AS day, COUNT(*) AS n FROM {table} t WHERE {cond} GROUP BY {day}",
        day = day_of("t"),
        cond = in_range("t", "t.app_key"),
    );
    let rows: Vec<CountDay> = load_in_range(conn, sql, &query.app, range).await?;
    rows.into_iter()
        .map(|r| Ok((parse_day(&r.day)?, r.n)))
        .collect()
}

pub(crate) async fn daily_counts(
    conn: &mut Conn,
    query: &StatsQuery,
) -> Result<DailyCounts, StoreError> {
    let range = (
        PrimitiveDateTime::new(query.from, Time::MIDNIGHT),
        PrimitiveDateTime::new(query.to + Duration::days(1), Time::MIDNIGHT),
    );
    let sql = format!(
        "SELECT {day} AS day, t.txn_type AS txn_type, \
         CAST(SUM(CASE WHEN t.amount > 0 THEN t.amount ELSE 0 END) AS BIGINT) AS credits_in, \
         CAST(SUM(CASE WHEN t.amount < 0 THEN -t.amount ELSE 0 END) AS BIGINT) AS credits_out \
         FROM transactions t WHERE {cond} GROUP BY {day}, t.txn_type",
        day = day_of("t"),
        cond = in_range("t", "t.app_key"),
    );
    let credits: Vec<CreditsDay> = load_in_range(conn, sql, &query.app, range).await?;
    // A payment's currency is its order's; a renewal's is the order that started its
    // subscription.
    let currency = "COALESCE(o.currency, so.currency)";
    let joins = "LEFT JOIN orders o ON o.id = p.order_id \
                 LEFT JOIN subscriptions s ON s.id = p.subscription_id \
                 LEFT JOIN orders so ON so.id = s.order_id";
    let sql = format!(
        "SELECT day, currency, CAST(SUM(amount) AS BIGINT) AS amount FROM (\
           SELECT {pay_day} AS day, {currency} AS currency, p.amount_paid_minor AS amount \
           FROM payments p {joins} WHERE {pay_cond} \
           UNION ALL \
           SELECT {refund_day} AS day, {currency} AS currency, -r.amount_minor AS amount \
           FROM refunds r JOIN payments p ON p.id = r.payment {joins} WHERE {refund_cond}\
         ) x WHERE currency IS NOT NULL GROUP BY day, currency",
        pay_day = day_of("p"),
        pay_cond = in_range("p", "p.app_key"),
        refund_day = day_of("r"),
        refund_cond = in_range("r", "p.app_key"),
    );
    let revenue: Vec<RevenueDay> = load_in_range(conn, sql, &query.app, range).await?;
    Ok(DailyCounts {
        credits: credits
            .into_iter()
            .map(|r| Ok((parse_day(&r.day)?, r.txn_type, r.credits_in, r.credits_out)))
            .collect::<Result<_, StoreError>>()?,
        revenue: revenue
            .into_iter()
            .map(|r| Ok((parse_day(&r.day)?, r.currency, r.amount)))
            .collect::<Result<_, StoreError>>()?,
        new_accounts: count_per_day(conn, query, "accounts", range).await?,
        checkins: count_per_day(conn, query, "checkins", range).await?,
        subscriptions_started: count_per_day(conn, query, "subscriptions", range).await?,
        active_subscriptions: 0,
    })
}

pub(crate) async fn active_subscriptions(conn: &mut Conn, app: &str) -> Result<i64, StoreError> {
    let active: Count = sql_query(format!(
        "SELECT COUNT(*) AS n FROM subscriptions \
         WHERE app_key = {} AND status IN ('active', 'trialing')",
        bind(1)
    ))
    .bind::<Text, _>(app)
    .get_result(conn)
    .await?;
    Ok(active.n)
}

#[derive(QueryableByName)]
struct StoredRollup {
    #[diesel(sql_type = Text)]
    day: String,
    #[diesel(sql_type = Text)]
    metric: String,
    #[diesel(sql_type = Text)]
    dim: String,
    #[diesel(sql_type = BigInt)]
    amount_in: i64,
    #[diesel(sql_type = BigInt)]
    amount_out: i64,
}

/// The app's rolled-up rows of the days `from` to `to` (days are `YYYY-MM-DD` text, which sorts
/// as the dates do).
pub(crate) async fn rollup(
    conn: &mut Conn,
    app: &str,
    from: Date,
    to: Date,
) -> Result<Vec<RollupRow>, StoreError> {
    let sql = format!(
        "SELECT day, metric, dim, amount_in, amount_out FROM stats_days \
         WHERE app_key = {} AND day >= {} AND day <= {}",
        bind(1),
        bind(2),
        bind(3)
    );
    let rows: Vec<StoredRollup> = sql_query(sql)
        .bind::<Text, _>(app)
        .bind::<Text, _>(from.to_string())
        .bind::<Text, _>(to.to_string())
        .load(conn)
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(RollupRow {
                day: parse_day(&r.day)?,
                metric: RollupMetric::parse(&r.metric)
                    .ok_or(StoreError::Invariant("an unknown rollup metric"))?,
                dim: r.dim,
                amount_in: r.amount_in,
                amount_out: r.amount_out,
            })
        })
        .collect()
}

/// Stores rolled-up rows; a row already there (another node rolled the day up first, with the
/// same figures) stays.
pub(crate) async fn store_rollup(
    conn: &mut Conn,
    app: &str,
    rows: &[RollupRow],
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO stats_days (app_key, day, metric, dim, amount_in, amount_out) \
         VALUES ({}, {}, {}, {}, {}, {}) ON CONFLICT DO NOTHING",
        bind(1),
        bind(2),
        bind(3),
        bind(4),
        bind(5),
        bind(6)
    );
    for r in rows {
        sql_query(sql.as_str())
            .bind::<Text, _>(app)
            .bind::<Text, _>(r.day.to_string())
            .bind::<Text, _>(r.metric.as_str())
            .bind::<Text, _>(&r.dim)
            .bind::<BigInt, _>(r.amount_in)
            .bind::<BigInt, _>(r.amount_out)
            .execute(conn)
            .await?;
    }
    Ok(())
}

#[derive(QueryableByName)]
struct FlowRow {
    #[diesel(sql_type = Text)]
    app_key: String,
    #[diesel(sql_type = Text)]
    txn_type: String,
    #[diesel(sql_type = BigInt)]
    credits_in: i64,
    #[diesel(sql_type = BigInt)]
    credits_out: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Per app and type, the credits moved by the transactions recorded in `[from, to)`. The apps
/// come from the registry so that SQLite walks its `(app_key, created_at, …)` index app by app;
/// PostgreSQL reads the range through its `created_at` index.
pub(crate) async fn credit_flows(
    conn: &mut Conn,
    from: PrimitiveDateTime,
    to: PrimitiveDateTime,
) -> Result<Vec<CreditFlow>, StoreError> {
    let sql = format!(
        "SELECT t.app_key AS app_key, t.txn_type AS txn_type, \
         CAST(SUM(CASE WHEN t.amount > 0 THEN t.amount ELSE 0 END) AS BIGINT) AS credits_in, \
         CAST(SUM(CASE WHEN t.amount < 0 THEN -t.amount ELSE 0 END) AS BIGINT) AS credits_out, \
         COUNT(*) AS n \
         FROM transactions t \
         WHERE t.app_key IN (SELECT app_key FROM apps) \
         AND t.created_at >= {} AND t.created_at < {} \
         GROUP BY t.app_key, t.txn_type",
        bind(1),
        bind(2)
    );
    let rows: Vec<FlowRow> = sql_query(sql)
        .bind::<Timestamp, _>(from)
        .bind::<Timestamp, _>(to)
        .load(conn)
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(CreditFlow {
                app: r.app_key,
                txn_type: TxnType::parse(&r.txn_type)
                    .ok_or(StoreError::Invariant("unknown transaction type"))?,
                credited: r.credits_in,
                debited: r.credits_out,
                count: r.n,
            })
        })
        .collect()
}
