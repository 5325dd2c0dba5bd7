//! Tally's HTTP shell: actix-web routes over the domain crates, authentication extractors, the
//! JSON envelope and error mapping, request telemetry and the OpenAPI document.

pub mod app_dto;
pub mod auth;
pub mod checkout_dto;
pub mod console;
pub mod cors;
pub mod dto;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod pricing_dto;
pub mod protocol;
pub mod routes;
pub mod telemetry;
pub mod webhook_dto;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError, UrlencodedError};
use actix_web::{HttpRequest, ResponseError, web};
use tally_ledger::Ledger;

pub use auth::{AuthConfig, GatewayAuth, JwtSettings, JwtVerifier, ServiceKeys};
pub use cors::{CorsConfig, cors};
pub use error::{ApiError, ErrorCode};
pub use telemetry::{Metrics, PoolGauges, observe};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The credits ledger.
    pub ledger: Ledger,
    /// Plans and coupons.
    pub catalog: tally_catalog::Catalog,
    /// Orders, subscriptions, payment sessions and provider events.
    pub checkout: tally_checkout::Checkout,
    /// The sandbox channel's event source, when the sandbox is enabled.
    pub sandbox: Option<std::sync::Arc<dyn tally_checkout::SandboxDriver>>,
    /// Identity configuration.
    pub auth: AuthConfig,
    /// Outbound webhook endpoints, deliveries and settings.
    pub webhooks: tally_webhooks::Webhooks,
    /// Console sign-in and billing-portal sessions.
    pub sessions: tally_console::Console,
    /// The base URL of the links this server hands out (portal sessions).
    pub public_url: String,
    /// The operators' console, when it is on.
    pub console: Option<console::ConsoleConfig>,
}

fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body too large")
        }
        JsonPayloadError::ContentType => {
            ApiError::validation("body", "Content-Type must be application/json")
        }
        JsonPayloadError::Deserialize(e) => extract::body_error(&e.to_string()),
        JsonPayloadError::Payload(_) => ApiError::new(
            ErrorCode::MalformedRequest,
            "the body could not be read: its chunked framing is broken or it ended early",
        ),
        other => ApiError::validation("body", other.to_string()),
    };
    actix_web::error::InternalError::from_response(err, api.error_response()).into()
}

/// Every list reads its parameters into a struct that refuses unknown names: an unknown or
/// mistyped parameter is a `VALIDATION_ERROR` naming it, as a bad value of a known one is.
fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    let message = match &err {
        QueryPayloadError::Deserialize(e) => e.to_string(),
        other => other.to_string(),
    };
    let api = match message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
    {
        Some((name, rest)) => ApiError::validation(
            name,
            match rest.strip_prefix(", ") {
                Some(expected) => format!("is not a parameter of this request ({expected})"),
                None => "is not a parameter of this request".to_owned(),
            },
        ),
        None => ApiError::validation("query", message),
    };
    actix_web::error::InternalError::from_response(err, api.error_response()).into()
}

fn path_error(err: PathError, _: &HttpRequest) -> actix_web::Error {
    let api = ApiError::not_found("no such object");
    actix_web::error::InternalError::from_response(err, api.error_response()).into()
}

/// Forms are the console's and the sandbox's: a form that cannot be read answers a page.
fn form_error(err: UrlencodedError, _: &HttpRequest) -> actix_web::Error {
    let page = console::PageError::BadForm(err.to_string());
    actix_web::error::InternalError::from_response(err, page.error_response()).into()
}

/// No route: 405 with `Allow` when the path is served with other methods, else 404.
async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    let methods = openapi::methods_at(req.path());
    if methods.is_empty() {
        return Err(ApiError::not_found("no such route"));
    }
    let allow = methods.join(", ");
    let mut response = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not served here; the methods are {allow}",
            req.method()
        ),
    )
    .error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    Ok(response)
}

/// Registers every route, the extractor error handlers and the 404 fallback.
///
/// A request is matched against the routes in the order they are registered, and every route
/// with a path parameter before its own costs a regular-expression match: the busiest routes
/// come first (the ledger's, then providers' webhooks), the console's and the portal's pages
/// last. No two routes' paths overlap, so the order changes nothing else.
pub fn configure(
    cfg: &mut web::ServiceConfig,
    state: web::Data<AppState>,
    metrics: web::Data<Metrics>,
    body_limit_bytes: usize,
) {
    let console = state.console.is_some();
    cfg.app_data(state)
        .app_data(metrics)
        .app_data(
            web::JsonConfig::default()
                .limit(body_limit_bytes)
                .error_handler(json_error),
        )
        .app_data(web::PayloadConfig::default().limit(body_limit_bytes))
        .app_data(
            web::FormConfig::default()
                .limit(body_limit_bytes)
                .error_handler(form_error),
        )
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::PathConfig::default().error_handler(path_error))
        .service(routes::credits::balance)
        .service(routes::credits::transactions)
        .service(routes::checkin::checkin)
        .service(routes::checkin::status)
        .service(routes::admin::transactions)
        .service(routes::admin::manual)
        .service(routes::admin::get_checkin_config)
        .service(routes::admin::put_checkin_config)
        .service(routes::internal::check)
        .service(routes::internal::consume)
        .service(routes::internal::grant)
        .service(routes::payment::webhook)
        .service(routes::usage::check)
        .service(routes::usage::track)
        .service(routes::usage::entitlements)
        .service(routes::pricing::list_features)
        .service(routes::pricing::create_feature)
        .service(routes::pricing::put_feature)
        .service(routes::pricing::list_rates)
        .service(routes::pricing::create_rate)
        .service(routes::pricing::get_free_entitlements)
        .service(routes::pricing::put_free_entitlements)
        .service(routes::holds::reserve)
        .service(routes::holds::capture)
        .service(routes::holds::release)
        .service(routes::holds::get)
        .service(routes::codes::create)
        .service(routes::codes::list)
        .service(routes::codes::redeem)
        .service(routes::catalog::public_plans)
        .service(routes::catalog::list_plans)
        .service(routes::catalog::create_plan)
        .service(routes::catalog::update_plan)
        .service(routes::catalog::list_coupons)
        .service(routes::catalog::create_coupon)
        .service(routes::catalog::update_coupon)
        .service(routes::admin_users::list_users)
        .service(routes::admin_users::get_user)
        .service(routes::admin_users::stats)
        .service(routes::admin_billing::list_orders)
        .service(routes::admin_billing::get_order)
        .service(routes::admin_billing::list_subscriptions)
        .service(routes::admin_billing::get_subscription)
        .service(routes::subscriptions::admin_cancel)
        .service(routes::refunds::refund)
        .service(routes::subscriptions::list)
        .service(routes::subscriptions::cancel)
        .service(routes::subscriptions::resume)
        .service(routes::subscriptions::change_preview)
        .service(routes::subscriptions::change_plan)
        .service(routes::portal::user_session)
        .service(routes::portal::service_session)
        .service(routes::orders::list)
        .service(routes::orders::get)
        .service(routes::orders::subscription)
        .service(routes::orders::portal)
        .service(routes::payment::create_session)
        .service(routes::payment::admin_events)
        .service(routes::payment::sandbox_page)
        .service(routes::payment::sandbox_pay)
        .service(routes::payment::sandbox_cancel)
        .service(routes::webhooks::list_endpoints)
        .service(routes::webhooks::create_endpoint)
        .service(routes::webhooks::get_endpoint)
        .service(routes::webhooks::update_endpoint)
        .service(routes::webhooks::delete_endpoint)
        .service(routes::webhooks::list_deliveries)
        .service(routes::webhooks::get_delivery)
        .service(routes::webhooks::retry_delivery)
        .service(routes::webhooks::get_settings)
        .service(routes::webhooks::put_settings)
        .service(routes::apps::list_apps)
        .service(routes::apps::create_app)
        .service(routes::apps::update_app)
        .service(routes::apps::list_service_keys)
        .service(routes::apps::create_service_key)
        .service(routes::apps::revoke_service_key)
        .service(routes::system::healthz)
        .service(routes::system::readyz)
        .service(routes::system::metrics)
        .service(routes::system::openapi)
        .default_service(web::to(not_found));
    console::configure_portal(cfg);
    if console {
        console::configure(cfg);
    }
}
