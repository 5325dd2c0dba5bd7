//! What the ledger's queries share with the synchronous balance read on SQLite (see
//! `queries/ledger.rs` for the queries themselves, `sqlite.rs` for that read).

/// The account, whether a hold of it is due at `$now`, and its soonest-expiring lots, one more
/// than [`tally_ledger::BALANCE_LOTS`] (which tells whether there are more): one statement (see
/// `account_and_lots`), walking the `lots_expiring` index from its start. SQLite's form: SQLite
/// reads the lots of its one account in the index's order and stops at the `LIMIT`; PostgreSQL
/// would sort them all first, and reads a `LATERAL` form of it (`pg.rs`).
macro_rules! account_and_lots_query {
    ($app:expr, $user:expr, $now:expr) => {
        accounts::table
            .left_join(lots::table.on(lots::account_id.eq(accounts::id).and(ExpiringLot)))
            .filter(accounts::app_key.eq($app))
            .filter(accounts::user_id.eq($user))
            .order((lots::expires_at, lots::id))
            .limit(tally_ledger::BALANCE_LOTS + 1)
            .select((
                AccountFigures::as_select(),
                HoldDue($now),
                Option::<LotRow>::as_select(),
            ))
    };
}
pub(crate) use account_and_lots_query;

/// One row of [`account_and_lots_query!`].
pub(crate) type AccountAndLot = (
    crate::rows::AccountFigures,
    bool,
    Option<crate::rows::LotRow>,
);

/// What [`account_and_lots_query!`] read of one account.
#[derive(Debug, Default)]
pub(crate) struct FoldedAccount {
    /// Balance, held credits and the soonest-expiring lots (no holds).
    pub view: tally_ledger::AccountView,
    /// The account's id (none when it does not exist yet).
    pub id: Option<i64>,
    /// Whether an active hold of it is due at the instant of the read.
    pub hold_due: bool,
    /// When the soonest lot left unread expires (none when every expiring lot was read).
    pub next_unread: Option<time::OffsetDateTime>,
}

/// Keeps the first [`tally_ledger::BALANCE_LOTS`] of the soonest-expiring lots read one past
/// that many; answers them, whether more lots may expire at the latest instant among them than
/// they hold, and when the first lot left out expires.
pub(crate) fn keep_soonest(
    mut lots: Vec<tally_ledger::LotView>,
) -> (
    Vec<tally_ledger::LotView>,
    bool,
    Option<time::OffsetDateTime>,
) {
    let keep = usize::try_from(tally_ledger::BALANCE_LOTS).unwrap_or(0);
    if lots.len() <= keep {
        return (lots, false, None);
    }
    let next_unread = lots.get(keep).and_then(|l| l.expires_at);
    lots.truncate(keep);
    let partial = lots.last().is_some_and(|l| l.expires_at == next_unread);
    (lots, partial, next_unread)
}

/// The account as [`account_and_lots_query!`]'s rows describe it.
pub(crate) fn fold_account(rows: Vec<AccountAndLot>) -> FoldedAccount {
    let mut folded = FoldedAccount::default();
    let view = &mut folded.view;
    for (row, hold_due, lot) in rows {
        view.balance = row.balance;
        view.held = row.held;
        folded.id = Some(row.id);
        folded.hold_due = hold_due;
        view.lots.extend(lot.map(Into::into));
    }
    let (lots, partial, next_unread) = keep_soonest(std::mem::take(&mut view.lots));
    view.lots = lots;
    view.last_instant_partial = partial;
    folded.next_unread = next_unread;
    folded
}
