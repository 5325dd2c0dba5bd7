//! The console's orders (with the provider events behind each) and outbound webhooks (endpoints,
//! deliveries, retries).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use maud::{Markup, html};
use serde::Deserialize;
use tally_checkout::{AppOrderQuery, OrderStatus, OrderType};
use tally_console::Operator;
use tally_webhooks::service::{CreateEndpoint, UpdateEndpoint};
use tally_webhooks::{DeliveryQuery, DeliveryStatus, EventType};

use super::pages::{CsrfForm, Notice, notice, outcome, refusal, shown};
use super::view::{self, instant, money, pill, segment};
use super::{PageError, Signed, check_csrf, html, see_other};
use crate::routes::detached;
use crate::{ApiError, AppState};

/// Rows per page.
const PAGE: i64 = 25;

#[derive(Debug, Deserialize)]
pub(crate) struct OrdersQuery {
    #[serde(default)]
    status: String,
    #[serde(default, rename = "type")]
    order_type: String,
    #[serde(default)]
    user_id: String,
    before: Option<String>,
}

/// A `<select>` of a filter: `all` plus each value, the current one selected.
fn filter_select(id: &str, name: &str, all: &str, values: &[&str], current: &str) -> Markup {
    html! {
        select id=(id) name=(name) {
            option value="" selected[current.is_empty()] { (all) }
            @for v in values {
                option value=(v) selected[*v == current] { (v.replace('_', " ")) }
            }
        }
    }
}

/// The app's orders, newest first, with filters.
pub(crate) async fn orders(
    state: web::Data<AppState>,
    Signed(op): Signed,
    query: web::Query<OrdersQuery>,
) -> Result<HttpResponse, PageError> {
    let status = OrderStatus::parse(&query.status);
    let order_type = OrderType::parse(&query.order_type);
    let user = Some(query.user_id.trim().to_owned()).filter(|u| !u.is_empty());
    let mut rows = state
        .checkout
        .app_orders(AppOrderQuery {
            app: op.app.clone(),
            user: user.clone(),
            status,
            order_type,
            before: query.before.clone().filter(|b| !b.is_empty()),
            limit: PAGE + 1,
            ..Default::default()
        })
        .await
        .map_err(ApiError::from);
    let more = rows.as_ref().is_ok_and(|r| r.len() as i64 > PAGE);
    if let Ok(rows) = &mut rows {
        rows.truncate(PAGE as usize);
    }
    let statuses: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
    let types: Vec<&str> = OrderType::ALL.iter().map(|s| s.as_str()).collect();
    let body = html! {
        form.search method="get" action="/console/orders" {
            label.visually-hidden for="f-status" { "Status" }
            (filter_select("f-status", "status", "Every status", &statuses, status.map_or("", |s| s.as_str())))
            label.visually-hidden for="f-type" { "Type" }
            (filter_select("f-type", "type", "Every type", &types, order_type.map_or("", |t| t.as_str())))
            label.visually-hidden for="f-user" { "User id" }
            input type="search" id="f-user" name="user_id" value=(query.user_id) placeholder="User id";
            button type="submit" { "Filter" }
        }
        @match &rows {
            Err(e) => div.notice.error role="alert" { (refusal(e)) },
            Ok(rows) => div.panel.wide {
                @if rows.is_empty() { p.empty { "No orders match." } } @else {
                    table id="orders" {
                        thead { tr { th { "Order" } th { "Customer" } th { "Type" } th { "Status" } th.num { "Amount" } th { "Channel" } th { "Created" } } }
                        tbody { @for o in rows { tr {
                            td { a href={ "/console/orders/" (segment(&o.id)) } { code { (o.id) } } }
                            td { a href={ "/console/customers/" (segment(&o.user)) } { (o.user) } }
                            td { (o.order_type.as_str()) }
                            td { (pill(o.status.as_str())) }
                            td.num { (money(o.amount_minor - o.discount_minor, &o.currency)) }
                            td { (o.channel.as_str()) }
                            td { (instant(o.created_at)) }
                        } } }
                    }
                    @if more { @if let Some(last) = rows.last() {
                        div.actions { a href={ "/console/orders?status=" (segment(&query.status)) "&type=" (segment(&query.order_type)) "&user_id=" (segment(&query.user_id)) "&before=" (segment(&last.id)) } { "Older orders →" } }
                    } }
                }
            },
        }
    };
    Ok(html(
        StatusCode::OK,
        view::page(&op, "/console/orders", "Orders", body),
    ))
}

/// One order and every provider event that touched it.
pub(crate) async fn order(
    state: web::Data<AppState>,
    Signed(op): Signed,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let (o, events) = state.checkout.app_order(&op.app, &id).await?;
    let plan = state.catalog.plan(&op.app, &o.plan_id).await?;
    let body = html! {
        div.cards {
            div.card { div.label { "Status" } div.value { (pill(o.status.as_str())) } }
            div.card { div.label { "Amount" } div.value { (money(o.amount_minor - o.discount_minor, &o.currency)) } }
            div.card { div.label { "Credits" } div.value { (view::number(o.credits)) } }
        }
        section.panel {
            table {
                tbody {
                    tr { th { "Customer" } td { a href={ "/console/customers/" (segment(&o.user)) } { (o.user) } } }
                    tr { th { "Type" } td { (o.order_type.as_str()) @if let Some(i) = o.interval { ", every " (i.as_str()) } } }
                    tr { th { "Plan" } td { @if let Some(p) = &plan { (p.name) " (" (o.plan_id) ")" } @else { (o.plan_id) } } }
                    tr { th { "Channel" } td { (o.channel.as_str()) } }
                    tr { th { "List price" } td { (money(o.amount_minor, &o.currency)) } }
                    @if let Some(code) = &o.coupon_code { tr { th { "Coupon" } td { code { (code) } " −" (money(o.discount_minor, &o.currency)) } } }
                    @if let Some(s) = &o.provider_session_id { tr { th { "Provider session" } td { code { (s) } } } }
                    @if let Some(s) = &o.provider_subscription_id { tr { th { "Provider subscription" } td { code { (s) } } } }
                    @if let Some(r) = &o.failure_reason { tr { th { "Why it failed" } td { (r) } } }
                    tr { th { "Created" } td { (instant(o.created_at)) } }
                    @if let Some(at) = o.completed_at { tr { th { "Paid" } td { (instant(at)) } } }
                }
            }
        }
        section.panel.wide aria-labelledby="events-title" {
            h2 id="events-title" { "Provider events" }
            @if events.is_empty() { p.empty { "No provider event has mentioned this order yet." } } @else {
                table id="events" {
                    thead { tr { th { "Received" } th { "Event" } th { "Outcome" } th { "What Tally did" } } }
                    tbody { @for e in &events { tr {
                        td { (instant(e.received_at)) }
                        td { code { (e.event_type) } div.muted { (e.channel.as_str()) " " (e.event_id) } }
                        td { (pill(&e.outcome)) }
                        td { (e.detail) }
                    } } }
                }
            }
        }
    };
    Ok(html(
        StatusCode::OK,
        view::page(&op, "/console/orders", &format!("Order {}", o.id), body),
    ))
}

async fn webhooks_page(
    state: &AppState,
    op: &Operator,
    notice_: Option<Notice>,
) -> Result<Markup, PageError> {
    let endpoints = state.webhooks.list(&op.app).await?;
    let deliveries = state
        .webhooks
        .deliveries(&DeliveryQuery {
            app: op.app.clone(),
            endpoint_id: None,
            event_id: None,
            status: None,
            event_type: None,
            before: None,
            limit: PAGE,
        })
        .await?;
    let body = html! {
        (notice(&notice_))
        section.panel.wide aria-labelledby="endpoints-title" {
            h2 id="endpoints-title" { "Endpoints" }
            @if endpoints.is_empty() { p.empty { "No endpoints: Tally tells nobody what happens." } } @else {
                table id="endpoints" {
                    thead { tr { th { "URL" } th { "Events" } th { "State" } th { "" } } }
                    tbody { @for e in &endpoints { tr {
                        td {
                            a href={ "/console/webhooks/endpoints/" (segment(&e.id)) } { (e.url) }
                            @if !e.description.is_empty() { div.muted { (e.description) } }
                        }
                        td { (e.event_types.len()) " types" }
                        td {
                            @if e.enabled { span.pill.on { "enabled" } } @else { span.pill.off { "disabled" } }
                            @if let Some(reason) = &e.disabled_reason { div.muted { (reason) } }
                            @if let Some(since) = e.failing_since { div.muted { "failing since " (instant(since)) } }
                        }
                        td {
                            form.inline method="post" action={ "/console/webhooks/endpoints/" (segment(&e.id)) } {
                                input type="hidden" name="csrf" value=(op.csrf_token);
                                button.secondary type="submit" name="action" value=(if e.enabled { "disable" } else { "enable" }) {
                                    @if e.enabled { "Disable" } @else { "Enable" }
                                }
                                " "
                                button.secondary type="submit" name="action" value="rotate" { "Rotate secret" }
                                " "
                                button.secondary type="submit" name="action" value="delete" { "Delete" }
                            }
                        }
                    } } }
                }
            }
            form method="post" action="/console/webhooks/endpoints" {
                input type="hidden" name="csrf" value=(op.csrf_token);
                div.fields {
                    div { label for="endpoint-url" { "New endpoint URL" } input type="text" id="endpoint-url" name="url" required placeholder="https://app.example/webhooks/tally"; }
                    div { label for="endpoint-description" { "Description" } input type="text" id="endpoint-description" name="description" maxlength="500"; }
                }
                div.actions { button type="submit" id="create-endpoint" { "Add endpoint" } }
            }
        }
        section.panel.wide aria-labelledby="deliveries-title" {
            h2 id="deliveries-title" { "Latest deliveries" }
            @if deliveries.is_empty() { p.empty { "Nothing delivered yet." } } @else {
                table id="deliveries" {
                    thead { tr { th { "Delivery" } th { "Event" } th { "Status" } th.num { "Attempts" } th { "Last answer" } th { "Created" } th { "" } } }
                    tbody { @for d in &deliveries { tr id={ "delivery-" (d.id) } {
                        td { (d.id) }
                        td { code { (d.event_type) } }
                        td { (pill(d.status.as_str())) }
                        td.num { (d.attempts) }
                        td { @if let Some(code) = d.last_status { "HTTP " (code) } @if let Some(err) = &d.last_error { div.muted { (err) } } }
                        td { (instant(d.created_at)) }
                        td { @if d.status != DeliveryStatus::Succeeded {
                            form.inline method="post" action={ "/console/webhooks/deliveries/" (d.id) "/retry" } {
                                input type="hidden" name="csrf" value=(op.csrf_token);
                                button.secondary type="submit" { "Retry now" }
                            }
                        } }
                    } } }
                }
            }
        }
    };
    Ok(view::page(op, "/console/webhooks", "Webhooks", body))
}

/// Outbound webhook endpoints and the latest deliveries.
pub(crate) async fn webhooks(
    state: web::Data<AppState>,
    Signed(op): Signed,
) -> Result<HttpResponse, PageError> {
    shown(webhooks_page(&state, &op, None)).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct EndpointForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    description: String,
}

/// The page again, with what happened on top (`status` 200 when it worked).
async fn answer(state: &AppState, op: &Operator, n: Notice) -> Result<HttpResponse, PageError> {
    Ok(html(n.status(), webhooks_page(state, op, Some(n)).await?))
}

/// Registers an endpoint; its secret is shown once, on the answer.
pub(crate) async fn create_endpoint(
    state: web::Data<AppState>,
    Signed(op): Signed,
    form: web::Form<EndpointForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&op, &form.csrf)?;
    let request = CreateEndpoint {
        url: form.url.trim().to_owned(),
        event_types: None,
        description: Some(form.description.trim().to_owned()).filter(|d| !d.is_empty()),
        enabled: None,
    };
    let made = state.webhooks.create(&op.app, request).await;
    let n = outcome(made.map_err(ApiError::from), |(endpoint, secret)| {
        format!(
            "Endpoint {} added. Its signing secret, shown only now: {}",
            endpoint.url,
            secret.expose()
        )
    })?;
    answer(&state, &op, n).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct EndpointAction {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
}

/// Enables, disables, rotates the secret of, or deletes an endpoint.
pub(crate) async fn endpoint_action(
    state: web::Data<AppState>,
    Signed(op): Signed,
    id: web::Path<String>,
    form: web::Form<EndpointAction>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&op, &form.csrf)?;
    let change = |enabled: Option<bool>, rotate_secret: bool| UpdateEndpoint {
        url: None,
        event_types: None,
        description: None,
        enabled,
        rotate_secret,
    };
    let hooks = &state.webhooks;
    let result = match form.action.as_str() {
        "enable" => hooks.update(&op.app, &id, change(Some(true), false)).await.map(|_| "Endpoint enabled.".to_owned()),
        "disable" => hooks.update(&op.app, &id, change(Some(false), false)).await.map(|_| "Endpoint disabled.".to_owned()),
        "rotate" => hooks.update(&op.app, &id, change(None, true)).await.map(|(_, secret)| {
            format!(
                "Secret rotated; the old one keeps signing for 24 hours. The new secret, shown only now: {}",
                secret.map(|s| s.expose()).unwrap_or_default()
            )
        }),
        "delete" => hooks.delete(&op.app, &id).await.map(|()| "Endpoint deleted.".to_owned()),
        _ => return Err(PageError::NotFound("no such action".into())),
    };
    answer(&state, &op, Notice::Done(result?)).await
}

async fn endpoint_page(
    state: &AppState,
    op: &Operator,
    id: &str,
    notice_: Option<Notice>,
) -> Result<Markup, PageError> {
    let e = state.webhooks.get(&op.app, id).await?;
    let body = html! {
        (notice(&notice_))
        section.panel aria-labelledby="endpoint-title" {
            h2 id="endpoint-title" { "Endpoint " code { (e.id) } }
            form method="post" action={ "/console/webhooks/endpoints/" (segment(&e.id)) "/edit" } {
                input type="hidden" name="csrf" value=(op.csrf_token);
                div.fields {
                    div { label for="endpoint-url" { "URL" } input type="text" id="endpoint-url" name="url" required value=(e.url); }
                    div { label for="endpoint-description" { "Description" } input type="text" id="endpoint-description" name="description" maxlength="500" value=(e.description); }
                }
                fieldset.choices {
                    legend { "Events it receives (at least one)" }
                    @for t in EventType::ALL {
                        label {
                            input type="checkbox" name={ "event:" (t.as_str()) } value="on" checked[e.event_types.contains(t)];
                            " " code { (t.as_str()) }
                        }
                    }
                }
                div.actions { button type="submit" id="save-endpoint" { "Save" } a href="/console/webhooks" { "Back to webhooks" } }
            }
        }
    };
    Ok(view::page(
        op,
        "/console/webhooks",
        "Webhook endpoint",
        body,
    ))
}

/// One endpoint, with its URL, description and event types to edit.
pub(crate) async fn endpoint(
    state: web::Data<AppState>,
    Signed(op): Signed,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    shown(endpoint_page(&state, &op, &id, None)).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct EndpointEditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    description: String,
    /// The ticked `event:<type>` boxes.
    #[serde(flatten)]
    ticked: std::collections::BTreeMap<String, String>,
}

/// Saves an endpoint's URL, description and event types (checked like the API's update).
pub(crate) async fn update_endpoint(
    state: web::Data<AppState>,
    Signed(op): Signed,
    id: web::Path<String>,
    form: web::Form<EndpointEditForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&op, &form.csrf)?;
    let change = UpdateEndpoint {
        url: Some(form.url.trim().to_owned()),
        event_types: Some(super::pages::ticked(&form.ticked, "event:")),
        description: Some(form.description.trim().to_owned()),
        enabled: None,
        rotate_secret: false,
    };
    let (hooks, app, endpoint_id) = (state.webhooks.clone(), op.app.clone(), id.to_string());
    let made = detached(async move { hooks.update(&app, &endpoint_id, change).await }).await;
    super::pages::form_outcome(made, "/console/webhooks", |n| {
        endpoint_page(&state, &op, &id, Some(n))
    })
    .await
}

/// Schedules a delivery's next attempt now.
pub(crate) async fn retry_delivery(
    state: web::Data<AppState>,
    Signed(op): Signed,
    id: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&op, &form.csrf)?;
    let hooks = state.webhooks.clone();
    let (app, id) = (op.app.clone(), id.into_inner());
    detached(async move { hooks.retry(&app, id).await }).await?;
    Ok(see_other("/console/webhooks"))
}

#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    #[serde(default)]
    offset: i64,
}

/// Every provider event received for the app (and those traced to no app), newest first.
pub(crate) async fn events(
    state: web::Data<AppState>,
    Signed(op): Signed,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, PageError> {
    let offset = query.offset.clamp(0, 100_000);
    let mut events = state.checkout.events(&op.app, PAGE + 1, offset).await?;
    let more = events.len() as i64 > PAGE;
    events.truncate(PAGE as usize);
    let body = html! {
        div.panel.wide {
            @if events.is_empty() { p.empty { "No provider event received yet." } } @else {
                table id="events" {
                    thead { tr { th { "Received" } th { "Event" } th { "Outcome" } th { "Order" } th { "What Tally did" } } }
                    tbody { @for e in &events { tr {
                        td { (instant(e.received_at)) }
                        td { code { (e.event_type) } div.muted { (e.channel.as_str()) " " (e.event_id) } }
                        td { (pill(&e.outcome)) }
                        td { @match &e.order_id {
                            Some(id) => a href={ "/console/orders/" (segment(id)) } { code { (id) } },
                            None => span.muted { "—" },
                        } }
                        td { (e.detail) }
                    } } }
                }
                @if more { div.actions { a href={ "/console/events?offset=" (offset + PAGE) } { "Older events →" } } }
            }
        }
    };
    Ok(html(
        StatusCode::OK,
        view::page(&op, "/console/events", "Provider events", body),
    ))
}
