//! Redemption codes: generation, single and multi use, expiry, rate limits, concurrency.

use super::*;

tally_testkit::backend_tests!(run = run; codes_are_generated_and_redeemed_once_per_user, expired_exhausted_and_unknown_codes, concurrent_redemptions_of_a_single_use_code_grant_once, one_user_redeems_a_multi_use_code_once, wrong_guesses_are_rate_limited, retry_after_is_exact_at_the_window_edge);

async fn codes_are_generated_and_redeemed_once_per_user(t: Ctx) {
    let l = &t.ledger;
    let codes = l
        .create_codes(CodeBatchRequest {
            credits_expire_days: Some(30),
            ..batch(APP, 3, 50, 2)
        })
        .await
        .unwrap();
    assert_eq!(codes.len(), 3);
    for c in &codes {
        assert!(is_code(&c.code), "{}", c.code);
        assert!(c.batch.starts_with("batch_"), "{}", c.batch);
        assert_eq!(c.batch, codes[0].batch, "one batch");
        assert_eq!((c.credits, c.max_uses, c.uses), (50, 2, 0));
        assert_eq!((c.expires_at, c.credits_expire_days), (None, Some(30)));
        assert_eq!(
            (c.description.as_str(), c.created_by.as_str()),
            ("Launch promo", "admin-1")
        );
        assert_eq!(c.created_at, START);
    }
    let distinct: std::collections::BTreeSet<_> = codes.iter().map(|c| &c.code).collect();
    assert_eq!(distinct.len(), 3);
    let listed = l.codes(APP, 10, 0).await.unwrap();
    let mut newest_first = codes.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    assert!(l.codes("other", 10, 0).await.unwrap().is_empty());

    // Typed in lower case, with spaces instead of dashes: the same code.
    let code = &codes[0];
    let typed = code.code.to_lowercase().replace('-', " ");
    let alice = acct(APP, "alice");
    t.clock.advance(Duration::seconds(1));
    let (redeemed, txn) = l.redeem(alice.clone(), &typed).await.unwrap();
    assert_eq!(redeemed.uses, 1);
    assert_eq!(redeemed.id, code.id);
    assert_eq!(txn.txn_type, TxnType::Redemption);
    assert_eq!((txn.amount, txn.balance_after), (50, 50));
    assert_eq!(txn.description, "Launch promo");
    assert_eq!(txn.metadata, Some(json!({"code": code.code})));
    assert_eq!(
        l.balance(alice.clone()).await.unwrap().expiring,
        vec![ExpiringCredits {
            amount: 50,
            expires_at: l.now() + Duration::days(30)
        }]
    );
    assert_eq!(history(l, &alice).await, vec![txn]);

    // Once per user, however it is typed; refusals of this kind are not wrong guesses.
    let compact = code.code.replace('-', "");
    for attempt in 0..12 {
        let typed = if attempt % 2 == 0 {
            &code.code
        } else {
            &compact
        };
        assert_err!(
            l.redeem(alice.clone(), typed).await,
            LedgerError::CodeAlreadyRedeemed
        );
    }
    assert_eq!(figures(l, &alice).await, (50, 50, 0));

    // A second user takes the last use; a third finds none left.
    let (r, _) = l.redeem(acct(APP, "bob"), &code.code).await.unwrap();
    assert_eq!(r.uses, 2);
    assert_err!(
        l.redeem(acct(APP, "carol"), &code.code).await,
        LedgerError::CodeExhausted
    );
    assert_eq!(figures(l, &acct(APP, "carol")).await, (0, 0, 0));
    assert_eq!(l.codes(APP, 10, 0).await.unwrap()[2].uses, 2);

    // Alice, not rate-limited by her refusals, redeems another code of the batch.
    let (_, txn) = l.redeem(alice.clone(), &codes[1].code).await.unwrap();
    assert_eq!(txn.balance_after, 100);

    // Without a description the history names the code.
    let plain = one_code(
        l,
        CodeBatchRequest {
            description: String::new(),
            ..batch(APP, 1, 5, 1)
        },
    )
    .await;
    let (_, txn) = l.redeem(alice.clone(), &plain.code).await.unwrap();
    assert_eq!(txn.description, format!("Redeemed code {}", plain.code));
    assert_eq!(txn.balance_after, 105);
}

async fn expired_exhausted_and_unknown_codes(t: Ctx) {
    let l = &t.ledger;
    let alice = acct(APP, "alice");
    let bob = acct(APP, "bob");
    let until = START + Duration::hours(1);
    let expiring = one_code(
        l,
        CodeBatchRequest {
            expires_at: Some(until),
            ..batch(APP, 1, 20, 10)
        },
    )
    .await;
    assert_eq!(expiring.expires_at, Some(until));
    t.clock.set(until - Duration::microseconds(1));
    l.redeem(alice.clone(), &expiring.code).await.unwrap();
    t.clock.set(until);
    assert_err!(
        l.redeem(bob.clone(), &expiring.code).await,
        LedgerError::CodeExpired
    );
    assert_err!(
        l.redeem(alice.clone(), &expiring.code).await,
        LedgerError::CodeExpired
    );

    let single = one_code(l, batch(APP, 1, 7, 1)).await;
    l.redeem(alice.clone(), &single.code).await.unwrap();
    assert_err!(
        l.redeem(bob.clone(), &single.code).await,
        LedgerError::CodeExhausted
    );

    // Unknown, malformed and other apps' codes are all "not found".
    let theirs = one_code(l, batch("other", 1, 1_000, 100)).await;
    for code in [UNKNOWN_CODE, "", "nope", "ABCD-EFGH-JKMU", &theirs.code] {
        assert_err!(l.redeem(bob.clone(), code).await, LedgerError::CodeNotFound);
    }
    assert_eq!(figures(l, &alice).await, (27, 27, 0));
    assert_eq!(figures(l, &bob).await, (0, 0, 0));
    assert!(history(l, &bob).await.is_empty());
    assert_eq!(l.codes("other", 10, 0).await.unwrap()[0].uses, 0);

    // Batches are validated.
    let now = l.now();
    for bad in [
        batch(APP, 0, 10, 1),
        batch(APP, 1_001, 10, 1),
        batch(APP, 1, 0, 1),
        batch(APP, 1, 10, 0),
        CodeBatchRequest {
            expires_at: Some(now),
            ..batch(APP, 1, 10, 1)
        },
        CodeBatchRequest {
            credits_expire_days: Some(0),
            ..batch(APP, 1, 10, 1)
        },
    ] {
        assert_err!(l.create_codes(bad).await, LedgerError::Validation(_));
    }
}

async fn concurrent_redemptions_of_a_single_use_code_grant_once(t: Ctx) {
    let l = &t.ledger;
    let code = one_code(l, batch(APP, 1, 50, 1)).await;
    let mut tasks = JoinSet::new();
    for i in 0..20 {
        let (l, code) = (l.clone(), code.code.clone());
        tasks.spawn(async move {
            let user = acct(APP, &format!("user-{i}"));
            (user.clone(), l.redeem(user, &code).await)
        });
    }
    let (mut winners, mut exhausted) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            (user, Ok((c, txn))) => {
                assert_eq!((c.uses, txn.amount, txn.balance_after), (1, 50, 50));
                winners.push(user);
            }
            (_, Err(LedgerError::CodeExhausted)) => exhausted += 1,
            (_, Err(e)) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one grant");
    assert_eq!(exhausted, 19);
    assert_eq!(l.codes(APP, 10, 0).await.unwrap()[0].uses, 1);
    let mut total = 0;
    for i in 0..20 {
        let user = acct(APP, &format!("user-{i}"));
        let h = history(l, &user).await;
        total += h.iter().map(|r| r.amount).sum::<i64>();
        if user == winners[0] {
            assert_eq!(h.len(), 1);
        } else {
            assert!(h.is_empty(), "{h:?}");
        }
    }
    assert_eq!(total, 50);
}

async fn one_user_redeems_a_multi_use_code_once(t: Ctx) {
    let l = &t.ledger;
    let alice = acct(APP, "alice");
    let code = one_code(l, batch(APP, 1, 25, 100)).await;
    let mut tasks = JoinSet::new();
    for i in 0..8 {
        let (l, alice) = (l.clone(), alice.clone());
        // Different spellings of the one code.
        let typed = match i % 3 {
            0 => code.code.clone(),
            1 => code.code.to_lowercase(),
            _ => code.code.replace('-', ""),
        };
        tasks.spawn(async move { l.redeem(alice, &typed).await });
    }
    let (mut ok, mut again) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            Ok((c, txn)) => {
                assert_eq!((c.uses, txn.amount, txn.balance_after), (1, 25, 25));
                ok += 1;
            }
            Err(LedgerError::CodeAlreadyRedeemed) => again += 1,
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!((ok, again), (1, 7));
    // And sequentially, later.
    t.clock.advance(Duration::days(1));
    assert_err!(
        l.redeem(alice.clone(), &code.code).await,
        LedgerError::CodeAlreadyRedeemed
    );
    assert_eq!(figures(l, &alice).await, (25, 25, 0));
    assert_eq!(history(l, &alice).await.len(), 1);
    assert_eq!(l.codes(APP, 10, 0).await.unwrap()[0].uses, 1);
    // The code still serves other users.
    let (c, _) = l.redeem(acct(APP, "bob"), &code.code).await.unwrap();
    assert_eq!(c.uses, 2);
}

async fn wrong_guesses_are_rate_limited(t: Ctx) {
    let l = &t.ledger;
    let mallory = acct(APP, "mallory");
    let code = one_code(l, batch(APP, 1, 30, 10)).await;

    // Ten wrong guesses, 30 s apart, starting half a second past START.
    let first = START + Duration::milliseconds(500);
    for i in 0..10 {
        t.clock.set(first + Duration::seconds(30 * i));
        let guess = if i % 2 == 0 { UNKNOWN_CODE } else { "nope" };
        assert_err!(
            l.redeem(mallory.clone(), guess).await,
            LedgerError::CodeNotFound
        );
    }

    // The next attempt is refused, even with a valid code, until the first guess is 15 min old:
    // it reopens at first + 900 s, 629.5 s from now, so the client is told 630.
    t.clock.set(START + Duration::seconds(271));
    assert_err!(
        l.redeem(mallory.clone(), &code.code).await,
        LedgerError::RateLimited {
            retry_after_seconds: 630
        }
    );
    assert_err!(
        l.redeem(mallory.clone(), UNKNOWN_CODE).await,
        LedgerError::RateLimited {
            retry_after_seconds: 630
        }
    );
    assert_eq!(figures(l, &mallory).await, (0, 0, 0));

    // Other users, and mallory in another app, are not limited.
    l.redeem(acct(APP, "alice"), &code.code).await.unwrap();
    assert_err!(
        l.redeem(acct("other", "mallory"), &code.code).await,
        LedgerError::CodeNotFound
    );

    // One second before the announced instant: still closed (refusals are not counted).
    t.clock.advance(Duration::seconds(629));
    assert_err!(
        l.redeem(mallory.clone(), &code.code).await,
        LedgerError::RateLimited {
            retry_after_seconds: 1
        }
    );
    // At the announced instant: open again, and the code redeems.
    t.clock.advance(Duration::seconds(1));
    let (_, txn) = l.redeem(mallory.clone(), &code.code).await.unwrap();
    assert_eq!(txn.balance_after, 30);

    // Nine guesses are left in the window: one more wrong guess closes it again, until the
    // second-oldest guess (first + 30 s) is 15 min old.
    assert_err!(
        l.redeem(mallory.clone(), UNKNOWN_CODE).await,
        LedgerError::CodeNotFound
    );
    assert_err!(
        l.redeem(mallory.clone(), UNKNOWN_CODE).await,
        LedgerError::RateLimited {
            retry_after_seconds: 30
        }
    );

    // Long after, everything has aged out.
    t.clock.advance(Duration::minutes(16));
    for _ in 0..9 {
        assert_err!(
            l.redeem(mallory.clone(), UNKNOWN_CODE).await,
            LedgerError::CodeNotFound
        );
    }
    assert_err!(
        l.redeem(mallory.clone(), &code.code).await,
        LedgerError::CodeAlreadyRedeemed
    );
}

async fn retry_after_is_exact_at_the_window_edge(t: Ctx) {
    let l = &t.ledger;
    let eve = acct(APP, "eve");
    let code = one_code(l, batch(APP, 1, 10, 1)).await;
    for _ in 0..10 {
        assert_err!(
            l.redeem(eve.clone(), UNKNOWN_CODE).await,
            LedgerError::CodeNotFound
        );
    }
    assert_err!(
        l.redeem(eve.clone(), &code.code).await,
        LedgerError::RateLimited {
            retry_after_seconds: 900
        }
    );
    t.clock.advance(Duration::seconds(899));
    assert_err!(
        l.redeem(eve.clone(), &code.code).await,
        LedgerError::RateLimited {
            retry_after_seconds: 1
        }
    );
    // Exactly 900 s after the guesses, as announced: they no longer count.
    t.clock.advance(Duration::seconds(1));
    let (_, txn) = l.redeem(eve.clone(), &code.code).await.unwrap();
    assert_eq!(txn.balance_after, 10);
}
