//! The app registry and the service keys stored for its apps.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::RunQueryDsl;
use tally_catalog::{App, AppFields, AppPatch, CatalogError, NewServiceKey, ServiceKey};
use time::OffsetDateTime;

use crate::StoreError;
use crate::rows::{from_db, to_db};
use crate::schema::{apps, service_keys};

use super::Conn;

#[derive(Queryable, Selectable)]
#[diesel(table_name = apps)]
struct AppRow {
    app_key: String,
    name: String,
    time_zone: String,
    currency: String,
    created_at: time::PrimitiveDateTime,
    updated_at: time::PrimitiveDateTime,
}

impl From<AppRow> for App {
    fn from(r: AppRow) -> Self {
        Self {
            key: r.app_key,
            name: r.name,
            time_zone: r.time_zone,
            currency: r.currency,
            created_at: from_db(r.created_at),
            updated_at: from_db(r.updated_at),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = service_keys)]
struct ServiceKeyRow {
    id: i64,
    app_key: String,
    name: String,
    prefix: String,
    created_by: String,
    created_at: time::PrimitiveDateTime,
    revoked_at: Option<time::PrimitiveDateTime>,
}

impl From<ServiceKeyRow> for ServiceKey {
    fn from(r: ServiceKeyRow) -> Self {
        Self {
            id: r.id,
            app: r.app_key,
            name: r.name,
            prefix: r.prefix,
            created_by: r.created_by,
            created_at: from_db(r.created_at),
            revoked_at: r.revoked_at.map(from_db),
        }
    }
}

/// The columns an app's fields set, and when they were set.
#[derive(AsChangeset, Insertable)]
#[diesel(table_name = apps)]
struct AppValues<'a> {
    name: &'a str,
    time_zone: &'a str,
    currency: &'a str,
    updated_at: time::PrimitiveDateTime,
}

fn app_values(fields: &AppFields, now: OffsetDateTime) -> AppValues<'_> {
    AppValues {
        name: &fields.name,
        time_zone: &fields.time_zone,
        currency: &fields.currency,
        updated_at: to_db(now),
    }
}

pub(crate) async fn ensure_apps(
    conn: &mut Conn,
    keys: &[String],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    for key in keys {
        let fields = tally_catalog::AppSpec {
            key: key.clone(),
            ..Default::default()
        }
        .validated()?
        .1;
        diesel::insert_into(apps::table)
            .values((
                apps::app_key.eq(key),
                app_values(&fields, now),
                apps::created_at.eq(to_db(now)),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
    }
    Ok(())
}

pub(crate) async fn insert_app(
    conn: &mut Conn,
    key: &str,
    fields: &AppFields,
    now: OffsetDateTime,
) -> Result<App, StoreError> {
    let row: AppRow = diesel::insert_into(apps::table)
        .values((
            apps::app_key.eq(key),
            app_values(fields, now),
            apps::created_at.eq(to_db(now)),
        ))
        .returning(AppRow::as_returning())
        .get_result(conn)
        .await
        .map_err(|e| match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                StoreError::Catalog(CatalogError::Conflict(format!(
                    "app {key} is registered already"
                )))
            }
            e => e.into(),
        })?;
    Ok(row.into())
}

pub(crate) async fn update_app(
    conn: &mut Conn,
    key: &str,
    patch: &AppPatch,
    now: OffsetDateTime,
) -> Result<App, StoreError> {
    let current: App = locked!(
        apps::table
            .filter(apps::app_key.eq(key))
            .select(AppRow::as_select())
    )
    .first(conn)
    .await
    .optional()?
    .ok_or(StoreError::Catalog(CatalogError::AppNotFound))?
    .into();
    let fields = patch.clone().merge(&current)?;
    let row: AppRow = diesel::update(apps::table.find(key))
        .set(app_values(&fields, now))
        .returning(AppRow::as_returning())
        .get_result(conn)
        .await?;
    Ok(row.into())
}

pub(crate) async fn app(conn: &mut Conn, key: &str) -> Result<Option<App>, StoreError> {
    Ok(apps::table
        .find(key)
        .select(AppRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(App::from))
}

pub(crate) async fn apps(conn: &mut Conn) -> Result<Vec<App>, StoreError> {
    Ok(apps::table
        .order(apps::app_key)
        .select(AppRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(App::from)
        .collect())
}

pub(crate) async fn insert_service_key(
    conn: &mut Conn,
    key: &NewServiceKey,
) -> Result<ServiceKey, StoreError> {
    let row: ServiceKeyRow = diesel::insert_into(service_keys::table)
        .values((
            service_keys::app_key.eq(&key.app),
            service_keys::name.eq(&key.name),
            service_keys::key_hash.eq(&key.hash),
            service_keys::prefix.eq(&key.prefix),
            service_keys::created_by.eq(&key.actor),
            service_keys::created_at.eq(to_db(key.now)),
        ))
        .returning(ServiceKeyRow::as_returning())
        .get_result(conn)
        .await
        .map_err(|e| match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                StoreError::Catalog(CatalogError::Conflict("the key exists already".into()))
            }
            e => e.into(),
        })?;
    Ok(row.into())
}

pub(crate) async fn service_keys(
    conn: &mut Conn,
    app: &str,
) -> Result<Vec<ServiceKey>, StoreError> {
    Ok(service_keys::table
        .filter(service_keys::app_key.eq(app))
        .order(service_keys::id.desc())
        .select(ServiceKeyRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(ServiceKey::from)
        .collect())
}

pub(crate) async fn revoke_service_key(
    conn: &mut Conn,
    app: &str,
    id: i64,
    now: OffsetDateTime,
) -> Result<ServiceKey, StoreError> {
    let mine = service_keys::table
        .filter(service_keys::id.eq(id))
        .filter(service_keys::app_key.eq(app));
    // The first revocation's instant stays.
    diesel::update(mine.filter(service_keys::revoked_at.is_null()))
        .set(service_keys::revoked_at.eq(to_db(now)))
        .execute(conn)
        .await?;
    Ok(mine
        .select(ServiceKeyRow::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(StoreError::Catalog(CatalogError::ServiceKeyNotFound))?
        .into())
}

pub(crate) async fn service_key_app(
    conn: &mut Conn,
    hash: &str,
) -> Result<Option<String>, StoreError> {
    Ok(service_keys::table
        .filter(service_keys::key_hash.eq(hash))
        .filter(service_keys::revoked_at.is_null())
        .select(service_keys::app_key)
        .first(conn)
        .await
        .optional()?)
}
