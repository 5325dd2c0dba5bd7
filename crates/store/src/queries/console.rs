//! The console's sign-in links and sessions.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tally_console::{Branding, NewLink, PortalSession, StoredSession};
use time::OffsetDateTime;

use super::Conn;
use crate::StoreError;
use crate::rows::{from_db, to_db};
use crate::schema::{app_branding, apps, console_links, console_sessions, portal_sessions};

pub(crate) async fn insert_link(conn: &mut Conn, link: &NewLink) -> Result<(), StoreError> {
    diesel::insert_into(console_links::table)
        .values((
            console_links::token_hash.eq(&link.token_hash),
            console_links::app_key.eq(&link.app),
            console_links::operator.eq(&link.operator),
            console_links::created_at.eq(to_db(link.created_at)),
            console_links::expires_at.eq(to_db(link.expires_at)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// One conditional update marks the link used: of two openings at once, one changes the row.
pub(crate) async fn redeem_link(
    conn: &mut Conn,
    token_hash: &str,
    now: OffsetDateTime,
) -> Result<Option<(String, String)>, StoreError> {
    Ok(diesel::update(
        console_links::table
            .filter(console_links::token_hash.eq(token_hash))
            .filter(console_links::used_at.is_null())
            .filter(console_links::expires_at.gt(to_db(now))),
    )
    .set(console_links::used_at.eq(to_db(now)))
    .returning((console_links::app_key, console_links::operator))
    .get_result(conn)
    .await
    .optional()?)
}

pub(crate) async fn insert_session(
    conn: &mut Conn,
    session: &StoredSession,
) -> Result<(), StoreError> {
    diesel::insert_into(console_sessions::table)
        .values((
            console_sessions::id_hash.eq(&session.id_hash),
            console_sessions::app_key.eq(&session.app),
            console_sessions::operator.eq(&session.operator),
            console_sessions::csrf_token.eq(&session.csrf_token),
            console_sessions::created_at.eq(to_db(session.created_at)),
            console_sessions::last_seen_at.eq(to_db(session.last_seen_at)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn session(
    conn: &mut Conn,
    id_hash: &str,
) -> Result<Option<StoredSession>, StoreError> {
    let row: Option<(
        String,
        String,
        String,
        String,
        time::PrimitiveDateTime,
        time::PrimitiveDateTime,
    )> = console_sessions::table
        .find(id_hash)
        .select((
            console_sessions::id_hash,
            console_sessions::app_key,
            console_sessions::operator,
            console_sessions::csrf_token,
            console_sessions::created_at,
            console_sessions::last_seen_at,
        ))
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(
        |(id_hash, app, operator, csrf_token, created_at, last_seen_at)| StoredSession {
            id_hash,
            app,
            operator,
            csrf_token,
            created_at: from_db(created_at),
            last_seen_at: from_db(last_seen_at),
        },
    ))
}

pub(crate) async fn touch_session(
    conn: &mut Conn,
    id_hash: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    diesel::update(console_sessions::table.find(id_hash))
        .set(console_sessions::last_seen_at.eq(to_db(now)))
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn delete_session(
    conn: &mut Conn,
    id_hash: &str,
    idle_before: OffsetDateTime,
) -> Result<(), StoreError> {
    diesel::delete(
        console_sessions::table.filter(
            console_sessions::id_hash
                .eq(id_hash)
                .or(console_sessions::last_seen_at.lt(to_db(idle_before))),
        ),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores a portal session; expired ones go in passing, so the table holds the live ones.
pub(crate) async fn insert_portal_session(
    conn: &mut Conn,
    token_hash: &str,
    session: &PortalSession,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    diesel::delete(portal_sessions::table.filter(portal_sessions::expires_at.le(to_db(now))))
        .execute(conn)
        .await?;
    diesel::insert_into(portal_sessions::table)
        .values((
            portal_sessions::token_hash.eq(token_hash),
            portal_sessions::app_key.eq(&session.app),
            portal_sessions::user_id.eq(&session.user),
            portal_sessions::return_url.eq(&session.return_url),
            portal_sessions::created_at.eq(to_db(now)),
            portal_sessions::expires_at.eq(to_db(session.expires_at)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn portal_session(
    conn: &mut Conn,
    token_hash: &str,
) -> Result<Option<PortalSession>, StoreError> {
    let row: Option<(String, String, String, time::PrimitiveDateTime)> = portal_sessions::table
        .find(token_hash)
        .select((
            portal_sessions::app_key,
            portal_sessions::user_id,
            portal_sessions::return_url,
            portal_sessions::expires_at,
        ))
        .first(conn)
        .await
        .optional()?;
    Ok(
        row.map(|(app, user, return_url, expires_at)| PortalSession {
            app,
            user,
            return_url,
            expires_at: from_db(expires_at),
        }),
    )
}

pub(crate) async fn branding(conn: &mut Conn, app: &str) -> Result<Branding, StoreError> {
    let row: Option<(Option<String>, Option<String>, Option<String>)> = app_branding::table
        .find(app)
        .select((
            app_branding::display_name,
            app_branding::accent_color,
            app_branding::logo_url,
        ))
        .first(conn)
        .await
        .optional()?;
    Ok(row.map_or_else(
        Branding::default,
        |(display_name, accent_color, logo_url)| Branding {
            display_name,
            accent_color,
            logo_url,
        },
    ))
}

pub(crate) async fn put_branding(
    conn: &mut Conn,
    app: &str,
    branding: &Branding,
    actor: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let values = (
        app_branding::display_name.eq(branding.display_name.as_deref()),
        app_branding::accent_color.eq(branding.accent_color.as_deref()),
        app_branding::logo_url.eq(branding.logo_url.as_deref()),
        app_branding::updated_by.eq(actor),
        app_branding::updated_at.eq(to_db(now)),
    );
    diesel::insert_into(app_branding::table)
        .values((app_branding::app_key.eq(app), values))
        .on_conflict(app_branding::app_key)
        .do_update()
        .set(values)
        .execute(conn)
        .await?;
    Ok(())
}

/// The registered apps, in order, at most `limit`.
pub(crate) async fn apps(conn: &mut Conn, limit: i64) -> Result<Vec<String>, StoreError> {
    Ok(apps::table
        .select(apps::app_key)
        .order(apps::app_key)
        .limit(limit)
        .load(conn)
        .await?)
}

/// Moves a session to another app.
pub(crate) async fn set_session_app(
    conn: &mut Conn,
    id_hash: &str,
    app: &str,
) -> Result<bool, StoreError> {
    let changed = diesel::update(console_sessions::table.find(id_hash))
        .set(console_sessions::app_key.eq(app))
        .execute(conn)
        .await?;
    Ok(changed == 1)
}
