//! Stripe events, in the shape of the pinned API version (and a few legacy shapes), read into
//! exact provider-neutral events through the public `parse_webhook`.

use tally_checkout::refund::RefundReport;
use tally_checkout::{Channel, EventKind, PaymentEvent, PaymentProvider, SubscriptionStatus};

use super::{headers, ts};
use crate::signature::stripe_scheme_header;
use crate::{HttpClient, HttpConfig, StripeConfig, StripeProvider};

const SECRET: &str = "whsec_fixture";

fn parse(body: &str) -> PaymentEvent {
    let provider = StripeProvider::new(
        StripeConfig {
            webhook_secret: Some(SECRET.into()),
            ..StripeConfig::default()
        },
        HttpClient::new(HttpConfig::default()).unwrap(),
    );
    let now = 1_764_151_210;
    let header = stripe_scheme_header(SECRET, now, body.as_bytes());
    provider
        .parse_webhook(
            &headers(&[("stripe-signature", &header)]),
            body.as_bytes(),
            ts(now),
        )
        .unwrap()
}

fn event(id: &str, event_type: &str, created: i64, kind: EventKind) -> PaymentEvent {
    PaymentEvent {
        channel: Channel::Stripe,
        id: id.into(),
        event_type: event_type.into(),
        created_at: Some(ts(created)),
        kind,
    }
}

#[test]
fn checkout_completed_in_subscription_mode() {
    let parsed = parse(include_str!(
        "fixtures/stripe_checkout_completed_subscription.json"
    ));
    let expected = event(
        "evt_1SbCkA2eZvKYlo2CsubDone",
        "checkout.session.completed",
        1_764_151_203,
        EventKind::CheckoutCompleted {
            order_id: Some("ord_0123456789abcdef01234567".into()),
            session_id: "cs_test_a1B2c3SubscriptionSession".into(),
            customer_id: Some("cus_RkX1sub".into()),
            subscription_id: Some("sub_1SbCkA2eZvKYlo2Csub0001".into()),
            paid: true,
            amount_paid_minor: Some(1200),
            payment_refs: vec![],
        },
    );
    assert_eq!(parsed, expected);
}

#[test]
fn checkout_completed_in_payment_mode_reads_metadata_and_expanded_customer() {
    let parsed = parse(include_str!(
        "fixtures/stripe_checkout_completed_payment.json"
    ));
    let expected = event(
        "evt_1SbCkB2eZvKYlo2CpayDone",
        "checkout.session.completed",
        1_764_151_300,
        EventKind::CheckoutCompleted {
            order_id: Some("ord_fedcba9876543210fedcba98".into()),
            session_id: "cs_test_b1PaymentSession".into(),
            customer_id: Some("cus_RkX2pay".into()),
            subscription_id: None,
            paid: true,
            amount_paid_minor: Some(900),
            payment_refs: vec!["pi_3SbCkB2eZvKYlo2C0pay0001".into()],
        },
    );
    assert_eq!(parsed, expected);
}

#[test]
fn unpaid_completion_and_async_outcomes() {
    let body = r#"{"id":"evt_a","type":"checkout.session.completed","created":1,
        "data":{"object":{"id":"cs_1","client_reference_id":"ord_1","payment_status":"unpaid",
        "amount_total":500,"payment_intent":"pi_1","customer":null}}}"#;
    assert!(matches!(
        parse(body).kind,
        EventKind::CheckoutCompleted { paid: false, .. }
    ));

    let body = body.replace(
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
    );
    assert_eq!(
        parse(&body).kind,
        EventKind::CheckoutPaymentSucceeded {
            order_id: Some("ord_1".into()),
            session_id: "cs_1".into(),
            amount_paid_minor: Some(500),
            payment_refs: vec!["pi_1".into()],
        }
    );
    let failed = body.replace("async_payment_succeeded", "async_payment_failed");
    assert_eq!(
        parse(&failed).kind,
        EventKind::CheckoutFailed {
            order_id: Some("ord_1".into()),
            session_id: "cs_1".into()
        }
    );
    let expired = body.replace("async_payment_succeeded", "expired");
    assert_eq!(
        parse(&expired).kind,
        EventKind::CheckoutExpired {
            order_id: Some("ord_1".into()),
            session_id: "cs_1".into()
        }
    );
}

#[test]
fn invoice_paid_with_parent_subscription_details() {
    let parsed = parse(include_str!("fixtures/stripe_invoice_paid.json"));
    let expected = event(
        "evt_1SbCkC2eZvKYlo2CinvPaid",
        "invoice.paid",
        1_764_151_205,
        EventKind::PeriodPaid {
            payment_id: "in_1SbCkA2eZvKYlo2Cinv0001".into(),
            subscription_id: "sub_1SbCkA2eZvKYlo2Csub0001".into(),
            customer_id: Some("cus_RkX1sub".into()),
            order_id: Some("ord_0123456789abcdef01234567".into()),
            period_start: Some(ts(1_764_151_200)),
            period_end: Some(ts(1_766_743_200)),
            amount_paid_minor: 1200,
            payment_refs: vec![],
            plan_change: false,
        },
    );
    assert_eq!(parsed, expected);
}

#[test]
fn invoice_paid_in_legacy_shape_and_with_expanded_payments() {
    let legacy = r#"{"id":"evt_l","type":"invoice.paid","created":2,"data":{"object":{
        "id":"in_old","customer":"cus_1","subscription":"sub_old","amount_paid":999,
        "payment_intent":"pi_old","charge":"ch_old",
        "subscription_details":{"metadata":{"order_id":"ord_old"}},
        "lines":{"data":[{"period":{"start":10,"end":20}}]}}}}"#;
    assert_eq!(
        parse(legacy).kind,
        EventKind::PeriodPaid {
            payment_id: "in_old".into(),
            subscription_id: "sub_old".into(),
            customer_id: Some("cus_1".into()),
            order_id: Some("ord_old".into()),
            period_start: Some(ts(10)),
            period_end: Some(ts(20)),
            amount_paid_minor: 999,
            payment_refs: vec!["pi_old".into(), "ch_old".into()],
            plan_change: false,
        }
    );

    let expanded = r#"{"id":"evt_e","type":"invoice.paid","created":2,"data":{"object":{
        "id":"in_new","parent":{"subscription_details":{"subscription":"sub_new","metadata":{}}},
        "lines":{"data":[{"metadata":{"order_id":"ord_from_line"}}]},
        "payments":{"data":[{"payment":{"type":"payment_intent","payment_intent":"pi_new"}}]}}}}"#;
    let EventKind::PeriodPaid {
        order_id,
        payment_refs,
        amount_paid_minor,
        ..
    } = parse(expanded).kind
    else {
        panic!("not a PeriodPaid");
    };
    assert_eq!(order_id.as_deref(), Some("ord_from_line"));
    assert_eq!(payment_refs, vec!["pi_new".to_owned()]);
    assert_eq!(amount_paid_minor, 0);
}

#[test]
fn invoices_that_grant_nothing_are_ignored() {
    let without_subscription = r#"{"id":"evt_i","type":"invoice.paid","created":3,
        "data":{"object":{"id":"in_one_off","amount_paid":100,"parent":null}}}"#;
    assert_eq!(parse(without_subscription).kind, EventKind::Ignored);
    let duplicate_signal = include_str!("fixtures/stripe_invoice_paid.json")
        .replace("\"invoice.paid\"", "\"invoice.payment_succeeded\"");
    assert_eq!(parse(&duplicate_signal).kind, EventKind::Ignored);
}

#[test]
fn subscription_updated_reads_item_periods() {
    let parsed = parse(include_str!("fixtures/stripe_subscription_updated.json"));
    let expected = event(
        "evt_1SbDxx2eZvKYlo2CsubUpd",
        "customer.subscription.updated",
        1_764_500_000,
        EventKind::SubscriptionChanged {
            subscription_id: "sub_1SbCkA2eZvKYlo2Csub0001".into(),
            customer_id: Some("cus_RkX1sub".into()),
            order_id: Some("ord_0123456789abcdef01234567".into()),
            status: Some(SubscriptionStatus::Active),
            cancel_at_period_end: Some(true),
            period_start: Some(ts(1_764_151_200)),
            period_end: Some(ts(1_766_743_200)),
            price_ref: Some("price_1Pro".into()),
        },
    );
    assert_eq!(parsed, expected);
}

#[test]
fn subscription_deleted_is_canceled() {
    let parsed = parse(include_str!("fixtures/stripe_subscription_deleted.json"));
    let expected = event(
        "evt_1SfZzz2eZvKYlo2CsubDel",
        "customer.subscription.deleted",
        1_766_743_210,
        EventKind::SubscriptionChanged {
            subscription_id: "sub_1SbCkA2eZvKYlo2Csub0001".into(),
            customer_id: Some("cus_RkX1sub".into()),
            order_id: Some("ord_0123456789abcdef01234567".into()),
            status: Some(SubscriptionStatus::Canceled),
            cancel_at_period_end: Some(true),
            period_start: Some(ts(1_764_151_200)),
            period_end: Some(ts(1_766_743_200)),
            price_ref: Some("price_1Pro".into()),
        },
    );
    assert_eq!(parsed, expected);
}

#[test]
fn subscription_statuses_map_and_legacy_periods_fall_back() {
    let cases = [
        ("active", Some(SubscriptionStatus::Active)),
        ("trialing", Some(SubscriptionStatus::Trialing)),
        ("past_due", Some(SubscriptionStatus::PastDue)),
        ("unpaid", Some(SubscriptionStatus::PastDue)),
        ("canceled", Some(SubscriptionStatus::Canceled)),
        ("incomplete_expired", Some(SubscriptionStatus::Expired)),
        ("paused", Some(SubscriptionStatus::Expired)),
        ("incomplete", None),
        ("a_status_from_the_future", None),
    ];
    for (stripe_status, expected) in cases {
        let body = format!(
            r#"{{"id":"evt_s","type":"customer.subscription.updated","created":5,"data":{{"object":{{
            "id":"sub_1","status":"{stripe_status}","current_period_start":100,"current_period_end":200}}}}}}"#
        );
        let EventKind::SubscriptionChanged {
            status,
            period_start,
            period_end,
            ..
        } = parse(&body).kind
        else {
            panic!("not a SubscriptionChanged");
        };
        assert_eq!(status, expected, "{stripe_status}");
        assert_eq!((period_start, period_end), (Some(ts(100)), Some(ts(200))));
    }
}

#[test]
fn charge_refunded_keys_on_the_cumulative_amount() {
    let parsed = parse(include_str!("fixtures/stripe_charge_refunded.json"));
    let expected = event(
        "evt_3SbEee2eZvKYlo2Crefund",
        "charge.refunded",
        1_764_600_000,
        EventKind::Refunded {
            refund_key: "ch_3SbCkB2eZvKYlo2C0chg0001:450".into(),
            payment_refs: vec![
                "pi_3SbCkB2eZvKYlo2C0pay0001".into(),
                "ch_3SbCkB2eZvKYlo2C0chg0001".into(),
            ],
            amount: RefundReport::Cumulative(450),
        },
    );
    assert_eq!(parsed, expected);
}

#[test]
fn dispute_created_names_the_charge() {
    let body = r#"{"id":"evt_d","type":"charge.dispute.created","created":7,"data":{"object":{
        "id":"du_1","object":"dispute","amount":900,"charge":"ch_1","payment_intent":"pi_1",
        "reason":"fraudulent","status":"needs_response"}}}"#;
    assert_eq!(
        parse(body).kind,
        EventKind::Disputed {
            dispute_id: "du_1".into(),
            payment_refs: vec!["ch_1".into(), "pi_1".into()],
            amount_minor: 900,
        }
    );
}

#[test]
fn unknown_event_type_is_ignored() {
    let parsed = parse(include_str!("fixtures/stripe_unknown.json"));
    assert_eq!(
        parsed,
        event(
            "evt_1SbFff2eZvKYlo2Cunknown",
            "payment_method.attached",
            1_764_700_000,
            EventKind::Ignored
        )
    );
}
