//! Creem events, in the shape of Creem's documented webhook samples, read into exact
//! provider-neutral events through the public `parse_webhook`.

use tally_checkout::refund::RefundReport;
use tally_checkout::{Channel, EventKind, PaymentEvent, PaymentProvider, SubscriptionStatus};
use time::OffsetDateTime;
use time::macros::datetime;

use super::headers;
use crate::signature::hmac_hex;
use crate::{CreemConfig, CreemProvider, HttpClient, HttpConfig};

const SECRET: &str = "whsec_creem_fixture";
const ORDER: &str = "ord_0123456789abcdef01234567";
const SUB: &str = "sub_6pC2lNB6joCRQIZ1aMrTpi";
const CUSTOMER: &str = "cust_1OcIK1GEuVvXZwD19tjq2z";

fn parse(body: &str) -> PaymentEvent {
    let provider = CreemProvider::new(
        CreemConfig::new(Some("creem_test_key".into()), Some(SECRET.into())),
        HttpClient::new(HttpConfig::default()).unwrap(),
    );
    let signature = hmac_hex(SECRET, &[body.as_bytes()]);
    provider
        .parse_webhook(
            &headers(&[("creem-signature", &signature)]),
            body.as_bytes(),
            OffsetDateTime::UNIX_EPOCH,
        )
        .unwrap()
}

fn ms(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).unwrap()
}

fn event(id: &str, event_type: &str, created_ms: i64, kind: EventKind) -> PaymentEvent {
    PaymentEvent {
        channel: Channel::Creem,
        id: id.into(),
        event_type: event_type.into(),
        created_at: Some(ms(created_ms)),
        kind,
    }
}

fn subscription_changed(
    status: Option<SubscriptionStatus>,
    cancel_at_period_end: Option<bool>,
) -> EventKind {
    EventKind::SubscriptionChanged {
        subscription_id: SUB.into(),
        customer_id: Some(CUSTOMER.into()),
        order_id: Some(ORDER.into()),
        status,
        cancel_at_period_end,
        period_start: Some(datetime!(2024-10-12 11:58:38 UTC)),
        period_end: Some(datetime!(2024-11-12 11:58:38 UTC)),
        price_ref: Some("prod_d1AY2Sadk9YAvLI0pj97f".into()),
    }
}

#[test]
fn checkout_completed() {
    let parsed = parse(include_str!("fixtures/creem_checkout_completed.json"));
    let expected = event(
        "evt_5WHHcZPv7VS0YUsberIuOz",
        "checkout.completed",
        1_728_734_325_927,
        EventKind::CheckoutCompleted {
            order_id: Some(ORDER.into()),
            session_id: "ch_4l0N34kxo16AhRKUHFUuXr".into(),
            customer_id: Some(CUSTOMER.into()),
            subscription_id: Some(SUB.into()),
            paid: true,
            amount_paid_minor: Some(1000),
            payment_refs: vec![
                "ord_4aDwWXjMLpes4Kj4XqNnUA".into(),
                "tran_5yMaWzAl3jxuGJMCOrYWwk".into(),
            ],
        },
    );
    assert_eq!(parsed, expected);
}

#[test]
fn checkout_completed_with_string_refs_and_metadata_order() {
    let body = r#"{"id":"evt_1","eventType":"checkout.completed","created_at":1,"object":{
        "id":"ch_1","status":"pending","customer":"cust_1","subscription":"sub_1",
        "metadata":{"order_id":"ord_meta"},
        "order":{"id":"ord_c1","status":"pending","amount":500,"transaction":{"id":"tran_1"}}}}"#;
    assert_eq!(
        parse(body).kind,
        EventKind::CheckoutCompleted {
            order_id: Some("ord_meta".into()),
            session_id: "ch_1".into(),
            customer_id: Some("cust_1".into()),
            subscription_id: Some("sub_1".into()),
            paid: false,
            amount_paid_minor: Some(500),
            payment_refs: vec!["ord_c1".into(), "tran_1".into()],
        }
    );
}

#[test]
fn subscription_paid() {
    let parsed = parse(include_str!("fixtures/creem_subscription_paid.json"));
    let expected = event(
        "evt_21mO1jWmU2QHe7u2oFV7y1",
        "subscription.paid",
        1_728_734_327_355,
        EventKind::PeriodPaid {
            payment_id: "tran_5yMaWzAl3jxuGJMCOrYWwk".into(),
            subscription_id: SUB.into(),
            customer_id: Some(CUSTOMER.into()),
            order_id: Some(ORDER.into()),
            period_start: Some(datetime!(2024-10-12 11:58:38 UTC)),
            period_end: Some(datetime!(2024-11-12 11:58:38 UTC)),
            amount_paid_minor: 1000,
            payment_refs: vec!["tran_5yMaWzAl3jxuGJMCOrYWwk".into()],
            plan_change: false,
        },
    );
    assert_eq!(parsed, expected);
}

#[test]
fn subscription_scheduled_cancel_stays_active_until_the_period_end() {
    let parsed = parse(include_str!(
        "fixtures/creem_subscription_scheduled_cancel.json"
    ));
    let expected = event(
        "evt_4RfTc700qGW6FBzloh3Ms8",
        "subscription.scheduled_cancel",
        1_728_734_355_932,
        subscription_changed(Some(SubscriptionStatus::Active), Some(true)),
    );
    assert_eq!(parsed, expected);
}

#[test]
fn subscription_canceled_with_customer_as_a_string() {
    let parsed = parse(include_str!("fixtures/creem_subscription_canceled.json"));
    let expected = event(
        "evt_2iGTc600qGW6FBzloh2Nr7",
        "subscription.canceled",
        1_728_734_337_932,
        subscription_changed(Some(SubscriptionStatus::Canceled), None),
    );
    assert_eq!(parsed, expected);
}

#[test]
fn subscription_event_names_map_to_statuses() {
    let fixture = include_str!("fixtures/creem_subscription_paid.json");
    let cases = [
        ("subscription.active", Some(SubscriptionStatus::Active)),
        ("subscription.trialing", Some(SubscriptionStatus::Trialing)),
        ("subscription.past_due", Some(SubscriptionStatus::PastDue)),
        ("subscription.unpaid", Some(SubscriptionStatus::PastDue)),
        ("subscription.expired", Some(SubscriptionStatus::Expired)),
        ("subscription.paused", None),
        // `update` reads the object's status, here `active`.
        ("subscription.update", Some(SubscriptionStatus::Active)),
    ];
    for (event_type, status) in cases {
        let body = fixture.replace("\"subscription.paid\"", &format!("\"{event_type}\""));
        assert_eq!(
            parse(&body).kind,
            subscription_changed(status, None),
            "{event_type}"
        );
    }
    let resumed = fixture
        .replace("\"subscription.paid\"", "\"subscription.update\"")
        .replace(
            "\"collection_method\"",
            "\"cancel_at_period_end\": false, \"collection_method\"",
        );
    assert_eq!(
        parse(&resumed).kind,
        subscription_changed(Some(SubscriptionStatus::Active), Some(false))
    );
}

#[test]
fn refund_created() {
    let parsed = parse(include_str!("fixtures/creem_refund_created.json"));
    let expected = event(
        "evt_61eTsJHUgInFw2BQKhTiPV",
        "refund.created",
        1_728_734_351_631,
        EventKind::Refunded {
            refund_key: "ref_3DB9NQFvk18TJwSqd0N6bd".into(),
            payment_refs: vec![
                "tran_5yMaWzAl3jxuGJMCOrYWwk".into(),
                "ord_4aDwWXjMLpes4Kj4XqNnUA".into(),
                "ch_4l0N34kxo16AhRKUHFUuXr".into(),
            ],
            amount: RefundReport::PerRefund(1210),
        },
    );
    assert_eq!(parsed, expected);
}

#[test]
fn dispute_created_and_unknown_types() {
    let body = r#"{"id":"evt_d","eventType":"dispute.created","created_at":1750941264812,
        "object":{"id":"disp_1","amount":1331,"currency":"EUR","transaction":{"id":"tran_4"},
        "order":"ord_5","checkout":{"id":"ch_6"}}}"#;
    assert_eq!(
        parse(body).kind,
        EventKind::Disputed {
            dispute_id: "disp_1".into(),
            payment_refs: vec!["tran_4".into(), "ord_5".into(), "ch_6".into()],
            amount_minor: 1331,
        }
    );
    let unknown = r#"{"id":"evt_u","eventType":"license.activated","created_at":1,"object":{}}"#;
    assert_eq!(parse(unknown).kind, EventKind::Ignored);
}
