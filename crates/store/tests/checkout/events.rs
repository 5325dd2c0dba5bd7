//! Provider events: unmatched and ignored ones recorded, concurrent deliveries applied once.

use super::*;

tally_testkit::backend_tests!(run = run; unmatched_and_ignored_events_are_recorded, concurrent_deliveries_of_one_event, concurrent_events_about_one_order);

async fn unmatched_and_ignored_events_are_recorded(ctx: Ctx) {
    let unmatched = |outcome: &EventOutcome| matches!(outcome, EventOutcome::Unmatched { .. });
    assert!(unmatched(
        &apply(&ctx, event("e1", completed("ord_none", None, &[]))).await
    ));
    let period = (START, START + Duration::days(30));
    assert!(unmatched(
        &apply(
            &ctx,
            event("e2", period_paid("in_1", "sub_none", None, period))
        )
        .await
    ));
    assert!(unmatched(
        &apply(&ctx, event("e3", changed("sub_none", None, Some(true)))).await
    ));
    assert!(unmatched(
        &apply(&ctx, event("e4", refund("re_1", &["pi_none"], None, None))).await
    ));
    assert_eq!(
        apply(&ctx, event("e5", EventKind::Ignored)).await,
        ignored("event type not handled")
    );
    // A pack order cannot start a subscription.
    place(&ctx, order("ord_p", OrderType::Credits, 5, ctx.clock.now())).await;
    assert!(unmatched(
        &apply(
            &ctx,
            event("e6", period_paid("in_2", "sub_2", Some("ord_p"), period))
        )
        .await
    ));
    // A dispute about a known payment is traced to its user.
    let pi = paid_pack(&ctx, "ord_q", 5).await;
    let dispute = EventKind::Disputed {
        dispute_id: "dp_1".into(),
        payment_refs: vec![pi],
        amount_minor: 1000,
    };
    assert!(is_applied(&apply(&ctx, event("e7", dispute)).await));
    assert_eq!(balance(&ctx).await, 5, "a dispute moves nothing");

    let events = |app: &str| {
        ctx.store.events(EventQuery {
            app: app.into(),
            limit: 100,
            offset: 0,
        })
    };
    let mine = events(APP).await.unwrap();
    let ids: Vec<_> = mine.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["e7", "evt_ord_q", "e6", "e5", "e4", "e3", "e2", "e1"]);
    assert_eq!(mine[7].outcome, "unmatched");
    assert_eq!(mine[7].app, None);
    assert_eq!(mine[0].order_id.as_deref(), Some("ord_q"));
    assert_eq!(mine[0].event_type, "test.event");
    // Another app sees the untraced ones only.
    let theirs = events("app2").await.unwrap();
    let ids: Vec<_> = theirs.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["e6", "e5", "e4", "e3", "e2", "e1"]);
    let page = ctx
        .store
        .events(EventQuery {
            app: APP.into(),
            limit: 2,
            offset: 1,
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].event_id, "evt_ord_q");
    assert_eq!(page[1].event_id, "e6");
}

async fn concurrent_deliveries_of_one_event(ctx: Ctx) {
    place(
        &ctx,
        order("ord_p", OrderType::Credits, 300, ctx.clock.now()),
    )
    .await;
    let delivery = event("evt_1", completed("ord_p", None, &["pi_1"]));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = ctx.store.clone();
        let delivery = delivery.clone();
        let now = ctx.clock.now();
        tasks.push(tokio::spawn(async move {
            store.apply_event(delivery, "{}".into(), now).await
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| is_applied(o)).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == EventOutcome::Duplicate)
            .count(),
        19
    );
    assert_eq!(balance(&ctx).await, 300);
    assert_eq!(of_type(&ctx, TxnType::Purchase).await.len(), 1);
    assert_clean(&ctx).await;
}

async fn concurrent_events_about_one_order(ctx: Ctx) {
    // Ten distinct events about one paid pack (retries under new ids, async success…): the
    // order's lock and the payment's unique key let exactly one grant.
    place(
        &ctx,
        order("ord_p", OrderType::Credits, 300, ctx.clock.now()),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = ctx.store.clone();
        let delivery = event(&format!("evt_{i}"), completed("ord_p", None, &["pi_1"]));
        let now = ctx.clock.now();
        tasks.push(tokio::spawn(async move {
            store.apply_event(delivery, "{}".into(), now).await
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| is_applied(o)).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == ignored("payment already granted"))
            .count(),
        9
    );
    assert_eq!(balance(&ctx).await, 300);
    assert_clean(&ctx).await;
}
