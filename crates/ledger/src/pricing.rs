//! Pricing: an app's features and the versioned rates that turn a metered quantity into credits.
//!
//! Prices are exact: the price of `q` units at `credits` per `per` is the rational number
//! `q × credits / per`, kept as an integer count of [`PRICE_SCALE`]ths of a credit. Every `per`
//! divides [`PRICE_SCALE`], so no price is ever rounded; what rounds is only the whole credits
//! charged for it, and the fraction left over is carried (see [`crate::usage::charge`]). No
//! floating point anywhere.

use std::collections::BTreeMap;

use tally_kernel::FieldErrors;
use time::OffsetDateTime;

use crate::error::{FieldError, gather};
use crate::{LedgerError, MAX_CREDITS};

/// A credit is counted in this many parts while priced: 10¹².
pub const PRICE_SCALE: i64 = 1_000_000_000_000;
/// Largest quantity of one feature in one call.
pub const MAX_QUANTITY: i64 = 1_000_000_000_000;
/// Most dimensions a rate or a call may name.
pub const MAX_DIMENSIONS: usize = 8;
/// Most volume tiers a rate may have.
pub const MAX_TIERS: usize = 16;
/// Longest feature key and dimension name.
pub const MAX_KEY_CHARS: usize = 64;
/// Longest dimension value.
pub const MAX_DIMENSION_VALUE_CHARS: usize = 128;

/// What a rate selects by: dimension name → value, e.g. `{"model": "gpt-4o"}`.
pub type Dimensions = BTreeMap<String, String>;

tally_kernel::wire_enum! {
    /// How a feature is used.
    pub enum FeatureKind {
        /// One quantity with a unit (tokens, images, messages), priced by rates.
        Metered = "metered",
        /// Granted or not (e.g. premium models).
        Boolean = "boolean",
    }
}

/// Whether `key` is a feature key or a dimension name: 1–64 of `a-z`, `0-9` and `_`.
pub fn is_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_CHARS
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn check_key(field: impl Into<String>, key: &str) -> Result<(), LedgerError> {
    if is_key(key) {
        Ok(())
    } else {
        Err(LedgerError::from(FieldError::new(
            field,
            format!("must be 1-{MAX_KEY_CHARS} characters of a-z, 0-9 and _"),
        )))
    }
}

fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), LedgerError> {
    if text.trim().is_empty() || text.chars().count() > max {
        return Err(LedgerError::invalid(
            field,
            format!("must be 1-{max} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(LedgerError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// What an admin sets on a feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureSpec {
    /// Stable identifier, `[a-z0-9_]`, 1–64 characters.
    pub key: String,
    /// Display name, 1–100 characters.
    pub name: String,
    /// Metered or boolean.
    pub kind: FeatureKind,
    /// The metered quantity's unit (e.g. `tokens`), up to 32 characters; none for booleans.
    pub unit: Option<String>,
}

impl FeatureSpec {
    /// Checks every field; the error names each offending one.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let mut p = FieldErrors::default();
        gather(&mut p, check_key("key", &self.key))?;
        gather(&mut p, check_text("name", &self.name, 100))?;
        match (&self.unit, self.kind) {
            (Some(_), FeatureKind::Boolean) => p.add("unit", "a boolean feature has no unit"),
            (Some(unit), FeatureKind::Metered) => gather(&mut p, check_text("unit", unit, 32))?,
            (None, _) => {}
        }
        Ok(p.finish()?)
    }
}

/// A stored feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    /// Stable identifier.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Metered or boolean.
    pub kind: FeatureKind,
    /// Unit of a metered feature.
    pub unit: Option<String>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it was changed last.
    pub updated_at: OffsetDateTime,
}

/// A volume tier: a call of at most `up_to` units is priced, whole, at `credits` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tier {
    /// Largest quantity per call this tier prices.
    pub up_to: i64,
    /// Credits per `per` units.
    pub credits: i64,
    /// Units the credits buy; divides 10¹².
    pub per: i64,
}

/// A new rate version, as an admin posts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateSpec {
    /// The metered feature priced.
    pub feature: String,
    /// What the rate applies to; empty for the feature's default rate.
    pub dimensions: Dimensions,
    /// Credits per `per` units (calls larger than every tier).
    pub credits: i64,
    /// Units the credits buy; divides 10¹².
    pub per: i64,
    /// Volume tiers by quantity per call, `up_to` strictly ascending.
    pub tiers: Vec<Tier>,
    /// When the version takes over; `None` = now.
    pub effective_from: Option<OffsetDateTime>,
}

fn check_price(field: &str, credits: i64, per: i64) -> Result<(), LedgerError> {
    if !(0..=MAX_CREDITS).contains(&credits) {
        return Err(LedgerError::from(FieldError::new(
            format!("{field}credits"),
            format!("must be an integer from 0 to {MAX_CREDITS}"),
        )));
    }
    if per < 1 || PRICE_SCALE % per != 0 {
        return Err(LedgerError::from(FieldError::new(
            format!("{field}per"),
            "must be a positive divisor of 1000000000000 (1, 1000, 1000000, 2, 5, 25, …)",
        )));
    }
    Ok(())
}

/// Checks a call's or a rate's dimensions.
pub fn check_dimensions(field: &str, dimensions: &Dimensions) -> Result<(), LedgerError> {
    if dimensions.len() > MAX_DIMENSIONS {
        return Err(LedgerError::from(FieldError::new(
            field,
            format!("must name at most {MAX_DIMENSIONS} dimensions"),
        )));
    }
    for (name, value) in dimensions {
        check_key(format!("{field}.{name}"), name)?;
        if value.is_empty()
            || value.chars().count() > MAX_DIMENSION_VALUE_CHARS
            || value.chars().any(char::is_control)
        {
            return Err(LedgerError::from(FieldError::new(
                format!("{field}.{name}"),
                format!(
                    "must be 1-{MAX_DIMENSION_VALUE_CHARS} characters without control characters"
                ),
            )));
        }
    }
    Ok(())
}

impl RateSpec {
    /// Checks every field (the feature's existence and kind are checked against the store).
    pub fn validate(&self, now: OffsetDateTime) -> Result<(), LedgerError> {
        let mut p = FieldErrors::default();
        gather(&mut p, check_key("feature", &self.feature))?;
        gather(&mut p, check_dimensions("dimensions", &self.dimensions))?;
        gather(&mut p, check_price("", self.credits, self.per))?;
        if self.tiers.len() > MAX_TIERS {
            p.add("tiers", format!("must have at most {MAX_TIERS} tiers"));
        } else {
            let mut floor = 0;
            for (i, tier) in self.tiers.iter().enumerate() {
                p.check(
                    tier.up_to > floor && tier.up_to <= MAX_QUANTITY,
                    format!("tiers[{i}].up_to"),
                    format!(
                        "must be greater than {floor} and at most {MAX_QUANTITY} (tiers ascend)"
                    ),
                );
                floor = floor.max(tier.up_to);
                gather(
                    &mut p,
                    check_price(&format!("tiers[{i}]."), tier.credits, tier.per),
                )?;
            }
        }
        p.check(
            self.effective_from
                .is_none_or(|at| at >= now - time::Duration::minutes(1)),
            "effective_from",
            "must not be in the past (a new version never reprices past usage)",
        );
        Ok(p.finish()?)
    }
}

/// A stored rate version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// The version's id.
    pub id: i64,
    /// The metered feature priced.
    pub feature: String,
    /// 1 for the first rate of its feature and dimensions, then counting up.
    pub version: i64,
    /// What it applies to; empty for the feature's default.
    pub dimensions: Dimensions,
    /// Credits per `per` units (calls larger than every tier).
    pub credits: i64,
    /// Units the credits buy.
    pub per: i64,
    /// Volume tiers, `up_to` ascending.
    pub tiers: Vec<Tier>,
    /// When it took or takes over.
    pub effective_from: OffsetDateTime,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// The admin who created it.
    pub created_by: String,
}

/// The price of one call's billable quantity, exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    /// Credits per `per` units that applied (the tier's, or the rate's own).
    pub credits: i64,
    /// Units those credits buy.
    pub per: i64,
    /// The exact price, in [`PRICE_SCALE`]ths of a credit.
    pub scaled: i128,
}

impl Rate {
    /// The price of `quantity` units in one call: the first tier whose `up_to` covers the whole
    /// quantity prices all of it; a call larger than every tier pays the rate's own price.
    pub fn price(&self, quantity: i64) -> Price {
        self.price_part(quantity, quantity)
    }

    /// The price of `billable` of a call's `quantity` units (the rest came from an allowance):
    /// the tier is the whole call's, its price applies to the billable units.
    pub fn price_part(&self, quantity: i64, billable: i64) -> Price {
        let (credits, per) = self
            .tiers
            .iter()
            .find(|t| quantity <= t.up_to)
            .map_or((self.credits, self.per), |t| (t.credits, t.per));
        Price {
            credits,
            per,
            scaled: i128::from(billable) * i128::from(credits) * i128::from(PRICE_SCALE / per),
        }
    }

    /// Whether the rate applies to a call with `dimensions`: each of its own is in the call.
    pub fn applies_to(&self, dimensions: &Dimensions) -> bool {
        self.dimensions
            .iter()
            .all(|(k, v)| dimensions.get(k) == Some(v))
    }
}

/// The rate that prices `feature` for a call with `dimensions` at `at`: among the versions in
/// force (`effective_from <= at`) whose dimensions the call has, the most specific (most
/// dimensions), then the latest to take effect, then the newest version.
pub fn select_rate<'a>(
    rates: &'a [Rate],
    feature: &str,
    dimensions: &Dimensions,
    at: OffsetDateTime,
) -> Option<&'a Rate> {
    rates
        .iter()
        .filter(|r| r.feature == feature && r.effective_from <= at && r.applies_to(dimensions))
        .max_by_key(|r| (r.dimensions.len(), r.effective_from, r.version, r.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn rate(id: i64, dims: &[(&str, &str)], credits: i64, per: i64, from: OffsetDateTime) -> Rate {
        Rate {
            id,
            feature: "input_tokens".into(),
            version: id,
            dimensions: dims
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            credits,
            per,
            tiers: vec![],
            effective_from: from,
            created_at: from,
            created_by: "admin".into(),
        }
    }

    const T0: OffsetDateTime = datetime!(2026-03-01 00:00 UTC);

    #[test]
    fn a_price_is_the_exact_rational_product() {
        let r = rate(1, &[], 25, 10_000, T0);
        // 1,200 tokens at 25 credits per 10,000 = 3 credits exactly.
        assert_eq!(r.price(1_200).scaled, 3 * i128::from(PRICE_SCALE));
        // 1 token = 0.0025 credit.
        assert_eq!(r.price(1).scaled, 2_500_000_000);
        assert_eq!(r.price(0).scaled, 0);
        let third = rate(2, &[], 1, 8, T0);
        assert_eq!(third.price(3).scaled, 375_000_000_000);
    }

    #[test]
    fn tiers_price_the_whole_call_by_its_size() {
        let mut r = rate(1, &[], 1, 1, T0);
        r.tiers = vec![
            Tier {
                up_to: 100,
                credits: 3,
                per: 1,
            },
            Tier {
                up_to: 1_000,
                credits: 2,
                per: 1,
            },
        ];
        assert_eq!(r.price(100).scaled, 300 * i128::from(PRICE_SCALE));
        assert_eq!(r.price(101).scaled, 202 * i128::from(PRICE_SCALE));
        assert_eq!(r.price(1_000).credits, 2);
        assert_eq!(r.price(1_001).scaled, 1_001 * i128::from(PRICE_SCALE));
    }

    #[test]
    fn the_most_specific_rate_in_force_wins() {
        let later = T0 + time::Duration::days(1);
        let rates = vec![
            rate(1, &[], 1, 1_000, T0),
            rate(2, &[("model", "gpt-4o")], 25, 10_000, T0),
            rate(3, &[("model", "gpt-4o")], 30, 10_000, later),
        ];
        let gpt: Dimensions = [("model".to_owned(), "gpt-4o".to_owned())].into();
        let mini: Dimensions = [("model".to_owned(), "mini".to_owned())].into();
        assert_eq!(select_rate(&rates, "input_tokens", &gpt, T0).unwrap().id, 2);
        assert_eq!(
            select_rate(&rates, "input_tokens", &gpt, later).unwrap().id,
            3
        );
        assert_eq!(
            select_rate(&rates, "input_tokens", &mini, later)
                .unwrap()
                .id,
            1
        );
        assert_eq!(
            select_rate(&rates, "input_tokens", &Dimensions::new(), T0)
                .unwrap()
                .id,
            1
        );
        assert!(select_rate(&rates[1..], "input_tokens", &mini, T0).is_none());
        assert!(select_rate(&rates, "output_tokens", &gpt, T0).is_none());
        assert!(select_rate(&rates, "input_tokens", &gpt, T0 - time::Duration::SECOND).is_none());
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        let field = |e: LedgerError| match e {
            LedgerError::Validation(f) => f[0].field.clone(),
            e => panic!("{e}"),
        };
        let ok = RateSpec {
            feature: "input_tokens".into(),
            dimensions: Dimensions::new(),
            credits: 25,
            per: 10_000,
            tiers: vec![],
            effective_from: None,
        };
        assert!(ok.validate(T0).is_ok());
        let bad = |f: fn(&mut RateSpec)| {
            let mut s = ok.clone();
            f(&mut s);
            field(s.validate(T0).unwrap_err())
        };
        assert_eq!(bad(|s| s.per = 3), "per");
        assert_eq!(bad(|s| s.per = 0), "per");
        assert_eq!(bad(|s| s.credits = -1), "credits");
        assert_eq!(bad(|s| s.feature = "Input".into()), "feature");
        assert_eq!(
            bad(|s| {
                s.dimensions.insert("model".into(), String::new());
            }),
            "dimensions.model"
        );
        assert_eq!(
            bad(|s| s.tiers = vec![
                Tier {
                    up_to: 10,
                    credits: 1,
                    per: 1
                },
                Tier {
                    up_to: 10,
                    credits: 1,
                    per: 1
                }
            ]),
            "tiers[1].up_to"
        );
        assert_eq!(
            bad(|s| s.effective_from = Some(T0 - time::Duration::hours(1))),
            "effective_from"
        );
        let feature = FeatureSpec {
            key: "premium_models".into(),
            name: "Premium models".into(),
            kind: FeatureKind::Boolean,
            unit: Some("calls".into()),
        };
        assert_eq!(field(feature.validate().unwrap_err()), "unit");
        assert!(
            FeatureSpec {
                unit: None,
                ..feature.clone()
            }
            .validate()
            .is_ok()
        );
        assert_eq!(
            field(
                FeatureSpec {
                    name: "a\0b".into(),
                    unit: None,
                    ..feature
                }
                .validate()
                .unwrap_err()
            ),
            "name"
        );
    }
}
