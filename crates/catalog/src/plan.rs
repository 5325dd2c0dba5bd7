//! Plans: what an app sells. A `subscription` has a monthly and/or yearly price and grants
//! `credits_included` each period; a `credit_pack` has one price and grants its credits once.

use tally_kernel::has_control_chars;
use time::OffsetDateTime;

use crate::error::{CatalogError, Problems};
use crate::validate::{check_amount, check_currency, check_external_id, normalise_currency};

/// Most features a plan may list.
pub const MAX_FEATURES: usize = 50;

tally_kernel::wire_enum! {
    /// What kind of thing a plan sells.
    pub enum PlanKind {
        /// A recurring subscription, billed monthly or yearly.
        Subscription = "subscription",
        /// A one-time pack of credits.
        CreditPack = "credit_pack",
    }
}

/// Everything an admin sets on a plan: the input of a create, the result of a merged update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSpec {
    /// Display name, 1–100 characters.
    pub name: String,
    /// Display description, up to 1000 characters.
    pub description: String,
    /// Subscription or credit pack.
    pub kind: PlanKind,
    /// Lower-case ISO 4217 code, one of [`crate::CURRENCIES`].
    pub currency: String,
    /// Monthly price in minor units (subscriptions).
    pub price_monthly: Option<i64>,
    /// Yearly price in minor units (subscriptions).
    pub price_yearly: Option<i64>,
    /// One-time price in minor units (credit packs).
    pub price: Option<i64>,
    /// Credits granted per period (subscriptions) or per pack.
    pub credits_included: i64,
    /// Selling points shown to users.
    pub features: Vec<String>,
    /// Stripe price of the monthly subscription.
    pub stripe_price_id_monthly: Option<String>,
    /// Stripe price of the yearly subscription.
    pub stripe_price_id_yearly: Option<String>,
    /// Stripe price of the pack.
    pub stripe_price_id: Option<String>,
    /// Creem product of the monthly subscription.
    pub creem_product_id_monthly: Option<String>,
    /// Creem product of the yearly subscription.
    pub creem_product_id_yearly: Option<String>,
    /// Creem product of the pack.
    pub creem_product_id: Option<String>,
    /// Whether users see and may buy the plan.
    pub active: bool,
    /// Position in listings, ascending (ties by id).
    pub sort_order: i64,
    /// Days until granted credits expire; `None` = never.
    pub credits_expire_days: Option<u32>,
    /// Days of free trial a new subscription starts with (subscriptions only); `None` = none.
    pub trial_days: Option<u32>,
    /// Credits granted once when a trial starts (0 = none; needs `trial_days`).
    pub trial_credits: i64,
}

/// A stored plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The plan id: the decimal string of the stored integer id.
    pub id: String,
    /// App key the plan belongs to.
    pub app: String,
    /// Display name.
    pub name: String,
    /// Display description.
    pub description: String,
    /// Subscription or credit pack.
    pub kind: PlanKind,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// Monthly price in minor units (subscriptions).
    pub price_monthly: Option<i64>,
    /// Yearly price in minor units (subscriptions).
    pub price_yearly: Option<i64>,
    /// One-time price in minor units (credit packs).
    pub price: Option<i64>,
    /// Credits granted per period or per pack.
    pub credits_included: i64,
    /// Selling points.
    pub features: Vec<String>,
    /// Stripe price of the monthly subscription.
    pub stripe_price_id_monthly: Option<String>,
    /// Stripe price of the yearly subscription.
    pub stripe_price_id_yearly: Option<String>,
    /// Stripe price of the pack.
    pub stripe_price_id: Option<String>,
    /// Creem product of the monthly subscription.
    pub creem_product_id_monthly: Option<String>,
    /// Creem product of the yearly subscription.
    pub creem_product_id_yearly: Option<String>,
    /// Creem product of the pack.
    pub creem_product_id: Option<String>,
    /// Whether users see and may buy it.
    pub active: bool,
    /// Position in listings.
    pub sort_order: i64,
    /// Days until granted credits expire; `None` = never.
    pub credits_expire_days: Option<u32>,
    /// Days of free trial a new subscription starts with; `None` = none.
    pub trial_days: Option<u32>,
    /// Credits granted once when a trial starts.
    pub trial_credits: i64,
    /// The admin who created it.
    pub created_by: String,
    /// The admin who changed it last.
    pub updated_by: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it was changed last.
    pub updated_at: OffsetDateTime,
}

impl Plan {
    /// The admin-settable part, e.g. to merge a [`PlanPatch`] into.
    pub fn spec(&self) -> PlanSpec {
        PlanSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            kind: self.kind,
            currency: self.currency.clone(),
            price_monthly: self.price_monthly,
            price_yearly: self.price_yearly,
            price: self.price,
            credits_included: self.credits_included,
            features: self.features.clone(),
            stripe_price_id_monthly: self.stripe_price_id_monthly.clone(),
            stripe_price_id_yearly: self.stripe_price_id_yearly.clone(),
            stripe_price_id: self.stripe_price_id.clone(),
            creem_product_id_monthly: self.creem_product_id_monthly.clone(),
            creem_product_id_yearly: self.creem_product_id_yearly.clone(),
            creem_product_id: self.creem_product_id.clone(),
            active: self.active,
            sort_order: self.sort_order,
            credits_expire_days: self.credits_expire_days,
            trial_days: self.trial_days,
            trial_credits: self.trial_credits,
        }
    }
}

impl PlanSpec {
    /// Normalises (trimmed name, lower-case currency) and checks every field and the prices the
    /// kind needs; the error lists every problem found.
    pub fn validated(mut self) -> Result<Self, CatalogError> {
        self.name = self.name.trim().to_owned();
        self.currency = normalise_currency(&self.currency);
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> Result<(), CatalogError> {
        let mut p = Problems::default();
        p.check(
            !self.name.is_empty()
                && self.name.chars().count() <= 100
                && !has_control_chars(&self.name, false),
            "name",
            "must be 1-100 characters without control characters",
        );
        p.check(
            self.description.chars().count() <= 1000
                && !has_control_chars(&self.description, true),
            "description",
            "must be at most 1000 characters, without control characters other than line breaks and tabs",
        );
        check_currency(&mut p, "currency", &self.currency);
        for (field, price) in [
            ("price_monthly", self.price_monthly),
            ("price_yearly", self.price_yearly),
            ("price", self.price),
        ] {
            if let Some(v) = price {
                check_amount(&mut p, field, v, 0);
            }
        }
        check_amount(&mut p, "credits_included", self.credits_included, 0);
        p.check(
            self.features.len() <= MAX_FEATURES,
            "features",
            format!("at most {MAX_FEATURES} entries"),
        );
        for (i, f) in self.features.iter().enumerate() {
            p.check(
                !f.trim().is_empty() && f.chars().count() <= 200 && !has_control_chars(f, false),
                format!("features[{i}]"),
                "must be 1-200 characters, not blank, without control characters",
            );
        }
        for (field, id) in self.external_ids() {
            check_external_id(&mut p, field, id);
        }
        if let Some(days) = self.credits_expire_days {
            p.check(
                (1..=3650).contains(&days),
                "credits_expire_days",
                "must be between 1 and 3650, or null for never",
            );
        }
        if let Some(days) = self.trial_days {
            p.check(
                (1..=730).contains(&days),
                "trial_days",
                "must be between 1 and 730, or null for no trial",
            );
        }
        check_amount(&mut p, "trial_credits", self.trial_credits, 0);
        p.check(
            self.trial_credits == 0 || self.trial_days.is_some(),
            "trial_credits",
            "needs trial_days",
        );
        self.check_kind(&mut p);
        Ok(p.finish()?)
    }

    fn external_ids(&self) -> [(&'static str, Option<&str>); 6] {
        [
            (
                "stripe_price_id_monthly",
                self.stripe_price_id_monthly.as_deref(),
            ),
            (
                "stripe_price_id_yearly",
                self.stripe_price_id_yearly.as_deref(),
            ),
            ("stripe_price_id", self.stripe_price_id.as_deref()),
            (
                "creem_product_id_monthly",
                self.creem_product_id_monthly.as_deref(),
            ),
            (
                "creem_product_id_yearly",
                self.creem_product_id_yearly.as_deref(),
            ),
            ("creem_product_id", self.creem_product_id.as_deref()),
        ]
    }

    /// Each kind has its own prices and provider ids; the other kind's must be absent, and a
    /// provider id needs the price it charges.
    fn check_kind(&self, p: &mut Problems) {
        let kind = self.kind.as_str();
        let foreign = |p: &mut Problems, field: &str, present: bool| {
            p.check(!present, field, format!("not allowed for a {kind} plan"));
        };
        match self.kind {
            PlanKind::Subscription => {
                p.check(
                    self.price_monthly.is_some() || self.price_yearly.is_some(),
                    "price_monthly",
                    "a subscription needs price_monthly or price_yearly",
                );
                foreign(p, "price", self.price.is_some());
                foreign(p, "stripe_price_id", self.stripe_price_id.is_some());
                foreign(p, "creem_product_id", self.creem_product_id.is_some());
                let monthly = self.price_monthly.is_some();
                let yearly = self.price_yearly.is_some();
                for (field, present, priced, price) in [
                    (
                        "stripe_price_id_monthly",
                        self.stripe_price_id_monthly.is_some(),
                        monthly,
                        "price_monthly",
                    ),
                    (
                        "creem_product_id_monthly",
                        self.creem_product_id_monthly.is_some(),
                        monthly,
                        "price_monthly",
                    ),
                    (
                        "stripe_price_id_yearly",
                        self.stripe_price_id_yearly.is_some(),
                        yearly,
                        "price_yearly",
                    ),
                    (
                        "creem_product_id_yearly",
                        self.creem_product_id_yearly.is_some(),
                        yearly,
                        "price_yearly",
                    ),
                ] {
                    p.check(!present || priced, field, format!("needs {price}"));
                }
            }
            PlanKind::CreditPack => {
                p.check(self.price.is_some(), "price", "a credit_pack needs price");
                foreign(p, "trial_days", self.trial_days.is_some());
                for (field, present) in [
                    ("price_monthly", self.price_monthly.is_some()),
                    ("price_yearly", self.price_yearly.is_some()),
                    (
                        "stripe_price_id_monthly",
                        self.stripe_price_id_monthly.is_some(),
                    ),
                    (
                        "stripe_price_id_yearly",
                        self.stripe_price_id_yearly.is_some(),
                    ),
                    (
                        "creem_product_id_monthly",
                        self.creem_product_id_monthly.is_some(),
                    ),
                    (
                        "creem_product_id_yearly",
                        self.creem_product_id_yearly.is_some(),
                    ),
                ] {
                    foreign(p, field, present);
                }
            }
        }
    }
}

/// A partial update: a field given replaces the stored value, a field omitted keeps it. Nullable
/// fields take `Some(None)` to clear them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanPatch {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New kind (the other kind's prices must then be cleared in the same patch).
    pub kind: Option<PlanKind>,
    /// New currency.
    pub currency: Option<String>,
    /// New or cleared monthly price.
    pub price_monthly: Option<Option<i64>>,
    /// New or cleared yearly price.
    pub price_yearly: Option<Option<i64>>,
    /// New or cleared pack price.
    pub price: Option<Option<i64>>,
    /// New credits per period or pack.
    pub credits_included: Option<i64>,
    /// New features (the whole list).
    pub features: Option<Vec<String>>,
    /// New or cleared Stripe monthly price id.
    pub stripe_price_id_monthly: Option<Option<String>>,
    /// New or cleared Stripe yearly price id.
    pub stripe_price_id_yearly: Option<Option<String>>,
    /// New or cleared Stripe pack price id.
    pub stripe_price_id: Option<Option<String>>,
    /// New or cleared Creem monthly product id.
    pub creem_product_id_monthly: Option<Option<String>>,
    /// New or cleared Creem yearly product id.
    pub creem_product_id_yearly: Option<Option<String>>,
    /// New or cleared Creem pack product id.
    pub creem_product_id: Option<Option<String>>,
    /// New visibility.
    pub active: Option<bool>,
    /// New position.
    pub sort_order: Option<i64>,
    /// New or cleared credit expiry.
    pub credits_expire_days: Option<Option<u32>>,
    /// New or cleared trial length.
    pub trial_days: Option<Option<u32>>,
    /// New trial credits.
    pub trial_credits: Option<i64>,
}

impl PlanPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The stored plan with this patch applied, validated as a whole (a patch may leave a plan
    /// without the prices its kind needs, which is refused here).
    pub fn merge(&self, current: &Plan) -> Result<PlanSpec, CatalogError> {
        let mut s = current.spec();
        macro_rules! take {
            ($($field:ident),*) => {$(
                if let Some(v) = &self.$field {
                    s.$field = v.clone();
                }
            )*};
        }
        take!(
            name,
            description,
            currency,
            price_monthly,
            price_yearly,
            price,
            features,
            stripe_price_id_monthly,
            stripe_price_id_yearly,
            stripe_price_id,
            creem_product_id_monthly,
            creem_product_id_yearly,
            creem_product_id,
            credits_expire_days,
            trial_days
        );
        if let Some(v) = self.trial_credits {
            s.trial_credits = v;
        }
        if let Some(kind) = self.kind {
            s.kind = kind;
        }
        if let Some(v) = self.credits_included {
            s.credits_included = v;
        }
        if let Some(v) = self.active {
            s.active = v;
        }
        if let Some(v) = self.sort_order {
            s.sort_order = v;
        }
        s.validated()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use time::macros::datetime;

    pub(crate) fn pro() -> PlanSpec {
        PlanSpec {
            name: " Pro ".into(),
            description: "For growing teams".into(),
            kind: PlanKind::Subscription,
            currency: "USD".into(),
            price_monthly: Some(999),
            price_yearly: Some(9990),
            price: None,
            credits_included: 10_000,
            features: vec!["Unlimited AI chat".into()],
            stripe_price_id_monthly: Some("price_m".into()),
            stripe_price_id_yearly: None,
            stripe_price_id: None,
            creem_product_id_monthly: None,
            creem_product_id_yearly: None,
            creem_product_id: None,
            active: true,
            sort_order: 1,
            credits_expire_days: None,
            trial_days: None,
            trial_credits: 0,
        }
    }

    fn fields(e: CatalogError) -> Vec<String> {
        match e {
            CatalogError::Validation(f) => f.into_iter().map(|f| f.field).collect(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    fn stored(spec: PlanSpec) -> Plan {
        let s = spec.validated().unwrap();
        let at = datetime!(2026-06-01 12:00 UTC);
        Plan {
            id: "1".into(),
            app: "default".into(),
            name: s.name,
            description: s.description,
            kind: s.kind,
            currency: s.currency,
            price_monthly: s.price_monthly,
            price_yearly: s.price_yearly,
            price: s.price,
            credits_included: s.credits_included,
            features: s.features,
            stripe_price_id_monthly: s.stripe_price_id_monthly,
            stripe_price_id_yearly: s.stripe_price_id_yearly,
            stripe_price_id: s.stripe_price_id,
            creem_product_id_monthly: s.creem_product_id_monthly,
            creem_product_id_yearly: s.creem_product_id_yearly,
            creem_product_id: s.creem_product_id,
            active: s.active,
            sort_order: s.sort_order,
            credits_expire_days: s.credits_expire_days,
            trial_days: s.trial_days,
            trial_credits: s.trial_credits,
            created_by: "root".into(),
            updated_by: "root".into(),
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn valid_subscription_is_normalised() {
        let s = pro().validated().unwrap();
        assert_eq!(s.name, "Pro");
        assert_eq!(s.currency, "usd");
    }

    #[test]
    fn every_problem_is_named() {
        let mut s = pro();
        s.name = "  ".into();
        s.currency = "xxx".into();
        s.price_yearly = Some(-1);
        s.credits_included = -5;
        s.features = vec!["ok".into(), " ".into()];
        s.credits_expire_days = Some(0);
        s.price = Some(100);
        assert_eq!(
            fields(s.validated().unwrap_err()),
            [
                "name",
                "currency",
                "price_yearly",
                "credits_included",
                "features[1]",
                "credits_expire_days",
                "price"
            ]
        );
    }

    #[test]
    fn trials_are_for_subscriptions_and_bounded() {
        let mut s = pro();
        s.trial_days = Some(14);
        s.trial_credits = 100;
        assert!(s.validated().is_ok());
        let mut s = pro();
        s.trial_days = Some(0);
        s.trial_credits = -1;
        assert_eq!(
            fields(s.validated().unwrap_err()),
            ["trial_days", "trial_credits"]
        );
        let mut s = pro();
        s.trial_credits = 5;
        assert_eq!(fields(s.validated().unwrap_err()), ["trial_credits"]);
        let pack = PlanSpec {
            kind: PlanKind::CreditPack,
            price_monthly: None,
            price_yearly: None,
            price: Some(499),
            stripe_price_id_monthly: None,
            trial_days: Some(7),
            ..pro()
        };
        assert_eq!(fields(pack.validated().unwrap_err()), ["trial_days"]);
    }

    #[test]
    fn each_kind_needs_its_prices() {
        let mut s = pro();
        s.price_monthly = None;
        s.price_yearly = None;
        assert_eq!(
            fields(s.validated().unwrap_err()),
            ["price_monthly", "stripe_price_id_monthly"]
        );
        let mut pack = pro();
        pack.kind = PlanKind::CreditPack;
        pack.stripe_price_id_monthly = None;
        assert_eq!(
            fields(pack.clone().validated().unwrap_err()),
            ["price", "price_monthly", "price_yearly"]
        );
        pack.price_monthly = None;
        pack.price_yearly = None;
        pack.price = Some(0);
        pack.stripe_price_id = Some("price_pack".into());
        assert!(pack.validated().is_ok());
    }

    #[test]
    fn patch_replaces_given_fields_and_revalidates() {
        let plan = stored(pro());
        let patch = PlanPatch {
            price_yearly: Some(None),
            description: Some("New".into()),
            ..PlanPatch::default()
        };
        let merged = patch.merge(&plan).unwrap();
        assert_eq!(merged.price_yearly, None);
        assert_eq!(merged.description, "New");
        assert_eq!(merged.price_monthly, Some(999));
        assert_eq!(merged.name, "Pro");

        let to_pack = PlanPatch {
            kind: Some(PlanKind::CreditPack),
            ..PlanPatch::default()
        };
        assert_eq!(
            fields(to_pack.merge(&plan).unwrap_err()),
            [
                "price",
                "price_monthly",
                "price_yearly",
                "stripe_price_id_monthly"
            ]
        );
        assert!(PlanPatch::default().is_empty());
        assert!(!to_pack.is_empty());
    }

    #[test]
    fn kind_names_round_trip() {
        for &k in PlanKind::ALL {
            assert_eq!(PlanKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(PlanKind::parse("pack"), None);
    }
}
