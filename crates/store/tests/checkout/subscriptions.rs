//! Subscriptions: first payment, renewals, changes in any order, cancellation.

use super::*;

tally_testkit::backend_tests!(run = run; period_paid_before_checkout_completed, renewal_grants_again_and_moves_the_period, older_subscription_change_is_ignored, canceled_stays_canceled, current_subscription_prefers_live_ones);

async fn period_paid_before_checkout_completed(ctx: Ctx) {
    let now = ctx.clock.now();
    let mut o = order("ord_s", OrderType::Subscription, 1000, now);
    o.credits_expire_days = Some(30);
    place(&ctx, o).await;
    let period = (now - Duration::hours(1), now + Duration::days(30));

    // The invoice arrives before the checkout: the subscription is created from the order.
    let outcome = apply(
        &ctx,
        event(
            "evt_inv",
            period_paid("in_1", "sub_1", Some("ord_s"), period),
        ),
    )
    .await;
    assert!(is_applied(&outcome), "{outcome:?}");
    let sub = current_sub(&ctx).await;
    assert_eq!(sub.provider_subscription_id, "sub_1");
    assert_eq!(sub.order_id, "ord_s");
    assert_eq!(sub.status, SubscriptionStatus::Active);
    assert_eq!(sub.interval, Interval::Month);
    assert_eq!(sub.credits_per_period, 1000);
    assert!(sub.credits_expire);
    assert_eq!(sub.provider_customer_id.as_deref(), Some("cus_1"));
    assert_eq!(sub.current_period_start, Some(period.0));
    assert_eq!(sub.current_period_end, Some(period.1));
    let order = stored(&ctx, "ord_s").await;
    assert_eq!(order.status, OrderStatus::Completed);
    assert_eq!(order.provider_subscription_id.as_deref(), Some("sub_1"));

    let outcome = apply(
        &ctx,
        event("evt_cs", completed("ord_s", Some("sub_1"), &[])),
    )
    .await;
    assert!(is_applied(&outcome), "{outcome:?}");
    assert_eq!(current_sub(&ctx).await.id, sub.id, "no second subscription");

    assert_eq!(balance(&ctx).await, 1000);
    let grants = of_type(&ctx, TxnType::Subscription).await;
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].description, "7 plan — monthly credits");
    assert_eq!(
        grants[0].idempotency_key.as_deref(),
        Some("payment:stripe:in_1")
    );
    let view = ctx.ledger.balance(alice()).await.unwrap();
    assert_eq!(
        view.expiring[0].expires_at, period.1,
        "expires at the period end"
    );
    assert_clean(&ctx).await;
}

async fn renewal_grants_again_and_moves_the_period(ctx: Ctx) {
    let now = ctx.clock.now();
    place(&ctx, order("ord_s", OrderType::Subscription, 1000, now)).await;
    apply(
        &ctx,
        event("evt_cs", completed("ord_s", Some("sub_1"), &[])),
    )
    .await;
    let first = (now, now + Duration::days(30));
    let second = (first.1, first.1 + Duration::days(30));
    assert!(is_applied(
        &apply(
            &ctx,
            event("evt_1", period_paid("in_1", "sub_1", None, first))
        )
        .await
    ));
    assert!(is_applied(
        &apply(
            &ctx,
            event("evt_2", period_paid("in_2", "sub_1", None, second))
        )
        .await
    ));
    assert_eq!(balance(&ctx).await, 2000);
    assert_eq!(of_type(&ctx, TxnType::Subscription).await.len(), 2);
    let sub = current_sub(&ctx).await;
    assert_eq!(sub.current_period_start, Some(second.0));
    assert_eq!(sub.current_period_end, Some(second.1));
    assert!(
        view_never_expires(&ctx).await,
        "the plan's credits do not expire"
    );

    // A late second delivery of the first invoice under another event id: no grant, and the
    // period does not move back.
    assert_eq!(
        apply(
            &ctx,
            event("evt_3", period_paid("in_1", "sub_1", None, first))
        )
        .await,
        ignored("payment already granted")
    );
    assert_eq!(balance(&ctx).await, 2000);
    assert_eq!(current_sub(&ctx).await.current_period_end, Some(second.1));

    // Each delivery's row holds its outcome and the subscription it was traced to.
    let events = recorded(&ctx).await;
    let rows: Vec<_> = events
        .iter()
        .map(|e| {
            let trace = (e.app.as_deref(), e.user.as_deref(), e.order_id.as_deref());
            (
                e.event_id.as_str(),
                e.outcome.as_str(),
                e.detail.as_str(),
                trace,
            )
        })
        .collect();
    let traced = (Some(APP), Some(USER), Some("ord_s"));
    assert_eq!(
        rows[..3],
        [
            ("evt_3", "ignored", "payment already granted", traced),
            (
                "evt_2",
                "applied",
                "period paid; granted 1000 credits",
                traced
            ),
            (
                "evt_1",
                "applied",
                "period paid; granted 1000 credits",
                traced
            ),
        ]
    );
    assert_clean(&ctx).await;
}

async fn older_subscription_change_is_ignored(ctx: Ctx) {
    started_subscription(&ctx).await;
    let t = START + Duration::minutes(5);
    let newer = at(event("evt_new", changed("sub_1", None, Some(true))), t);
    assert!(is_applied(&apply(&ctx, newer).await));
    assert!(current_sub(&ctx).await.cancel_at_period_end);

    // Delivered late, created earlier: ignored.
    let older = at(
        event(
            "evt_old",
            changed("sub_1", Some(SubscriptionStatus::PastDue), Some(false)),
        ),
        t - Duration::minutes(1),
    );
    assert_eq!(
        apply(&ctx, older).await,
        ignored("older than the last applied change")
    );
    let sub = current_sub(&ctx).await;
    assert_eq!(sub.status, SubscriptionStatus::Active);
    assert!(sub.cancel_at_period_end);

    // The same instant is not older: applied.
    let same = at(
        event(
            "evt_same",
            changed("sub_1", Some(SubscriptionStatus::PastDue), None),
        ),
        t,
    );
    assert!(is_applied(&apply(&ctx, same).await));
    assert_eq!(current_sub(&ctx).await.status, SubscriptionStatus::PastDue);
}

async fn canceled_stays_canceled(ctx: Ctx) {
    started_subscription(&ctx).await;
    let t = START + Duration::minutes(5);
    let ending = at(event("evt_1", changed("sub_1", None, Some(true))), t);
    assert!(is_applied(&apply(&ctx, ending).await));
    let canceled = at(
        event(
            "evt_2",
            changed("sub_1", Some(SubscriptionStatus::Canceled), None),
        ),
        t + Duration::minutes(1),
    );
    assert!(is_applied(&apply(&ctx, canceled).await));
    assert_eq!(current_sub(&ctx).await.status, SubscriptionStatus::Canceled);

    // A later 'active' change, and a later payment, leave it canceled.
    let active = at(
        event(
            "evt_3",
            changed("sub_1", Some(SubscriptionStatus::Active), None),
        ),
        t + Duration::minutes(2),
    );
    assert!(is_applied(&apply(&ctx, active).await));
    let renewal = (START + Duration::days(30), START + Duration::days(60));
    apply(
        &ctx,
        event("evt_4", period_paid("in_2", "sub_1", None, renewal)),
    )
    .await;
    let sub = current_sub(&ctx).await;
    assert_eq!(sub.status, SubscriptionStatus::Canceled);
    assert!(sub.cancel_at_period_end);
}

async fn current_subscription_prefers_live_ones(ctx: Ctx) {
    assert!(
        ctx.store
            .subscription(APP.into(), USER.into())
            .await
            .unwrap()
            .is_none()
    );
    started_subscription(&ctx).await;
    let now = ctx.clock.now();
    place(&ctx, order("ord_t", OrderType::Subscription, 100, now)).await;
    let period = (now, now + Duration::days(30));
    apply(
        &ctx,
        event("evt_1", period_paid("in_2", "sub_2", Some("ord_t"), period)),
    )
    .await;
    assert_eq!(
        current_sub(&ctx).await.provider_subscription_id,
        "sub_2",
        "newest"
    );

    let cancel = changed("sub_2", Some(SubscriptionStatus::Canceled), None);
    apply(&ctx, event("evt_2", cancel)).await;
    assert_eq!(
        current_sub(&ctx).await.provider_subscription_id,
        "sub_1",
        "the newest live one before a newer canceled one"
    );
    apply(
        &ctx,
        event(
            "evt_3",
            changed("sub_1", Some(SubscriptionStatus::Expired), None),
        ),
    )
    .await;
    assert_eq!(
        current_sub(&ctx).await.provider_subscription_id,
        "sub_2",
        "none live: the newest"
    );
}
