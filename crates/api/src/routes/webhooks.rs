//! Outbound webhooks within the admin's app: endpoints, their deliveries and the `credits.low`
//! threshold.

use actix_web::{HttpResponse, delete, get, post, put, web};
use tally_webhooks::{DeliveryQuery, DeliveryStatus, EventType};

use crate::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, created, ok, ok_cursor_page};
use crate::extract::Json;
use crate::routes::{detached, page};
use crate::webhook_dto::{
    CreateWebhookEndpointRequest, DeletedDto, UpdateWebhookEndpointRequest,
    UpdatedWebhookEndpointDto, WebhookDeliveryDetailDto, WebhookDeliveryDto, WebhookDeliveryQuery,
    WebhookEndpointDto, WebhookEndpointWithSecretDto, WebhookSettingsDto,
};

/// A delivery id as the API writes it: a positive integer in a string.
fn positive_id(s: &str) -> Option<i64> {
    s.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| s.parse::<i64>().ok())
        .flatten()
        .filter(|id| *id > 0)
}

fn delivery_id(s: &str) -> Result<i64, ApiError> {
    positive_id(s).ok_or_else(|| ApiError::not_found("no such webhook delivery"))
}

fn delivery_status(s: Option<&str>) -> Result<Option<DeliveryStatus>, ApiError> {
    s.map(|s| {
        DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::validation("status", "must be one of pending, succeeded, failed")
        })
    })
    .transpose()
}

fn event_type(s: Option<&str>) -> Result<Option<EventType>, ApiError> {
    s.map(|s| {
        EventType::parse(s).ok_or_else(|| {
            let all: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            ApiError::validation("event_type", format!("must be one of {}", all.join(", ")))
        })
    })
    .transpose()
}

/// The app's webhook endpoints, oldest first.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "All endpoints", body = [WebhookEndpointDto]), (status = 403, description = "Not an admin"))
)]
#[get("/admin/webhooks/endpoints")]
pub async fn list_endpoints(
    state: web::Data<AppState>,
    Admin(admin): Admin,
) -> Result<HttpResponse, ApiError> {
    let endpoints = state.webhooks.list(&admin.app).await?;
    Ok(ok(endpoints
        .into_iter()
        .map(WebhookEndpointDto::from)
        .collect::<Vec<_>>()))
}

/// Registers an endpoint; the answer carries its signing secret, which is never shown again.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = CreateWebhookEndpointRequest,
    responses(
        (status = 201, description = "The new endpoint with its `whsec_` secret", body = WebhookEndpointWithSecretDto),
        (status = 400, description = "Unknown event type, empty event_types or description too long (VALIDATION_ERROR)"),
        (status = 422, description = "INVALID_WEBHOOK_URL: malformed, not http(s), or pointing to a non-public address")
    )
)]
#[post("/admin/webhooks/endpoints")]
pub async fn create_endpoint(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    body: Json<CreateWebhookEndpointRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner().into();
    let webhooks = state.webhooks.clone();
    let (endpoint, secret) =
        detached(async move { webhooks.create(&admin.app, request).await }).await?;
    Ok(created(WebhookEndpointWithSecretDto {
        endpoint: endpoint.into(),
        secret: secret.expose(),
    }))
}

/// One endpoint of the app.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id (`we_…`)")),
    responses((status = 200, description = "The endpoint", body = WebhookEndpointDto), (status = 404, description = "No such endpoint in the admin's app"))
)]
#[get("/admin/webhooks/endpoints/{id}")]
pub async fn get_endpoint(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = state.webhooks.get(&admin.app, &id.into_inner()).await?;
    Ok(ok(WebhookEndpointDto::from(endpoint)))
}

/// Partially updates an endpoint, and rotates its secret on request: the answer then carries the
/// new secret, and the previous one keeps signing until `previous_secret_expires_at`.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id (`we_…`)")),
    request_body = UpdateWebhookEndpointRequest,
    responses(
        (status = 200, description = "The endpoint; `secret` only after `rotate_secret`", body = UpdatedWebhookEndpointDto),
        (status = 400, description = "Invalid field (VALIDATION_ERROR)"),
        (status = 404, description = "No such endpoint in the admin's app"),
        (status = 422, description = "INVALID_WEBHOOK_URL")
    )
)]
#[put("/admin/webhooks/endpoints/{id}")]
pub async fn update_endpoint(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
    body: Json<UpdateWebhookEndpointRequest>,
) -> Result<HttpResponse, ApiError> {
    let (id, request) = (id.into_inner(), body.into_inner().into());
    let webhooks = state.webhooks.clone();
    let (endpoint, secret) =
        detached(async move { webhooks.update(&admin.app, &id, request).await }).await?;
    Ok(ok(UpdatedWebhookEndpointDto {
        endpoint: endpoint.into(),
        secret: secret.map(|s| s.expose()),
    }))
}

/// Deletes an endpoint and its delivery records.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id (`we_…`)")),
    responses((status = 200, description = "Deleted", body = DeletedDto), (status = 404, description = "No such endpoint in the admin's app"))
)]
#[delete("/admin/webhooks/endpoints/{id}")]
pub async fn delete_endpoint(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let webhooks = state.webhooks.clone();
    detached(async move { webhooks.delete(&admin.app, &id).await }).await?;
    Ok(ok(DeletedDto { deleted: true }))
}

/// The app's deliveries, newest first, paged by the `before` cursor.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(WebhookDeliveryQuery),
    responses((status = 200, description = "A page of deliveries; `meta.next_before` is the cursor of the next page", body = [WebhookDeliveryDto]), (status = 400, description = "Bad limit, cursor, status or event_type"), (status = 403, description = "Not an admin"))
)]
#[get("/admin/webhooks/deliveries")]
pub async fn list_deliveries(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    query: web::Query<WebhookDeliveryQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = page(query.limit, None)?;
    let before = query
        .before
        .as_deref()
        .map(|s| {
            positive_id(s).ok_or_else(|| ApiError::validation("before", "must be a delivery id"))
        })
        .transpose()?;
    let mut rows = state
        .webhooks
        .deliveries(&DeliveryQuery {
            app: admin.app,
            endpoint_id: query.endpoint_id.clone(),
            event_id: query.event_id.clone(),
            status: delivery_status(query.status.as_deref())?,
            event_type: event_type(query.event_type.as_deref())?,
            before,
            limit: limit + 1,
        })
        .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let rows: Vec<WebhookDeliveryDto> = rows.into_iter().map(Into::into).collect();
    let next_before = has_more
        .then(|| rows.last().map(|d| d.id.clone()))
        .flatten();
    Ok(ok_cursor_page(rows, limit, offset, has_more, next_before))
}

/// One delivery with every attempt.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 200, description = "The delivery and its attempts", body = WebhookDeliveryDetailDto), (status = 404, description = "No such delivery in the admin's app"))
)]
#[get("/admin/webhooks/deliveries/{id}")]
pub async fn get_delivery(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let delivery = state
        .webhooks
        .delivery(&admin.app, delivery_id(&id)?)
        .await?;
    Ok(ok(WebhookDeliveryDetailDto::from(delivery)))
}

/// Makes a delivery pending and due now, whatever its status.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 200, description = "The delivery, pending and due", body = WebhookDeliveryDto), (status = 404, description = "No such delivery in the admin's app"))
)]
#[post("/admin/webhooks/deliveries/{id}/retry")]
pub async fn retry_delivery(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = delivery_id(&id)?;
    let webhooks = state.webhooks.clone();
    let delivery = detached(async move { webhooks.retry(&admin.app, id).await }).await?;
    Ok(ok(WebhookDeliveryDto::from(delivery)))
}

/// The app's webhook settings.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    responses((status = 200, description = "Current settings", body = WebhookSettingsDto))
)]
#[get("/admin/webhooks/settings")]
pub async fn get_settings(
    state: web::Data<AppState>,
    Admin(admin): Admin,
) -> Result<HttpResponse, ApiError> {
    let low_balance_threshold = state.webhooks.low_balance_threshold(&admin.app).await?;
    Ok(ok(WebhookSettingsDto {
        low_balance_threshold,
    }))
}

/// Replaces the app's webhook settings.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    request_body = WebhookSettingsDto,
    responses((status = 200, description = "Stored settings", body = WebhookSettingsDto), (status = 400, description = "Missing field or threshold out of range"))
)]
#[put("/admin/webhooks/settings")]
pub async fn put_settings(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    body: Json<WebhookSettingsDto>,
) -> Result<HttpResponse, ApiError> {
    let threshold = body.into_inner().low_balance_threshold;
    let webhooks = state.webhooks.clone();
    detached(async move {
        webhooks
            .set_low_balance_threshold(&admin.app, threshold)
            .await
    })
    .await?;
    Ok(ok(WebhookSettingsDto {
        low_balance_threshold: threshold,
    }))
}
