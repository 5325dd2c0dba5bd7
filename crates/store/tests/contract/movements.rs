//! Grants, spends, lots, expiry, idempotency and overdrafts.

use super::*;

tally_testkit::backend_tests!(run = run; grant_then_spend, spend_never_overdraws, lots_are_consumed_soonest_expiring_then_oldest, expired_lots_stop_counting_at_the_instant_and_sweep_writes_expiries, idempotency_replays_and_refuses_reuse, admin_overdraft_needs_allow_negative_and_grants_repay_debt, timestamps_keep_whole_microseconds);

async fn grant_then_spend(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");

    let g = grant(l, &a, 100, None).await;
    assert_eq!(g.txn_type, TxnType::Purchase);
    assert_eq!((g.amount, g.balance_after), (100, 100));
    assert_eq!((g.app.as_str(), g.user.as_str()), ("app", "alice"));
    assert_eq!(g.created_at, START);

    t.clock.advance(Duration::seconds(1));
    let s = l
        .spend(
            a.clone(),
            30,
            "chat completion".into(),
            None,
            Some(json!({"model": "m-1", "tokens": 1234})),
        )
        .await
        .unwrap();
    assert_eq!(s.txn_type, TxnType::AiUsage);
    assert_eq!((s.amount, s.balance_after), (-30, 70));
    assert_eq!(s.description, "chat completion");
    assert_eq!(s.metadata, Some(json!({"model": "m-1", "tokens": 1234})));
    assert_eq!(s.created_at, START + Duration::seconds(1));
    assert!(s.id > g.id, "ids increase with time");

    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!((view.balance, view.available, view.held), (70, 70, 0));
    assert!(view.expiring.is_empty());
    assert!(l.check(a.clone(), 70).await.unwrap().sufficient);
    let short = l.check(a.clone(), 71).await.unwrap();
    assert!(!short.sufficient);
    assert_eq!((short.balance, short.available), (70, 70));

    // What the history returns is exactly what the movements returned.
    assert_eq!(history(l, &a).await, vec![s, g]);
}

async fn spend_never_overdraws(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");

    assert!(matches!(
        spend(l, &a, 1).await,
        Err(LedgerError::InsufficientCredits {
            requested: 1,
            available: 0
        })
    ));
    assert!(history(l, &a).await.is_empty());

    grant(l, &a, 10, None).await;
    assert!(matches!(
        spend(l, &a, 11).await,
        Err(LedgerError::InsufficientCredits {
            requested: 11,
            available: 10
        })
    ));
    assert_eq!(
        history(l, &a).await.len(),
        1,
        "a refused spend writes nothing"
    );
    assert_eq!(balance(l, &a).await, 10);
    assert_eq!(lots(l, &a).await.len(), 1);
    assert_eq!(lots(l, &a).await[0].1, 10);

    let all = spend(l, &a, 10).await.unwrap();
    assert_eq!(all.balance_after, 0);
    assert!(matches!(
        spend(l, &a, 1).await,
        Err(LedgerError::InsufficientCredits {
            requested: 1,
            available: 0
        })
    ));
    assert_eq!(history(l, &a).await.len(), 2);
    assert_eq!(balance(l, &a).await, 0);
    assert!(lots(l, &a).await.is_empty());

    assert!(matches!(
        spend(l, &a, 0).await,
        Err(LedgerError::Validation(f)) if f[0].field == "amount"
    ));
    assert!(matches!(
        spend(l, &a, -5).await,
        Err(LedgerError::Validation(f)) if f[0].field == "amount"
    ));
}

async fn lots_are_consumed_soonest_expiring_then_oldest(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    let soon = START + Duration::days(5);
    let late = START + Duration::days(30);

    grant(l, &a, 10, None).await; // L1: never expires, oldest
    grant(l, &a, 10, Some(late)).await; // L2
    grant(l, &a, 10, Some(soon)).await; // L3: soonest, older of two
    grant(l, &a, 10, None).await; // L4: never expires, newer
    grant(l, &a, 10, Some(soon)).await; // L5: soonest, newer of two
    let ids: Vec<i64> = lots(l, &a).await.iter().map(|x| x.0).collect();
    assert_eq!(ids.len(), 5);
    let [l1, l2, l3, l4, l5] = ids[..] else {
        unreachable!()
    };
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!(view.balance, 50);
    assert_eq!(view.expiring, expiring(&[(20, soon), (10, late)]));

    // Soonest expiry first; among equal expiries, the oldest lot.
    spend(l, &a, 5).await.unwrap();
    assert_eq!(
        lots(l, &a).await,
        vec![
            (l1, 10, None),
            (l2, 10, Some(late)),
            (l3, 5, Some(soon)),
            (l4, 10, None),
            (l5, 10, Some(soon)),
        ]
    );
    spend(l, &a, 10).await.unwrap();
    assert_eq!(
        lots(l, &a).await,
        vec![
            (l1, 10, None),
            (l2, 10, Some(late)),
            (l4, 10, None),
            (l5, 5, Some(soon)),
        ]
    );
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!(view.balance, 35);
    assert_eq!(view.expiring, expiring(&[(5, soon), (10, late)]));

    // What expires is exactly what consumption left in the soonest lots.
    t.clock.set(soon);
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!(view.balance, 30);
    assert_eq!(view.expiring, expiring(&[(10, late)]));
    assert_eq!(l.sweep_expired(100).await.unwrap(), 1);
    let newest = history(l, &a).await.remove(0);
    assert_eq!(newest.txn_type, TxnType::Expiry);
    assert_eq!((newest.amount, newest.balance_after), (-5, 30));
    assert_eq!(newest.metadata, Some(json!({ "lot_id": l5 })));

    // Expiring lots before never-expiring ones; never-expiring ones oldest first.
    spend(l, &a, 12).await.unwrap();
    assert_eq!(lots(l, &a).await, vec![(l1, 8, None), (l4, 10, None)]);
    spend(l, &a, 10).await.unwrap();
    assert_eq!(lots(l, &a).await, vec![(l4, 8, None)]);
    assert_eq!(balance(l, &a).await, 8);
}

async fn expired_lots_stop_counting_at_the_instant_and_sweep_writes_expiries(t: Ctx) {
    let l = &t.ledger;
    let at = START + Duration::hours(1);
    let a = acct("app", "alice");
    let b = acct("app", "bob");
    let c = acct("app", "carol");
    let d = acct("app", "dave");

    grant(l, &a, 50, Some(at)).await;
    grant(l, &a, 20, None).await;
    spend(l, &a, 10).await.unwrap(); // from the expiring lot: 40 of it are left
    grant(l, &b, 30, Some(at)).await;
    grant(l, &b, 5, None).await;
    grant(l, &c, 7, Some(at)).await;
    grant(l, &d, 8, Some(at)).await;
    let a_expiring_lot = lots(l, &a).await[0].0;

    assert!(matches!(
        l.apply(movement(&a, grant_kind(1, Some(START)))).await,
        Err(LedgerError::Validation(f)) if f[0].field == "expires_at"
    ));

    t.clock
        .advance(Duration::hours(1) - Duration::microseconds(1));
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!((view.balance, view.available), (60, 60));
    assert_eq!(view.expiring, expiring(&[(40, at)]));

    // At the expiry instant the lot no longer counts, although nothing has been written yet.
    t.clock.advance(Duration::microseconds(1));
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!((view.balance, view.available), (20, 20));
    assert!(view.expiring.is_empty());
    assert_eq!(stored_balance(l, &a).await, 60);
    assert!(!l.check(a.clone(), 21).await.unwrap().sufficient);
    assert!(matches!(
        spend(l, &a, 21).await,
        Err(LedgerError::InsufficientCredits {
            requested: 21,
            available: 20
        })
    ));
    assert_eq!(history(l, &a).await.len(), 3, "nothing written yet");
    assert_clean(l, "before the sweep").await;

    // A movement on an account with due lots writes their expiry first.
    let s = spend(l, &b, 5).await.unwrap();
    assert_eq!(s.balance_after, 0);
    let hb = history(l, &b).await;
    assert_eq!(hb.len(), 4);
    assert_eq!(
        (hb[1].txn_type, hb[1].amount, hb[1].balance_after),
        (TxnType::Expiry, -30, 5)
    );
    assert_eq!(hb[1].created_at, at);
    assert!(lots(l, &b).await.is_empty());

    // The sweep handles the other three accounts, `limit` at a time.
    assert_eq!(l.sweep_expired(1).await.unwrap(), 1);
    assert_eq!(l.sweep_expired(100).await.unwrap(), 2);
    assert_eq!(l.sweep_expired(100).await.unwrap(), 0);

    let ha = history(l, &a).await;
    assert_eq!(ha.len(), 4);
    assert_eq!(ha[0].txn_type, TxnType::Expiry);
    assert_eq!((ha[0].amount, ha[0].balance_after), (-40, 20));
    assert_eq!(ha[0].metadata, Some(json!({ "lot_id": a_expiring_lot })));
    assert_eq!(ha[0].created_at, at);
    assert_eq!(stored_balance(l, &a).await, 20);
    assert_eq!(balance(l, &a).await, 20);
    for (who, amount) in [(&c, -7), (&d, -8)] {
        let h = history(l, who).await;
        assert_eq!(h.len(), 2);
        assert_eq!(
            (h[0].txn_type, h[0].amount, h[0].balance_after),
            (TxnType::Expiry, amount, 0)
        );
        assert_eq!(stored_balance(l, who).await, 0);
    }

    t.clock.advance(Duration::days(400));
    assert_eq!(l.sweep_expired(100).await.unwrap(), 0);
    assert_eq!(balance(l, &a).await, 20);
}

async fn idempotency_replays_and_refuses_reuse(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    grant(l, &a, 100, None).await;

    let request = |credits: i64, description: &str, meta: serde_json::Value| Movement {
        idempotency_key: Some("order-1".into()),
        description: description.into(),
        metadata: Some(meta),
        ..movement(
            &a,
            MovementKind::Debit {
                txn_type: TxnType::AiUsage,
                credits,
            },
        )
    };
    let original = l
        .apply(request(30, "usage", json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(original.idempotency_key.as_deref(), Some("order-1"));
    assert_eq!(original.balance_after, 70);

    t.clock.advance(Duration::minutes(5));
    let replay = l
        .apply(request(30, "usage", json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(
        replay, original,
        "a replay returns the original transaction"
    );
    assert_eq!(history(l, &a).await.len(), 2);
    assert_eq!(balance(l, &a).await, 70);

    for changed in [
        request(31, "usage", json!({"n": 1})),
        request(30, "other usage", json!({"n": 1})),
        request(30, "usage", json!({"n": 2})),
        Movement {
            idempotency_key: Some("order-1".into()),
            ..movement(&a, grant_kind(30, None))
        },
    ] {
        assert!(
            matches!(
                l.apply(changed.clone()).await,
                Err(LedgerError::IdempotencyKeyReused)
            ),
            "reuse not refused: {changed:?}"
        );
    }
    assert_eq!(
        history(l, &a).await.len(),
        2,
        "refused reuses write nothing"
    );
    assert_eq!(balance(l, &a).await, 70);

    let second = l
        .spend(a.clone(), 30, "usage".into(), Some("order-2".into()), None)
        .await
        .unwrap();
    assert_ne!(second.id, original.id);
    assert_eq!(second.balance_after, 40);

    // A refused movement does not consume its key.
    assert!(matches!(
        l.spend(
            a.clone(),
            1_000,
            "usage".into(),
            Some("order-3".into()),
            None
        )
        .await,
        Err(LedgerError::InsufficientCredits { .. })
    ));
    let third = l
        .spend(a.clone(), 10, "usage".into(), Some("order-3".into()), None)
        .await
        .unwrap();
    assert_eq!(third.balance_after, 30);
    assert_eq!(history(l, &a).await.len(), 4);

    // A retried grant still answers its original after the lot's expiry has passed (the request
    // is the same; only a new grant must expire in the future).
    let until = l.now() + Duration::hours(1);
    let timed = Movement {
        idempotency_key: Some("pack-1".into()),
        ..movement(&a, grant_kind(5, Some(until)))
    };
    let granted = l.apply(timed.clone()).await.unwrap();
    t.clock.set(until + Duration::minutes(1));
    assert_eq!(l.apply(timed.clone()).await.unwrap(), granted);
    assert!(matches!(
        l.apply(Movement {
            idempotency_key: Some("pack-2".into()),
            ..timed
        })
        .await,
        Err(LedgerError::Validation(f)) if f[0].field == "expires_at"
    ));
    assert_eq!(history(l, &a).await.len(), 5);
}

async fn admin_overdraft_needs_allow_negative_and_grants_repay_debt(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    grant(l, &a, 10, None).await;

    assert!(matches!(
        l.apply(movement(&a, adjust_kind(-15, false))).await,
        Err(LedgerError::InsufficientCredits {
            requested: 15,
            available: 10
        })
    ));
    assert_eq!(history(l, &a).await.len(), 1);
    assert_eq!(balance(l, &a).await, 10);

    let overdraft = l
        .apply(Movement {
            actor: Some("admin-1".into()),
            description: "chargeback".into(),
            ..movement(&a, adjust_kind(-15, true))
        })
        .await
        .unwrap();
    assert_eq!(overdraft.txn_type, TxnType::AdminAdjustment);
    assert_eq!((overdraft.amount, overdraft.balance_after), (-15, -5));
    assert_eq!(overdraft.actor.as_deref(), Some("admin-1"));
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!((view.balance, view.available), (-5, 0));
    assert!(lots(l, &a).await.is_empty());
    assert!(matches!(
        spend(l, &a, 1).await,
        Err(LedgerError::InsufficientCredits {
            requested: 1,
            available: 0
        })
    ));
    assert_clean(l, "in debt after an allowed overdraft").await;

    // Grants repay the debt before anything becomes spendable.
    let partial = grant(l, &a, 3, None).await;
    assert_eq!(partial.balance_after, -2);
    assert!(lots(l, &a).await.is_empty());
    assert!(spend(l, &a, 1).await.is_err());
    let repaid = grant(l, &a, 20, None).await;
    assert_eq!(repaid.balance_after, 18);
    let live = lots(l, &a).await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].1, 18);
    assert!(matches!(
        spend(l, &a, 19).await,
        Err(LedgerError::InsufficientCredits {
            requested: 19,
            available: 18
        })
    ));
    assert_eq!(spend(l, &a, 18).await.unwrap().balance_after, 0);

    // A positive adjustment is a grant, with an optional expiry.
    let until = START + Duration::days(1);
    let bonus = l
        .apply(movement(
            &a,
            MovementKind::Adjust {
                credits: 7,
                allow_negative: false,
                expires_at: Some(until),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        (bonus.txn_type, bonus.amount),
        (TxnType::AdminAdjustment, 7)
    );
    assert_eq!(
        l.balance(a.clone()).await.unwrap().expiring,
        expiring(&[(7, until)])
    );
}

async fn timestamps_keep_whole_microseconds(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");

    // The clock only ever reads whole microseconds, however it is moved.
    t.clock.advance(Duration::nanoseconds(1_999));
    let now = l.now();
    assert_eq!(now.nanosecond() % 1_000, 0, "clock reads {now}");
    assert_eq!(now, START + Duration::microseconds(1));

    // Instants are stored to the microsecond, identically on every backend.
    let until = START + Duration::hours(1) + Duration::nanoseconds(999);
    let g = grant(l, &a, 10, Some(until)).await;
    assert_eq!(g.created_at, now);
    assert_eq!(history(l, &a).await[0].created_at, now);
    let whole = START + Duration::hours(1);
    assert_eq!(
        l.balance(a.clone()).await.unwrap().expiring,
        expiring(&[(10, whole)])
    );
    t.clock.set(whole - Duration::microseconds(1));
    assert_eq!(balance(l, &a).await, 10);
    t.clock.set(whole);
    assert_eq!(balance(l, &a).await, 0);
    assert_eq!(l.sweep_expired(10).await.unwrap(), 1);
    assert_eq!(history(l, &a).await[0].created_at, whole);
}
