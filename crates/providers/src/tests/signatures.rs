//! Webhook signature verification: the known-answer vectors of the reference, and every way a
//! delivery can be forged, stale or malformed.

use tally_checkout::{Channel, PaymentProvider, ProviderError};

use super::{headers, ts};
use crate::signature::{hmac_hex, stripe_scheme_header, verify_stripe_scheme};
use crate::{CreemConfig, CreemProvider, HttpClient, HttpConfig, StripeConfig, StripeProvider};

const STRIPE_BODY: &[u8] = br#"{"id":"evt_test","object":"event"}"#;
const STRIPE_T: i64 = 1_700_000_000;
const STRIPE_V1: &str = "c25fec335f20601dcb662f0e7c4944646158a9324bb6ed8b7f6ab126449f507a";

const CREEM_BODY: &[u8] = br#"{"id":"evt_test","eventType":"checkout.completed","created_at":1728734325927,"object":{"id":"ch_test","object":"checkout"}}"#;
const CREEM_SIG: &str = "152ee38d44b02e4fe67f36985d67bce634c97ffc9d08d48dc04ccb812a3c4706";

fn client() -> HttpClient {
    HttpClient::new(HttpConfig::default()).unwrap()
}

fn stripe(secret: Option<&str>) -> StripeProvider {
    StripeProvider::new(
        StripeConfig {
            webhook_secret: secret.map(str::to_owned),
            ..StripeConfig::default()
        },
        client(),
    )
}

fn creem(secret: Option<&str>) -> CreemProvider {
    CreemProvider::new(CreemConfig::new(None, secret.map(str::to_owned)), client())
}

/// The signature check alone: the KAT body is not a full event (it has no `type`).
fn stripe_check(header: Option<&str>, body: &[u8], now: i64) -> Result<(), ProviderError> {
    let h = match header {
        Some(v) => headers(&[("stripe-signature", v)]),
        None => headers(&[("content-type", "application/json")]),
    };
    verify_stripe_scheme(
        crate::signature::header(&h, "stripe-signature"),
        "whsec_test",
        body,
        ts(now),
    )
}

fn assert_invalid(result: Result<(), ProviderError>, case: &str) {
    assert!(
        matches!(result, Err(ProviderError::InvalidSignature(_))),
        "{case}: expected InvalidSignature, got {result:?}"
    );
}

fn kat_header() -> String {
    format!("t={STRIPE_T},v1={STRIPE_V1}")
}

#[test]
fn stripe_known_answer_vector_is_accepted() {
    assert_eq!(
        stripe_scheme_header("whsec_test", STRIPE_T, STRIPE_BODY),
        kat_header()
    );
    assert!(stripe_check(Some(&kat_header()), STRIPE_BODY, STRIPE_T + 10).is_ok());
    // Through the provider the signature passes and the body is read: it has no `type`.
    let result = stripe(Some("whsec_test")).parse_webhook(
        &headers(&[("stripe-signature", &kat_header())]),
        STRIPE_BODY,
        ts(STRIPE_T + 10),
    );
    assert!(
        matches!(result, Err(ProviderError::Malformed(_))),
        "{result:?}"
    );
    let typed =
        br#"{"id":"evt_test","object":"event","type":"balance.available","created":1700000000}"#;
    let header = stripe_scheme_header("whsec_test", STRIPE_T, typed);
    let event = stripe(Some("whsec_test"))
        .parse_webhook(
            &headers(&[("stripe-signature", &header)]),
            typed,
            ts(STRIPE_T + 10),
        )
        .unwrap();
    assert_eq!(event.id, "evt_test");
    assert_eq!(event.channel, Channel::Stripe);
    assert_eq!(event.created_at, Some(ts(STRIPE_T)));
}

#[test]
fn stripe_tampered_body_is_rejected() {
    let tampered = br#"{"id":"evt_test","object":"event" }"#;
    assert_invalid(
        stripe_check(Some(&kat_header()), tampered, STRIPE_T + 10),
        "tampered",
    );
}

#[test]
fn stripe_wrong_secret_is_rejected() {
    let result = stripe(Some("whsec_other"))
        .parse_webhook(
            &headers(&[("stripe-signature", &kat_header())]),
            STRIPE_BODY,
            ts(STRIPE_T + 10),
        )
        .map(|_| ());
    assert_invalid(result, "wrong secret");
    let no_header = stripe(Some("whsec_test"))
        .parse_webhook(&headers(&[]), STRIPE_BODY, ts(STRIPE_T))
        .map(|_| ());
    assert_invalid(no_header, "provider without header");
}

#[test]
fn stripe_missing_or_empty_header_is_rejected() {
    assert_invalid(stripe_check(None, STRIPE_BODY, STRIPE_T), "missing");
    assert_invalid(stripe_check(Some(""), STRIPE_BODY, STRIPE_T), "empty");
}

#[test]
fn stripe_header_without_timestamp_is_rejected() {
    let header = format!("v1={STRIPE_V1}");
    assert_invalid(stripe_check(Some(&header), STRIPE_BODY, STRIPE_T), "no t=");
    let header = format!("t=soon,v1={STRIPE_V1}");
    assert_invalid(
        stripe_check(Some(&header), STRIPE_BODY, STRIPE_T),
        "t not a number",
    );
}

#[test]
fn stripe_header_without_v1_is_rejected() {
    assert_invalid(
        stripe_check(Some("t=1700000000"), STRIPE_BODY, STRIPE_T),
        "no v1",
    );
}

#[test]
fn stripe_v0_only_signature_is_rejected() {
    // A valid MAC under another scheme name must not pass: downgrade protection.
    let header = format!("t={STRIPE_T},v0={STRIPE_V1}");
    assert_invalid(
        stripe_check(Some(&header), STRIPE_BODY, STRIPE_T),
        "v0 only",
    );
}

#[test]
fn stripe_stale_timestamp_is_rejected_and_the_edge_accepted() {
    assert_invalid(
        stripe_check(Some(&kat_header()), STRIPE_BODY, STRIPE_T + 301),
        "stale",
    );
    assert!(stripe_check(Some(&kat_header()), STRIPE_BODY, STRIPE_T + 300).is_ok());
}

#[test]
fn stripe_future_timestamp_is_accepted_like_the_sdks() {
    assert!(stripe_check(Some(&kat_header()), STRIPE_BODY, STRIPE_T - 10_000).is_ok());
}

#[test]
fn stripe_one_matching_v1_among_several_is_accepted() {
    let other = hmac_hex("whsec_old", &[b"1700000000.", STRIPE_BODY]);
    let header = format!("t={STRIPE_T},v1={other},v1={STRIPE_V1},v0=deadbeef");
    assert!(stripe_check(Some(&header), STRIPE_BODY, STRIPE_T + 10).is_ok());
}

#[test]
fn stripe_non_hex_v1_is_skipped() {
    let junk = format!("t={STRIPE_T},v1=not-hex-at-all,v1=zz{}", &STRIPE_V1[2..]);
    assert_invalid(
        stripe_check(Some(&junk), STRIPE_BODY, STRIPE_T),
        "junk only",
    );
    let junk_then_good = format!("t={STRIPE_T},v1=%%%,v1={STRIPE_V1}");
    assert!(stripe_check(Some(&junk_then_good), STRIPE_BODY, STRIPE_T).is_ok());
    let truncated = format!("t={STRIPE_T},v1={}", &STRIPE_V1[..32]);
    assert_invalid(
        stripe_check(Some(&truncated), STRIPE_BODY, STRIPE_T),
        "truncated",
    );
}

#[test]
fn stripe_without_webhook_secret_is_not_configured() {
    let result = stripe(None).parse_webhook(
        &headers(&[("stripe-signature", &kat_header())]),
        STRIPE_BODY,
        ts(STRIPE_T),
    );
    assert!(matches!(
        result,
        Err(ProviderError::NotConfigured(Channel::Stripe))
    ));
}

#[test]
fn stripe_signed_but_unreadable_body_is_malformed() {
    for body in [
        &b"not json"[..],
        br#"{"object":"event"}"#,
        br#"{"id":"evt_1"}"#,
    ] {
        let header = stripe_scheme_header("whsec_test", STRIPE_T, body);
        let result = stripe(Some("whsec_test")).parse_webhook(
            &headers(&[("stripe-signature", &header)]),
            body,
            ts(STRIPE_T),
        );
        assert!(
            matches!(result, Err(ProviderError::Malformed(_))),
            "{result:?}"
        );
    }
}

fn creem_check(header: Option<&str>, secret: &str, body: &[u8]) -> Result<(), ProviderError> {
    let h = match header {
        Some(v) => headers(&[("creem-signature", v)]),
        None => headers(&[]),
    };
    creem(Some(secret))
        .parse_webhook(&h, body, ts(0))
        .map(|_| ())
}

#[test]
fn creem_known_answer_vector_is_accepted() {
    assert_eq!(hmac_hex("whsec_creem_test", &[CREEM_BODY]), CREEM_SIG);
    let event = creem(Some("whsec_creem_test"))
        .parse_webhook(
            &headers(&[("creem-signature", CREEM_SIG)]),
            CREEM_BODY,
            ts(0),
        )
        .unwrap();
    assert_eq!(event.id, "evt_test");
    assert_eq!(event.channel, Channel::Creem);
}

#[test]
fn creem_forgeries_are_rejected() {
    let tampered = br#"{"id":"evt_test","eventType":"checkout.completed","created_at":1728734325928,"object":{"id":"ch_test","object":"checkout"}}"#;
    assert_invalid(
        creem_check(Some(CREEM_SIG), "whsec_creem_test", tampered),
        "tampered",
    );
    assert_invalid(
        creem_check(Some(CREEM_SIG), "whsec_other", CREEM_BODY),
        "wrong secret",
    );
    assert_invalid(creem_check(None, "whsec_creem_test", CREEM_BODY), "missing");
    assert_invalid(
        creem_check(Some(""), "whsec_creem_test", CREEM_BODY),
        "empty",
    );
    assert_invalid(
        creem_check(Some("junk!"), "whsec_creem_test", CREEM_BODY),
        "junk",
    );
    assert_invalid(
        creem_check(Some(&CREEM_SIG[..62]), "whsec_creem_test", CREEM_BODY),
        "truncated",
    );
    let stripe_style = format!("t=1,v1={CREEM_SIG}");
    assert_invalid(
        creem_check(Some(&stripe_style), "whsec_creem_test", CREEM_BODY),
        "scheme",
    );
}

#[test]
fn creem_without_webhook_secret_is_not_configured() {
    let result = creem(None).parse_webhook(
        &headers(&[("creem-signature", CREEM_SIG)]),
        CREEM_BODY,
        ts(0),
    );
    assert!(matches!(
        result,
        Err(ProviderError::NotConfigured(Channel::Creem))
    ));
}
