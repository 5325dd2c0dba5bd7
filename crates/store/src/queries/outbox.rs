//! The outbox's queries: the events the ledger's and checkout's writes add in their own
//! transaction (`emit`, `insert_events`), and the endpoint, fan-out, claim and attempt queries
//! behind [`tally_webhooks::WebhookRepository`]. Claims skip rows another process has locked

//! ([`locked_skip!`]).

use diesel::dsl::exists;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tally_ledger::Transaction;
use tally_ledger::notice::{LedgerNotice, NoticeSettings, plan_notices};
use tally_ledger::plan::Plan;
use tally_webhooks::payload::{
    CreditsExpired, CreditsLow, CreditsMoved, EndpointDisabled, HoldExpired, Payload,
};
use tally_webhooks::{
    AttemptResult, Backlog, ClaimedDelivery, DISABLE_AFTER, Delivery, DeliveryQuery,
    DeliveryStatus, Endpoint, EndpointChanges, EventType, NewEndpoint, OutboundEvent,
};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::StoreError;
use crate::cached::cached;
use crate::outbox::{AttemptRow, DeliveryRow, EndpointRow, join_types};
use crate::predicates::{NewEvent, PendingDelivery};
use crate::rows::{AccountRow, from_db, to_db};
use crate::schema::{
    webhook_attempts, webhook_deliveries, webhook_endpoints, webhook_events, webhook_settings,
};

use super::usage::values_list;
use super::{Conn, Db, Pipe};

/// An event for the outbox, ready to insert ([`insert_events`]).
pub(crate) struct OutboxRow {
    id: String,
    app_key: String,
    user_id: Option<String>,
    event_type: &'static str,
    payload: String,
    created_at: PrimitiveDateTime,
}

impl OutboxRow {
    /// The outbox's row for `payload` about `app` (and `user`), happening `now`.
    pub(crate) fn new(
        payload: &Payload,
        (app, user): (&str, Option<&str>),
        now: OffsetDateTime,
    ) -> Self {
        let event_type = payload.event_type();
        let event = OutboundEvent::new(
            event_type,
            app,
            user.map(str::to_owned),
            now,
            payload.data(),
        );
        Self {
            payload: event.payload(),
            id: event.id,
            app_key: app.to_owned(),
            user_id: user.map(str::to_owned),
            event_type: event_type.as_str(),
            created_at: to_db(now),
        }
    }
}

/// Most events one statement of [`insert_events`] adds (7 parameters each).
const EVENTS_PER_INSERT: usize = 500;

/// Statements of [`insert_events`] adding at most this many events are prepared once per
/// connection (a write announces one to three, more only when many lots expire at once).
const CACHED_EVENTS: usize = 4;

/// Adds an event to the outbox, in the caller's transaction.
pub(crate) async fn emit(
    conn: &mut Conn,
    payload: &Payload,
    who: (&str, Option<&str>),
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let rows = [OutboxRow::new(payload, who, now)];
    pipelined!(conn => insert_events(conn, &rows))?;
    Ok(())
}

/// Adds `rows` to the outbox, in the caller's transaction: one statement (for up to
/// [`EVENTS_PER_INSERT`]), whose text depends only on how many rows it adds; none for no rows.
/// Their order is the order of their sequence numbers.
pub(crate) async fn insert_events(conn: &mut Pipe<'_>, rows: &[OutboxRow]) -> QueryResult<()> {
    use diesel::sql_types::{Bool, Nullable, Text, Timestamp};
    for chunk in rows.chunks(EVENTS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO webhook_events (id, app_key, user_id, event_type, payload, fanned_out, \
             created_at) VALUES {}",
            values_list(chunk.len(), 7)
        );
        let mut query = diesel::sql_query(sql).into_boxed::<Db>();
        for row in chunk {
            query = query
                .bind::<Text, _>(&row.id)
                .bind::<Text, _>(&row.app_key)
                .bind::<Nullable<Text>, _>(row.user_id.as_deref())
                .bind::<Text, _>(row.event_type)
                .bind::<Text, _>(&row.payload)
                .bind::<Bool, _>(false)
                .bind::<Timestamp, _>(row.created_at);
        }
        if chunk.len() <= CACHED_EVENTS {
            cached(query).execute(conn).await?;
        } else {
            query.execute(conn).await?;
        }
    }
    Ok(())
}

/// The app's `credits.low` threshold and whether any enabled endpoint asked for
/// `credits.spent`, read only when `needed` ([`tally_ledger::notice::needs_settings`]: a write
/// lowers the available credits); the defaults otherwise.
pub(crate) async fn app_hooks(
    conn: &mut Pipe<'_>,
    app: &str,
    needed: bool,
) -> QueryResult<NoticeSettings> {
    if !needed {
        return Ok(NoticeSettings::default());
    }
    let threshold = webhook_settings::table
        .filter(webhook_settings::app_key.eq(app))
        .select(webhook_settings::low_balance_threshold)
        .single_value();
    let wants_spent = exists(
        webhook_endpoints::table
            .filter(webhook_endpoints::app_key.eq(app))
            .filter(webhook_endpoints::enabled.eq(true))
            .filter(webhook_endpoints::wants_spent.eq(true)),
    );
    let (low_balance_threshold, wants_spent) = diesel::select((threshold, wants_spent))
        .get_result(conn)
        .await?;
    Ok(NoticeSettings {
        low_balance_threshold,
        wants_spent,
    })
}

/// The events a ledger write announces ([`plan_notices`]), as outbox rows; `before` is the
/// account as it was, `written` the movement's row.
pub(crate) fn ledger_event_rows(
    before: &AccountRow,
    plan: &Plan,
    written: Option<&Transaction>,
    settings: NoticeSettings,
    now: OffsetDateTime,
) -> Vec<OutboxRow> {
    let who = (before.app_key.as_str(), Some(before.user_id.as_str()));
    plan_notices((before.balance, before.held), plan, written, settings)
        .into_iter()
        .map(|notice| OutboxRow::new(&ledger_payload(notice), who, now))
        .collect()
}

/// The wire shape of a ledger notice.
fn ledger_payload(notice: LedgerNotice) -> Payload {
    let moved = |t: Transaction| CreditsMoved {
        transaction_id: t.id.to_string(),
        txn_type: t.txn_type.as_str().to_owned(),
        credits: t.amount.abs(),
        balance_after: t.balance_after,
        description: t.description,
    };
    match notice {
        LedgerNotice::Expired {
            lot_id,
            credits,
            balance_after,
        } => Payload::CreditsExpired(CreditsExpired {
            lot_id: lot_id.map(|id| id.to_string()),
            credits,
            balance_after,
        }),
        LedgerNotice::Granted {
            transaction,
            expires_at,
        } => Payload::granted(moved(transaction), expires_at),
        LedgerNotice::Spent { transaction } => Payload::CreditsSpent(moved(transaction)),
        LedgerNotice::HoldExpired { hold_id } => Payload::HoldExpired(HoldExpired {
            hold_id: hold_id.to_string(),
        }),
        LedgerNotice::Low {
            threshold,
            available_before,
            available_after,
            balance,
        } => Payload::CreditsLow(CreditsLow {
            threshold,
            available_before,
            available_after,
            balance,
        }),
    }
}

// ---------------------------------------------------------------------------------
// Endpoints and settings

pub(crate) async fn create_endpoint(
    conn: &mut Conn,
    new: &NewEndpoint,
) -> Result<Endpoint, StoreError> {
    let at = to_db(new.now);
    let row: EndpointRow = diesel::insert_into(webhook_endpoints::table)
        .values((
            webhook_endpoints::id.eq(&new.id),
            webhook_endpoints::app_key.eq(&new.app),
            webhook_endpoints::url.eq(&new.url),
            webhook_endpoints::description.eq(&new.description),
            webhook_endpoints::event_types.eq(join_types(&new.event_types)),
            webhook_endpoints::wants_spent.eq(new.event_types.contains(&EventType::CreditsSpent)),
            webhook_endpoints::enabled.eq(new.enabled),
            webhook_endpoints::secret.eq(&new.secret),
            webhook_endpoints::created_at.eq(at),
            webhook_endpoints::updated_at.eq(at),
        ))
        .returning(EndpointRow::as_returning())
        .get_result(conn)
        .await?;
    Ok(row.into())
}

pub(crate) async fn endpoints(conn: &mut Conn, app: &str) -> Result<Vec<Endpoint>, StoreError> {
    let rows = webhook_endpoints::table
        .filter(webhook_endpoints::app_key.eq(app))
        .order((webhook_endpoints::created_at, webhook_endpoints::id))
        .select(EndpointRow::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

async fn endpoint_row(
    conn: &mut Conn,
    app: &str,
    id: &str,
) -> Result<Option<EndpointRow>, StoreError> {
    Ok(locked!(
        webhook_endpoints::table
            .filter(webhook_endpoints::app_key.eq(app))
            .filter(webhook_endpoints::id.eq(id))
            .select(EndpointRow::as_select())
    )
    .first(conn)
    .await
    .optional()?)
}

pub(crate) async fn endpoint(
    conn: &mut Conn,
    app: &str,
    id: &str,
) -> Result<Option<Endpoint>, StoreError> {
    Ok(endpoint_row(conn, app, id).await?.map(Into::into))
}

pub(crate) async fn update_endpoint(
    conn: &mut Conn,
    (app, id): (&str, &str),
    changes: &EndpointChanges,
    now: OffsetDateTime,
) -> Result<Option<Endpoint>, StoreError> {
    let Some(row) = endpoint_row(conn, app, id).await? else {
        return Ok(None);
    };
    let at = to_db(now);
    let target = webhook_endpoints::table.find(&row.id);
    if let Some(url) = &changes.url {
        diesel::update(target)
            .set(webhook_endpoints::url.eq(url))
            .execute(conn)
            .await?;
    }
    if let Some(description) = &changes.description {
        diesel::update(target)
            .set(webhook_endpoints::description.eq(description))
            .execute(conn)
            .await?;
    }
    if let Some(types) = &changes.event_types {
        diesel::update(target)
            .set((
                webhook_endpoints::event_types.eq(join_types(types)),
                webhook_endpoints::wants_spent.eq(types.contains(&EventType::CreditsSpent)),
            ))
            .execute(conn)
            .await?;
    }
    match changes.enabled {
        Some(true) if !row.enabled => {
            diesel::update(target)
                .set((
                    webhook_endpoints::enabled.eq(true),
                    webhook_endpoints::failing_since.eq(None::<time::PrimitiveDateTime>),
                    webhook_endpoints::disabled_reason.eq(None::<String>),
                ))
                .execute(conn)
                .await?;
        }
        Some(false) => {
            diesel::update(target)
                .set(webhook_endpoints::enabled.eq(false))
                .execute(conn)
                .await?;
        }
        _ => {}
    }
    if let Some((secret, until)) = &changes.rotate {
        diesel::update(target)
            .set((
                webhook_endpoints::previous_secret.eq(&row.secret),
                webhook_endpoints::previous_expires_at.eq(to_db(*until)),
                webhook_endpoints::secret.eq(secret),
            ))
            .execute(conn)
            .await?;
    }
    let row: EndpointRow = diesel::update(target)
        .set(webhook_endpoints::updated_at.eq(at))
        .returning(EndpointRow::as_returning())
        .get_result(conn)
        .await?;
    Ok(Some(row.into()))
}

pub(crate) async fn delete_endpoint(
    conn: &mut Conn,
    app: &str,
    id: &str,
) -> Result<bool, StoreError> {
    let Some(row) = endpoint_row(conn, app, id).await? else {
        return Ok(false);
    };
    // Its deliveries and their attempts go with it (ON DELETE CASCADE).
    diesel::delete(webhook_endpoints::table.find(&row.id))
        .execute(conn)
        .await?;
    Ok(true)
}

pub(crate) async fn low_balance_threshold(
    conn: &mut Conn,
    app: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(webhook_settings::table
        .find(app)
        .select(webhook_settings::low_balance_threshold)
        .first::<Option<i64>>(conn)
        .await
        .optional()?
        .flatten())
}

pub(crate) async fn set_low_balance_threshold(
    conn: &mut Conn,
    app: &str,
    threshold: Option<i64>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    diesel::insert_into(webhook_settings::table)
        .values((
            webhook_settings::app_key.eq(app),
            webhook_settings::low_balance_threshold.eq(threshold),
            webhook_settings::updated_at.eq(to_db(now)),
        ))
        .on_conflict(webhook_settings::app_key)
        .do_update()
        .set((
            webhook_settings::low_balance_threshold.eq(threshold),
            webhook_settings::updated_at.eq(to_db(now)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Deliveries

pub(crate) async fn deliveries(
    conn: &mut Conn,
    q: &DeliveryQuery,
) -> Result<Vec<Delivery>, StoreError> {
    let mut query = webhook_deliveries::table
        .inner_join(webhook_events::table)
        .filter(webhook_deliveries::app_key.eq(&q.app))
        .into_boxed();
    if let Some(endpoint) = &q.endpoint_id {
        query = query.filter(webhook_deliveries::endpoint_id.eq(endpoint));
    }
    if let Some(event) = &q.event_id {
        query = query.filter(webhook_events::id.eq(event));
    }
    if let Some(status) = q.status {
        query = query.filter(webhook_deliveries::status.eq(status.as_str()));
    }
    if let Some(t) = q.event_type {
        query = query.filter(webhook_events::event_type.eq(t.as_str()));
    }
    if let Some(before) = q.before {
        query = query.filter(webhook_deliveries::id.lt(before));
    }
    let rows: Vec<(DeliveryRow, String, String)> = query
        .order(webhook_deliveries::id.desc())
        .limit(q.limit)
        .select((
            DeliveryRow::as_select(),
            webhook_events::id,
            webhook_events::event_type,
        ))
        .load(conn)
        .await?;
    rows.into_iter()
        .map(|(row, id, t)| row.view(id, t))
        .collect()
}

pub(crate) async fn delivery(
    conn: &mut Conn,
    app: &str,
    id: i64,
) -> Result<Option<Delivery>, StoreError> {
    let row: Option<(DeliveryRow, String, String)> = webhook_deliveries::table
        .inner_join(webhook_events::table)
        .filter(webhook_deliveries::app_key.eq(app))
        .filter(webhook_deliveries::id.eq(id))
        .select((
            DeliveryRow::as_select(),
            webhook_events::id,
            webhook_events::event_type,
        ))
        .first(conn)
        .await
        .optional()?;
    let Some((row, event_id, event_type)) = row else {
        return Ok(None);
    };
    let mut delivery = row.view(event_id, event_type)?;
    delivery.attempt_log = webhook_attempts::table
        .filter(webhook_attempts::delivery_id.eq(id))
        .order(webhook_attempts::id)
        .select(AttemptRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Some(delivery))
}

pub(crate) async fn retry_delivery(
    conn: &mut Conn,
    app: &str,
    id: i64,
    now: OffsetDateTime,
) -> Result<Option<Delivery>, StoreError> {
    let updated = diesel::update(
        webhook_deliveries::table
            .filter(webhook_deliveries::app_key.eq(app))
            .filter(webhook_deliveries::id.eq(id)),
    )
    .set((
        webhook_deliveries::status.eq(DeliveryStatus::Pending.as_str()),
        webhook_deliveries::next_attempt_at.eq(to_db(now)),
        webhook_deliveries::updated_at.eq(to_db(now)),
    ))
    .execute(conn)
    .await?;
    if updated == 0 {
        return Ok(None);
    }
    delivery(conn, app, id).await
}

/// Deliveries pending and failed, and when the oldest pending one was made: each through its
/// partial index on the status.
pub(crate) async fn backlog(conn: &mut Conn) -> Result<Backlog, StoreError> {
    let (pending, oldest): (i64, Option<time::PrimitiveDateTime>) = webhook_deliveries::table
        .filter(webhook_deliveries::status.eq(DeliveryStatus::Pending.as_str()))
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::min(webhook_deliveries::created_at),
        ))
        .first(conn)
        .await?;
    let failed: i64 = webhook_deliveries::table
        .filter(webhook_deliveries::status.eq(DeliveryStatus::Failed.as_str()))
        .count()
        .get_result(conn)
        .await?;
    Ok(Backlog {
        pending,
        failed,
        oldest_pending: oldest.map(from_db),
    })
}

/// Whether a dispatcher round has anything to do: a new event, or a due delivery.
/// Read on a reader connection first, so that an idle dispatcher never takes
/// SQLite's write lock.
pub(crate) async fn has_work(conn: &mut Conn, now: OffsetDateTime) -> Result<bool, StoreError> {
    let new_events = exists(webhook_events::table.filter(NewEvent));
    let enabled = webhook_endpoints::table
        .filter(webhook_endpoints::enabled.eq(true))
        .select(webhook_endpoints::id);
    let due = exists(
        webhook_deliveries::table
            .filter(PendingDelivery)
            .filter(webhook_deliveries::next_attempt_at.le(to_db(now)))
            .filter(webhook_deliveries::endpoint_id.eq_any(enabled)),
    );
    let (new_events, due): (bool, bool) =
        diesel::select((new_events, due)).get_result(conn).await?;
    Ok(new_events || due)
}

/// Fans up to `limit` new events out to the endpoints subscribed to them; an event no
/// endpoint wants is dropped from the outbox at once.
pub(crate) async fn fan_out(
    conn: &mut Conn,
    now: OffsetDateTime,
    limit: i64,
) -> Result<usize, StoreError> {
    let events: Vec<(i64, String, String)> = locked_skip!(
        webhook_events::table
            .filter(NewEvent)
            .order(webhook_events::seq)
            .limit(limit)
            .select((
                webhook_events::seq,
                webhook_events::app_key,
                webhook_events::event_type
            ))
    )
    .load(conn)
    .await?;
    if events.is_empty() {
        return Ok(0);
    }
    let mut apps: Vec<&str> = events.iter().map(|(_, app, _)| app.as_str()).collect();
    apps.sort_unstable();
    apps.dedup();
    let endpoints: Vec<EndpointRow> = webhook_endpoints::table
        .filter(webhook_endpoints::app_key.eq_any(&apps))
        .filter(webhook_endpoints::enabled.eq(true))
        .select(EndpointRow::as_select())
        .load(conn)
        .await?;
    let at = to_db(now);
    let mut unwanted = Vec::new();
    let mut wanted = Vec::new();
    for (seq, app, event_type) in &events {
        let mut any = false;
        for endpoint in endpoints
            .iter()
            .filter(|e| &e.app_key == app && e.subscribes(event_type))
        {
            any = true;
            diesel::insert_into(webhook_deliveries::table)
                .values((
                    webhook_deliveries::event_seq.eq(seq),
                    webhook_deliveries::endpoint_id.eq(&endpoint.id),
                    webhook_deliveries::app_key.eq(app),
                    webhook_deliveries::status.eq(DeliveryStatus::Pending.as_str()),
                    webhook_deliveries::attempts.eq(0),
                    webhook_deliveries::next_attempt_at.eq(at),
                    webhook_deliveries::created_at.eq(at),
                    webhook_deliveries::updated_at.eq(at),
                ))
                .on_conflict((
                    webhook_deliveries::event_seq,
                    webhook_deliveries::endpoint_id,
                ))
                .do_nothing()
                .execute(conn)
                .await?;
        }
        if any {
            wanted.push(*seq)
        } else {
            unwanted.push(*seq)
        }
    }
    if !unwanted.is_empty() {
        diesel::delete(webhook_events::table.filter(webhook_events::seq.eq_any(&unwanted)))
            .execute(conn)
            .await?;
    }
    if !wanted.is_empty() {
        diesel::update(webhook_events::table.filter(webhook_events::seq.eq_any(&wanted)))
            .set(webhook_events::fanned_out.eq(true))
            .execute(conn)
            .await?;
    }
    Ok(events.len())
}

/// Claims due deliveries of enabled endpoints by pushing them `lease` ahead.
pub(crate) async fn claim(
    conn: &mut Conn,
    now: OffsetDateTime,
    lease: time::Duration,
    limit: i64,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let enabled = webhook_endpoints::table
        .filter(webhook_endpoints::enabled.eq(true))
        .select(webhook_endpoints::id);
    let ids: Vec<i64> = locked_skip!(
        webhook_deliveries::table
            .filter(PendingDelivery)
            .filter(webhook_deliveries::next_attempt_at.le(to_db(now)))
            .filter(webhook_deliveries::endpoint_id.eq_any(enabled))
            .order(webhook_deliveries::next_attempt_at)
            .limit(limit)
            .select(webhook_deliveries::id)
    )
    .load(conn)
    .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    diesel::update(webhook_deliveries::table.filter(webhook_deliveries::id.eq_any(&ids)))
        .set((
            webhook_deliveries::next_attempt_at.eq(to_db(now + lease)),
            webhook_deliveries::updated_at.eq(to_db(now)),
        ))
        .execute(conn)
        .await?;
    let rows: Vec<(i64, i32, String, String, EndpointRow)> = webhook_deliveries::table
        .inner_join(webhook_events::table)
        .inner_join(webhook_endpoints::table)
        .filter(webhook_deliveries::id.eq_any(&ids))
        .order(webhook_deliveries::id)
        .select((
            webhook_deliveries::id,
            webhook_deliveries::attempts,
            webhook_events::id,
            webhook_events::payload,
            EndpointRow::as_select(),
        ))
        .load(conn)
        .await?;
    let now_db = to_db(now);
    Ok(rows
        .into_iter()
        .map(|(delivery_id, attempts, event_id, payload, endpoint)| {
            let mut secrets = vec![endpoint.secret];
            if let (Some(previous), Some(until)) =
                (endpoint.previous_secret, endpoint.previous_expires_at)
                && until > now_db
            {
                secrets.push(previous);
            }
            ClaimedDelivery {
                delivery_id,
                event_id,
                endpoint_id: endpoint.id,
                url: endpoint.url,
                secrets,
                payload,
                attempts,
            }
        })
        .collect())
}

/// Records an attempt, moves the delivery on, and keeps the endpoint's failure record.
pub(crate) async fn record_attempt(
    conn: &mut Conn,
    result: &AttemptResult,
) -> Result<(), StoreError> {
    let delivery: Option<DeliveryRow> = locked!(
        webhook_deliveries::table
            .find(result.delivery_id)
            .select(DeliveryRow::as_select())
    )
    .first(conn)
    .await
    .optional()?;
    let Some(delivery) = delivery else {
        return Ok(()); // its endpoint was deleted meanwhile
    };
    let attempt = &result.attempt;
    let at = to_db(attempt.attempted_at);
    diesel::insert_into(webhook_attempts::table)
        .values((
            webhook_attempts::delivery_id.eq(delivery.id),
            webhook_attempts::attempted_at.eq(at),
            webhook_attempts::status_code.eq(attempt.status_code.map(i32::from)),
            webhook_attempts::latency_ms.eq(attempt.latency_ms),
            webhook_attempts::response_excerpt.eq(&attempt.response_excerpt),
            webhook_attempts::error.eq(&attempt.error),
            webhook_attempts::succeeded.eq(attempt.succeeded),
        ))
        .execute(conn)
        .await?;
    let gave_up = !attempt.succeeded && result.next_attempt_at.is_none();
    let status = if attempt.succeeded {
        DeliveryStatus::Succeeded
    } else if gave_up {
        DeliveryStatus::Failed
    } else {
        DeliveryStatus::Pending
    };
    let first_attempt = delivery.first_attempt_at.unwrap_or(at);
    diesel::update(webhook_deliveries::table.find(delivery.id))
        .set((
            webhook_deliveries::status.eq(status.as_str()),
            webhook_deliveries::attempts.eq(webhook_deliveries::attempts + 1),
            webhook_deliveries::next_attempt_at.eq(result.next_attempt_at.map_or(at, to_db)),
            webhook_deliveries::first_attempt_at.eq(first_attempt),
            webhook_deliveries::last_status.eq(attempt.status_code.map(i32::from)),
            webhook_deliveries::last_error.eq(&attempt.error),
            webhook_deliveries::updated_at.eq(at),
        ))
        .execute(conn)
        .await?;
    if attempt.succeeded {
        diesel::update(
            webhook_endpoints::table
                .filter(webhook_endpoints::id.eq(&delivery.endpoint_id))
                .filter(webhook_endpoints::failing_since.is_not_null()),
        )
        .set(webhook_endpoints::failing_since.eq(None::<time::PrimitiveDateTime>))
        .execute(conn)
        .await?;
        return Ok(());
    }
    let Some(endpoint) = endpoint_row(conn, &delivery.app_key, &delivery.endpoint_id).await? else {
        return Ok(());
    };
    let failing_since = endpoint.failing_since.unwrap_or(at);
    if endpoint.failing_since.is_none() {
        diesel::update(webhook_endpoints::table.find(&endpoint.id))
            .set(webhook_endpoints::failing_since.eq(failing_since))
            .execute(conn)
            .await?;
    }
    let failing_for = from_db(at) - from_db(failing_since);
    let reason = if failing_for >= DISABLE_AFTER {
        Some(format!(
            "every delivery failed for {} hours",
            failing_for.whole_hours()
        ))
    } else if gave_up && failing_since <= first_attempt {
        Some(format!(
            "delivery {} failed {} attempts with no success in between",
            delivery.id,
            delivery.attempts + 1
        ))
    } else {
        None
    };
    if let (Some(reason), true) = (reason, endpoint.enabled) {
        diesel::update(webhook_endpoints::table.find(&endpoint.id))
            .set((
                webhook_endpoints::enabled.eq(false),
                webhook_endpoints::disabled_reason.eq(&reason),
                webhook_endpoints::updated_at.eq(at),
            ))
            .execute(conn)
            .await?;
        let payload = Payload::EndpointDisabled(EndpointDisabled {
            endpoint_id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            failing_since: tally_kernel::rfc3339(from_db(failing_since)),
            reason: reason.clone(),
        });
        emit(conn, &payload, (&endpoint.app_key, None), from_db(at)).await?;
        tracing::warn!(
            endpoint = %endpoint.id,
            url = %endpoint.url,
            %reason,
            "webhook endpoint disabled"
        );
    }
    Ok(())
}
