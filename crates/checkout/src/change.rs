//! Changing a subscription's plan, decided without I/O: what a switch costs now, which way it
//! goes, and the credits it brings.
//!
//! The rules: the billing interval stays; a switch to a dearer price is an **upgrade**, which
//! the provider charges now, pro rata for the rest of the period (Stripe
//! `proration_behavior=always_invoice`, Creem `proration-charge-immediately`); any other switch
//! is a **downgrade**, charged from the next period with nothing refunded. Credits follow the
//! plan's included credits, not the price: a plan with more credits per period grants the
//! difference pro rata for the rest of the current period when the provider reports the switch
//! ([`prorated`]), once; a plan with fewer takes nothing back, and the next period grants the
//! new plan's credits.

use tally_catalog::{Plan, PlanKind};
use time::OffsetDateTime;

use crate::{Channel, CheckoutError, Interval, OrderType, Subscription};

/// A plan's list price for one purchase and the provider's id for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// List price, minor units.
    pub amount_minor: i64,
    /// Stripe price id, Creem product id, or the sandbox's own name for the price.
    pub price_ref: String,
}

/// The list price and the provider's price/product id for this purchase.
pub fn price(
    plan: &Plan,
    order_type: OrderType,
    interval: Option<Interval>,
    channel: Channel,
) -> Result<Priced, CheckoutError> {
    if !plan.active {
        return Err(CheckoutError::PlanNotPurchasable(
            "plan is not active".into(),
        ));
    }
    let (amount, stripe, creem) = match (plan.kind, order_type, interval) {
        (PlanKind::Subscription, OrderType::Subscription, Some(Interval::Month)) => (
            plan.price_monthly,
            &plan.stripe_price_id_monthly,
            &plan.creem_product_id_monthly,
        ),
        (PlanKind::Subscription, OrderType::Subscription, Some(Interval::Year)) => (
            plan.price_yearly,
            &plan.stripe_price_id_yearly,
            &plan.creem_product_id_yearly,
        ),
        (PlanKind::CreditPack, OrderType::Credits, None) => {
            (plan.price, &plan.stripe_price_id, &plan.creem_product_id)
        }
        (PlanKind::CreditPack, _, _) => {
            return Err(CheckoutError::invalid(
                "type",
                "this plan is a credit pack: use type credits",
            ));
        }
        (PlanKind::Subscription, _, _) => {
            return Err(CheckoutError::invalid(
                "type",
                "this plan is a subscription: use type subscription",
            ));
        }
    };
    let what = interval.map_or("one-time".to_owned(), |i| format!("{i}ly"));
    let amount_minor = amount
        .ok_or_else(|| CheckoutError::PlanNotPurchasable(format!("plan has no {what} price")))?;
    let price_ref = match channel {
        Channel::Stripe => stripe.clone().ok_or_else(|| {
            CheckoutError::PlanNotPurchasable(format!("plan has no Stripe {what} price id"))
        })?,
        Channel::Creem => creem.clone().ok_or_else(|| {
            CheckoutError::PlanNotPurchasable(format!("plan has no creem_product_id for {what}"))
        })?,
        Channel::Sandbox => format!("sandbox_{}_{}", plan.id, what),
    };
    Ok(Priced {
        amount_minor,
        price_ref,
    })
}

/// The plan and interval of `plans` whose provider price on `channel` is `price_ref` (what a
/// provider's subscription event names), archived plans included: the provider bills it.
pub fn plan_for_price_ref<'a>(
    plans: &'a [Plan],
    channel: Channel,
    price_ref: &str,
) -> Option<(&'a Plan, Interval)> {
    plans
        .iter()
        .filter(|p| p.kind == PlanKind::Subscription)
        .flat_map(|p| Interval::ALL.iter().map(move |i| (p, *i)))
        .find(|(p, interval)| {
            let listed = Plan {
                active: true,
                ..(*p).clone()
            };
            price(&listed, OrderType::Subscription, Some(*interval), channel)
                .is_ok_and(|priced| priced.price_ref == price_ref)
        })
}

/// `amount × (end − at) / (end − start)`, rounded down: the share of a period `[start, end)`
/// left at `at` (none before a period is known, all of it before it starts).
pub fn prorated(
    amount: i64,
    start: Option<OffsetDateTime>,
    end: Option<OffsetDateTime>,
    at: OffsetDateTime,
) -> i64 {
    let (Some(start), Some(end)) = (start, end) else {
        return 0;
    };
    let whole = (end - start).whole_seconds();
    if whole <= 0 || amount <= 0 {
        return 0;
    }
    let left = (end - at).whole_seconds().clamp(0, whole);
    i64::try_from(i128::from(amount) * i128::from(left) / i128::from(whole)).unwrap_or(0)
}

/// Which way a plan change goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A dearer price: charged now, pro rata.
    Upgrade,
    /// The same or a cheaper price: from the next period, nothing refunded.
    Downgrade,
}

impl Direction {
    /// `upgrade` or `downgrade`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upgrade => "upgrade",
            Self::Downgrade => "downgrade",
        }
    }
}

/// What switching a subscription to another plan would do, were the provider to report it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanChangeQuote {
    /// The plan switched to.
    pub plan_id: String,
    /// The interval (the subscription's).
    pub interval: Interval,
    /// Which way it goes.
    pub direction: Direction,
    /// The provider's price id of the new plan (what the provider is asked for).
    pub price_ref: String,
    /// The new plan's list price per period, minor units.
    pub price_minor: i64,
    /// Lower-case ISO 4217.
    pub currency: String,
    /// The estimated charge now: the price difference for the rest of the period (upgrades);
    /// the provider's own proration is what is charged.
    pub amount_due_now_minor: i64,
    /// Credits granted now: the difference in included credits for the rest of the period.
    pub credits_now: i64,
    /// Credits each later period grants.
    pub credits_per_period: i64,
}

/// Decides whether `current` (on `current_plan`, when it still exists) may switch to `target`
/// for `interval` (`None`: the same interval) at `now`, and what that would do.
pub fn quote_plan_change(
    current: Option<&Subscription>,
    current_plan: Option<&Plan>,
    target: &Plan,
    interval: Option<Interval>,
    now: OffsetDateTime,
) -> Result<PlanChangeQuote, CheckoutError> {
    let Some(sub) = current.filter(|s| s.status.is_live()) else {
        return Err(CheckoutError::NoActiveSubscription(match current {
            Some(sub) => format!(
                "subscription {} is {}: nothing to change",
                sub.id, sub.status
            ),
            None => "no subscription: nothing to change".into(),
        }));
    };
    let interval = interval.unwrap_or(sub.interval);
    if interval != sub.interval {
        return Err(CheckoutError::invalid(
            "interval",
            format!(
                "the subscription is billed {}ly: a plan change keeps the interval",
                sub.interval
            ),
        ));
    }
    if target.kind == PlanKind::CreditPack {
        return Err(CheckoutError::invalid(
            "plan_id",
            "is a credit pack: buy it with POST /payment/create-session",
        ));
    }
    if target.id == sub.plan_id {
        return Err(CheckoutError::invalid(
            "plan_id",
            "the subscription is on this plan already",
        ));
    }
    let new = price(target, OrderType::Subscription, Some(interval), sub.channel)?;
    let old_price = current_plan
        .and_then(|p| {
            let listed = Plan {
                active: true,
                ..p.clone()
            };
            price(
                &listed,
                OrderType::Subscription,
                Some(interval),
                sub.channel,
            )
            .ok()
        })
        .map_or(0, |p| p.amount_minor);
    let direction = if new.amount_minor > old_price {
        Direction::Upgrade
    } else {
        Direction::Downgrade
    };
    let (start, end) = (sub.current_period_start, sub.current_period_end);
    let amount_due_now_minor = match direction {
        Direction::Upgrade => prorated(new.amount_minor - old_price, start, end, now),
        Direction::Downgrade => 0,
    };
    Ok(PlanChangeQuote {
        plan_id: target.id.clone(),
        interval,
        direction,
        price_ref: new.price_ref,
        price_minor: new.amount_minor,
        currency: target.currency.clone(),
        amount_due_now_minor,
        credits_now: prorated(
            target.credits_included - sub.credits_per_period,
            start,
            end,
            now,
        ),
        credits_per_period: target.credits_included,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::SubscriptionStatus;
    use time::macros::datetime;

    const START: OffsetDateTime = datetime!(2026-06-01 00:00 UTC);
    const END: OffsetDateTime = datetime!(2026-07-01 00:00 UTC);
    const MIDWAY: OffsetDateTime = datetime!(2026-06-16 00:00 UTC);

    fn plan(id: &str, price: i64, credits: i64) -> Plan {
        Plan {
            id: id.into(),
            app: "default".into(),
            name: format!("Plan {id}"),
            description: String::new(),
            kind: PlanKind::Subscription,
            currency: "usd".into(),
            price_monthly: Some(price),
            price_yearly: Some(price * 10),
            price: None,
            credits_included: credits,
            features: vec![],
            stripe_price_id_monthly: Some(format!("price_{id}_m")),
            stripe_price_id_yearly: Some(format!("price_{id}_y")),
            stripe_price_id: None,
            creem_product_id_monthly: Some(format!("prod_{id}_m")),
            creem_product_id_yearly: None,
            creem_product_id: None,
            active: true,
            sort_order: 0,
            credits_expire_days: None,
            trial_days: None,
            trial_credits: 0,
            created_by: "root".into(),
            updated_by: "root".into(),
            created_at: START,
            updated_at: START,
        }
    }

    fn sub(plan: &Plan) -> Subscription {
        Subscription {
            id: "1".into(),
            app: "default".into(),
            user: "alice".into(),
            plan_id: plan.id.clone(),
            interval: Interval::Month,
            channel: Channel::Stripe,
            order_id: "ord_1".into(),
            provider_subscription_id: "sub_1".into(),
            provider_customer_id: None,
            status: SubscriptionStatus::Active,
            current_period_start: Some(START),
            current_period_end: Some(END),
            previous_period_start: None,
            cancel_at_period_end: false,
            credits_per_period: plan.credits_included,
            credits_expire: false,
            created_at: START,
            updated_at: START,
        }
    }

    #[test]
    fn prorating_takes_the_share_left_rounded_down() {
        // 30 days, 15 left.
        assert_eq!(prorated(1000, Some(START), Some(END), MIDWAY), 500);
        assert_eq!(prorated(999, Some(START), Some(END), MIDWAY), 499);
        assert_eq!(prorated(1000, Some(START), Some(END), START), 1000);
        assert_eq!(prorated(1000, Some(START), Some(END), END), 0);
        assert_eq!(
            prorated(
                1000,
                Some(START),
                Some(END),
                START - time::Duration::days(3)
            ),
            1000,
            "never more than the whole"
        );
        assert_eq!(
            prorated(1000, None, Some(END), MIDWAY),
            0,
            "no period known"
        );
        assert_eq!(prorated(-500, Some(START), Some(END), MIDWAY), 0);
        assert_eq!(
            prorated(i64::MAX, Some(START), Some(END), MIDWAY),
            i64::MAX / 2
        );
    }

    #[test]
    fn an_upgrade_charges_and_grants_the_rest_of_the_period() {
        let (basic, pro) = (plan("1", 500, 400), plan("2", 1500, 1000));
        let quote =
            quote_plan_change(Some(&sub(&basic)), Some(&basic), &pro, None, MIDWAY).unwrap();
        assert_eq!(quote.direction, Direction::Upgrade);
        assert_eq!(quote.price_ref, "price_2_m");
        assert_eq!(
            quote.amount_due_now_minor, 500,
            "half of the 1000 difference"
        );
        assert_eq!(quote.credits_now, 300, "half of the 600 more credits");
        assert_eq!(quote.credits_per_period, 1000);
        assert_eq!(quote.interval, Interval::Month);
    }

    #[test]
    fn a_downgrade_charges_nothing_and_takes_nothing() {
        let (basic, pro) = (plan("1", 500, 400), plan("2", 1500, 1000));
        let quote = quote_plan_change(Some(&sub(&pro)), Some(&pro), &basic, None, MIDWAY).unwrap();
        assert_eq!(quote.direction, Direction::Downgrade);
        assert_eq!((quote.amount_due_now_minor, quote.credits_now), (0, 0));
        assert_eq!(quote.credits_per_period, 400);
        // The same price with more credits: no charge, still the extra credits.
        let twin = plan("3", 1500, 2000);
        let quote = quote_plan_change(Some(&sub(&pro)), Some(&pro), &twin, None, MIDWAY).unwrap();
        assert_eq!(quote.direction, Direction::Downgrade);
        assert_eq!((quote.amount_due_now_minor, quote.credits_now), (0, 500));
    }

    #[test]
    fn changes_that_cannot_be_are_refused() {
        let (basic, pro) = (plan("1", 500, 400), plan("2", 1500, 1000));
        let current = sub(&basic);
        let field = |r: Result<PlanChangeQuote, CheckoutError>| match r {
            Err(CheckoutError::Validation(fields)) => fields[0].field.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(quote_plan_change(
                Some(&current),
                Some(&basic),
                &basic,
                None,
                MIDWAY
            )),
            "plan_id"
        );
        let pack = Plan {
            kind: PlanKind::CreditPack,
            price: Some(100),
            ..plan("4", 0, 100)
        };
        assert_eq!(
            field(quote_plan_change(
                Some(&current),
                Some(&basic),
                &pack,
                None,
                MIDWAY
            )),
            "plan_id"
        );
        assert_eq!(
            field(quote_plan_change(
                Some(&current),
                Some(&basic),
                &pro,
                Some(Interval::Year),
                MIDWAY
            )),
            "interval"
        );
        let archived = Plan {
            active: false,
            ..pro.clone()
        };
        assert!(matches!(
            quote_plan_change(Some(&current), Some(&basic), &archived, None, MIDWAY),
            Err(CheckoutError::PlanNotPurchasable(_))
        ));
        let creem = Subscription {
            channel: Channel::Creem,
            ..current.clone()
        };
        let no_creem = Plan {
            creem_product_id_monthly: None,
            ..pro.clone()
        };
        assert!(matches!(
            quote_plan_change(Some(&creem), Some(&basic), &no_creem, None, MIDWAY),
            Err(CheckoutError::PlanNotPurchasable(_))
        ));
        for gone in [
            None,
            Some(Subscription {
                status: SubscriptionStatus::Canceled,
                ..current.clone()
            }),
        ] {
            assert!(matches!(
                quote_plan_change(gone.as_ref(), Some(&basic), &pro, None, MIDWAY),
                Err(CheckoutError::NoActiveSubscription(_))
            ));
        }
    }

    #[test]
    fn a_provider_price_names_its_plan_and_interval() {
        let plans = vec![plan("1", 500, 400), plan("2", 1500, 1000)];
        let found = |channel, price_ref| {
            plan_for_price_ref(&plans, channel, price_ref).map(|(p, i)| (p.id.clone(), i))
        };
        assert_eq!(
            found(Channel::Stripe, "price_2_y"),
            Some(("2".into(), Interval::Year))
        );
        assert_eq!(
            found(Channel::Creem, "prod_1_m"),
            Some(("1".into(), Interval::Month))
        );
        assert_eq!(
            found(Channel::Sandbox, "sandbox_2_monthly"),
            Some(("2".into(), Interval::Month))
        );
        assert_eq!(
            found(Channel::Stripe, "prod_1_m"),
            None,
            "another channel's id"
        );
        assert_eq!(found(Channel::Stripe, "price_unknown"), None);
        let archived = vec![Plan {
            active: false,
            ..plan("5", 100, 10)
        }];
        assert!(
            plan_for_price_ref(&archived, Channel::Stripe, "price_5_m").is_some(),
            "the provider bills an archived plan still"
        );
    }
}
