//! The events Tally sends to webhook endpoints and the JSON body receivers get.

use rand::RngCore;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

tally_kernel::wire_enum! {
    /// The kind of an outbound event; its wire name is what receivers see in `type`.
    #[derive(PartialOrd, Ord)]
    pub enum EventType {
        /// Credits were added to a user's balance.
        CreditsGranted = "credits.granted",
        /// Credits were consumed (high volume: off unless an endpoint asks for it).
        CreditsSpent = "credits.spent",
        /// A balance fell below its low-balance threshold.
        CreditsLow = "credits.low",
        /// A credit grant reached its expiry.
        CreditsExpired = "credits.expired",
        /// A user completed a check-in.
        CheckinCompleted = "checkin.completed",
        /// An order was paid.
        OrderCompleted = "order.completed",
        /// An order's payment failed.
        OrderFailed = "order.failed",
        /// An order was refunded.
        OrderRefunded = "order.refunded",
        /// A subscription started.
        SubscriptionCreated = "subscription.created",
        /// A subscription renewed for another period.
        SubscriptionRenewed = "subscription.renewed",
        /// A subscription changed plan, status or period.
        SubscriptionUpdated = "subscription.updated",
        /// A renewal payment failed: the subscription is past due while the provider retries.
        SubscriptionPastDue = "subscription.past_due",
        /// A subscription was canceled.
        SubscriptionCanceled = "subscription.canceled",
        /// A credit hold expired without being captured.
        HoldExpired = "hold.expired",
        /// A webhook endpoint was disabled after failing for too long.
        EndpointDisabled = "endpoint.disabled",
        /// A user used up a feature's allowance for the current window.
        UsageLimitReached = "usage.limit_reached",
    }
}

impl EventType {
    /// Whether a new endpoint subscribes to this type without asking; `credits.spent` fires on
    /// every spend, so it must be requested explicitly.
    pub const fn default_enabled(self) -> bool {
        !matches!(self, Self::CreditsSpent)
    }
}

/// One event to deliver to every endpoint of an app that subscribes to its type.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundEvent {
    /// `evt_` followed by 24 random hex digits; also the `webhook-id` header, so receivers can
    /// deduplicate retries.
    pub id: String,
    /// What happened.
    pub event_type: EventType,
    /// The app the event belongs to.
    pub app: String,
    /// The user concerned, when there is one.
    pub user: Option<String>,
    /// When the event happened.
    pub created_at: OffsetDateTime,
    /// Type-specific details.
    pub data: serde_json::Value,
}

impl OutboundEvent {
    /// A new event with a fresh random id.
    pub fn new(
        event_type: EventType,
        app: impl Into<String>,
        user: Option<String>,
        created_at: OffsetDateTime,
        data: serde_json::Value,
    ) -> Self {
        Self {
            id: new_event_id(),
            event_type,
            app: app.into(),
            user,
            created_at,
            data,
        }
    }

    /// The JSON body receivers get: `{"id", "type", "app", "user_id", "created_at", "data"}`.
    pub fn payload(&self) -> String {
        // RFC 3339 formatting only fails for years outside 0..=9999, which no real event has;
        // fall back to the unix timestamp rather than panic.
        let created_at = self
            .created_at
            .format(&Rfc3339)
            .unwrap_or_else(|_| self.created_at.unix_timestamp().to_string());
        serde_json::json!({
            "id": self.id,
            "type": self.event_type.as_str(),
            "app": self.app,
            "user_id": self.user,
            "created_at": created_at,
            "data": self.data,
        })
        .to_string()
    }
}

/// A fresh event id: `evt_` + 24 hex digits (96 random bits).
pub fn new_event_id() -> String {
    let mut bytes = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("evt_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn wire_names_round_trip() {
        for &t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(t.to_string(), t.as_str());
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(serde_json::from_str::<EventType>(&json).unwrap(), t);
        }
        assert_eq!(EventType::parse("credits.Granted"), None);
        assert_eq!(EventType::parse(""), None);
    }

    #[test]
    fn all_is_complete_and_unique() {
        let mut names: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 16);
    }

    #[test]
    fn only_credits_spent_is_opt_in() {
        for &t in EventType::ALL {
            assert_eq!(t.default_enabled(), t != EventType::CreditsSpent, "{t}");
        }
    }

    #[test]
    fn ids_are_evt_plus_24_hex() {
        let a = new_event_id();
        let b = new_event_id();
        assert_ne!(a, b);
        let hex = a.strip_prefix("evt_").unwrap();
        assert_eq!(hex.len(), 24);
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn payload_shape() {
        let e = OutboundEvent::new(
            EventType::CreditsGranted,
            "app_1",
            Some("user_9".into()),
            datetime!(2025-03-04 05:06:07 UTC),
            serde_json::json!({"credits": 100}),
        );
        let v: serde_json::Value = serde_json::from_str(&e.payload()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": e.id,
                "type": "credits.granted",
                "app": "app_1",
                "user_id": "user_9",
                "created_at": "2025-03-04T05:06:07Z",
                "data": {"credits": 100},
            })
        );
    }

    #[test]
    fn payload_without_user_has_null_user_id() {
        let e = OutboundEvent::new(
            EventType::EndpointDisabled,
            "app_1",
            None,
            datetime!(2025-03-04 05:06:07 UTC),
            serde_json::json!({}),
        );
        let v: serde_json::Value = serde_json::from_str(&e.payload()).unwrap();
        assert!(v["user_id"].is_null());
    }
}
