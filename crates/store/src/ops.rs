//! What the ledger's queries share with the synchronous balance read on SQLite (see
//! `queries/ledger.rs` for the queries themselves, `sqlite.rs` for that read).

/// The account, when its soonest active hold runs out, and its soonest-expiring lots, one more
/// than [`tally_ledger::BALANCE_LOTS`] (which tells whether there are more): one statement (see
/// `account_and_lots`), walking the `lots_expiring` index from its start.
macro_rules! account_and_lots_query {
    ($app:expr, $user:expr) => {
        accounts::table
            .left_join(lots::table.on(lots::account_id.eq(accounts::id).and(ExpiringLot)))
            .filter(accounts::app_key.eq($app))
            .filter(accounts::user_id.eq($user))
            .order((lots::expires_at, lots::id))
            .limit(tally_ledger::BALANCE_LOTS + 1)
            .select((
                AccountRow::as_select(),
                NextHoldExpiry,
                Option::<LotRow>::as_select(),
            ))
    };
}
pub(crate) use account_and_lots_query;

/// One row of [`account_and_lots_query!`].
pub(crate) type AccountAndLot = (
    crate::rows::AccountRow,
    Option<time::PrimitiveDateTime>,
    Option<crate::rows::LotRow>,
);

/// What [`account_and_lots_query!`] read of one account.
#[derive(Debug, Default)]
pub(crate) struct FoldedAccount {
    /// Balance, held credits and the soonest-expiring lots (no holds).
    pub view: tally_ledger::AccountView,
    /// The account's id (none when it does not exist yet).
    pub id: Option<i64>,
    /// When its soonest active hold runs out.
    pub next_hold_expiry: Option<time::OffsetDateTime>,
}

/// The account as [`account_and_lots_query!`]'s rows describe it.
pub(crate) fn fold_account(rows: Vec<AccountAndLot>) -> FoldedAccount {
    let mut folded = FoldedAccount::default();
    let view = &mut folded.view;
    for (row, next_hold, lot) in rows {
        view.balance = row.balance;
        view.held = row.held;
        folded.id = Some(row.id);
        folded.next_hold_expiry = next_hold.map(crate::rows::from_db);
        view.lots.extend(lot.map(Into::into));
    }
    if view.lots.len() as i64 > tally_ledger::BALANCE_LOTS {
        view.lots.pop();
        view.more_expiring = true;
    }
    folded
}
