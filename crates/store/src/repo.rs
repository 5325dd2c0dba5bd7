//! [`LedgerRepository`] on the pools: pick the backend, open the right kind of transaction, and
//! call the same query code (see `ops.rs`) for either database.

use async_trait::async_trait;
use tally_ledger::checkin::{CheckinRecord, CheckinRequest};
use tally_ledger::codes::{CodeBatchRequest, RedeemRequest};
use tally_ledger::{
    AccountAudit, AccountRef, AccountView, CheckinConfig, LedgerError, LedgerRepository, Movement,
    Transaction, TransactionQuery,
};
use tally_ledger::{CaptureRequest, Hold, RedemptionCode, ReserveRequest};
use time::OffsetDateTime;

use crate::ops::{pg, sqlite};
use crate::{Pools, Store, StoreError, error_chain};

fn pool_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Connection(e.to_string())
}

/// Runs `$body` in one write transaction: `BEGIN IMMEDIATE` on SQLite (writers queue up front
/// instead of failing with "database is locked"), a plain transaction plus row locks on
/// PostgreSQL. Inside `$body`, `$ops` names the backend's query module.
macro_rules! write_tx {
    ($store:expr, |$conn:ident, $ops:ident| $body:expr) => {
        match &$store.pools {
            Pools::Pg(pool) => {
                let mut c = pool.get().await.map_err(pool_error)?;
                diesel_async::AsyncConnection::transaction(&mut *c, async |$conn| {
                    use pg as $ops;
                    $body
                })
                .await
            }
            Pools::Sqlite { write, .. } => {
                let mut c = write.get().await.map_err(pool_error)?;
                c.immediate_transaction(async |$conn| {
                    use sqlite as $ops;
                    $body
                })
                .await
            }
        }
    };
}

/// Runs `$body` on a reader connection, outside any explicit transaction.
macro_rules! read {
    ($store:expr, |$conn:ident, $ops:ident| $body:expr) => {
        match &$store.pools {
            Pools::Pg(pool) => {
                let mut c = pool.get().await.map_err(pool_error)?;
                let $conn = &mut *c;
                use pg as $ops;
                $body
            }
            Pools::Sqlite { read, .. } => {
                let mut c = read.get().await.map_err(pool_error)?;
                let $conn = &mut *c;
                use sqlite as $ops;
                $body
            }
        }
    };
}

/// Runs `$body` in a read-only transaction that sees one snapshot: a deferred transaction on
/// SQLite (WAL readers keep the snapshot of their first read), REPEATABLE READ on PostgreSQL.
macro_rules! snapshot {
    ($store:expr, |$conn:ident, $ops:ident| $body:expr) => {
        match &$store.pools {
            Pools::Pg(pool) => {
                let mut c = pool.get().await.map_err(pool_error)?;
                c.build_transaction()
                    .read_only()
                    .repeatable_read()
                    .run(async |$conn| {
                        use pg as $ops;
                        $body
                    })
                    .await
            }
            Pools::Sqlite { read, .. } => {
                let mut c = read.get().await.map_err(pool_error)?;
                diesel_async::AsyncConnection::transaction(&mut *c, async |$conn| {
                    use sqlite as $ops;
                    $body
                })
                .await
            }
        }
    };
}

impl Store {
    pub(crate) async fn ping_inner(&self) -> Result<(), StoreError> {
        read!(self, |conn, ops| ops::ping(conn).await)
    }

    async fn apply_once(
        &self,
        movement: &Movement,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<Transaction, StoreError> {
        write_tx!(self, |conn, ops| ops::apply(conn, movement, hash, now)
            .await)
    }
}

fn logged(e: StoreError) -> LedgerError {
    if !matches!(e, StoreError::Ledger(_)) {
        tracing::error!(error = %error_chain(&e), "storage operation failed");
    }
    e.into()
}

#[async_trait]
impl LedgerRepository for Store {
    async fn apply(
        &self,
        movement: Movement,
        now: OffsetDateTime,
    ) -> Result<Transaction, LedgerError> {
        let hash = movement.request_hash();
        match self.apply_once(&movement, &hash, now).await {
            // The account lock serialises one key's requests, so this race is rare (two first
            // requests creating the account at once); the retry finds the winner's row.
            Err(StoreError::IdempotencyRace) => self.apply_once(&movement, &hash, now).await,
            other => other,
        }
        .map_err(logged)
    }

    async fn checkin(&self, request: CheckinRequest) -> Result<CheckinRecord, LedgerError> {
        let request = &request;
        write_tx!(self, |conn, ops| ops::checkin(conn, request).await).map_err(logged)
    }

    async fn account(&self, account: AccountRef) -> Result<AccountView, LedgerError> {
        snapshot!(self, |conn, ops| ops::account(conn, &account).await).map_err(logged)
    }

    async fn transactions(&self, query: TransactionQuery) -> Result<Vec<Transaction>, LedgerError> {
        read!(self, |conn, ops| ops::transactions(conn, &query).await).map_err(logged)
    }

    async fn latest_checkin(
        &self,
        account: AccountRef,
    ) -> Result<Option<CheckinRecord>, LedgerError> {
        read!(self, |conn, ops| ops::latest_checkin(conn, &account).await).map_err(logged)
    }

    async fn checkin_config(&self, app: String) -> Result<Option<CheckinConfig>, LedgerError> {
        read!(self, |conn, ops| ops::checkin_config(conn, &app).await).map_err(logged)
    }

    async fn put_checkin_config(
        &self,
        app: String,
        config: CheckinConfig,
        actor: String,
    ) -> Result<(), LedgerError> {
        let now = tally_ledger::clock::truncate_micros(OffsetDateTime::now_utc());
        let (app, config, actor) = (&app, &config, &actor);
        write_tx!(self, |conn, ops| ops::put_checkin_config(
            conn, app, config, actor, now
        )
        .await)
        .map_err(logged)
    }

    async fn reserve(
        &self,
        request: ReserveRequest,
        now: OffsetDateTime,
    ) -> Result<Hold, LedgerError> {
        let hash = request.request_hash();
        let (request, hash) = (&request, &hash);
        match write_tx!(self, |conn, ops| ops::reserve(conn, request, hash, now)
            .await)
        {
            Err(StoreError::IdempotencyRace) => {
                write_tx!(self, |conn, ops| ops::reserve(conn, request, hash, now)
                    .await)
            }
            other => other,
        }
        .map_err(logged)
    }

    async fn capture(
        &self,
        request: CaptureRequest,
        idempotency_key: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(Hold, Option<Transaction>), LedgerError> {
        // A repeated capture is a replay only with the same key and the same figures.
        let capture_hash = idempotency_key
            .map(|key| tally_ledger::model::fingerprint(&(key, request.request_hash())));
        let (request, hash) = (&request, capture_hash.as_deref());
        write_tx!(self, |conn, ops| ops::capture(conn, request, hash, now)
            .await)
        .map_err(logged)
    }

    async fn release(
        &self,
        app: String,
        hold_id: i64,
        now: OffsetDateTime,
    ) -> Result<Hold, LedgerError> {
        let app = &app;
        write_tx!(self, |conn, ops| ops::release(conn, app, hold_id, now)
            .await)
        .map_err(logged)
    }

    async fn hold(&self, app: String, hold_id: i64) -> Result<Option<Hold>, LedgerError> {
        read!(self, |conn, ops| ops::hold(conn, &app, hold_id).await).map_err(logged)
    }

    async fn create_codes(
        &self,
        request: CodeBatchRequest,
        codes: Vec<String>,
        batch: String,
        now: OffsetDateTime,
    ) -> Result<Vec<RedemptionCode>, LedgerError> {
        let (request, codes, batch) = (&request, &codes, &batch);
        write_tx!(self, |conn, ops| ops::create_codes(
            conn, request, codes, batch, now
        )
        .await)
        .map_err(logged)
    }

    async fn codes(
        &self,
        app: String,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<RedemptionCode>, LedgerError> {
        read!(self, |conn, ops| ops::codes(conn, &app, limit, offset)
            .await)
        .map_err(logged)
    }

    async fn redeem(
        &self,
        request: RedeemRequest,
    ) -> Result<(RedemptionCode, Transaction), LedgerError> {
        let request = &request;
        write_tx!(self, |conn, ops| ops::redeem(conn, request).await).map_err(logged)
    }

    async fn record_redeem_failure(
        &self,
        account: AccountRef,
        now: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        let account = &account;
        write_tx!(self, |conn, ops| ops::record_redeem_failure(
            conn, account, now
        )
        .await)
        .map_err(logged)
    }

    async fn redeem_failures(
        &self,
        account: AccountRef,
        since: OffsetDateTime,
    ) -> Result<(i64, Option<OffsetDateTime>), LedgerError> {
        read!(self, |conn, ops| ops::redeem_failures(
            conn, &account, since
        )
        .await)
        .map_err(logged)
    }

    async fn expire_due(&self, now: OffsetDateTime, limit: i64) -> Result<u64, LedgerError> {
        let ids = read!(self, |conn, ops| ops::accounts_with_due_lots(
            conn, now, limit
        )
        .await)
        .map_err(logged)?;
        let mut swept = 0;
        for id in ids {
            let done = write_tx!(self, |conn, ops| ops::expire_account(conn, id, now).await)
                .map_err(logged)?;
            swept += u64::from(done);
        }
        Ok(swept)
    }

    async fn audit(&self) -> Result<Vec<AccountAudit>, LedgerError> {
        read!(self, |conn, ops| ops::audit(conn).await).map_err(logged)
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        self.ping_inner().await.map_err(logged)
    }
}
