//! What the ledger's queries share with the synchronous balance read on SQLite (see
//! `queries/ledger.rs` for the queries themselves).

/// The account and its live lots, oldest lot first: one statement (see `account_and_lots`).
macro_rules! account_and_lots_query {
    ($app:expr, $user:expr) => {
        accounts::table
            .left_join(lots::table.on(lots::account_id.eq(accounts::id).and(LiveLot)))
            .filter(accounts::app_key.eq($app))
            .filter(accounts::user_id.eq($user))
            .order(lots::id)
            .select((AccountRow::as_select(), Option::<LotRow>::as_select()))
    };
}
pub(crate) use account_and_lots_query;

/// The account's view from [`account_and_lots_query!`]'s rows, and its id (none when the
/// account does not exist yet).
pub(crate) fn fold_account(
    rows: Vec<(crate::rows::AccountRow, Option<crate::rows::LotRow>)>,
) -> (tally_ledger::AccountView, Option<i64>) {
    let mut view = tally_ledger::AccountView::default();
    let mut account_id = None;
    for (row, lot) in rows {
        view.balance = row.balance;
        view.held = row.held;
        account_id = Some(row.id);
        view.lots.extend(lot.map(Into::into));
    }
    (view, account_id)
}

/// The balance read on SQLite through Diesel's synchronous API, on the connection inside the
/// wrapper (see `Store::account`). `diesel-async`'s wrapper renders a statement's SQL text and
/// copies its bind values and rows for every execution; here the prepared statement is found by
/// the query's type and its rows are read in place. It is the hottest read, so it alone is
/// worth the second path.
pub(crate) mod sqlite_sync {
    use diesel::prelude::*;
    use tally_ledger::AccountView;

    use crate::predicates::LiveLot;
    use crate::rows::{AccountRow, LotRow};
    use crate::schema::{accounts, lots};

    /// The account (without holds) and its live lots; `held` tells whether holds exist.
    pub(crate) fn account_and_lots(
        conn: &mut SqliteConnection,
        app: &str,
        user: &str,
    ) -> QueryResult<(AccountView, Option<i64>)> {
        let rows: Vec<(AccountRow, Option<LotRow>)> =
            account_and_lots_query!(app, user).load(conn)?;
        Ok(super::fold_account(rows))
    }
}
