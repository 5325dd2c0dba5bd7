//! What a provider event changes, decided without I/O, in the spirit of the ledger's
//! `plan_movement`: the store reads and locks the rows an event names, asks these functions what
//! to write, and writes exactly that in the event's transaction.
//!
//! The rules here: when an order completes and what it keeps of an event's provider ids; how a
//! subscription's period, status and customer move (never backwards, a canceled subscription
//! stays canceled); which subscription changes are announced and how; the credits a paid pack
//! or period grants, with their expiry and description; and what a refund claws back.
//! Idempotency is the store's: a payment or refund row is written once per provider id, and what
//! a plan grants is applied only when that row is new.

use tally_kernel::truncate_micros;
use tally_ledger::{AccountRef, LedgerError, Movement, MovementKind, TxnType};
use time::OffsetDateTime;

use crate::refund::{RefundReport, clawback_credits};
use crate::{
    Channel, CheckoutError, Interval, Order, OrderStatus, Subscription, SubscriptionChange,
    SubscriptionStatus,
};

/// What an event says about the order it names.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderNews<'a> {
    /// The provider's checkout session id (empty when the event has none).
    pub session_id: &'a str,
    /// The provider's customer id.
    pub customer_id: Option<&'a str>,
    /// The provider's subscription id.
    pub subscription_id: Option<&'a str>,
}

/// The change an event makes to an order; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderUpdate {
    /// The order becomes `completed` now: it announces `order.completed` and counts one
    /// redemption of its coupon.
    pub complete: bool,
    /// The provider session, when the order has none yet.
    pub provider_session_id: Option<String>,
    /// A customer id other than the stored one.
    pub provider_customer_id: Option<String>,
    /// The subscription, when the order has none yet.
    pub provider_subscription_id: Option<String>,
}

impl OrderUpdate {
    /// Whether the event tells the order nothing new (a renewal names what the order holds): the
    /// order is left unwritten.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// How `news` changes `order`; `paid` when money arrived. A pending, failed or expired order
/// completes all the same (a late payment revives it); a completed or refunded one stays.
pub fn plan_order_update(order: &Order, news: &OrderNews<'_>, paid: bool) -> OrderUpdate {
    OrderUpdate {
        complete: paid && !matches!(order.status, OrderStatus::Completed | OrderStatus::Refunded),
        provider_session_id: (order.provider_session_id.is_none() && !news.session_id.is_empty())
            .then(|| news.session_id.to_owned()),
        provider_customer_id: news
            .customer_id
            .filter(|c| Some(*c) != order.provider_customer_id.as_deref())
            .map(str::to_owned),
        provider_subscription_id: news
            .subscription_id
            .filter(|_| order.provider_subscription_id.is_none())
            .map(str::to_owned),
    }
}

/// What a failed or expired checkout does to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckoutEnded {
    /// The order's new status (`failed` or `expired`).
    pub status: OrderStatus,
    /// Why, recorded on the order.
    pub reason: Option<&'static str>,
    /// Announce `order.failed`.
    pub announce_failed: bool,
}

/// Ends a checkout: only a pending order fails or expires (one paid meanwhile stays paid);
/// `None` when the order is past that.
pub fn plan_checkout_ended(order: &Order, failed: bool) -> Option<CheckoutEnded> {
    (order.status == OrderStatus::Pending).then_some(CheckoutEnded {
        status: if failed {
            OrderStatus::Failed
        } else {
            OrderStatus::Expired
        },
        reason: failed.then_some("payment failed"),
        announce_failed: failed,
    })
}

/// The change an event makes to a subscription; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionUpdate {
    /// A new status.
    pub status: Option<SubscriptionStatus>,
    /// A new customer id.
    pub provider_customer_id: Option<String>,
    /// A new current period, `(start, end)`.
    pub period: Option<(Option<OffsetDateTime>, OffsetDateTime)>,
    /// The start of the period it replaces, kept when the period moves on.
    pub previous_period_start: Option<Option<OffsetDateTime>>,
    /// Whether it ends with the current period.
    pub cancel_at_period_end: Option<bool>,
    /// The provider's instant of the change applied (later, older changes are ignored).
    pub status_changed_at: Option<OffsetDateTime>,
    /// The plan the provider now bills it for, when that is another plan.
    pub plan: Option<PlanSwitch>,
}

/// A plan a provider's event says a subscription is now billed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSwitch {
    /// The plan.
    pub plan_id: String,
    /// Its name, for the credits' description.
    pub plan_name: String,
    /// The interval billed.
    pub interval: Interval,
    /// The plan's included credits per period.
    pub credits_per_period: i64,
    /// Whether the plan's credits expire with their period.
    pub credits_expire: bool,
}

impl SubscriptionUpdate {
    /// Moves the period to `(start, end)` if `end` is later than the stored end: a late event
    /// about an earlier period never moves it back.
    pub fn period(
        &mut self,
        current: &Subscription,
        start: Option<OffsetDateTime>,
        end: Option<OffsetDateTime>,
    ) {
        // Compared and kept at the microsecond both databases store.
        let (start, end) = (start.map(truncate_micros), end.map(truncate_micros));
        if let Some(end) = end
            && current.current_period_end.is_none_or(|stored| end > stored)
        {
            self.period = Some((start, end));
            self.previous_period_start = Some(current.current_period_start);
        }
    }

    /// A new status, unless the stored one is terminal (a canceled subscription stays canceled).
    pub fn status(&mut self, current: &Subscription, new: SubscriptionStatus) {
        if !current.status.is_terminal() {
            self.status = Some(new);
        }
    }

    /// A customer id the event names, when it is not the stored one.
    pub fn customer(&mut self, current: &Subscription, new: Option<&str>) {
        if let Some(new) = new.filter(|n| Some(*n) != current.provider_customer_id.as_deref()) {
            self.provider_customer_id = Some(new.to_owned());
        }
    }

    /// Whether it changes nothing but the update instant.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `current` with the update applied.
    pub fn applied_to(&self, current: &Subscription) -> Subscription {
        let mut next = current.clone();
        if let Some(status) = self.status {
            next.status = status;
        }
        if let Some(customer) = &self.provider_customer_id {
            next.provider_customer_id = Some(customer.clone());
        }
        if let Some((start, end)) = self.period {
            next.current_period_start = start;
            next.current_period_end = Some(end);
        }
        if let Some(previous) = self.previous_period_start {
            next.previous_period_start = previous;
        }
        if let Some(ending) = self.cancel_at_period_end {
            next.cancel_at_period_end = ending;
        }
        if let Some(plan) = &self.plan {
            next.plan_id.clone_from(&plan.plan_id);
            next.interval = plan.interval;
            next.credits_per_period = plan.credits_per_period;
            next.credits_expire = plan.credits_expire;
        }
        next
    }
}

/// How a subscription change is announced to the app's webhook endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionNotice {
    /// `subscription.canceled`: it became canceled.
    Canceled,
    /// `subscription.updated`: its status, period, plan or cancel-at-period-end changed.
    Updated,
    /// `subscription.past_due`: a renewal payment failed and the provider is retrying (it became
    /// `past_due`; recovery back to `active` is an `Updated`).
    PastDue,
}

/// What a `SubscriptionChanged` event does.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionChangePlan {
    /// The change to write.
    pub update: SubscriptionUpdate,
    /// How to announce it (`None`: nothing anyone sees changed).
    pub notice: Option<SubscriptionNotice>,
    /// The outcome's detail.
    pub detail: String,
    /// Credits to grant: the rest of the period's extra credits when it moved to a plan with
    /// more, the trial credits when its trial starts.
    pub grants: Vec<Movement>,
}

/// What the provider says a subscription is now.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscriptionNews<'a> {
    /// Its status, when the event says.
    pub status: Option<SubscriptionStatus>,
    /// Whether it ends with the period, when the event says.
    pub cancel_at_period_end: Option<bool>,
    /// The current period's start.
    pub period_start: Option<OffsetDateTime>,
    /// The current period's end.
    pub period_end: Option<OffsetDateTime>,
    /// The provider's customer id.
    pub customer_id: Option<&'a str>,
    /// When the provider made the change.
    pub changed_at: Option<OffsetDateTime>,
    /// The plan it bills now, when the event names a price of the app's plans.
    pub plan: Option<&'a PlanSwitch>,
    /// The event's business key (`channel:event id`): a plan switch grants once per key.
    pub event_key: &'a str,
    /// The subscription's plan's trial, if it has one: becoming `trialing` starts it.
    pub trial: Option<&'a TrialTerms>,
    /// The channel (names the trial credits' key).
    pub channel: Option<Channel>,
}

/// Applies what the provider says of `current`, whose last applied change happened at
/// `last_change`; `None` when the event is older than that change (events arrive out of order).
///
/// A switch to another plan (see [`crate::change`]) takes the new plan's credits per period and
/// expiry for later periods; when it includes more credits than before, the difference for the
/// rest of the current period (from the provider's instant of the change) is granted now,
/// expiring with the period when the plan's credits expire. Fewer credits take nothing back.
pub fn plan_subscription_change(
    current: &Subscription,
    last_change: Option<OffsetDateTime>,
    news: &SubscriptionNews<'_>,
    now: OffsetDateTime,
) -> Result<Option<SubscriptionChangePlan>, LedgerError> {
    if let (Some(at), Some(last)) = (news.changed_at, last_change)
        && at < last
    {
        return Ok(None);
    }
    let mut update = SubscriptionUpdate::default();
    if let Some(status) = news.status {
        update.status(current, status);
    }
    update.cancel_at_period_end = news.cancel_at_period_end;
    update.period(current, news.period_start, news.period_end);
    update.customer(current, news.customer_id);
    update.status_changed_at = news.changed_at;
    update.plan = news
        .plan
        .filter(|p| {
            (p.plan_id.as_str(), p.interval) != (current.plan_id.as_str(), current.interval)
        })
        .cloned();
    let after = update.applied_to(current);
    let mut grants = Vec::new();
    if let Some(switch) = &update.plan {
        grants.extend(plan_switch_grant(current, switch, news, now)?);
    }
    let trial_starts = after.status == SubscriptionStatus::Trialing
        && current.status != SubscriptionStatus::Trialing;
    if let (true, Some(trial), Some(channel)) = (trial_starts, news.trial, news.channel) {
        grants.extend(trial_grant(current, channel, trial)?);
    }
    let seen = |s: &Subscription| {
        (
            s.status,
            s.cancel_at_period_end,
            s.current_period_start,
            s.current_period_end,
            s.plan_id.clone(),
        )
    };
    let became = |status| after.status == status && current.status != status;
    let notice = (seen(&after) != seen(current)).then(|| {
        if became(SubscriptionStatus::Canceled) {
            SubscriptionNotice::Canceled
        } else if became(SubscriptionStatus::PastDue) {
            SubscriptionNotice::PastDue
        } else {
            SubscriptionNotice::Updated
        }
    });
    let status = after.status.as_str();
    let mut detail = if after.cancel_at_period_end && after.status != SubscriptionStatus::Canceled {
        format!("subscription {status}, ends at period end")
    } else {
        format!("subscription {status}")
    };
    if let Some(switch) = &update.plan {
        detail.push_str(&format!(", plan {} → {}", current.plan_id, switch.plan_id));
    }
    for grant in &grants {
        if let MovementKind::Grant { credits, .. } = grant.kind {
            detail.push_str(&format!("; +{credits} credits ({})", grant.description));
        }
    }
    Ok(Some(SubscriptionChangePlan {
        update,
        notice,
        detail,
        grants,
    }))
}

/// The credits a switch of plans moves: for a plan with more, the difference for what is left
/// of the current period at the provider's instant of the change. A switch reported after the
/// renewal that followed it (events arrive out of order) also settles the period that renewal
/// granted at the old plan's credits: the previous period's rest at the difference, plus the
/// whole difference for this period — or, for a plan with fewer, the difference taken back from
/// this period — so the credits end as if the events had come in order.
fn plan_switch_grant(
    current: &Subscription,
    switch: &PlanSwitch,
    news: &SubscriptionNews<'_>,
    now: OffsetDateTime,
) -> Result<Vec<Movement>, LedgerError> {
    let at = news.changed_at.unwrap_or(now);
    let diff = switch.credits_per_period - current.credits_per_period;
    let (start, end) = (current.current_period_start, current.current_period_end);
    let renewed_since = start.is_some_and(|start| at < start);
    let (more, fewer) = if renewed_since {
        let rest = crate::change::prorated(diff, current.previous_period_start, start, at);
        (rest + diff.max(0), (-diff).max(0))
    } else {
        (crate::change::prorated(diff, start, end, at), 0)
    };
    let account = AccountRef::new(&current.app, &current.user)?;
    let metadata = serde_json::json!({
        "subscription_id": current.id,
        "order_id": current.order_id,
        "from_plan_id": current.plan_id,
        "plan_id": switch.plan_id,
    });
    let mut out = Vec::new();
    if more > 0 {
        out.push(Movement {
            account: account.clone(),
            kind: MovementKind::Grant {
                txn_type: TxnType::Subscription,
                credits: more,
                expires_at: period_expiry(switch.credits_expire, end, now),
            },
            description: format!("Plan change to {}: rest of the period", switch.plan_name),
            idempotency_key: Some(format!("plan-change:{}", news.event_key)),
            metadata: Some(metadata.clone()),
            actor: Some(format!("provider:{}", current.channel)),
        });
    }
    if fewer > 0 {
        out.push(Movement {
            account,
            kind: MovementKind::Clawback { credits: fewer },
            description: format!(
                "Plan change to {}: this period was granted at the old plan's credits",
                switch.plan_name
            ),
            idempotency_key: Some(format!("plan-change-settle:{}", news.event_key)),
            metadata: Some(metadata),
            actor: Some(format!("provider:{}", current.channel)),
        });
    }
    for movement in &out {
        movement.validate()?;
    }
    Ok(out)
}

/// What a paid period (a subscription's first payment or a renewal) does.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodPlan {
    /// The payment is the subscription's first, which its order paid for: refunding it refunds
    /// the order.
    pub first_payment: bool,
    /// The subscription's new period and state.
    pub update: SubscriptionUpdate,
    /// Announce `subscription.renewed` (every paid period after the first).
    pub renewed: bool,
    /// The period's credits (none when the plan includes none).
    pub grant: Option<Movement>,
    /// The credits the payment grants (recorded with it: a refund claws back in proportion).
    pub credits: i64,
}

/// What a provider says was paid for a subscription.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeriodNews<'a> {
    /// The payment's business key (invoice, transaction).
    pub payment_id: &'a str,
    /// The period paid, `(start, end)`, as far as the event says.
    pub period: (Option<OffsetDateTime>, Option<OffsetDateTime>),
    /// The provider's customer id.
    pub customer_id: Option<&'a str>,
    /// What was paid, minor units.
    pub amount_paid_minor: i64,
    /// A plan change's proration rather than a period.
    pub plan_change: bool,
}

/// A plan's free trial, as the subscription's plan sets it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialTerms {
    /// Trial length.
    pub days: u32,
    /// Credits granted once when the trial starts.
    pub credits: i64,
    /// The plan's name, for the credits' description.
    pub plan_name: String,
}

/// What a paid period does to `sub`, which has `earlier_payments` payments so far, on
/// `channel`; `plan_name` names the credits.
///
/// - A plan change's proration is no period: it moves nothing and grants nothing (the switch's
///   credits come with the subscription's change, see [`plan_subscription_change`]).
/// - The first payment of a plan with a trial, for nothing, is the trial starting (Stripe's
///   zero-amount first invoice): the subscription is `trialing` for the period, and the trial
///   credits are granted (once per subscription, see [`trial_grant`]) unless the trial's status
///   event granted them already.
/// - Any other payment is a paid period: `active`, the period moves forward, and the plan's
///   credits are granted (once per payment, the store's payment row decides).
pub fn plan_period_paid(
    sub: &Subscription,
    earlier_payments: i64,
    channel: Channel,
    news: &PeriodNews<'_>,
    plan_name: &str,
    trial: Option<&TrialTerms>,
    now: OffsetDateTime,
) -> Result<PeriodPlan, LedgerError> {
    let (start, end) = news.period;
    let mut update = SubscriptionUpdate::default();
    update.customer(sub, news.customer_id);
    if news.plan_change {
        return Ok(PeriodPlan {
            first_payment: false,
            update,
            renewed: false,
            grant: None,
            credits: 0,
        });
    }
    update.period(sub, start, end);
    if let Some(trial) = trial.filter(|_| earlier_payments == 0 && news.amount_paid_minor == 0) {
        update.status(sub, SubscriptionStatus::Trialing);
        let grant = if sub.status == SubscriptionStatus::Trialing {
            None
        } else {
            trial_grant(sub, channel, trial)?
        };
        return Ok(PeriodPlan {
            first_payment: true,
            update,
            renewed: false,
            grant,
            credits: 0,
        });
    }
    update.status(sub, SubscriptionStatus::Active);
    let period_end = end.or(sub.current_period_end);
    let grant = CreditGrant {
        app: &sub.app,
        user: &sub.user,
        channel,
        payment_id: news.payment_id,
        order_id: Some(&sub.order_id),
        txn_type: TxnType::Subscription,
        credits: sub.credits_per_period,
        expires_at: period_expiry(sub.credits_expire, period_end, now),
        description: period_description(plan_name, sub.interval),
    }
    .movement()?;
    Ok(PeriodPlan {
        first_payment: earlier_payments == 0,
        update,
        renewed: earlier_payments > 0,
        grant,
        credits: sub.credits_per_period,
    })
}

/// The trial credits of `sub`: keyed by the provider's subscription, so a subscription's trial
/// grants once whichever event starts it; they do not expire with the trial.
pub fn trial_grant(
    sub: &Subscription,
    channel: Channel,
    trial: &TrialTerms,
) -> Result<Option<Movement>, LedgerError> {
    if trial.credits <= 0 {
        return Ok(None);
    }
    let movement = Movement {
        account: AccountRef::new(&sub.app, &sub.user)?,
        kind: MovementKind::Grant {
            txn_type: TxnType::Subscription,
            credits: trial.credits,
            expires_at: None,
        },
        description: format!("Trial credits: {}", trial.plan_name),
        idempotency_key: Some(format!("trial:{channel}:{}", sub.provider_subscription_id)),
        metadata: Some(serde_json::json!({
            "subscription_id": sub.id,
            "order_id": sub.order_id,
            "plan_id": sub.plan_id,
            "trial_days": trial.days,
        })),
        actor: Some(format!("provider:{channel}")),
    };
    movement.validate()?;
    Ok(Some(movement))
}

/// The credits a paid credit pack grants (none for a pack of zero credits).
pub fn plan_pack_paid(
    order: &Order,
    payment_id: &str,
    plan_name: &str,
    now: OffsetDateTime,
) -> Result<Option<Movement>, LedgerError> {
    CreditGrant {
        app: &order.app,
        user: &order.user,
        channel: order.channel,
        payment_id,
        order_id: Some(&order.id),
        txn_type: TxnType::Purchase,
        credits: order.credits,
        expires_at: pack_expiry(order.credits_expire_days, now),
        description: format!("Credit pack: {plan_name}"),
    }
    .movement()
}

/// A payment as a refund sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFacts {
    /// The provider's payment id.
    pub payment_id: String,
    /// The app.
    pub app: String,
    /// The user.
    pub user: String,
    /// The order it paid, if any (a subscription's first payment, a pack).
    pub order_id: Option<String>,
    /// Credits it granted.
    pub credits_granted: i64,
    /// What was paid, minor units.
    pub amount_paid_minor: i64,
    /// What was refunded so far.
    pub refunded_minor: i64,
    /// Credits clawed back so far.
    pub clawed_back: i64,
}

/// What one refund does.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundPlan {
    /// The payment's refunded total after it.
    pub refunded_total: i64,
    /// What this refund adds, minor units.
    pub amount_minor: i64,
    /// Credits it claws back.
    pub credits: i64,
    /// The clawback (none when no credits are to be taken).
    pub clawback: Option<Movement>,
    /// The order it paid becomes `refunded` (it was not already).
    pub refund_order: bool,
}

/// What the refund `refund_key` on `channel`, reported as `report`, does to `payment`, whose
/// order (if any) is in `order_status`.
pub fn plan_refund(
    payment: &PaymentFacts,
    channel: Channel,
    refund_key: &str,
    report: RefundReport,
    order_status: Option<OrderStatus>,
) -> Result<RefundPlan, LedgerError> {
    let total = report.total_after(payment.refunded_minor, payment.amount_paid_minor);
    let credits = clawback_credits(
        payment.credits_granted,
        payment.amount_paid_minor,
        total,
        payment.clawed_back,
    );
    let clawback = if credits > 0 {
        let movement = Movement {
            account: AccountRef::new(&payment.app, &payment.user)?,
            kind: MovementKind::Clawback { credits },
            description: format!("Refund of payment {}", payment.payment_id),
            idempotency_key: Some(format!("refund:{channel}:{refund_key}")),
            metadata: Some(serde_json::json!({
                "order_id": payment.order_id,
                "payment_id": payment.payment_id,
                "refund_key": refund_key,
                "channel": channel.as_str(),
            })),
            actor: Some(format!("provider:{channel}")),
        };
        movement.validate()?;
        Some(movement)
    } else {
        None
    };
    Ok(RefundPlan {
        refunded_total: total,
        amount_minor: total - payment.refunded_minor,
        credits,
        clawback,
        refund_order: order_status.is_some_and(|s| s != OrderStatus::Refunded),
    })
}

/// Credits a provider payment grants, as a ledger movement keyed by the payment (so a payment
/// grants once, whatever delivers it).
struct CreditGrant<'a> {
    app: &'a str,
    user: &'a str,
    channel: Channel,
    payment_id: &'a str,
    order_id: Option<&'a str>,
    txn_type: TxnType,
    credits: i64,
    expires_at: Option<OffsetDateTime>,
    description: String,
}

impl CreditGrant<'_> {
    fn movement(self) -> Result<Option<Movement>, LedgerError> {
        if self.credits <= 0 {
            return Ok(None);
        }
        let movement = Movement {
            account: AccountRef::new(self.app, self.user)?,
            kind: MovementKind::Grant {
                txn_type: self.txn_type,
                credits: self.credits,
                expires_at: self.expires_at,
            },
            description: self.description,
            idempotency_key: Some(format!("payment:{}:{}", self.channel, self.payment_id)),
            metadata: Some(serde_json::json!({
                "order_id": self.order_id,
                "payment_id": self.payment_id,
                "channel": self.channel.as_str(),
            })),
            actor: Some(format!("provider:{}", self.channel)),
        };
        movement.validate()?;
        Ok(Some(movement))
    }
}

/// The ledger description of a subscription period's credits.
pub fn period_description(plan: &str, interval: Interval) -> String {
    let period = match interval {
        Interval::Year => "yearly",
        Interval::Month => "monthly",
    };
    format!("{plan} plan — {period} credits")
}

/// When the credits of a paid period expire: at the period's end, if the plan's credits expire
/// and that end is still ahead (the ledger refuses an expiry in the past).
pub fn period_expiry(
    credits_expire: bool,
    period_end: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    period_end.filter(|end| credits_expire && *end > now)
}

/// When a pack's credits expire: `days` after payment, when the pack says.
pub fn pack_expiry(days: Option<u32>, now: OffsetDateTime) -> Option<OffsetDateTime> {
    days.filter(|d| *d > 0)
        .map(|d| now + time::Duration::days(i64::from(d)))
}

/// Refuses a second subscription checkout while `current` (the user's latest subscription in the
/// app) still runs: one live subscription per app and user.
pub fn check_can_subscribe(current: Option<&Subscription>) -> Result<(), CheckoutError> {
    match current {
        Some(sub) if sub.status.is_live() => Err(CheckoutError::AlreadySubscribed(format!(
            "the user already has a {} subscription (id {}) to plan {}; change or cancel it instead",
            sub.status, sub.id, sub.plan_id
        ))),
        _ => Ok(()),
    }
}

/// What a request to change a subscription asks of its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionAsk {
    /// Ask the provider; the subscription changes when its event arrives.
    Provider,
    /// The subscription is already as asked (a repeated request): nothing to ask.
    Unchanged,
}

/// Decides what asking for `change` of `current` means: a live subscription is needed; asking
/// for what is already so (a second cancel at the period end, resuming one that is not ending)
/// changes nothing and asks nobody.
pub fn plan_subscription_request(
    current: Option<&Subscription>,
    change: SubscriptionChange,
) -> Result<SubscriptionAsk, CheckoutError> {
    let Some(sub) = current.filter(|s| s.status.is_live()) else {
        return Err(CheckoutError::NoActiveSubscription(match current {
            Some(sub) => format!(
                "subscription {} is {}: nothing to {change}",
                sub.id, sub.status
            ),
            None => format!("no subscription: nothing to {change}"),
        }));
    };
    let already = match change {
        SubscriptionChange::CancelAtPeriodEnd => sub.cancel_at_period_end,
        SubscriptionChange::Resume => !sub.cancel_at_period_end,
        SubscriptionChange::CancelNow => false,
    };
    Ok(if already {
        SubscriptionAsk::Unchanged
    } else {
        SubscriptionAsk::Provider
    })
}

/// A payment as recorded, with every id a refund may name it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedPayment {
    /// What a refund's arithmetic needs.
    pub facts: PaymentFacts,
    /// The provider's ids for it: the payment id first, then PaymentIntent, charge, Creem order
    /// and transaction ids, as the events named them.
    pub refs: Vec<String>,
}

/// What an operator's refund of an order asks of its provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundAsk {
    /// The payment refunded: the order's own payment (a pack, or a subscription's first period).
    pub payment_id: String,
    /// Every id the provider may know the payment by.
    pub payment_refs: Vec<String>,
    /// What to refund, minor units: the amount asked, else everything not yet refunded.
    pub amount_minor: i64,
    /// Whether that is all that is left (the provider is asked for a full refund).
    pub full: bool,
}

/// The longest refund reason kept.
pub const MAX_REFUND_REASON: usize = 500;

/// Decides whether the `order` can be refunded by `amount_minor` (`None`: all that is left) and
/// how. Only a paid order refunds, through its own payment, never beyond what is left of it; Creem
/// refunds a payment in full only. The credits follow from the provider's refund event, as for a
/// refund made in the provider's dashboard.
pub fn plan_refund_request(
    order: &Order,
    payment: Option<&RecordedPayment>,
    amount_minor: Option<i64>,
    reason: Option<&str>,
) -> Result<RefundAsk, CheckoutError> {
    if let Some(reason) = reason
        && (reason.trim().is_empty()
            || reason.chars().count() > MAX_REFUND_REASON
            || reason.chars().any(char::is_control))
    {
        return Err(CheckoutError::invalid(
            "reason",
            format!("must be 1-{MAX_REFUND_REASON} characters without control characters"),
        ));
    }
    if let Some(amount) = amount_minor
        && amount <= 0
    {
        return Err(CheckoutError::invalid(
            "amount",
            "must be a positive number of minor units",
        ));
    }
    if !matches!(order.status, OrderStatus::Completed | OrderStatus::Refunded) {
        return Err(CheckoutError::NotRefundable(format!(
            "order {} is {}: nothing was paid",
            order.id, order.status
        )));
    }
    let Some(payment) = payment else {
        return Err(CheckoutError::NotRefundable(format!(
            "no payment of order {} has been reported by the provider yet",
            order.id
        )));
    };
    let facts = &payment.facts;
    let left = facts.amount_paid_minor - facts.refunded_minor;
    if facts.amount_paid_minor <= 0 {
        return Err(CheckoutError::NotRefundable(format!(
            "payment {} of order {} was for nothing: there is no money to give back",
            facts.payment_id, order.id
        )));
    }
    if left <= 0 {
        return Err(CheckoutError::NotRefundable(format!(
            "payment {} of order {} is refunded in full already",
            facts.payment_id, order.id
        )));
    }
    let amount = amount_minor.unwrap_or(left);
    if amount > left {
        return Err(CheckoutError::invalid(
            "amount",
            format!("must be at most {left}: what is left to refund of this payment"),
        ));
    }
    if order.channel == Channel::Creem && amount < left {
        return Err(CheckoutError::invalid(
            "amount",
            format!("Creem refunds a payment in full only: leave it out, or send {left}"),
        ));
    }
    Ok(RefundAsk {
        payment_id: facts.payment_id.clone(),
        payment_refs: payment.refs.clone(),
        amount_minor: amount,
        full: amount == left,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    fn order(status: OrderStatus) -> Order {
        Order {
            id: "ord_1".into(),
            app: "default".into(),
            user: "alice".into(),
            order_type: crate::OrderType::Credits,
            status,
            plan_id: "7".into(),
            interval: None,
            channel: Channel::Stripe,
            amount_minor: 999,
            currency: "usd".into(),
            discount_minor: 0,
            coupon_code: None,
            credits: 500,
            credits_expire_days: Some(30),
            provider_session_id: Some("cs_1".into()),
            checkout_url: None,
            provider_customer_id: None,
            provider_subscription_id: None,
            failure_reason: None,
            created_at: NOW,
            completed_at: None,
            updated_at: NOW,
        }
    }

    fn sub(status: SubscriptionStatus) -> Subscription {
        Subscription {
            id: "1".into(),
            app: "default".into(),
            user: "alice".into(),
            plan_id: "3".into(),
            interval: Interval::Month,
            channel: Channel::Stripe,
            order_id: "ord_1".into(),
            provider_subscription_id: "sub_1".into(),
            provider_customer_id: Some("cus_1".into()),
            status,
            current_period_start: Some(NOW),
            current_period_end: Some(datetime!(2026-07-01 12:00 UTC)),
            previous_period_start: None,
            cancel_at_period_end: false,
            credits_per_period: 1000,
            credits_expire: true,
            created_at: NOW,
            updated_at: NOW,
        }
    }

    #[test]
    fn money_completes_an_order_once_and_revives_a_lapsed_one() {
        let news = OrderNews {
            session_id: "cs_2",
            customer_id: Some("cus_9"),
            subscription_id: Some("sub_9"),
        };
        for status in [
            OrderStatus::Pending,
            OrderStatus::Failed,
            OrderStatus::Expired,
        ] {
            assert!(
                plan_order_update(&order(status), &news, true).complete,
                "{status:?}"
            );
        }
        for status in [OrderStatus::Completed, OrderStatus::Refunded] {
            assert!(
                !plan_order_update(&order(status), &news, true).complete,
                "{status:?}"
            );
        }
        let unpaid = plan_order_update(&order(OrderStatus::Pending), &news, false);
        assert_eq!(
            unpaid,
            OrderUpdate {
                complete: false,
                provider_session_id: None,
                provider_customer_id: Some("cus_9".into()),
                provider_subscription_id: Some("sub_9".into()),
            },
            "the session it has stays; the customer and subscription are learnt"
        );
    }

    #[test]
    fn a_renewal_that_names_what_the_order_holds_changes_nothing() {
        let mut held = order(OrderStatus::Completed);
        held.provider_customer_id = Some("cus_9".into());
        held.provider_subscription_id = Some("sub_9".into());
        let news = OrderNews {
            session_id: "",
            customer_id: Some("cus_9"),
            subscription_id: Some("sub_9"),
        };
        assert!(plan_order_update(&held, &news, true).is_empty());
        let moved = OrderNews {
            customer_id: Some("cus_10"),
            ..news
        };
        let update = plan_order_update(&held, &moved, true);
        assert!(!update.is_empty());
        assert_eq!(update.provider_customer_id.as_deref(), Some("cus_10"));
        held.status = OrderStatus::Expired;
        assert!(
            !plan_order_update(&held, &news, true).is_empty(),
            "money revives a lapsed order"
        );
    }

    #[test]
    fn only_pending_checkouts_end() {
        let failed = plan_checkout_ended(&order(OrderStatus::Pending), true).unwrap();
        assert_eq!(failed.status, OrderStatus::Failed);
        assert!(failed.announce_failed);
        let expired = plan_checkout_ended(&order(OrderStatus::Pending), false).unwrap();
        assert_eq!(
            (expired.status, expired.reason),
            (OrderStatus::Expired, None)
        );
        for status in [
            OrderStatus::Completed,
            OrderStatus::Failed,
            OrderStatus::Refunded,
        ] {
            assert_eq!(
                plan_checkout_ended(&order(status), true),
                None,
                "{status:?}"
            );
        }
    }

    #[test]
    fn periods_never_move_back_and_canceled_stays_canceled() {
        let s = sub(SubscriptionStatus::Active);
        let mut u = SubscriptionUpdate::default();
        u.period(&s, Some(NOW), Some(datetime!(2026-06-15 00:00 UTC)));
        assert_eq!(u.period, None, "an earlier period");
        u.period(&s, None, Some(datetime!(2026-08-01 12:00 UTC)));
        assert_eq!(u.period, Some((None, datetime!(2026-08-01 12:00 UTC))));
        let mut same = SubscriptionUpdate::default();
        same.period(&s, None, Some(datetime!(2026-07-01 12:00:00.000000123 UTC)));
        assert_eq!(
            same.period, None,
            "the stored end, give or take nanoseconds"
        );
        let mut u = SubscriptionUpdate::default();
        u.status(
            &sub(SubscriptionStatus::Canceled),
            SubscriptionStatus::Active,
        );
        assert_eq!(u.status, None);
        u.customer(&s, Some("cus_1"));
        assert!(u.is_empty(), "the same customer changes nothing");
    }

    #[test]
    fn subscription_changes_are_announced_when_something_seen_changes() {
        let s = sub(SubscriptionStatus::Active);
        let news = |status, ending| SubscriptionNews {
            status: Some(status),
            cancel_at_period_end: Some(ending),
            changed_at: Some(NOW),
            ..SubscriptionNews::default()
        };
        let change = |s: &Subscription, last, news: &SubscriptionNews<'_>| {
            plan_subscription_change(s, last, news, NOW).unwrap()
        };
        let same = change(&s, None, &news(SubscriptionStatus::Active, false));
        assert_eq!(same.unwrap().notice, None);
        let ending = change(&s, None, &news(SubscriptionStatus::Active, true)).unwrap();
        assert_eq!(ending.notice, Some(SubscriptionNotice::Updated));
        assert_eq!(ending.detail, "subscription active, ends at period end");
        let canceled = change(&s, None, &news(SubscriptionStatus::Canceled, false)).unwrap();
        assert_eq!(canceled.notice, Some(SubscriptionNotice::Canceled));
        let failing = change(&s, None, &news(SubscriptionStatus::PastDue, false)).unwrap();
        assert_eq!(failing.notice, Some(SubscriptionNotice::PastDue));
        let recovered = change(
            &sub(SubscriptionStatus::PastDue),
            None,
            &news(SubscriptionStatus::Active, false),
        )
        .unwrap();
        assert_eq!(recovered.notice, Some(SubscriptionNotice::Updated));
        let stale = change(
            &s,
            Some(NOW + time::Duration::seconds(1)),
            &news(SubscriptionStatus::PastDue, false),
        );
        assert!(stale.is_none(), "older than the last applied change");
    }

    #[test]
    fn periods_grant_their_credits_and_renewals_are_announced() {
        let s = sub(SubscriptionStatus::PastDue);
        let end = datetime!(2026-08-01 12:00 UTC);
        let paid = |payment_id, period| PeriodNews {
            payment_id,
            period,
            amount_paid_minor: 999,
            ..PeriodNews::default()
        };
        let first = plan_period_paid(
            &s,
            0,
            Channel::Stripe,
            &paid("in_1", (Some(NOW), Some(end))),
            "Pro",
            None,
            NOW,
        )
        .unwrap();
        assert!(first.first_payment && !first.renewed);
        assert_eq!(first.update.status, Some(SubscriptionStatus::Active));
        let grant = first.grant.unwrap();
        assert_eq!(
            grant.kind,
            MovementKind::Grant {
                txn_type: TxnType::Subscription,
                credits: 1000,
                expires_at: Some(end),
            }
        );
        assert_eq!(
            grant.idempotency_key.as_deref(),
            Some("payment:stripe:in_1")
        );
        assert_eq!(grant.description, "Pro plan — monthly credits");
        let renewal = plan_period_paid(
            &s,
            1,
            Channel::Stripe,
            &paid("in_2", (None, None)),
            "Pro",
            None,
            NOW,
        )
        .unwrap();
        assert!(renewal.renewed && !renewal.first_payment);
        let mut free = sub(SubscriptionStatus::Active);
        free.credits_per_period = 0;
        let none = plan_period_paid(
            &free,
            1,
            Channel::Stripe,
            &paid("in_3", (None, None)),
            "Free",
            None,
            NOW,
        );
        assert_eq!(none.unwrap().grant, None);
    }

    #[test]
    fn packs_grant_with_their_expiry() {
        let grant = plan_pack_paid(&order(OrderStatus::Pending), "order:ord_1", "Starter", NOW)
            .unwrap()
            .unwrap();
        assert_eq!(
            grant.kind,
            MovementKind::Grant {
                txn_type: TxnType::Purchase,
                credits: 500,
                expires_at: Some(datetime!(2026-07-01 12:00 UTC)),
            }
        );
        assert_eq!(grant.description, "Credit pack: Starter");
    }

    #[test]
    fn refunds_claw_back_in_proportion_and_refund_the_order_once() {
        let payment = PaymentFacts {
            payment_id: "pi_1".into(),
            app: "default".into(),
            user: "alice".into(),
            order_id: Some("ord_1".into()),
            credits_granted: 1000,
            amount_paid_minor: 1000,
            refunded_minor: 0,
            clawed_back: 0,
        };
        let half = plan_refund(
            &payment,
            Channel::Stripe,
            "re_1",
            RefundReport::Cumulative(500),
            Some(OrderStatus::Completed),
        )
        .unwrap();
        assert_eq!(
            (half.refunded_total, half.amount_minor, half.credits),
            (500, 500, 500)
        );
        assert!(half.refund_order);
        let claw = half.clawback.unwrap();
        assert_eq!(claw.kind, MovementKind::Clawback { credits: 500 });
        assert_eq!(claw.idempotency_key.as_deref(), Some("refund:stripe:re_1"));
        let done = PaymentFacts {
            refunded_minor: 1000,
            clawed_back: 1000,
            ..payment
        };
        let again = plan_refund(
            &done,
            Channel::Creem,
            "re_2",
            RefundReport::Full,
            Some(OrderStatus::Refunded),
        )
        .unwrap();
        assert_eq!(
            (again.credits, again.clawback, again.refund_order),
            (0, None, false)
        );
    }

    #[test]
    fn one_live_subscription_per_user() {
        assert!(check_can_subscribe(None).is_ok());
        for status in [
            SubscriptionStatus::Active,
            SubscriptionStatus::Trialing,
            SubscriptionStatus::PastDue,
        ] {
            assert!(
                matches!(
                    check_can_subscribe(Some(&sub(status))),
                    Err(CheckoutError::AlreadySubscribed(_))
                ),
                "{status:?}"
            );
        }
        for status in [SubscriptionStatus::Canceled, SubscriptionStatus::Expired] {
            assert!(
                check_can_subscribe(Some(&sub(status))).is_ok(),
                "{status:?}"
            );
        }
    }

    #[test]
    fn cancel_and_resume_ask_the_provider_only_for_a_change() {
        use SubscriptionChange::{CancelAtPeriodEnd, CancelNow, Resume};
        let active = sub(SubscriptionStatus::Active);
        let ending = Subscription {
            cancel_at_period_end: true,
            ..active.clone()
        };
        let ask = |s: &Subscription, c| plan_subscription_request(Some(s), c).unwrap();
        assert_eq!(ask(&active, CancelAtPeriodEnd), SubscriptionAsk::Provider);
        assert_eq!(ask(&ending, CancelAtPeriodEnd), SubscriptionAsk::Unchanged);
        assert_eq!(ask(&active, CancelNow), SubscriptionAsk::Provider);
        assert_eq!(ask(&ending, CancelNow), SubscriptionAsk::Provider);
        assert_eq!(ask(&ending, Resume), SubscriptionAsk::Provider);
        assert_eq!(ask(&active, Resume), SubscriptionAsk::Unchanged);
        assert_eq!(
            ask(&sub(SubscriptionStatus::PastDue), CancelNow),
            SubscriptionAsk::Provider
        );
        for gone in [
            None,
            Some(sub(SubscriptionStatus::Canceled)),
            Some(sub(SubscriptionStatus::Expired)),
        ] {
            for change in SubscriptionChange::ALL {
                assert!(matches!(
                    plan_subscription_request(gone.as_ref(), *change),
                    Err(CheckoutError::NoActiveSubscription(_))
                ));
            }
        }
    }

    fn paid_payment(paid: i64, refunded: i64) -> RecordedPayment {
        RecordedPayment {
            facts: PaymentFacts {
                payment_id: "order:ord_1".into(),
                app: "default".into(),
                user: "alice".into(),
                order_id: Some("ord_1".into()),
                credits_granted: 500,
                amount_paid_minor: paid,
                refunded_minor: refunded,
                clawed_back: 0,
            },
            refs: vec!["order:ord_1".into(), "pi_1".into()],
        }
    }

    #[test]
    fn a_refund_takes_what_is_left_or_a_part_of_it() {
        let order = order(OrderStatus::Completed);
        let all = plan_refund_request(&order, Some(&paid_payment(999, 0)), None, None).unwrap();
        assert_eq!((all.amount_minor, all.full), (999, true));
        assert_eq!(all.payment_refs, ["order:ord_1", "pi_1"]);
        let part = plan_refund_request(&order, Some(&paid_payment(999, 0)), Some(100), Some("why"))
            .unwrap();
        assert_eq!((part.amount_minor, part.full), (100, false));
        // A partly refunded order refunds the rest; exactly the rest is a full refund.
        let refunded = self::order(OrderStatus::Refunded);
        let rest =
            plan_refund_request(&refunded, Some(&paid_payment(999, 100)), Some(899), None).unwrap();
        assert_eq!((rest.amount_minor, rest.full), (899, true));
    }

    #[test]
    fn refunds_that_cannot_be_are_refused() {
        let paid = paid_payment(999, 0);
        for status in [
            OrderStatus::Pending,
            OrderStatus::Failed,
            OrderStatus::Expired,
        ] {
            let err = plan_refund_request(&order(status), Some(&paid), None, None).unwrap_err();
            assert!(matches!(err, CheckoutError::NotRefundable(_)), "{status}");
        }
        let done = order(OrderStatus::Completed);
        let not_reported = plan_refund_request(&done, None, None, None).unwrap_err();
        assert!(matches!(not_reported, CheckoutError::NotRefundable(_)));
        let whole = plan_refund_request(&done, Some(&paid_payment(999, 999)), None, None);
        assert!(matches!(whole, Err(CheckoutError::NotRefundable(_))));
        let free = plan_refund_request(&done, Some(&paid_payment(0, 0)), None, None);
        assert!(matches!(free, Err(CheckoutError::NotRefundable(_))));
        let field = |r: Result<RefundAsk, CheckoutError>| match r {
            Err(CheckoutError::Validation(fields)) => fields[0].field.clone(),
            other => panic!("{other:?}"),
        };
        for amount in [0, -1, 1000] {
            assert_eq!(
                field(plan_refund_request(&done, Some(&paid), Some(amount), None)),
                "amount"
            );
        }
        for reason in ["", "  ", "a\u{7}b", &"r".repeat(MAX_REFUND_REASON + 1)] {
            assert_eq!(
                field(plan_refund_request(&done, Some(&paid), None, Some(reason))),
                "reason"
            );
        }
        // Creem refunds whole payments only.
        let creem = Order {
            channel: Channel::Creem,
            ..order(OrderStatus::Completed)
        };
        assert_eq!(
            field(plan_refund_request(&creem, Some(&paid), Some(10), None)),
            "amount"
        );
        assert!(plan_refund_request(&creem, Some(&paid), Some(999), None).is_ok());
    }

    #[test]
    fn a_switch_to_more_credits_grants_the_rest_of_the_period_once() {
        // The period runs 2026-06-01 12:00 to 2026-07-01 12:00 (30 days); 1,000 credits now.
        let s = sub(SubscriptionStatus::Active);
        let more = PlanSwitch {
            plan_id: "5".into(),
            plan_name: "Max".into(),
            interval: Interval::Month,
            credits_per_period: 4000,
            credits_expire: true,
        };
        let news = SubscriptionNews {
            status: Some(SubscriptionStatus::Active),
            changed_at: Some(datetime!(2026-06-21 12:00 UTC)),
            plan: Some(&more),
            event_key: "stripe:evt_up",
            ..SubscriptionNews::default()
        };
        let plan = plan_subscription_change(&s, None, &news, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(plan.update.plan.as_ref(), Some(&more));
        assert_eq!(plan.notice, Some(SubscriptionNotice::Updated));
        let grant = plan.grants.first().cloned().expect("more credits");
        assert_eq!(
            grant.kind,
            MovementKind::Grant {
                txn_type: TxnType::Subscription,
                credits: 1000,
                expires_at: Some(datetime!(2026-07-01 12:00 UTC)),
            },
            "a third of the 3,000 more, expiring with the period"
        );
        assert_eq!(
            grant.idempotency_key.as_deref(),
            Some("plan-change:stripe:evt_up")
        );
        let after = plan.update.applied_to(&s);
        assert_eq!(
            (after.plan_id.as_str(), after.credits_per_period),
            ("5", 4000)
        );

        // Reported again once applied: the same plan, nothing to switch or grant.
        let again = plan_subscription_change(&after, None, &news, NOW)
            .unwrap()
            .unwrap();
        assert_eq!((again.update.plan, again.grants), (None, vec![]));

        // Back to fewer credits: the plan switches, nothing is taken back.
        let fewer = PlanSwitch {
            plan_id: "3".into(),
            credits_per_period: 1000,
            ..more.clone()
        };
        let down = SubscriptionNews {
            plan: Some(&fewer),
            ..news
        };
        let back = plan_subscription_change(&after, None, &down, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(back.update.plan.as_ref(), Some(&fewer));
        assert!(back.grants.is_empty());
    }

    #[test]
    fn a_trial_grants_its_credits_once_and_the_first_paid_period_the_plans() {
        let trial = TrialTerms {
            days: 14,
            credits: 100,
            plan_name: "Pro".into(),
        };
        let new = sub(SubscriptionStatus::Active);
        let free = PeriodNews {
            payment_id: "in_trial",
            period: (Some(NOW), Some(datetime!(2026-06-15 12:00 UTC))),
            amount_paid_minor: 0,
            ..PeriodNews::default()
        };
        // Stripe's zero-amount first invoice starts the trial.
        let started =
            plan_period_paid(&new, 0, Channel::Stripe, &free, "Pro", Some(&trial), NOW).unwrap();
        assert_eq!(started.update.status, Some(SubscriptionStatus::Trialing));
        assert_eq!((started.credits, started.renewed), (0, false));
        let grant = started.grant.expect("trial credits");
        assert_eq!(
            grant.kind,
            MovementKind::Grant {
                txn_type: TxnType::Subscription,
                credits: 100,
                expires_at: None,
            }
        );
        assert_eq!(grant.idempotency_key.as_deref(), Some("trial:stripe:sub_1"));
        // The trial's status event came first: granted there, not again.
        let trialing = sub(SubscriptionStatus::Trialing);
        let again = plan_period_paid(
            &trialing,
            0,
            Channel::Stripe,
            &free,
            "Pro",
            Some(&trial),
            NOW,
        )
        .unwrap();
        assert_eq!(again.grant, None);
        // A plan without a trial, paid nothing (a full discount): a paid period.
        let discounted =
            plan_period_paid(&new, 0, Channel::Stripe, &free, "Pro", None, NOW).unwrap();
        assert_eq!(discounted.credits, 1000);
        // The first paid invoice after the trial: the plan's credits, active.
        let paid = PeriodNews {
            payment_id: "in_2",
            amount_paid_minor: 999,
            ..free
        };
        let converted = plan_period_paid(
            &trialing,
            1,
            Channel::Stripe,
            &paid,
            "Pro",
            Some(&trial),
            NOW,
        )
        .unwrap();
        assert_eq!(converted.update.status, Some(SubscriptionStatus::Active));
        assert_eq!(converted.credits, 1000);

        // The status path: becoming `trialing` grants the same movement, once.
        let news = SubscriptionNews {
            status: Some(SubscriptionStatus::Trialing),
            trial: Some(&trial),
            channel: Some(Channel::Stripe),
            ..SubscriptionNews::default()
        };
        let plan = plan_subscription_change(&new, None, &news, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(plan.grants, vec![grant]);
        let still = plan_subscription_change(&trialing, None, &news, NOW)
            .unwrap()
            .unwrap();
        assert!(still.grants.is_empty());
    }

    #[test]
    fn a_switch_reported_after_the_renewal_settles_the_renewed_period() {
        // The renewal moved the period to July (granted at 1,000); the switch happened on
        // June 21, two thirds into June's period.
        let renewed = Subscription {
            previous_period_start: Some(NOW),
            current_period_start: Some(datetime!(2026-07-01 12:00 UTC)),
            current_period_end: Some(datetime!(2026-07-31 12:00 UTC)),
            ..sub(SubscriptionStatus::Active)
        };
        let switch = |credits| PlanSwitch {
            plan_id: "5".into(),
            plan_name: "Other".into(),
            interval: Interval::Month,
            credits_per_period: credits,
            credits_expire: false,
        };
        let at = Some(datetime!(2026-06-21 12:00 UTC));
        let (more, fewer) = (switch(4000), switch(400));
        let up = SubscriptionNews {
            changed_at: at,
            plan: Some(&more),
            event_key: "stripe:evt_up",
            ..SubscriptionNews::default()
        };
        let plan = plan_subscription_change(&renewed, None, &up, NOW)
            .unwrap()
            .unwrap();
        let credits: Vec<_> = plan.grants.iter().map(|g| g.kind.clone()).collect();
        assert_eq!(
            credits,
            [MovementKind::Grant {
                txn_type: TxnType::Subscription,
                credits: 1000 + 3000,
                expires_at: None,
            }],
            "June's last third of the 3,000 more, and July's whole 3,000"
        );
        let down = SubscriptionNews {
            plan: Some(&fewer),
            ..up
        };
        let plan = plan_subscription_change(&renewed, None, &down, NOW)
            .unwrap()
            .unwrap();
        let credits: Vec<_> = plan.grants.iter().map(|g| g.kind.clone()).collect();
        assert_eq!(
            credits,
            [MovementKind::Clawback { credits: 600 }],
            "July was granted 1,000 where the new plan grants 400"
        );
    }
}
