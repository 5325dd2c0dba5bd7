//! [`WebhookRepository`] on the pools: the outbox queries (see `queries/outbox.rs`), run the way
//! `exec.rs` says.

use async_trait::async_trait;
use tally_webhooks::{
    AttemptResult, Backlog, ClaimedDelivery, Delivery, DeliveryQuery, Endpoint, EndpointChanges,
    NewEndpoint, RepoError, WebhookRepository,
};
use time::OffsetDateTime;

use crate::Store;
use crate::exec::exec;

#[async_trait]
impl WebhookRepository for Store {
    async fn create_endpoint(&self, new: NewEndpoint) -> Result<Endpoint, RepoError> {
        exec!(self, Write, outbox, |conn, ops| ops::create_endpoint(
            conn, &new
        )
        .await)
        .map_err(Into::into)
    }

    async fn endpoints(&self, app: &str) -> Result<Vec<Endpoint>, RepoError> {
        let app = app.to_owned();
        exec!(self, ShortRead, outbox, |conn, ops| ops::endpoints(
            conn, &app
        )
        .await)
        .map_err(Into::into)
    }

    async fn endpoint(&self, app: &str, id: &str) -> Result<Option<Endpoint>, RepoError> {
        let (app, id) = (app.to_owned(), id.to_owned());
        exec!(self, ShortRead, outbox, |conn, ops| ops::endpoint(
            conn, &app, &id
        )
        .await)
        .map_err(Into::into)
    }

    async fn update_endpoint(
        &self,
        app: &str,
        id: &str,
        changes: EndpointChanges,
        now: OffsetDateTime,
    ) -> Result<Option<Endpoint>, RepoError> {
        let (app, id) = (app.to_owned(), id.to_owned());
        exec!(self, Write, outbox, |conn, ops| {
            let key = (app.as_str(), id.as_str());
            ops::update_endpoint(conn, key, &changes, now).await
        })
        .map_err(Into::into)
    }

    async fn delete_endpoint(&self, app: &str, id: &str) -> Result<bool, RepoError> {
        let (app, id) = (app.to_owned(), id.to_owned());
        exec!(self, Write, outbox, |conn, ops| ops::delete_endpoint(
            conn, &app, &id
        )
        .await)
        .map_err(Into::into)
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, RepoError> {
        let query = query.clone();
        exec!(self, ShortRead, outbox, |conn, ops| ops::deliveries(
            conn, &query
        )
        .await)
        .map_err(Into::into)
    }

    async fn delivery(&self, app: &str, id: i64) -> Result<Option<Delivery>, RepoError> {
        let app = app.to_owned();
        exec!(self, ShortRead, outbox, |conn, ops| ops::delivery(
            conn, &app, id
        )
        .await)
        .map_err(Into::into)
    }

    async fn retry_delivery(
        &self,
        app: &str,
        id: i64,
        now: OffsetDateTime,
    ) -> Result<Option<Delivery>, RepoError> {
        let app = app.to_owned();
        exec!(self, Write, outbox, |conn, ops| ops::retry_delivery(
            conn, &app, id, now
        )
        .await)
        .map_err(Into::into)
    }

    async fn low_balance_threshold(&self, app: &str) -> Result<Option<i64>, RepoError> {
        let app = app.to_owned();
        exec!(self, ShortRead, outbox, |conn, ops| {
            ops::low_balance_threshold(conn, &app).await
        })
        .map_err(Into::into)
    }

    async fn set_low_balance_threshold(
        &self,
        app: &str,
        threshold: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<(), RepoError> {
        let app = app.to_owned();
        exec!(self, Write, outbox, |conn, ops| {
            ops::set_low_balance_threshold(conn, &app, threshold, now).await
        })
        .map_err(Into::into)
    }

    async fn has_work(&self, now: OffsetDateTime) -> Result<bool, RepoError> {
        exec!(self, ShortRead, outbox, |conn, ops| ops::has_work(
            conn, now
        )
        .await)
        .map_err(Into::into)
    }

    async fn fan_out(&self, now: OffsetDateTime, limit: i64) -> Result<usize, RepoError> {
        exec!(self, Write, outbox, |conn, ops| ops::fan_out(
            conn, now, limit
        )
        .await)
        .map_err(Into::into)
    }

    async fn claim(
        &self,
        now: OffsetDateTime,
        lease: time::Duration,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, RepoError> {
        exec!(self, Write, outbox, |conn, ops| ops::claim(
            conn, now, lease, limit
        )
        .await)
        .map_err(Into::into)
    }

    async fn record_attempt(&self, result: AttemptResult) -> Result<(), RepoError> {
        exec!(self, Write, outbox, |conn, ops| ops::record_attempt(
            conn, &result
        )
        .await)
        .map_err(Into::into)
    }

    async fn backlog(&self) -> Result<Backlog, RepoError> {
        exec!(self, Read, outbox, |conn, ops| ops::backlog(conn).await).map_err(Into::into)
    }
}
