//! What each outbound event's `data` holds, as types: whoever reports a change builds one of
//! these, and its serialisation is the wire format documented in `docs/events.md`. Ids are
//! strings and instants RFC 3339, as everywhere in the API.

use serde::Serialize;
use time::OffsetDateTime;

use crate::EventType;

fn instant(t: Option<OffsetDateTime>) -> Option<String> {
    t.map(tally_kernel::rfc3339)
}

/// A movement of credits (`credits.spent`, and the body of `credits.granted`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreditsMoved {
    /// The history row.
    pub transaction_id: String,
    /// Its type (`purchase`, `ai_usage`, …).
    #[serde(rename = "type")]
    pub txn_type: String,
    /// Credits moved, positive.
    pub credits: i64,
    /// The balance after it.
    pub balance_after: i64,
    /// Its description.
    pub description: String,
}

/// `credits.granted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreditsGranted {
    /// The movement.
    #[serde(flatten)]
    pub moved: CreditsMoved,
    /// When the granted credits expire (null: never).
    pub expires_at: Option<String>,
}

/// `credits.expired`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreditsExpired {
    /// The lot that came due.
    pub lot_id: Option<String>,
    /// Credits that expired.
    pub credits: i64,
    /// The balance after the expiry.
    pub balance_after: i64,
}

/// `credits.low`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreditsLow {
    /// The app's threshold.
    pub threshold: i64,
    /// Available credits before the write.
    pub available_before: i64,
    /// Available credits after it.
    pub available_after: i64,
    /// The balance after it.
    pub balance: i64,
}

/// `hold.expired`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldExpired {
    /// The hold.
    pub hold_id: String,
}

/// `checkin.completed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckinCompleted {
    /// The local day checked in.
    pub day: String,
    /// The streak, that day included.
    pub streak: i64,
    /// Credits awarded.
    pub awarded: i64,
    /// The balance after the reward.
    pub balance_after: i64,
    /// The reward's history row.
    pub transaction_id: String,
}

/// `order.completed` and `order.failed`: the order as it now is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderChanged {
    /// The order.
    pub order_id: String,
    /// `credits` or `subscription`.
    #[serde(rename = "type")]
    pub order_type: String,
    /// Its status.
    pub status: String,
    /// The plan or pack bought.
    pub plan_id: String,
    /// The payment channel.
    pub channel: String,
    /// The price, minor units.
    pub amount_minor: i64,
    /// The discount, minor units.
    pub discount_minor: i64,
    /// The currency.
    pub currency: String,
    /// Credits it grants.
    pub credits: i64,
    /// Why it failed (`order.failed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<Option<String>>,
}

/// `order.refunded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderRefunded {
    /// The order the payment paid, if any.
    pub order_id: Option<String>,
    /// The provider's payment id.
    pub payment_id: String,
    /// The payment channel.
    pub channel: String,
    /// What this refund refunded, minor units.
    pub refunded_minor: i64,
    /// The payment's refunded total.
    pub refunded_total_minor: i64,
    /// What was paid.
    pub amount_paid_minor: i64,
    /// Credits taken back for this refund.
    pub credits_clawed_back: i64,
}

/// `subscription.*`: the subscription as it now is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionChanged {
    /// The subscription.
    pub subscription_id: String,
    /// The order that started it.
    pub order_id: String,
    /// Its plan.
    pub plan_id: String,
    /// `month` or `year`.
    pub interval: String,
    /// The payment channel.
    pub channel: String,
    /// Its status.
    pub status: String,
    /// The current period's start.
    pub current_period_start: Option<String>,
    /// The current period's end.
    pub current_period_end: Option<String>,
    /// Whether it ends with the period.
    pub cancel_at_period_end: bool,
    /// Credits each paid period grants.
    pub credits_per_period: i64,
    /// The status before the change (`subscription.updated`, `subscription.canceled`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<String>,
    /// The period's payment (`subscription.renewed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// Credits the period granted (`subscription.renewed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits_granted: Option<i64>,
}

/// `endpoint.disabled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointDisabled {
    /// The endpoint.
    pub endpoint_id: String,
    /// Its URL.
    pub url: String,
    /// When its deliveries started failing.
    pub failing_since: String,
    /// Why it was disabled.
    pub reason: String,
}

/// `usage.limit_reached`: a call used up the allowance of a feature for its window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageLimitReached {
    /// The metered feature.
    pub feature: String,
    /// Units the allowance includes.
    pub included: i64,
    /// Units used in the window (all of them).
    pub used: i64,
    /// The window's start.
    pub window_start: String,
    /// When the allowance resets (null: never).
    pub resets_at: Option<String>,
    /// The plan whose allowance it is (null: the free tier).
    pub plan_id: Option<String>,
}

/// An outbound event's type and `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// `credits.granted`.
    CreditsGranted(CreditsGranted),
    /// `credits.spent`.
    CreditsSpent(CreditsMoved),
    /// `credits.expired`.
    CreditsExpired(CreditsExpired),
    /// `credits.low`.
    CreditsLow(CreditsLow),
    /// `hold.expired`.
    HoldExpired(HoldExpired),
    /// `checkin.completed`.
    CheckinCompleted(CheckinCompleted),
    /// `order.completed` or `order.failed`.
    Order(EventType, OrderChanged),
    /// `order.refunded`.
    OrderRefunded(OrderRefunded),
    /// `subscription.created`, `.renewed`, `.updated` or `.canceled`.
    Subscription(EventType, SubscriptionChanged),
    /// `endpoint.disabled`.
    EndpointDisabled(EndpointDisabled),
    /// `usage.limit_reached`.
    UsageLimitReached(UsageLimitReached),
}

impl Payload {
    /// The event's type.
    pub fn event_type(&self) -> EventType {
        match self {
            Self::CreditsGranted(_) => EventType::CreditsGranted,
            Self::CreditsSpent(_) => EventType::CreditsSpent,
            Self::CreditsExpired(_) => EventType::CreditsExpired,
            Self::CreditsLow(_) => EventType::CreditsLow,
            Self::HoldExpired(_) => EventType::HoldExpired,
            Self::CheckinCompleted(_) => EventType::CheckinCompleted,
            Self::Order(t, _) | Self::Subscription(t, _) => *t,
            Self::OrderRefunded(_) => EventType::OrderRefunded,
            Self::EndpointDisabled(_) => EventType::EndpointDisabled,
            Self::UsageLimitReached(_) => EventType::UsageLimitReached,
        }
    }

    /// The event's `data` object.
    pub fn data(&self) -> serde_json::Value {
        let value = match self {
            Self::CreditsGranted(d) => serde_json::to_value(d),
            Self::CreditsSpent(d) => serde_json::to_value(d),
            Self::CreditsExpired(d) => serde_json::to_value(d),
            Self::CreditsLow(d) => serde_json::to_value(d),
            Self::HoldExpired(d) => serde_json::to_value(d),
            Self::CheckinCompleted(d) => serde_json::to_value(d),
            Self::Order(_, d) => serde_json::to_value(d),
            Self::OrderRefunded(d) => serde_json::to_value(d),
            Self::Subscription(_, d) => serde_json::to_value(d),
            Self::EndpointDisabled(d) => serde_json::to_value(d),
            Self::UsageLimitReached(d) => serde_json::to_value(d),
        };
        // Plain structs of strings and integers always serialise.
        value.unwrap_or_default()
    }

    /// `credits.granted` from a grant's history row and its lot's expiry.
    pub fn granted(moved: CreditsMoved, expires_at: Option<OffsetDateTime>) -> Self {
        Self::CreditsGranted(CreditsGranted {
            moved,
            expires_at: instant(expires_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn moved() -> CreditsMoved {
        CreditsMoved {
            transaction_id: "7".into(),
            txn_type: "purchase".into(),
            credits: 50,
            balance_after: 150,
            description: "Credit pack".into(),
        }
    }

    #[test]
    fn payloads_have_the_documented_shape() {
        let granted = Payload::granted(moved(), Some(datetime!(2026-07-01 12:00 UTC)));
        assert_eq!(granted.event_type(), EventType::CreditsGranted);
        assert_eq!(
            granted.data(),
            json!({"transaction_id": "7", "type": "purchase", "credits": 50,
                "balance_after": 150, "description": "Credit pack",
                "expires_at": "2026-07-01T12:00:00Z"})
        );
        assert_eq!(
            Payload::CreditsSpent(moved()).data(),
            json!({"transaction_id": "7", "type": "purchase", "credits": 50,
                "balance_after": 150, "description": "Credit pack"}),
            "no expires_at on a spend"
        );
        let order = OrderChanged {
            order_id: "ord_1".into(),
            order_type: "credits".into(),
            status: "completed".into(),
            plan_id: "3".into(),
            channel: "stripe".into(),
            amount_minor: 999,
            discount_minor: 0,
            currency: "usd".into(),
            credits: 500,
            failure_reason: None,
        };
        assert!(
            Payload::Order(EventType::OrderCompleted, order.clone()).data()["failure_reason"]
                .is_null()
                && !Payload::Order(EventType::OrderCompleted, order.clone())
                    .data()
                    .as_object()
                    .is_some_and(|o| o.contains_key("failure_reason"))
        );
        let failed = OrderChanged {
            status: "failed".into(),
            failure_reason: Some(None),
            ..order
        };
        assert!(
            Payload::Order(EventType::OrderFailed, failed)
                .data()
                .as_object()
                .is_some_and(|o| o["failure_reason"].is_null())
        );
    }
}
