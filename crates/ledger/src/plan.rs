//! The ledger's arithmetic, free of I/O: given an account's state inside a transaction, work out
//! the rows a movement writes. Every storage backend applies these plans, so the rules live once.

use time::OffsetDateTime;

use crate::{
    AccountView, BalanceView, ExpiringCredits, LedgerError, MAX_CREDITS, MovementKind, TxnType,
};

/// One transaction row a plan appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Recorded type.
    pub txn_type: TxnType,
    /// Signed change.
    pub amount: i64,
    /// Balance after this row.
    pub balance_after: i64,
    /// Lot the entry expired, for expiry entries.
    pub expired_lot: Option<i64>,
}

/// A lot a grant creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLot {
    /// Source type (the grant's transaction type).
    pub source: TxnType,
    /// Credits granted.
    pub amount: i64,
    /// Credits left after repaying debt.
    pub remaining: i64,
    /// Expiry of the remainder.
    pub expires_at: Option<OffsetDateTime>,
}

/// Everything one movement writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// New remainders of existing lots, `(lot id, remaining)`.
    pub lot_updates: Vec<(i64, i64)>,
    /// Expiry entries for lots that came due, in lot order; written before `main`.
    pub expiries: Vec<Entry>,
    /// The movement's own entry (absent for a pure expiry sweep).
    pub main: Option<Entry>,
    /// The lot a grant creates.
    pub new_lot: Option<NewLot>,
    /// The account's balance after everything.
    pub balance: i64,
    /// The account's held credits after everything.
    pub held: i64,
    /// Active holds whose time ran out; they are marked expired.
    pub expired_holds: Vec<i64>,
}

/// Checks, in debug builds, that `plan` keeps the ledger's invariants on `state` (the rules
/// `tally verify` checks afterwards): the balance moves by exactly the entries' amounts, each
/// entry's `balance_after` is the running sum, no lot grows or goes below zero, the held credits
/// only shrink and stay non-negative, a new lot holds at most what it grants, and the lots change
/// by exactly what the positive part of the balance does — so that lots which held it before
/// still do after, although the state holds only the lots the plan needed.
#[cfg(debug_assertions)]
fn check_plan(state: &AccountView, plan: &Plan) {
    let mut running = state.balance;
    for entry in plan.expiries.iter().chain(plan.main.as_ref()) {
        running += entry.amount;
        assert_eq!(
            entry.balance_after, running,
            "balance_after is the running sum"
        );
    }
    assert_eq!(
        plan.balance, running,
        "the balance moves by the entries' amounts"
    );
    let lots: std::collections::BTreeMap<i64, i64> =
        state.lots.iter().map(|l| (l.id, l.remaining)).collect();
    let mut change = 0;
    for &(id, remaining) in &plan.lot_updates {
        let before = lots.get(&id).copied();
        assert!(
            before.is_some_and(|b| (0..=b).contains(&remaining)),
            "lot {id} goes from {before:?} to {remaining}"
        );
        change += remaining - before.unwrap_or(0);
    }
    if let Some(lot) = &plan.new_lot {
        assert!((0..=lot.amount).contains(&lot.remaining), "{lot:?}");
        change += lot.remaining;
    }
    assert!(
        (0..=state.held).contains(&plan.held),
        "held goes from {} to {}",
        state.held,
        plan.held
    );
    assert_eq!(
        change,
        plan.balance.max(0) - state.balance.max(0),
        "the lots change by what the positive balance does"
    );
}

#[cfg(not(debug_assertions))]
fn check_plan(_: &AccountView, _: &Plan) {}

/// Plans a run of movements of one account one after another, each as if it ran alone once
/// the ones before it were written: each sees the balance, the held credits, the lots and the
/// holds that the earlier plans leave, and a refused one leaves them as they were. The store
/// uses it to apply a batch's debits of one account together, on one read of the account.
#[derive(Debug, Clone)]
pub struct InTurn {
    state: AccountView,
}

impl InTurn {
    /// Starts from `state`, as read under the account's lock; its lots must cover every debit of
    /// the run in burn order, as for [`plan_movement`].
    pub fn new(state: AccountView) -> Self {
        Self { state }
    }

    /// Plans the next movement of the run ([`MovementKind::plans_in_turn`] must hold: a
    /// movement that creates a lot cannot be planned in turn).
    pub fn plan(&mut self, kind: &MovementKind, now: OffsetDateTime) -> Result<Plan, LedgerError> {
        assert!(kind.plans_in_turn(), "{kind:?} cannot be planned in turn");
        let plan = plan_movement(&self.state, kind, now)?;
        let state = &mut self.state;
        for &(id, remaining) in &plan.lot_updates {
            if let Some(lot) = state.lots.iter_mut().find(|l| l.id == id) {
                lot.remaining = remaining;
            }
        }
        state.lots.retain(|l| l.remaining > 0);
        state.holds.retain(|h| !plan.expired_holds.contains(&h.id));
        (state.balance, state.held) = (plan.balance, plan.held);
        Ok(plan)
    }
}

/// Order in which lots are consumed: soonest-expiring first, never-expiring last, then oldest.
pub fn consumption_order(lots: &mut [crate::LotView]) {
    lots.sort_by_key(|l| (l.expires_at.is_none(), l.expires_at, l.id));
}

/// Expires every lot and hold due at `now`.
pub fn plan_expiry(state: &AccountView, now: OffsetDateTime) -> Plan {
    let mut plan = Plan {
        balance: state.balance,
        held: state.held,
        ..Plan::default()
    };
    for hold in &state.holds {
        if hold.expires_at <= now {
            plan.held -= hold.amount;
            plan.expired_holds.push(hold.id);
        }
    }
    let mut due: Vec<_> = state
        .lots
        .iter()
        .filter(|l| l.remaining > 0 && l.expires_at.is_some_and(|at| at <= now))
        .collect();
    // In lot order, however the store read them.
    due.sort_by_key(|l| l.id);
    for lot in due {
        plan.balance -= lot.remaining;
        plan.lot_updates.push((lot.id, 0));
        plan.expiries.push(Entry {
            txn_type: TxnType::Expiry,
            amount: -lot.remaining,
            balance_after: plan.balance,
            expired_lot: Some(lot.id),
        });
    }
    check_plan(state, &plan);
    plan
}

/// Plans a movement: first the expiry of due lots, then the movement itself.
pub fn plan_movement(
    state: &AccountView,
    kind: &MovementKind,
    now: OffsetDateTime,
) -> Result<Plan, LedgerError> {
    if let MovementKind::Grant {
        expires_at: Some(at),
        ..
    }
    | MovementKind::Adjust {
        expires_at: Some(at),
        ..
    } = *kind
        && at <= now
    {
        return Err(LedgerError::invalid("expires_at", "must be in the future"));
    }
    let mut plan = plan_expiry(state, now);
    let mut live: Vec<_> = state
        .lots
        .iter()
        .filter(|l| l.remaining > 0 && l.expires_at.is_none_or(|at| at > now))
        .cloned()
        .collect();
    consumption_order(&mut live);
    let balance = plan.balance;
    match *kind {
        MovementKind::Grant {
            txn_type,
            credits,
            expires_at,
        } => grant(&mut plan, balance, txn_type, credits, expires_at)?,
        MovementKind::Debit { txn_type, credits } => {
            let available = (balance - plan.held).max(0);
            if credits > available {
                return Err(LedgerError::InsufficientCredits {
                    requested: credits,
                    available,
                });
            }
            debit(&mut plan, &live, balance, txn_type, credits);
        }
        MovementKind::Adjust {
            credits,
            allow_negative,
            expires_at,
        } => {
            if credits > 0 {
                grant(
                    &mut plan,
                    balance,
                    TxnType::AdminAdjustment,
                    credits,
                    expires_at,
                )?;
            } else {
                let take = -credits;
                let available = (balance - plan.held).max(0);
                if take > available && !allow_negative {
                    return Err(LedgerError::InsufficientCredits {
                        requested: take,
                        available,
                    });
                }
                if balance - take < -MAX_CREDITS {
                    return Err(LedgerError::Overflow);
                }
                debit(&mut plan, &live, balance, TxnType::AdminAdjustment, take);
            }
        }
        MovementKind::Clawback { credits } => {
            if balance - credits < -MAX_CREDITS {
                return Err(LedgerError::Overflow);
            }
            debit(&mut plan, &live, balance, TxnType::Refund, credits);
        }
    }
    check_plan(state, &plan);
    Ok(plan)
}

fn grant(
    plan: &mut Plan,
    balance: i64,
    txn_type: TxnType,
    credits: i64,
    expires_at: Option<OffsetDateTime>,
) -> Result<(), LedgerError> {
    let after = balance.checked_add(credits).ok_or(LedgerError::Overflow)?;
    if after > MAX_CREDITS {
        return Err(LedgerError::Overflow);
    }
    // Debt (a negative balance) is repaid first; only the rest becomes a spendable lot.
    let debt = (-balance).max(0);
    plan.new_lot = Some(NewLot {
        source: txn_type,
        amount: credits,
        remaining: (credits - debt).max(0),
        expires_at,
    });
    plan.main = Some(Entry {
        txn_type,
        amount: credits,
        balance_after: after,
        expired_lot: None,
    });
    plan.balance = after;
    Ok(())
}

/// Burns `credits` from the live lots in consumption order; whatever the lots cannot cover
/// becomes debt (only reachable through an allowed overdraft).
fn debit(plan: &mut Plan, live: &[crate::LotView], balance: i64, txn_type: TxnType, credits: i64) {
    let mut left = credits;
    for lot in live {
        if left == 0 {
            break;
        }
        let take = left.min(lot.remaining);
        left -= take;
        plan.lot_updates.push((lot.id, lot.remaining - take));
    }
    plan.main = Some(Entry {
        txn_type,
        amount: -credits,
        balance_after: balance - credits,
        expired_lot: None,
    });
    plan.balance = balance - credits;
}

/// The balance a user sees at `now`: lots past their expiry no longer count, whether or not the
/// sweep has written their expiry yet, and neither do holds past theirs.
///
/// `state` must hold every lot and active hold due at `now`; `expiring` lists the instants of the
/// expiring lots it holds, soonest first — all of them unless `state.last_instant_partial`, when
/// the latest is left out (more lots may expire then than it holds).
pub fn balance_view(state: &AccountView, now: OffsetDateTime) -> BalanceView {
    let due: i64 = state
        .lots
        .iter()
        .filter(|l| l.remaining > 0 && l.expires_at.is_some_and(|at| at <= now))
        .map(|l| l.remaining)
        .sum();
    let balance = state.balance - due;
    let mut expiring: Vec<ExpiringCredits> = Vec::new();
    let mut future: Vec<_> = state
        .lots
        .iter()
        .filter_map(|l| match l.expires_at {
            Some(at) if at > now && l.remaining > 0 => Some((at, l.remaining)),
            _ => None,
        })
        .collect();
    future.sort();
    for (at, amount) in future {
        match expiring.last_mut() {
            Some(last) if last.expires_at == at => last.amount += amount,
            _ => expiring.push(ExpiringCredits {
                amount,
                expires_at: at,
            }),
        }
    }
    if state.last_instant_partial {
        expiring.pop();
    }
    let held_due: i64 = state
        .holds
        .iter()
        .filter(|h| h.expires_at <= now)
        .map(|h| h.amount)
        .sum();
    let held = state.held - held_due;
    BalanceView {
        balance,
        available: (balance - held).max(0),
        held,
        expiring,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LotView;
    use time::{Duration, macros::datetime};

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    fn lot(id: i64, remaining: i64, expires_in_days: Option<i64>) -> LotView {
        LotView {
            id,
            remaining,
            expires_at: expires_in_days.map(|d| NOW + Duration::days(d)),
        }
    }

    fn state(lots: Vec<LotView>) -> AccountView {
        AccountView {
            balance: lots.iter().map(|l| l.remaining).sum(),
            held: 0,
            holds: vec![],
            last_instant_partial: false,
            lots,
        }
    }

    #[cfg(debug_assertions)]
    #[test]
    fn broken_plans_are_caught_where_they_are_made() {
        let s = state(vec![lot(1, 100, None)]);
        let good = plan_movement(&s, &debit(30), NOW).unwrap();
        check_plan(&s, &good);
        let broken = |change: fn(&mut Plan)| {
            let mut p = good.clone();
            change(&mut p);
            std::panic::catch_unwind(|| check_plan(&s, &p)).is_err()
        };
        assert!(
            broken(|p| p.balance += 1),
            "a balance the entries do not add up to"
        );
        assert!(
            broken(|p| p.lot_updates[0].1 = 71),
            "a lot left holding more than the balance"
        );
        assert!(broken(|p| p.lot_updates[0].1 = 101), "a lot that grows");
        assert!(broken(|p| p.lot_updates[0].1 = -1), "a negative lot");
        assert!(broken(|p| p.held = -1), "negative held credits");
        assert!(
            broken(|p| p.main.as_mut().unwrap().balance_after = 0),
            "a wrong balance_after"
        );
    }

    fn debit(credits: i64) -> MovementKind {
        MovementKind::Debit {
            txn_type: TxnType::AiUsage,
            credits,
        }
    }

    #[test]
    fn clawback_takes_lots_then_goes_into_debt() {
        let s = state(vec![lot(1, 30, Some(5)), lot(2, 20, None)]);
        let plan = plan_movement(&s, &MovementKind::Clawback { credits: 80 }, NOW).unwrap();
        assert_eq!(plan.lot_updates, vec![(1, 0), (2, 0)]);
        let main = plan.main.as_ref().unwrap();
        assert_eq!(
            (main.txn_type, main.amount, main.balance_after),
            (TxnType::Refund, -80, -30)
        );
        assert_eq!(plan.balance, -30);
        // The next grant repays the debt before it becomes spendable.
        let debt = AccountView {
            balance: -30,
            ..state(vec![])
        };
        let grant = MovementKind::Grant {
            txn_type: TxnType::Purchase,
            credits: 50,
            expires_at: None,
        };
        let plan = plan_movement(&debt, &grant, NOW).unwrap();
        assert_eq!(plan.new_lot.as_ref().unwrap().remaining, 20);
        assert_eq!(plan.balance, 20);
    }

    #[test]
    fn debits_burn_soonest_expiring_then_oldest() {
        let s = state(vec![
            lot(1, 10, None),
            lot(2, 10, Some(30)),
            lot(3, 10, Some(5)),
            lot(4, 10, None),
        ]);
        let plan = plan_movement(&s, &debit(25), NOW).unwrap();
        assert_eq!(plan.lot_updates, vec![(3, 0), (2, 0), (1, 5)]);
        assert_eq!(plan.balance, 15);
        assert_eq!(plan.main.unwrap().amount, -25);
    }

    #[test]
    fn a_run_planned_in_turn_sees_what_each_plan_leaves() {
        let s = state(vec![
            lot(1, 10, Some(0)),
            lot(2, 6, Some(5)),
            lot(3, 10, None),
        ]);
        let mut run = InTurn::new(s);
        // The first expires the due lot and burns the soonest-expiring one.
        let first = run.plan(&debit(4), NOW).unwrap();
        assert_eq!(first.expiries.len(), 1);
        assert_eq!(first.lot_updates, vec![(1, 0), (2, 2)]);
        assert_eq!(first.main.unwrap().balance_after, 12);
        // Refused: 12 left; nothing changes.
        assert!(matches!(
            run.plan(&debit(13), NOW),
            Err(LedgerError::InsufficientCredits {
                requested: 13,
                available: 12
            })
        ));
        // Nothing due any more; what lot 2 has left goes first, then lot 3.
        let third = run.plan(&debit(5), NOW).unwrap();
        assert!(third.expiries.is_empty());
        assert_eq!(third.lot_updates, vec![(2, 0), (3, 7)]);
        assert_eq!(third.main.unwrap().balance_after, 7);
        let last = run.plan(&debit(7), NOW).unwrap();
        assert_eq!(last.lot_updates, vec![(3, 0)]);
        assert_eq!(last.balance, 0);
        assert!(run.plan(&debit(1), NOW).is_err());
    }

    #[test]
    #[should_panic(expected = "cannot be planned in turn")]
    fn a_grant_is_not_planned_in_turn() {
        let grant = MovementKind::Grant {
            txn_type: TxnType::Purchase,
            credits: 5,
            expires_at: None,
        };
        let _ = InTurn::new(state(vec![])).plan(&grant, NOW);
    }

    #[test]
    fn never_overdraws() {
        let s = state(vec![lot(1, 10, None)]);
        let err = plan_movement(&s, &debit(11), NOW).unwrap_err();
        assert!(matches!(
            err,
            LedgerError::InsufficientCredits {
                requested: 11,
                available: 10
            }
        ));
    }

    #[test]
    fn held_credits_are_not_available() {
        let mut s = state(vec![lot(1, 10, None)]);
        s.held = 4;
        assert!(plan_movement(&s, &debit(7), NOW).is_err());
        assert!(plan_movement(&s, &debit(6), NOW).is_ok());
    }

    #[test]
    fn due_lots_expire_before_the_movement_and_do_not_count() {
        let s = state(vec![lot(1, 10, Some(0)), lot(2, 5, None)]);
        assert!(plan_movement(&s, &debit(6), NOW).is_err());
        let plan = plan_movement(&s, &debit(5), NOW).unwrap();
        assert_eq!(plan.expiries.len(), 1);
        assert_eq!(plan.expiries[0].amount, -10);
        assert_eq!(plan.expiries[0].balance_after, 5);
        assert_eq!(plan.main.unwrap().balance_after, 0);
        assert_eq!(plan.lot_updates, vec![(1, 0), (2, 0)]);
    }

    #[test]
    fn balance_view_hides_due_lots_at_the_instant() {
        let s = state(vec![
            lot(1, 10, Some(0)),
            lot(2, 5, Some(1)),
            lot(3, 3, Some(1)),
        ]);
        let v = balance_view(&s, NOW);
        assert_eq!(v.balance, 8);
        assert_eq!(
            v.expiring,
            vec![ExpiringCredits {
                amount: 8,
                expires_at: NOW + Duration::days(1)
            }]
        );
        let before = balance_view(&s, NOW - Duration::microseconds(1));
        assert_eq!(before.balance, 18);
    }

    #[test]
    fn grants_repay_debt_first() {
        let s = AccountView {
            balance: -30,
            held: 0,
            holds: vec![],
            last_instant_partial: false,
            lots: vec![],
        };
        let kind = MovementKind::Grant {
            txn_type: TxnType::Purchase,
            credits: 50,
            expires_at: None,
        };
        let plan = plan_movement(&s, &kind, NOW).unwrap();
        assert_eq!(plan.balance, 20);
        assert_eq!(plan.new_lot.unwrap().remaining, 20);
    }

    #[test]
    fn overdraft_only_when_allowed() {
        let s = state(vec![lot(1, 10, None)]);
        let deny = MovementKind::Adjust {
            credits: -15,
            allow_negative: false,
            expires_at: None,
        };
        assert!(plan_movement(&s, &deny, NOW).is_err());
        let allow = MovementKind::Adjust {
            credits: -15,
            allow_negative: true,
            expires_at: None,
        };
        let plan = plan_movement(&s, &allow, NOW).unwrap();
        assert_eq!(plan.balance, -5);
        assert_eq!(plan.lot_updates, vec![(1, 0)]);
    }

    #[test]
    fn grants_cannot_overflow() {
        let s = AccountView {
            balance: MAX_CREDITS,
            held: 0,
            holds: vec![],
            last_instant_partial: false,
            lots: vec![lot(1, MAX_CREDITS, None)],
        };
        let kind = MovementKind::Grant {
            txn_type: TxnType::Reward,
            credits: 1,
            expires_at: None,
        };
        assert!(matches!(
            plan_movement(&s, &kind, NOW),
            Err(LedgerError::Overflow)
        ));
    }

    #[test]
    fn a_debit_plans_from_the_lots_that_cover_it() {
        // The store reads lots in consumption order only until they cover the debit.
        let mut s = state(vec![lot(7, 4, Some(2)), lot(9, 10, None)]);
        s.balance = 10_000;
        let plan = plan_movement(&s, &debit(12), NOW).unwrap();
        assert_eq!(plan.lot_updates, vec![(7, 0), (9, 2)]);
        assert_eq!(plan.balance, 9_988);
        assert_eq!(debit(12).burns(), 12);
        let take = MovementKind::Adjust {
            credits: -5,
            allow_negative: true,
            expires_at: None,
        };
        assert_eq!(take.burns(), 5);
        let give = MovementKind::Adjust {
            credits: 5,
            allow_negative: false,
            expires_at: None,
        };
        assert_eq!(give.burns(), 0);
        assert_eq!(MovementKind::Clawback { credits: 3 }.burns(), 3);
    }

    #[cfg(debug_assertions)]
    #[test]
    fn an_overdraft_planned_without_every_lot_is_caught() {
        // Lots hold 30 of a balance of 30, but the state shows only one of them.
        let mut s = state(vec![lot(1, 10, None)]);
        s.balance = 30;
        let overdraft = MovementKind::Clawback { credits: 40 };
        let caught = std::panic::catch_unwind(|| plan_movement(&s, &overdraft, NOW));
        assert!(caught.is_err(), "the lots would no longer hold the balance");
    }

    #[test]
    fn balance_view_leaves_out_an_instant_it_may_not_have_read_whole() {
        let mut s = state(vec![
            lot(1, 10, Some(1)),
            lot(2, 5, Some(2)),
            lot(3, 3, Some(2)),
        ]);
        s.balance += 100;
        let all = balance_view(&s, NOW);
        assert_eq!(all.expiring.len(), 2);
        assert_eq!(all.expiring[1].amount, 8);
        s.last_instant_partial = true;
        let partial = balance_view(&s, NOW);
        assert_eq!(
            partial.expiring,
            vec![ExpiringCredits {
                amount: 10,
                expires_at: NOW + Duration::days(1)
            }]
        );
        assert_eq!(partial.balance, 118, "the balance is the account's");
    }

    #[test]
    fn balance_view_counts_held_credits_of_holds_not_yet_due() {
        use crate::holds::HoldView;
        let mut s = state(vec![lot(1, 100, None)]);
        // 30 held in all; the store read only the due hold of 10.
        s.held = 30;
        s.holds = vec![HoldView {
            id: 4,
            amount: 10,
            expires_at: NOW,
        }];
        let v = balance_view(&s, NOW);
        assert_eq!((v.held, v.available), (20, 80));
        let before = balance_view(&s, NOW - Duration::microseconds(1));
        assert_eq!((before.held, before.available), (30, 70));
    }
}
