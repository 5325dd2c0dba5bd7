//! Orders, customers, provider coupons and credit packs.

use super::*;

tally_testkit::backend_tests!(run = run; orders_round_trip_and_idempotent_insert, customers_and_provider_coupons, pack_checkout_grants_once, unpaid_expired_failed_then_paid, coupon_redeemed_once);

async fn orders_round_trip_and_idempotent_insert(ctx: Ctx) {
    let now = ctx.clock.now();
    let mut first = order("ord_a", OrderType::Subscription, 1000, now);
    first.coupon_code = Some("SAVE".into());
    first.discount_minor = 200;
    first.credits_expire_days = Some(30);
    let (stored_first, hash) = ctx
        .store
        .insert_order(NewOrder {
            order: first.clone(),
            idempotency_key: Some("key-1".into()),
            request_hash: "hash-1".into(),
        })
        .await
        .unwrap();
    assert_eq!(stored_first, first, "round trip");
    assert_eq!(hash, "hash-1");

    // Same key, another order: the stored one and its hash come back; nothing new is stored.
    ctx.clock.advance(Duration::seconds(1));
    let (replayed, hash) = ctx
        .store
        .insert_order(NewOrder {
            order: order("ord_b", OrderType::Credits, 5, ctx.clock.now()),
            idempotency_key: Some("key-1".into()),
            request_hash: "hash-2".into(),
        })
        .await
        .unwrap();
    assert_eq!(replayed, first);
    assert_eq!(hash, "hash-1");
    assert_eq!(ctx.store.order("ord_b".into()).await.unwrap(), None);

    // Without a key every insert is new.
    for id in ["ord_c", "ord_d"] {
        ctx.clock.advance(Duration::seconds(1));
        let (o, _) = ctx
            .store
            .insert_order(NewOrder {
                order: order(id, OrderType::Credits, 5, ctx.clock.now()),
                idempotency_key: None,
                request_hash: "h".into(),
            })
            .await
            .unwrap();
        assert_eq!(o.id, id);
    }

    let attached = ctx
        .store
        .attach_session(SessionAttached {
            order_id: "ord_c".into(),
            session_id: "cs_1".into(),
            url: "https://pay.example/1".into(),
            now: ctx.clock.now(),
        })
        .await
        .unwrap();
    assert_eq!(attached.provider_session_id.as_deref(), Some("cs_1"));
    assert_eq!(
        attached.checkout_url.as_deref(),
        Some("https://pay.example/1")
    );
    assert_eq!(stored(&ctx, "ord_c").await, attached);

    let failed = ctx
        .store
        .fail_order("ord_d".into(), "provider down".into(), ctx.clock.now())
        .await
        .unwrap();
    assert_eq!(failed.status, OrderStatus::Failed);
    assert_eq!(failed.failure_reason.as_deref(), Some("provider down"));
    // Only a pending order fails.
    let again = ctx
        .store
        .fail_order("ord_d".into(), "other".into(), ctx.clock.now())
        .await
        .unwrap();
    assert_eq!(again.failure_reason.as_deref(), Some("provider down"));

    assert!(matches!(
        ctx.store
            .fail_order("ord_x".into(), "r".into(), ctx.clock.now())
            .await,
        Err(CheckoutError::OrderNotFound)
    ));
    assert!(matches!(
        ctx.store
            .attach_session(SessionAttached {
                order_id: "ord_x".into(),
                session_id: "s".into(),
                url: "u".into(),
                now: ctx.clock.now(),
            })
            .await,
        Err(CheckoutError::OrderNotFound)
    ));

    let page = |limit, offset| OrderQuery {
        app: APP.into(),
        user: USER.into(),
        limit,
        offset,
    };
    let ids = |orders: Vec<Order>| orders.into_iter().map(|o| o.id).collect::<Vec<_>>();
    assert_eq!(
        ids(ctx.store.orders(page(10, 0)).await.unwrap()),
        ["ord_d", "ord_c", "ord_a"],
        "newest first"
    );
    assert_eq!(ids(ctx.store.orders(page(1, 1)).await.unwrap()), ["ord_c"]);
    let other = OrderQuery {
        user: "bob".into(),
        ..page(10, 0)
    };
    assert!(ctx.store.orders(other).await.unwrap().is_empty());
}

async fn customers_and_provider_coupons(ctx: Ctx) {
    let customer = |channel| ctx.store.customer(APP.into(), USER.into(), channel);
    assert_eq!(customer(Channel::Stripe).await.unwrap(), None);

    let coupon = |price: &str| {
        ctx.store
            .provider_coupon(APP.into(), "SAVE".into(), Channel::Stripe, price.into())
    };
    assert_eq!(coupon("price_1").await.unwrap(), None);
    let put = |id: &str| {
        ctx.store.put_provider_coupon(
            APP.into(),
            "SAVE".into(),
            Channel::Stripe,
            "price_1".into(),
            id.into(),
            START,
        )
    };
    assert_eq!(put("co_first").await.unwrap(), "co_first");
    assert_eq!(
        put("co_second").await.unwrap(),
        "co_first",
        "first writer wins"
    );
    assert_eq!(
        coupon("price_1").await.unwrap().as_deref(),
        Some("co_first")
    );
    assert_eq!(coupon("price_2").await.unwrap(), None);

    // A checkout event tells the customer id; a later one replaces it.
    place(
        &ctx,
        order("ord_a", OrderType::Credits, 10, ctx.clock.now()),
    )
    .await;
    let mut unpaid = completed("ord_a", None, &[]);
    if let EventKind::CheckoutCompleted { paid, .. } = &mut unpaid {
        *paid = false;
    }
    apply(&ctx, event("evt_1", unpaid)).await;
    assert_eq!(
        customer(Channel::Stripe).await.unwrap().as_deref(),
        Some("cus_1")
    );
    assert_eq!(customer(Channel::Creem).await.unwrap(), None);
    let mut other = completed("ord_a", None, &[]);
    if let EventKind::CheckoutCompleted { customer_id, .. } = &mut other {
        *customer_id = Some("cus_2".into());
    }
    apply(&ctx, event("evt_2", other)).await;
    assert_eq!(
        customer(Channel::Stripe).await.unwrap().as_deref(),
        Some("cus_2")
    );
    assert_eq!(
        stored(&ctx, "ord_a").await.provider_customer_id.as_deref(),
        Some("cus_2")
    );
}

async fn pack_checkout_grants_once(ctx: Ctx) {
    let plan = CatalogRepository::insert_plan(
        &ctx.store,
        NewPlan {
            app: APP.into(),
            spec: pack_spec("Starter"),
            actor: "admin".into(),
            now: ctx.clock.now(),
        },
    )
    .await
    .unwrap();
    let mut o = order("ord_p", OrderType::Credits, 500, ctx.clock.now());
    o.plan_id = plan.id.clone();
    o.credits_expire_days = Some(30);
    place(&ctx, o).await;

    let first = event("evt_1", completed("ord_p", None, &["pi_1"]));
    let outcome = apply(&ctx, first.clone()).await;
    assert!(is_applied(&outcome), "{outcome:?}");
    let order = stored(&ctx, "ord_p").await;
    assert_eq!(order.status, OrderStatus::Completed);
    assert_eq!(order.completed_at, Some(ctx.clock.now()));
    assert_eq!(order.provider_customer_id.as_deref(), Some("cus_1"));
    assert_eq!(balance(&ctx).await, 500);

    let grants = of_type(&ctx, TxnType::Purchase).await;
    assert_eq!(grants.len(), 1);
    let grant = &grants[0];
    assert_eq!(grant.amount, 500);
    assert_eq!(grant.description, "Credit pack: Starter");
    assert_eq!(
        grant.idempotency_key.as_deref(),
        Some("payment:stripe:order:ord_p")
    );
    assert_eq!(grant.actor.as_deref(), Some("provider:stripe"));
    assert_eq!(
        grant.metadata,
        Some(serde_json::json!({
            "order_id": "ord_p", "payment_id": "order:ord_p", "channel": "stripe"
        }))
    );
    let view = ctx.ledger.balance(alice()).await.unwrap();
    assert_eq!(view.expiring.len(), 1);
    assert_eq!(view.expiring[0].amount, 500);
    assert_eq!(
        view.expiring[0].expires_at,
        ctx.clock.now() + Duration::days(30)
    );

    // The same delivery again: a duplicate, nothing recorded or moved.
    assert_eq!(apply(&ctx, first).await, EventOutcome::Duplicate);
    // Another event about the same payment (the async-payment success): no second grant.
    let succeeded = EventKind::CheckoutPaymentSucceeded {
        order_id: Some("ord_p".into()),
        session_id: "cs_ord_p".into(),
        amount_paid_minor: Some(1000),
        payment_refs: vec!["pi_1".into()],
    };
    assert_eq!(
        apply(&ctx, event("evt_2", succeeded)).await,
        ignored("payment already granted")
    );
    assert_eq!(balance(&ctx).await, 500);
    assert_eq!(of_type(&ctx, TxnType::Purchase).await.len(), 1);

    let events = recorded(&ctx).await;
    let summary: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.event_id.as_str(),
                e.outcome.as_str(),
                e.order_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("evt_2", "ignored", Some("ord_p")),
            ("evt_1", "applied", Some("ord_p"))
        ]
    );
    assert_eq!(events[1].app.as_deref(), Some(APP));
    assert_eq!(events[1].user.as_deref(), Some(USER));
    assert_eq!(events[1].received_at, START);
    assert_clean(&ctx).await;
}

async fn unpaid_expired_failed_then_paid(ctx: Ctx) {
    place(
        &ctx,
        order("ord_u", OrderType::Credits, 40, ctx.clock.now()),
    )
    .await;
    let mut unpaid = completed("ord_u", None, &[]);
    if let EventKind::CheckoutCompleted { paid, .. } = &mut unpaid {
        *paid = false;
    }
    assert_eq!(
        apply(&ctx, event("evt_1", unpaid)).await,
        EventOutcome::Applied {
            detail: "awaiting payment".into()
        }
    );
    assert_eq!(stored(&ctx, "ord_u").await.status, OrderStatus::Pending);
    assert_eq!(balance(&ctx).await, 0);

    // Found by session id alone.
    let expired = EventKind::CheckoutExpired {
        order_id: None,
        session_id: "cs_ord_u".into(),
    };
    assert!(is_applied(&apply(&ctx, event("evt_2", expired)).await));
    assert_eq!(stored(&ctx, "ord_u").await.status, OrderStatus::Expired);
    let failed = EventKind::CheckoutFailed {
        order_id: Some("ord_u".into()),
        session_id: "cs_ord_u".into(),
    };
    assert_eq!(
        apply(&ctx, event("evt_3", failed)).await,
        ignored("order is expired")
    );

    // Money arrived after all: the order completes and the pack is granted.
    let succeeded = EventKind::CheckoutPaymentSucceeded {
        order_id: None,
        session_id: "cs_ord_u".into(),
        amount_paid_minor: None,
        payment_refs: vec![],
    };
    assert!(is_applied(&apply(&ctx, event("evt_4", succeeded)).await));
    assert_eq!(stored(&ctx, "ord_u").await.status, OrderStatus::Completed);
    assert_eq!(balance(&ctx).await, 40);

    // A failure of a second, pending order.
    place(
        &ctx,
        order("ord_f", OrderType::Credits, 40, ctx.clock.now()),
    )
    .await;
    let failed = EventKind::CheckoutFailed {
        order_id: Some("ord_f".into()),
        session_id: "cs_ord_f".into(),
    };
    assert!(is_applied(&apply(&ctx, event("evt_5", failed)).await));
    let order = stored(&ctx, "ord_f").await;
    assert_eq!(order.status, OrderStatus::Failed);
    assert_eq!(order.failure_reason.as_deref(), Some("payment failed"));
    assert_clean(&ctx).await;
}

async fn coupon_redeemed_once(ctx: Ctx) {
    for code in ["SAVE", "SUB"] {
        CatalogRepository::insert_coupon(
            &ctx.store,
            NewCoupon {
                app: APP.into(),
                spec: coupon_spec(code),
                actor: "admin".into(),
                now: ctx.clock.now(),
            },
        )
        .await
        .unwrap();
    }
    let store = &ctx.store;
    let redeemed = |code: &'static str| async move {
        CatalogRepository::coupon_by_code(store, APP.into(), code.into())
            .await
            .unwrap()
            .unwrap()
            .times_redeemed
    };

    let mut pack = order("ord_p", OrderType::Credits, 10, ctx.clock.now());
    pack.coupon_code = Some("SAVE".into());
    place(&ctx, pack).await;
    apply(&ctx, event("e1", completed("ord_p", None, &[]))).await;
    let succeeded = EventKind::CheckoutPaymentSucceeded {
        order_id: Some("ord_p".into()),
        session_id: "cs_ord_p".into(),
        amount_paid_minor: None,
        payment_refs: vec![],
    };
    apply(&ctx, event("e2", succeeded)).await;
    assert_eq!(redeemed("SAVE").await, 1);

    let mut sub = order("ord_s", OrderType::Subscription, 10, ctx.clock.now());
    sub.coupon_code = Some("SUB".into());
    place(&ctx, sub).await;
    let period = (START, START + Duration::days(30));
    apply(
        &ctx,
        event("e3", period_paid("in_1", "sub_1", Some("ord_s"), period)),
    )
    .await;
    apply(&ctx, event("e4", completed("ord_s", Some("sub_1"), &[]))).await;
    let renewal = (period.1, period.1 + Duration::days(30));
    apply(
        &ctx,
        event("e5", period_paid("in_2", "sub_1", None, renewal)),
    )
    .await;
    assert_eq!(redeemed("SUB").await, 1);
    assert_eq!(redeemed("SAVE").await, 1);
}
