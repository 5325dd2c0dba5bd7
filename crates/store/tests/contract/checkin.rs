//! Daily check-in: streaks, rewards, the local day, switching off, expiring rewards.

use super::*;

tally_testkit::backend_tests!(run = run; checkin_streaks_and_rewards, checkin_local_day_follows_the_time_zone, checkin_disabled, checkin_credits_can_expire);

async fn checkin_streaks_and_rewards(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    l.set_checkin_config("app", checkin_config("UTC", &[5, 10, 20]), "admin")
        .await
        .unwrap();

    let status = l.checkin_status(a.clone()).await.unwrap();
    assert!(!status.checked_in_today);
    assert_eq!((status.streak, status.next_reward), (0, 5));
    assert_eq!(status.next_checkin_at, START);

    let first = l.checkin(a.clone()).await.unwrap();
    assert_eq!((first.awarded, first.streak, first.balance), (5, 1, 5));
    assert_eq!(first.day, date!(2026 - 06 - 01));
    assert_eq!(first.next_checkin_at, datetime!(2026-06-02 00:00 UTC));

    match l.checkin(a.clone()).await {
        Err(LedgerError::AlreadyCheckedIn { day }) => assert_eq!(day, "2026-06-01"),
        other => panic!("expected AlreadyCheckedIn, got {other:?}"),
    }
    assert_eq!(
        history(l, &a).await.len(),
        1,
        "a refused check-in writes nothing"
    );
    assert_eq!(balance(l, &a).await, 5);
    let status = l.checkin_status(a.clone()).await.unwrap();
    assert!(status.checked_in_today);
    assert_eq!((status.streak, status.next_reward), (1, 10));
    assert_eq!(status.next_checkin_at, datetime!(2026-06-02 00:00 UTC));

    // Consecutive local days extend the streak; the table's last value repeats.
    let mut got = Vec::new();
    for _ in 0..3 {
        t.clock.advance(Duration::days(1));
        let o = l.checkin(a.clone()).await.unwrap();
        got.push((o.awarded, o.streak, o.balance));
    }
    assert_eq!(got, vec![(10, 2, 15), (20, 3, 35), (20, 4, 55)]);

    // One microsecond across local midnight is the next day.
    t.clock.set(datetime!(2026-06-05 23:59:59.999999 UTC));
    let late = l.checkin(a.clone()).await.unwrap();
    assert_eq!((late.streak, late.day), (5, date!(2026 - 06 - 05)));
    t.clock.advance(Duration::microseconds(1));
    let early = l.checkin(a.clone()).await.unwrap();
    assert_eq!((early.streak, early.day), (6, date!(2026 - 06 - 06)));

    // A skipped day resets the streak.
    t.clock.advance(Duration::days(2));
    let status = l.checkin_status(a.clone()).await.unwrap();
    assert_eq!((status.streak, status.next_reward), (0, 5));
    let reset = l.checkin(a.clone()).await.unwrap();
    assert_eq!((reset.awarded, reset.streak), (5, 1));
    assert_eq!(reset.balance, 5 + 10 + 20 + 20 + 20 + 20 + 5);

    let h = history(l, &a).await;
    assert!(h.iter().all(|r| r.txn_type == TxnType::Checkin));
    let amounts: Vec<i64> = h.iter().map(|r| r.amount).collect();
    assert_eq!(amounts, vec![5, 20, 20, 20, 20, 10, 5]);
}

async fn checkin_local_day_follows_the_time_zone(t: Ctx) {
    let l = &t.ledger;
    let utc = acct("utc-app", "alice");
    let tokyo = acct("tokyo-app", "alice");
    l.set_checkin_config("utc-app", checkin_config("UTC", &[1, 2, 3]), "admin")
        .await
        .unwrap();
    l.set_checkin_config(
        "tokyo-app",
        checkin_config("Asia/Tokyo", &[1, 2, 3]),
        "admin",
    )
    .await
    .unwrap();

    // 12:00 UTC is 21:00 in Tokyo: the same calendar day in both zones.
    let u1 = l.checkin(utc.clone()).await.unwrap();
    let t1 = l.checkin(tokyo.clone()).await.unwrap();
    assert_eq!(u1.day, date!(2026 - 06 - 01));
    assert_eq!(t1.day, date!(2026 - 06 - 01));
    assert_eq!(t1.next_checkin_at, datetime!(2026-06-01 15:00 UTC));

    // 15:30 UTC is already the next day in Tokyo.
    t.clock.advance(Duration::minutes(210));
    assert!(matches!(
        l.checkin(utc.clone()).await,
        Err(LedgerError::AlreadyCheckedIn { .. })
    ));
    let t2 = l.checkin(tokyo.clone()).await.unwrap();
    assert_eq!(
        (t2.day, t2.streak, t2.awarded),
        (date!(2026 - 06 - 02), 2, 2)
    );
    assert_eq!(t2.next_checkin_at, datetime!(2026-06-02 15:00 UTC));

    // Switching the app's zone moves its local day at once.
    l.set_checkin_config("utc-app", checkin_config("Asia/Tokyo", &[1, 2, 3]), "admin")
        .await
        .unwrap();
    let u2 = l.checkin(utc.clone()).await.unwrap();
    assert_eq!(
        (u2.day, u2.streak, u2.awarded),
        (date!(2026 - 06 - 02), 2, 2)
    );
    assert_eq!(balance(l, &utc).await, 3);
    assert_eq!(balance(l, &tokyo).await, 3);

    assert!(matches!(
        l.set_checkin_config("utc-app", checkin_config("Mars/Olympus", &[1]), "admin")
            .await,
        Err(LedgerError::Validation(f)) if f[0].field == "timezone"
    ));
    assert_eq!(
        l.checkin_config("utc-app").await.unwrap().timezone,
        "Asia/Tokyo"
    );
}

async fn checkin_disabled(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    assert_eq!(
        l.checkin_config("app").await.unwrap(),
        CheckinConfig::default()
    );
    let off = CheckinConfig {
        enabled: false,
        ..checkin_config("UTC", &[3])
    };
    l.set_checkin_config("app", off.clone(), "admin")
        .await
        .unwrap();
    assert_eq!(l.checkin_config("app").await.unwrap(), off);

    assert!(matches!(
        l.checkin(a.clone()).await,
        Err(LedgerError::CheckinDisabled)
    ));
    assert!(!l.checkin_status(a.clone()).await.unwrap().enabled);
    assert!(history(l, &a).await.is_empty());
    assert_eq!(balance(l, &a).await, 0);
    // The refusal comes from inside the check-in's write: the account it locked (creating it)
    // is not kept either.
    let opened = l
        .repository()
        .accounts(tally_ledger::AccountQuery {
            app: "app".into(),
            prefix: None,
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(opened.is_empty(), "{opened:?}");

    l.set_checkin_config("app", checkin_config("UTC", &[3]), "admin")
        .await
        .unwrap();
    assert_eq!(l.checkin(a.clone()).await.unwrap().awarded, 3);
}

async fn checkin_credits_can_expire(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    let config = CheckinConfig {
        credits_expire_days: Some(2),
        ..checkin_config("UTC", &[10])
    };
    l.set_checkin_config("app", config.clone(), "admin")
        .await
        .unwrap();
    assert_eq!(l.checkin_config("app").await.unwrap(), config);

    l.checkin(a.clone()).await.unwrap();
    let until = START + Duration::days(2);
    assert_eq!(
        l.balance(a.clone()).await.unwrap().expiring,
        expiring(&[(10, until)])
    );
    t.clock.set(until);
    assert_eq!(balance(l, &a).await, 0);
    assert_eq!(l.sweep_expired(10).await.unwrap(), 1);
    let h = history(l, &a).await;
    assert_eq!(
        h.iter().map(|r| (r.txn_type, r.amount)).collect::<Vec<_>>(),
        vec![(TxnType::Expiry, -10), (TxnType::Checkin, 10)]
    );
}
