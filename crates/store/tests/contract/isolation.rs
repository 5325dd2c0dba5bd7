//! Apps never see each other's accounts; two nodes share one database.

use super::*;

tally_testkit::backend_tests!(run = run; apps_are_isolated, two_nodes_share_one_database);

async fn apps_are_isolated(t: Ctx) {
    let l = &t.ledger;
    let one = acct("app-one", "alice");
    let two = acct("app-two", "alice");

    grant(l, &one, 100, None).await;
    assert_eq!(balance(l, &two).await, 0);
    assert!(matches!(
        spend(l, &two, 1).await,
        Err(LedgerError::InsufficientCredits {
            requested: 1,
            available: 0
        })
    ));
    grant(l, &two, 7, None).await;
    assert_eq!(spend(l, &one, 30).await.unwrap().balance_after, 70);
    assert_eq!(balance(l, &one).await, 70);
    assert_eq!(balance(l, &two).await, 7);

    // One idempotency key in two apps names two movements.
    let k1 = l
        .spend(
            one.clone(),
            1,
            "usage".into(),
            Some("shared-key".into()),
            None,
        )
        .await
        .unwrap();
    let k2 = l
        .spend(
            two.clone(),
            2,
            "usage".into(),
            Some("shared-key".into()),
            None,
        )
        .await
        .unwrap();
    assert_ne!(k1.id, k2.id);
    assert_eq!((k1.balance_after, k2.balance_after), (69, 5));

    let h1 = history(l, &one).await;
    let h2 = history(l, &two).await;
    assert_eq!((h1.len(), h2.len()), (3, 2));
    assert!(h1.iter().all(|r| r.app == "app-one"));
    assert!(h2.iter().all(|r| r.app == "app-two"));
    let app_wide = TransactionQuery {
        user: None,
        ..query(&two, 100, 0)
    };
    assert_eq!(l.transactions(app_wide).await.unwrap().0, h2);

    // Check-in configuration and records are per app.
    l.set_checkin_config(
        "app-two",
        CheckinConfig {
            enabled: false,
            ..CheckinConfig::default()
        },
        "admin",
    )
    .await
    .unwrap();
    assert_eq!(l.checkin(one.clone()).await.unwrap().streak, 1);
    assert!(matches!(
        l.checkin(two.clone()).await,
        Err(LedgerError::CheckinDisabled)
    ));
    l.set_checkin_config("app-two", CheckinConfig::default(), "admin")
        .await
        .unwrap();
    assert_eq!(l.checkin(two.clone()).await.unwrap().streak, 1);
    assert_eq!(balance(l, &one).await, 69 + 10);
    assert_eq!(balance(l, &two).await, 5 + 10);
}

async fn two_nodes_share_one_database(t: Ctx) {
    let one = t.ledger.clone();
    let two = t.second_node().await;
    let a = acct("app", "alice");
    grant(&one, &a, 1_000, None).await;
    assert_eq!(balance(&two, &a).await, 1_000);

    // Spends from both nodes never overdraw between them.
    let mut tasks = JoinSet::new();
    for i in 0..16 {
        let (l, a) = (
            if i % 2 == 0 { one.clone() } else { two.clone() },
            a.clone(),
        );
        tasks.spawn(async move {
            let mut ok = 0;
            for _ in 0..100 {
                match spend(&l, &a, 1).await {
                    Ok(_) => ok += 1,
                    Err(LedgerError::InsufficientCredits { .. }) => {}
                    Err(e) => panic!("unexpected error: {e:?}"),
                }
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        ok += done.unwrap();
    }
    assert_eq!(ok, 1_000);
    assert_eq!(balance(&two, &a).await, 0);

    // Both nodes sweeping at once expire each lot exactly once.
    let at = START + Duration::hours(1);
    let users: Vec<AccountRef> = (0..20).map(|i| acct("app", &format!("u{i}"))).collect();
    for u in &users {
        grant(&one, u, 10, Some(at)).await;
    }
    t.clock.set(at);
    let sweeps: Vec<_> = [one.clone(), two.clone(), one.clone(), two.clone()]
        .into_iter()
        .map(|l| tokio::spawn(async move { l.sweep_expired(1_000).await.unwrap() }))
        .collect();
    let mut swept = 0;
    for s in sweeps {
        swept += s.await.unwrap();
    }
    assert_eq!(swept, 20, "each account swept by exactly one node");
    for u in &users {
        let h = history(&one, u).await;
        assert_eq!(
            h.iter().map(|r| (r.txn_type, r.amount)).collect::<Vec<_>>(),
            vec![(TxnType::Expiry, -10), (TxnType::Purchase, 10)]
        );
    }
    assert_clean(&two, "after sweeping from two nodes").await;
}
