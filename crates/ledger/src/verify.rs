//! The ledger invariants, checked over figures the repository gathers.

use serde::Serialize;

/// Figures about one account, gathered by [`crate::LedgerRepository::audit`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountAudit {
    /// The account's app.
    pub app: String,
    /// The account's user.
    pub user: String,
    /// Cached balance.
    pub balance: i64,
    /// Cached held credits.
    pub held: i64,
    /// Sum of the account's active holds.
    pub active_hold_sum: i64,
    /// Sum of all transaction amounts.
    pub transaction_sum: i64,
    /// Sum of positive lot remainders.
    pub live_lot_sum: i64,
    /// Lots whose remainder is negative or larger than their amount.
    pub malformed_lots: i64,
    /// Transactions whose `balance_after` disagrees with the running sum.
    pub broken_balance_after: i64,
    /// Whether the account has a refund clawback or an allowed overdraft on record.
    pub has_debt_source: bool,
    /// Idempotency keys recorded more than once.
    pub duplicate_idempotency_keys: i64,
    /// Local days with more than one check-in.
    pub duplicate_checkins: i64,
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The account's app.
    pub app: String,
    /// The account's user.
    pub user: String,
    /// Which rule, in words.
    pub rule: &'static str,
    /// The figures that break it.
    pub detail: String,
}

impl AccountAudit {
    /// Every invariant this account breaks.
    pub fn violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut push = |rule: &'static str, detail: String| {
            out.push(Violation {
                app: self.app.clone(),
                user: self.user.clone(),
                rule,
                detail,
            })
        };
        if self.balance != self.transaction_sum {
            push(
                "balance = sum of transactions",
                format!(
                    "balance {} but transactions sum to {}",
                    self.balance, self.transaction_sum
                ),
            );
        }
        if self.live_lot_sum != self.balance.max(0) {
            push(
                "live lots = positive part of balance",
                format!(
                    "lots hold {} but balance is {}",
                    self.live_lot_sum, self.balance
                ),
            );
        }
        if self.malformed_lots > 0 {
            push(
                "0 <= lot remainder <= lot amount",
                format!("{} lots", self.malformed_lots),
            );
        }
        if self.broken_balance_after > 0 {
            push(
                "balance_after = running sum",
                format!("{} transactions", self.broken_balance_after),
            );
        }
        if self.balance < 0 && !self.has_debt_source {
            push(
                "negative balance only after a clawback or allowed overdraft",
                format!("balance {}", self.balance),
            );
        }
        // held may exceed balance: a lot that expires under a hold leaves the hold reserving
        // credits that are gone (its capture then finds nothing available), so only the sign
        // and the sum of the holds are rules.
        if self.held < 0 {
            push("held >= 0", format!("held {}", self.held));
        }
        if self.held != self.active_hold_sum {
            push(
                "held = sum of active holds",
                format!(
                    "held {} but active holds sum to {}",
                    self.held, self.active_hold_sum
                ),
            );
        }
        if self.duplicate_idempotency_keys > 0 {
            push(
                "one idempotency key, one movement",
                format!("{} keys", self.duplicate_idempotency_keys),
            );
        }
        if self.duplicate_checkins > 0 {
            push(
                "one check-in per local day",
                format!("{} days", self.duplicate_checkins),
            );
        }
        out
    }
}
