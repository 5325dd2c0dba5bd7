//! Holds: reserve, capture, release, expiry, idempotency, isolation, validation, concurrency.

use super::*;

tally_testkit::backend_tests!(run = run; reserve_capture_release_happy_paths, holds_take_credits_out_of_available_not_balance, capture_above_the_hold_within_and_beyond_available, capture_of_zero_writes_no_transaction, second_capture_is_rejected_and_changes_nothing, capture_replays_with_the_same_key_and_figures, capture_after_release_is_rejected_and_changes_nothing, holds_expire_at_their_instant, expired_holds_are_marked_by_the_next_write, reserve_is_idempotent_by_key, holds_are_isolated_by_app, hold_requests_are_validated, verify_checks_held_against_active_holds, concurrent_holds_never_overcommit);

async fn reserve_capture_release_happy_paths(t: Ctx) {
    let l = &t.ledger;
    let a = acct(APP, "alice");
    let g = grant(l, &a, 100).await;

    t.clock.advance(Duration::seconds(1));
    let now = l.now();
    let hold = reserve(l, &a, 40).await.unwrap();
    assert_eq!((hold.app.as_str(), hold.user.as_str()), (APP, "alice"));
    assert_eq!(hold.amount, 40);
    assert_eq!(hold.status, HoldStatus::Active);
    assert_eq!((hold.captured, hold.transaction_id), (None, None));
    assert_eq!(hold.description, "chat completion");
    assert_eq!(hold.metadata, Some(json!({"model": "m-1"})));
    assert_eq!(hold.expires_at, now + Duration::seconds(60));
    assert_eq!((hold.created_at, hold.updated_at), (now, now));
    assert_eq!(l.hold(APP, hold.id).await.unwrap(), hold);

    assert_eq!(figures(l, &a).await, (100, 60, 40));
    assert_eq!(
        history(l, &a).await,
        vec![g.clone()],
        "a hold writes no row"
    );
    let stored = stored_account(l, &a).await;
    assert_eq!((stored.balance, stored.held), (100, 40));
    assert!(l.check(a.clone(), 60).await.unwrap().sufficient);
    assert!(!l.check(a.clone(), 61).await.unwrap().sufficient);

    // Capture below the estimate: 25 charged, 15 returned.
    t.clock.advance(Duration::seconds(2));
    let now = l.now();
    let (captured, txn) = capture(l, &hold, 25).await.unwrap();
    let txn = txn.expect("a capture above zero writes a transaction");
    assert_eq!(txn.txn_type, TxnType::AiUsage);
    assert_eq!((txn.amount, txn.balance_after), (-25, 75));
    assert_eq!(txn.description, "chat completion", "defaults to the hold's");
    assert_eq!(txn.metadata, Some(json!({"model": "m-1"})));
    assert_eq!(txn.created_at, now);
    assert_eq!(captured.status, HoldStatus::Captured);
    assert_eq!(captured.captured, Some(25));
    assert_eq!(captured.transaction_id, Some(txn.id));
    assert_eq!(captured.updated_at, now);
    assert_eq!(captured.created_at, hold.created_at);
    assert_eq!(l.hold(APP, hold.id).await.unwrap(), captured);
    assert_eq!(figures(l, &a).await, (75, 75, 0));
    assert_eq!(history(l, &a).await, vec![txn.clone(), g.clone()]);

    // Capture with its own description and metadata.
    let second = reserve(l, &a, 10).await.unwrap();
    assert_eq!(figures(l, &a).await, (75, 65, 10));
    let (_, txn2) = l
        .capture(
            CaptureRequest {
                description: Some("streamed 812 tokens".into()),
                metadata: Some(json!({"tokens": 812})),
                ..capture_request(APP, &second, 10)
            },
            None,
        )
        .await
        .unwrap();
    let txn2 = txn2.unwrap();
    assert_eq!((txn2.amount, txn2.balance_after), (-10, 65));
    assert_eq!(txn2.description, "streamed 812 tokens");
    assert_eq!(txn2.metadata, Some(json!({"tokens": 812})));

    // Release: everything returns, no row is written.
    let third = reserve(l, &a, 30).await.unwrap();
    assert_eq!(figures(l, &a).await, (65, 35, 30));
    t.clock.advance(Duration::seconds(1));
    let released = l.release(APP, third.id).await.unwrap();
    assert_eq!(released.status, HoldStatus::Released);
    assert_eq!((released.captured, released.transaction_id), (None, None));
    assert_eq!(released.updated_at, l.now());
    assert_eq!(l.hold(APP, third.id).await.unwrap(), released);
    assert_eq!(figures(l, &a).await, (65, 65, 0));
    assert_eq!(history(l, &a).await, vec![txn2, txn, g]);
    let stored = stored_account(l, &a).await;
    assert_eq!((stored.balance, stored.held), (65, 0));
    assert!(stored.holds.is_empty());
}

async fn holds_take_credits_out_of_available_not_balance(t: Ctx) {
    let l = &t.ledger;
    let a = acct(APP, "alice");
    grant(l, &a, 100).await;
    let h1 = reserve(l, &a, 60).await.unwrap();
    let h2 = reserve(l, &a, 40).await.unwrap();
    assert_eq!(figures(l, &a).await, (100, 0, 100));

    // Nothing is available: neither a further hold nor a plain spend gets through.
    assert_err!(
        reserve(l, &a, 1).await,
        LedgerError::InsufficientCredits {
            requested: 1,
            available: 0
        }
    );
    assert_err!(
        l.spend(a.clone(), 1, "usage".into(), None, None).await,
        LedgerError::InsufficientCredits {
            requested: 1,
            available: 0
        }
    );

    // Releasing one makes exactly its amount available again.
    l.release(APP, h2.id).await.unwrap();
    assert_eq!(figures(l, &a).await, (100, 40, 60));
    assert_err!(
        reserve(l, &a, 41).await,
        LedgerError::InsufficientCredits {
            requested: 41,
            available: 40
        }
    );
    let spend = l
        .spend(a.clone(), 40, "usage".into(), None, None)
        .await
        .unwrap();
    assert_eq!(spend.balance_after, 60);
    assert_eq!(figures(l, &a).await, (60, 0, 60));
    capture(l, &h1, 60).await.unwrap();
    assert_eq!(figures(l, &a).await, (0, 0, 0));
}

async fn capture_above_the_hold_within_and_beyond_available(t: Ctx) {
    let l = &t.ledger;
    let a = acct(APP, "alice");
    grant(l, &a, 100).await;
    let small = reserve(l, &a, 30).await.unwrap();
    let big = reserve(l, &a, 50).await.unwrap();
    assert_eq!(figures(l, &a).await, (100, 20, 80));

    // 15 above the hold, with 20 available: charged in full.
    let (h, txn) = capture(l, &small, 45).await.unwrap();
    assert_eq!(h.captured, Some(45));
    assert_eq!(txn.unwrap().amount, -45);
    assert_eq!(figures(l, &a).await, (55, 5, 50));

    // 6 above the hold with 5 available: refused, and the hold stays active.
    let before = snapshot(l, &a).await;
    assert_err!(
        capture(l, &big, 56).await,
        LedgerError::InsufficientCredits {
            requested: 56,
            available: 55
        }
    );
    assert_eq!(
        snapshot(l, &a).await,
        before,
        "a refused capture changes nothing"
    );
    assert_eq!(l.hold(APP, big.id).await.unwrap(), big);

    // Exactly the hold plus everything available: allowed, balance reaches zero.
    let (h, txn) = capture(l, &big, 55).await.unwrap();
    assert_eq!(h.status, HoldStatus::Captured);
    assert_eq!((txn.unwrap().balance_after, h.captured), (0, Some(55)));
    assert_eq!(figures(l, &a).await, (0, 0, 0));
}

async fn capture_of_zero_writes_no_transaction(t: Ctx) {
    let l = &t.ledger;
    let a = acct(APP, "alice");
    let g = grant(l, &a, 100).await;
    let hold = reserve(l, &a, 40).await.unwrap();
    let (h, txn) = capture(l, &hold, 0).await.unwrap();
    assert!(txn.is_none(), "nothing charged, nothing written: {txn:?}");
    assert_eq!(h.status, HoldStatus::Captured);
    assert_eq!((h.captured, h.transaction_id), (Some(0), None));
    assert_eq!(figures(l, &a).await, (100, 100, 0));
    assert_eq!(history(l, &a).await, vec![g]);
    // A capture of zero still settles the hold.
    assert_err!(
        capture(l, &hold, 0).await,
        LedgerError::HoldNotActive { status: "captured" }
    );
}

async fn second_capture_is_rejected_and_changes_nothing(t: Ctx) {
    let l = &t.ledger;
    let a = acct(APP, "alice");
    grant(l, &a, 100).await;
    let hold = reserve(l, &a, 40).await.unwrap();
    let (first, _) = capture(l, &hold, 30).await.unwrap();
    t.clock.advance(Duration::seconds(1));

    let before = snapshot(l, &a).await;
    assert_eq!((before.view.balance, before.view.held), (70, 0));
    for credits in [30, 10, 40, 0] {
        assert_err!(
            capture(l, &hold, credits).await,
            LedgerError::HoldNotActive { status: "captured" }
        );
    }
    // A key on the second attempt does not make it a replay of a capture that had none.
    assert_err!(
        l.capture(capture_request(APP, &hold, 30), Some("late-key".into()))
            .await,
        LedgerError::HoldNotActive { status: "captured" }
    );
    assert_err!(
        l.release(APP, hold.id).await,
        LedgerError::HoldNotActive { status: "captured" }
    );
    assert_eq!(snapshot(l, &a).await, before);
    assert_eq!(l.hold(APP, hold.id).await.unwrap(), first);
}

async fn capture_replays_with_the_same_key_and_figures(t: Ctx) {
    let l = &t.ledger;
    let a = acct(APP, "alice");
    grant(l, &a, 100).await;
    let hold = reserve(l, &a, 40).await.unwrap();
    let key = Some("capture-1".to_owned());
    let original = l
        .capture(capture_request(APP, &hold, 30), key.clone())
        .await
        .unwrap();
    assert_eq!(original.1.as_ref().unwrap().amount, -30);
    let before = snapshot(l, &a).await;

    // Later, the same key and figures: the original answer, nothing new written.
    t.clock.advance(Duration::minutes(5));
    let replay = l
        .capture(capture_request(APP, &hold, 30), key.clone())
        .await
        .unwrap();
    assert_eq!(replay, original);
    assert_eq!(snapshot(l, &a).await, before);

    // The same key with other figures, or another key: rejected.
    assert_err!(
        l.capture(capture_request(APP, &hold, 31), key.clone())
            .await,
        LedgerError::HoldNotActive { status: "captured" }
    );
    let described = CaptureRequest {
        description: Some("other".into()),
        ..capture_request(APP, &hold, 30)
    };
    assert_err!(
        l.capture(described, key.clone()).await,
        LedgerError::HoldNotActive { status: "captured" }
    );
    assert_err!(
        l.capture(capture_request(APP, &hold, 30), Some("capture-2".into()))
            .await,
        LedgerError::HoldNotActive { status: "captured" }
    );
    assert_err!(
        capture(l, &hold, 30).await,
        LedgerError::HoldNotActive { status: "captured" }
    );
    assert_eq!(snapshot(l, &a).await, before);

    // A keyed capture of zero replays as "no transaction".
    let zero = reserve(l, &a, 10).await.unwrap();
    let first = l
        .capture(capture_request(APP, &zero, 0), Some("capture-0".into()))
        .await
        .unwrap();
    assert!(first.1.is_none());
    let again = l
        .capture(capture_request(APP, &zero, 0), Some("capture-0".into()))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(figures(l, &a).await, (70, 70, 0));
    assert_eq!(history(l, &a).await.len(), 2);
}

async fn capture_after_release_is_rejected_and_changes_nothing(t: Ctx) {
    let l = &t.ledger;
    let a = acct(APP, "alice");
    grant(l, &a, 100).await;
    let hold = reserve(l, &a, 40).await.unwrap();
    let released = l.release(APP, hold.id).await.unwrap();
    assert_eq!(released.status, HoldStatus::Released);
    t.clock.advance(Duration::seconds(1));

    let before = snapshot(l, &a).await;
    assert_eq!((before.view.balance, before.view.held), (100, 0));
    assert_err!(
        capture(l, &hold, 10).await,
        LedgerError::HoldNotActive { status: "released" }
    );
    assert_err!(
        l.capture(capture_request(APP, &hold, 0), Some("k".into()))
            .await,
        LedgerError::HoldNotActive { status: "released" }
    );
    // Releasing again answers the hold as it is.
    assert_eq!(l.release(APP, hold.id).await.unwrap(), released);
    assert_eq!(snapshot(l, &a).await, before);
}

async fn holds_expire_at_their_instant(t: Ctx) {
    let l = &t.ledger;
    let a = acct(APP, "alice");
    grant(l, &a, 100).await;
    let request = ReserveRequest {
        idempotency_key: Some("reserve-1".into()),
        ..reserve_request(&a, 40, 60)
    };
    let hold = l.reserve(request.clone()).await.unwrap();
    let other = l.reserve(reserve_request(&a, 10, 120)).await.unwrap();
    assert_eq!(hold.expires_at, START + Duration::seconds(60));

    t.clock.set(hold.expires_at - Duration::microseconds(1));
    assert_eq!(figures(l, &a).await, (100, 50, 50));
    assert_eq!(
        l.hold(APP, hold.id).await.unwrap().status,
        HoldStatus::Active
    );

    // At the instant, the credits are available again, before anything is written.
    t.clock.set(hold.expires_at);
    assert_eq!(figures(l, &a).await, (100, 90, 10));
    assert_eq!(
        l.hold(APP, hold.id).await.unwrap().status,
        HoldStatus::Expired
    );
    assert_eq!(stored_hold(l, &hold).await.status, HoldStatus::Active);
    assert!(l.check(a.clone(), 90).await.unwrap().sufficient);

    // Capturing fails clearly, and changes nothing.
    let before = snapshot(l, &a).await;
    assert_err!(capture(l, &hold, 10).await, LedgerError::HoldExpired);
    assert_err!(
        l.capture(capture_request(APP, &hold, 0), Some("late".into()))
            .await,
        LedgerError::HoldExpired
    );
    assert_eq!(snapshot(l, &a).await, before);

    // Replaying the reservation answers the expired hold; it does not reserve again.
    let replay = l.reserve(request).await.unwrap();
    assert_eq!(replay.id, hold.id);
    assert_eq!(replay.status, HoldStatus::Expired, "{replay:?}");
    assert_eq!(figures(l, &a).await, (100, 90, 10));

    // The sweep marks it; the other hold is untouched.
    assert_eq!(l.sweep_expired(100).await.unwrap(), 1);
    assert_eq!(
        l.sweep_expired(100).await.unwrap(),
        0,
        "nothing left to sweep"
    );
    let swept = stored_hold(l, &hold).await;
    assert_eq!(swept.status, HoldStatus::Expired);
    assert_eq!(swept.updated_at, hold.expires_at);
    assert_eq!((swept.captured, swept.transaction_id), (None, None));
    let stored = stored_account(l, &a).await;
    assert_eq!((stored.balance, stored.held), (100, 10));
    assert_eq!(
        stored.holds.iter().map(|h| h.id).collect::<Vec<_>>(),
        vec![other.id]
    );
    assert_eq!(figures(l, &a).await, (100, 90, 10));
    assert_eq!(
        history(l, &a).await.len(),
        1,
        "expiring a hold writes no row"
    );

    // Still expired after the sweep: capture fails, release answers it unchanged.
    assert_err!(capture(l, &hold, 10).await, LedgerError::HoldExpired);
    assert_eq!(l.release(APP, hold.id).await.unwrap(), swept);
    assert_eq!(l.hold(APP, hold.id).await.unwrap(), swept);

    // The other hold expires too; releasing it after its instant answers it as expired.
    t.clock.set(other.expires_at + Duration::seconds(1));
    let late = l.release(APP, other.id).await.unwrap();
    assert_eq!(late.status, HoldStatus::Expired);
    assert_eq!(figures(l, &a).await, (100, 100, 0));
    assert_eq!(stored_account(l, &a).await.held, 0);
}

async fn expired_holds_are_marked_by_the_next_write(t: Ctx) {
    let l = &t.ledger;
    let a = acct(APP, "alice");
    grant(l, &a, 100).await;
    let h1 = l.reserve(reserve_request(&a, 70, 10)).await.unwrap();
    let h2 = l.reserve(reserve_request(&a, 20, 30)).await.unwrap();
    assert_eq!(figures(l, &a).await, (100, 10, 90));

    // Past h1's instant only: a reservation may use h1's credits, and marks h1 expired.
    t.clock.set(h1.expires_at);
    let h3 = reserve(l, &a, 80).await.unwrap();
    assert_eq!(stored_hold(l, &h1).await.status, HoldStatus::Expired);
    assert_eq!(stored_hold(l, &h2).await.status, HoldStatus::Active);
    assert_eq!(figures(l, &a).await, (100, 0, 100));
    assert_eq!(
        stored_account(l, &a).await.held,
        100,
        "cached held = h2 + h3"
    );

    // Past h2's: a plain spend marks it.
    t.clock.set(h2.expires_at);
    assert_eq!(figures(l, &a).await, (100, 20, 80));
    let s = l
        .spend(a.clone(), 20, "usage".into(), None, None)
        .await
        .unwrap();
    assert_eq!(s.balance_after, 80);
    assert_eq!(stored_hold(l, &h2).await.status, HoldStatus::Expired);
    let stored = stored_account(l, &a).await;
    assert_eq!((stored.balance, stored.held), (80, 80));
    assert_eq!(l.sweep_expired(100).await.unwrap(), 0);

    let (_, txn) = capture(l, &h3, 80).await.unwrap();
    assert_eq!(txn.unwrap().balance_after, 0);
    assert_eq!(figures(l, &a).await, (0, 0, 0));
}

async fn reserve_is_idempotent_by_key(t: Ctx) {
    let l = &t.ledger;
    let a = acct(APP, "alice");
    let b = acct(APP, "bob");
    grant(l, &a, 100).await;
    grant(l, &b, 100).await;
    let request = ReserveRequest {
        idempotency_key: Some("call-1".into()),
        ..reserve_request(&a, 40, 60)
    };
    let first = l.reserve(request.clone()).await.unwrap();
    t.clock.advance(Duration::seconds(5));
    let again = l.reserve(request.clone()).await.unwrap();
    assert_eq!(again, first, "same key, same request: the same hold");
    assert_eq!(figures(l, &a).await, (100, 60, 40), "reserved once");

    // Same key, anything else different: refused, nothing reserved.
    for changed in [
        ReserveRequest {
            credits: 41,
            ..request.clone()
        },
        ReserveRequest {
            ttl_seconds: 61,
            ..request.clone()
        },
        ReserveRequest {
            description: "other".into(),
            ..request.clone()
        },
        ReserveRequest {
            metadata: None,
            ..request.clone()
        },
    ] {
        assert_err!(l.reserve(changed).await, LedgerError::IdempotencyKeyReused);
    }
    assert_eq!(figures(l, &a).await, (100, 60, 40));

    // Keys belong to one account: bob's "call-1" is a hold of his own.
    let bobs = l
        .reserve(ReserveRequest {
            account: b.clone(),
            ..request.clone()
        })
        .await
        .unwrap();
    assert_ne!(bobs.id, first.id);
    assert_eq!(figures(l, &b).await, (100, 60, 40));

    // After the capture, the reservation key still answers that hold and reserves nothing.
    capture(l, &first, 40).await.unwrap();
    let after = l.reserve(request).await.unwrap();
    assert_eq!(after.id, first.id);
    assert_eq!(after.status, HoldStatus::Captured);
    assert_eq!(figures(l, &a).await, (60, 60, 0));

    // A reservation refused for lack of credits does not burn its key.
    let big = ReserveRequest {
        idempotency_key: Some("call-2".into()),
        ..reserve_request(&a, 61, 60)
    };
    assert_err!(
        l.reserve(big.clone()).await,
        LedgerError::InsufficientCredits {
            requested: 61,
            available: 60
        }
    );
    grant(l, &a, 1).await;
    let ok = l.reserve(big.clone()).await.unwrap();
    assert_eq!(l.reserve(big).await.unwrap(), ok);
    assert_eq!(figures(l, &a).await, (61, 0, 61));
    l.release(APP, ok.id).await.unwrap();
    l.release(APP, bobs.id).await.unwrap();
}

async fn holds_are_isolated_by_app(t: Ctx) {
    let l = &t.ledger;
    let a = acct(APP, "alice");
    let other_app = acct("other", "alice");
    grant(l, &a, 100).await;
    let hold = reserve(l, &a, 40).await.unwrap();
    let before = snapshot(l, &a).await;

    assert_err!(l.hold("other", hold.id).await, LedgerError::HoldNotFound);
    assert_err!(
        l.capture(capture_request("other", &hold, 10), None).await,
        LedgerError::HoldNotFound
    );
    assert_err!(
        l.capture(capture_request("other", &hold, 10), Some("k".into()))
            .await,
        LedgerError::HoldNotFound
    );
    assert_err!(l.release("other", hold.id).await, LedgerError::HoldNotFound);
    assert_eq!(snapshot(l, &a).await, before);
    assert_eq!(l.hold(APP, hold.id).await.unwrap(), hold);

    // Unknown ids are not found either.
    assert_err!(
        l.hold(APP, hold.id + 1_000).await,
        LedgerError::HoldNotFound
    );
    assert_err!(
        l.release(APP, hold.id + 1_000).await,
        LedgerError::HoldNotFound
    );
    let ghost = Hold {
        id: hold.id + 1_000,
        ..hold.clone()
    };
    assert_err!(capture(l, &ghost, 1).await, LedgerError::HoldNotFound);

    // The same user in another app has an account (and credits) of its own.
    assert_err!(
        reserve(l, &other_app, 1).await,
        LedgerError::InsufficientCredits {
            requested: 1,
            available: 0
        }
    );
    grant(l, &other_app, 5).await;
    let theirs = reserve(l, &other_app, 5).await.unwrap();
    assert_err!(l.hold(APP, theirs.id).await, LedgerError::HoldNotFound);
    assert_err!(
        l.capture(capture_request(APP, &theirs, 5), None).await,
        LedgerError::HoldNotFound
    );
    assert_eq!(figures(l, &other_app).await, (5, 0, 5));
    assert_eq!(snapshot(l, &a).await, before);
    l.release("other", theirs.id).await.unwrap();
    l.release(APP, hold.id).await.unwrap();
}

async fn hold_requests_are_validated(t: Ctx) {
    let l = &t.ledger;
    let a = acct(APP, "alice");
    grant(l, &a, 100).await;
    for (credits, ttl) in [(0, 60), (-5, 60), (10, 0), (10, 24 * 3600 + 1)] {
        assert_err!(
            l.reserve(reserve_request(&a, credits, ttl)).await,
            LedgerError::Validation(_)
        );
    }
    assert_err!(
        l.reserve(ReserveRequest {
            metadata: Some(json!([1, 2])),
            ..reserve_request(&a, 10, 60)
        })
        .await,
        LedgerError::Validation(f) if f[0].field == "metadata"
    );
    let hold = l.reserve(reserve_request(&a, 10, 24 * 3600)).await.unwrap();
    assert_err!(
        capture(l, &hold, -1).await,
        LedgerError::Validation(f) if f[0].field == "amount"
    );
    assert_err!(
        l.capture(capture_request(APP, &hold, 1), Some("has space".into()))
            .await,
        LedgerError::Validation(f) if f[0].field == "idempotency_key"
    );
    assert_eq!(figures(l, &a).await, (100, 90, 10));
    l.release(APP, hold.id).await.unwrap();
}

async fn verify_checks_held_against_active_holds(t: Ctx) {
    let l = &t.ledger;
    let a = acct(APP, "alice");
    grant(l, &a, 100).await;
    let hold = reserve(l, &a, 30).await.unwrap();
    assert_clean(l, "before tampering").await;

    // A cached `held` that drifts from the active holds, still within 0..=balance.
    execute_sql(&t.db, "UPDATE accounts SET held = held + 5").await;
    let violations = l.verify().await.unwrap();
    assert!(
        violations
            .iter()
            .any(|v| v.user == "alice" && v.rule.contains("active holds")),
        "held 35 with 30 in active holds must be reported: {violations:#?}"
    );
    execute_sql(&t.db, "UPDATE accounts SET held = held - 5").await;
    assert_clean(l, "after restoring held").await;

    // A hold settled behind the ledger's back, with `held` left as it was.
    execute_sql(
        &t.db,
        &format!(
            "UPDATE holds SET status = 'released' WHERE id = {}",
            hold.id
        ),
    )
    .await;
    assert!(
        !l.verify().await.unwrap().is_empty(),
        "held 30 with no active hold must be reported"
    );
    execute_sql(
        &t.db,
        &format!("UPDATE holds SET status = 'active' WHERE id = {}", hold.id),
    )
    .await;
    assert_clean(l, "after restoring the hold").await;
    l.release(APP, hold.id).await.unwrap();
}

async fn concurrent_holds_never_overcommit(t: Ctx) {
    const TASKS: u64 = 32;
    const ROUNDS: u64 = 12;
    const CREDITS: i64 = 5_000;
    let l = &t.ledger;
    let a = acct(APP, "alice");
    grant(l, &a, CREDITS).await;

    let done = Arc::new(AtomicBool::new(false));
    let checker = {
        let (l, a, done) = (l.clone(), a.clone(), done.clone());
        tokio::spawn(async move {
            let (mut reads, mut last_balance) = (0_u64, CREDITS);
            while !done.load(Ordering::Acquire) {
                let v = l.balance(a.clone()).await.unwrap();
                assert!(v.available >= 0 && v.held >= 0, "{v:?}");
                assert!(v.held <= v.balance, "held above balance: {v:?}");
                assert_eq!(v.available, v.balance - v.held, "{v:?}");
                assert!(
                    v.balance <= last_balance,
                    "captures only lower the balance: {v:?} after {last_balance}"
                );
                last_balance = v.balance;
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        })
    };

    #[derive(Debug, Default)]
    struct Tally {
        ops: u64,
        reserved: u64,
        refused: u64,
        captured_calls: u64,
        captured: i64,
        zero_captures: u64,
        over_refused: u64,
        released: u64,
    }

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let (l, a) = (l.clone(), a.clone());
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(task);
            let mut t = Tally::default();
            for _ in 0..ROUNDS {
                let estimate = rng.gen_range(10..=50);
                t.ops += 1;
                let hold = match reserve(&l, &a, estimate).await {
                    Ok(h) => h,
                    Err(LedgerError::InsufficientCredits { requested, .. }) => {
                        assert_eq!(requested, estimate);
                        t.refused += 1;
                        continue;
                    }
                    Err(e) => panic!("reserve: {e:?}"),
                };
                t.reserved += 1;
                tokio::task::yield_now().await;
                let roll = rng.gen_range(0..10);
                let cost = match roll {
                    0..=2 => None,
                    3 => Some(estimate + rng.gen_range(1..=5)),
                    _ => Some(rng.gen_range(0..=estimate)),
                };
                if let Some(cost) = cost {
                    t.ops += 1;
                    match capture(&l, &hold, cost).await {
                        Ok((h, txn)) => {
                            assert_eq!(h.captured, Some(cost));
                            assert_eq!(txn.as_ref().map(|t| -t.amount), (cost > 0).then_some(cost));
                            t.captured_calls += 1;
                            t.captured += cost;
                            t.zero_captures += u64::from(cost == 0);
                            continue;
                        }
                        // Above the hold with too little available: the hold stays active.
                        Err(LedgerError::InsufficientCredits { .. }) if cost > estimate => {
                            t.over_refused += 1;
                        }
                        Err(e) => panic!("capture {cost} of {estimate}: {e:?}"),
                    }
                }
                t.ops += 1;
                let released = l.release(&a.app, hold.id).await.unwrap();
                assert_eq!(released.status, HoldStatus::Released);
                t.released += 1;
            }
            t
        });
    }
    let mut total = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        let t = joined.unwrap();
        total.ops += t.ops;
        total.reserved += t.reserved;
        total.refused += t.refused;
        total.captured_calls += t.captured_calls;
        total.captured += t.captured;
        total.zero_captures += t.zero_captures;
        total.over_refused += t.over_refused;
        total.released += t.released;
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Release);
    let reads = checker.await.unwrap();
    eprintln!(
        "[{}] concurrent holds: {} writes ({TASKS} tasks x {ROUNDS} rounds; {} reserved, {} refused, \
         {} captured, {} released, {} over-hold refused) + {reads} balance reads in {:.2?} = {:.0} ops/s",
        t.backend.label(),
        total.ops,
        total.reserved,
        total.refused,
        total.captured_calls,
        total.released,
        total.over_refused,
        elapsed,
        total.ops as f64 / elapsed.as_secs_f64()
    );

    assert_eq!(total.reserved + total.refused, TASKS * ROUNDS);
    assert_eq!(total.reserved, total.captured_calls + total.released);
    assert!(total.captured_calls > 0 && total.released > 0, "{total:?}");
    let view = l.balance(a.clone()).await.unwrap();
    assert_eq!(
        (view.balance, view.available, view.held),
        (CREDITS - total.captured, CREDITS - total.captured, 0)
    );
    let stored = stored_account(l, &a).await;
    assert_eq!((stored.balance, stored.held), (CREDITS - total.captured, 0));
    assert!(stored.holds.is_empty(), "no hold left active");
    let usage: Vec<_> = history(l, &a)
        .await
        .into_iter()
        .filter(|r| r.txn_type == TxnType::AiUsage)
        .collect();
    assert_eq!(
        usage.len() as u64,
        total.captured_calls - total.zero_captures
    );
    assert_eq!(usage.iter().map(|r| -r.amount).sum::<i64>(), total.captured);
}
