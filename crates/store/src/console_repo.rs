//! [`ConsoleRepository`] on the pools: the console's queries (see `queries/console.rs`), run the
//! way `exec.rs` says.

use async_trait::async_trait;
use tally_console::{
    Branding, ConsoleError, ConsoleRepository, NewLink, PortalSession, StoredSession,
};
use time::OffsetDateTime;

use crate::Store;
use crate::exec::exec;

#[async_trait]
impl ConsoleRepository for Store {
    async fn insert_link(&self, link: NewLink) -> Result<(), ConsoleError> {
        exec!(self, Write, console, |conn, ops| ops::insert_link(
            conn, &link
        )
        .await)
        .map_err(Into::into)
    }

    async fn redeem_link(
        &self,
        token_hash: String,
        now: OffsetDateTime,
    ) -> Result<Option<(String, String)>, ConsoleError> {
        exec!(self, Write, console, |conn, ops| ops::redeem_link(
            conn,
            &token_hash,
            now
        )
        .await)
        .map_err(Into::into)
    }

    async fn insert_session(&self, session: StoredSession) -> Result<(), ConsoleError> {
        exec!(self, Write, console, |conn, ops| ops::insert_session(
            conn, &session
        )
        .await)
        .map_err(Into::into)
    }

    async fn session(&self, id_hash: String) -> Result<Option<StoredSession>, ConsoleError> {
        exec!(self, ShortRead, console, |conn, ops| ops::session(
            conn, &id_hash
        )
        .await)
        .map_err(Into::into)
    }

    async fn touch_session(
        &self,
        id_hash: String,
        now: OffsetDateTime,
    ) -> Result<(), ConsoleError> {
        exec!(self, Write, console, |conn, ops| ops::touch_session(
            conn, &id_hash, now
        )
        .await)
        .map_err(Into::into)
    }

    async fn apps(&self, limit: i64) -> Result<Vec<String>, ConsoleError> {
        exec!(self, Read, console, |conn, ops| ops::apps(conn, limit)
            .await)
        .map_err(Into::into)
    }

    async fn set_session_app(&self, id_hash: String, app: String) -> Result<bool, ConsoleError> {
        exec!(self, Write, console, |conn, ops| ops::set_session_app(
            conn, &id_hash, &app
        )
        .await)
        .map_err(Into::into)
    }

    async fn delete_session(
        &self,
        id_hash: String,
        idle_before: OffsetDateTime,
    ) -> Result<(), ConsoleError> {
        exec!(self, Write, console, |conn, ops| ops::delete_session(
            conn,
            &id_hash,
            idle_before
        )
        .await)
        .map_err(Into::into)
    }

    async fn insert_portal_session(
        &self,
        token_hash: String,
        session: PortalSession,
        now: OffsetDateTime,
    ) -> Result<(), ConsoleError> {
        exec!(self, Write, console, |conn, ops| {
            ops::insert_portal_session(conn, &token_hash, &session, now).await
        })
        .map_err(Into::into)
    }

    async fn portal_session(
        &self,
        token_hash: String,
    ) -> Result<Option<PortalSession>, ConsoleError> {
        exec!(self, ShortRead, console, |conn, ops| ops::portal_session(
            conn,
            &token_hash
        )
        .await)
        .map_err(Into::into)
    }

    async fn branding(&self, app: String) -> Result<Branding, ConsoleError> {
        exec!(self, ShortRead, console, |conn, ops| ops::branding(
            conn, &app
        )
        .await)
        .map_err(Into::into)
    }

    async fn put_branding(
        &self,
        app: String,
        branding: Branding,
        actor: String,
        now: OffsetDateTime,
    ) -> Result<(), ConsoleError> {
        exec!(self, Write, console, |conn, ops| ops::put_branding(
            conn, &app, &branding, &actor, now
        )
        .await)
        .map_err(Into::into)
    }
}
