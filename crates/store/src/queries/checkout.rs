//! Checkout's queries.
//!
//! A provider event is recorded and applied in one transaction. Credits move through the ledger's
//! own `apply` inside that transaction, so an event is either fully applied (event row, order,
//! subscription, payment, ledger movement) or not recorded at all, and a retry starts afresh.
//!
//! Every path takes its row locks in one order — order, subscription, payment, then the ledger's
//! account — so that two events about one purchase wait for each other instead of deadlocking.
//! Rows whose lock must come later are first read without a lock to learn which order to lock.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tally_catalog::{Plan, PlanKey, PlanQuery};
use tally_checkout::change::plan_for_price_ref;
use tally_checkout::plan::{
    OrderNews, PeriodNews, PlanSwitch, RecordedPayment, SubscriptionNews, SubscriptionNotice,
    SubscriptionUpdate, TrialTerms, plan_checkout_ended, plan_order_update, plan_pack_paid,
    plan_period_paid, plan_refund, plan_subscription_change,
};
use tally_checkout::refund::RefundReport;
use tally_checkout::{
    AppOrderQuery, AppSubscriptionQuery, BillingEvent, Channel, CheckoutError, EventKind,
    EventOutcome, EventQuery, NewOrder, Order, OrderQuery, OrderStatus, OrderType, PaymentEvent,
    SessionAttached, Subscription, SubscriptionStatus,
};
use tally_ledger::Movement;
use time::OffsetDateTime;

use super::ledger;
use super::outbox;
use crate::StoreError;
use crate::cached::cached;
use crate::catalog_rows::PlanRow;
use crate::checkout_rows::{
    EventRow, NewOrderRow, NewPayment, OrderChanges, OrderRow, Paid, PaymentRow,
    SubscriptionChanges, SubscriptionRow, Trace, applied, ignored, outcome_detail, refs, unmatched,
};
use crate::rows::{from_db, to_db};
use crate::schema::{
    billing_customers, billing_events, coupons, orders, payment_refs, payments, plans,
    provider_coupons, refunds, subscriptions,
};
use tally_webhooks::EventType;
use tally_webhooks::payload::{OrderChanged, OrderRefunded, Payload, SubscriptionChanged};

use super::{Conn, Pipe};

const INACTIVE: [&str; 2] = ["canceled", "expired"];

/// Reports an order's change to the outbox, with the order as it now is.
async fn order_event(
    conn: &mut Conn,
    event_type: EventType,
    order_id: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let o: OrderRow = orders::table
        .find(order_id)
        .select(OrderRow::as_select())
        .first(conn)
        .await?;
    let failed = event_type == EventType::OrderFailed;
    let payload = Payload::Order(
        event_type,
        OrderChanged {
            order_id: o.id,
            order_type: o.order_type,
            status: o.status,
            plan_id: o.plan_id,
            channel: o.channel,
            amount_minor: o.amount_minor,
            discount_minor: o.discount_minor,
            currency: o.currency,
            credits: o.credits,
            failure_reason: failed.then_some(o.failure_reason),
        },
    );
    outbox::emit(conn, &payload, (&o.app_key, Some(&o.user_id)), now).await
}

/// What a subscription event adds to the subscription's fields.
#[derive(Debug, Default)]
struct SubscriptionExtra {
    previous_status: Option<String>,
    payment_id: Option<String>,
    credits_granted: Option<i64>,
}

/// Reports a subscription's change to the outbox, with `s`, the subscription as it now is.
async fn subscription_event(
    conn: &mut Conn,
    event_type: EventType,
    s: SubscriptionRow,
    extra: SubscriptionExtra,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let rows = [subscription_event_row(event_type, s, extra, now)];
    pipelined!(conn => outbox::insert_events(conn, &rows))?;
    Ok(())
}

/// The outbox's row for a subscription's change ([`subscription_event`]).
fn subscription_event_row(
    event_type: EventType,
    s: SubscriptionRow,
    extra: SubscriptionExtra,
    now: OffsetDateTime,
) -> outbox::OutboxRow {
    let instant = |t: Option<time::PrimitiveDateTime>| t.map(|t| tally_kernel::rfc3339(from_db(t)));
    let payload = Payload::Subscription(
        event_type,
        SubscriptionChanged {
            subscription_id: s.id.to_string(),
            order_id: s.order_id,
            plan_id: s.plan_id,
            interval: s.billing_interval,
            channel: s.channel,
            status: s.status,
            current_period_start: instant(s.current_period_start),
            current_period_end: instant(s.current_period_end),
            cancel_at_period_end: s.cancel_at_period_end,
            credits_per_period: s.credits_per_period,
            previous_status: extra.previous_status,
            payment_id: extra.payment_id,
            credits_granted: extra.credits_granted,
        },
    );
    outbox::OutboxRow::new(&payload, (&s.app_key, Some(&s.user_id)), now)
}

// ---------------------------------------------------------------------------------
// Orders, customers, coupons

pub(crate) async fn insert_order(
    conn: &mut Conn,
    new: &NewOrder,
) -> Result<(Order, String), StoreError> {
    let key = new.idempotency_key.as_deref();
    let inserted = diesel::insert_into(orders::table)
        .values(NewOrderRow::new(&new.order, key, &new.request_hash))
        .on_conflict((orders::app_key, orders::user_id, orders::idempotency_key))
        .do_nothing()
        .execute(conn)
        .await?;
    let row: OrderRow = if inserted == 1 {
        orders::table
            .find(&new.order.id)
            .select(OrderRow::as_select())
            .first(conn)
            .await?
    } else {
        // Only the idempotency key can conflict without an error.
        let key = key.ok_or(StoreError::Invariant(
            "order insert conflicted without a key",
        ))?;
        orders::table
            .filter(orders::app_key.eq(&new.order.app))
            .filter(orders::user_id.eq(&new.order.user))
            .filter(orders::idempotency_key.eq(key))
            .select(OrderRow::as_select())
            .first(conn)
            .await?
    };
    let hash = row.request_hash.clone();
    Ok((Order::try_from(row)?, hash))
}

pub(crate) async fn attach_session(
    conn: &mut Conn,
    session: &SessionAttached,
) -> Result<Order, StoreError> {
    let changes = OrderChanges {
        provider_session_id: Some(&session.session_id),
        checkout_url: Some(&session.url),
        ..OrderChanges::at(session.now)
    };
    let row: OrderRow = diesel::update(orders::table.find(&session.order_id))
        .set(changes)
        .returning(OrderRow::as_returning())
        .get_result(conn)
        .await
        .optional()?
        .ok_or(StoreError::Checkout(CheckoutError::OrderNotFound))?;
    Order::try_from(row)
}

pub(crate) async fn fail_order(
    conn: &mut Conn,
    order_id: &str,
    reason: &str,
    now: OffsetDateTime,
) -> Result<Order, StoreError> {
    let row = locked!(orders::table.find(order_id).select(OrderRow::as_select()))
        .first(conn)
        .await
        .optional()?
        .ok_or(StoreError::Checkout(CheckoutError::OrderNotFound))?;
    if row.status()? != OrderStatus::Pending {
        return Order::try_from(row);
    }
    let changes = OrderChanges {
        status: Some(OrderStatus::Failed.as_str()),
        failure_reason: Some(Some(reason)),
        ..OrderChanges::at(now)
    };
    let row: OrderRow = diesel::update(orders::table.find(order_id))
        .set(changes)
        .returning(OrderRow::as_returning())
        .get_result(conn)
        .await?;
    order_event(conn, EventType::OrderFailed, order_id, now).await?;
    Order::try_from(row)
}

pub(crate) async fn order(conn: &mut Conn, id: &str) -> Result<Option<Order>, StoreError> {
    orders::table
        .find(id)
        .select(OrderRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(Order::try_from)
        .transpose()
}

pub(crate) async fn orders(conn: &mut Conn, query: &OrderQuery) -> Result<Vec<Order>, StoreError> {
    let rows: Vec<OrderRow> = orders::table
        .filter(orders::app_key.eq(&query.app))
        .filter(orders::user_id.eq(&query.user))
        .order((orders::created_at.desc(), orders::id.desc()))
        .limit(query.limit)
        .offset(query.offset)
        .select(OrderRow::as_select())
        .load(conn)
        .await?;
    rows.into_iter().map(Order::try_from).collect()
}

pub(crate) async fn subscription(
    conn: &mut Conn,
    app: &str,
    user: &str,
) -> Result<Option<Subscription>, StoreError> {
    let mine = || {
        subscriptions::table
            .filter(subscriptions::app_key.eq(app))
            .filter(subscriptions::user_id.eq(user))
            .order(subscriptions::id.desc())
            .select(SubscriptionRow::as_select())
    };
    let current = mine()
        .filter(subscriptions::status.ne_all(INACTIVE))
        .first(conn)
        .await
        .optional()?;
    let row = match current {
        Some(row) => Some(row),
        None => mine().first(conn).await.optional()?,
    };
    row.map(Subscription::try_from).transpose()
}

pub(crate) async fn customer(
    conn: &mut Conn,
    app: &str,
    user: &str,
    channel: Channel,
) -> Result<Option<String>, StoreError> {
    Ok(billing_customers::table
        .find((app, user, channel.as_str()))
        .select(billing_customers::customer_id)
        .first(conn)
        .await
        .optional()?)
}

pub(crate) async fn provider_coupon(
    conn: &mut Conn,
    app: &str,
    code: &str,
    channel: Channel,
    price_ref: &str,
) -> Result<Option<String>, StoreError> {
    Ok(provider_coupons::table
        .find((app, code, channel.as_str(), price_ref))
        .select(provider_coupons::provider_id)
        .first(conn)
        .await
        .optional()?)
}

pub(crate) async fn put_provider_coupon(
    conn: &mut Conn,
    (app, code, channel, price_ref): (&str, &str, Channel, &str),
    provider_id: &str,
    now: OffsetDateTime,
) -> Result<String, StoreError> {
    diesel::insert_into(provider_coupons::table)
        .values((
            provider_coupons::app_key.eq(app),
            provider_coupons::code.eq(code),
            provider_coupons::channel.eq(channel.as_str()),
            provider_coupons::price_ref.eq(price_ref),
            provider_coupons::provider_id.eq(provider_id),
            provider_coupons::created_at.eq(to_db(now)),
        ))
        .on_conflict((
            provider_coupons::app_key,
            provider_coupons::code,
            provider_coupons::channel,
            provider_coupons::price_ref,
        ))
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(provider_coupons::table
        .find((app, code, channel.as_str(), price_ref))
        .select(provider_coupons::provider_id)
        .first(conn)
        .await?)
}

pub(crate) async fn events(
    conn: &mut Conn,
    query: &EventQuery,
) -> Result<Vec<BillingEvent>, StoreError> {
    let rows: Vec<EventRow> = billing_events::table
        .filter(
            billing_events::app_key
                .eq(&query.app)
                .or(billing_events::app_key.is_null()),
        )
        .order(billing_events::id.desc())
        .limit(query.limit)
        .offset(query.offset)
        .select(EventRow::as_select())
        .load(conn)
        .await?;
    rows.into_iter().map(BillingEvent::try_from).collect()
}

/// A page of the app's orders, newest first; the cursor is an order id of the app.
pub(crate) async fn app_orders(
    conn: &mut Conn,
    query: &AppOrderQuery,
) -> Result<Vec<Order>, StoreError> {
    let mut rows = orders::table
        .filter(orders::app_key.eq(&query.app))
        .into_boxed();
    if let Some(user) = &query.user {
        rows = rows.filter(orders::user_id.eq(user));
    }
    if let Some(status) = query.status {
        rows = rows.filter(orders::status.eq(status.as_str()));
    }
    if let Some(order_type) = query.order_type {
        rows = rows.filter(orders::order_type.eq(order_type.as_str()));
    }
    if let Some(channel) = query.channel {
        rows = rows.filter(orders::channel.eq(channel.as_str()));
    }
    if let Some(from) = query.from {
        rows = rows.filter(orders::created_at.ge(to_db(from)));
    }
    if let Some(to) = query.to {
        rows = rows.filter(orders::created_at.lt(to_db(to)));
    }
    if let Some(before) = &query.before {
        let at: time::PrimitiveDateTime = orders::table
            .filter(orders::app_key.eq(&query.app))
            .filter(orders::id.eq(before))
            .select(orders::created_at)
            .first(conn)
            .await
            .optional()?
            .ok_or_else(|| CheckoutError::invalid("before", "must be an order id of this app"))?;
        rows = rows.filter(
            orders::created_at
                .lt(at)
                .or(orders::created_at.eq(at).and(orders::id.lt(before))),
        );
    }
    let rows: Vec<OrderRow> = rows
        .order((orders::created_at.desc(), orders::id.desc()))
        .limit(query.limit)
        .select(OrderRow::as_select())
        .load(conn)
        .await?;
    rows.into_iter().map(Order::try_from).collect()
}

/// The events traced to one order, oldest first.
pub(crate) async fn order_events(
    conn: &mut Conn,
    app: &str,
    order_id: &str,
) -> Result<Vec<BillingEvent>, StoreError> {
    let rows: Vec<EventRow> = billing_events::table
        .filter(billing_events::order_id.eq(order_id))
        .filter(billing_events::app_key.eq(app))
        .order(billing_events::id)
        .select(EventRow::as_select())
        .load(conn)
        .await?;
    rows.into_iter().map(BillingEvent::try_from).collect()
}

/// A page of the app's subscriptions, newest first; the cursor is a subscription id.
pub(crate) async fn app_subscriptions(
    conn: &mut Conn,
    query: &AppSubscriptionQuery,
) -> Result<Vec<Subscription>, StoreError> {
    let mut rows = subscriptions::table
        .filter(subscriptions::app_key.eq(&query.app))
        .into_boxed();
    if let Some(user) = &query.user {
        rows = rows.filter(subscriptions::user_id.eq(user));
    }
    if let Some(status) = query.status {
        rows = rows.filter(subscriptions::status.eq(status.as_str()));
    }
    if let Some(plan_id) = &query.plan_id {
        rows = rows.filter(subscriptions::plan_id.eq(plan_id));
    }
    if let Some(before) = query.before {
        rows = rows.filter(subscriptions::id.lt(before));
    }
    let rows: Vec<SubscriptionRow> = rows
        .order(subscriptions::id.desc())
        .limit(query.limit)
        .select(SubscriptionRow::as_select())
        .load(conn)
        .await?;
    rows.into_iter().map(Subscription::try_from).collect()
}

/// The order's own payment with every id it is known by (the payment id first).
pub(crate) async fn order_payment(
    conn: &mut Conn,
    app: &str,
    order_id: &str,
) -> Result<Option<RecordedPayment>, StoreError> {
    let row: Option<(PaymentRow, String)> = payments::table
        .filter(payments::app_key.eq(app))
        .filter(payments::order_id.eq(order_id))
        .order(payments::id)
        .select((PaymentRow::as_select(), payments::channel))
        .first(conn)
        .await
        .optional()?;
    let Some((row, channel)) = row else {
        return Ok(None);
    };
    let others: Vec<String> = payment_refs::table
        .filter(payment_refs::channel.eq(&channel))
        .filter(payment_refs::payment.eq(row.id))
        .order(payment_refs::payment_ref)
        .select(payment_refs::payment_ref)
        .load(conn)
        .await?;
    let mut refs = vec![row.payment_id.clone()];
    refs.extend(others.into_iter().filter(|r| *r != row.payment_id));
    Ok(Some(RecordedPayment {
        facts: row.facts(),
        refs,
    }))
}

/// One subscription of the app.
pub(crate) async fn app_subscription(
    conn: &mut Conn,
    app: &str,
    id: i64,
) -> Result<Option<Subscription>, StoreError> {
    subscriptions::table
        .filter(subscriptions::app_key.eq(app))
        .filter(subscriptions::id.eq(id))
        .select(SubscriptionRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(Subscription::try_from)
        .transpose()
}

// ---------------------------------------------------------------------------------
// Provider events

/// Records the event and applies it, inside the caller's write transaction.
pub(crate) async fn apply_event(
    conn: &mut Conn,
    event: &PaymentEvent,
    payload: &str,
    now: OffsetDateTime,
) -> Result<EventOutcome, StoreError> {
    let channel = event.channel;
    // The unique key is the deduplication: a concurrent second delivery waits here
    // for the first transaction (PostgreSQL) or queues for the write lock (SQLite),
    // then inserts nothing.
    let inserted = diesel::insert_into(billing_events::table)
        .values((
            billing_events::channel.eq(channel.as_str()),
            billing_events::event_id.eq(&event.id),
            billing_events::event_type.eq(&event.event_type),
            billing_events::outcome.eq("received"),
            billing_events::detail.eq(""),
            billing_events::payload.eq(payload),
            billing_events::provider_created_at.eq(event.created_at.map(to_db)),
            billing_events::received_at.eq(to_db(now)),
        ))
        .on_conflict((billing_events::channel, billing_events::event_id))
        .do_nothing()
        .execute(conn)
        .await?;
    if inserted == 0 {
        return Ok(EventOutcome::Duplicate);
    }
    let mut trace = Trace::default();
    let outcome = match &event.kind {
        EventKind::CheckoutCompleted {
            order_id,
            session_id,
            customer_id,
            subscription_id,
            paid,
            amount_paid_minor,
            payment_refs,
        } => {
            let paid_event = Paid {
                order_id: order_id.as_deref(),
                session_id,
                customer_id: customer_id.as_deref(),
                subscription_id: subscription_id.as_deref(),
                amount_paid_minor: *amount_paid_minor,
                payment_refs,
            };
            if *paid {
                checkout_paid(conn, channel, paid_event, &mut trace, now).await?
            } else {
                checkout_unpaid(conn, channel, paid_event, &mut trace, now).await?
            }
        }
        EventKind::CheckoutPaymentSucceeded {
            order_id,
            session_id,
            amount_paid_minor,
            payment_refs,
        } => {
            let paid_event = Paid {
                order_id: order_id.as_deref(),
                session_id,
                customer_id: None,
                subscription_id: None,
                amount_paid_minor: *amount_paid_minor,
                payment_refs,
            };
            checkout_paid(conn, channel, paid_event, &mut trace, now).await?
        }
        EventKind::CheckoutFailed {
            order_id,
            session_id,
        } => {
            checkout_ended(
                conn,
                channel,
                (order_id.as_deref(), session_id),
                OrderStatus::Failed,
                &mut trace,
                now,
            )
            .await?
        }
        EventKind::CheckoutExpired {
            order_id,
            session_id,
        } => {
            checkout_ended(
                conn,
                channel,
                (order_id.as_deref(), session_id),
                OrderStatus::Expired,
                &mut trace,
                now,
            )
            .await?
        }
        EventKind::PeriodPaid { .. } => period_paid(conn, event, &mut trace, now).await?,
        EventKind::SubscriptionChanged { .. } => {
            subscription_changed(conn, channel, event, &mut trace, now).await?
        }
        EventKind::Refunded {
            refund_key,
            payment_refs,
            amount,
        } => {
            refunded(
                conn,
                channel,
                (refund_key, payment_refs),
                *amount,
                &mut trace,
                now,
            )
            .await?
        }
        EventKind::Disputed {
            payment_refs,
            amount_minor,
            ..
        } => match payment_by_refs(conn, channel, payment_refs).await? {
            Some(payment) => {
                trace.set(
                    &payment.app_key,
                    &payment.user_id,
                    payment.order_id.as_deref(),
                );
                applied(format!(
                    "dispute recorded ({amount_minor} minor units of payment {})",
                    payment.payment_id
                ))
            }
            None => unmatched(format!("no payment known as {}", payment_refs.join(", "))),
        },
        EventKind::Ignored => ignored("event type not handled"),
    };
    if !trace.recorded {
        pipelined!(conn => record_outcome(conn, (channel, &event.id), &outcome, &trace))?;
    }
    Ok(outcome)
}

/// Writes the event's outcome and what it was traced to on its row.
async fn record_outcome(
    conn: &mut Pipe<'_>,
    (channel, event_id): (Channel, &str),
    outcome: &EventOutcome,
    trace: &Trace,
) -> QueryResult<()> {
    cached(
        diesel::update(
            billing_events::table
                .filter(billing_events::channel.eq(channel.as_str()))
                .filter(billing_events::event_id.eq(event_id)),
        )
        .set((
            billing_events::outcome.eq(outcome.as_str()),
            billing_events::detail.eq(outcome_detail(outcome)),
            billing_events::app_key.eq(trace.app.as_deref()),
            billing_events::user_id.eq(trace.user.as_deref()),
            billing_events::order_id.eq(trace.order_id.as_deref()),
        )),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The order an event names: by Tally's id, else by the provider session, and only on
/// the event's channel. Locked.
async fn lock_order(
    conn: &mut Conn,
    channel: Channel,
    order_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<Option<OrderRow>, StoreError> {
    if let Some(id) = order_id {
        let row = locked!(
            orders::table
                .filter(orders::id.eq(id))
                .filter(orders::channel.eq(channel.as_str()))
                .select(OrderRow::as_select())
        )
        .first(conn)
        .await
        .optional()?;
        if row.is_some() {
            return Ok(row);
        }
    }
    let Some(session) = session_id.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    Ok(locked!(
        orders::table
            .filter(orders::channel.eq(channel.as_str()))
            .filter(orders::provider_session_id.eq(session))
            .select(OrderRow::as_select())
    )
    .first(conn)
    .await
    .optional()?)
}

/// Records what a checkout event tells about the order and, with `complete`, marks
/// it paid. Answers whether this was the transition to `completed` (which counts a
/// redemption of its coupon).
async fn update_order(
    conn: &mut Conn,
    order: &OrderRow,
    paid: &Paid<'_>,
    complete: bool,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let news = OrderNews {
        session_id: paid.session_id,
        customer_id: paid.customer_id,
        subscription_id: paid.subscription_id,
    };
    let update = plan_order_update(&Order::try_from(order.clone())?, &news, complete);
    if update.is_empty() {
        return Ok(false);
    }
    let transition = update.complete;
    let mut changes = OrderChanges::at(now);
    if transition {
        changes.status = Some(OrderStatus::Completed.as_str());
        changes.completed_at = Some(to_db(now));
        changes.failure_reason = Some(None);
    }
    changes.provider_session_id = update.provider_session_id.as_deref();
    changes.provider_customer_id = update.provider_customer_id.as_deref();
    changes.provider_subscription_id = update.provider_subscription_id.as_deref();
    cached(diesel::update(orders::table.find(&order.id)).set(changes))
        .execute(conn)
        .await?;
    if transition {
        order_event(conn, EventType::OrderCompleted, &order.id, now).await?;
        if let Some(code) = &order.coupon_code {
            cached(
                diesel::update(
                    coupons::table
                        .filter(coupons::app_key.eq(&order.app_key))
                        .filter(coupons::code.eq(code)),
                )
                .set(coupons::times_redeemed.eq(coupons::times_redeemed + 1_i64)),
            )
            .execute(conn)
            .await?;
        }
    }
    Ok(transition)
}

async fn set_order_status(
    conn: &mut Conn,
    order_id: &str,
    status: OrderStatus,
    reason: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let changes = OrderChanges {
        status: Some(status.as_str()),
        failure_reason: reason.map(Some),
        ..OrderChanges::at(now)
    };
    cached(diesel::update(orders::table.find(order_id)).set(changes))
        .execute(conn)
        .await?;
    Ok(())
}

/// Remembers the user's customer id at the provider (the latest one told wins).
async fn remember_customer(
    conn: &mut Pipe<'_>,
    (app, user): (&str, &str),
    channel: Channel,
    customer_id: Option<&str>,
    now: OffsetDateTime,
) -> QueryResult<()> {
    let Some(customer_id) = customer_id.filter(|c| !c.is_empty()) else {
        return Ok(());
    };
    cached(
        diesel::insert_into(billing_customers::table)
            .values((
                billing_customers::app_key.eq(app),
                billing_customers::user_id.eq(user),
                billing_customers::channel.eq(channel.as_str()),
                billing_customers::customer_id.eq(customer_id),
                billing_customers::updated_at.eq(to_db(now)),
            ))
            .on_conflict((
                billing_customers::app_key,
                billing_customers::user_id,
                billing_customers::channel,
            ))
            .do_update()
            .set((
                billing_customers::customer_id.eq(customer_id),
                billing_customers::updated_at.eq(to_db(now)),
            )),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The plan's name for ledger descriptions; its id if the plan is gone.
async fn plan_name(conn: &mut Conn, order: &OrderRow) -> Result<String, StoreError> {
    let Ok(id) = order.plan_id.parse::<i64>() else {
        return Ok(order.plan_id.clone());
    };
    let name: Option<String> = plans::table
        .filter(plans::id.eq(id))
        .filter(plans::app_key.eq(&order.app_key))
        .select(plans::name)
        .first(conn)
        .await
        .optional()?;
    Ok(name.unwrap_or_else(|| order.plan_id.clone()))
}

async fn checkout_unpaid(
    conn: &mut Conn,
    channel: Channel,
    paid: Paid<'_>,
    trace: &mut Trace,
    now: OffsetDateTime,
) -> Result<EventOutcome, StoreError> {
    let Some(order) = lock_order(conn, channel, paid.order_id, Some(paid.session_id)).await? else {
        return Ok(no_order(&paid));
    };
    trace.set(&order.app_key, &order.user_id, Some(&order.id));
    let user = (order.app_key.as_str(), order.user_id.as_str());
    pipelined!(conn => remember_customer(conn, user, channel, paid.customer_id, now))?;
    update_order(conn, &order, &paid, false, now).await?;
    Ok(applied("awaiting payment"))
}

fn no_order(paid: &Paid<'_>) -> EventOutcome {
    unmatched(format!(
        "no order {} or session {}",
        paid.order_id.unwrap_or("-"),
        paid.session_id
    ))
}

async fn checkout_paid(
    conn: &mut Conn,
    channel: Channel,
    paid: Paid<'_>,
    trace: &mut Trace,
    now: OffsetDateTime,
) -> Result<EventOutcome, StoreError> {
    let Some(order) = lock_order(conn, channel, paid.order_id, Some(paid.session_id)).await? else {
        return Ok(no_order(&paid));
    };
    trace.set(&order.app_key, &order.user_id, Some(&order.id));
    let user = (order.app_key.as_str(), order.user_id.as_str());
    pipelined!(conn => remember_customer(conn, user, channel, paid.customer_id, now))?;
    let completed = update_order(conn, &order, &paid, true, now).await?;
    match order.order_type()? {
        OrderType::Credits => {
            // One payment per order: two events about one pack grant once.
            let payment_id = format!("order:{}", order.id);
            let amount = paid
                .amount_paid_minor
                .unwrap_or(order.amount_minor - order.discount_minor);
            let (payment, new) = insert_payment(
                conn,
                NewPayment {
                    channel: channel.as_str(),
                    payment_id: &payment_id,
                    app_key: &order.app_key,
                    user_id: &order.user_id,
                    order_id: Some(&order.id),
                    subscription_id: None,
                    credits_granted: order.credits,
                    amount_paid_minor: amount.max(0),
                    refunded_minor: 0,
                    clawed_back: 0,
                    created_at: to_db(now),
                },
            )
            .await?;
            let ids = std::iter::once(payment_id.as_str())
                .chain(paid.payment_refs.iter().map(String::as_str))
                .chain(std::iter::once(paid.session_id));
            pipelined!(conn => add_refs(conn, channel, payment, ids))?;
            if !new {
                return Ok(ignored("payment already granted"));
            }
            let name = plan_name(conn, &order).await?;
            let grant = plan_pack_paid(&Order::try_from(order.clone())?, &payment_id, &name, now)?;
            apply_grant(conn, grant.as_ref(), now).await?;
            Ok(applied(format!(
                "order completed; granted {} credits",
                order.credits
            )))
        }
        OrderType::Subscription => {
            let mut detail = if completed {
                "order completed".to_owned()
            } else {
                format!("order already {}", order.status)
            };
            if let Some(sub_id) = paid.subscription_id {
                match lock_subscription(conn, channel, sub_id).await? {
                    Some(sub) => {
                        let mut update = SubscriptionUpdate::default();
                        update.customer(&Subscription::try_from(sub.clone())?, paid.customer_id);
                        if !update.is_empty() {
                            pipelined!(conn => update_subscription(conn, sub.id, &update, now))?;
                        }
                    }
                    None => {
                        subscription_from_order(
                            conn,
                            channel,
                            &order,
                            sub_id,
                            paid.customer_id,
                            now,
                        )
                        .await?;
                    }
                }
                detail.push_str(&format!("; subscription {sub_id} linked"));
            }
            Ok(applied(detail))
        }
    }
}

async fn checkout_ended(
    conn: &mut Conn,
    channel: Channel,
    (order_id, session_id): (Option<&str>, &str),
    to: OrderStatus,
    trace: &mut Trace,
    now: OffsetDateTime,
) -> Result<EventOutcome, StoreError> {
    let Some(order) = lock_order(conn, channel, order_id, Some(session_id)).await? else {
        return Ok(unmatched(format!(
            "no order {} or session {session_id}",
            order_id.unwrap_or("-")
        )));
    };
    trace.set(&order.app_key, &order.user_id, Some(&order.id));
    let failed = to == OrderStatus::Failed;
    let Some(plan) = plan_checkout_ended(&Order::try_from(order.clone())?, failed) else {
        return Ok(ignored(format!("order is {}", order.status()?)));
    };
    set_order_status(conn, &order.id, plan.status, plan.reason, now).await?;
    if plan.announce_failed {
        order_event(conn, EventType::OrderFailed, &order.id, now).await?;
    }
    Ok(applied(format!("order {}", plan.status)))
}

// ---------------------------------------------------------------------------------
// Subscriptions

/// The subscription known by `provider_id` and its own order on `channel`, both locked, in one
/// statement. PostgreSQL locks a join's rows table by table in the order of the `FROM` list, so
/// the order's lock comes first, as on every other path.
async fn lock_subscription_and_order(
    conn: &mut Conn,
    channel: Channel,
    provider_id: &str,
) -> Result<Option<(OrderRow, SubscriptionRow)>, StoreError> {
    Ok(locked!(
        orders::table
            .inner_join(subscriptions::table.on(subscriptions::order_id.eq(orders::id)))
            .filter(subscriptions::channel.eq(channel.as_str()))
            .filter(subscriptions::provider_subscription_id.eq(provider_id))
            .filter(orders::channel.eq(channel.as_str()))
            .select((OrderRow::as_select(), SubscriptionRow::as_select()))
    )
    .first(conn)
    .await
    .optional()?)
}

/// The order of the subscription known by `provider_id`, locked; the subscription itself is
/// read without a lock (its lock comes after its order's).
async fn lock_subscribed_order(
    conn: &mut Conn,
    channel: Channel,
    provider_id: &str,
) -> Result<Option<OrderRow>, StoreError> {
    let order_id = subscriptions::table
        .filter(subscriptions::channel.eq(channel.as_str()))
        .filter(subscriptions::provider_subscription_id.eq(provider_id))
        .select(subscriptions::order_id);
    Ok(locked!(
        orders::table
            .filter(orders::channel.eq(channel.as_str()))
            .filter(orders::id.eq_any(order_id))
            .select(OrderRow::as_select())
    )
    .first(conn)
    .await
    .optional()?)
}

async fn lock_subscription(
    conn: &mut Conn,
    channel: Channel,
    provider_id: &str,
) -> Result<Option<SubscriptionRow>, StoreError> {
    Ok(locked!(
        subscriptions::table
            .filter(subscriptions::channel.eq(channel.as_str()))
            .filter(subscriptions::provider_subscription_id.eq(provider_id))
            .select(SubscriptionRow::as_select())
    )
    .first(conn)
    .await
    .optional()?)
}

/// Writes the update; answers the subscription as it now is.
async fn update_subscription(
    conn: &mut Pipe<'_>,
    id: i64,
    update: &SubscriptionUpdate,
    now: OffsetDateTime,
) -> QueryResult<SubscriptionRow> {
    cached(
        diesel::update(subscriptions::table.find(id))
            .set(SubscriptionChanges::from_update(update, now))
            .returning(SubscriptionRow::as_returning()),
    )
    .get_result(conn)
    .await
}

/// Creates the subscription a subscription order started (unless it exists) and
/// links it to the order. Answers it, locked.
async fn subscription_from_order(
    conn: &mut Conn,
    channel: Channel,
    order: &OrderRow,
    provider_id: &str,
    customer_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<SubscriptionRow, StoreError> {
    let interval = order
        .billing_interval
        .as_deref()
        .ok_or(StoreError::Invariant(
            "subscription order without an interval",
        ))?;
    let at = to_db(now);
    let inserted = diesel::insert_into(subscriptions::table)
        .values((
            subscriptions::app_key.eq(&order.app_key),
            subscriptions::user_id.eq(&order.user_id),
            subscriptions::plan_id.eq(&order.plan_id),
            subscriptions::billing_interval.eq(interval),
            subscriptions::channel.eq(channel.as_str()),
            subscriptions::order_id.eq(&order.id),
            subscriptions::provider_subscription_id.eq(provider_id),
            subscriptions::provider_customer_id
                .eq(customer_id.or(order.provider_customer_id.as_deref())),
            subscriptions::status.eq(SubscriptionStatus::Active.as_str()),
            subscriptions::cancel_at_period_end.eq(false),
            subscriptions::credits_per_period.eq(order.credits),
            subscriptions::credits_expire.eq(order.credits_expire_days.is_some()),
            subscriptions::created_at.eq(at),
            subscriptions::updated_at.eq(at),
        ))
        .on_conflict((
            subscriptions::channel,
            subscriptions::provider_subscription_id,
        ))
        .do_nothing()
        .execute(conn)
        .await?;
    let created = inserted > 0;
    if order.provider_subscription_id.is_none() {
        cached(diesel::update(orders::table.find(&order.id)).set((
            orders::provider_subscription_id.eq(provider_id),
            orders::updated_at.eq(at),
        )))
        .execute(conn)
        .await?;
    }
    let sub = lock_subscription(conn, channel, provider_id)
        .await?
        .ok_or(StoreError::Invariant("subscription vanished after insert"))?;
    if created {
        let extra = SubscriptionExtra::default();
        let row = sub.clone();
        subscription_event(conn, EventType::SubscriptionCreated, row, extra, now).await?;
    }
    Ok(sub)
}

/// The subscription an event names by `(provider id, order id, customer id)`, locked after its
/// order and written into the trace; created from the order the metadata names when the
/// provider id is new. `Err` is the outcome when neither is known.
async fn resolve_subscription(
    conn: &mut Conn,
    channel: Channel,
    (provider_id, order_id, customer_id): (&str, Option<&str>, Option<&str>),
    trace: &mut Trace,
    now: OffsetDateTime,
) -> Result<Result<(SubscriptionRow, Option<OrderRow>), EventOutcome>, StoreError> {
    let found = find_subscription(conn, channel, provider_id, order_id, customer_id, now).await?;
    if let Ok((sub, _)) = &found {
        trace.set(&sub.app_key, &sub.user_id, Some(&sub.order_id));
    }
    Ok(found)
}

/// [`resolve_subscription`] without the trace.
async fn find_subscription(
    conn: &mut Conn,
    channel: Channel,
    provider_id: &str,
    order_id: Option<&str>,
    customer_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<Result<(SubscriptionRow, Option<OrderRow>), EventOutcome>, StoreError> {
    // A known subscription with its own order: one round trip.
    if let Some((order, sub)) = lock_subscription_and_order(conn, channel, provider_id).await? {
        return Ok(Ok((sub, Some(order))));
    }
    // Else a known subscription's own order (one committed meanwhile), else the one the metadata
    // names.
    let order = match lock_subscribed_order(conn, channel, provider_id).await? {
        Some(order) => Some(order),
        None => lock_order(conn, channel, order_id, None).await?,
    };
    if let Some(sub) = lock_subscription(conn, channel, provider_id).await? {
        // Its own order, whatever the metadata says.
        let order = order.filter(|o| o.id == sub.order_id);
        return Ok(Ok((sub, order)));
    }
    let Some(order) = order else {
        return Ok(Err(unmatched(format!(
            "no subscription {provider_id} and no order {}",
            order_id.unwrap_or("-")
        ))));
    };
    if order.order_type()? != OrderType::Subscription {
        return Ok(Err(unmatched(format!(
            "order {} is not a subscription order",
            order.id
        ))));
    }
    let sub = subscription_from_order(conn, channel, &order, provider_id, customer_id, now).await?;
    Ok(Ok((sub, Some(order))))
}

/// Applies a paid period. Its outcome is known once the payment is recorded: it is written with
/// the payment's references and the subscription's new period, in one round trip.
async fn period_paid(
    conn: &mut Conn,
    event: &PaymentEvent,
    trace: &mut Trace,
    now: OffsetDateTime,
) -> Result<EventOutcome, StoreError> {
    let (channel, kind) = (event.channel, &event.kind);
    let EventKind::PeriodPaid {
        payment_id,
        subscription_id,
        customer_id,
        order_id,
        period_start,
        period_end,
        amount_paid_minor,
        payment_refs,
        plan_change,
    } = kind
    else {
        return Err(StoreError::Invariant(
            "period_paid called with another event",
        ));
    };
    let customer_id = customer_id.as_deref();
    let refs = (subscription_id.as_str(), order_id.as_deref(), customer_id);
    let (sub, order) = match resolve_subscription(conn, channel, refs, trace, now).await? {
        Ok(found) => found,
        Err(outcome) => return Ok(outcome),
    };
    if let Some(order) = &order {
        let link = Paid {
            order_id: Some(&order.id),
            session_id: "",
            customer_id,
            subscription_id: Some(subscription_id),
            amount_paid_minor: Some(*amount_paid_minor),
            payment_refs,
        };
        update_order(conn, order, &link, true, now).await?;
    }
    // The customer, the payments so far (the subscription's first payment is the order's:
    // refunding it refunds the order) and the plan billed, in one round trip; that one read of
    // the plan serves the trial and, when the order is for the same plan, its name.
    let user = (sub.app_key.as_str(), sub.user_id.as_str());
    let key = PlanKey {
        app: sub.app_key.clone(),
        id: sub.plan_id.clone(),
    };
    let ((), earlier, billed): ((), i64, Option<PlanRow>) = pipelined!(conn =>
        remember_customer(conn, user, channel, customer_id, now),
        payments::table
            .filter(payments::subscription_id.eq(sub.id))
            .count()
            .get_result(conn),
        super::catalog::plan_row(conn, &key),
    )?;
    let billed = billed.map(Plan::try_from).transpose()?;
    let name = match &order {
        Some(order) if order.plan_id == sub.plan_id => billed
            .as_ref()
            .map_or_else(|| order.plan_id.clone(), |p| p.name.clone()),
        Some(order) => plan_name(conn, order).await?,
        None => sub.plan_id.clone(),
    };
    let trial = billed.and_then(trial_of);
    let news = PeriodNews {
        payment_id,
        period: (*period_start, *period_end),
        customer_id,
        amount_paid_minor: *amount_paid_minor,
        plan_change: *plan_change,
    };
    let plan = plan_period_paid(
        &Subscription::try_from(sub.clone())?,
        earlier,
        channel,
        &news,
        &name,
        trial.as_ref(),
        now,
    )?;
    let (payment, new) = insert_payment(
        conn,
        NewPayment {
            channel: channel.as_str(),
            payment_id,
            app_key: &sub.app_key,
            user_id: &sub.user_id,
            // The subscription's first payment is the order's.
            order_id: plan.first_payment.then_some(sub.order_id.as_str()),
            subscription_id: Some(sub.id),
            credits_granted: plan.credits,
            amount_paid_minor: (*amount_paid_minor).max(0),
            refunded_minor: 0,
            clawed_back: 0,
            created_at: to_db(now),
        },
    )
    .await?;
    // The payment's unique key decides: only a payment seen for the first time grants.
    let outcome = if !new {
        ignored("payment already granted")
    } else if *plan_change {
        applied("plan change's proration paid; no period, no credits")
    } else {
        applied(format!("period paid; granted {} credits", plan.credits))
    };
    // The payment's references, the subscription's new period and the event's outcome: one round
    // trip.
    let ids = std::iter::once(payment_id.as_str()).chain(payment_refs.iter().map(String::as_str));
    let ((), updated, ()) = pipelined!(conn =>
        add_refs(conn, channel, payment, ids),
        update_subscription(conn, sub.id, &plan.update, now),
        record_outcome(conn, (channel, &event.id), &outcome, trace),
    )?;
    trace.recorded = true;
    if !new {
        return Ok(outcome);
    }
    // `subscription.renewed` goes to the outbox with the grant's own events, in its last round
    // trip.
    let mut announce = Vec::new();
    if plan.renewed {
        let extra = SubscriptionExtra {
            payment_id: Some(payment_id.clone()),
            credits_granted: Some(sub.credits_per_period),
            ..SubscriptionExtra::default()
        };
        let renewed = EventType::SubscriptionRenewed;
        announce.push(subscription_event_row(renewed, updated, extra, now));
    }
    match plan.grant.as_ref() {
        Some(grant) => {
            ledger::apply_announcing(conn, grant, &grant.request_hash(), announce, now).await?;
        }
        None => pipelined!(conn => outbox::insert_events(conn, &announce))?,
    }
    Ok(outcome)
}

async fn subscription_changed(
    conn: &mut Conn,
    channel: Channel,
    event: &PaymentEvent,
    trace: &mut Trace,
    now: OffsetDateTime,
) -> Result<EventOutcome, StoreError> {
    let EventKind::SubscriptionChanged {
        subscription_id,
        customer_id,
        order_id,
        status,
        cancel_at_period_end,
        period_start,
        period_end,
        price_ref,
    } = &event.kind
    else {
        return Err(StoreError::Invariant(
            "subscription_changed called with another event",
        ));
    };
    let customer_id = customer_id.as_deref();
    let refs = (subscription_id.as_str(), order_id.as_deref(), customer_id);
    let (sub, _order) = match resolve_subscription(conn, channel, refs, trace, now).await? {
        Ok(found) => found,
        Err(outcome) => return Ok(outcome),
    };
    let switch = match price_ref {
        Some(price_ref) => billed_plan(conn, &sub.app_key, channel, price_ref).await?,
        None => None,
    };
    let event_key = format!("{channel}:{}", event.id);
    let trial = trial_terms(conn, &sub.app_key, &sub.plan_id).await?;
    let news = SubscriptionNews {
        status: *status,
        cancel_at_period_end: *cancel_at_period_end,
        period_start: *period_start,
        period_end: *period_end,
        customer_id,
        changed_at: event.created_at,
        plan: switch.as_ref(),
        event_key: &event_key,
        trial: trial.as_ref(),
        channel: Some(channel),
    };
    let last_change = sub.status_changed_at.map(from_db);
    let Some(plan) = plan_subscription_change(
        &Subscription::try_from(sub.clone())?,
        last_change,
        &news,
        now,
    )?
    else {
        return Ok(ignored("older than the last applied change"));
    };
    let user = (sub.app_key.as_str(), sub.user_id.as_str());
    let ((), updated) = pipelined!(conn =>
        remember_customer(conn, user, channel, customer_id, now),
        update_subscription(conn, sub.id, &plan.update, now),
    )?;
    for grant in &plan.grants {
        apply_grant(conn, Some(grant), now).await?;
    }
    if let Some(notice) = plan.notice {
        let event_type = match notice {
            SubscriptionNotice::Canceled => EventType::SubscriptionCanceled,
            SubscriptionNotice::Updated => EventType::SubscriptionUpdated,
            SubscriptionNotice::PastDue => EventType::SubscriptionPastDue,
        };
        let extra = SubscriptionExtra {
            previous_status: Some(sub.status.clone()),
            ..SubscriptionExtra::default()
        };
        subscription_event(conn, event_type, updated, extra, now).await?;
    }
    Ok(applied(plan.detail))
}

/// The free trial of the subscription's plan, if it has one.
async fn trial_terms(
    conn: &mut Conn,
    app: &str,
    plan_id: &str,
) -> Result<Option<TrialTerms>, StoreError> {
    Ok(subscribed_plan(conn, app, plan_id)
        .await?
        .and_then(trial_of))
}

/// The app's plan a subscription names, if it still exists.
async fn subscribed_plan(
    conn: &mut Conn,
    app: &str,
    plan_id: &str,
) -> Result<Option<Plan>, StoreError> {
    let key = PlanKey {
        app: app.to_owned(),
        id: plan_id.to_owned(),
    };
    super::catalog::plan(conn, &key).await
}

/// The plan's free trial, if it has one.
fn trial_of(plan: Plan) -> Option<TrialTerms> {
    plan.trial_days.map(|days| TrialTerms {
        days,
        credits: plan.trial_credits,
        plan_name: plan.name,
    })
}

/// The app's plan a provider price names, as the plan a subscription is billed for now.
async fn billed_plan(
    conn: &mut Conn,
    app: &str,
    channel: Channel,
    price_ref: &str,
) -> Result<Option<PlanSwitch>, StoreError> {
    let plans = super::catalog::plans(
        conn,
        &PlanQuery {
            app: app.to_owned(),
            active_only: false,
        },
    )
    .await?;
    Ok(
        plan_for_price_ref(&plans, channel, price_ref).map(|(plan, interval)| PlanSwitch {
            plan_id: plan.id.clone(),
            plan_name: plan.name.clone(),
            interval,
            credits_per_period: plan.credits_included,
            credits_expire: plan.credits_expire_days.is_some(),
        }),
    )
}

// ---------------------------------------------------------------------------------
// Payments, refunds, credits

/// Records a payment once per (channel, payment id): answers its id and whether it
/// is new (only a new payment grants).
async fn insert_payment(conn: &mut Conn, new: NewPayment<'_>) -> Result<(i64, bool), StoreError> {
    let inserted: Option<i64> = cached(
        diesel::insert_into(payments::table)
            .values(&new)
            .on_conflict((payments::channel, payments::payment_id))
            .do_nothing()
            .returning(payments::id),
    )
    .get_result(conn)
    .await
    .optional()?;
    if let Some(id) = inserted {
        return Ok((id, true));
    }
    let id = payments::table
        .filter(payments::channel.eq(new.channel))
        .filter(payments::payment_id.eq(new.payment_id))
        .select(payments::id)
        .first(conn)
        .await?;
    Ok((id, false))
}

/// Remembers every id a refund may name the payment by (the first payment named so
/// keeps an id).
async fn add_refs<'a>(
    conn: &mut Pipe<'_>,
    channel: Channel,
    payment: i64,
    ids: impl IntoIterator<Item = &'a str>,
) -> QueryResult<()> {
    for id in refs(ids) {
        diesel::insert_into(payment_refs::table)
            .values((
                payment_refs::channel.eq(channel.as_str()),
                payment_refs::payment_ref.eq(id),
                payment_refs::payment.eq(payment),
            ))
            .on_conflict((payment_refs::channel, payment_refs::payment_ref))
            .do_nothing()
            .execute(conn)
            .await?;
    }
    Ok(())
}

async fn payment_by_refs(
    conn: &mut Conn,
    channel: Channel,
    ids: &[String],
) -> Result<Option<PaymentRow>, StoreError> {
    let ids = refs(ids.iter().map(String::as_str));
    if ids.is_empty() {
        return Ok(None);
    }
    let found: Option<i64> = payment_refs::table
        .filter(payment_refs::channel.eq(channel.as_str()))
        .filter(payment_refs::payment_ref.eq_any(ids))
        .order(payment_refs::payment)
        .select(payment_refs::payment)
        .first(conn)
        .await
        .optional()?;
    let Some(id) = found else {
        return Ok(None);
    };
    Ok(Some(
        payments::table
            .find(id)
            .select(PaymentRow::as_select())
            .first(conn)
            .await?,
    ))
}

/// Applies a planned ledger movement (a grant or a clawback) in the event's transaction.
async fn apply_grant(
    conn: &mut Conn,
    movement: Option<&Movement>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    if let Some(movement) = movement {
        ledger::apply(conn, movement, &movement.request_hash(), now).await?;
    }
    Ok(())
}

async fn refunded(
    conn: &mut Conn,
    channel: Channel,
    (refund_key, ids): (&str, &[String]),
    report: RefundReport,
    trace: &mut Trace,
    now: OffsetDateTime,
) -> Result<EventOutcome, StoreError> {
    let Some(known) = payment_by_refs(conn, channel, ids).await? else {
        return Ok(unmatched(format!("no payment known as {}", ids.join(", "))));
    };
    trace.set(&known.app_key, &known.user_id, known.order_id.as_deref());
    let order = match &known.order_id {
        Some(id) => lock_order(conn, channel, Some(id), None).await?,
        None => None,
    };
    let payment: PaymentRow = locked!(
        payments::table
            .find(known.id)
            .select(PaymentRow::as_select())
    )
    .first(conn)
    .await?;
    let order_status = order.as_ref().map(OrderRow::status).transpose()?;
    let plan = plan_refund(&payment.facts(), channel, refund_key, report, order_status)?;
    let (total, credits) = (plan.refunded_total, plan.credits);
    let inserted = diesel::insert_into(refunds::table)
        .values((
            refunds::channel.eq(channel.as_str()),
            refunds::refund_key.eq(refund_key),
            refunds::payment.eq(payment.id),
            refunds::amount_minor.eq(plan.amount_minor),
            refunds::credits.eq(credits),
            refunds::created_at.eq(to_db(now)),
        ))
        .on_conflict((refunds::channel, refunds::refund_key))
        .do_nothing()
        .execute(conn)
        .await?;
    if inserted == 0 {
        return Ok(ignored("refund already applied"));
    }
    diesel::update(payments::table.find(payment.id))
        .set((
            payments::refunded_minor.eq(total),
            payments::clawed_back.eq(payments::clawed_back + credits),
        ))
        .execute(conn)
        .await?;
    apply_grant(conn, plan.clawback.as_ref(), now).await?;
    let payload = Payload::OrderRefunded(OrderRefunded {
        order_id: payment.order_id.clone(),
        payment_id: payment.payment_id.clone(),
        channel: channel.as_str().to_owned(),
        refunded_minor: plan.amount_minor,
        refunded_total_minor: total,
        amount_paid_minor: payment.amount_paid_minor,
        credits_clawed_back: credits,
    });
    outbox::emit(
        conn,
        &payload,
        (&payment.app_key, Some(&payment.user_id)),
        now,
    )
    .await?;
    if let (Some(order), true) = (order, plan.refund_order) {
        set_order_status(conn, &order.id, OrderStatus::Refunded, None, now).await?;
    }
    Ok(applied(format!(
        "clawed back {credits} credits ({total} of {} refunded)",
        payment.amount_paid_minor
    )))
}
