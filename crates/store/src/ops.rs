//! What the ledger's queries share with the synchronous balance read on SQLite (see
//! `queries/ledger.rs` for the queries themselves, `sqlite.rs` for that read).

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

/// One row of [`account_and_lots_query!`].
pub(crate) type AccountAndLot = (crate::rows::AccountRow, Option<crate::rows::LotRow>);

/// The account's view from [`account_and_lots_query!`]'s rows, and its id (none when the
/// account does not exist yet).
pub(crate) fn fold_account(rows: Vec<AccountAndLot>) -> (tally_ledger::AccountView, Option<i64>) {
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
