//! Outbound webhooks in the database: the rows and conversions that both backends' outbox
//! queries share (the queries are in `queries/outbox.rs`).

use diesel::prelude::*;
use tally_webhooks::{Endpoint, EventType};
use time::PrimitiveDateTime;

use crate::StoreError;
use crate::rows::from_db;
use crate::schema::{webhook_attempts, webhook_deliveries, webhook_endpoints};

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = webhook_endpoints)]
pub(crate) struct EndpointRow {
    pub id: String,
    pub app_key: String,
    pub url: String,
    pub description: String,
    pub event_types: String,
    pub enabled: bool,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_expires_at: Option<PrimitiveDateTime>,
    pub failing_since: Option<PrimitiveDateTime>,
    pub disabled_reason: Option<String>,
    pub created_at: PrimitiveDateTime,
    pub updated_at: PrimitiveDateTime,
}

impl EndpointRow {
    pub(crate) fn types(&self) -> Vec<EventType> {
        self.event_types
            .split(',')
            .filter_map(EventType::parse)
            .collect()
    }

    pub(crate) fn subscribes(&self, event_type: &str) -> bool {
        self.event_types.split(',').any(|t| t == event_type)
    }
}

impl From<EndpointRow> for Endpoint {
    fn from(row: EndpointRow) -> Self {
        Endpoint {
            event_types: row.types(),
            id: row.id,
            app: row.app_key,
            url: row.url,
            description: row.description,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            failing_since: row.failing_since.map(from_db),
            previous_secret_expires_at: row.previous_expires_at.map(from_db),
            created_at: from_db(row.created_at),
            updated_at: from_db(row.updated_at),
        }
    }
}

pub(crate) fn join_types(types: &[EventType]) -> String {
    types
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries)]
pub(crate) struct DeliveryRow {
    pub id: i64,
    pub endpoint_id: String,
    pub app_key: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: PrimitiveDateTime,
    pub first_attempt_at: Option<PrimitiveDateTime>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: PrimitiveDateTime,
    pub updated_at: PrimitiveDateTime,
}

impl DeliveryRow {
    pub(crate) fn view(
        self,
        event_id: String,
        event_type: String,
    ) -> Result<tally_webhooks::Delivery, StoreError> {
        let status = tally_webhooks::DeliveryStatus::parse(&self.status)
            .ok_or(StoreError::Invariant("unknown delivery status stored"))?;
        Ok(tally_webhooks::Delivery {
            id: self.id,
            event_id,
            event_type,
            endpoint_id: self.endpoint_id,
            app: self.app_key,
            status,
            attempts: self.attempts,
            next_attempt_at: (status == tally_webhooks::DeliveryStatus::Pending)
                .then(|| from_db(self.next_attempt_at)),
            last_status: self.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: self.last_error,
            created_at: from_db(self.created_at),
            updated_at: from_db(self.updated_at),
            attempt_log: Vec::new(),
        })
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = webhook_attempts)]
pub(crate) struct AttemptRow {
    pub attempted_at: PrimitiveDateTime,
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    pub succeeded: bool,
}

impl From<AttemptRow> for tally_webhooks::Attempt {
    fn from(row: AttemptRow) -> Self {
        tally_webhooks::Attempt {
            attempted_at: from_db(row.attempted_at),
            status_code: row.status_code.and_then(|s| u16::try_from(s).ok()),
            latency_ms: row.latency_ms,
            response_excerpt: row.response_excerpt,
            error: row.error,
            succeeded: row.succeeded,
        }
    }
}
