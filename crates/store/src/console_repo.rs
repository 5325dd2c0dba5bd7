//! [`ConsoleRepository`] on the pools (see `queries/console.rs`).

use async_trait::async_trait;
use tally_console::{
    Branding, ConsoleError, ConsoleRepository, NewLink, PortalSession, StoredSession,
};
use time::OffsetDateTime;

use crate::repo::{read, write_tx};
use crate::{Store, StoreError, error_chain};

fn logged(e: StoreError) -> ConsoleError {
    tracing::error!(error = %error_chain(&e), "console storage operation failed");
    ConsoleError::storage(e)
}

#[async_trait]
impl ConsoleRepository for Store {
    async fn insert_link(&self, link: NewLink) -> Result<(), ConsoleError> {
        let link = &link;
        async {
            write_tx!(self, console, |conn, ops| ops::insert_link(conn, link)
                .await)
        }
        .await
        .map_err(logged)
    }

    async fn redeem_link(
        &self,
        token_hash: String,
        now: OffsetDateTime,
    ) -> Result<Option<(String, String)>, ConsoleError> {
        let token_hash = &token_hash;
        async {
            write_tx!(self, console, |conn, ops| ops::redeem_link(
                conn, token_hash, now
            )
            .await)
        }
        .await
        .map_err(logged)
    }

    async fn insert_session(&self, session: StoredSession) -> Result<(), ConsoleError> {
        let session = &session;
        async {
            write_tx!(self, console, |conn, ops| ops::insert_session(
                conn, session
            )
            .await)
        }
        .await
        .map_err(logged)
    }

    async fn session(&self, id_hash: String) -> Result<Option<StoredSession>, ConsoleError> {
        async {
            read!(self, console, |conn, ops| ops::session(conn, &id_hash)
                .await)
        }
        .await
        .map_err(logged)
    }

    async fn touch_session(
        &self,
        id_hash: String,
        now: OffsetDateTime,
    ) -> Result<(), ConsoleError> {
        let id_hash = &id_hash;
        async {
            write_tx!(self, console, |conn, ops| ops::touch_session(
                conn, id_hash, now
            )
            .await)
        }
        .await
        .map_err(logged)
    }

    async fn apps(&self, limit: i64) -> Result<Vec<String>, ConsoleError> {
        async { read!(self, console, |conn, ops| ops::apps(conn, limit).await) }
            .await
            .map_err(logged)
    }

    async fn set_session_app(&self, id_hash: String, app: String) -> Result<bool, ConsoleError> {
        let (id_hash, app) = (&id_hash, &app);
        async {
            write_tx!(self, console, |conn, ops| ops::set_session_app(
                conn, id_hash, app
            )
            .await)
        }
        .await
        .map_err(logged)
    }

    async fn delete_session(
        &self,
        id_hash: String,
        idle_before: OffsetDateTime,
    ) -> Result<(), ConsoleError> {
        let id_hash = &id_hash;
        async {
            write_tx!(self, console, |conn, ops| ops::delete_session(
                conn,
                id_hash,
                idle_before
            )
            .await)
        }
        .await
        .map_err(logged)
    }

    async fn insert_portal_session(
        &self,
        token_hash: String,
        session: PortalSession,
        now: OffsetDateTime,
    ) -> Result<(), ConsoleError> {
        let (token_hash, session) = (&token_hash, &session);
        async {
            write_tx!(self, console, |conn, ops| ops::insert_portal_session(
                conn, token_hash, session, now
            )
            .await)
        }
        .await
        .map_err(logged)
    }

    async fn portal_session(
        &self,
        token_hash: String,
    ) -> Result<Option<PortalSession>, ConsoleError> {
        async {
            read!(self, console, |conn, ops| ops::portal_session(
                conn,
                &token_hash
            )
            .await)
        }
        .await
        .map_err(logged)
    }

    async fn branding(&self, app: String) -> Result<Branding, ConsoleError> {
        async { read!(self, console, |conn, ops| ops::branding(conn, &app).await) }
            .await
            .map_err(logged)
    }

    async fn put_branding(
        &self,
        app: String,
        branding: Branding,
        actor: String,
        now: OffsetDateTime,
    ) -> Result<(), ConsoleError> {
        let (app, branding, actor) = (&app, &branding, &actor);
        async {
            write_tx!(self, console, |conn, ops| ops::put_branding(
                conn, app, branding, actor, now
            )
            .await)
        }
        .await
        .map_err(logged)
    }
}
