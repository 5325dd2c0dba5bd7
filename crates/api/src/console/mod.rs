//! The operators' console at `/console`: server-rendered pages (maud templates, every value
//! escaped by the template engine) over the same domain services as the JSON API.
//!
//! Signing in: `tally console-link` prints a one-time URL; its page posts the token back, which
//! opens a session (cookie `HttpOnly`, `SameSite=Strict`, `Secure` behind https). Every
//! state-changing form carries the session's CSRF token, checked before anything is read from
//! the form. Responses forbid framing, inline scripts and referrers, and are never cached,
//! except the stylesheet and the one small script (instants in the reader's time zone), whose
//! URLs carry their content's hash.

mod catalog_pages;
mod engagement_pages;
mod ops_pages;
mod pages;
mod portal;
mod pricing_pages;
pub(crate) mod view;

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use maud::Markup;
use sha2::{Digest, Sha256};
use tally_console::Operator;

use crate::AppState;

/// The session cookie.
pub const COOKIE: &str = "tally_console";

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// The console's settings, when it is on.
#[derive(Debug, Clone, Default)]
pub struct ConsoleConfig {
    /// Mark the cookie `Secure` (the public URL is https).
    pub secure_cookie: bool,
    /// The overview's figures, per app.
    pub overview: std::sync::Arc<OverviewCache>,
}

/// How long the overview's figures are reused before they are counted again.
pub const OVERVIEW_TTL: time::Duration = time::Duration::seconds(30);

type Counted = Option<(
    time::OffsetDateTime,
    std::sync::Arc<tally_ledger::stats::Stats>,
)>;

/// The overview's statistics per app, counted at most once per [`OVERVIEW_TTL`]: counting 30
/// days over a large transactions table takes the database a second or more, and an overview
/// half a minute old serves an operator as well. One request per app counts; the others wait for
/// its figures instead of counting too.
#[derive(Debug, Default)]
pub struct OverviewCache {
    apps: std::sync::Mutex<
        std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<Counted>>>,
    >,
}

impl OverviewCache {
    /// The app's figures and when they were counted: the stored ones while younger than the
    /// TTL at `now`, else those `count` answers.
    pub async fn get<F, Fut, E>(
        &self,
        app: &str,
        now: time::OffsetDateTime,
        count: F,
    ) -> Result<
        (
            time::OffsetDateTime,
            std::sync::Arc<tally_ledger::stats::Stats>,
        ),
        E,
    >
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<tally_ledger::stats::Stats, E>>,
    {
        let slot = {
            let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
            apps.entry(app.to_owned()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some((at, stats)) = slot.as_ref()
            && now >= *at
            && now < *at + OVERVIEW_TTL
        {
            return Ok((*at, stats.clone()));
        }
        let stats = std::sync::Arc::new(count().await?);
        *slot = Some((now, stats.clone()));
        Ok((now, stats))
    }
}

/// An asset's path, versioned by its content: `/console/assets/console.<hash>.<ext>`.
fn asset_path(content: &str, ext: &str) -> String {
    let digest = hex::encode(Sha256::digest(content.as_bytes()));
    format!("/console/assets/console.{}.{ext}", &digest[..12])
}

/// The stylesheet's path.
pub(crate) fn css_path() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| asset_path(CSS, "css"))
}

/// The script's path (it shows instants in the reader's time zone).
pub(crate) fn js_path() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| asset_path(JS, "js"))
}

/// Registers the end users' billing portal (always on; it opens only with a portal session).
pub fn configure_portal(cfg: &mut web::ServiceConfig) {
    cfg.route(css_path(), web::get().to(stylesheet))
        .route(js_path(), web::get().to(script))
        .route("/portal/{token}", web::get().to(portal::page))
        .route("/portal/{token}/checkin", web::post().to(portal::checkin))
        .route("/portal/{token}/buy", web::post().to(portal::buy))
        .route("/portal/{token}/manage", web::post().to(portal::manage))
        .route("/portal/{token}/cancel", web::post().to(portal::cancel))
        .route("/portal/{token}/resume", web::post().to(portal::resume))
        .route(
            "/portal/{token}/change",
            web::post().to(portal::change_plan),
        );
}

/// Registers the console's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", web::get().to(pages::overview))
        .route("/console/login", web::get().to(pages::login_page))
        .route("/console/login", web::post().to(pages::login))
        .route("/console/logout", web::post().to(pages::logout))
        .route("/console/apps", web::get().to(pages::apps))
        .route("/console/apps", web::post().to(pages::switch_app))
        .route("/console/customers", web::get().to(pages::customers))
        .route("/console/customers/{user}", web::get().to(pages::customer))
        .route(
            "/console/customers/{user}/adjust",
            web::post().to(pages::adjust),
        )
        .route("/console/orders", web::get().to(ops_pages::orders))
        .route("/console/orders/{id}", web::get().to(ops_pages::order))
        .route("/console/events", web::get().to(ops_pages::events))
        .route("/console/webhooks", web::get().to(ops_pages::webhooks))
        .route(
            "/console/webhooks/endpoints",
            web::post().to(ops_pages::create_endpoint),
        )
        .route(
            "/console/webhooks/endpoints/{id}",
            web::post().to(ops_pages::endpoint_action),
        )
        .route(
            "/console/webhooks/endpoints/{id}",
            web::get().to(ops_pages::endpoint),
        )
        .route(
            "/console/webhooks/endpoints/{id}/edit",
            web::post().to(ops_pages::update_endpoint),
        )
        .route(
            "/console/webhooks/deliveries/{id}/retry",
            web::post().to(ops_pages::retry_delivery),
        )
        .route("/console/checkin", web::get().to(engagement_pages::checkin))
        .route(
            "/console/checkin",
            web::post().to(engagement_pages::save_checkin),
        )
        .route("/console/codes", web::get().to(engagement_pages::codes))
        .route(
            "/console/codes",
            web::post().to(engagement_pages::create_codes),
        )
        .route(
            "/console/codes.csv",
            web::get().to(engagement_pages::codes_csv),
        )
        .route("/console/branding", web::get().to(portal::branding))
        .route("/console/branding", web::post().to(portal::save_branding))
        .route("/console/plans", web::get().to(catalog_pages::plans))
        .route("/console/plans", web::post().to(catalog_pages::create_plan))
        .route("/console/plans/{id}", web::get().to(catalog_pages::plan))
        .route(
            "/console/plans/{id}",
            web::post().to(catalog_pages::update_plan),
        )
        .route(
            "/console/plans/{id}/active",
            web::post().to(catalog_pages::plan_active),
        )
        .route("/console/pricing", web::get().to(pricing_pages::pricing))
        .route("/console/coupons", web::get().to(catalog_pages::coupons))
        .route(
            "/console/coupons",
            web::post().to(catalog_pages::create_coupon),
        )
        .route(
            "/console/coupons/{id}",
            web::get().to(catalog_pages::coupon),
        )
        .route(
            "/console/coupons/{id}",
            web::post().to(catalog_pages::update_coupon),
        )
        .route(
            "/console/coupons/{id}/active",
            web::post().to(catalog_pages::coupon_active),
        );
}

/// An embedded asset; its URL changes with its content, so it may be cached for good.
fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

async fn stylesheet() -> HttpResponse {
    asset("text/css; charset=utf-8", CSS)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", JS)
}

/// The console's content security policy: its own stylesheet and script (no inline code), no
/// framing.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
                   img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

/// An HTML answer with the console's security headers.
pub(crate) fn html(status: StatusCode, body: Markup) -> HttpResponse {
    html_with_policy(status, body, CSP.to_owned())
}

/// An HTML answer with the console's security headers and this content security policy.
pub(crate) fn html_with_policy(status: StatusCode, body: Markup, csp: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(ContentType::html())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, csp))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body.into_string())
}

/// A `303 See Other` to `location`.
pub(crate) fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// Why a console request is not answered with its page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// No open session: go and sign in.
    #[error("sign in first")]
    SignIn,
    /// A form without this session's CSRF token.
    #[error("the form did not come from this console session")]
    Csrf,
    /// A billing-portal URL that is unknown or expired.
    #[error("this billing link has expired")]
    PortalExpired,
    /// No such object in the operator's app.
    #[error("{0}")]
    NotFound(String),
    /// A form whose fields could not be read.
    #[error("the form could not be read: {0}")]
    BadForm(String),
    /// Something failed; logged where it happened.
    #[error("internal error")]
    Internal,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignIn => StatusCode::SEE_OTHER,
            Self::Csrf | Self::PortalExpired => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadForm(_) => StatusCode::BAD_REQUEST,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::SignIn => see_other("/console/login"),
            Self::Csrf => html(
                self.status_code(),
                view::message_page(
                    "Form refused",
                    "This form did not come from your console session (it may have expired). \
                     Nothing was changed. Go back, reload the page and try again.",
                ),
            ),
            Self::PortalExpired => html(
                self.status_code(),
                view::bare(
                    "Link expired",
                    maud::html! {
                        p { "This billing link has expired or is not valid. Go back to the app and open billing again." }
                    },
                ),
            ),
            Self::NotFound(what) => html(self.status_code(), view::message_page("Not found", what)),
            Self::BadForm(why) => html(
                self.status_code(),
                view::message_page(
                    "Form refused",
                    &format!("The form could not be read ({why}). Nothing was changed."),
                ),
            ),
            Self::Internal => html(
                self.status_code(),
                view::message_page(
                    "Something went wrong",
                    "The request failed; the server log has the details.",
                ),
            ),
        }
    }
}

impl From<crate::ApiError> for PageError {
    fn from(e: crate::ApiError) -> Self {
        if e.status == StatusCode::NOT_FOUND {
            Self::NotFound(e.message)
        } else {
            Self::Internal
        }
    }
}

/// A domain service's error on a page: as the API answers it (see `From<ApiError>`).
macro_rules! page_error_from {
    ($($error:ty),*) => {$(
        impl From<$error> for PageError {
            fn from(e: $error) -> Self {
                crate::ApiError::from(e).into()
            }
        }
    )*};
}

page_error_from!(
    tally_ledger::LedgerError,
    tally_catalog::CatalogError,
    tally_checkout::CheckoutError,
    tally_webhooks::WebhookError
);

/// Logs why `what` failed, unless the storage failed: the store logged that already, with its
/// cause, where it happened.
pub(crate) fn log_failure(what: &str, e: &tally_console::ConsoleError) {
    if !matches!(e, tally_console::ConsoleError::Storage(_)) {
        tracing::error!(error = %e, "{what} failed");
    }
}

/// Logs a failed console operation (see [`log_failure`]) and answers the failure page.
pub(crate) fn failed(what: &'static str) -> impl FnOnce(tally_console::ConsoleError) -> PageError {
    move |e| {
        log_failure(what, &e);
        PageError::Internal
    }
}

/// The session id from the request's cookie.
pub(crate) fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then(|| value.to_owned())
        })
}

/// The signed-in operator of a console request; without an open session the request is
/// redirected to the sign-in page and sees no data.
#[derive(Debug)]
pub struct Signed(pub Operator);

impl FromRequest for Signed {
    type Error = PageError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, PageError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let cookie = session_cookie(req);
        // Behind the gateway, an admin's headers sign in (a user's never do).
        let gateway = state
            .as_ref()
            .and_then(|s| s.auth.gateway.as_ref())
            .and_then(|g| g.console_operator(req));
        Box::pin(async move {
            let Some(state) = state else {
                return Err(PageError::SignIn);
            };
            if state.console.is_none() {
                return Err(PageError::NotFound("the console is switched off".into()));
            }
            let op = match (gateway, cookie) {
                (Some(op), _) => op,
                (None, None) => return Err(PageError::SignIn),
                (None, Some(id)) => match state.sessions.operator(&id, state.ledger.now()).await {
                    Ok(Some(op)) => op,
                    Ok(None) => return Err(PageError::SignIn),
                    Err(e) => {
                        log_failure("console session lookup", &e);
                        return Err(PageError::Internal);
                    }
                },
            };
            // The app must be registered, as on the API: the gateway's `X-App-Key`, and a
            // session's (one opened before the registry, or for an app never registered).
            match state.catalog.is_registered(&op.app).await {
                Ok(true) => Ok(Signed(op)),
                Ok(false) => Err(PageError::NotFound(format!(
                    "app '{}' is not registered",
                    op.app
                ))),
                Err(e) => {
                    tracing::error!(error = %e, "console: app registry lookup failed");
                    Err(PageError::Internal)
                }
            }
        })
    }
}

/// Refuses a form whose CSRF token is not the session's.
pub(crate) fn check_csrf(op: &Operator, token: &str) -> Result<(), PageError> {
    if op.csrf_matches(token) {
        Ok(())
    } else {
        Err(PageError::Csrf)
    }
}
