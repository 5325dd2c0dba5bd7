//! Tally's credits domain.
//!
//! Accounts per (app key, user), grant lots with optional expiry, an append-only transaction
//! history, idempotent movements and the daily check-in. Storage is reached only through the
//! [`LedgerRepository`] port; the arithmetic lives in [`plan`] so that every backend applies the
//! same rules.

pub mod checkin;
/// The time source (from `tally-kernel`, which every domain shares).
pub mod clock {
    pub use tally_kernel::{Clock, ManualClock, SystemClock, truncate_micros};
}
pub mod codes;
pub mod error;
pub mod holds;
pub mod model;
pub mod notice;
pub mod plan;
pub mod pricing;
pub mod repo;
pub mod service;
pub mod stats;
pub mod usage;
pub mod verify;

pub use checkin::{CheckinConfig, CheckinOutcome, CheckinRecord, CheckinRequest, CheckinStatus};
pub use clock::{Clock, ManualClock, SystemClock};
pub use codes::{CodeBatchRequest, RedeemRequest, RedemptionCode};
pub use error::LedgerError;
pub use holds::{CaptureRequest, Hold, HoldStatus, HoldView, ReserveRequest};
pub use model::{
    AccountQuery, AccountRef, AccountSummary, AccountView, BALANCE_LOTS, BalanceView, DETAIL_ROWS,
    ExpiringCredits, LotView, MAX_CREDITS, MAX_USER_ID_CHARS, Movement, MovementKind, Transaction,
    TransactionQuery, TxnType,
};
pub use repo::LedgerRepository;
pub use service::{Ledger, Sufficiency, UsageCheck};
pub use verify::{AccountAudit, Violation};
