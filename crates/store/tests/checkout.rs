//! Checkout over `tally_store::Store`: orders, provider events and the credits they move,
//! written once and run on both backends (`sqlite_<case>` and `postgres_<case>`; the latter skip
//! with a notice when `TALLY_TEST_POSTGRES_URL` is unset). Balances are read, and the ledger's
//! invariants verified, through a `Ledger` over the same store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::sync::Arc;

use common::{Backend, START, TestDb};
use tally_catalog::{
    CatalogRepository, CouponDuration, CouponSpec, NewCoupon, NewPlan, PlanKind, PlanSpec,
};
use tally_checkout::refund::RefundReport;
use tally_checkout::{
    Channel, CheckoutError, CheckoutRepository, EventKind, EventOutcome, EventQuery, Interval,
    NewOrder, Order, OrderQuery, OrderStatus, OrderType, PaymentEvent, SessionAttached,
    SubscriptionStatus,
};
use tally_ledger::{
    AccountRef, Clock, Ledger, ManualClock, Transaction, TransactionQuery, TxnType,
};
use tally_store::Store;
use time::{Duration, OffsetDateTime};

const APP: &str = "app1";
const USER: &str = "alice";

/// What each case receives.
struct Ctx {
    store: Store,
    ledger: Ledger,
    clock: Arc<ManualClock>,
}

async fn run<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let clock = Arc::new(ManualClock::new(START));
    let ledger = Ledger::with_clock(Arc::new(store.clone()), clock.clone());
    case(Ctx {
        store,
        ledger,
        clock,
    })
    .await;
    drop(db);
}

macro_rules! cases {
    ($($case:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            run(Backend::Sqlite, $case).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            run(Backend::Postgres, $case).await;
        }
    )*};
}

cases! {
    orders_round_trip_and_idempotent_insert =>
        sqlite_orders_round_trip_and_idempotent_insert,
        postgres_orders_round_trip_and_idempotent_insert;
    customers_and_provider_coupons =>
        sqlite_customers_and_provider_coupons, postgres_customers_and_provider_coupons;
    pack_checkout_grants_once => sqlite_pack_checkout_grants_once, postgres_pack_checkout_grants_once;
    unpaid_expired_failed_then_paid =>
        sqlite_unpaid_expired_failed_then_paid, postgres_unpaid_expired_failed_then_paid;
    period_paid_before_checkout_completed =>
        sqlite_period_paid_before_checkout_completed,
        postgres_period_paid_before_checkout_completed;
    renewal_grants_again_and_moves_the_period =>
        sqlite_renewal_grants_again_and_moves_the_period,
        postgres_renewal_grants_again_and_moves_the_period;
    older_subscription_change_is_ignored =>
        sqlite_older_subscription_change_is_ignored, postgres_older_subscription_change_is_ignored;
    canceled_stays_canceled => sqlite_canceled_stays_canceled, postgres_canceled_stays_canceled;
    current_subscription_prefers_live_ones =>
        sqlite_current_subscription_prefers_live_ones,
        postgres_current_subscription_prefers_live_ones;
    full_refund_claws_back_everything =>
        sqlite_full_refund_claws_back_everything, postgres_full_refund_claws_back_everything;
    cumulative_partial_refunds =>
        sqlite_cumulative_partial_refunds, postgres_cumulative_partial_refunds;
    per_refund_partial_refunds =>
        sqlite_per_refund_partial_refunds, postgres_per_refund_partial_refunds;
    refund_of_a_renewal_leaves_the_order =>
        sqlite_refund_of_a_renewal_leaves_the_order, postgres_refund_of_a_renewal_leaves_the_order;
    refund_after_spending_goes_negative =>
        sqlite_refund_after_spending_goes_negative, postgres_refund_after_spending_goes_negative;
    unmatched_and_ignored_events_are_recorded =>
        sqlite_unmatched_and_ignored_events_are_recorded,
        postgres_unmatched_and_ignored_events_are_recorded;
    concurrent_deliveries_of_one_event =>
        sqlite_concurrent_deliveries_of_one_event, postgres_concurrent_deliveries_of_one_event;
    concurrent_events_about_one_order =>
        sqlite_concurrent_events_about_one_order, postgres_concurrent_events_about_one_order;
    coupon_redeemed_once => sqlite_coupon_redeemed_once, postgres_coupon_redeemed_once;
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn alice() -> AccountRef {
    AccountRef::new(APP, USER).unwrap()
}

fn order(id: &str, order_type: OrderType, credits: i64, now: OffsetDateTime) -> Order {
    Order {
        id: id.into(),
        app: APP.into(),
        user: USER.into(),
        order_type,
        status: OrderStatus::Pending,
        plan_id: "7".into(),
        interval: (order_type == OrderType::Subscription).then_some(Interval::Month),
        channel: Channel::Stripe,
        amount_minor: 1000,
        currency: "usd".into(),
        discount_minor: 0,
        coupon_code: None,
        credits,
        credits_expire_days: None,
        provider_session_id: None,
        checkout_url: None,
        provider_customer_id: None,
        provider_subscription_id: None,
        failure_reason: None,
        created_at: now,
        completed_at: None,
        updated_at: now,
    }
}

/// Stores a pending order and attaches the session `cs_<id>`.
async fn place(ctx: &Ctx, order: Order) -> Order {
    let id = order.id.clone();
    let (stored, _) = ctx
        .store
        .insert_order(NewOrder {
            order,
            idempotency_key: None,
            request_hash: "h".into(),
        })
        .await
        .unwrap();
    assert_eq!(stored.id, id);
    ctx.store
        .attach_session(SessionAttached {
            order_id: id.clone(),
            session_id: format!("cs_{id}"),
            url: format!("https://pay.example/{id}"),
            now: ctx.clock.now(),
        })
        .await
        .unwrap()
}

fn event(id: &str, kind: EventKind) -> PaymentEvent {
    PaymentEvent {
        channel: Channel::Stripe,
        id: id.into(),
        event_type: "test.event".into(),
        created_at: None,
        kind,
    }
}

fn completed(order_id: &str, subscription_id: Option<&str>, refs: &[&str]) -> EventKind {
    EventKind::CheckoutCompleted {
        order_id: Some(order_id.into()),
        session_id: format!("cs_{order_id}"),
        customer_id: Some("cus_1".into()),
        subscription_id: subscription_id.map(Into::into),
        paid: true,
        amount_paid_minor: Some(1000),
        payment_refs: refs.iter().map(|r| (*r).to_owned()).collect(),
    }
}

fn period_paid(
    payment_id: &str,
    sub: &str,
    order_id: Option<&str>,
    (start, end): (OffsetDateTime, OffsetDateTime),
) -> EventKind {
    EventKind::PeriodPaid {
        payment_id: payment_id.into(),
        subscription_id: sub.into(),
        customer_id: Some("cus_1".into()),
        order_id: order_id.map(Into::into),
        period_start: Some(start),
        period_end: Some(end),
        amount_paid_minor: 1000,
        payment_refs: vec![format!("pi_{payment_id}")],
    }
}

fn changed(
    sub: &str,
    status: Option<SubscriptionStatus>,
    cancel_at_period_end: Option<bool>,
) -> EventKind {
    EventKind::SubscriptionChanged {
        subscription_id: sub.into(),
        customer_id: None,
        order_id: None,
        status,
        cancel_at_period_end,
        period_start: None,
        period_end: None,
    }
}

fn refund(key: &str, refs: &[&str], total: Option<i64>, this: Option<i64>) -> EventKind {
    EventKind::Refunded {
        refund_key: key.into(),
        payment_refs: refs.iter().map(|r| (*r).to_owned()).collect(),
        amount: match (total, this) {
            (Some(total), _) => RefundReport::Cumulative(total),
            (None, Some(this)) => RefundReport::PerRefund(this),
            (None, None) => RefundReport::Full,
        },
    }
}

async fn apply(ctx: &Ctx, event: PaymentEvent) -> EventOutcome {
    ctx.store
        .apply_event(event, "{}".into(), ctx.clock.now())
        .await
        .unwrap()
}

fn is_applied(outcome: &EventOutcome) -> bool {
    matches!(outcome, EventOutcome::Applied { .. })
}

fn ignored(detail: &str) -> EventOutcome {
    EventOutcome::Ignored {
        detail: detail.into(),
    }
}

async fn balance(ctx: &Ctx) -> i64 {
    ctx.ledger.balance(alice()).await.unwrap().balance
}

async fn history(ctx: &Ctx) -> Vec<Transaction> {
    let (rows, _) = ctx
        .ledger
        .transactions(TransactionQuery {
            app: APP.into(),
            user: Some(USER.into()),
            limit: 100,
            ..TransactionQuery::default()
        })
        .await
        .unwrap();
    rows
}

async fn of_type(ctx: &Ctx, txn_type: TxnType) -> Vec<Transaction> {
    history(ctx)
        .await
        .into_iter()
        .filter(|t| t.txn_type == txn_type)
        .collect()
}

async fn assert_clean(ctx: &Ctx) {
    assert_eq!(
        ctx.ledger.verify().await.unwrap(),
        vec![],
        "ledger invariants"
    );
}

async fn stored(ctx: &Ctx, id: &str) -> Order {
    ctx.store.order(id.into()).await.unwrap().unwrap()
}

async fn current_sub(ctx: &Ctx) -> tally_checkout::Subscription {
    ctx.store
        .subscription(APP.into(), USER.into())
        .await
        .unwrap()
        .unwrap()
}

/// A pack order of `credits` credits, paid 1000 minor units; answers its payment ref.
async fn paid_pack(ctx: &Ctx, id: &str, credits: i64) -> String {
    let mut o = order(id, OrderType::Credits, credits, ctx.clock.now());
    o.amount_minor = 1000;
    place(ctx, o).await;
    let pi = format!("pi_{id}");
    assert!(is_applied(
        &apply(
            ctx,
            event(&format!("evt_{id}"), completed(id, None, &[&pi]))
        )
        .await
    ));
    pi
}

// ---------------------------------------------------------------------------------------------
// Cases

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

    let events = ctx
        .store
        .events(EventQuery {
            app: APP.into(),
            limit: 10,
            offset: 0,
        })
        .await
        .unwrap();
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
    assert_clean(&ctx).await;
}

async fn view_never_expires(ctx: &Ctx) -> bool {
    ctx.ledger
        .balance(alice())
        .await
        .unwrap()
        .expiring
        .is_empty()
}

async fn started_subscription(ctx: &Ctx) {
    let now = ctx.clock.now();
    place(ctx, order("ord_s", OrderType::Subscription, 100, now)).await;
    let period = (now, now + Duration::days(30));
    assert!(is_applied(
        &apply(
            ctx,
            event("evt_0", period_paid("in_1", "sub_1", Some("ord_s"), period))
        )
        .await
    ));
}

fn at(event: PaymentEvent, created_at: OffsetDateTime) -> PaymentEvent {
    PaymentEvent {
        created_at: Some(created_at),
        ..event
    }
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

fn pack_spec(name: &str) -> PlanSpec {
    PlanSpec {
        name: name.into(),
        description: String::new(),
        kind: PlanKind::CreditPack,
        currency: "usd".into(),
        price_monthly: None,
        price_yearly: None,
        price: Some(1000),
        credits_included: 500,
        features: vec![],
        stripe_price_id_monthly: None,
        stripe_price_id_yearly: None,
        stripe_price_id: Some("price_pack".into()),
        creem_product_id_monthly: None,
        creem_product_id_yearly: None,
        creem_product_id: None,
        active: true,
        sort_order: 0,
        credits_expire_days: Some(30),
    }
}

fn coupon_spec(code: &str) -> CouponSpec {
    CouponSpec {
        code: code.into(),
        percent_off: Some(20),
        amount_off: None,
        currency: None,
        duration: CouponDuration::Once,
        duration_months: None,
        max_redemptions: None,
        expires_at: None,
        plan_ids: vec![],
        active: true,
    }
}
