//! The ledger service: validation, the clock, and the rules that need no database.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::checkin::{self, CheckinOutcome, CheckinRequest, CheckinStatus};
use crate::codes::{self, CodeBatchRequest, RedeemRequest, RedemptionCode};
use crate::holds::{CaptureRequest, Hold, ReserveRequest};
use crate::plan::balance_view;
use crate::pricing::{Feature, FeatureSpec, Rate, RateSpec};
use crate::stats::{self, Stats, StatsQuery};
use crate::usage::{
    Entitlement, FeatureStatus, UsageOutcome, UsageQuote, UsageRequest, quote_usage,
};
use crate::{
    AccountQuery, AccountRef, AccountSummary, AccountView, BalanceView, CheckinConfig, Clock,
    LedgerError, LedgerRepository, MAX_USER_ID_CHARS, Movement, MovementKind, Transaction,
    TransactionQuery, TxnType, Violation,
};

/// Deepest offset a history page may start at.
pub const MAX_OFFSET: i64 = 1_000_000;

/// The credits ledger, over any [`LedgerRepository`].
#[derive(Debug, Clone)]
pub struct Ledger {
    repo: Arc<dyn LedgerRepository>,
    clock: Arc<dyn Clock>,
}

/// Result of a sufficiency check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sufficiency {
    /// Whether `available >= amount`.
    pub sufficient: bool,
    /// Current balance.
    pub balance: i64,
    /// Spendable now.
    pub available: i64,
}

impl Ledger {
    /// A ledger over `repo` on the wall clock.
    pub fn new(repo: impl LedgerRepository) -> Self {
        Self::with_clock(Arc::new(repo), Arc::new(crate::SystemClock))
    }

    /// A ledger over `repo`, reading time from `clock`.
    pub fn with_clock(repo: Arc<dyn LedgerRepository>, clock: Arc<dyn Clock>) -> Self {
        Self { repo, clock }
    }

    /// The current instant according to the ledger's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The repository underneath.
    pub fn repository(&self) -> &Arc<dyn LedgerRepository> {
        &self.repo
    }

    /// Applies any movement after validating it. (That an expiry lies in the future is checked
    /// by [`crate::plan::plan_movement`], after the repository has looked up the idempotency key:
    /// a replay answers its original even once that instant has passed.)
    pub async fn apply(&self, movement: Movement) -> Result<Transaction, LedgerError> {
        movement.validate()?;
        let now = self.clock.now();
        self.repo.apply(movement, now).await
    }

    /// Spends credits; never overdraws.
    pub async fn spend(
        &self,
        account: AccountRef,
        credits: i64,
        description: String,
        idempotency_key: Option<String>,
        metadata: Option<serde_json::Value>,
    ) -> Result<Transaction, LedgerError> {
        self.apply(Movement {
            account,
            kind: MovementKind::Debit {
                txn_type: TxnType::AiUsage,
                credits,
            },
            description,
            idempotency_key,
            metadata,
            actor: None,
        })
        .await
    }

    /// Grants credits as a service-side `reward`, optionally expiring.
    pub async fn grant(
        &self,
        account: AccountRef,
        credits: i64,
        description: String,
        idempotency_key: Option<String>,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<Transaction, LedgerError> {
        self.apply(Movement {
            account,
            kind: MovementKind::Grant {
                txn_type: TxnType::Reward,
                credits,
                expires_at,
            },
            description,
            idempotency_key,
            metadata: None,
            actor: None,
        })
        .await
    }

    /// The balance as the user sees it now.
    pub async fn balance(&self, account: AccountRef) -> Result<BalanceView, LedgerError> {
        let now = self.clock.now();
        let state = self.repo.account(account, now).await?;
        Ok(balance_view(&state, now))
    }

    /// A page of the app's accounts for its operators (`limit` 1–100), newest first, and
    /// whether more follow (the next page's `before` is the last row's user).
    pub async fn accounts(
        &self,
        mut query: AccountQuery,
    ) -> Result<(Vec<AccountSummary>, bool), LedgerError> {
        if !(1..=100).contains(&query.limit) {
            return Err(LedgerError::invalid("limit", "must be between 1 and 100"));
        }
        if let Some(prefix) = &query.prefix
            && (prefix.chars().count() > MAX_USER_ID_CHARS || prefix.chars().any(char::is_control))
        {
            return Err(LedgerError::invalid(
                "query",
                "must be at most 128 characters without control characters",
            ));
        }
        let limit = query.limit;
        query.limit += 1;
        let mut rows = self.repo.accounts(query).await?;
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        Ok((rows, has_more))
    }

    /// One account as operators see it: its summary (none when the user never had a movement
    /// or hold), the balance as the user sees it, and the live lots (in consumption order) and
    /// active holds behind it, at most [`crate::DETAIL_ROWS`] of each.
    pub async fn account_detail(
        &self,
        account: AccountRef,
    ) -> Result<Option<(AccountSummary, BalanceView, AccountView)>, LedgerError> {
        let Some(summary) = self.repo.account_summary(account.clone()).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let state = self.repo.account(account.clone(), now).await?;
        let contents = self
            .repo
            .account_contents(account, now, crate::DETAIL_ROWS)
            .await?;
        Ok(Some((summary, balance_view(&state, now), contents)))
    }

    /// The app's statistics over a range of days, in buckets. Finished days come from the
    /// rollup, counted and stored the first time they are asked for; the rest are counted now.
    pub async fn stats(&self, query: StatsQuery) -> Result<Stats, LedgerError> {
        query.validate()?;
        let plan = stats::rollup_plan(&query, self.clock.now());
        let mut counts = stats::DailyCounts::default();
        if let Some((from, to)) = plan.settled {
            let mut rows = self.repo.rollup(query.app.clone(), from, to).await?;
            let rolled_up: Vec<time::Date> = rows
                .iter()
                .filter(|r| r.metric == stats::RollupMetric::Day)
                .map(|r| r.day)
                .collect();
            if let Some(span) = stats::missing_span((from, to), &rolled_up) {
                let fresh = self.repo.daily_counts(query.over(span)).await?;
                let missing = stats::days_missing(span, &rolled_up);
                let new_rows = fresh.rollup_rows(&missing);
                self.repo
                    .store_rollup(query.app.clone(), new_rows.clone())
                    .await?;
                rows.extend(new_rows);
            }
            counts = stats::DailyCounts::from_rollup(rows);
        }
        if let Some(span) = plan.live {
            counts = counts.merge(self.repo.daily_counts(query.over(span)).await?);
        }
        counts.active_subscriptions = self.repo.active_subscriptions(query.app.clone()).await?;
        Ok(stats::fold(&query, counts))
    }

    /// Whether `amount` could be spent now.
    pub async fn check(
        &self,
        account: AccountRef,
        amount: i64,
    ) -> Result<Sufficiency, LedgerError> {
        let mut p = tally_kernel::FieldErrors::default();
        crate::model::check_account(&mut p, &account);
        p.check(
            (1..=crate::MAX_CREDITS).contains(&amount),
            "amount",
            format!("must be a whole number from 1 to {}", crate::MAX_CREDITS),
        );
        p.finish()?;
        let view = self.balance(account).await?;
        Ok(Sufficiency {
            sufficient: view.available >= amount,
            balance: view.balance,
            available: view.available,
        })
    }

    /// A page of history, newest first, and whether more rows follow. The page starts either
    /// `offset` rows down or, with `before`, right below that transaction id (keyset paging:
    /// the next page's `before` is the last row's id).
    pub async fn transactions(
        &self,
        mut query: TransactionQuery,
    ) -> Result<(Vec<Transaction>, bool), LedgerError> {
        if !(1..=100).contains(&query.limit) {
            return Err(LedgerError::invalid("limit", "must be between 1 and 100"));
        }
        if !(0..=MAX_OFFSET).contains(&query.offset) {
            return Err(LedgerError::invalid(
                "offset",
                format!("must be between 0 and {MAX_OFFSET}"),
            ));
        }
        if let Some(before) = query.before {
            if before <= 0 {
                return Err(LedgerError::invalid("before", "must be a transaction id"));
            }
            if query.offset != 0 {
                return Err(LedgerError::invalid(
                    "before",
                    "cannot be combined with a non-zero offset",
                ));
            }
        }
        let limit = query.limit;
        query.limit += 1;
        let mut rows = self.repo.transactions(query).await?;
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        Ok((rows, has_more))
    }

    /// Per app and type, the credits moved by transactions recorded in `[from, to)`.
    pub async fn credit_flows(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<crate::stats::CreditFlow>, LedgerError> {
        self.repo.credit_flows(from, to).await
    }

    /// The app's check-in configuration (defaults when never set).
    pub async fn checkin_config(&self, app: &str) -> Result<CheckinConfig, LedgerError> {
        Ok(self
            .repo
            .checkin_config(app.to_owned())
            .await?
            .unwrap_or_default())
    }

    /// Replaces the app's check-in configuration after validating it.
    pub async fn set_checkin_config(
        &self,
        app: &str,
        config: CheckinConfig,
        actor: &str,
    ) -> Result<CheckinConfig, LedgerError> {
        config.validate()?;
        self.repo
            .put_checkin_config(
                app.to_owned(),
                config.clone(),
                actor.to_owned(),
                self.clock.now(),
            )
            .await?;
        Ok(config)
    }

    /// Today's check-in: at most one per local day, reward by streak.
    pub async fn checkin(&self, account: AccountRef) -> Result<CheckinOutcome, LedgerError> {
        let now = self.clock.now();
        let (record, config) = self.repo.checkin(CheckinRequest { account, now }).await?;
        let day = record.day;
        let next_checkin_at = config.day_start(day.next_day().unwrap_or(day))?;
        Ok(CheckinOutcome {
            awarded: record.awarded,
            balance: record.balance_after,
            streak: record.streak,
            day: record.day,
            next_checkin_at,
        })
    }

    /// Whether the user checked in today, their streak and the next reward.
    pub async fn checkin_status(&self, account: AccountRef) -> Result<CheckinStatus, LedgerError> {
        let config = self.checkin_config(&account.app).await?;
        let latest = self.repo.latest_checkin(account).await?;
        checkin::status(&config, latest.as_ref(), self.clock.now())
    }

    /// Reserves `credits` for at most `ttl_seconds`: they leave `available`, not `balance`.
    pub async fn reserve(&self, request: ReserveRequest) -> Result<Hold, LedgerError> {
        request.validate()?;
        let now = self.clock.now();
        let mut hold = self.repo.reserve(request, now).await?;
        // A replay may answer a hold whose time has run out since.
        hold.status = hold.status_at(now);
        Ok(hold)
    }

    /// Settles a hold at its real cost: up to the held amount is charged as `ai_usage`, the rest
    /// returns. A cost above the hold is charged only if the account can cover the excess at
    /// that instant; otherwise [`LedgerError::InsufficientCredits`] and the hold stays active.
    pub async fn capture(
        &self,
        request: CaptureRequest,
        idempotency_key: Option<String>,
    ) -> Result<(Hold, Option<Transaction>), LedgerError> {
        request.validate()?;
        if let Some(key) = &idempotency_key {
            crate::model::validate_idempotency_key(key)?;
        }
        self.repo
            .capture(request, idempotency_key, self.clock.now())
            .await
    }

    /// Returns a hold's credits in full.
    pub async fn release(&self, app: &str, hold_id: i64) -> Result<Hold, LedgerError> {
        self.repo
            .release(app.to_owned(), hold_id, self.clock.now())
            .await
    }

    /// A hold of the app, with its status as of now.
    pub async fn hold(&self, app: &str, hold_id: i64) -> Result<Hold, LedgerError> {
        let mut hold = self
            .repo
            .hold(app.to_owned(), hold_id)
            .await?
            .ok_or(LedgerError::HoldNotFound)?;
        hold.status = hold.status_at(self.clock.now());
        Ok(hold)
    }

    /// Generates and stores a batch of redemption codes.
    pub async fn create_codes(
        &self,
        request: CodeBatchRequest,
    ) -> Result<Vec<RedemptionCode>, LedgerError> {
        let now = self.clock.now();
        request.validate(now)?;
        let codes = (0..request.count)
            .map(|_| codes::generate(rand::random()))
            .collect();
        let batch = format!("batch_{}", hex::encode(rand::random::<[u8; 8]>()));
        self.repo.create_codes(request, codes, batch, now).await
    }

    /// The app's codes, newest first.
    pub async fn codes(
        &self,
        app: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<RedemptionCode>, LedgerError> {
        self.repo.codes(app.to_owned(), limit, offset).await
    }

    /// Redeems a code. Unknown codes count as wrong guesses; too many in the window answer
    /// [`LedgerError::RateLimited`] without looking the code up.
    pub async fn redeem(
        &self,
        account: AccountRef,
        code: &str,
    ) -> Result<(RedemptionCode, Transaction), LedgerError> {
        let now = self.clock.now();
        let since = now - codes::FAILURE_WINDOW;
        let (failures, oldest) = self.repo.redeem_failures(account.clone(), since).await?;
        if failures >= codes::MAX_FAILURES {
            let reopens = oldest.unwrap_or(now) + codes::FAILURE_WINDOW;
            // Rounded up: a client that waits this long must find the window reopened.
            let wait = reopens - now;
            let seconds = wait.whole_seconds() + i64::from(wait.subsec_nanoseconds() > 0);
            return Err(LedgerError::RateLimited {
                retry_after_seconds: seconds.max(1),
            });
        }
        let result = match codes::normalise(code) {
            Some(code) => {
                self.repo
                    .redeem(RedeemRequest {
                        account: account.clone(),
                        code,
                        now,
                    })
                    .await
            }
            None => Err(LedgerError::CodeNotFound),
        };
        if matches!(result, Err(LedgerError::CodeNotFound)) {
            self.repo.record_redeem_failure(account, now).await?;
        }
        result
    }

    /// Writes due expiries for up to `limit` accounts.
    pub async fn sweep_expired(&self, limit: i64) -> Result<u64, LedgerError> {
        self.repo.expire_due(self.clock.now(), limit).await
    }

    /// Every broken invariant in the database.
    pub async fn verify(&self) -> Result<Vec<Violation>, LedgerError> {
        let mut out: Vec<Violation> = self
            .repo
            .audit()
            .await?
            .iter()
            .flat_map(|a| a.violations())
            .collect();
        let (allowances, meters, events) = self.repo.usage_audit().await?;
        out.extend(crate::usage::usage_violations(
            &allowances,
            &meters,
            &events,
        ));
        Ok(out)
    }

    /// The app's features.
    pub async fn features(&self, app: &str) -> Result<Vec<Feature>, LedgerError> {
        crate::model::validate_app_key(app)?;
        self.repo.features(app.to_owned()).await
    }

    /// Creates a feature (`create`) or creates or renames one (its kind never changes).
    pub async fn put_feature(
        &self,
        app: &str,
        spec: FeatureSpec,
        create: bool,
    ) -> Result<Feature, LedgerError> {
        crate::model::validate_app_key(app)?;
        spec.validate()?;
        self.repo
            .put_feature(app.to_owned(), spec, create, self.clock.now())
            .await
    }

    /// The app's rate versions, newest first.
    pub async fn rates(
        &self,
        app: &str,
        feature: Option<String>,
    ) -> Result<Vec<Rate>, LedgerError> {
        crate::model::validate_app_key(app)?;
        self.repo.rates(app.to_owned(), feature).await
    }

    /// Adds a rate version.
    pub async fn add_rate(
        &self,
        app: &str,
        spec: RateSpec,
        actor: &str,
    ) -> Result<Rate, LedgerError> {
        crate::model::validate_app_key(app)?;
        let now = self.clock.now();
        spec.validate(now)?;
        self.repo
            .add_rate(app.to_owned(), spec, actor.to_owned(), now)
            .await
    }

    /// The app's entitlements with their scopes (see [`crate::usage::FREE_SCOPE`]).
    pub async fn entitlements(
        &self,
        app: &str,
        scope: Option<String>,
    ) -> Result<Vec<(String, Entitlement)>, LedgerError> {
        crate::model::validate_app_key(app)?;
        self.repo.entitlements(app.to_owned(), scope).await
    }

    /// Replaces the entitlements of a plan (`plan_scope`) or of the free tier (`FREE_SCOPE`).
    pub async fn set_entitlements(
        &self,
        app: &str,
        scope: String,
        list: Vec<Entitlement>,
    ) -> Result<Vec<Entitlement>, LedgerError> {
        crate::model::validate_app_key(app)?;
        self.repo
            .put_entitlements(app.to_owned(), scope, list)
            .await
    }

    /// Whether a call may go ahead, and what it would cost now; changes nothing.
    pub async fn check_usage(&self, request: UsageRequest) -> Result<UsageCheck, LedgerError> {
        request.validate(false)?;
        let now = self.clock.now();
        let (state, available) = self.repo.usage_state(request.clone(), now).await?;
        let quote = quote_usage(&state, &request, now)?;
        Ok(UsageCheck { available, quote })
    }

    /// Records a call's usage: allowances first, the rest charged at the rates in one `ai_usage`
    /// transaction, or the whole call refused. Idempotent by key.
    pub async fn track(&self, request: UsageRequest) -> Result<UsageOutcome, LedgerError> {
        request.validate(true)?;
        self.repo.track(request, self.clock.now()).await
    }

    /// Reserves what a call's estimated `quantities` would cost now — the allowances first, the
    /// rest at the rates for its dimensions (0 credits when the allowances cover it all) — for
    /// `ttl_seconds`. Capture it with [`Ledger::capture_usage`] and the actual quantities.
    pub async fn reserve_usage(
        &self,
        usage: UsageRequest,
        ttl_seconds: i64,
    ) -> Result<Hold, LedgerError> {
        usage.validate(false)?;
        if usage.quantities.is_empty() {
            return Err(LedgerError::invalid(
                "quantities",
                "must name at least one metered feature",
            ));
        }
        let reserve = ReserveRequest {
            account: usage.account.clone(),
            credits: 0,
            ttl_seconds,
            description: usage.description.clone(),
            idempotency_key: usage.idempotency_key.clone(),
            metadata: Some(serde_json::json!({
                crate::holds::USAGE_ESTIMATE: {
                    "quantities": usage.quantities,
                    "dimensions": usage.dimensions,
                },
                "metadata": usage.metadata,
            })),
        };
        reserve.validate_terms()?;
        let hash = crate::model::fingerprint(&(&usage, ttl_seconds));
        let now = self.clock.now();
        let mut hold = self.repo.reserve_usage(usage, reserve, hash, now).await?;
        hold.status = hold.status_at(now);
        Ok(hold)
    }

    /// Settles a hold taken with [`Ledger::reserve_usage`] at the call's actual quantities,
    /// priced by the rates in force when the hold was taken (allowances first); the rest of the
    /// hold returns. The same quantities again answer the first capture.
    pub async fn capture_usage(
        &self,
        app: &str,
        hold_id: i64,
        quantities: std::collections::BTreeMap<String, i64>,
    ) -> Result<(Hold, UsageOutcome, Option<Transaction>), LedgerError> {
        crate::model::validate_app_key(app)?;
        crate::usage::validate_quantities(&quantities)?;
        if quantities.is_empty() {
            return Err(LedgerError::invalid(
                "quantities",
                "must name at least one metered feature",
            ));
        }
        self.repo
            .capture_usage(app.to_owned(), hold_id, quantities, self.clock.now())
            .await
    }

    /// Every feature of the app as this user has it now: the entitlement of their plan (or the
    /// free tier), the window and what is used of it.
    pub async fn feature_status(
        &self,
        account: AccountRef,
    ) -> Result<Vec<FeatureStatus>, LedgerError> {
        let now = self.clock.now();
        let request = UsageRequest {
            account,
            quantities: Default::default(),
            features: vec![],
            dimensions: Default::default(),
            description: String::new(),
            metadata: None,
            idempotency_key: None,
        };
        let (state, _) = self.repo.usage_state(request, now).await?;
        Ok(state
            .features
            .iter()
            .map(|f| FeatureStatus {
                feature: f.clone(),
                entitlement: state
                    .entitlements
                    .iter()
                    .find(|e| e.feature == f.key)
                    .cloned(),
                window: state.windows.get(&f.key).copied(),
                used: state.used.get(&f.key).copied().unwrap_or(0),
                reserved: state.reserved.get(&f.key).copied().unwrap_or(0),
            })
            .collect())
    }
}

/// What [`Ledger::check_usage`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCheck {
    /// The call as it would be decided now.
    pub quote: UsageQuote,
    /// Credits the account can spend now.
    pub available: i64,
}

impl UsageCheck {
    /// Whether the call would go ahead: nothing refused and the credits available.
    pub fn allowed(&self) -> bool {
        self.reason().is_none()
    }

    /// Why not, as a wire name.
    pub fn reason(&self) -> Option<&'static str> {
        match &self.quote.refusal {
            Some(r) => Some(r.reason()),
            None if self.quote.credits > self.available => Some("insufficient_credits"),
            None => None,
        }
    }
}
