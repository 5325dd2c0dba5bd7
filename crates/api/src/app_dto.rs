//! Wire types of the app registry and the service keys stored for an app.

use serde::{Deserialize, Serialize};
use tally_catalog::{App, AppPatch, AppSpec, ServiceKey};
use utoipa::ToSchema;

use crate::dto::{given, rfc3339};

/// A registered app.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppDto {
    /// The key requests name it by.
    pub key: String,
    /// Display name.
    pub name: String,
    /// IANA time zone a new check-in configuration starts from.
    pub time_zone: String,
    /// Currency of a new plan that names none.
    pub currency: String,
    /// RFC 3339 instant.
    pub created_at: String,
    /// RFC 3339 instant.
    pub updated_at: String,
}

impl From<App> for AppDto {
    fn from(a: App) -> Self {
        Self {
            key: a.key,
            name: a.name,
            time_zone: a.time_zone,
            currency: a.currency,
            created_at: rfc3339(a.created_at),
            updated_at: rfc3339(a.updated_at),
        }
    }
}

/// `POST /admin/apps`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppRequest {
    /// 1–64 characters of `A-Z a-z 0-9 _ - .`; never changes.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub key: String,
    /// 1–100 characters without control characters; default: the key.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String, required = false, min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// IANA time zone, e.g. `Europe/Paris`; default `UTC`.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String, required = false, max_length = 64)]
    pub time_zone: Option<String>,
    /// Lower-case ISO 4217 code (upper case is accepted and lowered); default `usd`.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String, required = false, min_length = 3, max_length = 3)]
    pub currency: Option<String>,
}

impl From<AppRequest> for AppSpec {
    fn from(r: AppRequest) -> Self {
        Self {
            key: r.key,
            name: r.name,
            time_zone: r.time_zone,
            currency: r.currency,
        }
    }
}

/// `PUT /admin/apps/{key}`: fields given replace, fields omitted stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppUpdateRequest {
    /// 1–100 characters without control characters.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String, required = false, min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// IANA time zone.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String, required = false, max_length = 64)]
    pub time_zone: Option<String>,
    /// Lower-case ISO 4217 code.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String, required = false, min_length = 3, max_length = 3)]
    pub currency: Option<String>,
}

impl From<AppUpdateRequest> for AppPatch {
    fn from(r: AppUpdateRequest) -> Self {
        Self {
            name: r.name,
            time_zone: r.time_zone,
            currency: r.currency,
        }
    }
}

/// A service key stored for the app; its secret is never shown again.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceKeyDto {
    /// Id, for revoking it.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    /// The admin who created it.
    pub created_by: String,
    /// RFC 3339 instant.
    pub created_at: String,
    /// RFC 3339 instant; a revoked key opens nothing.
    pub revoked_at: Option<String>,
}

impl From<ServiceKey> for ServiceKeyDto {
    fn from(k: ServiceKey) -> Self {
        Self {
            id: k.id.to_string(),
            name: k.name,
            prefix: k.prefix,
            created_by: k.created_by,
            created_at: rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339),
        }
    }
}

/// A new service key, with its secret: shown this once, stored only as a hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewServiceKeyDto {
    /// The key as stored.
    #[serde(flatten)]
    pub key: ServiceKeyDto,
    /// The secret: `Authorization: Bearer <secret>` on `/internal/*`.
    pub secret: String,
}

/// `POST /admin/service-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceKeyRequest {
    /// What the key is for, 1–100 characters without control characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}
