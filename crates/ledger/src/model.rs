//! The ledger's data: accounts, movements and transactions.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tally_kernel::{FieldError, FieldErrors};
use time::OffsetDateTime;

use crate::LedgerError;

/// The largest number of credits a single movement may carry (and a balance may reach).
pub const MAX_CREDITS: i64 = 1_000_000_000_000;
/// The expiring lots a balance read takes at most besides the due ones: its `expiring` list
/// shows the instants among the soonest this many lots (all of them on a smaller account), and
/// at least the soonest instant whole.
pub const BALANCE_LOTS: i64 = 8;
/// The live lots and the active holds an account's detail lists at most, each.
pub const DETAIL_ROWS: i64 = 100;
const MAX_DESCRIPTION_CHARS: usize = 500;
const MAX_KEY_CHARS: usize = 255;
const MAX_METADATA_BYTES: usize = 4_096;

/// Identifies one account: balances are kept per app key and per user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccountRef {
    /// The app key the account belongs to (`default` when none is given).
    pub app: String,
    /// The user id within that app.
    pub user: String,
}

impl AccountRef {
    /// Builds a reference, validating both parts.
    pub fn new(app: impl Into<String>, user: impl Into<String>) -> Result<Self, LedgerError> {
        let (app, user) = (app.into(), user.into());
        validate_app_key(&app)?;
        validate_user_id(&user)?;
        Ok(Self { app, user })
    }
}

/// App keys are short identifiers: 1–64 of `A-Z a-z 0-9 _ - .`.
pub fn validate_app_key(app: &str) -> Result<(), FieldError> {
    if tally_kernel::is_app_key(app) {
        Ok(())
    } else {
        Err(FieldError::new("app", tally_kernel::APP_KEY_RULE))
    }
}

/// The longest user id, in characters.
pub use tally_kernel::MAX_USER_ID_CHARS;

/// User ids are opaque: 1–128 characters without control characters.
pub fn validate_user_id(user: &str) -> Result<(), FieldError> {
    if tally_kernel::is_user_id(user) {
        Ok(())
    } else {
        Err(FieldError::new("user_id", tally_kernel::USER_ID_RULE))
    }
}

tally_kernel::wire_enum! {
    /// What a transaction records.
    pub enum TxnType {
        /// Usage reported by an AI service.
        AiUsage = "ai_usage",
        /// Daily check-in reward.
        Checkin = "checkin",
        /// Credits included with a subscription period.
        Subscription = "subscription",
        /// A one-time credit pack.
        Purchase = "purchase",
        /// An admin's manual adjustment (either sign).
        AdminAdjustment = "admin_adjustment",
        /// Clawback after a payment refund.
        Refund = "refund",
        /// Remainder of a lot that reached its expiry.
        Expiry = "expiry",
        /// A redeemed code.
        Redemption = "redemption",
        /// A reward granted by another service through the service API.
        Reward = "reward",
    }
}

/// What a movement does to the balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MovementKind {
    /// Adds a lot of `credits` (repaying any debt first).
    Grant {
        /// Recorded transaction type.
        txn_type: TxnType,
        /// Positive number of credits.
        credits: i64,
        /// When the lot's remainder expires; `None` = never.
        #[serde(with = "time::serde::rfc3339::option")]
        expires_at: Option<OffsetDateTime>,
    },
    /// Takes `credits` out of the available balance; never overdraws.
    Debit {
        /// Recorded transaction type.
        txn_type: TxnType,
        /// Positive number of credits.
        credits: i64,
    },
    /// An admin adjustment of either sign.
    Adjust {
        /// Signed, non-zero.
        credits: i64,
        /// Whether a negative adjustment may take the balance below zero.
        allow_negative: bool,
        /// Expiry of the lot a positive adjustment creates.
        #[serde(with = "time::serde::rfc3339::option")]
        expires_at: Option<OffsetDateTime>,
    },
    /// Takes back credits a refunded payment granted, as a `refund` transaction; may take the
    /// balance below zero (the debt is repaid first by the next grant).
    Clawback {
        /// Positive number of credits.
        credits: i64,
    },
}

impl MovementKind {
    /// The credits the movement takes out of lots, at most: what the store must read of the
    /// account's live lots, in consumption order, to plan it (0 for a grant or a positive
    /// adjustment).
    pub fn burns(&self) -> i64 {
        match *self {
            MovementKind::Grant { .. } => 0,
            MovementKind::Debit { credits, .. } | MovementKind::Clawback { credits } => credits,
            MovementKind::Adjust { credits, .. } => (-credits).max(0),
        }
    }

    /// Whether movements of this kind can be planned one after another on one read of their
    /// account ([`crate::plan::InTurn`]): a debit creates no lot, so the state it leaves is
    /// known before anything is written. A grant's lot has no id until it is written.
    pub fn plans_in_turn(&self) -> bool {
        matches!(self, MovementKind::Debit { .. })
    }
}

/// A request to move credits, as the repository receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Movement {
    /// Whose balance moves.
    pub account: AccountRef,
    /// What happens.
    pub kind: MovementKind,
    /// Shown in the history.
    pub description: String,
    /// Same key + same request → the original result.
    #[serde(skip)]
    pub idempotency_key: Option<String>,
    /// Free-form JSON stored with the transaction.
    pub metadata: Option<serde_json::Value>,
    /// Who asked (admin user id, service name), for the audit trail.
    pub actor: Option<String>,
}

impl Movement {
    /// Checks ranges and sizes; a movement that passes can be stored as is.
    /// Every refused field is named.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let mut p = FieldErrors::default();
        let (credits, positive) = match self.kind {
            MovementKind::Grant { credits, .. }
            | MovementKind::Debit { credits, .. }
            | MovementKind::Clawback { credits } => (credits, true),
            MovementKind::Adjust { credits, .. } => (credits, false),
        };
        if positive && credits <= 0 {
            p.add("amount", "must be a positive integer");
        } else if credits == 0 {
            p.add("amount", "must be non-zero");
        } else if credits.unsigned_abs() > MAX_CREDITS as u64 {
            p.add(
                "amount",
                format!("must be at most {MAX_CREDITS} in absolute value"),
            );
        }
        if let MovementKind::Adjust {
            credits,
            expires_at,
            ..
        } = self.kind
        {
            p.check(
                credits > 0 || expires_at.is_none(),
                "expires_at",
                "only positive adjustments can expire",
            );
            p.check(
                !self.description.trim().is_empty(),
                "description",
                "must not be empty: say why",
            );
        }
        check_common(
            &mut p,
            &self.account,
            &self.description,
            self.idempotency_key.as_deref(),
            self.metadata.as_ref(),
        );
        Ok(p.finish()?)
    }

    /// A fingerprint of everything except the idempotency key: same key + same fingerprint is a
    /// replay, same key + another fingerprint is a reuse.
    pub fn request_hash(&self) -> String {
        fingerprint(self)
    }
}

/// SHA-256 of a value's JSON form (maps serialise with sorted keys, so it is canonical).
pub fn fingerprint<T: Serialize>(value: &T) -> String {
    let canonical = serde_json::to_vec(value).unwrap_or_default();
    hex::encode(Sha256::digest(canonical))
}

/// The account's app key and user id; each problem is recorded in `p`.
pub fn check_account(p: &mut FieldErrors, account: &AccountRef) {
    p.take(validate_app_key(&account.app));
    p.take(validate_user_id(&account.user));
}

/// The checks every write shares: account, description, key and metadata; each problem is
/// recorded in `p`.
pub fn check_common(
    p: &mut FieldErrors,
    account: &AccountRef,
    description: &str,
    idempotency_key: Option<&str>,
    metadata: Option<&serde_json::Value>,
) {
    check_account(p, account);
    p.take(validate_description(description));
    if let Some(key) = idempotency_key {
        p.take(validate_idempotency_key(key));
    }
    if let Some(meta) = metadata {
        p.take(validate_metadata(meta));
    }
}

/// Descriptions: at most 500 characters.
pub fn validate_description(description: &str) -> Result<(), FieldError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS
        || description.chars().any(char::is_control)
    {
        return Err(FieldError::new(
            "description",
            format!(
                "must be at most {MAX_DESCRIPTION_CHARS} characters, without control characters"
            ),
        ));
    }
    Ok(())
}

/// Metadata: a JSON object of at most 4 KiB.
pub fn validate_metadata(meta: &serde_json::Value) -> Result<(), FieldError> {
    if !meta.is_object() {
        return Err(FieldError::new("metadata", "must be a JSON object"));
    }
    if meta.to_string().len() > MAX_METADATA_BYTES {
        return Err(FieldError::new(
            "metadata",
            format!("must serialise to at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Idempotency keys: 1–255 printable ASCII characters.
pub fn validate_idempotency_key(key: &str) -> Result<(), FieldError> {
    let ok =
        !key.is_empty() && key.len() <= MAX_KEY_CHARS && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "idempotency_key",
            "must be 1-255 printable ASCII characters without spaces",
        ))
    }
}

/// One immutable row of the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transaction {
    /// Store-assigned id, increasing with time.
    pub id: i64,
    /// The account's app key.
    pub app: String,
    /// The account's user.
    pub user: String,
    /// What the movement was.
    pub txn_type: TxnType,
    /// Signed change of the balance.
    pub amount: i64,
    /// Balance right after this row.
    pub balance_after: i64,
    /// Shown in the history.
    pub description: String,
    /// Free-form JSON given with the movement.
    pub metadata: Option<serde_json::Value>,
    /// The idempotency key the movement was made with.
    pub idempotency_key: Option<String>,
    /// Who asked for it.
    pub actor: Option<String>,
    /// When it was recorded.
    pub created_at: OffsetDateTime,
}

/// A live lot as the balance view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotView {
    /// Lot id.
    pub id: i64,
    /// Credits left in the lot.
    pub remaining: i64,
    /// When what is left expires.
    pub expires_at: Option<OffsetDateTime>,
}

/// An account as the store read it at one instant: the cached balance and held credits, and as
/// many of its lots and holds as the reader needs — never all of them, so that the cost of a
/// request does not grow with what the account holds.
///
/// The planners need every lot and active hold *due* at the instant they plan for (they expire
/// first), and a debit needs live lots in consumption order until they cover it (see
/// [`MovementKind::burns`]; all of them for an overdraft). A balance read needs the due lots and
/// the soonest expiring ones (see [`crate::plan::balance_view`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountView {
    /// Cached balance (sum of the transactions).
    pub balance: i64,
    /// Credits reserved by holds (all active holds, due or not).
    pub held: i64,
    /// Lots with a positive remainder, as far as the reader read them.
    pub lots: Vec<LotView>,
    /// Whether more lots may expire at the latest instant among `lots` than `lots` holds (the
    /// reader stopped there, with lots that expire left unread).
    pub last_instant_partial: bool,
    /// Active holds, as far as the reader read them: at least every one due at the instant
    /// (some may be past their expiry but not yet marked).
    pub holds: Vec<crate::holds::HoldView>,
}

/// Credits that will expire, grouped by instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpiringCredits {
    /// Credits expiring at that instant.
    pub amount: i64,
    /// The instant.
    pub expires_at: OffsetDateTime,
}

/// What a user sees as their balance at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceView {
    /// Credits owned now (expired lots no longer count, even before the sweep has run).
    pub balance: i64,
    /// Credits spendable now: balance minus held, never below zero.
    pub available: i64,
    /// Credits reserved by holds.
    pub held: i64,
    /// Future expiries, soonest first.
    pub expiring: Vec<ExpiringCredits>,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransactionQuery {
    /// Only this app.
    pub app: String,
    /// Only this user (required for user-facing reads).
    pub user: Option<String>,
    /// Only this type.
    pub txn_type: Option<TxnType>,
    /// Created at or after.
    pub from: Option<OffsetDateTime>,
    /// Created before.
    pub to: Option<OffsetDateTime>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
    /// Keyset cursor: only rows with a smaller id than this one (strictly older), read from the
    /// index without skipping rows. Excludes a non-zero `offset`.
    pub before: Option<i64>,
}

/// One account of an app as its operators list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSummary {
    /// The user.
    pub user: String,
    /// Cached balance.
    pub balance: i64,
    /// Credits reserved by holds.
    pub held: i64,
    /// When the account was opened (its first movement or hold).
    pub created_at: OffsetDateTime,
    /// Its last movement or hold change.
    pub updated_at: OffsetDateTime,
}

/// A page of an app's accounts, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountQuery {
    /// The app.
    pub app: String,
    /// Only user ids starting with this (case-sensitive).
    pub prefix: Option<String>,
    /// Keyset cursor: a user id of the app; the page holds the accounts opened before it.
    pub before: Option<String>,
    /// Rows to fetch.
    pub limit: i64,
}
