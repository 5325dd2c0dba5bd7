//! [`LedgerRepository`] on the pools: each method names its kind of operation and calls the same
//! query code (see `queries/ledger.rs`) for either database; `exec.rs` decides how it runs.

use std::sync::Arc;

use async_trait::async_trait;
use tally_ledger::checkin::{CheckinRecord, CheckinRequest};
use tally_ledger::codes::{CodeBatchRequest, RedeemRequest};
use tally_ledger::pricing::{Feature, FeatureSpec, Rate, RateSpec};
use tally_ledger::usage::{
    AllowanceAudit, Entitlement, EventAudit, MeterAudit, UsageOutcome, UsageRequest, UsageState,
};
use tally_ledger::{
    AccountAudit, AccountQuery, AccountRef, AccountSummary, AccountView, CheckinConfig,
    LedgerError, LedgerRepository, Movement, Transaction, TransactionQuery,
};
use tally_ledger::{CaptureRequest, Hold, RedemptionCode, ReserveRequest};
use time::OffsetDateTime;

use crate::exec::{exec, retry_race};
use crate::{Store, StoreError};

impl Store {
    pub(crate) async fn ping_inner(&self) -> Result<(), StoreError> {
        exec!(self, ShortRead, ledger, |conn, ops| ops::ping(conn).await)
    }
}

/// History pages starting at most this deep count as short reads (see [`Exec::ShortRead`]).
const SHORT_READ_OFFSET: i64 = 1_000;

// Every operation names its kind and goes through `exec!` (see `exec.rs`).
#[async_trait]
impl LedgerRepository for Store {
    async fn apply(
        &self,
        movement: Movement,
        now: OffsetDateTime,
    ) -> Result<Transaction, LedgerError> {
        let hash: Arc<str> = movement.request_hash().into();
        let movement = Arc::new(movement);
        retry_race(|| {
            let (movement, hash) = (movement.clone(), hash.clone());
            async move {
                if let crate::Pools::Pg(pg) = &self.pools
                    && movement.kind.plans_in_turn()
                {
                    return pg.debit(movement, hash, now).await;
                }
                exec!(self, Grouped(&movement.account), ledger, |conn, ops| {
                    ops::apply(conn, &movement, &hash, now).await
                })
            }
        })
        .await
        .map_err(Into::into)
    }

    async fn checkin(
        &self,
        request: CheckinRequest,
    ) -> Result<(CheckinRecord, CheckinConfig), LedgerError> {
        if let crate::Pools::Pg(pg) = &self.pools {
            return pg.checkin(request).await.map_err(Into::into);
        }
        exec!(self, Grouped(&request.account), ledger, |conn, ops| {
            ops::checkin(conn, &request).await
        })
        .map_err(Into::into)
    }

    async fn accounts(&self, query: AccountQuery) -> Result<Vec<AccountSummary>, LedgerError> {
        exec!(self, Read, ledger, |conn, ops| ops::accounts(conn, &query)
            .await)
        .map_err(Into::into)
    }

    async fn daily_counts(
        &self,
        query: tally_ledger::stats::StatsQuery,
    ) -> Result<tally_ledger::stats::DailyCounts, LedgerError> {
        exec!(self, Snapshot, stats, |conn, ops| ops::daily_counts(
            conn, &query
        )
        .await)
        .map_err(Into::into)
    }

    async fn active_subscriptions(&self, app: String) -> Result<i64, LedgerError> {
        exec!(self, ShortRead, stats, |conn, ops| {
            ops::active_subscriptions(conn, &app).await
        })
        .map_err(Into::into)
    }

    async fn rollup(
        &self,
        app: String,
        from: time::Date,
        to: time::Date,
    ) -> Result<Vec<tally_ledger::stats::RollupRow>, LedgerError> {
        exec!(self, ShortRead, stats, |conn, ops| ops::rollup(
            conn, &app, from, to
        )
        .await)
        .map_err(Into::into)
    }

    async fn store_rollup(
        &self,
        app: String,
        rows: Vec<tally_ledger::stats::RollupRow>,
    ) -> Result<(), LedgerError> {
        exec!(self, Write, stats, |conn, ops| ops::store_rollup(
            conn, &app, &rows
        )
        .await)
        .map_err(Into::into)
    }

    async fn account_summary(
        &self,
        account: AccountRef,
    ) -> Result<Option<AccountSummary>, LedgerError> {
        exec!(self, ShortRead, ledger, |conn, ops| ops::account_summary(
            conn, &account
        )
        .await)
        .map_err(Into::into)
    }

    async fn account(
        &self,
        account: AccountRef,
        now: OffsetDateTime,
    ) -> Result<AccountView, LedgerError> {
        // One statement reads the account and its soonest-expiring lots consistently. Only an
        // account with holds, or with more due lots than that statement reads, needs more
        // statements, and so a snapshot around them.
        let first = account.clone();
        let view = exec!(self, ShortRead, ledger, |conn, ops| {
            ops::account_and_lots(conn, &first, now).await
        });
        match view {
            Ok(Some(view)) => Ok(view),
            Ok(None) => {
                exec!(self, Snapshot, ledger, |conn, ops| ops::account(
                    conn, &account, now
                )
                .await)
            }
            Err(e) => Err(e),
        }
        .map_err(Into::into)
    }

    async fn account_contents(
        &self,
        account: AccountRef,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<AccountView, LedgerError> {
        exec!(self, Snapshot, ledger, |conn, ops| ops::account_contents(
            conn, &account, now, limit
        )
        .await)
        .map_err(Into::into)
    }

    async fn transactions(&self, query: TransactionQuery) -> Result<Vec<Transaction>, LedgerError> {
        // One user's page near the top, or below a `before` cursor (offset 0), walks at most
        // `offset + limit` index entries: a short read. App-wide listings and deep pages may walk
        // far more (even below a cursor: the planner may walk the primary key past other apps'
        // rows).
        if query.user.is_some() && query.offset <= SHORT_READ_OFFSET {
            return exec!(self, ShortRead, ledger, |conn, ops| {
                ops::transactions(conn, &query).await
            })
            .map_err(Into::into);
        }
        exec!(self, Read, ledger, |conn, ops| ops::transactions(
            conn, &query
        )
        .await)
        .map_err(Into::into)
    }

    async fn latest_checkin(
        &self,
        account: AccountRef,
    ) -> Result<Option<CheckinRecord>, LedgerError> {
        exec!(self, ShortRead, ledger, |conn, ops| ops::latest_checkin(
            conn, &account
        )
        .await)
        .map_err(Into::into)
    }

    async fn checkin_config(&self, app: String) -> Result<Option<CheckinConfig>, LedgerError> {
        exec!(self, ShortRead, ledger, |conn, ops| ops::checkin_config(
            conn, &app
        )
        .await)
        .map_err(Into::into)
    }

    async fn put_checkin_config(
        &self,
        app: String,
        config: CheckinConfig,
        actor: String,
        now: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        exec!(self, Write, ledger, |conn, ops| ops::put_checkin_config(
            conn, &app, &config, &actor, now
        )
        .await)
        .map_err(Into::into)
    }

    async fn reserve(
        &self,
        request: ReserveRequest,
        now: OffsetDateTime,
    ) -> Result<Hold, LedgerError> {
        let hash: Arc<str> = request.request_hash().into();
        let request = Arc::new(request);
        retry_race(|| {
            let (request, hash) = (request.clone(), hash.clone());
            async move {
                exec!(self, Grouped(&request.account), ledger, |conn, ops| {
                    ops::reserve(conn, &request, &hash, now).await
                })
            }
        })
        .await
        .map_err(Into::into)
    }

    async fn capture(
        &self,
        request: CaptureRequest,
        idempotency_key: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(Hold, Option<Transaction>), LedgerError> {
        // A repeated capture is a replay only with the same key and the same figures.
        let hash = idempotency_key
            .map(|key| tally_ledger::model::fingerprint(&(key, request.request_hash())));
        async {
            exec!(self, Grouped, ledger, |conn, ops| ops::capture(
                conn,
                &request,
                hash.as_deref(),
                now
            )
            .await)
        }
        .await
        .map_err(Into::into)
    }

    async fn release(
        &self,
        app: String,
        hold_id: i64,
        now: OffsetDateTime,
    ) -> Result<Hold, LedgerError> {
        async {
            exec!(self, Grouped, ledger, |conn, ops| ops::release(
                conn, &app, hold_id, now
            )
            .await)
        }
        .await
        .map_err(Into::into)
    }

    async fn hold(&self, app: String, hold_id: i64) -> Result<Option<Hold>, LedgerError> {
        exec!(self, ShortRead, ledger, |conn, ops| ops::hold(
            conn, &app, hold_id
        )
        .await)
        .map_err(Into::into)
    }

    async fn create_codes(
        &self,
        request: CodeBatchRequest,
        codes: Vec<String>,
        batch: String,
        now: OffsetDateTime,
    ) -> Result<Vec<RedemptionCode>, LedgerError> {
        exec!(self, Write, ledger, |conn, ops| ops::create_codes(
            conn, &request, &codes, &batch, now
        )
        .await)
        .map_err(Into::into)
    }

    async fn codes(
        &self,
        app: String,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<RedemptionCode>, LedgerError> {
        exec!(self, Read, ledger, |conn, ops| ops::codes(
            conn, &app, limit, offset
        )
        .await)
        .map_err(Into::into)
    }

    async fn redeem(
        &self,
        request: RedeemRequest,
    ) -> Result<(RedemptionCode, Transaction), LedgerError> {
        exec!(self, Write, ledger, |conn, ops| ops::redeem(conn, &request)
            .await)
        .map_err(Into::into)
    }

    async fn record_redeem_failure(
        &self,
        account: AccountRef,
        now: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        exec!(self, Write, ledger, |conn, ops| ops::record_redeem_failure(
            conn, &account, now
        )
        .await)
        .map_err(Into::into)
    }

    async fn redeem_failures(
        &self,
        account: AccountRef,
        since: OffsetDateTime,
    ) -> Result<(i64, Option<OffsetDateTime>), LedgerError> {
        exec!(self, ShortRead, ledger, |conn, ops| ops::redeem_failures(
            conn, &account, since
        )
        .await)
        .map_err(Into::into)
    }

    async fn expire_due(&self, now: OffsetDateTime, limit: i64) -> Result<u64, LedgerError> {
        let ids = exec!(self, Read, ledger, |conn, ops| {
            ops::accounts_with_due_lots(conn, now, limit).await
        })?;
        let mut swept = 0;
        for id in ids {
            let done = exec!(self, Write, ledger, |conn, ops| {
                ops::expire_account(conn, id, now).await
            })?;
            swept += u64::from(done);
        }
        Ok(swept)
    }

    async fn audit(&self) -> Result<Vec<AccountAudit>, LedgerError> {
        exec!(self, Read, ledger, |conn, ops| ops::audit(conn).await).map_err(Into::into)
    }

    async fn credit_flows(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<tally_ledger::stats::CreditFlow>, LedgerError> {
        let (from, to) = (crate::rows::to_db(from), crate::rows::to_db(to));
        exec!(self, Read, stats, |conn, ops| ops::credit_flows(
            conn, from, to
        )
        .await)
        .map_err(Into::into)
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        self.ping_inner().await.map_err(Into::into)
    }

    async fn features(&self, app: String) -> Result<Vec<Feature>, LedgerError> {
        exec!(self, ShortRead, usage, |conn, ops| ops::features(
            conn, &app
        )
        .await)
        .map_err(Into::into)
    }

    async fn put_feature(
        &self,
        app: String,
        spec: FeatureSpec,
        create: bool,
        now: OffsetDateTime,
    ) -> Result<Feature, LedgerError> {
        exec!(self, Write, usage, |conn, ops| {
            ops::put_feature(conn, &app, &spec, create, now).await
        })
        .map_err(Into::into)
    }

    async fn rates(&self, app: String, feature: Option<String>) -> Result<Vec<Rate>, LedgerError> {
        exec!(self, Read, usage, |conn, ops| {
            ops::rates(conn, &app, feature.as_deref()).await
        })
        .map_err(Into::into)
    }

    async fn add_rate(
        &self,
        app: String,
        spec: RateSpec,
        actor: String,
        now: OffsetDateTime,
    ) -> Result<Rate, LedgerError> {
        exec!(self, Write, usage, |conn, ops| {
            ops::add_rate(conn, &app, &spec, &actor, now).await
        })
        .map_err(Into::into)
    }

    async fn entitlements(
        &self,
        app: String,
        scope: Option<String>,
    ) -> Result<Vec<(String, Entitlement)>, LedgerError> {
        exec!(self, Read, usage, |conn, ops| {
            ops::entitlements_of(conn, &app, scope.as_deref()).await
        })
        .map_err(Into::into)
    }

    async fn put_entitlements(
        &self,
        app: String,
        scope: String,
        list: Vec<Entitlement>,
    ) -> Result<Vec<Entitlement>, LedgerError> {
        exec!(self, Write, usage, |conn, ops| {
            ops::put_entitlements(conn, &app, &scope, &list).await
        })
        .map_err(Into::into)
    }

    async fn usage_state(
        &self,
        request: UsageRequest,
        now: OffsetDateTime,
    ) -> Result<(UsageState, i64), LedgerError> {
        let cache = self.pricing.clone();
        exec!(self, Snapshot, usage, |conn, ops| {
            ops::usage_state(conn, &cache, &request, now).await
        })
        .map_err(Into::into)
    }

    async fn track(
        &self,
        request: UsageRequest,
        now: OffsetDateTime,
    ) -> Result<UsageOutcome, LedgerError> {
        let hash: Arc<str> = request.request_hash().into();
        let request = Arc::new(request);
        retry_race(|| {
            let (request, hash, cache) = (request.clone(), hash.clone(), self.pricing.clone());
            async move {
                if let crate::Pools::Pg(pg) = &self.pools {
                    return pg.track(request, hash, now, cache).await;
                }
                exec!(self, Grouped(&request.account), usage, |conn, ops| {
                    ops::track(conn, &cache, &request, &hash, now).await
                })
            }
        })
        .await
        .map_err(Into::into)
    }

    async fn reserve_usage(
        &self,
        usage: UsageRequest,
        reserve: ReserveRequest,
        request_hash: String,
        now: OffsetDateTime,
    ) -> Result<Hold, LedgerError> {
        let shared = Arc::new((usage, reserve, request_hash));
        retry_race(|| {
            let (shared, cache) = (shared.clone(), self.pricing.clone());
            async move {
                exec!(self, Grouped(&shared.0.account), usage, |conn, ops| {
                    let (usage, reserve, hash) = &*shared;
                    ops::reserve_usage(conn, &cache, usage, reserve, hash, now).await
                })
            }
        })
        .await
        .map_err(Into::into)
    }

    async fn capture_usage(
        &self,
        app: String,
        hold_id: i64,
        quantities: std::collections::BTreeMap<String, i64>,
        now: OffsetDateTime,
    ) -> Result<(Hold, UsageOutcome, Option<Transaction>), LedgerError> {
        let hash = tally_ledger::model::fingerprint(&quantities);
        let cache = self.pricing.clone();
        exec!(self, Grouped, usage, |conn, ops| {
            ops::capture_usage(conn, &cache, &app, hold_id, &quantities, &hash, now).await
        })
        .map_err(Into::into)
    }

    async fn usage_audit(
        &self,
    ) -> Result<(Vec<AllowanceAudit>, Vec<MeterAudit>, Vec<EventAudit>), LedgerError> {
        exec!(self, Snapshot, usage, |conn, ops| ops::usage_audit(conn)
            .await)
        .map_err(Into::into)
    }
}
