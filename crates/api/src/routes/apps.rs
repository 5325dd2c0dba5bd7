//! The app registry and the service keys stored for an app.
//!
//! The registry is the operator's: admins of the `default` app list, register and change every
//! app; an admin of another app sees and changes only their own. Service keys belong to the
//! admin's own app.

use actix_web::{HttpResponse, delete, get, post, put, web};

use crate::AppState;
use crate::app_dto::{
    AppDto, AppRequest, AppUpdateRequest, NewServiceKeyDto, ServiceKeyDto, ServiceKeyRequest,
};
use crate::auth::{Admin, Caller, DEFAULT_APP, new_service_key};
use crate::error::{ApiError, created, ok};
use crate::extract::Json;

/// Whether `admin` may see and change `app`: their own, or every app for `default`'s admins.
fn may_manage(admin: &Caller, app: &str) -> bool {
    admin.app == DEFAULT_APP || admin.app == app
}

/// The registered apps: every one for admins of `default`, else the admin's own.
#[utoipa::path(
    tag = "apps",
    security(("bearer" = [])),
    responses((status = 200, description = "Apps, by key", body = [AppDto]), (status = 403, description = "Not an admin"))
)]
#[get("/admin/apps")]
pub async fn list_apps(
    state: web::Data<AppState>,
    Admin(admin): Admin,
) -> Result<HttpResponse, ApiError> {
    let apps = if admin.app == DEFAULT_APP {
        state.catalog.apps().await?
    } else {
        vec![state.catalog.app(&admin.app).await?]
    };
    Ok(ok(apps.into_iter().map(AppDto::from).collect::<Vec<_>>()))
}

/// Registers an app (admins of `default` only). Requests naming it are served from then on.
#[utoipa::path(
    tag = "apps",
    security(("bearer" = [])),
    request_body = AppRequest,
    responses(
        (status = 201, description = "The new app", body = AppDto),
        (status = 400, description = "VALIDATION_ERROR: every problem listed"),
        (status = 403, description = "Not an admin of the default app"),
        (status = 409, description = "CONFLICT: the key is registered")
    )
)]
#[post("/admin/apps")]
pub async fn create_app(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    body: Json<AppRequest>,
) -> Result<HttpResponse, ApiError> {
    if admin.app != DEFAULT_APP {
        return Err(ApiError::forbidden(
            "only admins of the default app register apps",
        ));
    }
    let app = state.catalog.create_app(body.into_inner().into()).await?;
    Ok(created(AppDto::from(app)))
}

/// Changes an app's name, time zone or currency; its key never changes.
#[utoipa::path(
    tag = "apps",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "App key")),
    request_body = AppUpdateRequest,
    responses(
        (status = 200, description = "The app", body = AppDto),
        (status = 400, description = "VALIDATION_ERROR: every problem listed"),
        (status = 403, description = "Another app, and not an admin of the default app"),
        (status = 404, description = "No such app")
    )
)]
#[put("/admin/apps/{key}")]
pub async fn update_app(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    key: web::Path<String>,
    body: Json<AppUpdateRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    if !may_manage(&admin, &key) {
        return Err(ApiError::forbidden("admins change their own app only"));
    }
    let app = state
        .catalog
        .update_app(&key, body.into_inner().into())
        .await?;
    Ok(ok(AppDto::from(app)))
}

/// The service keys stored for the admin's app, newest first; secrets are never shown again.
#[utoipa::path(
    tag = "apps",
    security(("bearer" = [])),
    responses((status = 200, description = "Keys, revoked ones included", body = [ServiceKeyDto]))
)]
#[get("/admin/service-keys")]
pub async fn list_service_keys(
    state: web::Data<AppState>,
    Admin(admin): Admin,
) -> Result<HttpResponse, ApiError> {
    let keys = state.catalog.service_keys(&admin.app).await?;
    Ok(ok(keys
        .into_iter()
        .map(ServiceKeyDto::from)
        .collect::<Vec<_>>()))
}

/// Makes a service key for the admin's app. The answer holds its secret, shown this once.
#[utoipa::path(
    tag = "apps",
    security(("bearer" = [])),
    request_body = ServiceKeyRequest,
    responses(
        (status = 201, description = "The key and its secret", body = NewServiceKeyDto),
        (status = 400, description = "VALIDATION_ERROR")
    )
)]
#[post("/admin/service-keys")]
pub async fn create_service_key(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    body: Json<ServiceKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let made = new_service_key();
    let key = state
        .catalog
        .create_service_key(&admin.app, &body.name, made.hash, made.prefix, &admin.user)
        .await?;
    Ok(created(NewServiceKeyDto {
        key: key.into(),
        secret: made.secret,
    }))
}

/// Revokes one of the app's service keys: calls with it are refused from then on (on other
/// nodes within seconds). Revoking it again answers the same record.
#[utoipa::path(
    tag = "apps",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 200, description = "The revoked key", body = ServiceKeyDto),
        (status = 404, description = "No such key in the app")
    )
)]
#[delete("/admin/service-keys/{id}")]
pub async fn revoke_service_key(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // Ids are decimal integers; anything else names no key.
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found("no such service key"))?;
    let key = state.catalog.revoke_service_key(&admin.app, id).await?;
    state.auth.stored_keys.forget_all();
    Ok(ok(ServiceKeyDto::from(key)))
}
