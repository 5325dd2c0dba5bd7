//! Billing-portal sessions: the host app asks for a short-lived URL of its user's billing page.

use actix_web::{HttpResponse, post, web};
use serde::{Deserialize, Serialize};
use tally_ledger::AccountRef;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Service, User};
use crate::dto::rfc3339;
use crate::error::{ApiError, ok};
use crate::extract::Json;

/// `POST /billing/portal-sessions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalSessionRequest {
    /// Where the page's "back" link goes; its host must be on `TALLY_ALLOWED_REDIRECT_HOSTS`.
    pub return_url: String,
}

/// `POST /internal/portal-sessions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServicePortalSessionRequest {
    /// The user whose billing page it is.
    pub user_id: String,
    /// Where the page's "back" link goes; its host must be on `TALLY_ALLOWED_REDIRECT_HOSTS`.
    pub return_url: String,
}

/// A billing-portal URL to send the user to.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalSessionDto {
    /// The user's billing page; it works until `expires_at`.
    pub url: String,
    /// RFC 3339.
    pub expires_at: String,
}

async fn open(
    state: &AppState,
    account: AccountRef,
    return_url: &str,
) -> Result<HttpResponse, ApiError> {
    state.checkout.check_redirect("return_url", return_url)?;
    Ok(ok(session(state, &account, return_url).await?))
}

/// A new portal session of `account` whose back link leads to `return_url` (already checked).
pub(crate) async fn session(
    state: &AppState,
    account: &AccountRef,
    return_url: &str,
) -> Result<PortalSessionDto, ApiError> {
    let (token, session) = state
        .sessions
        .create_portal_session(&account.app, &account.user, return_url, state.ledger.now())
        .await
        .map_err(|e| {
            crate::console::log_failure("creating a portal session", &e);
            ApiError::internal()
        })?;
    Ok(PortalSessionDto {
        url: format!("{}/portal/{token}", state.public_url),
        expires_at: rfc3339(session.expires_at),
    })
}

/// A billing-portal URL for the caller, valid for 15 minutes.
#[utoipa::path(
    tag = "orders",
    security(("bearer" = [])),
    request_body = PortalSessionRequest,
    responses(
        (status = 200, description = "The portal URL", body = PortalSessionDto),
        (status = 400, description = "return_url missing, malformed or not on an allowed host"),
        (status = 401, description = "No or invalid credentials")
    )
)]
#[post("/billing/portal-sessions")]
pub async fn user_session(
    state: web::Data<AppState>,
    User(caller): User,
    body: Json<PortalSessionRequest>,
) -> Result<HttpResponse, ApiError> {
    open(&state, caller.account(), &body.return_url).await
}

/// A billing-portal URL for one user of the service key's app, valid for 15 minutes.
#[utoipa::path(
    tag = "service",
    security(("service_key" = [])),
    request_body = ServicePortalSessionRequest,
    responses(
        (status = 200, description = "The portal URL", body = PortalSessionDto),
        (status = 400, description = "Bad user_id or return_url"),
        (status = 401, description = "No or invalid service key")
    )
)]
#[post("/internal/portal-sessions")]
pub async fn service_session(
    state: web::Data<AppState>,
    service: Service,
    body: Json<ServicePortalSessionRequest>,
) -> Result<HttpResponse, ApiError> {
    let account = AccountRef::new(service.app, body.user_id.clone())?;
    open(&state, account, &body.return_url).await
}
