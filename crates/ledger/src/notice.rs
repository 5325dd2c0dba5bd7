//! Which ledger changes the outside world hears of, decided without I/O: the store adds what
//! [`plan_notices`] answers to the outbox in the write's own transaction, and `tally-webhooks`
//! gives each its wire shape.

use time::OffsetDateTime;

use crate::Transaction;
use crate::plan::Plan;

/// A ledger change announced to the app's webhook endpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum LedgerNotice {
    /// `credits.expired`: a lot came due.
    Expired {
        /// The lot.
        lot_id: Option<i64>,
        /// Credits that expired.
        credits: i64,
        /// The balance after the expiry.
        balance_after: i64,
    },
    /// `credits.granted`: the movement added credits.
    Granted {
        /// The movement's row.
        transaction: Transaction,
        /// When its lot expires.
        expires_at: Option<OffsetDateTime>,
    },
    /// `credits.spent`: the movement took credits (only when an endpoint asked for it).
    Spent {
        /// The movement's row.
        transaction: Transaction,
    },
    /// `hold.expired`: a hold ran out uncaptured.
    HoldExpired {
        /// The hold.
        hold_id: i64,
    },
    /// `credits.low`: the available credits fell below the app's threshold.
    Low {
        /// The app's threshold.
        threshold: i64,
        /// Available before the write.
        available_before: i64,
        /// Available after it.
        available_after: i64,
        /// The balance after it.
        balance: i64,
    },
}

/// The app's settings the announcements depend on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoticeSettings {
    /// The low-balance threshold, if the app set one.
    pub low_balance_threshold: Option<i64>,
    /// Whether an enabled endpoint subscribed to `credits.spent` (high volume, off otherwise).
    pub wants_spent: bool,
}

/// Whether announcing a write needs the app's [`NoticeSettings`]: only a write that lowers the
/// available credits or spends can cross the threshold or be a `credits.spent`. `moved` is the
/// amount of the movement's own row, when the write writes one: known from the plan, so the
/// settings can be read before the write.
pub fn needs_settings(before: (i64, i64), plan: &Plan, moved: Option<i64>) -> bool {
    let (balance, held) = before;
    plan.balance - plan.held < balance - held || moved.is_some_and(|amount| amount < 0)
}

/// What a write announces, in order: expiries, the movement itself, expired holds, then a
/// downward crossing of the low-balance threshold. `before` is the account's (balance, held)
/// before the write; `written` the movement's row, if it wrote one.
pub fn plan_notices(
    before: (i64, i64),
    plan: &Plan,
    written: Option<&Transaction>,
    settings: NoticeSettings,
) -> Vec<LedgerNotice> {
    let mut notices: Vec<LedgerNotice> = plan
        .expiries
        .iter()
        .map(|entry| LedgerNotice::Expired {
            lot_id: entry.expired_lot,
            credits: entry.amount.abs(),
            balance_after: entry.balance_after,
        })
        .collect();
    if let Some(txn) = written {
        if txn.amount > 0 {
            notices.push(LedgerNotice::Granted {
                transaction: txn.clone(),
                expires_at: plan.new_lot.as_ref().and_then(|l| l.expires_at),
            });
        } else if txn.amount < 0 && settings.wants_spent {
            notices.push(LedgerNotice::Spent {
                transaction: txn.clone(),
            });
        }
    }
    notices.extend(
        plan.expired_holds
            .iter()
            .map(|&hold_id| LedgerNotice::HoldExpired { hold_id }),
    );
    let available_before = before.0 - before.1;
    let available_after = plan.balance - plan.held;
    if let Some(threshold) = settings.low_balance_threshold
        && available_before >= threshold
        && available_after < threshold
    {
        notices.push(LedgerNotice::Low {
            threshold,
            available_before,
            available_after,
            balance: plan.balance,
        });
    }
    notices
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::plan::{Entry, NewLot};
    use crate::{Transaction, TxnType};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    fn txn(amount: i64, balance_after: i64) -> Transaction {
        Transaction {
            id: 7,
            app: "default".into(),
            user: "alice".into(),
            txn_type: if amount > 0 {
                TxnType::Purchase
            } else {
                TxnType::AiUsage
            },
            amount,
            balance_after,
            description: String::new(),
            metadata: None,
            idempotency_key: None,
            actor: None,
            created_at: NOW,
        }
    }

    #[test]
    fn a_spend_across_the_threshold_is_announced_once() {
        let plan = Plan {
            main: Some(Entry {
                txn_type: TxnType::AiUsage,
                amount: -30,
                balance_after: 70,
                expired_lot: None,
            }),
            balance: 70,
            ..Plan::default()
        };
        let spent = txn(-30, 70);
        assert!(needs_settings((100, 0), &plan, Some(spent.amount)));
        let quiet = plan_notices((100, 0), &plan, Some(&spent), NoticeSettings::default());
        assert_eq!(quiet, [], "no threshold, nobody wants credits.spent");
        let settings = NoticeSettings {
            low_balance_threshold: Some(80),
            wants_spent: true,
        };
        let loud = plan_notices((100, 0), &plan, Some(&spent), settings);
        assert_eq!(
            loud,
            [
                LedgerNotice::Spent {
                    transaction: spent.clone()
                },
                LedgerNotice::Low {
                    threshold: 80,
                    available_before: 100,
                    available_after: 70,
                    balance: 70,
                }
            ]
        );
        // Already below: no second credits.low.
        let again = plan_notices((75, 0), &plan, Some(&spent), settings);
        assert!(!again.iter().any(|n| matches!(n, LedgerNotice::Low { .. })));
    }

    #[test]
    fn grants_expiries_and_holds_are_announced_in_order() {
        let at = datetime!(2026-07-01 12:00 UTC);
        let plan = Plan {
            expiries: vec![Entry {
                txn_type: TxnType::Expiry,
                amount: -5,
                balance_after: 95,
                expired_lot: Some(3),
            }],
            main: Some(Entry {
                txn_type: TxnType::Purchase,
                amount: 50,
                balance_after: 145,
                expired_lot: None,
            }),
            new_lot: Some(NewLot {
                source: TxnType::Purchase,
                amount: 50,
                remaining: 50,
                expires_at: Some(at),
            }),
            expired_holds: vec![9],
            balance: 145,
            ..Plan::default()
        };
        let granted = txn(50, 145);
        assert!(!needs_settings((100, 0), &plan, Some(granted.amount)));
        let notices = plan_notices((100, 0), &plan, Some(&granted), NoticeSettings::default());
        assert_eq!(
            notices,
            [
                LedgerNotice::Expired {
                    lot_id: Some(3),
                    credits: 5,
                    balance_after: 95
                },
                LedgerNotice::Granted {
                    transaction: granted,
                    expires_at: Some(at)
                },
                LedgerNotice::HoldExpired { hold_id: 9 },
            ]
        );
    }
}
