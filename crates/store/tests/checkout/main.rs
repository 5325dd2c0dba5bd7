//! Checkout over `tally_store::Store`: orders, provider events and the credits they move,
//! written once and run on both backends (`<case>::sqlite` and `<case>::postgres`; the latter pass
//! with a notice when `TALLY_TEST_POSTGRES_URL` is unset). Balances are read, and the ledger's
//! invariants verified, through a `Ledger` over the same store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
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

async fn run<F, Fut>(backend: Backend, _name: &str, case: F)
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
        plan_change: false,
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
        price_ref: None,
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

/// The provider events recorded for [`APP`], newest first.
async fn recorded(ctx: &Ctx) -> Vec<tally_checkout::BillingEvent> {
    ctx.store
        .events(EventQuery {
            app: APP.into(),
            limit: 10,
            offset: 0,
        })
        .await
        .unwrap()
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
        trial_days: None,
        trial_credits: 0,
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

// The cases, by topic (declared last: they use the macros above).
mod events;
mod orders;
mod refunds;
mod subscriptions;
