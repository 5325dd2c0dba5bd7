//! Accounts holding many lots and holds: the store reads only what a request needs (the due
//! lots and holds, lots in burn order until a debit is covered, the soonest expiries for a
//! balance), and what it answers must be what reading everything would give.

use super::*;
use tally_ledger::{BALANCE_LOTS, CaptureRequest, HoldStatus, ReserveRequest};

tally_testkit::backend_tests!(run = run; many_lots_burn_in_order_expire_at_the_instant_and_repay_debt, holds_due_among_many_stop_counting_and_expire_first, a_debit_expires_every_due_lot_first, a_one_credit_debit_whose_first_lot_is_due);

/// A stored lot: `(id, remaining, expires_at)`.
type Lot = (i64, i64, Option<OffsetDateTime>);

/// Burns `credits` from `lots` in consumption order (soonest-expiring, then never-expiring,
/// oldest first), as the ledger must; lots left empty are dropped.
fn burn(lots: &mut Vec<Lot>, mut credits: i64) {
    lots.sort_by_key(|&(id, _, at)| (at.is_none(), at, id));
    for lot in lots.iter_mut() {
        let take = credits.min(lot.1);
        lot.1 -= take;
        credits -= take;
    }
    lots.retain(|l| l.1 > 0);
    lots.sort_unstable();
}

/// What a balance read shows as expiring at `now`: the instants of the soonest
/// [`BALANCE_LOTS`] lots that expire after `now`, less the latest when lots left unread expire
/// then too — unless it is the only one, which is then shown whole.
fn shown_expiring(lots: &[Lot], now: OffsetDateTime) -> Vec<ExpiringCredits> {
    let mut future: Vec<(OffsetDateTime, i64, i64)> = lots
        .iter()
        .filter_map(|&(id, remaining, at)| at.filter(|&at| at > now).map(|at| (at, id, remaining)))
        .collect();
    future.sort_unstable();
    let keep = BALANCE_LOTS as usize;
    if future.len() > keep {
        let next = future[keep].0;
        if future[..keep].iter().all(|l| l.0 == next) {
            future.retain(|l| l.0 == next);
        } else {
            future.truncate(keep);
            future.retain(|l| l.0 != next);
        }
    }
    let mut shown: Vec<ExpiringCredits> = Vec::new();
    for (at, _, amount) in future {
        match shown.last_mut() {
            Some(last) if last.expires_at == at => last.amount += amount,
            _ => shown.push(ExpiringCredits {
                amount,
                expires_at: at,
            }),
        }
    }
    shown
}

fn live_sum(lots: &[Lot], now: OffsetDateTime) -> i64 {
    lots.iter()
        .filter(|l| l.2.is_none_or(|at| at > now))
        .map(|l| l.1)
        .sum()
}

async fn many_lots_burn_in_order_expire_at_the_instant_and_repay_debt(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "hoarder");
    // 300 grants: every third never expires; the others expire on one of 150 hours, in no order,
    // two lots sharing most instants.
    for i in 0..300_i64 {
        let expires_at = (i % 3 != 0).then(|| START + Duration::hours((i * 7) % 150 + 1));
        grant(l, &a, 1 + i % 4, expires_at).await;
    }
    let mut model = lots(l, &a).await;
    assert_eq!(model.len(), 300);
    let total: i64 = model.iter().map(|l| l.1).sum();
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!((view.balance, view.available), (total, total));
    let expected = shown_expiring(&model, START);
    assert!(expected.len() > 2, "the read shows several instants");
    assert_eq!(view.expiring, expected);

    // Many lots expiring at one instant are shown whole, however many there are.
    let campaign = acct("app", "campaign");
    let end = START + Duration::days(30);
    for _ in 0..(3 * BALANCE_LOTS) {
        grant(l, &campaign, 2, Some(end)).await;
    }
    grant(l, &campaign, 5, Some(end + Duration::days(1))).await;
    let view = l.balance(campaign.clone()).await.unwrap();
    assert_eq!(view.expiring, expiring(&[(6 * BALANCE_LOTS, end)]));
    assert_eq!(view.balance, 6 * BALANCE_LOTS + 5);

    // A debit takes the soonest-expiring lots first, then the oldest that never expire.
    spend(l, &a, 137).await.unwrap();
    burn(&mut model, 137);
    assert_eq!(lots(l, &a).await, model);

    // At an instant when more lots are due than one balance read takes: those lots stop
    // counting at that very instant although nothing has been written.
    let due_at = START + Duration::hours(120);
    let due = model
        .iter()
        .filter(|l| l.2.is_some_and(|at| at <= due_at))
        .count() as i64;
    assert!(due > BALANCE_LOTS, "{due} lots due");
    t.clock.set(due_at - Duration::microseconds(1));
    let before = l.balance(a.clone()).await.unwrap();
    assert_eq!(
        before.balance,
        live_sum(&model, due_at - Duration::microseconds(1))
    );
    t.clock.set(due_at);
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!(view.balance, live_sum(&model, due_at));
    assert!(view.balance < before.balance);
    assert_eq!(view.expiring, shown_expiring(&model, due_at));
    assert_eq!(stored_balance(l, &a).await, total - 137, "nothing written");
    let available = view.available;
    assert!(matches!(
        spend(l, &a, available + 1).await,
        Err(LedgerError::InsufficientCredits { available: shown, .. }) if shown == available
    ));

    // The next movement writes every due lot's expiry first, in lot order, then debits.
    let before_rows = history(l, &a).await.len();
    let s = spend(l, &a, 3).await.unwrap();
    assert_eq!(s.balance_after, available - 3);
    let rows = history(l, &a).await;
    assert_eq!(rows.len() as i64, before_rows as i64 + due + 1);
    let expiries: Vec<&Transaction> = rows[1..=due as usize].iter().rev().collect();
    let expired: Vec<&Lot> = model
        .iter()
        .filter(|l| l.2.is_some_and(|at| at <= due_at))
        .collect();
    for (row, lot) in expiries.iter().zip(&expired) {
        assert_eq!((row.txn_type, row.amount), (TxnType::Expiry, -lot.1));
        assert_eq!(row.metadata, Some(json!({ "lot_id": lot.0 })));
    }
    model.retain(|l| l.2.is_none_or(|at| at > due_at));
    burn(&mut model, 3);
    assert_eq!(lots(l, &a).await, model);

    // A clawback beyond the balance burns every lot and leaves a debt; a grant repays it first.
    let balance_now = balance(l, &a).await;
    l.apply(movement(
        &a,
        MovementKind::Clawback {
            credits: balance_now + 50,
        },
    ))
    .await
    .unwrap();
    assert!(lots(l, &a).await.is_empty());
    assert_eq!(balance(l, &a).await, -50);
    grant(l, &a, 80, None).await;
    let left = lots(l, &a).await;
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].1, balance(l, &a).await), (30, 30));
}

fn reserve(a: &AccountRef, credits: i64, ttl_seconds: i64) -> ReserveRequest {
    ReserveRequest {
        account: a.clone(),
        credits,
        ttl_seconds,
        description: "streaming".into(),
        idempotency_key: None,
        metadata: None,
    }
}

async fn holds_due_among_many_stop_counting_and_expire_first(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "streamer");
    grant(l, &a, 1_000, None).await;
    let mut holds = Vec::new();
    for i in 0..100 {
        holds.push(
            l.reserve(reserve(&a, 1 + i % 2, 60 * (i + 1)))
                .await
                .unwrap(),
        );
    }
    let held: i64 = (0..100).map(|i| 1 + i % 2).sum();
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!((view.held, view.available), (held, 1_000 - held));

    // Half an hour on, the first 30 holds have run out: they no longer count, unwritten.
    t.clock.advance(Duration::minutes(30));
    let due: i64 = (0..30).map(|i| 1 + i % 2).sum();
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!(
        (view.held, view.available),
        (held - due, 1_000 - held + due)
    );
    let stored = stored_account(l, &a).await;
    assert_eq!((stored.held, stored.holds.len()), (held, 100));

    // The next hold expires them first.
    l.reserve(reserve(&a, 5, 60)).await.unwrap();
    let stored = stored_account(l, &a).await;
    assert_eq!((stored.held, stored.holds.len()), (held - due + 5, 71));
    let first = l.hold("app", holds[0].id).await.unwrap();
    assert_eq!(first.status, HoldStatus::Expired);

    // A capture and a release among the rest work on their own hold only.
    let (captured, txn) = l
        .capture(
            CaptureRequest {
                app: "app".into(),
                hold_id: holds[50].id,
                credits: 1,
                description: None,
                metadata: None,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(captured.status, HoldStatus::Captured);
    assert_eq!(txn.unwrap().balance_after, 999);
    let released = l.release("app", holds[51].id).await.unwrap();
    assert_eq!(released.status, HoldStatus::Released);
    let view = l.balance(a.clone()).await.unwrap();
    // Hold 50 held 1 credit, hold 51 two.
    let expect_held = held - due + 5 - 1 - 2;
    assert_eq!((view.balance, view.held), (999, expect_held));
}

/// The credits the account's history has expired (negative).
async fn expired_in_history(l: &Ledger, a: &AccountRef) -> i64 {
    history(l, a)
        .await
        .iter()
        .filter(|r| r.txn_type == TxnType::Expiry)
        .map(|r| r.amount)
        .sum()
}

/// The account's stored live lots, `(remaining, expires_at)`, soonest-expiring first, then the
/// lots that never expire.
async fn lots_in_burn_order(l: &Ledger, a: &AccountRef) -> Vec<(i64, Option<OffsetDateTime>)> {
    let mut lots: Vec<_> = stored_account(l, a)
        .await
        .lots
        .iter()
        .map(|lot| (lot.remaining, lot.expires_at))
        .collect();
    lots.sort_by_key(|&(_, at)| (at.is_none(), at));
    lots
}

/// More lots due at once than a debit's first read of the lots holds: the debit still expires
/// every one of them before it spends.
async fn a_debit_expires_every_due_lot_first(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "many-due");
    let at = START + Duration::hours(1);
    for i in 0..40 {
        // Distinct instants: lots of one instant could share a row.
        grant(l, &a, 1, Some(at - Duration::seconds(i))).await;
    }
    for _ in 0..5 {
        grant(l, &a, 10, None).await;
    }
    t.clock.set(at + Duration::seconds(1));
    spend(l, &a, 3).await.unwrap();
    let expired = expired_in_history(l, &a).await;
    assert_eq!(expired, -40, "every due lot expired");
    assert_eq!(balance(l, &a).await, 47);
    let stored = stored_account(l, &a).await;
    assert_eq!(stored.balance, 47);
    assert_eq!(stored.lots.iter().map(|lot| lot.remaining).sum::<i64>(), 47);
    assert!(stored.lots.iter().all(|lot| lot.expires_at.is_none()));
}

/// A debit of one credit first reads one lot of each kind: when the expiring one read is due, the
/// debit must still expire it (and any other due lot) and spend from the lots after it, soonest
/// expiring first.
async fn a_one_credit_debit_whose_first_lot_is_due(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "first-due");
    let at = START + Duration::hours(1);
    grant(l, &a, 5, Some(at - Duration::seconds(2))).await;
    grant(l, &a, 4, Some(at - Duration::seconds(1))).await;
    grant(l, &a, 3, Some(at + Duration::hours(1))).await;
    grant(l, &a, 10, None).await;
    t.clock.set(at);
    spend(l, &a, 1).await.unwrap();
    let expired = expired_in_history(l, &a).await;
    assert_eq!(expired, -9, "both due lots expired");
    assert_eq!(balance(l, &a).await, 12);
    let stored = lots_in_burn_order(l, &a).await;
    assert_eq!(
        stored,
        vec![(2, Some(at + Duration::hours(1))), (10, None)],
        "the credit came from the soonest lot not due"
    );
    // Then one credit more, the first lot read not due: from the same lot.
    spend(l, &a, 1).await.unwrap();
    assert_eq!(balance(l, &a).await, 11);
    let stored = lots_in_burn_order(l, &a).await;
    assert_eq!(stored, vec![(1, Some(at + Duration::hours(1))), (10, None)]);
}
