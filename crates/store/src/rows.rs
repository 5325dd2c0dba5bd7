//! Row types and their conversions to domain values.

use diesel::prelude::*;
use tally_ledger::{LedgerError, LotView, Transaction, TxnType};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::read_time::{ReadTime, ReadTimeOpt};
use crate::schema::{accounts, holds, lots, redemption_codes, transactions};
use tally_ledger::{Hold, HoldStatus, HoldView, RedemptionCode};

/// Timestamps are stored as UTC without an offset, to the microsecond on both backends (SQLite
/// would otherwise keep nanoseconds that PostgreSQL drops).
pub(crate) fn to_db(t: OffsetDateTime) -> PrimitiveDateTime {
    let utc = tally_ledger::clock::truncate_micros(t).to_offset(UtcOffset::UTC);
    PrimitiveDateTime::new(utc.date(), utc.time())
}

pub(crate) fn from_db(t: PrimitiveDateTime) -> OffsetDateTime {
    t.assume_utc()
}

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = accounts)]
pub(crate) struct AccountRow {
    pub id: i64,
    pub app_key: String,
    pub user_id: String,
    pub balance: i64,
    pub held: i64,
}

/// An account's figures, as a balance read needs them.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = accounts)]
pub(crate) struct AccountFigures {
    pub id: i64,
    pub balance: i64,
    pub held: i64,
}

/// An account as operators list it.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = accounts)]
pub(crate) struct AccountSummaryRow {
    pub user_id: String,
    pub balance: i64,
    pub held: i64,
    pub created_at: PrimitiveDateTime,
    pub updated_at: PrimitiveDateTime,
}

impl From<AccountSummaryRow> for tally_ledger::AccountSummary {
    fn from(r: AccountSummaryRow) -> Self {
        Self {
            user: r.user_id,
            balance: r.balance,
            held: r.held,
            created_at: from_db(r.created_at),
            updated_at: from_db(r.updated_at),
        }
    }
}

#[derive(Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = lots)]
pub(crate) struct LotRow {
    pub id: i64,
    pub remaining: i64,
    #[diesel(deserialize_as = ReadTimeOpt)]
    pub expires_at: Option<PrimitiveDateTime>,
}

impl From<LotRow> for LotView {
    fn from(r: LotRow) -> Self {
        LotView {
            id: r.id,
            remaining: r.remaining,
            expires_at: r.expires_at.map(from_db),
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = holds)]
pub(crate) struct HoldRow {
    pub id: i64,
    pub account_id: i64,
    pub app_key: String,
    pub user_id: String,
    pub amount: i64,
    pub captured: Option<i64>,
    pub status: String,
    pub description: String,
    pub metadata: Option<String>,
    pub request_hash: Option<String>,
    pub capture_hash: Option<String>,
    pub transaction_id: Option<i64>,
    #[diesel(deserialize_as = ReadTime)]
    pub expires_at: PrimitiveDateTime,
    #[diesel(deserialize_as = ReadTime)]
    pub created_at: PrimitiveDateTime,
    #[diesel(deserialize_as = ReadTime)]
    pub updated_at: PrimitiveDateTime,
}

impl HoldRow {
    /// The stored metadata of a hold taken for quantities (it keeps the estimate under
    /// [`tally_ledger::holds::USAGE_ESTIMATE`]); none for a hold taken for credits.
    pub(crate) fn usage_metadata(&self) -> Option<serde_json::Value> {
        self.metadata
            .as_deref()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
            .filter(|m| m.get(tally_ledger::holds::USAGE_ESTIMATE).is_some())
    }

    pub(crate) fn view(&self) -> HoldView {
        HoldView {
            id: self.id,
            amount: self.amount,
            expires_at: from_db(self.expires_at),
        }
    }
}

impl TryFrom<HoldRow> for Hold {
    type Error = LedgerError;

    fn try_from(r: HoldRow) -> Result<Self, LedgerError> {
        let status = HoldStatus::parse(&r.status).ok_or_else(|| {
            LedgerError::Storage(format!("unknown hold status '{}'", r.status).into())
        })?;
        let metadata = match r.metadata {
            Some(m) => Some(serde_json::from_str(&m).map_err(LedgerError::storage)?),
            None => None,
        };
        Ok(Hold {
            id: r.id,
            app: r.app_key,
            user: r.user_id,
            amount: r.amount,
            captured: r.captured,
            status,
            description: r.description,
            metadata,
            transaction_id: r.transaction_id,
            expires_at: from_db(r.expires_at),
            created_at: from_db(r.created_at),
            updated_at: from_db(r.updated_at),
        })
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = redemption_codes)]
pub(crate) struct CodeRow {
    pub id: i64,
    pub code: String,
    pub batch: String,
    pub credits: i64,
    pub max_uses: i64,
    pub uses: i64,
    pub expires_at: Option<PrimitiveDateTime>,
    pub credits_expire_days: Option<i32>,
    pub description: String,
    pub created_by: String,
    pub created_at: PrimitiveDateTime,
}

impl From<CodeRow> for RedemptionCode {
    fn from(r: CodeRow) -> Self {
        RedemptionCode {
            id: r.id,
            code: r.code,
            batch: r.batch,
            credits: r.credits,
            max_uses: r.max_uses,
            uses: r.uses,
            expires_at: r.expires_at.map(from_db),
            credits_expire_days: r.credits_expire_days.and_then(|d| u32::try_from(d).ok()),
            description: r.description,
            created_by: r.created_by,
            created_at: from_db(r.created_at),
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = transactions)]
pub(crate) struct TxnRow {
    pub id: i64,
    pub app_key: String,
    pub user_id: String,
    pub txn_type: String,
    pub amount: i64,
    pub balance_after: i64,
    pub description: String,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    pub metadata: Option<String>,
    pub actor: Option<String>,
    #[diesel(deserialize_as = ReadTime)]
    pub created_at: PrimitiveDateTime,
}

impl TryFrom<TxnRow> for Transaction {
    type Error = LedgerError;

    fn try_from(r: TxnRow) -> Result<Self, LedgerError> {
        let txn_type = TxnType::parse(&r.txn_type).ok_or_else(|| {
            LedgerError::Storage(format!("unknown transaction type '{}'", r.txn_type).into())
        })?;
        let metadata = match r.metadata {
            Some(m) => Some(serde_json::from_str(&m).map_err(LedgerError::storage)?),
            None => None,
        };
        Ok(Transaction {
            id: r.id,
            app: r.app_key,
            user: r.user_id,
            txn_type,
            amount: r.amount,
            balance_after: r.balance_after,
            description: r.description,
            metadata,
            idempotency_key: r.idempotency_key,
            actor: r.actor,
            created_at: from_db(r.created_at),
        })
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = transactions)]
pub(crate) struct NewTxn<'a> {
    pub account_id: i64,
    pub app_key: &'a str,
    pub user_id: &'a str,
    pub txn_type: &'a str,
    pub amount: i64,
    pub balance_after: i64,
    pub description: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: Option<&'a str>,
    pub metadata: Option<String>,
    pub actor: Option<&'a str>,
    pub created_at: PrimitiveDateTime,
}

#[derive(Debug, QueryableByName)]
pub(crate) struct AuditRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub app_key: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub user_id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub balance: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub held: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub active_hold_sum: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub transaction_sum: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub live_lot_sum: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub malformed_lots: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub broken_balance_after: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub debt_sources: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub duplicate_keys: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub duplicate_checkins: i64,
}

/// Every figure `tally verify` needs, per account, in SQL both backends accept.
pub(crate) const AUDIT_SQL: &str = "
SELECT a.app_key, a.user_id, a.balance, a.held,
  COALESCE((SELECT CAST(SUM(h.amount) AS BIGINT) FROM holds h
            WHERE h.account_id = a.id AND h.status = 'active'), 0) AS active_hold_sum,
  COALESCE((SELECT CAST(SUM(t.amount) AS BIGINT) FROM transactions t
            WHERE t.account_id = a.id), 0) AS transaction_sum,
  COALESCE((SELECT CAST(SUM(l.remaining) AS BIGINT) FROM lots l
            WHERE l.account_id = a.id AND l.remaining > 0), 0) AS live_lot_sum,
  (SELECT COUNT(*) FROM lots l
   WHERE l.account_id = a.id AND (l.remaining < 0 OR l.remaining > l.amount)) AS malformed_lots,
  (SELECT COUNT(*) FROM (
     SELECT t.balance_after,
            SUM(t.amount) OVER (ORDER BY t.id ROWS UNBOUNDED PRECEDING) AS running
     FROM transactions t WHERE t.account_id = a.id) r
   WHERE r.balance_after <> r.running) AS broken_balance_after,
  (SELECT COUNT(*) FROM transactions t
   WHERE t.account_id = a.id
     AND (t.txn_type = 'refund' OR (t.txn_type = 'admin_adjustment' AND t.amount < 0))) AS debt_sources,
  (SELECT COUNT(*) FROM (
     SELECT t.idempotency_key FROM transactions t
     WHERE t.account_id = a.id AND t.idempotency_key IS NOT NULL
     GROUP BY t.idempotency_key HAVING COUNT(*) > 1) d) AS duplicate_keys,
  (SELECT COUNT(*) FROM (
     SELECT c.day FROM checkins c
     WHERE c.app_key = a.app_key AND c.user_id = a.user_id
     GROUP BY c.day HAVING COUNT(*) > 1) d) AS duplicate_checkins
FROM accounts a
ORDER BY a.id";
