//! [`CheckoutRepository`] on the pools: the same transaction macros as the ledger's repository,
//! over checkout's queries (see `queries/checkout.rs`). Writes run as one operation on a
//! blocking thread on SQLite (like the ledger's), short reads inline.

use async_trait::async_trait;
use tally_checkout::{
    AppOrderQuery, AppSubscriptionQuery, BillingEvent, Channel, CheckoutError, CheckoutRepository,
    EventOutcome, EventQuery, NewOrder, Order, OrderQuery, PaymentEvent, SessionAttached,
    Subscription,
};
use time::OffsetDateTime;

use crate::repo::{read, write_tx};
use crate::{Store, StoreError, error_chain};

fn logged(e: StoreError) -> CheckoutError {
    if !matches!(e, StoreError::Checkout(_)) {
        tracing::error!(error = %error_chain(&e), "checkout storage operation failed");
    }
    e.into()
}

#[async_trait]
impl CheckoutRepository for Store {
    async fn insert_order(&self, order: NewOrder) -> Result<(Order, String), CheckoutError> {
        self.run(move |store| async move {
            let order = &order;
            write_tx!(store, checkout, |conn, ops| ops::insert_order(conn, order)
                .await)
        })
        .await
        .map_err(logged)
    }

    async fn attach_session(&self, session: SessionAttached) -> Result<Order, CheckoutError> {
        self.run(move |store| async move {
            let session = &session;
            write_tx!(store, checkout, |conn, ops| ops::attach_session(
                conn, session
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn fail_order(
        &self,
        order_id: String,
        reason: String,
        now: OffsetDateTime,
    ) -> Result<Order, CheckoutError> {
        self.run(move |store| async move {
            let (order_id, reason) = (&order_id, &reason);
            write_tx!(store, checkout, |conn, ops| ops::fail_order(
                conn, order_id, reason, now
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn order(&self, id: String) -> Result<Option<Order>, CheckoutError> {
        let id = &id;
        self.run_read(async { read!(self, checkout, |conn, ops| ops::order(conn, id).await) })
            .await
            .map_err(logged)
    }

    async fn orders(&self, query: OrderQuery) -> Result<Vec<Order>, CheckoutError> {
        let query = &query;
        self.run_read(async { read!(self, checkout, |conn, ops| ops::orders(conn, query).await) })
            .await
            .map_err(logged)
    }

    async fn subscription(
        &self,
        app: String,
        user: String,
    ) -> Result<Option<Subscription>, CheckoutError> {
        let (app, user) = (&app, &user);
        self.run_read(async {
            read!(self, checkout, |conn, ops| ops::subscription(
                conn, app, user
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn customer(
        &self,
        app: String,
        user: String,
        channel: Channel,
    ) -> Result<Option<String>, CheckoutError> {
        let (app, user) = (&app, &user);
        self.run_read(async {
            read!(self, checkout, |conn, ops| ops::customer(
                conn, app, user, channel
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn provider_coupon(
        &self,
        app: String,
        code: String,
        channel: Channel,
        price_ref: String,
    ) -> Result<Option<String>, CheckoutError> {
        let (app, code, price_ref) = (&app, &code, &price_ref);
        self.run_read(async {
            read!(self, checkout, |conn, ops| ops::provider_coupon(
                conn, app, code, channel, price_ref
            )
            .await)
        })
        .await
        .map_err(logged)
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
        self.run(move |store| async move {
            let key = (app.as_str(), code.as_str(), channel, price_ref.as_str());
            let provider_id = &provider_id;
            write_tx!(store, checkout, |conn, ops| ops::put_provider_coupon(
                conn,
                key,
                provider_id,
                now
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn apply_event(
        &self,
        event: PaymentEvent,
        payload: String,
        now: OffsetDateTime,
    ) -> Result<EventOutcome, CheckoutError> {
        self.run(move |store| async move {
            let (event, payload) = (&event, &payload);
            match write_tx!(store, checkout, |conn, ops| ops::apply_event(
                conn, event, payload, now
            )
            .await)
            {
                // The ledger's account lock makes this rare (two first movements of a new
                // account at once); the whole event is retried, from its own insert.
                Err(StoreError::IdempotencyRace) => {
                    write_tx!(store, checkout, |conn, ops| ops::apply_event(
                        conn, event, payload, now
                    )
                    .await)
                }
                other => other,
            }
        })
        .await
        .map_err(logged)
    }

    async fn events(&self, query: EventQuery) -> Result<Vec<BillingEvent>, CheckoutError> {
        self.run(move |store| async move {
            read!(store, checkout, |conn, ops| ops::events(conn, &query).await)
        })
        .await
        .map_err(logged)
    }

    async fn app_orders(&self, query: AppOrderQuery) -> Result<Vec<Order>, CheckoutError> {
        self.run(move |store| async move {
            read!(store, checkout, |conn, ops| ops::app_orders(conn, &query)
                .await)
        })
        .await
        .map_err(logged)
    }

    async fn order_events(
        &self,
        app: String,
        order_id: String,
    ) -> Result<Vec<BillingEvent>, CheckoutError> {
        self.run_read(async {
            read!(self, checkout, |conn, ops| ops::order_events(
                conn, &app, &order_id
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn app_subscriptions(
        &self,
        query: AppSubscriptionQuery,
    ) -> Result<Vec<Subscription>, CheckoutError> {
        self.run(move |store| async move {
            read!(store, checkout, |conn, ops| ops::app_subscriptions(
                conn, &query
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn app_subscription(
        &self,
        app: String,
        id: i64,
    ) -> Result<Option<Subscription>, CheckoutError> {
        self.run_read(async {
            read!(self, checkout, |conn, ops| ops::app_subscription(
                conn, &app, id
            )
            .await)
        })
        .await
        .map_err(logged)
    }
}
