//! The queries compiled for PostgreSQL. Each file under `queries/` is compiled twice, here and in
//! `sqlite.rs`, so a construct one dialect lacks fails to build at its own line. The only
//! differences the files see are [`locked!`] — PostgreSQL takes row locks (`FOR UPDATE`), since
//! several nodes and pooled connections write at once —, how a hand-written statement names
//! its parameters ([`bind`]), and how the balance's one statement is read
//! ([`account_and_lots_rows`]).

/// Conn is the connection every query here runs on.
pub(crate) type Conn = diesel_async::AsyncPgConnection;

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

/// The `n`th bind parameter of a hand-written statement (`sql_query`), `$n`.
pub(crate) fn bind(n: usize) -> String {
    format!("${n}")
}

/// The rows of `account_and_lots_query!` for one account.
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
    use diesel_async::RunQueryDsl;

    account_and_lots_query!(app, user, now).load(conn).await
}

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
