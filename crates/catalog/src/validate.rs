//! Field rules shared by plans and coupons.

use time::OffsetDateTime;

use crate::error::{CatalogError, Problems};

/// Currencies a price may be in: lower-case ISO 4217 codes of commonly used currencies.
pub const CURRENCIES: &[&str] = &[
    "usd", "eur", "gbp", "jpy", "cny", "cad", "aud", "chf", "sek", "nok", "dkk", "inr", "brl",
    "mxn", "sgd", "hkd", "krw", "pln", "czk", "nzd", "zar",
];

/// Largest amount of money (minor units) or credits a catalog entry may name.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// App keys are short identifiers: 1–64 of `A-Z a-z 0-9 _ - .` (the ledger's rule).
pub fn validate_app(app: &str) -> Result<(), CatalogError> {
    let ok = !app.is_empty()
        && app.len() <= 64
        && app
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CatalogError::invalid(
            "app",
            "must be 1-64 characters of A-Z, a-z, 0-9, '_', '-', '.'",
        ))
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
pub fn truncate_micros(t: OffsetDateTime) -> OffsetDateTime {
    let nanos = t.nanosecond() / 1_000 * 1_000;
    t.replace_nanosecond(nanos).unwrap_or(t)
}
