//! Coupons: a percentage or a fixed amount off, for one payment, a number of months, or forever.

use time::OffsetDateTime;

use crate::error::{CatalogError, Problems};
use crate::validate::{check_amount, check_currency, normalise_currency, truncate_micros};

/// Most plans one coupon may be restricted to.
pub const MAX_COUPON_PLANS: usize = 100;

tally_kernel::wire_enum! {
    /// How long a coupon's discount lasts on a subscription.
    pub enum CouponDuration {
        /// The first payment only.
        Once = "once",
        /// The first `duration_months` months.
        Repeating = "repeating",
        /// Every payment.
        Forever = "forever",
    }
}

/// What an admin sets on a new coupon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponSpec {
    /// 1–64 of `A-Z a-z 0-9 _ -`; stored upper-case, unique per app.
    pub code: String,
    /// Percentage off, 1–100 (exclusive with `amount_off`).
    pub percent_off: Option<i64>,
    /// Minor units off (exclusive with `percent_off`; needs `currency`).
    pub amount_off: Option<i64>,
    /// Currency of `amount_off`.
    pub currency: Option<String>,
    /// How long the discount lasts.
    pub duration: CouponDuration,
    /// Months the discount lasts; required iff `duration` is `repeating`, 1–36.
    pub duration_months: Option<u32>,
    /// Total redemptions allowed; `None` = unlimited.
    pub max_redemptions: Option<i64>,
    /// When the coupon stops being redeemable.
    pub expires_at: Option<OffsetDateTime>,
    /// Plan ids it applies to; empty = every plan of the app.
    pub plan_ids: Vec<String>,
    /// Whether it may be redeemed.
    pub active: bool,
}

/// A stored coupon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coupon {
    /// The coupon id: the decimal string of the stored integer id.
    pub id: String,
    /// App key it belongs to.
    pub app: String,
    /// Upper-case code.
    pub code: String,
    /// Percentage off.
    pub percent_off: Option<i64>,
    /// Minor units off.
    pub amount_off: Option<i64>,
    /// Currency of `amount_off`.
    pub currency: Option<String>,
    /// How long the discount lasts.
    pub duration: CouponDuration,
    /// Months, for `repeating`.
    pub duration_months: Option<u32>,
    /// Total redemptions allowed.
    pub max_redemptions: Option<i64>,
    /// Redemptions so far.
    pub times_redeemed: i64,
    /// When it stops being redeemable.
    pub expires_at: Option<OffsetDateTime>,
    /// Plans it applies to; empty = all.
    pub plan_ids: Vec<String>,
    /// Whether it may be redeemed.
    pub active: bool,
    /// The admin who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

impl CouponSpec {
    /// Normalises (upper-case code, lower-case currency, plan ids de-duplicated) and checks every
    /// field that needs no database; `now` bounds `expires_at`.
    pub fn validated(mut self, now: OffsetDateTime) -> Result<Self, CatalogError> {
        self.code = self.code.trim().to_ascii_uppercase();
        self.currency = self.currency.as_deref().map(normalise_currency);
        self.expires_at = self.expires_at.map(truncate_micros);
        let mut seen = std::collections::HashSet::new();
        self.plan_ids.retain(|id| seen.insert(id.clone()));
        self.validate(now)?;
        Ok(self)
    }

    fn validate(&self, now: OffsetDateTime) -> Result<(), CatalogError> {
        let mut p = Problems::default();
        p.check(
            !self.code.is_empty()
                && self.code.len() <= 64
                && self
                    .code
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')),
            "code",
            "must be 1-64 characters of A-Z, a-z, 0-9, '_', '-'",
        );
        match (self.percent_off, self.amount_off) {
            (Some(_), Some(_)) => p.add("amount_off", "give percent_off or amount_off, not both"),
            (None, None) => p.add("percent_off", "give percent_off or amount_off"),
            (Some(pct), None) => {
                p.check((1..=100).contains(&pct), "percent_off", "must be 1-100");
                p.check(
                    self.currency.is_none(),
                    "currency",
                    "only an amount_off coupon has a currency",
                );
            }
            (None, Some(amount)) => {
                check_amount(&mut p, "amount_off", amount, 1);
                match &self.currency {
                    Some(c) => check_currency(&mut p, "currency", c),
                    None => p.add("currency", "required with amount_off"),
                }
            }
        }
        match (self.duration, self.duration_months) {
            (CouponDuration::Repeating, Some(m)) => {
                p.check((1..=36).contains(&m), "duration_months", "must be 1-36");
            }
            (CouponDuration::Repeating, None) => {
                p.add("duration_months", "required when duration is repeating");
            }
            (_, Some(_)) => p.add("duration_months", "only allowed when duration is repeating"),
            (_, None) => {}
        }
        if let Some(max) = self.max_redemptions {
            p.check(max >= 1, "max_redemptions", "must be at least 1");
        }
        if let Some(at) = self.expires_at {
            p.check(at > now, "expires_at", "must be in the future");
        }
        p.check(
            self.plan_ids.len() <= MAX_COUPON_PLANS,
            "plan_ids",
            format!("at most {MAX_COUPON_PLANS} entries"),
        );
        Ok(p.finish()?)
    }
}

/// What an admin may change on a stored coupon; `None` leaves a field as it is.
///
/// The discount (`percent_off`, `amount_off`, `currency`), its `duration` and the code are
/// fixed at creation: orders and the providers' copies of the coupon already carry them, so a
/// different discount is a new coupon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CouponPatch {
    /// Switch redemption on or off.
    pub active: Option<bool>,
    /// The new limit (`Some(None)` = unlimited); never below the redemptions so far.
    pub max_redemptions: Option<Option<i64>>,
    /// The new expiry (`Some(None)` = never); a new instant must be in the future.
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// The plans it applies to (empty = all); the service checks them against the app's plans.
    pub plan_ids: Option<Vec<String>>,
}

impl CouponPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The stored coupon with this patch applied, normalised and checked. Only what the patch
    /// changes is checked, so an old coupon whose expiry has passed can still be switched off.
    pub fn merge(&self, current: &Coupon, now: OffsetDateTime) -> Result<Coupon, CatalogError> {
        let mut next = current.clone();
        let mut p = Problems::default();
        if let Some(active) = self.active {
            next.active = active;
        }
        if let Some(max) = self.max_redemptions {
            if let Some(max) = max {
                p.check(max >= 1, "max_redemptions", "must be at least 1");
                p.check(
                    max >= current.times_redeemed,
                    "max_redemptions",
                    format!(
                        "must be at least the {} redemptions so far",
                        current.times_redeemed
                    ),
                );
            }
            next.max_redemptions = max;
        }
        if let Some(at) = self.expires_at {
            let at = at.map(truncate_micros);
            if let Some(at) = at {
                p.check(at > now, "expires_at", "must be in the future");
            }
            next.expires_at = at;
        }
        if let Some(ids) = &self.plan_ids {
            let mut seen = std::collections::HashSet::new();
            next.plan_ids = ids.iter().filter(|id| seen.insert(*id)).cloned().collect();
            p.check(
                next.plan_ids.len() <= MAX_COUPON_PLANS,
                "plan_ids",
                format!("at most {MAX_COUPON_PLANS} entries"),
            );
        }
        p.finish()?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    fn launch() -> CouponSpec {
        CouponSpec {
            code: "launch-50".into(),
            percent_off: Some(50),
            amount_off: None,
            currency: None,
            duration: CouponDuration::Repeating,
            duration_months: Some(3),
            max_redemptions: Some(100),
            expires_at: Some(datetime!(2026-12-31 00:00 UTC)),
            plan_ids: vec!["1".into(), "2".into(), "1".into()],
            active: true,
        }
    }

    fn fields(e: CatalogError) -> Vec<String> {
        match e {
            CatalogError::Validation(f) => f.into_iter().map(|f| f.field).collect(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn valid_coupon_is_normalised() {
        let c = launch().validated(NOW).unwrap();
        assert_eq!(c.code, "LAUNCH-50");
        assert_eq!(c.plan_ids, ["1", "2"]);
    }

    #[test]
    fn discount_shape_is_exclusive() {
        let mut both = launch();
        both.amount_off = Some(100);
        assert_eq!(fields(both.validated(NOW).unwrap_err()), ["amount_off"]);
        let mut neither = launch();
        neither.percent_off = None;
        assert_eq!(fields(neither.validated(NOW).unwrap_err()), ["percent_off"]);
        let mut amount = launch();
        amount.percent_off = None;
        amount.amount_off = Some(500);
        assert_eq!(
            fields(amount.clone().validated(NOW).unwrap_err()),
            ["currency"]
        );
        amount.currency = Some("EUR".into());
        assert_eq!(
            amount.validated(NOW).unwrap().currency.as_deref(),
            Some("eur")
        );
        let mut pct = launch();
        pct.percent_off = Some(101);
        pct.currency = Some("usd".into());
        assert_eq!(
            fields(pct.validated(NOW).unwrap_err()),
            ["percent_off", "currency"]
        );
    }

    #[test]
    fn duration_months_iff_repeating() {
        let mut c = launch();
        c.duration_months = None;
        assert_eq!(fields(c.validated(NOW).unwrap_err()), ["duration_months"]);
        let mut c = launch();
        c.duration = CouponDuration::Once;
        assert_eq!(fields(c.validated(NOW).unwrap_err()), ["duration_months"]);
        let mut c = launch();
        c.duration_months = Some(37);
        assert_eq!(fields(c.validated(NOW).unwrap_err()), ["duration_months"]);
    }

    #[test]
    fn code_limits_and_expiry() {
        for bad in ["", "has space", "ümlaut", &"X".repeat(65)] {
            let mut c = launch();
            c.code = bad.into();
            assert_eq!(fields(c.validated(NOW).unwrap_err()), ["code"], "{bad:?}");
        }
        let mut c = launch();
        c.expires_at = Some(NOW);
        c.max_redemptions = Some(0);
        assert_eq!(
            fields(c.validated(NOW).unwrap_err()),
            ["max_redemptions", "expires_at"]
        );
    }

    fn stored() -> Coupon {
        let spec = launch().validated(NOW).unwrap();
        Coupon {
            id: "7".into(),
            app: "default".into(),
            code: spec.code,
            percent_off: spec.percent_off,
            amount_off: spec.amount_off,
            currency: spec.currency,
            duration: spec.duration,
            duration_months: spec.duration_months,
            max_redemptions: spec.max_redemptions,
            times_redeemed: 40,
            expires_at: spec.expires_at,
            plan_ids: spec.plan_ids,
            active: true,
            created_by: "root".into(),
            created_at: NOW,
        }
    }

    #[test]
    fn patch_changes_only_what_it_names() {
        let current = stored();
        assert_eq!(
            CouponPatch::default().merge(&current, NOW).unwrap(),
            current
        );
        let off = CouponPatch {
            active: Some(false),
            ..Default::default()
        };
        let merged = off.merge(&current, NOW).unwrap();
        assert!(!merged.active);
        assert_eq!(
            Coupon {
                active: true,
                ..merged
            },
            current
        );
        let patch = CouponPatch {
            max_redemptions: Some(None),
            expires_at: Some(None),
            plan_ids: Some(vec!["3".into(), "3".into(), "4".into()]),
            ..Default::default()
        };
        let merged = patch.merge(&current, NOW).unwrap();
        assert_eq!(merged.max_redemptions, None);
        assert_eq!(merged.expires_at, None);
        assert_eq!(merged.plan_ids, ["3", "4"]);
        assert_eq!((merged.percent_off, merged.active), (Some(50), true));
    }

    #[test]
    fn patch_refuses_a_limit_below_redemptions_and_a_past_expiry() {
        let current = stored();
        let low = CouponPatch {
            max_redemptions: Some(Some(39)),
            expires_at: Some(Some(NOW)),
            ..Default::default()
        };
        assert_eq!(
            fields(low.merge(&current, NOW).unwrap_err()),
            ["max_redemptions", "expires_at"]
        );
        let zero = CouponPatch {
            max_redemptions: Some(Some(0)),
            ..Default::default()
        };
        assert!(zero.merge(&current, NOW).is_err());
        let exact = CouponPatch {
            max_redemptions: Some(Some(40)),
            ..Default::default()
        };
        assert_eq!(
            exact.merge(&current, NOW).unwrap().max_redemptions,
            Some(40)
        );
        // An expired coupon can still be switched off.
        let mut expired = current.clone();
        expired.expires_at = Some(NOW - time::Duration::days(1));
        let off = CouponPatch {
            active: Some(false),
            ..Default::default()
        };
        assert!(!off.merge(&expired, NOW).unwrap().active);
    }
}
