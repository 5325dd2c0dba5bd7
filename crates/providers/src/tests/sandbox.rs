//! The sandbox: sessions without HTTP, and signed deliveries that read back into the events a real
//! provider's would.

use tally_checkout::{
    Channel, CheckoutMode, CheckoutRequest, EventKind, Interval, Order, OrderStatus, OrderType,
    PaymentEvent, PaymentProvider, PortalRequest, ProviderError, Subscription, SubscriptionChange,
    SubscriptionStatus,
};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::{SandboxConfig, SandboxProvider};

const NOW: OffsetDateTime = datetime!(2026-01-31 12:00 UTC);

fn sandbox(secret: &str) -> SandboxProvider {
    SandboxProvider::new(SandboxConfig {
        public_base_url: "http://127.0.0.1:8080/".into(),
        webhook_secret: secret.into(),
    })
}

fn order(order_type: OrderType, interval: Option<Interval>) -> Order {
    Order {
        id: "ord_00000000000000000000abcd".into(),
        app: "demo".into(),
        user: "u_42".into(),
        order_type,
        status: OrderStatus::Pending,
        plan_id: "pro".into(),
        interval,
        channel: Channel::Sandbox,
        amount_minor: 1500,
        currency: "usd".into(),
        discount_minor: 300,
        coupon_code: Some("LAUNCH20".into()),
        credits: 1000,
        credits_expire_days: None,
        provider_session_id: Some("sbx_ord_00000000000000000000abcd".into()),
        checkout_url: None,
        provider_customer_id: None,
        provider_subscription_id: None,
        failure_reason: None,
        created_at: NOW,
        completed_at: None,
        updated_at: NOW,
    }
}

fn read_all(
    provider: &SandboxProvider,
    deliveries: Vec<(tally_checkout::WebhookHeaders, Vec<u8>)>,
) -> Vec<PaymentEvent> {
    deliveries
        .into_iter()
        .map(|(headers, body)| provider.parse_webhook(&headers, &body, NOW).unwrap())
        .collect()
}

fn customer(event: &PaymentEvent) -> String {
    match &event.kind {
        EventKind::CheckoutCompleted {
            customer_id: Some(c),
            ..
        } => c.clone(),
        other => panic!("no customer in {other:?}"),
    }
}

#[tokio::test]
async fn sessions_portal_and_coupons_need_no_http() {
    let provider = sandbox("sbx_secret");
    let session = provider
        .create_checkout(&CheckoutRequest {
            order_id: "ord_1".into(),
            app: "demo".into(),
            user: "u".into(),
            mode: CheckoutMode::Payment,
            price_ref: "sandbox".into(),
            success_url: "http://127.0.0.1:8080/ok".into(),
            cancel_url: None,
            customer_id: None,
            discount: None,
            idempotency_key: "k".into(),
            amount_minor: 100,
            currency: "usd".into(),
            plan_name: "Pack".into(),
            credits: 10,
            trial_days: None,
        })
        .await
        .unwrap();
    assert_eq!(session.session_id, "sbx_ord_1");
    assert_eq!(
        session.url,
        "http://127.0.0.1:8080/payment/sandbox/sbx_ord_1"
    );
    let back = PortalRequest {
        customer_id: "c".into(),
        return_url: Some("http://x/acct".into()),
    };
    assert_eq!(
        provider.create_portal(&back).await.unwrap(),
        "http://x/acct"
    );
    let nowhere = PortalRequest {
        customer_id: "c".into(),
        return_url: None,
    };
    assert_eq!(
        provider.create_portal(&nowhere).await.unwrap(),
        "http://127.0.0.1:8080/"
    );
}

#[test]
fn paying_a_credit_pack_completes_the_checkout() {
    let provider = sandbox("sbx_secret");
    let events = read_all(
        &provider,
        provider.deliveries(&order(OrderType::Credits, None), true, NOW),
    );
    assert_eq!(events.len(), 1);
    let customer_id = customer(&events[0]);
    assert!(
        customer_id.starts_with("sbx_cus_") && !customer_id.contains("u_42"),
        "{customer_id}"
    );
    assert_eq!(
        events[0],
        PaymentEvent {
            channel: Channel::Sandbox,
            id: "evt_sbx_ord_00000000000000000000abcd_checkout_completed".into(),
            event_type: "checkout.completed".into(),
            created_at: Some(NOW),
            kind: EventKind::CheckoutCompleted {
                order_id: Some("ord_00000000000000000000abcd".into()),
                session_id: "sbx_ord_00000000000000000000abcd".into(),
                customer_id: Some(customer_id.clone()),
                subscription_id: None,
                paid: true,
                amount_paid_minor: Some(1200),
                payment_refs: vec!["sbx_pay_ord_00000000000000000000abcd".into()],
            },
        }
    );
}

#[test]
fn paying_a_subscription_completes_and_pays_the_first_period() {
    let provider = sandbox("sbx_secret");
    let events = read_all(
        &provider,
        provider.deliveries(
            &order(OrderType::Subscription, Some(Interval::Month)),
            true,
            NOW,
        ),
    );
    assert_eq!(events.len(), 2);
    let customer_id = customer(&events[0]);
    assert!(matches!(
        &events[0].kind,
        EventKind::CheckoutCompleted { subscription_id: Some(s), paid: true, .. }
            if s == "sbx_sub_ord_00000000000000000000abcd"
    ));
    assert_eq!(
        events[1],
        PaymentEvent {
            channel: Channel::Sandbox,
            id: "evt_sbx_ord_00000000000000000000abcd_period_paid_1".into(),
            event_type: "period.paid".into(),
            created_at: Some(NOW),
            kind: EventKind::PeriodPaid {
                payment_id: "sbx_inv_ord_00000000000000000000abcd_1".into(),
                subscription_id: "sbx_sub_ord_00000000000000000000abcd".into(),
                customer_id: Some(customer_id),
                order_id: Some("ord_00000000000000000000abcd".into()),
                period_start: Some(NOW),
                // January 31st plus a month is the last day of February.
                period_end: Some(datetime!(2026-02-28 12:00 UTC)),
                amount_paid_minor: 1200,
                payment_refs: vec![],
                plan_change: false,
            },
        }
    );

    let yearly = read_all(
        &provider,
        provider.deliveries(
            &order(OrderType::Subscription, Some(Interval::Year)),
            true,
            NOW,
        ),
    );
    assert!(matches!(
        yearly[1].kind,
        EventKind::PeriodPaid { period_end: Some(end), .. } if end == datetime!(2027-01-31 12:00 UTC)
    ));
}

#[test]
fn giving_up_expires_the_checkout() {
    let provider = sandbox("sbx_secret");
    let events = read_all(
        &provider,
        provider.deliveries(&order(OrderType::Credits, None), false, NOW),
    );
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].id,
        "evt_sbx_ord_00000000000000000000abcd_checkout_expired"
    );
    assert_eq!(
        events[0].kind,
        EventKind::CheckoutExpired {
            order_id: Some("ord_00000000000000000000abcd".into()),
            session_id: "sbx_ord_00000000000000000000abcd".into(),
        }
    );
}

#[test]
fn paying_twice_delivers_the_same_event_ids() {
    let provider = sandbox("sbx_secret");
    let o = order(OrderType::Subscription, Some(Interval::Month));
    let later = NOW + time::Duration::minutes(5);
    let first = read_all(&provider, provider.deliveries(&o, true, NOW));
    let second: Vec<PaymentEvent> = provider
        .deliveries(&o, true, later)
        .into_iter()
        .map(|(h, b)| provider.parse_webhook(&h, &b, later).unwrap())
        .collect();
    let ids = |events: &[PaymentEvent]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&second));
    let driver: &dyn tally_checkout::SandboxDriver = &provider;
    assert_eq!(
        driver.deliveries(&o, true, NOW),
        provider.deliveries(&o, true, NOW)
    );
}

#[test]
fn deliveries_are_signed_like_stripe() {
    let provider = sandbox("sbx_secret");
    let (headers, body) = provider
        .deliveries(&order(OrderType::Credits, None), true, NOW)
        .remove(0);
    let signature = &headers
        .iter()
        .find(|(k, _)| k == "tally-sandbox-signature")
        .unwrap()
        .1;
    assert!(
        signature.starts_with(&format!("t={},v1=", NOW.unix_timestamp())),
        "{signature}"
    );

    let forged = sandbox("another_secret").parse_webhook(&headers, &body, NOW);
    assert!(
        matches!(forged, Err(ProviderError::InvalidSignature(_))),
        "{forged:?}"
    );
    let stale = provider.parse_webhook(&headers, &body, NOW + time::Duration::seconds(301));
    assert!(
        matches!(stale, Err(ProviderError::InvalidSignature(_))),
        "{stale:?}"
    );
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let tampered = provider.parse_webhook(&headers, &tampered, NOW);
    assert!(
        matches!(tampered, Err(ProviderError::InvalidSignature(_))),
        "{tampered:?}"
    );
}

#[test]
fn renewals_and_cancellations() {
    let provider = sandbox("sbx_secret");
    let o = order(OrderType::Subscription, Some(Interval::Month));
    let (h, b) = provider.renewal(&o, 2, NOW).unwrap();
    let renewal = provider.parse_webhook(&h, &b, NOW).unwrap();
    assert_eq!(
        renewal.id,
        "evt_sbx_ord_00000000000000000000abcd_period_paid_2"
    );
    assert!(matches!(
        &renewal.kind,
        EventKind::PeriodPaid { payment_id, amount_paid_minor: 1500, .. }
            if payment_id == "sbx_inv_ord_00000000000000000000abcd_2"
    ));
    assert!(
        provider
            .renewal(&order(OrderType::Credits, None), 2, NOW)
            .is_none()
    );

    let sub = subscription(&o);
    let (h, b) = provider.subscription_changed(&sub, SubscriptionChange::CancelAtPeriodEnd, NOW);
    let scheduled = provider.parse_webhook(&h, &b, NOW).unwrap();
    assert!(matches!(
        scheduled.kind,
        EventKind::SubscriptionChanged {
            status: Some(SubscriptionStatus::Active),
            cancel_at_period_end: Some(true),
            ..
        }
    ));
    let (h, b) = provider.subscription_changed(&sub, SubscriptionChange::Resume, NOW);
    let resumed = provider.parse_webhook(&h, &b, NOW).unwrap();
    assert_ne!(resumed.id, scheduled.id);
    assert!(matches!(
        resumed.kind,
        EventKind::SubscriptionChanged {
            status: Some(SubscriptionStatus::Active),
            cancel_at_period_end: Some(false),
            ..
        }
    ));
    let (h, b) = provider.subscription_changed(&sub, SubscriptionChange::CancelNow, NOW);
    let canceled = provider.parse_webhook(&h, &b, NOW).unwrap();
    assert_ne!(canceled.id, scheduled.id);
    assert!(matches!(
        canceled.kind,
        EventKind::SubscriptionChanged {
            status: Some(SubscriptionStatus::Canceled),
            ref subscription_id,
            ..
        } if subscription_id == "sbx_sub_ord_00000000000000000000abcd"
    ));
    // The same change asked twice is two events (a provider sends one per change).
    let (_, again) = provider.subscription_changed(&sub, SubscriptionChange::CancelNow, NOW);
    assert_ne!(
        provider.parse_webhook(&h, &again, NOW).ok().map(|e| e.id),
        Some(canceled.id)
    );
}

/// The subscription the sandbox's first payment of `o` starts.
fn subscription(o: &Order) -> Subscription {
    Subscription {
        id: "1".into(),
        app: o.app.clone(),
        user: o.user.clone(),
        plan_id: o.plan_id.clone(),
        interval: Interval::Month,
        channel: Channel::Sandbox,
        order_id: o.id.clone(),
        provider_subscription_id: format!("sbx_sub_{}", o.id),
        provider_customer_id: Some("sbx_cus_1".into()),
        status: SubscriptionStatus::Active,
        current_period_start: Some(NOW),
        current_period_end: None,
        previous_period_start: None,
        cancel_at_period_end: false,
        credits_per_period: o.credits,
        credits_expire: false,
        created_at: NOW,
        updated_at: NOW,
    }
}
