//! The ledger service: validation, the clock, and the rules that need no database.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::checkin::{self, CheckinOutcome, CheckinRequest, CheckinStatus};
use crate::plan::balance_view;
use crate::{
    AccountRef, BalanceView, CheckinConfig, Clock, LedgerError, LedgerRepository, Movement,
    MovementKind, Transaction, TransactionQuery, TxnType, Violation,
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
    /// A ledger over `repo`, reading time from `clock`.
    pub fn new(repo: Arc<dyn LedgerRepository>, clock: Arc<dyn Clock>) -> Self {
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

    /// The balance as the user sees it now.
    pub async fn balance(&self, account: AccountRef) -> Result<BalanceView, LedgerError> {
        let state = self.repo.account(account).await?;
        Ok(balance_view(&state, self.clock.now()))
    }

    /// Whether `amount` could be spent now.
    pub async fn check(
        &self,
        account: AccountRef,
        amount: i64,
    ) -> Result<Sufficiency, LedgerError> {
        if amount <= 0 || amount > crate::MAX_CREDITS {
            return Err(LedgerError::invalid("amount", "must be a positive integer"));
        }
        let view = self.balance(account).await?;
        Ok(Sufficiency {
            sufficient: view.available >= amount,
            balance: view.balance,
            available: view.available,
        })
    }

    /// A page of history, newest first, and whether more rows follow.
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
        let limit = query.limit;
        query.limit += 1;
        let mut rows = self.repo.transactions(query).await?;
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        Ok((rows, has_more))
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
            .put_checkin_config(app.to_owned(), config.clone(), actor.to_owned())
            .await?;
        Ok(config)
    }

    /// Today's check-in: at most one per local day, reward by streak.
    pub async fn checkin(&self, account: AccountRef) -> Result<CheckinOutcome, LedgerError> {
        let config = self.checkin_config(&account.app).await?;
        if !config.enabled {
            return Err(LedgerError::CheckinDisabled);
        }
        let now = self.clock.now();
        let day = config.local_day(now)?;
        let next_checkin_at = config.day_start(day.next_day().unwrap_or(day))?;
        let record = self
            .repo
            .checkin(CheckinRequest {
                account,
                day,
                config,
                now,
            })
            .await?;
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

    /// Writes due expiries for up to `limit` accounts.
    pub async fn sweep_expired(&self, limit: i64) -> Result<u64, LedgerError> {
        self.repo.expire_due(self.clock.now(), limit).await
    }

    /// Every broken invariant in the database.
    pub async fn verify(&self) -> Result<Vec<Violation>, LedgerError> {
        Ok(self
            .repo
            .audit()
            .await?
            .iter()
            .flat_map(|a| a.violations())
            .collect())
    }
}
