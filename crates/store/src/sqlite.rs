//! The queries compiled for SQLite (see `pg.rs`). SQLite has no row locks and needs none: its
//! write transactions start with `BEGIN IMMEDIATE` and run one at a time, so [`locked!`] leaves
//! the query as it is.

/// Conn is the connection every query here runs on.
pub(crate) type Conn = crate::SqliteConn;

/// The connection as a statement of a pipeline sees it: the connection itself, since
/// [`pipelined!`] runs its statements one after the other here. See `pg.rs`.
pub(crate) type Pipe<'a> = crate::SqliteConn;

/// The backend of [`Conn`], for hand-written statements built row by row.
pub(crate) type Db = diesel::sqlite::Sqlite;

/// SQLite's `WITH` holds no `INSERT`: a usage call's lines are inserted after the call.
pub(crate) const WRITES_IN_WITH: bool = false;

/// Leaves the query as it is: the write transaction already excludes every other writer.
macro_rules! locked {
    ($query:expr) => {
        $query
    };
}

/// Leaves the query as it is: one writer at a time means nothing is held by another.
macro_rules! locked_skip {
    ($query:expr) => {
        $query
    };
}

/// Runs the statements one after the other, in the order written (a SQLite connection answers
/// each call in place; there is no round trip to save). See `pg.rs`.
macro_rules! pipelined {
    ($conn:ident => $first:expr, $second:expr, $third:expr, $fourth:expr $(,)?) => {
        async {
            let first = $first.await?;
            let second = $second.await?;
            let third = $third.await?;
            Ok::<_, ::diesel::result::Error>((first, second, third, $fourth.await?))
        }
        .await
    };
    ($conn:ident => $first:expr, $second:expr, $third:expr $(,)?) => {
        async {
            let first = $first.await?;
            let second = $second.await?;
            Ok::<_, ::diesel::result::Error>((first, second, $third.await?))
        }
        .await
    };
    ($conn:ident => $first:expr, $second:expr $(,)?) => {
        async {
            let first = $first.await?;
            Ok::<_, ::diesel::result::Error>((first, $second.await?))
        }
        .await
    };
    ($conn:ident => $only:expr $(,)?) => {
        $only.await
    };
}

/// The `n`th bind parameter of a hand-written statement (`sql_query`): SQLite's numbered form,
/// which, like PostgreSQL's `$n`, may be mentioned more than once.
pub(crate) fn bind(n: usize) -> String {
    format!("?{n}")
}

/// The rows of `account_and_lots_query!` for one account, read through Diesel's synchronous API
/// on the connection inside the wrapper. `diesel-async`'s wrapper renders a statement's SQL text
/// and copies its bind values and rows for every execution; here the prepared statement is found
/// by the query's type and its rows are read in place. It is the hottest read (every balance),
/// so it alone is worth the second path.
pub(crate) async fn account_and_lots_rows(
    conn: &mut Conn,
    app: &str,
    user: &str,
    now: time::PrimitiveDateTime,
) -> diesel::QueryResult<Vec<crate::ops::AccountAndLot>> {
    use crate::ops::account_and_lots_query;
    use crate::predicates::{ExpiringLot, HoldDue};
    use crate::rows::{AccountFigures, LotRow};
    use crate::schema::{accounts, lots};
    use diesel::prelude::*;

    let (app, user) = (app.to_owned(), user.to_owned());
    conn.spawn_blocking(move |conn| account_and_lots_query!(&app, &user, now).load(conn))
        .await
}

// The same files as `pg.rs` compiles, on purpose: that is what checks them against both dialects.
#[allow(clippy::duplicate_mod)]
#[path = "queries/apps.rs"]
pub(crate) mod apps;
#[allow(clippy::duplicate_mod)]
#[path = "queries/catalog.rs"]
pub(crate) mod catalog;
#[allow(clippy::duplicate_mod)]
#[path = "queries/checkout.rs"]
pub(crate) mod checkout;
#[allow(clippy::duplicate_mod)]
#[path = "queries/console.rs"]
pub(crate) mod console;
#[allow(clippy::duplicate_mod)]
#[allow(
    dead_code,
    reason = "`apply_in_turn` and `checkin_in_turn` serve PostgreSQL's batches; the group commit \
              here runs each write alone, its statements costing no round trip"
)]
#[path = "queries/ledger.rs"]
pub(crate) mod ledger;
#[allow(clippy::duplicate_mod)]
#[path = "queries/outbox.rs"]
pub(crate) mod outbox;
#[allow(clippy::duplicate_mod)]
#[path = "queries/stats.rs"]
pub(crate) mod stats;
#[allow(clippy::duplicate_mod)]
#[allow(
    dead_code,
    reason = "`track_in_turn` serves PostgreSQL's batches; the group commit here runs each write \
              alone"
)]
#[path = "queries/usage.rs"]
pub(crate) mod usage;
