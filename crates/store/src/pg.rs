//! The queries compiled for PostgreSQL. Each file under `queries/` is compiled twice, here and in
//! `sqlite.rs`, so a construct one dialect lacks fails to build at its own line. The only
//! differences the files see are [`locked!`] — PostgreSQL takes row locks (`FOR UPDATE`), since
//! several nodes and pooled connections write at once —, how a hand-written statement names
//! its parameters ([`bind`]), how the balance's one statement is written and read
//! ([`account_and_lots_rows`]), and whether a `WITH` may hold an `INSERT` ([`WRITES_IN_WITH`]).

/// Conn is the connection every query here runs on.
pub(crate) type Conn = diesel_async::AsyncPgConnection;

/// The connection as a statement of a pipeline sees it ([`pipelined!`]): shared, so that several
/// statements can be in flight on it at once.
pub(crate) type Pipe<'a> = &'a diesel_async::AsyncPgConnection;

/// The backend of [`Conn`], for hand-written statements built row by row.
pub(crate) type Db = diesel::pg::Pg;

/// Whether a statement's `WITH` may hold an `INSERT` whose rows the rest of it uses: a usage
/// call and its lines are then one statement.
pub(crate) const WRITES_IN_WITH: bool = true;

/// Locks the rows the query reads until the transaction ends.
macro_rules! locked {
    ($query:expr) => {
        $query.for_update()
    };
}

/// Locks the rows the query reads, skipping rows another transaction holds (a queue's claim).
macro_rules! locked_skip {
    ($query:expr) => {
        $query.for_update().skip_locked()
    };
}

/// Runs two to four statements that do not depend on each other as one pipeline: all are sent
/// before any answer is awaited, so they cost one round trip instead of one each. Inside each
/// statement (any future answering a `QueryResult`), `$conn` is a shared handle to the
/// connection, a `&mut Pipe`: a function written for a pipeline takes one. With one statement,
/// it runs that function alone. PostgreSQL runs them one after the other, but not necessarily in
/// the order written (a statement the connection has not prepared yet waits for its preparation
/// while another goes ahead): only group statements whose order does not matter. Every
/// statement is awaited; the answer is every result, or the error that made the pipeline fail
/// ([`cause`]).
macro_rules! pipelined {
    ($conn:ident => $first:expr, $second:expr, $third:expr, $fourth:expr $(,)?) => {{
        let shared: $crate::pg::Pipe<'_> = &*$conn;
        match ::futures_util::future::join4(
            pipelined!(@on shared, $conn, $first),
            pipelined!(@on shared, $conn, $second),
            pipelined!(@on shared, $conn, $third),
            pipelined!(@on shared, $conn, $fourth),
        )
        .await
        {
            (Ok(a), Ok(b), Ok(c), Ok(d)) => Ok((a, b, c, d)),
            (a, b, c, d) => Err($crate::pg::cause([a.err(), b.err(), c.err(), d.err()])),
        }
    }};
    ($conn:ident => $first:expr, $second:expr, $third:expr $(,)?) => {{
        let shared: $crate::pg::Pipe<'_> = &*$conn;
        match ::futures_util::future::join3(
            pipelined!(@on shared, $conn, $first),
            pipelined!(@on shared, $conn, $second),
            pipelined!(@on shared, $conn, $third),
        )
        .await
        {
            (Ok(a), Ok(b), Ok(c)) => Ok((a, b, c)),
            (a, b, c) => Err($crate::pg::cause([a.err(), b.err(), c.err()])),
        }
    }};
    ($conn:ident => $first:expr, $second:expr $(,)?) => {{
        let shared: $crate::pg::Pipe<'_> = &*$conn;
        match ::futures_util::future::join(
            pipelined!(@on shared, $conn, $first),
            pipelined!(@on shared, $conn, $second),
        )
        .await
        {
            (Ok(a), Ok(b)) => Ok((a, b)),
            (a, b) => Err($crate::pg::cause([a.err(), b.err()])),
        }
    }};
    ($conn:ident => $only:expr $(,)?) => {{
        let mut handle: $crate::pg::Pipe<'_> = &*$conn;
        let $conn = &mut handle;
        $only.await
    }};
    (@on $shared:ident, $conn:ident, $statement:expr) => {
        async {
            let mut handle = $shared;
            let $conn = &mut handle;
            $statement.await
        }
    };
}

/// The error a failed pipeline answers. Once a statement fails, PostgreSQL refuses every
/// statement it runs after it in the transaction (an error Diesel knows no kind for), and the
/// statements of a pipeline may run in another order than written; so the answer is the first
/// error of a kind Diesel names (a unique key, a serialization failure: what callers act on),
/// else the first error.
pub(crate) fn cause<const N: usize>(
    errors: [Option<diesel::result::Error>; N],
) -> diesel::result::Error {
    use diesel::result::{DatabaseErrorKind, Error};
    let named = |e: &Error| match e {
        Error::DatabaseError(kind, _) => !matches!(kind, DatabaseErrorKind::Unknown),
        _ => false,
    };
    errors
        .into_iter()
        .flatten()
        .reduce(|kept, next| {
            if !named(&kept) && named(&next) {
                next
            } else {
                kept
            }
        })
        .unwrap_or_else(|| Error::QueryBuilderError("a failed pipeline without an error".into()))
}

/// The `n`th bind parameter of a hand-written statement (`sql_query`), `$n`.
pub(crate) fn bind(n: usize) -> String {
    format!("${n}")
}

/// The balance's one statement on PostgreSQL: what `account_and_lots_query!` reads on SQLite,
/// with the lots taken in a `LATERAL` subquery. PostgreSQL does not carry the order of the inner
/// index through a join, so the plain join sorts every expiring lot of the account before its
/// `LIMIT`; the lateral subquery stops after the first lots of the `lots_expiring` index.
const ACCOUNT_AND_LOTS_SQL: &str = "\
SELECT a.id, a.balance, a.held,
  EXISTS (SELECT 1 FROM holds h WHERE h.account_id = a.id AND h.status = 'active'
          AND h.expires_at <= $3) AS hold_due,
  l.id AS lot_id, l.remaining AS lot_remaining, l.expires_at AS lot_expires_at
FROM accounts a
LEFT JOIN LATERAL (
  SELECT lots.id, lots.remaining, lots.expires_at FROM lots
  WHERE lots.account_id = a.id AND lots.remaining > 0 AND lots.expires_at IS NOT NULL
  ORDER BY lots.expires_at, lots.id LIMIT $4
) l ON true
WHERE a.app_key = $1 AND a.user_id = $2
ORDER BY l.expires_at, l.id";

/// One row of [`ACCOUNT_AND_LOTS_SQL`].
#[derive(diesel::QueryableByName)]
struct AccountAndLotRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    balance: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    held: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    hold_due: bool,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    lot_id: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    lot_remaining: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamp>)]
    lot_expires_at: Option<time::PrimitiveDateTime>,
}

/// The rows of the balance's one statement for one account (see `account_and_lots_query!`).
pub(crate) async fn account_and_lots_rows(
    conn: &mut Conn,
    app: &str,
    user: &str,
    now: time::PrimitiveDateTime,
) -> diesel::QueryResult<Vec<crate::ops::AccountAndLot>> {
    use crate::rows::{AccountFigures, LotRow};
    use diesel::sql_types::{BigInt, Text, Timestamp};
    use diesel_async::RunQueryDsl;

    // Diesel prepares a hand-written statement again on every execution; its text is constant.
    let rows: Vec<AccountAndLotRow> = crate::cached::cached(
        diesel::sql_query(ACCOUNT_AND_LOTS_SQL)
            .bind::<Text, _>(app)
            .bind::<Text, _>(user)
            .bind::<Timestamp, _>(now)
            .bind::<BigInt, _>(tally_ledger::BALANCE_LOTS + 1),
    )
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let lot = r.lot_id.zip(r.lot_remaining).map(|(id, remaining)| LotRow {
                id,
                remaining,
                expires_at: r.lot_expires_at,
            });
            let figures = AccountFigures {
                id: r.id,
                balance: r.balance,
                held: r.held,
            };
            (figures, r.hold_due, lot)
        })
        .collect())
}

#[path = "queries/apps.rs"]
pub(crate) mod apps;
#[path = "queries/catalog.rs"]
pub(crate) mod catalog;
#[path = "queries/checkout.rs"]
pub(crate) mod checkout;
#[path = "queries/console.rs"]
pub(crate) mod console;
#[path = "queries/ledger.rs"]
pub(crate) mod ledger;
#[path = "queries/outbox.rs"]
pub(crate) mod outbox;
#[path = "queries/stats.rs"]
pub(crate) mod stats;
#[path = "queries/usage.rs"]
pub(crate) mod usage;
