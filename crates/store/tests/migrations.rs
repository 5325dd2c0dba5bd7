//! Every migration's `down.sql` reverts its `up.sql` exactly, on both backends.
//!
//! The migrations are applied one at a time; before each one the schema is snapshotted, then the
//! migration is run, reverted, and the schema must equal the snapshot again. Finally everything
//! is reverted and re-applied from scratch, which must reproduce the step-by-step schema.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestDb;
use diesel::migration::{MigrationSource, MigrationVersion};
use diesel_migrations::MigrationHarness;

/// One schema object as a comparable row: `(kind, object, definition)`.
type Snapshot = Vec<(String, String, String)>;

/// The embedded migrations, in order: `(name, version)`.
fn migration_names<DB: diesel::backend::Backend>(
    source: &impl MigrationSource<DB>,
) -> Vec<(String, MigrationVersion<'static>)> {
    source
        .migrations()
        .unwrap()
        .iter()
        .map(|m| (m.name().to_string(), m.name().version().as_owned()))
        .collect()
}

mod sqlite {
    use super::*;
    use diesel::prelude::*;
    use diesel::sql_types::{Nullable, Text};
    use diesel::sqlite::Sqlite;
    use tally_store::SQLITE_MIGRATIONS;

    #[derive(QueryableByName)]
    struct MasterRow {
        #[diesel(sql_type = Text)]
        r#type: String,
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Text)]
        tbl_name: String,
        #[diesel(sql_type = Nullable<Text>)]
        sql: Option<String>,
    }

    pub(super) fn snapshot(conn: &mut SqliteConnection) -> Snapshot {
        diesel::sql_query(
            "SELECT type, name, tbl_name, sql FROM sqlite_master \
             WHERE name NOT LIKE '__diesel%' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .load::<MasterRow>(conn)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.r#type,
                format!("{}.{}", r.tbl_name, r.name),
                r.sql.unwrap_or_default(),
            )
        })
        .collect()
    }

    #[test]
    fn sqlite_every_down_reverts_its_up() {
        let db = TestDb::sqlite();
        let mut conn = SqliteConnection::establish(db.sqlite_path.as_deref().unwrap()).unwrap();
        diesel::connection::SimpleConnection::batch_execute(&mut conn, "PRAGMA foreign_keys = ON")
            .unwrap();
        let names = migration_names::<Sqlite>(&SQLITE_MIGRATIONS);
        assert!(!names.is_empty(), "no SQLite migrations embedded");

        for (name, version) in &names {
            let before = snapshot(&mut conn);
            let ran = conn.run_next_migration(SQLITE_MIGRATIONS).unwrap();
            assert_eq!(&ran, version, "{name}: migrations run out of order");
            let after_up = snapshot(&mut conn);
            assert_ne!(after_up, before, "{name}: up.sql changed nothing");
            conn.revert_last_migration(SQLITE_MIGRATIONS).unwrap();
            assert_eq!(
                snapshot(&mut conn),
                before,
                "{name}: down.sql did not restore the schema"
            );
            conn.run_next_migration(SQLITE_MIGRATIONS).unwrap();
            assert_eq!(
                snapshot(&mut conn),
                after_up,
                "{name}: up.sql after down.sql differs"
            );
        }
        assert!(!conn.has_pending_migration(SQLITE_MIGRATIONS).unwrap());
        let stepwise = snapshot(&mut conn);

        conn.revert_all_migrations(SQLITE_MIGRATIONS).unwrap();
        assert!(
            snapshot(&mut conn).is_empty(),
            "reverting all leaves objects"
        );
        let ran = conn.run_pending_migrations(SQLITE_MIGRATIONS).unwrap();
        assert_eq!(ran.len(), names.len());
        assert_eq!(snapshot(&mut conn), stepwise);
    }
    /// The registry's migration registers every app that already holds data, named by its key.
    #[test]
    fn sqlite_apps_holding_data_are_registered() {
        let db = TestDb::sqlite();
        let mut conn = SqliteConnection::establish(db.sqlite_path.as_deref().unwrap()).unwrap();
        for (name, _) in migration_names::<Sqlite>(&SQLITE_MIGRATIONS) {
            if name.contains("_apps") {
                break;
            }
            conn.run_next_migration(SQLITE_MIGRATIONS).unwrap();
        }
        diesel::connection::SimpleConnection::batch_execute(&mut conn, SEED_BEFORE_APPS).unwrap();
        conn.run_pending_migrations(SQLITE_MIGRATIONS).unwrap();
        let apps: Vec<AppRow> = diesel::sql_query(REGISTRY).load(&mut conn).unwrap();
        assert_eq!(
            registered(apps),
            EXPECTED_APPS.map(|(a, b, c, d)| (a.into(), b.into(), c.into(), d.into()))
        );
    }
}

/// Data of three apps from before the registry: accounts, branding and a check-in setting.
const SEED_BEFORE_APPS: &str = "
    INSERT INTO accounts (app_key, user_id, balance, held, created_at, updated_at)
    VALUES ('legacy', 'alice', 0, 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00'),
           ('legacy', 'bob', 0, 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00');
    INSERT INTO app_branding (app_key, display_name, updated_by, updated_at)
    VALUES ('branded', 'Branded', 'root', '2026-01-01 00:00:00');
    INSERT INTO checkin_configs (app_key, enabled, rewards, timezone, updated_by, updated_at)
    VALUES ('daily', TRUE, '[10]', 'UTC', 'root', '2026-01-01 00:00:00');";
const REGISTRY: &str = "SELECT app_key, name, time_zone, currency FROM apps ORDER BY app_key";
const EXPECTED_APPS: [(&str, &str, &str, &str); 3] = [
    ("branded", "branded", "UTC", "usd"),
    ("daily", "daily", "UTC", "usd"),
    ("legacy", "legacy", "UTC", "usd"),
];

#[derive(diesel::QueryableByName)]
struct AppRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    app_key: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    time_zone: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    currency: String,
}

fn registered(rows: Vec<AppRow>) -> Vec<(String, String, String, String)> {
    rows.into_iter()
        .map(|r| (r.app_key, r.name, r.time_zone, r.currency))
        .collect()
}

mod postgres {
    use super::*;
    use diesel::pg::Pg;
    use diesel::sql_types::Text;
    use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
    use tally_store::POSTGRES_MIGRATIONS;

    #[derive(diesel::QueryableByName)]
    struct SnapRow {
        #[diesel(sql_type = Text)]
        kind: String,
        #[diesel(sql_type = Text)]
        object: String,
        #[diesel(sql_type = Text)]
        detail: String,
    }

    // A column's place is its rank among the table's live columns: PostgreSQL never reuses the
    // position of a dropped column, so a column added again after a down.sql drops it keeps its
    // place in this order but not its raw `ordinal_position`.
    const SNAPSHOT_SQL: &str = "
        SELECT 'column' AS kind,
               c.table_name::text || '.' || c.column_name::text AS object,
               concat_ws(' | ',
                         (row_number() OVER (PARTITION BY c.table_name
                                             ORDER BY c.ordinal_position))::text,
                         c.data_type::text,
                         c.is_nullable::text, COALESCE(c.column_default::text, '-')) AS detail
          FROM information_schema.columns c
         WHERE c.table_schema = 'public' AND c.table_name <> '__diesel_schema_migrations'
        UNION ALL
        SELECT 'index', i.tablename::text || '.' || i.indexname::text, i.indexdef::text
          FROM pg_indexes i
         WHERE i.schemaname = 'public' AND i.tablename <> '__diesel_schema_migrations'
        UNION ALL
        SELECT 'constraint', k.conrelid::regclass::text || '.' || k.conname::text,
               pg_get_constraintdef(k.oid)
          FROM pg_constraint k
         WHERE k.connamespace = 'public'::regnamespace
           AND k.conrelid <> 0
           AND k.conrelid::regclass::text <> '__diesel_schema_migrations'
        UNION ALL
        SELECT 'sequence', s.sequence_name::text, s.data_type::text
          FROM information_schema.sequences s
         WHERE s.sequence_schema = 'public'
        ORDER BY 1, 2, 3";

    async fn snapshot(conn: &mut AsyncPgConnection) -> Snapshot {
        diesel::sql_query(SNAPSHOT_SQL)
            .load::<SnapRow>(conn)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.kind, r.object, r.detail))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_every_down_reverts_its_up() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        let mut inspect = AsyncPgConnection::establish(&db.url).await.unwrap();
        let mut harness =
            AsyncMigrationHarness::new(AsyncPgConnection::establish(&db.url).await.unwrap());
        let names = migration_names::<Pg>(&POSTGRES_MIGRATIONS);
        assert!(!names.is_empty(), "no PostgreSQL migrations embedded");

        for (name, version) in &names {
            let before = snapshot(&mut inspect).await;
            let ran = harness.run_next_migration(POSTGRES_MIGRATIONS).unwrap();
            assert_eq!(&ran, version, "{name}: migrations run out of order");
            let after_up = snapshot(&mut inspect).await;
            assert_ne!(after_up, before, "{name}: up.sql changed nothing");
            harness.revert_last_migration(POSTGRES_MIGRATIONS).unwrap();
            assert_eq!(
                snapshot(&mut inspect).await,
                before,
                "{name}: down.sql did not restore the schema"
            );
            harness.run_next_migration(POSTGRES_MIGRATIONS).unwrap();
            assert_eq!(
                snapshot(&mut inspect).await,
                after_up,
                "{name}: up.sql after down.sql differs"
            );
        }
        assert!(!harness.has_pending_migration(POSTGRES_MIGRATIONS).unwrap());
        let stepwise = snapshot(&mut inspect).await;

        harness.revert_all_migrations(POSTGRES_MIGRATIONS).unwrap();
        assert!(
            snapshot(&mut inspect).await.is_empty(),
            "reverting all leaves objects"
        );
        let ran = harness.run_pending_migrations(POSTGRES_MIGRATIONS).unwrap();
        assert_eq!(ran.len(), names.len());
        assert_eq!(snapshot(&mut inspect).await, stepwise);
        drop(harness);
        drop(inspect);
    }

    /// As on SQLite: the registry's migration registers every app that already holds data.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_apps_holding_data_are_registered() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        let mut harness =
            AsyncMigrationHarness::new(AsyncPgConnection::establish(&db.url).await.unwrap());
        for (name, _) in migration_names::<Pg>(&POSTGRES_MIGRATIONS) {
            if name.contains("_apps") {
                break;
            }
            harness.run_next_migration(POSTGRES_MIGRATIONS).unwrap();
        }
        let mut conn = AsyncPgConnection::establish(&db.url).await.unwrap();
        diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, SEED_BEFORE_APPS)
            .await
            .unwrap();
        harness.run_pending_migrations(POSTGRES_MIGRATIONS).unwrap();
        let apps: Vec<AppRow> = diesel::sql_query(REGISTRY).load(&mut conn).await.unwrap();
        assert_eq!(
            registered(apps),
            EXPECTED_APPS.map(|(a, b, c, d)| (a.into(), b.into(), c.into(), d.into()))
        );
        drop(harness);
        drop(conn);
    }
}

/// `Store::migrate` applies everything once and is a no-op the second time.
mod store_migrate {
    use super::*;
    use common::Backend;

    async fn migrate_twice(backend: Backend) {
        let Some(db) = TestDb::new(backend).await else {
            return;
        };
        let store = tally_store::Store::connect(&db.url).await.unwrap();
        let expected = match backend {
            Backend::Sqlite => {
                migration_names::<diesel::sqlite::Sqlite>(&tally_store::SQLITE_MIGRATIONS).len()
            }
            Backend::Postgres => {
                migration_names::<diesel::pg::Pg>(&tally_store::POSTGRES_MIGRATIONS).len()
            }
        };
        assert_eq!(store.migrate().await.unwrap(), expected);
        assert_eq!(store.migrate().await.unwrap(), 0);
        tally_ledger::LedgerRepository::ping(&store).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_store_migrate_is_idempotent() {
        migrate_twice(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_store_migrate_is_idempotent() {
        migrate_twice(Backend::Postgres).await;
    }

    /// Nodes starting together may race to migrate one PostgreSQL database: every one succeeds
    /// and each migration is applied exactly once. To make the race certain rather than a matter
    /// of timing, the nodes are held at the migration table until all of them have started.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_concurrent_migrate_is_safe() {
        use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

        let Some(db) = TestDb::postgres().await else {
            return;
        };
        let expected = migration_names::<diesel::pg::Pg>(&tally_store::POSTGRES_MIGRATIONS).len();
        let mut gate = AsyncPgConnection::establish(&db.url).await.unwrap();
        gate.batch_execute(diesel::migration::CREATE_MIGRATIONS_TABLE)
            .await
            .unwrap();
        gate.batch_execute("BEGIN; LOCK TABLE __diesel_schema_migrations IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();

        let mut runs = Vec::new();
        for _ in 0..4 {
            let store = tally_store::Store::connect(&db.url).await.unwrap();
            runs.push(tokio::spawn(async move {
                store.migrate().await.map_err(|e| e.to_string())
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        gate.batch_execute("COMMIT").await.unwrap();

        let mut applied = 0;
        for run in runs {
            applied += run.await.unwrap().expect("a racing migrate failed");
        }
        assert_eq!(applied, expected, "each migration applied exactly once");
        drop(gate);
    }
}
