//! Refunds: full, cumulative and per-refund partial amounts, renewals, debt.

use super::*;

tally_testkit::backend_tests!(run = run; full_refund_claws_back_everything, cumulative_partial_refunds, per_refund_partial_refunds, refund_of_a_renewal_leaves_the_order, refund_after_spending_goes_negative);

async fn full_refund_claws_back_everything(ctx: Ctx) {
    let pi = paid_pack(&ctx, "ord_p", 1001).await;
    let outcome = apply(
        &ctx,
        event("evt_r", refund("re_1", &[&pi], Some(1000), None)),
    )
    .await;
    assert!(is_applied(&outcome), "{outcome:?}");
    assert_eq!(balance(&ctx).await, 0);
    let refunds = of_type(&ctx, TxnType::Refund).await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].amount, -1001, "every credit, to the cent");
    assert_eq!(
        refunds[0].idempotency_key.as_deref(),
        Some("refund:stripe:re_1")
    );
    assert_eq!(stored(&ctx, "ord_p").await.status, OrderStatus::Refunded);

    // The session id names the payment too; the refund key acts once.
    assert_eq!(
        apply(
            &ctx,
            event("evt_r2", refund("re_1", &["cs_ord_p"], Some(1000), None))
        )
        .await,
        ignored("refund already applied")
    );
    assert_eq!(balance(&ctx).await, 0);
    assert_clean(&ctx).await;
}

async fn cumulative_partial_refunds(ctx: Ctx) {
    let pi = paid_pack(&ctx, "ord_p", 1000).await;
    // Stripe reports the total refunded so far.
    apply(
        &ctx,
        event("evt_1", refund("re_1", &[&pi], Some(250), None)),
    )
    .await;
    assert_eq!(balance(&ctx).await, 750);
    assert_eq!(
        apply(
            &ctx,
            event("evt_1b", refund("re_1", &[&pi], Some(250), None))
        )
        .await,
        ignored("refund already applied")
    );
    assert_eq!(balance(&ctx).await, 750);
    apply(
        &ctx,
        event("evt_2", refund("re_2", &[&pi], Some(600), None)),
    )
    .await;
    assert_eq!(balance(&ctx).await, 400);
    apply(
        &ctx,
        event("evt_3", refund("re_3", &[&pi], Some(1000), None)),
    )
    .await;
    assert_eq!(balance(&ctx).await, 0);
    let amounts: Vec<i64> = of_type(&ctx, TxnType::Refund)
        .await
        .iter()
        .map(|t| t.amount)
        .collect();
    assert_eq!(amounts, [-400, -350, -250]);
    assert_clean(&ctx).await;
}

async fn per_refund_partial_refunds(ctx: Ctx) {
    // 10 credits for 3 minor units, refunded one unit at a time (Creem reports each refund's
    // amount): 3 + 3 + 4, never more than granted.
    let mut o = order("ord_c", OrderType::Credits, 10, ctx.clock.now());
    o.channel = Channel::Creem;
    place(&ctx, o).await;
    let paid = EventKind::CheckoutCompleted {
        order_id: Some("ord_c".into()),
        session_id: "ch_1".into(),
        customer_id: None,
        subscription_id: None,
        paid: true,
        amount_paid_minor: Some(3),
        payment_refs: vec!["order_1".into(), "tran_1".into()],
    };
    let creem = |id: &str, kind| PaymentEvent {
        channel: Channel::Creem,
        ..event(id, kind)
    };
    assert!(is_applied(&apply(&ctx, creem("e0", paid)).await));
    assert_eq!(balance(&ctx).await, 10);
    apply(
        &ctx,
        creem("e1", refund("rf_1", &["tran_1"], None, Some(1))),
    )
    .await;
    assert_eq!(balance(&ctx).await, 7);
    assert_eq!(
        apply(
            &ctx,
            creem("e1b", refund("rf_1", &["order_1"], None, Some(1)))
        )
        .await,
        ignored("refund already applied")
    );
    apply(
        &ctx,
        creem("e2", refund("rf_2", &["order_1"], None, Some(1))),
    )
    .await;
    assert_eq!(balance(&ctx).await, 4);
    apply(
        &ctx,
        creem("e3", refund("rf_3", &["tran_1"], None, Some(1))),
    )
    .await;
    assert_eq!(balance(&ctx).await, 0);
    // Beyond the payment: nothing left to take.
    apply(
        &ctx,
        creem("e4", refund("rf_4", &["tran_1"], None, Some(1))),
    )
    .await;
    assert_eq!(balance(&ctx).await, 0);
    // A Stripe event cannot name a Creem payment.
    let outcome = apply(
        &ctx,
        event("e5", refund("rf_5", &["tran_1"], None, Some(1))),
    )
    .await;
    assert!(
        matches!(outcome, EventOutcome::Unmatched { .. }),
        "{outcome:?}"
    );
    assert_clean(&ctx).await;
}

async fn refund_of_a_renewal_leaves_the_order(ctx: Ctx) {
    started_subscription(&ctx).await;
    let renewal = (START + Duration::days(30), START + Duration::days(60));
    apply(
        &ctx,
        event("evt_2", period_paid("in_2", "sub_1", None, renewal)),
    )
    .await;
    assert_eq!(balance(&ctx).await, 200);
    let outcome = apply(
        &ctx,
        event("evt_r", refund("re_1", &["pi_in_2"], Some(1000), None)),
    )
    .await;
    assert!(is_applied(&outcome), "{outcome:?}");
    assert_eq!(balance(&ctx).await, 100);
    assert_eq!(stored(&ctx, "ord_s").await.status, OrderStatus::Completed);
    // The first payment is the order's.
    apply(
        &ctx,
        event("evt_r2", refund("re_2", &["in_1"], Some(1000), None)),
    )
    .await;
    assert_eq!(balance(&ctx).await, 0);
    assert_eq!(stored(&ctx, "ord_s").await.status, OrderStatus::Refunded);
    assert_clean(&ctx).await;
}

async fn refund_after_spending_goes_negative(ctx: Ctx) {
    let pi = paid_pack(&ctx, "ord_p", 500).await;
    ctx.ledger
        .spend(alice(), 400, "Chat".into(), None, None)
        .await
        .unwrap();
    assert_eq!(balance(&ctx).await, 100);
    apply(&ctx, event("evt_r", refund("re_1", &[&pi], None, None))).await;
    assert_eq!(balance(&ctx).await, -400, "the clawback may overdraw");
    assert_clean(&ctx).await;
    // The next grant repays the debt first.
    paid_pack(&ctx, "ord_q", 500).await;
    assert_eq!(balance(&ctx).await, 100);
    assert_clean(&ctx).await;
}
