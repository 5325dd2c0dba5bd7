//! Transaction history: order, offset pages and cursor pages.

use super::*;

tally_testkit::backend_tests!(run = run; history_is_newest_first_and_paginated, history_pages_by_cursor);

async fn history_is_newest_first_and_paginated(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    let other = acct("app", "bob");
    grant(l, &a, 1_000, None).await;
    grant(l, &other, 5, None).await;
    t.clock.advance(Duration::minutes(1));
    for i in 1..=11 {
        spend(l, &a, i).await.unwrap();
    }

    let (p1, more1) = l.transactions(query(&a, 5, 0)).await.unwrap();
    let (p2, more2) = l.transactions(query(&a, 5, 5)).await.unwrap();
    let (p3, more3) = l.transactions(query(&a, 5, 10)).await.unwrap();
    assert_eq!((p1.len(), p2.len(), p3.len()), (5, 5, 2));
    assert_eq!((more1, more2, more3), (true, true, false));

    let rows: Vec<Transaction> = [p1, p2, p3].concat();
    assert!(rows.iter().all(|r| r.user == "alice" && r.app == "app"));
    assert!(
        rows.windows(2).all(|w| w[0].id > w[1].id),
        "newest first, no row twice"
    );
    assert_eq!((rows[0].amount, rows[0].balance_after), (-11, 1_000 - 66));
    assert_eq!(rows[11].txn_type, TxnType::Purchase);
    assert_eq!(rows[11].balance_after, 1_000);
    for w in rows.windows(2) {
        assert_eq!(
            w[0].balance_after - w[0].amount,
            w[1].balance_after,
            "balance_after is a running sum"
        );
    }
    assert_eq!(rows, history(l, &a).await);

    // A page that ends exactly at the last row has no more; one row short has.
    assert!(!l.transactions(query(&a, 12, 0)).await.unwrap().1);
    assert!(l.transactions(query(&a, 11, 0)).await.unwrap().1);
    assert!(l.transactions(query(&a, 5, 12)).await.unwrap().0.is_empty());

    // Filters.
    let by_type = TransactionQuery {
        txn_type: Some(TxnType::Purchase),
        ..query(&a, 100, 0)
    };
    let (purchases, _) = l.transactions(by_type).await.unwrap();
    assert_eq!(purchases.len(), 1);
    assert_eq!(purchases[0].amount, 1_000);

    let later = TransactionQuery {
        from: Some(START + Duration::minutes(1)),
        ..query(&a, 100, 0)
    };
    assert_eq!(l.transactions(later).await.unwrap().0.len(), 11);
    let earlier = TransactionQuery {
        to: Some(START + Duration::minutes(1)),
        ..query(&a, 100, 0)
    };
    assert_eq!(l.transactions(earlier).await.unwrap().0.len(), 1);

    let app_wide = TransactionQuery {
        user: None,
        ..query(&a, 100, 0)
    };
    let (all, _) = l.transactions(app_wide).await.unwrap();
    assert_eq!(all.len(), 13);
    assert_eq!(all.iter().filter(|r| r.user == "bob").count(), 1);

    assert!(matches!(
        l.transactions(query(&a, 0, 0)).await,
        Err(LedgerError::Validation(f)) if f[0].field == "limit"
    ));
    assert!(matches!(
        l.transactions(query(&a, 101, 0)).await,
        Err(LedgerError::Validation(f)) if f[0].field == "limit"
    ));
}

async fn history_pages_by_cursor(t: Ctx) {
    let l = &t.ledger;
    let a = acct("app", "alice");
    let bob = acct("app", "bob");
    // 250 rows for alice, one second apart, alternating purchases and usage, with bob's rows
    // in between so that alice's ids are not contiguous.
    grant(l, &a, 1_000, None).await;
    for i in 1..250 {
        t.clock.advance(Duration::seconds(1));
        if i % 2 == 0 {
            grant(l, &a, 1, None).await;
        } else {
            spend(l, &a, 1).await.unwrap();
        }
        if i % 10 == 0 {
            grant(l, &bob, 1, None).await;
        }
    }
    let all = history(l, &a).await;
    assert_eq!(all.len(), 250);

    // Following the cursor yields every row exactly once, newest first, and the same pages as
    // stepping the offset; a page that ends at the last row says no more follow.
    for limit in [1, 7, 10, 100] {
        let q = query(&a, limit, 0);
        let by_cursor = pages_by_cursor(l, &q).await;
        assert_eq!(by_cursor, pages_by_offset(l, &q).await, "limit {limit}");
        assert_eq!(by_cursor.len(), 250_usize.div_ceil(limit as usize));
        assert!(by_cursor.iter().all(|p| !p.is_empty()), "no empty page");
        let rows = by_cursor.concat();
        assert_eq!(rows, all, "limit {limit}");
        assert!(rows.windows(2).all(|w| w[0].id > w[1].id));
        let ids: BTreeSet<i64> = rows.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), 250);
    }

    // The cursor need not be one of the user's rows, nor exist at all.
    let newest = all[0].id;
    let (rows, more) = l
        .transactions(TransactionQuery {
            before: Some(newest + 1_000),
            ..query(&a, 3, 0)
        })
        .await
        .unwrap();
    assert_eq!((rows.as_slice(), more), (&all[..3], true));
    let bobs = history(l, &bob).await;
    let cut = bobs[2].id;
    let (rows, _) = l
        .transactions(TransactionQuery {
            before: Some(cut),
            ..query(&a, 100, 0)
        })
        .await
        .unwrap();
    let older: Vec<Transaction> = all.iter().filter(|r| r.id < cut).cloned().collect();
    assert_eq!(rows, older[..100.min(older.len())]);
    let oldest = all[249].id;
    assert_eq!(
        l.transactions(TransactionQuery {
            before: Some(oldest),
            ..query(&a, 10, 0)
        })
        .await
        .unwrap(),
        (vec![], false)
    );

    // With filters, for one user and app-wide: the same rows as the offset pages.
    let window = (
        START + Duration::seconds(40),
        START + Duration::seconds(200),
    );
    let app_wide = TransactionQuery {
        user: None,
        ..query(&a, 9, 0)
    };
    for q in [
        TransactionQuery {
            txn_type: Some(TxnType::AiUsage),
            ..query(&a, 9, 0)
        },
        TransactionQuery {
            from: Some(window.0),
            to: Some(window.1),
            ..query(&a, 9, 0)
        },
        app_wide.clone(),
        TransactionQuery {
            txn_type: Some(TxnType::Purchase),
            ..app_wide.clone()
        },
        TransactionQuery {
            txn_type: Some(TxnType::Purchase),
            from: Some(window.0),
            to: Some(window.1),
            ..app_wide.clone()
        },
    ] {
        let by_cursor = pages_by_cursor(l, &q).await;
        assert_eq!(by_cursor, pages_by_offset(l, &q).await, "{q:?}");
        let rows = by_cursor.concat();
        assert!(!rows.is_empty(), "{q:?}");
        assert!(rows.windows(2).all(|w| w[0].id > w[1].id), "{q:?}");
        assert!(
            rows.iter()
                .all(|r| q.txn_type.is_none_or(|t| r.txn_type == t)
                    && q.from.is_none_or(|f| r.created_at >= f)
                    && q.to.is_none_or(|to| r.created_at < to)),
            "{q:?}"
        );
    }
    let app_rows = pages_by_cursor(l, &app_wide).await.concat();
    assert_eq!(app_rows.len(), 250 + 24);
    let purchases_in_window = pages_by_cursor(
        l,
        &TransactionQuery {
            txn_type: Some(TxnType::Purchase),
            from: Some(window.0),
            to: Some(window.1),
            ..app_wide.clone()
        },
    )
    .await
    .concat();
    let expected: Vec<Transaction> = app_rows
        .into_iter()
        .filter(|r| {
            r.txn_type == TxnType::Purchase && r.created_at >= window.0 && r.created_at < window.1
        })
        .collect();
    assert_eq!(purchases_in_window, expected);

    // A cursor excludes a non-zero offset, and must be a positive id.
    for (before, offset) in [(Some(newest), 5), (Some(0), 0), (Some(-1), 0)] {
        assert!(
            matches!(
                l.transactions(TransactionQuery {
                    before,
                    ..query(&a, 10, offset)
                })
                .await,
                Err(LedgerError::Validation(f)) if f[0].field == "before"
            ),
            "before {before:?}, offset {offset}"
        );
    }
}
