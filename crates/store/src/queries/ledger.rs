//! The ledger's queries: movements, holds, check-ins, redemption codes, expiry and the audit. The
//! rules come from the ledger's planning functions (`plan_movement` and its siblings); this file

//! reads what they need and writes the plan they return.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::RunQueryDsl;
use tally_ledger::checkin::{CheckinPlan, CheckinRecord, CheckinRequest, plan_checkin};
use tally_ledger::codes::{CodeBatchRequest, RedeemRequest};
use tally_ledger::holds::{plan_capture, plan_release, plan_reserve};
use tally_ledger::notice::{NoticeSettings, needs_settings};
use tally_ledger::plan::{InTurn, NewLot, Plan, plan_expiry, plan_movement};
use tally_ledger::{
    AccountAudit, AccountQuery, AccountRef, AccountSummary, AccountView, BALANCE_LOTS,
    CheckinConfig, LedgerError, Movement, MovementKind, Transaction, TransactionQuery, TxnType,
};
use tally_ledger::{
    CaptureRequest, Hold, HoldStatus, HoldView, LotView, RedemptionCode, ReserveRequest,
};
use tally_webhooks::payload::{CheckinCompleted, Payload};
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use crate::StoreError;
use crate::cached::cached;
use crate::predicates::substr;
use crate::predicates::{ActiveHold, ExpiringLot, LastingLot, LiveLot};
use crate::rows::{
    AUDIT_SQL, AccountRow, AccountSummaryRow, AuditRow, CodeRow, HoldRow, LotRow, NewTxn, TxnRow,
    from_db, to_db,
};
use crate::schema::{
    accounts, checkin_configs, checkins, holds, lots, redeem_failures, redemption_codes,
    redemptions, transactions,
};

use super::{Conn, Db, Pipe, outbox};
use crate::ops::{FoldedAccount, fold_account, keep_soonest};

/// Locks the account row for this transaction, creating it on first use.
pub(super) async fn lock_account(
    conn: &mut Conn,
    account: &AccountRef,
    now: OffsetDateTime,
) -> Result<AccountRow, StoreError> {
    Ok(pipelined!(conn => locked_account(conn, account, now))?)
}

/// [`lock_account`], for a pipeline.
pub(super) async fn locked_account(
    conn: &mut Pipe<'_>,
    account: &AccountRef,
    now: OffsetDateTime,
) -> QueryResult<AccountRow> {
    let find = || {
        locked!(
            accounts::table
                .filter(accounts::app_key.eq(&account.app))
                .filter(accounts::user_id.eq(&account.user))
                .select(AccountRow::as_select())
        )
    };
    if let Some(row) = find().first(conn).await.optional()? {
        return Ok(row);
    }
    create_account(conn, account, now).await?;
    find().first(conn).await
}

/// [`lock_account`] for a write under an idempotency key: also answers the id of the transaction
/// the account already holds under `key`, read in the same statement as the lock.
///
/// On PostgreSQL the key's lookup sees the statement's snapshot: a write under the same key that
/// committed while this one waited for the account's lock (another node's, or one outside a
/// batch) is not seen. [`apply`] looks again when its plan is refused; otherwise the unique index
/// on `(account_id, idempotency_key)` refuses this write's insert, and the write is retried
/// (`StoreError::IdempotencyRace`) and answered as a replay.
async fn lock_account_keyed(
    conn: &mut Conn,
    account: &AccountRef,
    key: &str,
    now: OffsetDateTime,
) -> Result<(AccountRow, Option<i64>), StoreError> {
    let find = || {
        let stored = transactions::table
            .filter(transactions::account_id.eq(accounts::id))
            .filter(transactions::idempotency_key.eq(key))
            .select(transactions::id)
            .single_value();
        locked!(
            accounts::table
                .filter(accounts::app_key.eq(&account.app))
                .filter(accounts::user_id.eq(&account.user))
                .select((AccountRow::as_select(), stored))
        )
    };
    if let Some(found) = find().first(conn).await.optional()? {
        return Ok(found);
    }
    pipelined!(conn => create_account(conn, account, now))?;
    Ok(find().first(conn).await?)
}

/// Inserts the account's row unless it exists.
async fn create_account(
    conn: &mut Pipe<'_>,
    account: &AccountRef,
    now: OffsetDateTime,
) -> QueryResult<()> {
    diesel::insert_into(accounts::table)
        .values((
            accounts::app_key.eq(&account.app),
            accounts::user_id.eq(&account.user),
            accounts::balance.eq(0_i64),
            accounts::held.eq(0_i64),
            accounts::created_at.eq(to_db(now)),
            accounts::updated_at.eq(to_db(now)),
        ))
        .on_conflict((accounts::app_key, accounts::user_id))
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

async fn lock_account_by_id(conn: &mut Conn, id: i64) -> Result<AccountRow, StoreError> {
    Ok(
        locked!(accounts::table.find(id).select(AccountRow::as_select()))
            .first(conn)
            .await?,
    )
}

/// The account's lots due at `now`, soonest first.
async fn due_lots(
    conn: &mut Pipe<'_>,
    account_id: i64,
    now: OffsetDateTime,
) -> QueryResult<Vec<LotRow>> {
    lots::table
        .filter(lots::account_id.eq(account_id))
        .filter(ExpiringLot)
        .filter(lots::expires_at.le(to_db(now)))
        .order((lots::expires_at, lots::id))
        .select(LotRow::as_select())
        .load(conn)
        .await
}

/// The first `limit` of the account's lots that expire after `now`, soonest first.
async fn expiring_lots(
    conn: &mut Conn,
    account_id: i64,
    now: OffsetDateTime,
    limit: i64,
) -> Result<Vec<LotRow>, StoreError> {
    Ok(lots::table
        .filter(lots::account_id.eq(account_id))
        .filter(ExpiringLot)
        .filter(lots::expires_at.gt(to_db(now)))
        .order((lots::expires_at, lots::id))
        .limit(limit)
        .select(LotRow::as_select())
        .load(conn)
        .await?)
}

/// The first `limit` of the account's lots that never expire, oldest first.
async fn lasting_lots(
    conn: &mut Conn,
    account_id: i64,
    limit: i64,
) -> Result<Vec<LotRow>, StoreError> {
    Ok(lots::table
        .filter(lots::account_id.eq(account_id))
        .filter(LastingLot)
        .order(lots::id)
        .limit(limit)
        .select(LotRow::as_select())
        .load(conn)
        .await?)
}

/// The account's active holds that run out at or before `until`, soonest first, at most `limit`.
async fn active_holds(
    conn: &mut Conn,
    account_id: i64,
    until: OffsetDateTime,
    limit: i64,
) -> Result<Vec<HoldView>, StoreError> {
    let rows: Vec<HoldRow> = holds::table
        .filter(holds::account_id.eq(account_id))
        .filter(ActiveHold)
        .filter(holds::expires_at.le(to_db(until)))
        .order((holds::expires_at, holds::id))
        .limit(limit)
        .select(HoldRow::as_select())
        .load(conn)
        .await?;
    Ok(rows.iter().map(HoldRow::view).collect())
}

/// The active holds due at `now` (every one of them).
async fn due_holds(
    conn: &mut Conn,
    account_id: i64,
    now: OffsetDateTime,
) -> Result<Vec<HoldView>, StoreError> {
    active_holds(conn, account_id, now, i64::MAX).await
}

/// What planning at `now` needs of a locked account besides its row: every lot and active hold
/// due at `now` (they expire first). A debit also needs [`burn_lots`].
pub(super) async fn state(
    conn: &mut Conn,
    account: &AccountRow,
    now: OffsetDateTime,
) -> Result<AccountView, StoreError> {
    let lots = pipelined!(conn => due_lots(conn, account.id, now))?;
    planning_view(
        conn,
        account,
        lots.into_iter().map(Into::into).collect(),
        now,
    )
    .await
}

/// The account's view for planning, with `lots` and the active holds due at `now`.
async fn planning_view(
    conn: &mut Conn,
    account: &AccountRow,
    lots: Vec<LotView>,
    now: OffsetDateTime,
) -> Result<AccountView, StoreError> {
    let holds = if account.held != 0 {
        due_holds(conn, account.id, now).await?
    } else {
        vec![]
    };
    Ok(AccountView {
        balance: account.balance,
        held: account.held,
        lots,
        last_instant_partial: true,
        holds,
    })
}

/// The most lots of each kind a debit reads first ([`first_read`]), and the first batch of a
/// later read (see [`burn_lots`]).
pub(super) const FIRST_READ: i64 = 16;

/// The first lots of an account that expire, due or not (`bind(2)` of them, soonest first), and
/// the first that never expire (`bind(2)` too, oldest first), in one statement: each half walks
/// its own index (`lots_expiring`, `lots_lasting`) and stops at its `LIMIT`.
fn first_lots_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let (account, limit) = (super::bind(1), super::bind(2));
        format!(
            "SELECT id, remaining, expires_at FROM (
               SELECT id, remaining, expires_at FROM lots
               WHERE account_id = {account} AND remaining > 0 AND expires_at IS NOT NULL
               ORDER BY expires_at, id LIMIT {limit}) e
             UNION ALL
             SELECT id, remaining, expires_at FROM (
               SELECT id, remaining, expires_at FROM lots
               WHERE account_id = {account} AND remaining > 0 AND expires_at IS NULL
               ORDER BY id LIMIT {limit}) l"
        )
    })
}

/// The first lots of an account in burn order, read in one statement (see [`first_lots_sql`]).
pub(super) struct FirstLots {
    rows: Vec<LotRow>,
    /// How many lots of each kind (expiring, lasting) the read asked for.
    limit: i64,
}

/// How many lots of each kind a debit of `credits` reads first: every lot holds at least one
/// credit, so `credits` lots of either kind cover it unless some are due; never more than
/// [`FIRST_READ`]. A debit of one credit reads a lot of each kind, however many the account
/// holds.
fn first_read(credits: i64) -> i64 {
    credits.clamp(0, FIRST_READ)
}

/// Reads [`FirstLots`] for a debit of `credits`: the first [`first_read`] lots that expire and
/// as many that do not.
pub(super) async fn first_lots(
    conn: &mut Pipe<'_>,
    account_id: i64,
    credits: i64,
) -> QueryResult<FirstLots> {
    use diesel::sql_types::BigInt;
    let limit = first_read(credits);
    let rows = cached(
        diesel::sql_query(first_lots_sql())
            .bind::<BigInt, _>(account_id)
            .bind::<BigInt, _>(limit),
    )
    .load(conn)
    .await?;
    Ok(FirstLots { rows, limit })
}

impl FirstLots {
    /// The lots a debit of `credits` plans with, when the read holds all it needs: every due
    /// lot, then lots in burn order until they cover `credits` (or all of them). `None` when it
    /// may not: the lots read run out before covering while more of their kind may follow.
    fn for_debit(self, credits: i64, now: OffsetDateTime) -> Option<Vec<LotView>> {
        let (mut expiring, mut lasting): (Vec<LotRow>, Vec<LotRow>) =
            self.rows.into_iter().partition(|r| r.expires_at.is_some());
        // `UNION ALL` promises no order: each half is put back in its own.
        expiring.sort_unstable_by_key(|r| (r.expires_at, r.id));
        lasting.sort_unstable_by_key(|r| r.id);
        let expiring_cut = expiring.len() as i64 == self.limit;
        let lasting_cut = lasting.len() as i64 == self.limit;
        let at = to_db(now);
        let due = expiring
            .iter()
            .take_while(|r| r.expires_at <= Some(at))
            .count();
        let later = expiring.split_off(due);
        let mut lots: Vec<LotView> = expiring.into_iter().map(Into::into).collect();
        let mut need = credits;
        for (rows, cut) in [(later, expiring_cut), (lasting, lasting_cut)] {
            for row in rows {
                if need <= 0 {
                    break;
                }
                need -= row.remaining;
                lots.push(row.into());
            }
            if need > 0 && cut {
                // More of this kind may follow: more to burn, or (a read of expiring lots that
                // are all due) more due lots.
                return None;
            }
        }
        Some(lots)
    }
}

/// Adds to `view` the account's live lots in consumption order (soonest-expiring first, then
/// never-expiring, oldest first) until they cover `credits`, or all of them when they cannot.
///
/// Every lot holds at least one credit, so `credits` lots always cover `credits`: a read asks for
/// a few, then twice as many, never more than `credits`, and stops at the first that covers.
pub(super) async fn burn_lots(
    conn: &mut Conn,
    account_id: i64,
    view: &mut AccountView,
    credits: i64,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let mut need = credits;
    for lasting in [false, true] {
        if need <= 0 {
            break;
        }
        let mut limit = first_read(need);
        loop {
            let rows = if lasting {
                lasting_lots(conn, account_id, limit).await?
            } else {
                expiring_lots(conn, account_id, now, limit).await?
            };
            let all_read = (rows.len() as i64) < limit;
            let mut covered = 0;
            let mut taken = Vec::new();
            for row in rows {
                if covered >= need {
                    break;
                }
                covered += row.remaining;
                taken.push(row);
            }
            if covered >= need || all_read || limit >= need {
                need -= covered;
                view.lots.extend(taken.into_iter().map(Into::into));
                break;
            }
            limit = (limit * 2).min(need);
        }
    }
    Ok(())
}

/// [`state`] with the live lots a movement of `kind` burns (see [`burn_lots`]).
pub(super) async fn state_for(
    conn: &mut Conn,
    account: &AccountRow,
    kind: &MovementKind,
    now: OffsetDateTime,
) -> Result<AccountView, StoreError> {
    let credits = kind.burns();
    let read = if credits > 0 {
        Some(pipelined!(conn => first_lots(conn, account.id, credits))?)
    } else {
        None
    };
    debit_state(conn, account, read, credits, now).await
}

/// [`state`] with the live lots a debit of `credits` burns: from `read` (usually one statement)
/// when it holds them all, else read in full.
pub(super) async fn debit_state(
    conn: &mut Conn,
    account: &AccountRow,
    read: Option<FirstLots>,
    credits: i64,
    now: OffsetDateTime,
) -> Result<AccountView, StoreError> {
    if credits > 0
        && let Some(lots) = read.and_then(|r| r.for_debit(credits, now))
    {
        return planning_view(conn, account, lots, now).await;
    }
    let mut view = state(conn, account, now).await?;
    burn_lots(conn, account.id, &mut view, credits, now).await?;
    Ok(view)
}

/// [`state`] with `hold` among the active holds even when it is not due or holds nothing (a
/// capture or a release works on it).
pub(super) async fn state_with_hold(
    conn: &mut Conn,
    account: &AccountRow,
    hold: &HoldRow,
    now: OffsetDateTime,
) -> Result<AccountView, StoreError> {
    let mut view = state(conn, account, now).await?;
    if hold.status == HoldStatus::Active.as_str() && !view.holds.iter().any(|h| h.id == hold.id) {
        view.holds.push(hold.view());
    }
    Ok(view)
}

/// What the movement's own row carries besides the plan's figures.
pub(crate) struct MainRow<'a> {
    pub description: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: Option<&'a str>,
    pub metadata: Option<String>,
    pub actor: Option<&'a str>,
}

impl<'a> MainRow<'a> {
    /// What `movement`'s own row carries: its description, key (with `request_hash`), metadata
    /// and actor.
    fn of(movement: &'a Movement, request_hash: &'a str) -> Self {
        Self {
            description: &movement.description,
            idempotency_key: movement.idempotency_key.as_deref(),
            request_hash: movement.idempotency_key.as_ref().map(|_| request_hash),
            metadata: movement.metadata.as_ref().map(|m| m.to_string()),
            actor: movement.actor.as_deref(),
        }
    }
}

/// Writes a plan; returns the movement's own transaction, if the plan has one.
pub(super) async fn write_plan(
    conn: &mut Conn,
    account: &AccountRow,
    plan: &Plan,
    main: Option<MainRow<'_>>,
    now: OffsetDateTime,
) -> Result<Option<Transaction>, StoreError> {
    write_plan_but_last(conn, account, plan, main, now)
        .await?
        .write(conn)
        .await
}

/// What [`write_plan_but_last`] leaves to write, in one round trip with whatever the caller adds
/// to it: the movement's new lot ([`LastTrip::insert_lot`]) and the events it announces (the
/// caller may push its own).
pub(super) struct LastTrip<'a> {
    /// The movement's own transaction, if the plan has one.
    pub written: Option<Transaction>,
    pub events: Vec<outbox::OutboxRow>,
    account_id: i64,
    new_lot: Option<&'a NewLot>,
    at: PrimitiveDateTime,
}

impl LastTrip<'_> {
    /// Sends the last round trip as it is: the new lot and the events. Answers the movement's
    /// own transaction, if the plan has one.
    pub(super) async fn write(self, conn: &mut Conn) -> Result<Option<Transaction>, StoreError> {
        pipelined!(conn =>
            self.insert_lot(conn),
            outbox::insert_events(conn, &self.events),
        )?;
        Ok(self.written)
    }

    /// Inserts the movement's new lot, if it has one that holds credits.
    pub(super) async fn insert_lot(&self, conn: &mut Pipe<'_>) -> QueryResult<()> {
        let Some((txn, lot)) = self.written.as_ref().zip(self.new_lot) else {
            return Ok(());
        };
        insert_lots(conn, &[(self.account_id, txn.id, lot, self.at)]).await
    }
}

/// [`write_plan`] but for its last round trip, which the caller sends with statements and events
/// of its own.
pub(super) async fn write_plan_but_last<'p>(
    conn: &mut Conn,
    account: &AccountRow,
    plan: &'p Plan,
    main: Option<MainRow<'_>>,
    now: OffsetDateTime,
) -> Result<LastTrip<'p>, StoreError> {
    let at = to_db(now);
    for entry in &plan.expiries {
        let metadata = entry.expired_lot.map(|id| format!("{{\"lot_id\":{id}}}"));
        diesel::insert_into(transactions::table)
            .values(NewTxn {
                account_id: account.id,
                app_key: &account.app_key,
                user_id: &account.user_id,
                txn_type: TxnType::Expiry.as_str(),
                amount: entry.amount,
                balance_after: entry.balance_after,
                description: "Credits expired",
                idempotency_key: None,
                request_hash: None,
                metadata,
                actor: None,
                created_at: at,
            })
            .execute(conn)
            .await?;
    }
    let before = (account.balance, account.held);
    let (written, settings) = match (&plan.main, main) {
        (Some(entry), Some(main)) => {
            let needed = needs_settings(before, plan, Some(entry.amount));
            let insert = cached(
                diesel::insert_into(transactions::table)
                    .values(NewTxn {
                        account_id: account.id,
                        app_key: &account.app_key,
                        user_id: &account.user_id,
                        txn_type: entry.txn_type.as_str(),
                        amount: entry.amount,
                        balance_after: entry.balance_after,
                        description: main.description,
                        idempotency_key: main.idempotency_key,
                        request_hash: main.request_hash,
                        metadata: main.metadata,
                        actor: main.actor,
                        created_at: at,
                    })
                    .returning(TxnRow::as_returning()),
            );
            // The movement's row, the account's new figures, the lots' and the app's settings
            // for the events touch different rows: one round trip (the first lot's update goes
            // with the others; any further ones follow). Only the insert can break a unique key
            // (a concurrent write under the same key).
            let (row, (), settings, ()): (TxnRow, (), NoticeSettings, ()) = pipelined!(conn =>
                insert.get_result(conn),
                set_figures(conn, account.id, (plan.balance, plan.held), at),
                outbox::app_hooks(conn, &account.app_key, needed),
                set_lots(conn, &plan.lot_updates),
            )
            .map_err(|e| match e {
                DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                    StoreError::IdempotencyRace
                }
                e => e.into(),
            })?;
            (Some(Transaction::try_from(row)?), settings)
        }
        _ => {
            let needed = needs_settings(before, plan, None);
            pipelined!(conn => set_lots(conn, &plan.lot_updates))?;
            if plan.balance != account.balance || plan.held != account.held {
                pipelined!(conn => set_figures(conn, account.id, (plan.balance, plan.held), at))?;
            }
            let settings = pipelined!(conn => outbox::app_hooks(conn, &account.app_key, needed))?;
            (None, settings)
        }
    };
    for &hold_id in &plan.expired_holds {
        diesel::update(holds::table.find(hold_id))
            .set((
                holds::status.eq(HoldStatus::Expired.as_str()),
                holds::updated_at.eq(at),
            ))
            .execute(conn)
            .await?;
    }
    if !plan.expired_holds.is_empty() {
        super::usage::release_allowances(conn, &plan.expired_holds).await?;
    }
    let events = outbox::ledger_event_rows(account, plan, written.as_ref(), settings, now);
    Ok(LastTrip {
        written,
        events,
        account_id: account.id,
        new_lot: plan.new_lot.as_ref().filter(|lot| lot.amount > 0),
        at,
    })
}

/// Sets the account's balance and held credits, `(balance, held)`.
async fn set_figures(
    conn: &mut Pipe<'_>,
    account_id: i64,
    (balance, held): (i64, i64),
    at: PrimitiveDateTime,
) -> QueryResult<()> {
    cached(diesel::update(accounts::table.find(account_id)).set((
        accounts::balance.eq(balance),
        accounts::held.eq(held),
        accounts::updated_at.eq(at),
    )))
    .execute(conn)
    .await
    .map(drop)
}

/// Sets the remainders of lots, `(lot id, remaining)`, one statement each.
async fn set_lots(conn: &mut Pipe<'_>, updates: &[(i64, i64)]) -> QueryResult<()> {
    for &(lot_id, remaining) in updates {
        cached(diesel::update(lots::table.find(lot_id)).set(lots::remaining.eq(remaining)))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Applies a movement inside the caller's write transaction.
pub(crate) async fn apply(
    conn: &mut Conn,
    movement: &Movement,
    request_hash: &str,
    now: OffsetDateTime,
) -> Result<Transaction, StoreError> {
    apply_announcing(conn, movement, request_hash, Vec::new(), now).await
}

/// [`apply`], adding `first` to the outbox before the movement's own events, in the movement's
/// last round trip (or alone, when the movement is a replay).
pub(crate) async fn apply_announcing(
    conn: &mut Conn,
    movement: &Movement,
    request_hash: &str,
    first: Vec<outbox::OutboxRow>,
    now: OffsetDateTime,
) -> Result<Transaction, StoreError> {
    let (account, stored) = match &movement.idempotency_key {
        Some(key) => lock_account_keyed(conn, &movement.account, key, now).await?,
        None => (lock_account(conn, &movement.account, now).await?, None),
    };
    if let Some(id) = stored {
        let row: TxnRow = transactions::table
            .find(id)
            .select(TxnRow::as_select())
            .first(conn)
            .await?;
        let replay = replayed(row, request_hash)?;
        pipelined!(conn => outbox::insert_events(conn, &first))?;
        return Ok(replay);
    }
    let state = state_for(conn, &account, &movement.kind, now).await?;
    let plan = match plan_movement(&state, &movement.kind, now) {
        Ok(plan) => plan,
        Err(refusal) => {
            // The key's lookup saw the snapshot of the statement that waited for the account's
            // lock; a write under the key committed meanwhile (and the refusal may be its doing:
            // it spent what this one would) is seen by a statement of its own, and answers.
            if let Some(key) = &movement.idempotency_key
                && let Some(row) = transactions::table
                    .filter(transactions::account_id.eq(account.id))
                    .filter(transactions::idempotency_key.eq(key))
                    .select(TxnRow::as_select())
                    .first(conn)
                    .await
                    .optional()?
            {
                let replay = replayed(row, request_hash)?;
                pipelined!(conn => outbox::insert_events(conn, &first))?;
                return Ok(replay);
            }
            return Err(refusal.into());
        }
    };
    let main = MainRow::of(movement, request_hash);
    let mut last = write_plan_but_last(conn, &account, &plan, Some(main), now).await?;
    last.events.splice(0..0, first);
    last.write(conn)
        .await?
        .ok_or(StoreError::Invariant("movement wrote no transaction"))
}

/// How [`apply_in_turn`] answers one write.
enum Turn {
    /// Answered without writing: a refusal, or a replay of a movement the account holds.
    Answered(Result<Transaction, StoreError>),
    /// Written: the `n`th movement written.
    Written(usize),
    /// Under the key of the `n`th movement written: its replay when `same` request, else
    /// refused.
    SameKey { n: usize, same: bool },
}

/// A movement [`write_in_turn`] writes: its account as it was locked, what its transaction
/// carries, its instant and its plan.
pub(super) struct Planned<'w> {
    pub(super) account: &'w AccountRow,
    pub(super) main: MainRow<'w>,
    /// The transaction's metadata as given, which it answers.
    pub(super) metadata: Option<&'w serde_json::Value>,
    /// The movement's own instant: it is planned, stamped and announced at it.
    pub(super) now: OffsetDateTime,
    pub(super) plan: Plan,
}

/// Applies debits ([`MovementKind::plans_in_turn`]) of one or more accounts inside the
/// caller's write transaction, as if each ran alone, one after another in the order given —
/// sorted by account (app, then user), each account's debits in arrival order — with a few
/// statements for them all: the accounts are locked in one statement, in that order; their keys
/// and first lots are read in one round trip; each debit is planned on what the ones before it
/// leave ([`InTurn`]), at its own instant; then every transaction is one insert, the accounts'
/// figures one update, the lots' remainders one update, and the events one insert. On
/// PostgreSQL that is four round trips for them all where one at a time takes four for each
/// (more for accounts with held credits or lots the first read does not cover). The statements are
/// PostgreSQL's (a `LATERAL` join): PostgreSQL's batches use this, SQLite's group commit does
/// not.
///
/// Each write keeps the outcome it would have had alone: refused (its refusal; an account that
/// does not exist holds nothing, and none is created), a replay of a movement the account holds
/// or of an earlier debit here (its movement), a key reused with other figures (refused). The
/// keys are read once the locks are granted, so a movement another node committed under one of
/// them meanwhile is seen.
///
/// Answers `None`, having written nothing, when the debits are better applied one at a time:
/// a debit to be written finds a lot or a hold due at its instant (expiries are written and
/// announced between movements).
pub(crate) async fn apply_in_turn(
    conn: &mut Conn,
    writes: &[(&Movement, &str, OffsetDateTime)],
) -> Result<Option<Vec<Result<Transaction, StoreError>>>, StoreError> {
    let runs: Vec<&[(&Movement, &str, OffsetDateTime)]> = writes
        .chunk_by(|(a, ..), (b, ..)| a.account == b.account)
        .collect();
    // Each debit is planned at its own instant; the accounts are read at the latest, so that
    // what comes due for any of them is read (and sends them back to one at a time).
    let Some(latest) = writes.iter().map(|&(.., now)| now).max() else {
        return Ok(Some(Vec::new()));
    };
    let refs: Vec<&AccountRef> = runs.iter().map(|run| &run[0].0.account).collect();
    let accounts = lock_accounts(conn, &refs).await?;
    let mut ids = Vec::new();
    let mut wants = Vec::new();
    let mut keys = Vec::new();
    for (run, account) in runs.iter().zip(&accounts) {
        if let Some(account) = account {
            let burns = run.iter().map(|(m, ..)| m.kind.burns());
            ids.push(account.id);
            wants.push((account.id, burns.fold(0_i64, i64::saturating_add)));
            keys.extend(
                run.iter()
                    .filter_map(|(m, ..)| m.idempotency_key.as_deref()),
            );
        }
    }
    let (stored, lots) = pipelined!(conn =>
        stored_under(conn, &ids, &keys),
        first_lots_each(conn, &wants),
    )?;
    let mut lots = lots.into_iter();
    let nothing = || AccountView {
        balance: 0,
        held: 0,
        lots: Vec::new(),
        last_instant_partial: false,
        holds: Vec::new(),
    };
    let mut turns = Vec::with_capacity(writes.len());
    let mut planned: Vec<Planned> = Vec::new();
    let mut wanted = wants.iter().zip(&mut lots);
    for (run, account) in runs.into_iter().zip(&accounts) {
        let mut state = match account {
            Some(account) => {
                let (&(_, burns), read) =
                    wanted.next().ok_or(StoreError::Invariant("a run unread"))?;
                InTurn::new(debit_state(conn, account, Some(read), burns, latest).await?)
            }
            None => InTurn::new(nothing()),
        };
        let first = planned.len();
        for &(movement, hash, now) in run {
            let key = movement.idempotency_key.as_deref();
            if let (Some(key), Some(account)) = (key, account) {
                let mine = |r: &&TxnRow| r.idempotency_key.as_deref() == Some(key);
                let theirs =
                    |r: &&TxnRow| r.app_key == account.app_key && r.user_id == account.user_id;
                if let Some(row) = stored.iter().filter(theirs).find(mine) {
                    turns.push(Turn::Answered(replayed(row.clone(), hash)));
                    continue;
                }
                let earlier = planned[first..]
                    .iter()
                    .position(|p| p.main.idempotency_key == Some(key));
                if let Some(n) = earlier.map(|n| first + n) {
                    let same = planned[n].main.request_hash == Some(hash);
                    turns.push(Turn::SameKey { n, same });
                    continue;
                }
            }
            match (state.plan(&movement.kind, now), account) {
                (Ok(plan), Some(account))
                    if plan.expiries.is_empty() && plan.expired_holds.is_empty() =>
                {
                    turns.push(Turn::Written(planned.len()));
                    planned.push(Planned {
                        account,
                        main: MainRow::of(movement, hash),
                        metadata: movement.metadata.as_ref(),
                        now,
                        plan,
                    });
                }
                (Ok(_), _) => return Ok(None),
                (Err(refusal), _) => turns.push(Turn::Answered(Err(refusal.into()))),
            }
        }
    }
    let (written, events) = write_in_turn(conn, &planned, latest).await?;
    let events: Vec<_> = events.into_iter().flatten().collect();
    pipelined!(conn => outbox::insert_events(conn, &events))?;
    Ok(Some(
        turns
            .into_iter()
            .map(|turn| match turn {
                Turn::Answered(answer) => answer,
                Turn::Written(n) | Turn::SameKey { n, same: true } => Ok(written[n].clone()),
                Turn::SameKey { same: false, .. } => Err(LedgerError::IdempotencyKeyReused.into()),
            })
            .collect(),
    ))
}

/// Writes the movements planned in turn by [`apply_in_turn`] or [`checkin_in_turn`] (none of
/// which expires anything; a grant's new lot is the caller's to insert) in one round trip: the
/// transactions, the accounts' final figures (updated at `latest`, the last movement's instant)
/// and the lots' final remainders, with a read of the apps' event settings where the events
/// need them. Answers each movement's transaction and the events it announces, as it would have
/// alone; the caller sends those.
pub(super) async fn write_in_turn(
    conn: &mut Conn,
    planned: &[Planned<'_>],
    latest: OffsetDateTime,
) -> Result<(Vec<Transaction>, Vec<Vec<outbox::OutboxRow>>), StoreError> {
    if planned.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    // Each account's figures before each of its movements, and after the last.
    let mut figures = std::collections::BTreeMap::new();
    let mut befores = Vec::with_capacity(planned.len());
    let mut apps: Vec<(&str, bool)> = Vec::new();
    for p in planned {
        let account = p.account;
        let before = figures
            .insert(account.id, (p.plan.balance, p.plan.held))
            .unwrap_or((account.balance, account.held));
        befores.push(before);
        let needed = needs_settings(before, &p.plan, p.plan.main.as_ref().map(|e| e.amount));
        match apps.iter_mut().find(|(app, _)| *app == account.app_key) {
            Some((_, wanted)) => *wanted |= needed,
            None => apps.push((&account.app_key, needed)),
        }
    }
    let figures: Vec<(i64, i64, i64)> =
        figures.into_iter().map(|(id, (b, h))| (id, b, h)).collect();
    let mut lots = std::collections::BTreeMap::new();
    lots.extend(
        planned
            .iter()
            .flat_map(|p| p.plan.lot_updates.iter().copied()),
    );
    let lots: Vec<(i64, i64)> = lots.into_iter().collect();
    let (ids, (), settings, ()) = pipelined!(conn =>
        insert_run(conn, planned),
        set_figures_of(conn, &figures, to_db(latest)),
        async {
            let mut settings = Vec::with_capacity(apps.len());
            for &(app, needed) in &apps {
                settings.push((app, outbox::app_hooks(conn, app, needed).await?));
            }
            QueryResult::Ok(settings)
        },
        set_lots_of(conn, &lots),
    )
    .map_err(|e| match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            StoreError::IdempotencyRace
        }
        e => e.into(),
    })?;
    if ids.len() != planned.len() {
        return Err(StoreError::Invariant(
            "a run's insert answered another count",
        ));
    }
    let mut events = Vec::with_capacity(planned.len());
    let mut written = Vec::with_capacity(planned.len());
    for ((p, id), (balance, held)) in planned.iter().zip(ids).zip(befores) {
        let entry = p
            .plan
            .main
            .as_ref()
            .ok_or(StoreError::Invariant("a movement planned no transaction"))?;
        let txn = Transaction {
            id,
            app: p.account.app_key.clone(),
            user: p.account.user_id.clone(),
            txn_type: entry.txn_type,
            amount: entry.amount,
            balance_after: entry.balance_after,
            description: p.main.description.to_owned(),
            metadata: p.metadata.cloned(),
            idempotency_key: p.main.idempotency_key.map(str::to_owned),
            actor: p.main.actor.map(str::to_owned),
            created_at: from_db(to_db(p.now)),
        };
        let settings = settings
            .iter()
            .find(|(app, _)| *app == p.account.app_key)
            .map(|&(_, s)| s)
            .unwrap_or_default();
        let before = AccountRow {
            balance,
            held,
            ..p.account.clone()
        };
        events.push(outbox::ledger_event_rows(
            &before,
            &p.plan,
            Some(&txn),
            settings,
            p.now,
        ));
        written.push(txn);
    }
    Ok((written, events))
}

/// Locks the accounts `refs` names (sorted by app, then user) in that order, in one statement;
/// answers each one's row, `None` for one that does not exist.
pub(super) async fn lock_accounts(
    conn: &mut Conn,
    refs: &[&AccountRef],
) -> Result<Vec<Option<AccountRow>>, StoreError> {
    Ok(pipelined!(conn => locked_accounts(conn, refs))?)
}

/// [`lock_accounts`], for a pipeline.
pub(super) async fn locked_accounts(
    conn: &mut Pipe<'_>,
    refs: &[&AccountRef],
) -> QueryResult<Vec<Option<AccountRow>>> {
    // `COLLATE "C"` orders by bytes, as the batch sorts its writes: one lock order everywhere.
    let sql = format!(
        "SELECT id, app_key, user_id, balance, held FROM accounts \
         WHERE (app_key, user_id) IN (VALUES {}) \
         ORDER BY app_key COLLATE \"C\", user_id COLLATE \"C\" FOR UPDATE",
        account_values(refs.len())
    );
    let query = bound_to_accounts(sql, refs);
    let rows: Vec<AccountRow> = cached(query).load(conn).await?;
    Ok(refs
        .iter()
        .map(|r| {
            rows.iter()
                .find(|a| a.app_key == r.app && a.user_id == r.user)
                .cloned()
        })
        .collect())
}

/// `sql`, which names `accounts` by an [`account_values`] list, with their keys bound.
pub(super) fn bound_to_accounts<'q>(
    sql: String,
    accounts: &[&'q AccountRef],
) -> diesel::query_builder::BoxedSqlQuery<'q, Db, diesel::query_builder::SqlQuery> {
    use diesel::sql_types::Text;
    let mut query = diesel::sql_query(sql).into_boxed::<Db>();
    for account in accounts {
        query = query
            .bind::<Text, _>(&account.app)
            .bind::<Text, _>(&account.user);
    }
    query
}

/// `rows` rows of an app and a user each, cast to `TEXT`: the `VALUES` list that names accounts
/// by their keys (bind them app, user, app, user, …).
pub(super) fn account_values(rows: usize) -> String {
    let row = |i: usize| {
        let (app, user) = (super::bind(2 * i + 1), super::bind(2 * i + 2));
        format!("(CAST({app} AS TEXT), CAST({user} AS TEXT))")
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// A lot read by [`first_lots_of`], and its account.
#[derive(QueryableByName)]
struct AccountLot {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    account_id: i64,
    #[diesel(embed)]
    lot: LotRow,
}

/// [`first_lots`] of several accounts in one statement: for each `(account id, credits)`, the
/// first [`first_read`] lots that expire and as many that do not.
async fn first_lots_of(conn: &mut Pipe<'_>, wants: &[(i64, i64)]) -> QueryResult<Vec<AccountLot>> {
    use diesel::sql_types::BigInt;
    if wants.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT x.account_id, l.id, l.remaining, l.expires_at \
         FROM (VALUES {}) AS x(account_id, wanted) CROSS JOIN LATERAL ( \
           (SELECT id, remaining, expires_at FROM lots \
            WHERE account_id = x.account_id AND remaining > 0 AND expires_at IS NOT NULL \
            ORDER BY expires_at, id LIMIT x.wanted) \
           UNION ALL \
           (SELECT id, remaining, expires_at FROM lots \
            WHERE account_id = x.account_id AND remaining > 0 AND expires_at IS NULL \
            ORDER BY id LIMIT x.wanted)) AS l",
        bigint_values(wants.len(), 2, 1)
    );
    let mut query = diesel::sql_query(sql).into_boxed::<Db>();
    for &(id, burns) in wants {
        query = query
            .bind::<BigInt, _>(id)
            .bind::<BigInt, _>(first_read(burns));
    }
    cached(query).load(conn).await
}

/// [`first_lots`] of several accounts in one statement ([`first_lots_of`]): for each `(account
/// id, credits)`, the read a debit of `credits` plans with, in the order given.
pub(super) async fn first_lots_each(
    conn: &mut Pipe<'_>,
    wants: &[(i64, i64)],
) -> QueryResult<Vec<FirstLots>> {
    let mut lots = first_lots_of(conn, wants).await?;
    Ok(wants
        .iter()
        .map(|&(id, burns)| {
            let (rows, rest) = std::mem::take(&mut lots)
                .into_iter()
                .partition(|l: &AccountLot| l.account_id == id);
            lots = rest;
            FirstLots {
                rows: rows.into_iter().map(|l| l.lot).collect(),
                limit: first_read(burns),
            }
        })
        .collect())
}

/// `rows` rows of `columns` parameters each, numbered from `first`, each cast to `BIGINT`: the
/// `VALUES` list of a statement that joins to it.
fn bigint_values(rows: usize, columns: usize, first: usize) -> String {
    let row = |r: usize| {
        let cells: Vec<String> = (0..columns)
            .map(|c| format!("CAST({} AS BIGINT)", super::bind(first + r * columns + c)))
            .collect();
        format!("({})", cells.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// Sets accounts' balances and held credits, `(id, balance, held)`, in one statement.
async fn set_figures_of(
    conn: &mut Pipe<'_>,
    figures: &[(i64, i64, i64)],
    at: PrimitiveDateTime,
) -> QueryResult<()> {
    use diesel::sql_types::{BigInt, Timestamp};
    let sql = format!(
        "UPDATE accounts SET balance = v.balance, held = v.held, updated_at = {} \
         FROM (VALUES {}) AS v(id, balance, held) WHERE accounts.id = v.id",
        super::bind(1),
        bigint_values(figures.len(), 3, 2)
    );
    let mut query = diesel::sql_query(sql)
        .into_boxed::<Db>()
        .bind::<Timestamp, _>(at);
    for &(id, balance, held) in figures {
        query = query
            .bind::<BigInt, _>(id)
            .bind::<BigInt, _>(balance)
            .bind::<BigInt, _>(held);
    }
    cached(query).execute(conn).await.map(drop)
}

/// Most lots one statement of [`set_lots_of`] updates: its texts, one per count, stay few.
const LOTS_PER_UPDATE: usize = 32;

/// Sets lots' remainders, `(lot id, remaining)`: one statement per [`LOTS_PER_UPDATE`] lots
/// (usually one; none for no lots).
async fn set_lots_of(conn: &mut Pipe<'_>, lots: &[(i64, i64)]) -> QueryResult<()> {
    use diesel::sql_types::BigInt;
    for chunk in lots.chunks(LOTS_PER_UPDATE) {
        let sql = format!(
            "UPDATE lots SET remaining = v.remaining FROM (VALUES {}) AS v(id, remaining) \
             WHERE lots.id = v.id",
            bigint_values(chunk.len(), 2, 1)
        );
        let mut query = diesel::sql_query(sql).into_boxed::<Db>();
        for &(id, remaining) in chunk {
            query = query.bind::<BigInt, _>(id).bind::<BigInt, _>(remaining);
        }
        cached(query).execute(conn).await?;
    }
    Ok(())
}

/// The transactions the accounts `ids` hold under any of `keys`.
async fn stored_under(conn: &mut Pipe<'_>, ids: &[i64], keys: &[&str]) -> QueryResult<Vec<TxnRow>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    transactions::table
        .filter(transactions::account_id.eq_any(ids))
        .filter(transactions::idempotency_key.eq_any(keys))
        .select(TxnRow::as_select())
        .load(conn)
        .await
}

/// Inserts the transactions of [`write_in_turn`]'s movements in one statement, whose text depends
/// only on how many there are (at most a batch's size); answers their ids in the order given.
async fn insert_run(conn: &mut Pipe<'_>, planned: &[Planned<'_>]) -> QueryResult<Vec<i64>> {
    use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
    let sql = format!(
        "INSERT INTO transactions (account_id, app_key, user_id, txn_type, amount, \
         balance_after, description, idempotency_key, request_hash, metadata, actor, created_at) \
         VALUES {} RETURNING id",
        super::usage::values_list(planned.len(), 12)
    );
    let mut query = diesel::sql_query(sql).into_boxed::<Db>();
    for p in planned {
        let (account, main) = (p.account, &p.main);
        let Some(entry) = &p.plan.main else {
            return Err(DieselError::QueryBuilderError(
                "a movement without its entry".into(),
            ));
        };
        query = query
            .bind::<BigInt, _>(account.id)
            .bind::<Text, _>(&account.app_key)
            .bind::<Text, _>(&account.user_id)
            .bind::<Text, _>(entry.txn_type.as_str())
            .bind::<BigInt, _>(entry.amount)
            .bind::<BigInt, _>(entry.balance_after)
            .bind::<Text, _>(main.description)
            .bind::<Nullable<Text>, _>(main.idempotency_key)
            .bind::<Nullable<Text>, _>(main.request_hash)
            .bind::<Nullable<Text>, _>(main.metadata.as_deref())
            .bind::<Nullable<Text>, _>(main.actor)
            .bind::<Timestamp, _>(to_db(p.now));
    }
    inserted_ids(conn, query).await
}

/// Runs `query`, a multi-row `INSERT … VALUES … RETURNING id` (cached by its text), and answers
/// the ids in the order of its rows.
pub(super) async fn inserted_ids(
    conn: &mut Pipe<'_>,
    query: diesel::query_builder::BoxedSqlQuery<'_, Db, diesel::query_builder::SqlQuery>,
) -> QueryResult<Vec<i64>> {
    #[derive(QueryableByName)]
    struct Inserted {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let mut ids: Vec<i64> = cached(query)
        .load::<Inserted>(conn)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    // PostgreSQL forms the rows of `VALUES` in order, each taking its id from the sequence as it
    // is formed, and a sequence only ascends (other inserts may take ids in between): sorted,
    // the ids are in the order of the rows, whatever order `RETURNING` answers them in.
    ids.sort_unstable();
    Ok(ids)
}

/// The answer to a request under a key the account already holds: the stored movement when the
/// request is the same, a refusal when the key came with other figures.
fn replayed(row: TxnRow, request_hash: &str) -> Result<Transaction, StoreError> {
    if row.request_hash.as_deref() == Some(request_hash) {
        Ok(Transaction::try_from(row)?)
    } else {
        Err(LedgerError::IdempotencyKeyReused.into())
    }
}

/// Claims the local day and grants the reward inside the caller's write transaction, under the
/// app's configuration, which it answers too.
pub(crate) async fn checkin(
    conn: &mut Conn,
    request: &CheckinRequest,
) -> Result<(CheckinRecord, CheckinConfig), StoreError> {
    // The account's lock and the app's configuration, in one round trip: the configuration may
    // be read before the lock is granted, as if a change committing meanwhile came after.
    let (account, stored) = pipelined!(conn =>
        locked_account(conn, &request.account, request.now),
        stored_checkin_config(conn, &request.account.app),
    )?;
    let config = checkin_config_of(stored)?.unwrap_or_default();
    // Refused before the remaining reads while check-ins are switched off.
    config.claimable_day(request.now)?;
    // The last check-in and the account's due lots, in one round trip.
    let (previous, due) = pipelined!(conn =>
        latest_checkin_row(conn, &request.account),
        due_lots(conn, account.id, request.now),
    )?;
    let previous = previous.map(checkin_record).transpose()?;
    let due = due.into_iter().map(Into::into).collect();
    let state = planning_view(conn, &account, due, request.now).await?;
    let checkin = plan_checkin(&config, previous.as_ref(), &state, request.now)?;
    let description = checkin.description();
    let main = MainRow {
        description: &description,
        idempotency_key: None,
        request_hash: None,
        metadata: None,
        actor: None,
    };
    let mut last =
        write_plan_but_last(conn, &account, &checkin.plan, Some(main), request.now).await?;
    let (txn_id, balance_after) = last
        .written
        .as_ref()
        .map(|txn| (txn.id, txn.balance_after))
        .ok_or(StoreError::Invariant("check-in wrote no transaction"))?;
    let CheckinPlan {
        day,
        streak,
        reward,
        ..
    } = checkin;
    let record = CheckinRecord {
        day,
        streak,
        awarded: reward,
        balance_after,
    };
    last.events.push(checkin_completed(
        &request.account,
        &record,
        txn_id,
        request.now,
    ));
    // The unique constraint on (app, user, day) is what makes this once per day. The reward's
    // lot, the day's row and the events: one round trip.
    pipelined!(conn =>
        last.insert_lot(conn),
        insert_checkins(conn, &[(&request.account, &record, txn_id, request.now)]),
        outbox::insert_events(conn, &last.events),
    )
    .map_err(|e| match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            StoreError::Ledger(LedgerError::AlreadyCheckedIn {
                day: day.to_string(),
            })
        }
        e => e.into(),
    })?;
    Ok((record, config))
}

/// The event a check-in announces after its reward's: `checkin.completed`.
fn checkin_completed(
    account: &AccountRef,
    record: &CheckinRecord,
    txn_id: i64,
    now: OffsetDateTime,
) -> outbox::OutboxRow {
    let payload = Payload::CheckinCompleted(CheckinCompleted {
        day: record.day.to_string(),
        streak: record.streak,
        awarded: record.awarded,
        balance_after: record.balance_after,
        transaction_id: txn_id.to_string(),
    });
    let who = (account.app.as_str(), Some(account.user.as_str()));
    outbox::OutboxRow::new(&payload, who, now)
}

/// A check-in's day as stored: who, the record, its transaction and when.
type NewCheckin<'a> = (&'a AccountRef, &'a CheckinRecord, i64, OffsetDateTime);

/// Inserts check-ins' days in one statement (none for none); a day its user already claimed
/// breaks the unique key on `(app_key, user_id, day)`.
async fn insert_checkins(conn: &mut Pipe<'_>, rows: &[NewCheckin<'_>]) -> QueryResult<()> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO checkins (app_key, user_id, day, streak, awarded, transaction_id, \
         created_at) VALUES {}",
        super::usage::values_list(rows.len(), 7)
    );
    let mut query = diesel::sql_query(sql).into_boxed::<Db>();
    for &(account, record, txn_id, now) in rows {
        query = query
            .bind::<Text, _>(&account.app)
            .bind::<Text, _>(&account.user)
            .bind::<Text, _>(record.day.to_string())
            .bind::<BigInt, _>(record.streak)
            .bind::<BigInt, _>(record.awarded)
            .bind::<BigInt, _>(txn_id)
            .bind::<Timestamp, _>(to_db(now));
    }
    cached(query).execute(conn).await.map(drop)
}

/// A check-in [`checkin_in_turn`] writes: its request, its app's configuration and its plan.
struct PlannedCheckin<'w> {
    request: &'w CheckinRequest,
    account: &'w AccountRow,
    config: &'w CheckinConfig,
    checkin: CheckinPlan,
}

/// What [`checkin_in_turn`] answers one check-in.
type CheckinAnswer = Result<(CheckinRecord, CheckinConfig), StoreError>;

/// Applies check-ins ([`checkin`]) inside the caller's write transaction, as if each ran alone,
/// one after another in the order given — sorted by account (app, then user), as a batch sorts
/// them — with a few statements for them all: the apps' configurations are read and the
/// accounts locked (created when new) in one round trip, in that order; their latest check-ins
/// and whatever is due on them in a second; each check-in is planned ([`plan_checkin`]) at its
/// own instant; the rewards' transactions and the accounts' figures are written in a third
/// ([`write_in_turn`]), and the rewards' lots, the days and the events in a fourth. On
/// PostgreSQL that is four round trips for them all (one more for each further app), where one
/// at a time takes four for each (six for a new account). Each check-in keeps the outcome it
/// would have had alone: claimed, or refused for a day already claimed (by the account's
/// history, or by an earlier check-in here).
///
/// Answers `None` when the check-ins are better applied one at a time, and the caller rolls its
/// savepoint back (accounts this created must not stay): an app's configuration refuses a
/// check-in (switched off), an account holds a lot or a hold due at the latest instant (expiries
/// are written and announced first), or one account claims two days here (its second reward
/// would be planned on a lot not yet written). A statement that fails — a day claimed meanwhile
/// out of order breaks the days' unique key — fails them all the same way.
pub(crate) async fn checkin_in_turn(
    conn: &mut Conn,
    requests: &[&CheckinRequest],
) -> Result<Option<Vec<CheckinAnswer>>, StoreError> {
    let Some(latest) = requests.iter().map(|r| r.now).max() else {
        return Ok(Some(Vec::new()));
    };
    let runs: Vec<&[&CheckinRequest]> = requests.chunk_by(|a, b| a.account == b.account).collect();
    let refs: Vec<(&AccountRef, OffsetDateTime)> = runs
        .iter()
        .map(|run| (&run[0].account, run[0].now))
        .collect();
    let mut apps: Vec<&str> = refs.iter().map(|(r, _)| r.app.as_str()).collect();
    apps.dedup();
    let (stored, accounts) = pipelined!(conn =>
        async {
            let mut stored = Vec::with_capacity(apps.len());
            for app in &apps {
                stored.push(stored_checkin_config(conn, app).await?);
            }
            QueryResult::Ok(stored)
        },
        lock_or_create_accounts(conn, &refs),
    )?;
    let configs = stored
        .into_iter()
        .map(|s| Ok(checkin_config_of(s)?.unwrap_or_default()))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let config_of = |app: &str| apps.iter().position(|a| *a == app).map(|i| &configs[i]);
    let mut accounts_of = Vec::with_capacity(runs.len());
    for (account, _) in &refs {
        let row = accounts
            .iter()
            .find(|a| a.app_key == account.app && a.user_id == account.user)
            .ok_or(StoreError::Invariant(
                "an account neither locked nor created",
            ))?;
        let config = config_of(&account.app).ok_or(StoreError::Invariant("an app unread"))?;
        accounts_of.push((row, config));
    }
    if requests
        .iter()
        .any(|r| config_of(&r.account.app).is_none_or(|c| c.claimable_day(r.now).is_err()))
    {
        return Ok(None);
    }
    let ids: Vec<i64> = accounts_of.iter().map(|(a, _)| a.id).collect();
    let held: Vec<i64> = accounts_of
        .iter()
        .filter(|(a, _)| a.held != 0)
        .map(|(a, _)| a.id)
        .collect();
    let names: Vec<&AccountRef> = refs.iter().map(|&(r, _)| r).collect();
    let (stored, due) = pipelined!(conn =>
        latest_checkins_of(conn, &names),
        anything_due(conn, &ids, &held, latest),
    )?;
    if due {
        return Ok(None);
    }
    let mut answers: Vec<Result<usize, StoreError>> = Vec::with_capacity(requests.len());
    let mut plans: Vec<PlannedCheckin> = Vec::new();
    for (run, &(account, config)) in runs.iter().zip(&accounts_of) {
        let mine = stored
            .iter()
            .find(|c| c.app_key == account.app_key && c.user_id == account.user_id);
        let mut previous = match mine {
            Some(c) => Some(checkin_record((
                c.day.clone(),
                c.streak,
                c.awarded,
                c.balance_after,
            ))?),
            None => None,
        };
        let state = AccountView {
            balance: account.balance,
            held: account.held,
            lots: Vec::new(),
            last_instant_partial: true,
            holds: Vec::new(),
        };
        for &request in *run {
            match plan_checkin(config, previous.as_ref(), &state, request.now) {
                Ok(checkin) => {
                    // Planned on no lots and no holds (none is due): it expires nothing.
                    let plan = &checkin.plan;
                    debug_assert!(plan.expiries.is_empty() && plan.expired_holds.is_empty());
                    if plans.last().is_some_and(|p| p.account.id == account.id) {
                        return Ok(None); // a second day for one account
                    }
                    previous = Some(CheckinRecord {
                        day: checkin.day,
                        streak: checkin.streak,
                        awarded: checkin.reward,
                        balance_after: plan.balance,
                    });
                    answers.push(Ok(plans.len()));
                    plans.push(PlannedCheckin {
                        request,
                        account,
                        config,
                        checkin,
                    });
                }
                Err(refusal) => answers.push(Err(refusal.into())),
            }
        }
    }
    let descriptions: Vec<String> = plans.iter().map(|p| p.checkin.description()).collect();
    let planned: Vec<Planned> = plans
        .iter_mut()
        .zip(&descriptions)
        .map(|(p, description)| Planned {
            account: p.account,
            main: MainRow {
                description,
                idempotency_key: None,
                request_hash: None,
                metadata: None,
                actor: None,
            },
            metadata: None,
            now: p.request.now,
            plan: std::mem::take(&mut p.checkin.plan),
        })
        .collect();
    let (written, announced) = write_in_turn(conn, &planned, latest).await?;
    let records: Vec<CheckinRecord> = plans
        .iter()
        .zip(&written)
        .map(|(p, txn)| CheckinRecord {
            day: p.checkin.day,
            streak: p.checkin.streak,
            awarded: p.checkin.reward,
            balance_after: txn.balance_after,
        })
        .collect();
    let mut events = Vec::new();
    let mut new_lots = Vec::new();
    let mut days = Vec::with_capacity(plans.len());
    for (((p, txn), record), announced) in plans.iter().zip(&written).zip(&records).zip(announced) {
        events.extend(announced);
        events.push(checkin_completed(
            &p.request.account,
            record,
            txn.id,
            p.request.now,
        ));
        days.push((&p.request.account, record, txn.id, p.request.now));
    }
    for (p, txn) in planned.iter().zip(&written) {
        if let Some(lot) = p.plan.new_lot.as_ref().filter(|lot| lot.amount > 0) {
            new_lots.push((p.account.id, txn.id, lot, to_db(p.now)));
        }
    }
    pipelined!(conn =>
        insert_lots(conn, &new_lots),
        insert_checkins(conn, &days),
        outbox::insert_events(conn, &events),
    )?;
    Ok(Some(
        answers
            .into_iter()
            .map(|answer| {
                let n = answer?;
                Ok((records[n].clone(), plans[n].config.clone()))
            })
            .collect(),
    ))
}

/// Locks the accounts `refs` names (sorted by app, then user; each with the instant it would be
/// created at), creating those that do not exist, in one statement that takes them in that
/// order — an upsert whose update changes nothing but locks the row — and answers their rows.
/// The update writes a new version of each existing row (the write that follows writes
/// another); a `SELECT … FOR UPDATE` of the existing rows and an insert of the missing ones would
/// not, but would hold later accounts' locks while waiting on an earlier new one.
async fn lock_or_create_accounts(
    conn: &mut Pipe<'_>,
    refs: &[(&AccountRef, OffsetDateTime)],
) -> QueryResult<Vec<AccountRow>> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    let sql = format!(
        "INSERT INTO accounts (app_key, user_id, balance, held, created_at, updated_at) \
         VALUES {} ON CONFLICT (app_key, user_id) DO UPDATE SET updated_at = accounts.updated_at \
         RETURNING id, app_key, user_id, balance, held",
        super::usage::values_list(refs.len(), 6)
    );
    let mut query = diesel::sql_query(sql).into_boxed::<Db>();
    for &(account, now) in refs {
        query = query
            .bind::<Text, _>(&account.app)
            .bind::<Text, _>(&account.user)
            .bind::<BigInt, _>(0_i64)
            .bind::<BigInt, _>(0_i64)
            .bind::<Timestamp, _>(to_db(now))
            .bind::<Timestamp, _>(to_db(now));
    }
    cached(query).load(conn).await
}

/// A user's latest check-in, read by [`latest_checkins_of`].
#[derive(QueryableByName)]
struct LatestCheckin {
    #[diesel(sql_type = diesel::sql_types::Text)]
    app_key: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    user_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    day: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    streak: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    awarded: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    balance_after: i64,
}

/// The latest check-in of each of `accounts` that has one ([`latest_checkin_row`] of each), in
/// one statement.
async fn latest_checkins_of(
    conn: &mut Pipe<'_>,
    accounts: &[&AccountRef],
) -> QueryResult<Vec<LatestCheckin>> {
    let sql = format!(
        "SELECT x.app_key, x.user_id, c.day, c.streak, c.awarded, t.balance_after \
         FROM (VALUES {}) AS x(app_key, user_id) CROSS JOIN LATERAL ( \
           SELECT day, streak, awarded, transaction_id FROM checkins \
           WHERE app_key = x.app_key AND user_id = x.user_id ORDER BY day DESC LIMIT 1) AS c \
         JOIN transactions t ON t.id = c.transaction_id",
        account_values(accounts.len())
    );
    let query = bound_to_accounts(sql, accounts);
    cached(query).load(conn).await
}

/// Whether any of the accounts `ids` holds a lot due at `now`, or any of `held` an active hold
/// due then.
async fn anything_due(
    conn: &mut Pipe<'_>,
    ids: &[i64],
    held: &[i64],
    now: OffsetDateTime,
) -> QueryResult<bool> {
    use diesel::dsl::exists;
    let lot = lots::table
        .filter(lots::account_id.eq_any(ids))
        .filter(ExpiringLot)
        .filter(lots::expires_at.le(to_db(now)))
        .select(lots::id);
    let hold = holds::table
        .filter(holds::account_id.eq_any(held))
        .filter(ActiveHold)
        .filter(holds::expires_at.le(to_db(now)))
        .select(holds::id);
    diesel::select(exists(lot).or(exists(hold)))
        .get_result(conn)
        .await
}

/// A lot a grant creates: its account, its transaction, the plan's lot and when.
type LotOf<'a> = (i64, i64, &'a NewLot, PrimitiveDateTime);

/// Inserts grants' lots in one statement (none for none): a batch's check-ins' rewards, or one
/// movement's lot ([`LastTrip::insert_lot`]).
async fn insert_lots(conn: &mut Pipe<'_>, new: &[LotOf<'_>]) -> QueryResult<()> {
    use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
    if new.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO lots (account_id, transaction_id, source, amount, remaining, expires_at, \
         created_at) VALUES {}",
        super::usage::values_list(new.len(), 7)
    );
    let mut query = diesel::sql_query(sql).into_boxed::<Db>();
    for &(account_id, txn_id, lot, at) in new {
        query = query
            .bind::<BigInt, _>(account_id)
            .bind::<BigInt, _>(txn_id)
            .bind::<Text, _>(lot.source.as_str())
            .bind::<BigInt, _>(lot.amount)
            .bind::<BigInt, _>(lot.remaining)
            .bind::<Nullable<Timestamp>, _>(lot.expires_at.map(to_db))
            .bind::<Timestamp, _>(at);
    }
    cached(query).execute(conn).await.map(drop)
}

pub(crate) async fn latest_checkin(
    conn: &mut Conn,
    account: &AccountRef,
) -> Result<Option<CheckinRecord>, StoreError> {
    pipelined!(conn => latest_checkin_row(conn, account))?
        .map(checkin_record)
        .transpose()
}

/// The user's latest check-in: its day, streak, award and the balance after it.
type CheckinRow = (String, i64, i64, i64);

async fn latest_checkin_row(
    conn: &mut Pipe<'_>,
    account: &AccountRef,
) -> QueryResult<Option<CheckinRow>> {
    checkins::table
        .inner_join(transactions::table)
        .filter(checkins::app_key.eq(&account.app))
        .filter(checkins::user_id.eq(&account.user))
        .order(checkins::day.desc())
        .select((
            checkins::day,
            checkins::streak,
            checkins::awarded,
            transactions::balance_after,
        ))
        .first(conn)
        .await
        .optional()
}

fn checkin_record(
    (day, streak, awarded, balance_after): CheckinRow,
) -> Result<CheckinRecord, StoreError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = Date::parse(&day, format)
        .map_err(|_| StoreError::Invariant("stored check-in day is malformed"))?;
    Ok(CheckinRecord {
        day,
        streak,
        awarded,
        balance_after,
    })
}

/// The account and its soonest-expiring lots in one statement, when that is all a balance read
/// at `now` needs (read outside a transaction, two statements could see two states: a balance
/// from before a movement, lots after it). `None` when a hold is due at `now` or more lots are
/// due than the statement reads: read [`account`] in a snapshot then.
pub(crate) async fn account_and_lots(
    conn: &mut Conn,
    account: &AccountRef,
    now: OffsetDateTime,
) -> Result<Option<AccountView>, StoreError> {
    let folded = account_row_and_lots(conn, account, now).await?;
    Ok(one_read_suffices(&folded, now).then_some(folded.view))
}

/// Whether [`account_row_and_lots`]'s one statement read all a balance at `now` needs: no hold
/// is due, no due lot was left unread, and the lots read that expire later hold at least one
/// whole instant (or every such lot).
fn one_read_suffices(folded: &FoldedAccount, now: OffsetDateTime) -> bool {
    !folded.hold_due && shows_expiring(&folded.view.lots, folded.next_unread, now)
}

/// Whether `lots` (the soonest-expiring lots, read up to a lot expiring at `next_unread`) hold
/// every due lot and at least one whole later instant, or every later lot.
fn shows_expiring(
    lots: &[LotView],
    next_unread: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> bool {
    match next_unread {
        None => true,
        Some(next) if next <= now => false,
        Some(next) => lots
            .iter()
            .any(|l| l.expires_at.is_some_and(|at| at > now && at < next)),
    }
}

/// The account as a balance read at `now` needs it (see `LedgerRepository::account`); the
/// caller provides the snapshot that makes the statements agree.
pub(crate) async fn account(
    conn: &mut Conn,
    account: &AccountRef,
    now: OffsetDateTime,
) -> Result<AccountView, StoreError> {
    Ok(account_state(conn, account, now).await?.0)
}

/// [`account`], and the account's id (none when it does not exist yet).
pub(super) async fn account_state(
    conn: &mut Conn,
    account: &AccountRef,
    now: OffsetDateTime,
) -> Result<(AccountView, Option<i64>), StoreError> {
    let folded = account_row_and_lots(conn, account, now).await?;
    let Some(id) = folded.id.filter(|_| !one_read_suffices(&folded, now)) else {
        return Ok((folded.view, folded.id));
    };
    let mut lots: Vec<tally_ledger::LotView> = pipelined!(conn => due_lots(conn, id, now))?
        .into_iter()
        .map(Into::into)
        .collect();
    let future = expiring_lots(conn, id, now, BALANCE_LOTS + 1).await?;
    let (mut future, mut partial, next_unread) =
        keep_soonest(future.into_iter().map(Into::into).collect());
    if let Some(next) = next_unread.filter(|&next| !shows_expiring(&future, Some(next), now)) {
        // Every lot read expires at the soonest instant: read that instant whole.
        future = lots_expiring_at(conn, id, next).await?;
        partial = false;
    }
    lots.extend(future);
    let view = AccountView {
        lots,
        last_instant_partial: partial,
        holds: due_holds(conn, id, now).await?,
        ..folded.view
    };
    Ok((view, Some(id)))
}

/// Every live lot of the account that expires at `at`.
async fn lots_expiring_at(
    conn: &mut Conn,
    account_id: i64,
    at: OffsetDateTime,
) -> Result<Vec<tally_ledger::LotView>, StoreError> {
    let rows: Vec<LotRow> = lots::table
        .filter(lots::account_id.eq(account_id))
        .filter(ExpiringLot)
        .filter(lots::expires_at.eq(to_db(at)))
        .order(lots::id)
        .select(LotRow::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// What an account's detail lists: its lots due at `now`, then its live lots in consumption
/// order, and its active holds, soonest to run out first, at most `limit` of each; the caller
/// provides the snapshot.
pub(crate) async fn account_contents(
    conn: &mut Conn,
    account: &AccountRef,
    now: OffsetDateTime,
    limit: i64,
) -> Result<AccountView, StoreError> {
    let row: Option<AccountRow> = accounts::table
        .filter(accounts::app_key.eq(&account.app))
        .filter(accounts::user_id.eq(&account.user))
        .select(AccountRow::as_select())
        .first(conn)
        .await
        .optional()?;
    let Some(row) = row else {
        return Ok(AccountView::default());
    };
    let mut lots = pipelined!(conn => due_lots(conn, row.id, now))?;
    lots.extend(expiring_lots(conn, row.id, now, limit).await?);
    lots.extend(lasting_lots(conn, row.id, limit).await?);
    lots.truncate(usize::try_from(limit).unwrap_or(0));
    let holds: Vec<HoldRow> = holds::table
        .filter(holds::account_id.eq(row.id))
        .filter(ActiveHold)
        .order((holds::expires_at, holds::id))
        .limit(limit)
        .select(HoldRow::as_select())
        .load(conn)
        .await?;
    Ok(AccountView {
        balance: row.balance,
        held: row.held,
        lots: lots.into_iter().map(Into::into).collect(),
        last_instant_partial: true,
        holds: holds.iter().map(HoldRow::view).collect(),
    })
}

/// The account as a balance at `now` sees it, from one statement (`account_and_lots_query!`),
/// read the way the backend reads it fastest.
pub(super) async fn account_row_and_lots(
    conn: &mut Conn,
    account: &AccountRef,
    now: OffsetDateTime,
) -> Result<FoldedAccount, StoreError> {
    Ok(fold_account(
        super::account_and_lots_rows(conn, &account.app, &account.user, to_db(now)).await?,
    ))
}

/// A page of the app's accounts, newest first; the cursor is a user id of the app.
pub(crate) async fn accounts(
    conn: &mut Conn,
    query: &AccountQuery,
) -> Result<Vec<AccountSummary>, StoreError> {
    let mut rows = accounts::table
        .filter(accounts::app_key.eq(&query.app))
        .into_boxed();
    if let Some(prefix) = query.prefix.as_deref().filter(|p| !p.is_empty()) {
        let chars = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
        rows = rows.filter(substr(accounts::user_id, 1, chars).eq(prefix));
    }
    if let Some(before) = &query.before {
        let id: i64 = accounts::table
            .filter(accounts::app_key.eq(&query.app))
            .filter(accounts::user_id.eq(before))
            .select(accounts::id)
            .first(conn)
            .await
            .optional()?
            .ok_or_else(|| LedgerError::invalid("before", "must be a user id of this app"))?;
        rows = rows.filter(accounts::id.lt(id));
    }
    let rows: Vec<AccountSummaryRow> = rows
        .order(accounts::id.desc())
        .limit(query.limit)
        .select(AccountSummaryRow::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub(crate) async fn account_summary(
    conn: &mut Conn,
    account: &AccountRef,
) -> Result<Option<AccountSummary>, StoreError> {
    Ok(accounts::table
        .filter(accounts::app_key.eq(&account.app))
        .filter(accounts::user_id.eq(&account.user))
        .select(AccountSummaryRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(Into::into))
}

pub(crate) async fn transactions(
    conn: &mut Conn,
    query: &TransactionQuery,
) -> Result<Vec<Transaction>, StoreError> {
    let mut q = transactions::table
        .select(TxnRow::as_select())
        .order(transactions::id.desc())
        .limit(query.limit)
        .offset(query.offset)
        .into_boxed();
    q = match &query.user {
        // One user's history: through the account, so that the (account_id, id)
        // index answers it. Filtering on app and user instead walks the app's
        // (app_key, id) index over every user's rows until it finds this user's.
        Some(user) => q.filter(
            transactions::account_id.nullable().eq(accounts::table
                .filter(accounts::app_key.eq(&query.app))
                .filter(accounts::user_id.eq(user))
                .select(accounts::id)
                .single_value()),
        ),
        None => q.filter(transactions::app_key.eq(&query.app)),
    };
    // Keyset paging: the index walk starts right below the cursor instead of
    // stepping over `offset` entries.
    if let Some(before) = query.before {
        q = q.filter(transactions::id.lt(before));
    }
    if let Some(t) = query.txn_type {
        q = q.filter(transactions::txn_type.eq(t.as_str()));
    }
    if let Some(from) = query.from {
        q = q.filter(transactions::created_at.ge(to_db(from)));
    }
    if let Some(to) = query.to {
        q = q.filter(transactions::created_at.lt(to_db(to)));
    }
    let rows = q.load(conn).await?;
    rows.into_iter()
        .map(|r| Transaction::try_from(r).map_err(StoreError::from))
        .collect()
}

pub(crate) async fn checkin_config(
    conn: &mut Conn,
    app: &str,
) -> Result<Option<CheckinConfig>, StoreError> {
    checkin_config_of(pipelined!(conn => stored_checkin_config(conn, app))?)
}

/// An app's check-in configuration as stored, read in one statement ([`stored_checkin_config`]):
/// its own row's columns when it has one, and the time zone the app is registered with (the
/// defaults' time zone when it never configured check-ins).
#[derive(QueryableByName)]
struct StoredCheckinConfig {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bool>)]
    enabled: Option<bool>,
    /// JSON.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    rewards: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    timezone: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    credits_expire_days: Option<i32>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    app_time_zone: Option<String>,
}

/// Reads [`StoredCheckinConfig`]: always one row.
async fn stored_checkin_config(conn: &mut Pipe<'_>, app: &str) -> QueryResult<StoredCheckinConfig> {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "SELECT c.enabled, c.rewards, c.timezone, c.credits_expire_days, \
             a.time_zone AS app_time_zone \
             FROM (SELECT CAST({} AS TEXT) AS app_key) k \
             LEFT JOIN checkin_configs c ON c.app_key = k.app_key \
             LEFT JOIN apps a ON a.app_key = k.app_key",
            super::bind(1)
        )
    });
    cached(diesel::sql_query(sql.as_str()).bind::<diesel::sql_types::Text, _>(app))
        .get_result(conn)
        .await
}

/// The configuration [`stored_checkin_config`] read: the app's own, or, never configured, the
/// defaults in the app's time zone; none for an unregistered app never configured.
fn checkin_config_of(stored: StoredCheckinConfig) -> Result<Option<CheckinConfig>, StoreError> {
    let (Some(enabled), Some(rewards), Some(timezone)) =
        (stored.enabled, stored.rewards, stored.timezone)
    else {
        return Ok(stored.app_time_zone.map(|timezone| CheckinConfig {
            timezone,
            ..CheckinConfig::default()
        }));
    };
    let days = stored.credits_expire_days;
    Ok(Some(CheckinConfig {
        enabled,
        rewards: serde_json::from_str(&rewards)
            .map_err(|_| StoreError::Invariant("stored rewards are malformed"))?,
        timezone,
        credits_expire_days: days.and_then(|d| u32::try_from(d).ok()),
    }))
}

pub(crate) async fn put_checkin_config(
    conn: &mut Conn,
    app: &str,
    config: &CheckinConfig,
    actor: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let rewards = serde_json::to_string(&config.rewards)
        .map_err(|_| StoreError::Invariant("rewards do not serialise"))?;
    let days = config
        .credits_expire_days
        .and_then(|d| i32::try_from(d).ok());
    let values = (
        checkin_configs::enabled.eq(config.enabled),
        checkin_configs::rewards.eq(&rewards),
        checkin_configs::timezone.eq(&config.timezone),
        checkin_configs::credits_expire_days.eq(days),
        checkin_configs::updated_by.eq(actor),
        checkin_configs::updated_at.eq(to_db(now)),
    );
    diesel::insert_into(checkin_configs::table)
        .values((checkin_configs::app_key.eq(app), values))
        .on_conflict(checkin_configs::app_key)
        .do_update()
        .set(values)
        .execute(conn)
        .await?;
    // Day and month allowance windows follow the check-in time zone.
    super::usage::bump_generation(conn, app).await?;
    Ok(())
}

/// Accounts holding lots due at `now`.
pub(crate) async fn accounts_with_due_lots(
    conn: &mut Conn,
    now: OffsetDateTime,
    limit: i64,
) -> Result<Vec<i64>, StoreError> {
    let mut ids: Vec<i64> = lots::table
        .filter(LiveLot)
        .filter(lots::expires_at.le(to_db(now)))
        .select(lots::account_id)
        .distinct()
        .limit(limit)
        .load(conn)
        .await?;
    let hold_ids: Vec<i64> = holds::table
        .filter(ActiveHold)
        .filter(holds::expires_at.le(to_db(now)))
        .select(holds::account_id)
        .distinct()
        .limit(limit)
        .load(conn)
        .await?;
    ids.extend(hold_ids);
    ids.sort_unstable();
    ids.dedup();
    ids.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(ids)
}

/// Writes the due expiries of one account inside the caller's write transaction.
pub(crate) async fn expire_account(
    conn: &mut Conn,
    account_id: i64,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let account = lock_account_by_id(conn, account_id).await?;
    let mut state = state(conn, &account, now).await?;
    if account.held == 0 {
        // Holds of 0 credits (taken for usage its allowances cover) run out too.
        state.holds = due_holds(conn, account.id, now).await?;
    }
    let plan = plan_expiry(&state, now);
    if plan.expiries.is_empty() && plan.expired_holds.is_empty() {
        return Ok(false);
    }
    write_plan(conn, &account, &plan, None, now).await?;
    Ok(true)
}

pub(crate) async fn audit(conn: &mut Conn) -> Result<Vec<AccountAudit>, StoreError> {
    let rows: Vec<AuditRow> = diesel::sql_query(AUDIT_SQL).load(conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| AccountAudit {
            app: r.app_key,
            user: r.user_id,
            balance: r.balance,
            held: r.held,
            active_hold_sum: r.active_hold_sum,
            transaction_sum: r.transaction_sum,
            live_lot_sum: r.live_lot_sum,
            malformed_lots: r.malformed_lots,
            broken_balance_after: r.broken_balance_after,
            has_debt_source: r.debt_sources > 0,
            duplicate_idempotency_keys: r.duplicate_keys,
            duplicate_checkins: r.duplicate_checkins,
        })
        .collect())
}

fn unique_violation(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

/// `e` as the store error `taken` makes when it is a unique violation (a key another
/// transaction took first), as it is otherwise.
pub(super) fn unique_as(e: DieselError, taken: impl FnOnce() -> StoreError) -> StoreError {
    if unique_violation(&e) {
        taken()
    } else {
        e.into()
    }
}

async fn find_hold(conn: &mut Conn, app: &str, hold_id: i64) -> Result<HoldRow, StoreError> {
    holds::table
        .filter(holds::id.eq(hold_id))
        .filter(holds::app_key.eq(app))
        .select(HoldRow::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(StoreError::Ledger(LedgerError::HoldNotFound))
}

/// Locks the hold's account, then reads the hold again: its status may have changed
/// while this transaction waited for the lock.
pub(super) async fn lock_hold(
    conn: &mut Conn,
    app: &str,
    hold_id: i64,
) -> Result<(AccountRow, HoldRow), StoreError> {
    let first = find_hold(conn, app, hold_id).await?;
    let account = lock_account_by_id(conn, first.account_id).await?;
    let hold = find_hold(conn, app, hold_id).await?;
    Ok((account, hold))
}

async fn set_hold_status(
    conn: &mut Conn,
    hold_id: i64,
    status: HoldStatus,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    diesel::update(holds::table.find(hold_id))
        .set((
            holds::status.eq(status.as_str()),
            holds::updated_at.eq(to_db(now)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn reserve(
    conn: &mut Conn,
    request: &ReserveRequest,
    request_hash: &str,
    now: OffsetDateTime,
) -> Result<Hold, StoreError> {
    let account = lock_account(conn, &request.account, now).await?;
    if let Some(stored) = stored_hold(conn, &account, request, request_hash).await? {
        return Ok(stored);
    }
    let state = state(conn, &account, now).await?;
    create_hold(conn, &account, &state, request, request_hash, now).await
}

/// The hold a known idempotency key made (with the same request; another is a reuse).
pub(super) async fn stored_hold(
    conn: &mut Conn,
    account: &AccountRow,
    request: &ReserveRequest,
    request_hash: &str,
) -> Result<Option<Hold>, StoreError> {
    let Some(key) = &request.idempotency_key else {
        return Ok(None);
    };
    let stored = holds::table
        .filter(holds::account_id.eq(account.id))
        .filter(holds::idempotency_key.eq(key))
        .select(HoldRow::as_select())
        .first(conn)
        .await
        .optional()?;
    match stored {
        Some(row) if row.request_hash.as_deref() == Some(request_hash) => {
            Ok(Some(Hold::try_from(row)?))
        }
        Some(_) => Err(LedgerError::IdempotencyKeyReused.into()),
        None => Ok(None),
    }
}

/// Reserves `request.credits` on the locked account (see [`plan_reserve`]) and stores the hold.
pub(super) async fn create_hold(
    conn: &mut Conn,
    account: &AccountRow,
    state: &AccountView,
    request: &ReserveRequest,
    request_hash: &str,
    now: OffsetDateTime,
) -> Result<Hold, StoreError> {
    let plan = plan_reserve(state, request.credits, now)?;
    write_plan(conn, account, &plan, None, now).await?;
    let at = to_db(now);
    let row: HoldRow = diesel::insert_into(holds::table)
        .values((
            holds::account_id.eq(account.id),
            holds::app_key.eq(&account.app_key),
            holds::user_id.eq(&account.user_id),
            holds::amount.eq(request.credits),
            holds::status.eq(HoldStatus::Active.as_str()),
            holds::description.eq(&request.description),
            holds::metadata.eq(request.metadata.as_ref().map(|m| m.to_string())),
            holds::idempotency_key.eq(request.idempotency_key.as_deref()),
            holds::request_hash.eq(request.idempotency_key.as_ref().map(|_| request_hash)),
            holds::expires_at.eq(to_db(request.expires_at(now))),
            holds::created_at.eq(at),
            holds::updated_at.eq(at),
        ))
        .returning(HoldRow::as_returning())
        .get_result(conn)
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                StoreError::IdempotencyRace
            } else {
                e.into()
            }
        })?;
    Ok(Hold::try_from(row)?)
}

pub(crate) async fn capture(
    conn: &mut Conn,
    request: &CaptureRequest,
    capture_hash: Option<&str>,
    now: OffsetDateTime,
) -> Result<(Hold, Option<Transaction>), StoreError> {
    let (account, hold) = lock_hold(conn, &request.app, request.hold_id).await?;
    if let Some(first) = capturable(conn, &hold, capture_hash).await? {
        return Ok(first);
    }
    if hold.usage_metadata().is_some() {
        return Err(LedgerError::invalid(
            "amount",
            "this hold was taken for quantities: capture it with `quantities`",
        )
        .into());
    }
    let mut state = state_with_hold(conn, &account, &hold, now).await?;
    burn_lots(conn, account.id, &mut state, request.credits, now).await?;
    let plan = plan_capture(&state, hold.id, request.credits, now)?;
    let description = request
        .description
        .clone()
        .unwrap_or_else(|| hold.description.clone());
    let metadata = request
        .metadata
        .as_ref()
        .map(|m| m.to_string())
        .or_else(|| hold.metadata.clone());
    let main = MainRow {
        description: &description,
        idempotency_key: None,
        request_hash: None,
        metadata,
        actor: None,
    };
    let txn = write_plan(conn, &account, &plan, Some(main), now).await?;
    let row = settle_hold(
        conn,
        hold.id,
        request.credits,
        capture_hash,
        txn.as_ref(),
        now,
    )
    .await?;
    Ok((Hold::try_from(row)?, txn))
}

/// Whether a locked hold may be captured: `None` when it is active; the first capture again
/// when this repeats it (the same capture hash); the refusal otherwise.
pub(super) async fn capturable(
    conn: &mut Conn,
    hold: &HoldRow,
    capture_hash: Option<&str>,
) -> Result<Option<(Hold, Option<Transaction>)>, StoreError> {
    match HoldStatus::parse(&hold.status) {
        Some(HoldStatus::Active) => Ok(None),
        Some(HoldStatus::Captured)
            if capture_hash.is_some() && hold.capture_hash.as_deref() == capture_hash =>
        {
            let txn = match hold.transaction_id {
                Some(id) => Some(Transaction::try_from(
                    transactions::table
                        .find(id)
                        .select(TxnRow::as_select())
                        .first(conn)
                        .await?,
                )?),
                None => None,
            };
            Ok(Some((Hold::try_from(hold.clone())?, txn)))
        }
        Some(HoldStatus::Expired) => Err(LedgerError::HoldExpired.into()),
        Some(status) => Err(LedgerError::HoldNotActive {
            status: status.as_str(),
        }
        .into()),
        None => Err(StoreError::Invariant("unknown hold status")),
    }
}

/// Marks a hold captured at `captured` credits by `txn`.
pub(super) async fn settle_hold(
    conn: &mut Conn,
    hold_id: i64,
    captured: i64,
    capture_hash: Option<&str>,
    txn: Option<&Transaction>,
    now: OffsetDateTime,
) -> Result<HoldRow, StoreError> {
    Ok(diesel::update(holds::table.find(hold_id))
        .set((
            holds::status.eq(HoldStatus::Captured.as_str()),
            holds::captured.eq(captured),
            holds::capture_hash.eq(capture_hash),
            holds::transaction_id.eq(txn.map(|t| t.id)),
            holds::updated_at.eq(to_db(now)),
        ))
        .returning(HoldRow::as_returning())
        .get_result(conn)
        .await?)
}

pub(crate) async fn release(
    conn: &mut Conn,
    app: &str,
    hold_id: i64,
    now: OffsetDateTime,
) -> Result<Hold, StoreError> {
    let (account, hold) = lock_hold(conn, app, hold_id).await?;
    match HoldStatus::parse(&hold.status) {
        Some(HoldStatus::Released | HoldStatus::Expired) => return Ok(Hold::try_from(hold)?),
        Some(HoldStatus::Captured) => {
            return Err(LedgerError::HoldNotActive { status: "captured" }.into());
        }
        Some(HoldStatus::Active) => {}
        None => return Err(StoreError::Invariant("unknown hold status")),
    }
    let state = state_with_hold(conn, &account, &hold, now).await?;
    if from_db(hold.expires_at) <= now {
        // Its time ran out before the release: expire it (and anything else due).
        let plan = plan_expiry(&state, now);
        write_plan(conn, &account, &plan, None, now).await?;
    } else {
        let plan = plan_release(&state, hold.id, now)?;
        write_plan(conn, &account, &plan, None, now).await?;
        set_hold_status(conn, hold.id, HoldStatus::Released, now).await?;
        super::usage::release_allowances(conn, &[hold.id]).await?;
    }
    Ok(Hold::try_from(find_hold(conn, app, hold_id).await?)?)
}

pub(crate) async fn hold(
    conn: &mut Conn,
    app: &str,
    hold_id: i64,
) -> Result<Option<Hold>, StoreError> {
    match find_hold(conn, app, hold_id).await {
        Ok(row) => Ok(Some(Hold::try_from(row)?)),
        Err(StoreError::Ledger(LedgerError::HoldNotFound)) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) async fn create_codes(
    conn: &mut Conn,
    request: &CodeBatchRequest,
    codes: &[String],
    batch: &str,
    now: OffsetDateTime,
) -> Result<Vec<RedemptionCode>, StoreError> {
    let mut out = Vec::with_capacity(codes.len());
    let days = request
        .credits_expire_days
        .and_then(|d| i32::try_from(d).ok());
    for code in codes {
        let row: CodeRow = diesel::insert_into(redemption_codes::table)
            .values((
                redemption_codes::app_key.eq(&request.app),
                redemption_codes::code.eq(code),
                redemption_codes::batch.eq(batch),
                redemption_codes::credits.eq(request.credits),
                redemption_codes::max_uses.eq(request.max_uses),
                redemption_codes::uses.eq(0_i64),
                redemption_codes::expires_at.eq(request.expires_at.map(to_db)),
                redemption_codes::credits_expire_days.eq(days),
                redemption_codes::description.eq(&request.description),
                redemption_codes::created_by.eq(&request.created_by),
                redemption_codes::created_at.eq(to_db(now)),
            ))
            .returning(CodeRow::as_returning())
            .get_result(conn)
            .await?;
        out.push(row.into());
    }
    Ok(out)
}

pub(crate) async fn codes(
    conn: &mut Conn,
    app: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<RedemptionCode>, StoreError> {
    let rows: Vec<CodeRow> = redemption_codes::table
        .filter(redemption_codes::app_key.eq(app))
        .order(redemption_codes::id.desc())
        .limit(limit)
        .offset(offset)
        .select(CodeRow::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub(crate) async fn redeem(
    conn: &mut Conn,
    request: &RedeemRequest,
) -> Result<(RedemptionCode, Transaction), StoreError> {
    let now = request.now;
    let account = lock_account(conn, &request.account, now).await?;
    let code: CodeRow = redemption_codes::table
        .filter(redemption_codes::app_key.eq(&request.account.app))
        .filter(redemption_codes::code.eq(&request.code))
        .select(CodeRow::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(StoreError::Ledger(LedgerError::CodeNotFound))?;
    if code.expires_at.is_some_and(|at| from_db(at) <= now) {
        return Err(LedgerError::CodeExpired.into());
    }
    let redeemed: i64 = redemptions::table
        .filter(redemptions::code_id.eq(code.id))
        .filter(redemptions::user_id.eq(&request.account.user))
        .count()
        .get_result(conn)
        .await?;
    if redeemed > 0 {
        return Err(LedgerError::CodeAlreadyRedeemed.into());
    }
    // The condition makes the last use a race one transaction wins: the row lock
    // serialises the updates and the loser sees no use left.
    let claimed = diesel::update(
        redemption_codes::table
            .filter(redemption_codes::id.eq(code.id))
            .filter(redemption_codes::uses.lt(redemption_codes::max_uses)),
    )
    .set(redemption_codes::uses.eq(redemption_codes::uses + 1))
    .execute(conn)
    .await?;
    if claimed == 0 {
        return Err(LedgerError::CodeExhausted.into());
    }
    let kind = MovementKind::Grant {
        txn_type: TxnType::Redemption,
        credits: code.credits,
        expires_at: code
            .credits_expire_days
            .map(|d| now + time::Duration::days(i64::from(d))),
    };
    let state = state(conn, &account, now).await?;
    let plan = plan_movement(&state, &kind, now)?;
    let description = if code.description.is_empty() {
        format!("Redeemed code {}", code.code)
    } else {
        code.description.clone()
    };
    let main = MainRow {
        description: &description,
        idempotency_key: None,
        request_hash: None,
        metadata: Some(format!("{{\"code\":\"{}\"}}", code.code)),
        actor: None,
    };
    let txn = write_plan(conn, &account, &plan, Some(main), now)
        .await?
        .ok_or(StoreError::Invariant("redemption wrote no transaction"))?;
    diesel::insert_into(redemptions::table)
        .values((
            redemptions::code_id.eq(code.id),
            redemptions::app_key.eq(&request.account.app),
            redemptions::user_id.eq(&request.account.user),
            redemptions::transaction_id.eq(txn.id),
            redemptions::created_at.eq(to_db(now)),
        ))
        .execute(conn)
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                StoreError::Ledger(LedgerError::CodeAlreadyRedeemed)
            } else {
                e.into()
            }
        })?;
    let mut code = RedemptionCode::from(code);
    code.uses += 1;
    Ok((code, txn))
}

pub(crate) async fn record_redeem_failure(
    conn: &mut Conn,
    account: &AccountRef,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    diesel::insert_into(redeem_failures::table)
        .values((
            redeem_failures::app_key.eq(&account.app),
            redeem_failures::user_id.eq(&account.user),
            redeem_failures::created_at.eq(to_db(now)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn redeem_failures(
    conn: &mut Conn,
    account: &AccountRef,
    since: OffsetDateTime,
) -> Result<(i64, Option<OffsetDateTime>), StoreError> {
    let (count, oldest): (i64, Option<time::PrimitiveDateTime>) = redeem_failures::table
        .filter(redeem_failures::app_key.eq(&account.app))
        .filter(redeem_failures::user_id.eq(&account.user))
        .filter(redeem_failures::created_at.gt(to_db(since)))
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::min(redeem_failures::created_at),
        ))
        .first(conn)
        .await?;
    Ok((count, oldest.map(from_db)))
}

pub(crate) async fn ping(conn: &mut Conn) -> Result<(), StoreError> {
    diesel::sql_query("SELECT 1").execute(conn).await?;
    Ok(())
}
