//! [`CheckoutRepository`] on the pools: checkout's queries (see `queries/checkout.rs`), run the
//! way `exec.rs` says.

use async_trait::async_trait;
use tally_checkout::plan::RecordedPayment;
use tally_checkout::{
    AppOrderQuery, AppSubscriptionQuery, BillingEvent, Channel, CheckoutError, CheckoutRepository,
    EventOutcome, EventQuery, NewOrder, Order, OrderQuery, PaymentEvent, SessionAttached,
    Subscription,
};
use time::OffsetDateTime;

use std::sync::Arc;

use crate::Store;
use crate::exec::{exec, retry_race};

#[async_trait]
impl CheckoutRepository for Store {
    async fn insert_order(&self, order: NewOrder) -> Result<(Order, String), CheckoutError> {
        exec!(self, Write, checkout, |conn, ops| ops::insert_order(
            conn, &order
        )
        .await)
        .map_err(Into::into)
    }

    async fn attach_session(&self, session: SessionAttached) -> Result<Order, CheckoutError> {
        exec!(self, Write, checkout, |conn, ops| ops::attach_session(
            conn, &session
        )
        .await)
        .map_err(Into::into)
    }

    async fn fail_order(
        &self,
        order_id: String,
        reason: String,
        now: OffsetDateTime,
    ) -> Result<Order, CheckoutError> {
        exec!(self, Write, checkout, |conn, ops| ops::fail_order(
            conn, &order_id, &reason, now
        )
        .await)
        .map_err(Into::into)
    }

    async fn order(&self, id: String) -> Result<Option<Order>, CheckoutError> {
        exec!(self, ShortRead, checkout, |conn, ops| ops::order(conn, &id)
            .await)
        .map_err(Into::into)
    }

    async fn orders(&self, query: OrderQuery) -> Result<Vec<Order>, CheckoutError> {
        exec!(self, ShortRead, checkout, |conn, ops| ops::orders(
            conn, &query
        )
        .await)
        .map_err(Into::into)
    }

    async fn subscription(
        &self,
        app: String,
        user: String,
    ) -> Result<Option<Subscription>, CheckoutError> {
        exec!(self, ShortRead, checkout, |conn, ops| ops::subscription(
            conn, &app, &user
        )
        .await)
        .map_err(Into::into)
    }

    async fn customer(
        &self,
        app: String,
        user: String,
        channel: Channel,
    ) -> Result<Option<String>, CheckoutError> {
        exec!(self, ShortRead, checkout, |conn, ops| ops::customer(
            conn, &app, &user, channel
        )
        .await)
        .map_err(Into::into)
    }

    async fn provider_coupon(
        &self,
        app: String,
        code: String,
        channel: Channel,
        price_ref: String,
    ) -> Result<Option<String>, CheckoutError> {
        exec!(self, ShortRead, checkout, |conn, ops| ops::provider_coupon(
            conn, &app, &code, channel, &price_ref
        )
        .await)
        .map_err(Into::into)
    }

    async fn put_provider_coupon(
        &self,
        app: String,
        code: String,
        channel: Channel,
        price_ref: String,
        provider_id: String,
        now: OffsetDateTime,
    ) -> Result<String, CheckoutError> {
        exec!(self, Write, checkout, |conn, ops| {
            let key = (app.as_str(), code.as_str(), channel, price_ref.as_str());
            ops::put_provider_coupon(conn, key, &provider_id, now).await
        })
        .map_err(Into::into)
    }

    async fn apply_event(
        &self,
        event: PaymentEvent,
        payload: String,
        now: OffsetDateTime,
    ) -> Result<EventOutcome, CheckoutError> {
        // The whole event is retried, from its own insert.
        let (event, payload) = (Arc::new(event), Arc::<str>::from(payload));
        retry_race(|| {
            let (event, payload) = (event.clone(), payload.clone());
            async move {
                exec!(self, Write, checkout, |conn, ops| {
                    ops::apply_event(conn, &event, &payload, now).await
                })
            }
        })
        .await
        .map_err(Into::into)
    }

    async fn events(&self, query: EventQuery) -> Result<Vec<BillingEvent>, CheckoutError> {
        exec!(self, Read, checkout, |conn, ops| ops::events(conn, &query)
            .await)
        .map_err(Into::into)
    }

    async fn app_orders(&self, query: AppOrderQuery) -> Result<Vec<Order>, CheckoutError> {
        exec!(self, Read, checkout, |conn, ops| ops::app_orders(
            conn, &query
        )
        .await)
        .map_err(Into::into)
    }

    async fn order_events(
        &self,
        app: String,
        order_id: String,
    ) -> Result<Vec<BillingEvent>, CheckoutError> {
        exec!(self, ShortRead, checkout, |conn, ops| ops::order_events(
            conn, &app, &order_id
        )
        .await)
        .map_err(Into::into)
    }

    async fn app_subscriptions(
        &self,
        query: AppSubscriptionQuery,
    ) -> Result<Vec<Subscription>, CheckoutError> {
        exec!(self, Read, checkout, |conn, ops| ops::app_subscriptions(
            conn, &query
        )
        .await)
        .map_err(Into::into)
    }

    async fn order_payment(
        &self,
        app: String,
        order_id: String,
    ) -> Result<Option<RecordedPayment>, CheckoutError> {
        exec!(self, ShortRead, checkout, |conn, ops| {
            ops::order_payment(conn, &app, &order_id).await
        })
        .map_err(Into::into)
    }

    async fn app_subscription(
        &self,
        app: String,
        id: i64,
    ) -> Result<Option<Subscription>, CheckoutError> {
        exec!(self, ShortRead, checkout, |conn, ops| {
            ops::app_subscription(conn, &app, id).await
        })
        .map_err(Into::into)
    }
}
