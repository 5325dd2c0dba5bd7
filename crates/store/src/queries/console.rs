//! The console's sign-in links and sessions.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tally_console::{NewLink, StoredSession};
use time::OffsetDateTime;

use super::Conn;
use crate::StoreError;
use crate::rows::{from_db, to_db};
use crate::schema::{console_links, console_sessions};

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
