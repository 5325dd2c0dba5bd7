//! [`WebhookRepository`] on the pools: the same transaction macros as the ledger's repository,
//! over the outbox queries (see `queries/outbox.rs`).

use async_trait::async_trait;
use tally_webhooks::{
    AttemptResult, ClaimedDelivery, Delivery, DeliveryQuery, Endpoint, EndpointChanges,
    NewEndpoint, RepoError, WebhookRepository,
};
use time::OffsetDateTime;

use crate::repo::{read, write_tx};
use crate::{Store, StoreError, error_chain};

fn logged(e: StoreError) -> RepoError {
    tracing::error!(error = %error_chain(&e), "webhook storage operation failed");
    RepoError::storage(e)
}

#[async_trait]
impl WebhookRepository for Store {
    async fn create_endpoint(&self, new: NewEndpoint) -> Result<Endpoint, RepoError> {
        self.run(move |store| async move {
            let new = &new;
            write_tx!(store, outbox, |conn, ops| ops::create_endpoint(conn, new)
                .await)
        })
        .await
        .map_err(logged)
    }

    async fn endpoints(&self, app: &str) -> Result<Vec<Endpoint>, RepoError> {
        self.run_read(async { read!(self, outbox, |conn, ops| ops::endpoints(conn, app).await) })
            .await
            .map_err(logged)
    }

    async fn endpoint(&self, app: &str, id: &str) -> Result<Option<Endpoint>, RepoError> {
        self.run_read(async { read!(self, outbox, |conn, ops| ops::endpoint(conn, app, id).await) })
            .await
            .map_err(logged)
    }

    async fn update_endpoint(
        &self,
        app: &str,
        id: &str,
        changes: EndpointChanges,
        now: OffsetDateTime,
    ) -> Result<Option<Endpoint>, RepoError> {
        let (app, id) = (app.to_owned(), id.to_owned());
        self.run(move |store| async move {
            let (key, changes) = ((app.as_str(), id.as_str()), &changes);
            write_tx!(store, outbox, |conn, ops| ops::update_endpoint(
                conn, key, changes, now
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn delete_endpoint(&self, app: &str, id: &str) -> Result<bool, RepoError> {
        let (app, id) = (app.to_owned(), id.to_owned());
        self.run(move |store| async move {
            let (app, id) = (&app, &id);
            write_tx!(store, outbox, |conn, ops| ops::delete_endpoint(
                conn, app, id
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, RepoError> {
        self.run_read(async { read!(self, outbox, |conn, ops| ops::deliveries(conn, query).await) })
            .await
            .map_err(logged)
    }

    async fn delivery(&self, app: &str, id: i64) -> Result<Option<Delivery>, RepoError> {
        self.run_read(async { read!(self, outbox, |conn, ops| ops::delivery(conn, app, id).await) })
            .await
            .map_err(logged)
    }

    async fn retry_delivery(
        &self,
        app: &str,
        id: i64,
        now: OffsetDateTime,
    ) -> Result<Option<Delivery>, RepoError> {
        let app = app.to_owned();
        self.run(move |store| async move {
            let app = &app;
            write_tx!(store, outbox, |conn, ops| ops::retry_delivery(
                conn, app, id, now
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn low_balance_threshold(&self, app: &str) -> Result<Option<i64>, RepoError> {
        self.run_read(async {
            read!(self, outbox, |conn, ops| ops::low_balance_threshold(
                conn, app
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn set_low_balance_threshold(
        &self,
        app: &str,
        threshold: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<(), RepoError> {
        let app = app.to_owned();
        self.run(move |store| async move {
            let app = &app;
            write_tx!(store, outbox, |conn, ops| ops::set_low_balance_threshold(
                conn, app, threshold, now
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn has_work(&self, now: OffsetDateTime) -> Result<bool, RepoError> {
        self.run_read(async { read!(self, outbox, |conn, ops| ops::has_work(conn, now).await) })
            .await
            .map_err(logged)
    }

    async fn fan_out(&self, now: OffsetDateTime, limit: i64) -> Result<usize, RepoError> {
        self.run(move |store| async move {
            write_tx!(store, outbox, |conn, ops| ops::fan_out(conn, now, limit)
                .await)
        })
        .await
        .map_err(logged)
    }

    async fn claim(
        &self,
        now: OffsetDateTime,
        lease: time::Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, RepoError> {
        self.run(move |store| async move {
            write_tx!(store, outbox, |conn, ops| ops::claim(
                conn, now, lease, limit
            )
            .await)
        })
        .await
        .map_err(logged)
    }

    async fn record_attempt(&self, result: AttemptResult) -> Result<(), RepoError> {
        self.run(move |store| async move {
            let result = &result;
            write_tx!(store, outbox, |conn, ops| ops::record_attempt(conn, result)
                .await)
        })
        .await
        .map_err(logged)
    }
}
