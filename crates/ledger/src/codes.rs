//! Redemption codes: admins generate batches; each user may redeem a code once, while it has
//! uses left and has not expired. Wrong guesses are rate-limited per user.

use serde::Serialize;
use tally_kernel::FieldErrors;
use time::{Duration, OffsetDateTime};

use crate::{AccountRef, LedgerError, MAX_CREDITS};

/// The most codes one batch may hold.
pub const MAX_BATCH: i64 = 1_000;
/// Wrong guesses a user may make per window before [`LedgerError::RateLimited`].
pub const MAX_FAILURES: i64 = 10;
/// The window over which wrong guesses count.
pub const FAILURE_WINDOW: Duration = Duration::minutes(15);
/// Characters of a code: Crockford's base-32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A batch to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeBatchRequest {
    /// The app.
    pub app: String,
    /// How many codes.
    pub count: i64,
    /// Credits each redemption grants.
    pub credits: i64,
    /// Redemptions allowed per code (each user at most once).
    pub max_uses: i64,
    /// After this instant the codes no longer redeem.
    pub expires_at: Option<OffsetDateTime>,
    /// Days until redeemed credits expire; `None` = never.
    pub credits_expire_days: Option<u32>,
    /// Shown in the history of whoever redeems.
    pub description: String,
    /// The admin creating the batch.
    pub created_by: String,
}

impl CodeBatchRequest {
    /// Checks ranges; every refused field is named.
    pub fn validate(&self, now: OffsetDateTime) -> Result<(), LedgerError> {
        let mut p = FieldErrors::default();
        p.check(
            (1..=MAX_BATCH).contains(&self.count),
            "count",
            format!("must be between 1 and {MAX_BATCH}"),
        );
        p.check(
            (1..=MAX_CREDITS).contains(&self.credits),
            "credits",
            format!("must be between 1 and {MAX_CREDITS}"),
        );
        p.check(
            (1..=1_000_000).contains(&self.max_uses),
            "max_uses",
            "must be between 1 and 1000000",
        );
        p.check(
            self.expires_at.is_none_or(|at| at > now),
            "expires_at",
            "must be in the future",
        );
        p.check(
            self.credits_expire_days
                .is_none_or(|d| (1..=3_650).contains(&d)),
            "credits_expire_days",
            "must be between 1 and 3650, or null",
        );
        p.take(crate::model::validate_description(&self.description));
        Ok(p.finish()?)
    }
}

/// A stored code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedemptionCode {
    /// Id.
    pub id: i64,
    /// The code, `XXXX-XXXX-XXXX`.
    pub code: String,
    /// Batch it was generated in.
    pub batch: String,
    /// Credits per redemption.
    pub credits: i64,
    /// Redemptions allowed.
    pub max_uses: i64,
    /// Redemptions so far.
    pub uses: i64,
    /// When it stops redeeming.
    pub expires_at: Option<OffsetDateTime>,
    /// Days until redeemed credits expire.
    pub credits_expire_days: Option<u32>,
    /// History description.
    pub description: String,
    /// Admin who created it.
    pub created_by: String,
    /// When.
    pub created_at: OffsetDateTime,
}

/// A user's redemption.
#[derive(Debug, Clone, PartialEq)]
pub struct RedeemRequest {
    /// Who redeems.
    pub account: AccountRef,
    /// The code as typed (normalised before lookup).
    pub code: String,
    /// When.
    pub now: OffsetDateTime,
}

/// Upper-cases and drops separators, mapping look-alike letters the way Crockford's alphabet
/// does, so `abcd-efgh-jkmn`, `ABCDEFGHJKMN` and `ABCD EFGH JKMN` are one code.
pub fn normalise(code: &str) -> Option<String> {
    let mut out = String::with_capacity(14);
    for c in code.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !ALPHABET.contains(&(c as u8)) || !c.is_ascii() {
            return None;
        }
        out.push(c);
    }
    (out.len() == 12).then(|| format!("{}-{}-{}", &out[0..4], &out[4..8], &out[8..12]))
}

/// A fresh random code from 60 bits of entropy: unguessable by rate-limited callers.
pub fn generate(random: [u8; 12]) -> String {
    let chars: String = random
        .iter()
        .map(|b| ALPHABET[usize::from(b % 32)] as char)
        .collect();
    format!("{}-{}-{}", &chars[0..4], &chars[4..8], &chars[8..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_accepts_typing_variants() {
        let canonical = normalise("ABCD-EFGH-JKMN").unwrap();
        assert_eq!(normalise("abcd efgh jkmn").unwrap(), canonical);
        assert_eq!(normalise("abcdefghjkmn").unwrap(), canonical);
        assert_eq!(normalise("0O1I-L000-0000").unwrap(), "0011-1000-0000");
        assert!(normalise("ABCD-EFGH-JKM").is_none());
        assert!(normalise("ABCD-EFGH-JKMU").is_none());
        assert!(normalise("ÄBCD-EFGH-JKMN").is_none());
    }

    #[test]
    fn generated_codes_normalise_to_themselves() {
        let code = generate([0, 31, 32, 63, 200, 255, 7, 8, 9, 10, 11, 12]);
        assert_eq!(normalise(&code).as_deref(), Some(code.as_str()));
    }
}
