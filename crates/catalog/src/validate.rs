//! Field rules shared by plans and coupons.

use crate::error::{CatalogError, Problems};

/// Currencies a price may be in: lower-case ISO 4217 codes of commonly used currencies.
pub const CURRENCIES: &[&str] = &[
    "usd", "eur", "gbp", "jpy", "cny", "cad", "aud", "chf", "sek", "nok", "dkk", "inr", "brl",
    "mxn", "sgd", "hkd", "krw", "pln", "czk", "nzd", "zar",
];

/// Largest amount of money (minor units) or credits a catalog entry may name.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// App keys follow the kernel's rule ([`tally_kernel::is_app_key`]).
pub fn validate_app(app: &str) -> Result<(), CatalogError> {
    if tally_kernel::is_app_key(app) {
        Ok(())
    } else {
        Err(CatalogError::invalid("app", tally_kernel::APP_KEY_RULE))
    }
}

/// Lower-cases a currency code; whether it is known is checked by [`check_currency`].
pub(crate) fn normalise_currency(c: &str) -> String {
    c.trim().to_ascii_lowercase()
}

pub(crate) fn check_currency(p: &mut Problems, field: &str, currency: &str) {
    p.check(
        CURRENCIES.contains(&currency),
        field,
        format!("must be one of {}", CURRENCIES.join(", ")),
    );
}

pub(crate) fn check_amount(p: &mut Problems, field: &str, v: i64, min: i64) {
    p.check(
        (min..=MAX_AMOUNT).contains(&v),
        field,
        format!("must be between {min} and {MAX_AMOUNT}"),
    );
}

/// Provider identifiers are opaque, but printable and bounded.
pub(crate) fn check_external_id(p: &mut Problems, field: &str, v: Option<&str>) {
    if let Some(v) = v {
        p.check(
            !v.is_empty() && v.len() <= 255 && v.bytes().all(|b| b.is_ascii_graphic()),
            field,
            "must be 1-255 printable ASCII characters without spaces",
        );
    }
}

/// Timestamps keep microseconds, as both databases do.
pub use tally_kernel::truncate_micros;
