//! API calls against the local double: the exact requests each provider sends, and how error
//! answers, retries and timeouts come back.

use std::time::{Duration, Instant};

use serde_json::json;
use tally_checkout::{
    Channel, CheckoutMode, CheckoutRequest, CheckoutSession, CouponRequest, PaymentProvider,
    PlanChangeRequest, PortalRequest, ProviderError, RefundRequest, SubscriptionChange,
    SubscriptionRequest,
};

use super::double::{Double, Reply};
use super::fast_client;
use crate::{
    CREEM_API_BASE, CREEM_TEST_API_BASE, CreemConfig, CreemProvider, STRIPE_API_VERSION,
    StripeConfig, StripeProvider, creem_api_base,
};

const STRIPE_KEY: &str = "sk_test_51Tally0secret";
const CREEM_KEY: &str = "creem_test_7TallySecret";

fn stripe_at(base: &str) -> StripeProvider {
    StripeProvider::new(
        StripeConfig {
            secret_key: Some(STRIPE_KEY.into()),
            webhook_secret: None,
            api_base: base.into(),
            api_version: STRIPE_API_VERSION.into(),
        },
        fast_client(Duration::from_secs(2)),
    )
}

fn creem_at(base: &str) -> CreemProvider {
    CreemProvider::new(
        CreemConfig {
            api_key: Some(CREEM_KEY.into()),
            webhook_secret: None,
            api_base: base.into(),
        },
        fast_client(Duration::from_secs(2)),
    )
}

fn checkout(mode: CheckoutMode) -> CheckoutRequest {
    CheckoutRequest {
        order_id: "ord_0123456789abcdef01234567".into(),
        app: "demo".into(),
        user: "u_42".into(),
        mode,
        price_ref: "price_1Pro".into(),
        success_url: "https://app.example/ok?session_id={CHECKOUT_SESSION_ID}".into(),
        cancel_url: Some("https://app.example/billing".into()),
        customer_id: None,
        discount: Some("tally_demo_LAUNCH20".into()),
        idempotency_key: "checkout:ord_0123456789abcdef01234567".into(),
        amount_minor: 1200,
        currency: "usd".into(),
        plan_name: "Pro".into(),
        credits: 1000,
        trial_days: None,
    }
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn stripe_session_answer() -> Reply {
    Reply::ok(json!({
        "id": "cs_test_a1",
        "object": "checkout.session",
        "status": "open",
        "url": "https://checkout.stripe.com/c/pay/cs_test_a1#fid"
    }))
}

#[tokio::test]
async fn stripe_checkout_in_subscription_mode_sends_the_exact_form() {
    let double = Double::start(vec![stripe_session_answer()]).await;
    let session = stripe_at(&double.base)
        .create_checkout(&checkout(CheckoutMode::Subscription))
        .await
        .unwrap();
    assert_eq!(
        session,
        CheckoutSession {
            session_id: "cs_test_a1".into(),
            url: "https://checkout.stripe.com/c/pay/cs_test_a1#fid".into(),
        }
    );
    let requests = double.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/checkout/sessions")
    );
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {STRIPE_KEY}").as_str())
    );
    assert_eq!(r.header("stripe-version"), Some("2026-10-28.endive"));
    assert_eq!(
        r.header("idempotency-key"),
        Some("checkout:ord_0123456789abcdef01234567")
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let order = "ord_0123456789abcdef01234567";
    assert_eq!(
        r.form(),
        pairs(&[
            ("mode", "subscription"),
            ("line_items[0][price]", "price_1Pro"),
            ("line_items[0][quantity]", "1"),
            (
                "success_url",
                "https://app.example/ok?session_id={CHECKOUT_SESSION_ID}"
            ),
            ("cancel_url", "https://app.example/billing"),
            ("client_reference_id", order),
            ("metadata[order_id]", order),
            ("metadata[app]", "demo"),
            ("metadata[user_id]", "u_42"),
            ("metadata[credits]", "1000"),
            ("subscription_data[metadata][order_id]", order),
            ("subscription_data[metadata][app]", "demo"),
            ("subscription_data[metadata][user_id]", "u_42"),
            ("discounts[0][coupon]", "tally_demo_LAUNCH20"),
        ])
    );
    let raw = String::from_utf8(r.body.clone()).unwrap();
    assert!(
        raw.starts_with("mode=subscription&line_items%5B0%5D%5Bprice%5D=price_1Pro&"),
        "brackets are percent-encoded like the official SDK: {raw}"
    );
}

#[tokio::test]
async fn stripe_checkout_in_payment_mode_carries_metadata_to_the_payment_intent() {
    let double = Double::start(vec![stripe_session_answer()]).await;
    let stripe = stripe_at(&double.base);
    let mut request = checkout(CheckoutMode::Payment);
    request.discount = None;
    request.cancel_url = None;
    stripe.create_checkout(&request).await.unwrap();
    request.customer_id = Some("cus_Known".into());
    stripe.create_checkout(&request).await.unwrap();

    let requests = double.requests();
    let order = "ord_0123456789abcdef01234567";
    let common = [
        ("mode", "payment"),
        ("line_items[0][price]", "price_1Pro"),
        ("line_items[0][quantity]", "1"),
        (
            "success_url",
            "https://app.example/ok?session_id={CHECKOUT_SESSION_ID}",
        ),
        ("client_reference_id", order),
        ("metadata[order_id]", order),
        ("metadata[app]", "demo"),
        ("metadata[user_id]", "u_42"),
        ("metadata[credits]", "1000"),
        ("payment_intent_data[metadata][order_id]", order),
        ("payment_intent_data[metadata][app]", "demo"),
        ("payment_intent_data[metadata][user_id]", "u_42"),
    ];
    let mut new_customer = pairs(&common);
    new_customer.push(("customer_creation".into(), "always".into()));
    assert_eq!(requests[0].form(), new_customer);
    let mut known_customer = pairs(&common);
    known_customer.push(("customer".into(), "cus_Known".into()));
    assert_eq!(requests[1].form(), known_customer);
}

#[tokio::test]
async fn stripe_portal_and_coupon() {
    let double = Double::start(vec![
        Reply::ok(json!({"id": "bps_1", "object": "billing_portal.session",
            "url": "https://billing.stripe.com/p/session/test_1"})),
        Reply::ok(json!({"id": "Zx81kQpa", "object": "coupon", "percent_off": 20.0})),
    ])
    .await;
    let stripe = stripe_at(&double.base);
    let url = stripe
        .create_portal(&PortalRequest {
            customer_id: "cus_1".into(),
            return_url: Some("https://app.example/account".into()),
        })
        .await
        .unwrap();
    assert_eq!(url, "https://billing.stripe.com/p/session/test_1");
    let coupon = stripe
        .create_coupon(&CouponRequest {
            app: "demo".into(),
            code: "LAUNCH20".into(),
            percent_off: Some(20),
            amount_off: None,
            currency: None,
            duration: tally_checkout::CouponDuration::Repeating,
            duration_months: Some(3),
            price_ref: "price_1Pro".into(),
            idempotency_key: "coupon:demo:LAUNCH20".into(),
        })
        .await
        .unwrap();
    assert_eq!(coupon, "Zx81kQpa");

    let requests = double.requests();
    assert_eq!(requests[0].path, "/v1/billing_portal/sessions");
    assert_eq!(
        requests[0].form(),
        pairs(&[
            ("customer", "cus_1"),
            ("return_url", "https://app.example/account")
        ])
    );
    assert!(
        requests[0].header("idempotency-key").is_some(),
        "retries must be safe"
    );
    assert_eq!(requests[1].path, "/v1/coupons");
    assert_eq!(
        requests[1].header("idempotency-key"),
        Some("coupon:demo:LAUNCH20")
    );
    assert_eq!(
        requests[1].form(),
        pairs(&[
            ("percent_off", "20"),
            ("duration", "repeating"),
            ("duration_in_months", "3"),
            ("name", "LAUNCH20"),
            ("metadata[app]", "demo"),
            ("metadata[code]", "LAUNCH20"),
        ])
    );
}

#[tokio::test]
async fn stripe_amount_coupon_sends_the_currency() {
    let double = Double::start(vec![Reply::ok(json!({"id": "c_amt"}))]).await;
    stripe_at(&double.base)
        .create_coupon(&CouponRequest {
            app: "demo".into(),
            code: "FIVE".into(),
            percent_off: None,
            amount_off: Some(500),
            currency: Some("USD".into()),
            duration: tally_checkout::CouponDuration::Once,
            duration_months: None,
            price_ref: "price_1".into(),
            idempotency_key: "k".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        double.requests()[0].form(),
        pairs(&[
            ("amount_off", "500"),
            ("currency", "usd"),
            ("duration", "once"),
            ("name", "FIVE"),
            ("metadata[app]", "demo"),
            ("metadata[code]", "FIVE"),
        ])
    );
}

#[tokio::test]
async fn stripe_client_error_is_upstream_with_stripes_message_and_not_retried() {
    let double = Double::start(vec![Reply::status(
        400,
        json!({"error": {"code": "resource_missing", "message": "No such price: 'price_1Pro'",
            "param": "line_items[0][price]", "type": "invalid_request_error"}}),
    )])
    .await;
    let err = stripe_at(&double.base)
        .create_checkout(&checkout(CheckoutMode::Subscription))
        .await
        .unwrap_err();
    let ProviderError::Upstream(message) = err else {
        panic!("expected Upstream, got {err:?}");
    };
    assert!(message.contains("No such price: 'price_1Pro'"), "{message}");
    assert!(!message.contains(STRIPE_KEY), "{message}");
    assert_eq!(double.requests().len(), 1);
}

#[tokio::test]
async fn stripe_server_error_is_retried_with_the_same_idempotency_key() {
    let double = Double::start(vec![
        Reply::status(
            500,
            json!({"error": {"message": "An unknown error occurred", "type": "api_error"}}),
        ),
        stripe_session_answer(),
    ])
    .await;
    let session = stripe_at(&double.base)
        .create_checkout(&checkout(CheckoutMode::Subscription))
        .await
        .unwrap();
    assert_eq!(session.session_id, "cs_test_a1");
    let requests = double.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].header("idempotency-key"),
        requests[1].header("idempotency-key")
    );
    assert_eq!(requests[0].body, requests[1].body);
}

#[tokio::test]
async fn stripe_should_retry_header_overrides_the_status() {
    let never = Double::start(vec![Reply::Json(
        503,
        vec![("stripe-should-retry", "false")],
        json!({"error": {"message": "do not retry"}}).to_string(),
    )])
    .await;
    let err = stripe_at(&never.base)
        .create_checkout(&checkout(CheckoutMode::Payment))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("do not retry"), "{err}");
    assert_eq!(never.requests().len(), 1);

    let again = Double::start(vec![
        Reply::Json(
            400,
            vec![("stripe-should-retry", "true")],
            json!({"error": {"message": "lock timeout"}}).to_string(),
        ),
        stripe_session_answer(),
    ])
    .await;
    stripe_at(&again.base)
        .create_checkout(&checkout(CheckoutMode::Payment))
        .await
        .unwrap();
    assert_eq!(again.requests().len(), 2);
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_bounded_attempts() {
    let double = Double::start(vec![Reply::status(
        429,
        json!({"error": {"message": "Too many requests"}}),
    )])
    .await;
    let err = stripe_at(&double.base)
        .create_checkout(&checkout(CheckoutMode::Payment))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Upstream(m) if m.contains("Too many requests")),
        "{err:?}"
    );
    assert_eq!(double.requests().len(), 3);
}

#[tokio::test]
async fn a_silent_upstream_times_out_after_bounded_attempts() {
    let double = Double::start(vec![Reply::Hang]).await;
    let stripe = StripeProvider::new(
        StripeConfig {
            secret_key: Some(STRIPE_KEY.into()),
            api_base: double.base.clone(),
            ..StripeConfig::default()
        },
        fast_client(Duration::from_millis(300)),
    );
    let started = Instant::now();
    let err = stripe
        .create_checkout(&checkout(CheckoutMode::Payment))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(&err, ProviderError::Upstream(m) if m.contains("timed out")),
        "{err:?}"
    );
    assert_eq!(double.requests().len(), 3);
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn an_unreachable_upstream_is_upstream_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = stripe_at(&format!("http://127.0.0.1:{port}"))
        .create_checkout(&checkout(CheckoutMode::Payment))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Upstream(m) if m.contains("could not connect")),
        "{err:?}"
    );
}

#[tokio::test]
async fn stripe_without_a_key_is_not_configured() {
    let stripe = StripeProvider::new(StripeConfig::default(), fast_client(Duration::from_secs(1)));
    let err = stripe
        .create_checkout(&checkout(CheckoutMode::Payment))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotConfigured(Channel::Stripe)));
    let debug = format!(
        "{:?}",
        StripeConfig {
            secret_key: Some(STRIPE_KEY.into()),
            ..StripeConfig::default()
        }
    );
    assert!(!debug.contains(STRIPE_KEY), "{debug}");
}

#[tokio::test]
async fn creem_checkout_sends_the_exact_json() {
    let double = Double::start(vec![Reply::ok(json!({
        "id": "ch_1ABC", "object": "checkout", "mode": "test", "status": "pending",
        "product": "price_1Pro", "request_id": "ord_0123456789abcdef01234567",
        "checkout_url": "https://creem.io/test/checkout/prod_1/ch_1ABC"
    }))])
    .await;
    let mut request = checkout(CheckoutMode::Subscription);
    request.customer_id = Some("cust_9".into());
    let session = creem_at(&double.base)
        .create_checkout(&request)
        .await
        .unwrap();
    assert_eq!(
        session,
        CheckoutSession {
            session_id: "ch_1ABC".into(),
            url: "https://creem.io/test/checkout/prod_1/ch_1ABC".into(),
        }
    );
    let r = &double.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/checkouts")
    );
    assert_eq!(r.header("x-api-key"), Some(CREEM_KEY));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("authorization"), None);
    assert_eq!(
        r.header("idempotency-key"),
        None,
        "Creem has no idempotency header"
    );
    assert_eq!(
        r.json(),
        json!({
            "product_id": "price_1Pro",
            "request_id": "ord_0123456789abcdef01234567",
            "units": 1,
            "success_url": "https://app.example/ok?session_id={CHECKOUT_SESSION_ID}",
            "metadata": {
                "order_id": "ord_0123456789abcdef01234567",
                "app": "demo",
                "user_id": "u_42",
                "credits": "1000"
            },
            "discount_code": "tally_demo_LAUNCH20",
            "customer": {"id": "cust_9"}
        })
    );
}

#[tokio::test]
async fn creem_portal_and_discount() {
    let double = Double::start(vec![
        Reply::ok(json!({"customer_portal_link": "https://creem.io/my-orders/login/xyz"})),
        Reply::ok(json!({"id": "dis_1", "code": "LAUNCH20", "status": "active"})),
        Reply::ok(json!({"id": "dis_2", "status": "active"})),
    ])
    .await;
    let creem = creem_at(&double.base);
    let url = creem
        .create_portal(&PortalRequest {
            customer_id: "cust_9".into(),
            return_url: None,
        })
        .await
        .unwrap();
    assert_eq!(url, "https://creem.io/my-orders/login/xyz");
    let mut coupon = CouponRequest {
        app: "demo".into(),
        code: "LAUNCH20".into(),
        percent_off: Some(20),
        amount_off: None,
        currency: None,
        duration: tally_checkout::CouponDuration::Repeating,
        duration_months: Some(3),
        price_ref: "prod_Pro".into(),
        idempotency_key: "ignored".into(),
    };
    assert_eq!(creem.create_coupon(&coupon).await.unwrap(), "LAUNCH20");
    coupon.code = "FIVE".into();
    coupon.percent_off = None;
    coupon.amount_off = Some(500);
    coupon.currency = Some("eur".into());
    coupon.duration = tally_checkout::CouponDuration::Once;
    assert_eq!(
        creem.create_coupon(&coupon).await.unwrap(),
        "FIVE",
        "falls back to ours"
    );

    let requests = double.requests();
    assert_eq!(requests[0].path, "/v1/customers/billing");
    assert_eq!(requests[0].json(), json!({"customer_id": "cust_9"}));
    assert_eq!(requests[1].path, "/v1/discounts");
    assert_eq!(
        requests[1].json(),
        json!({"name": "LAUNCH20", "code": "LAUNCH20", "type": "percentage", "percentage": 20,
            "duration": "repeating", "duration_in_months": 3, "applies_to_products": ["prod_Pro"]})
    );
    assert_eq!(
        requests[2].json(),
        json!({"name": "FIVE", "code": "FIVE", "type": "fixed", "amount": 500, "currency": "EUR",
            "duration": "once", "applies_to_products": ["prod_Pro"]})
    );
}

#[tokio::test]
async fn creem_error_answer_is_upstream_with_its_message() {
    let double = Double::start(vec![Reply::status(
        400,
        json!({"trace_id": "t-1", "status": 400, "error": "Bad Request",
            "message": ["product_id must be a string", "units must be positive"],
            "timestamp": 1_728_734_325_927_i64}),
    )])
    .await;
    let err = creem_at(&double.base)
        .create_checkout(&checkout(CheckoutMode::Payment))
        .await
        .unwrap_err();
    let ProviderError::Upstream(message) = err else {
        panic!("expected Upstream, got {err:?}");
    };
    assert!(
        message.contains("product_id must be a string; units must be positive"),
        "{message}"
    );
    assert_eq!(double.requests().len(), 1);
}

#[test]
fn creem_host_follows_the_key() {
    assert_eq!(creem_api_base(Some("creem_test_abc")), CREEM_TEST_API_BASE);
    assert_eq!(creem_api_base(Some("creem_abc")), CREEM_API_BASE);
    assert_eq!(creem_api_base(None), CREEM_API_BASE);
    assert_eq!(
        CreemConfig::new(Some("creem_test_x".into()), None).api_base,
        CREEM_TEST_API_BASE
    );
    let debug = format!(
        "{:?}",
        CreemConfig::new(Some(CREEM_KEY.into()), Some("s3cret".into()))
    );
    assert!(
        !debug.contains(CREEM_KEY) && !debug.contains("s3cret"),
        "{debug}"
    );
}

fn subscription_request(change: SubscriptionChange) -> SubscriptionRequest {
    SubscriptionRequest {
        subscription_id: "sub_1Pro".into(),
        change,
        idempotency_key: format!("tally-sub_1Pro-{change}"),
    }
}

#[tokio::test]
async fn stripe_cancel_resume_and_end_now_send_the_exact_requests() {
    let answer = || Reply::ok(json!({"id": "sub_1Pro", "object": "subscription"}));
    let double = Double::start(vec![answer(), answer(), answer()]).await;
    let stripe = stripe_at(&double.base);
    for change in [
        SubscriptionChange::CancelAtPeriodEnd,
        SubscriptionChange::Resume,
        SubscriptionChange::CancelNow,
    ] {
        stripe
            .change_subscription(&subscription_request(change))
            .await
            .unwrap();
    }
    let requests = double.requests();
    assert_eq!(requests.len(), 3);
    let sent: Vec<_> = requests
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.form(),
                r.header("idempotency-key"),
            )
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            (
                "POST",
                "/v1/subscriptions/sub_1Pro",
                pairs(&[("cancel_at_period_end", "true")]),
                Some("tally-sub_1Pro-cancel_at_period_end"),
            ),
            (
                "POST",
                "/v1/subscriptions/sub_1Pro",
                pairs(&[("cancel_at_period_end", "false")]),
                Some("tally-sub_1Pro-resume"),
            ),
            // Stripe takes idempotency keys on POST only; a DELETE is idempotent by itself.
            ("DELETE", "/v1/subscriptions/sub_1Pro", vec![], None),
        ]
    );
    for r in &requests {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {STRIPE_KEY}").as_str())
        );
        assert_eq!(r.header("stripe-version"), Some(STRIPE_API_VERSION));
    }
}

#[tokio::test]
async fn creem_cancel_resume_and_end_now_send_the_exact_requests() {
    let answer = || Reply::ok(json!({"id": "sub_1Pro", "object": "subscription"}));
    let double = Double::start(vec![answer(), answer(), answer()]).await;
    let creem = creem_at(&double.base);
    for change in [
        SubscriptionChange::CancelAtPeriodEnd,
        SubscriptionChange::CancelNow,
        SubscriptionChange::Resume,
    ] {
        creem
            .change_subscription(&subscription_request(change))
            .await
            .unwrap();
    }
    let sent: Vec<_> = double
        .requests()
        .iter()
        .map(|r| {
            assert_eq!(r.header("x-api-key"), Some(CREEM_KEY));
            (r.method.clone(), r.path.clone(), r.json())
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            (
                "POST".to_owned(),
                "/v1/subscriptions/sub_1Pro/cancel".to_owned(),
                json!({"mode": "scheduled"})
            ),
            (
                "POST".to_owned(),
                "/v1/subscriptions/sub_1Pro/cancel".to_owned(),
                json!({"mode": "immediate"})
            ),
            (
                "POST".to_owned(),
                "/v1/subscriptions/sub_1Pro/resume".to_owned(),
                json!({})
            ),
        ]
    );
}

#[tokio::test]
async fn a_refused_subscription_change_is_an_upstream_error() {
    let double = Double::start(vec![
        Reply::status(
            400,
            json!({"error": {"type": "invalid_request_error",
                "message": "No such subscription: 'sub_1Pro'"}}),
        ),
        Reply::status(
            404,
            json!({"trace_id": "t", "status": 404, "error": "Not Found",
                "message": ["Subscription not found"]}),
        ),
    ])
    .await;
    let stripe_error = stripe_at(&double.base)
        .change_subscription(&subscription_request(SubscriptionChange::CancelAtPeriodEnd))
        .await
        .unwrap_err();
    assert!(
        matches!(&stripe_error, ProviderError::Upstream(m) if m.contains("No such subscription")),
        "{stripe_error:?}"
    );
    let creem_error = creem_at(&double.base)
        .change_subscription(&subscription_request(SubscriptionChange::Resume))
        .await
        .unwrap_err();
    assert!(
        matches!(&creem_error, ProviderError::Upstream(m) if m.contains("Subscription not found")),
        "{creem_error:?}"
    );
}

fn refund_request(refs: &[&str], amount_minor: i64, full: bool) -> RefundRequest {
    RefundRequest {
        order_id: "ord_1".into(),
        app: "default".into(),
        payment_refs: refs.iter().map(|r| (*r).to_owned()).collect(),
        amount_minor,
        full,
        reason: Some("asked & answered".into()),
        idempotency_key: "tally-refund-ord_1".into(),
    }
}

#[tokio::test]
async fn stripe_refunds_name_the_payment_intent_else_the_charge() {
    let refund = json!({"id": "re_1", "object": "refund", "status": "succeeded"});
    let double = Double::start(vec![Reply::ok(refund.clone()), Reply::ok(refund)]).await;
    let stripe = stripe_at(&double.base);
    // A part of a payment known by its invoice, PaymentIntent and charge.
    stripe
        .refund(&refund_request(&["in_1", "ch_1", "pi_1"], 250, false))
        .await
        .unwrap();
    // All that is left of a payment known by its charge only: no amount.
    stripe
        .refund(&refund_request(&["in_2", "ch_2"], 999, true))
        .await
        .unwrap();
    let requests = double.requests();
    let sent: Vec<_> = requests
        .iter()
        .map(|r| {
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {STRIPE_KEY}").as_str())
            );
            (
                r.method.as_str(),
                r.path.as_str(),
                r.form(),
                r.header("idempotency-key"),
            )
        })
        .collect();
    let metadata = [
        ("metadata[order_id]", "ord_1"),
        ("metadata[app]", "default"),
        ("metadata[reason]", "asked & answered"),
    ];
    let with = |first: &[(&'static str, &'static str)]| {
        let mut all = first.to_vec();
        all.extend(metadata);
        pairs(&all)
    };
    assert_eq!(
        sent,
        vec![
            (
                "POST",
                "/v1/refunds",
                with(&[("payment_intent", "pi_1"), ("amount", "250")]),
                Some("tally-refund-ord_1"),
            ),
            (
                "POST",
                "/v1/refunds",
                with(&[("charge", "ch_2")]),
                Some("tally-refund-ord_1"),
            ),
        ]
    );
}

#[tokio::test]
async fn creem_refunds_name_the_transaction() {
    let double = Double::start(vec![Reply::ok(
        json!({"id": "ref_1", "object": "refund", "status": "pending"}),
    )])
    .await;
    creem_at(&double.base)
        .refund(&refund_request(&["ord_creem_1", "tran_1"], 999, true))
        .await
        .unwrap();
    let requests = double.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/v1/refunds");
    assert_eq!(requests[0].header("x-api-key"), Some(CREEM_KEY));
    assert_eq!(requests[0].json(), json!({"transaction_id": "tran_1"}));
}

#[tokio::test]
async fn a_refund_without_a_refundable_id_asks_nobody() {
    let double = Double::start(vec![]).await;
    let stripe = stripe_at(&double.base)
        .refund(&refund_request(&["in_1"], 999, true))
        .await
        .unwrap_err();
    assert!(
        matches!(&stripe, ProviderError::Unsupported(m) if m.contains("in_1")),
        "{stripe:?}"
    );
    let creem = creem_at(&double.base)
        .refund(&refund_request(&["ord_creem_1"], 999, true))
        .await
        .unwrap_err();
    assert!(
        matches!(&creem, ProviderError::Unsupported(m) if m.contains("ord_creem_1")),
        "{creem:?}"
    );
    assert!(double.requests().is_empty());
}

#[tokio::test]
async fn a_refund_to_a_silent_or_refusing_provider_is_an_upstream_error() {
    let double = Double::start(vec![
        Reply::Hang,
        Reply::Hang,
        Reply::Hang,
        Reply::status(
            400,
            json!({"trace_id": "t", "status": 400, "error": "Bad Request",
                "message": ["Transaction is already refunded"]}),
        ),
    ])
    .await;
    let stripe = StripeProvider::new(
        StripeConfig {
            secret_key: Some(STRIPE_KEY.into()),
            api_base: double.base.clone(),
            ..StripeConfig::default()
        },
        fast_client(Duration::from_millis(300)),
    );
    let err = stripe
        .refund(&refund_request(&["pi_1"], 10, false))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Upstream(m) if m.contains("timed out")),
        "{err:?}"
    );
    let requests = double.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .iter()
            .all(|r| r.header("idempotency-key") == Some("tally-refund-ord_1")),
        "retries keep the key"
    );
    let err = creem_at(&double.base)
        .refund(&refund_request(&["tran_1"], 10, true))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Upstream(m) if m.contains("already refunded")),
        "{err:?}"
    );
}

fn plan_change_request(prorate: bool) -> PlanChangeRequest {
    PlanChangeRequest {
        subscription_id: "sub_1Pro".into(),
        price_ref: "price_max_m".into(),
        prorate,
        idempotency_key: "tally-sub_1Pro-plan-5".into(),
    }
}

#[tokio::test]
async fn stripe_plan_change_moves_the_item_with_or_without_proration() {
    let subscription = json!({"id": "sub_1Pro", "object": "subscription",
        "items": {"object": "list", "data": [{"id": "si_1", "object": "subscription_item"}]}});
    let double = Double::start(vec![
        Reply::ok(subscription.clone()),
        Reply::ok(subscription.clone()),
        Reply::ok(subscription.clone()),
        Reply::ok(subscription),
        // A subscription without items cannot be moved.
        Reply::ok(json!({"id": "sub_1Pro", "object": "subscription"})),
    ])
    .await;
    let stripe = stripe_at(&double.base);
    stripe
        .change_plan(&plan_change_request(true))
        .await
        .unwrap();
    stripe
        .change_plan(&plan_change_request(false))
        .await
        .unwrap();
    let err = stripe
        .change_plan(&plan_change_request(true))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Upstream(m) if m.contains("without an item")),
        "{err:?}"
    );
    let requests = double.requests();
    let sent: Vec<_> = requests
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.form(),
                r.header("idempotency-key"),
            )
        })
        .collect();
    let moved = |behavior| {
        pairs(&[
            ("items[0][id]", "si_1"),
            ("items[0][price]", "price_max_m"),
            ("proration_behavior", behavior),
        ])
    };
    assert_eq!(
        sent,
        vec![
            ("GET", "/v1/subscriptions/sub_1Pro", vec![], None),
            (
                "POST",
                "/v1/subscriptions/sub_1Pro",
                moved("always_invoice"),
                Some("tally-sub_1Pro-plan-5")
            ),
            ("GET", "/v1/subscriptions/sub_1Pro", vec![], None),
            (
                "POST",
                "/v1/subscriptions/sub_1Pro",
                moved("none"),
                Some("tally-sub_1Pro-plan-5")
            ),
            ("GET", "/v1/subscriptions/sub_1Pro", vec![], None),
        ]
    );
}

#[tokio::test]
async fn creem_plan_change_asks_for_the_new_product() {
    let double = Double::start(vec![
        Reply::ok(json!({"id": "sub_1Pro", "object": "subscription"})),
        Reply::ok(json!({"id": "sub_1Pro", "object": "subscription"})),
    ])
    .await;
    let creem = creem_at(&double.base);
    creem.change_plan(&plan_change_request(true)).await.unwrap();
    creem
        .change_plan(&plan_change_request(false))
        .await
        .unwrap();
    let sent: Vec<_> = double
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.json()))
        .collect();
    let upgrade = |behavior| json!({"product_id": "price_max_m", "update_behavior": behavior});
    assert_eq!(
        sent,
        vec![
            (
                "POST".to_owned(),
                "/v1/subscriptions/sub_1Pro/upgrade".to_owned(),
                upgrade("proration-charge-immediately")
            ),
            (
                "POST".to_owned(),
                "/v1/subscriptions/sub_1Pro/upgrade".to_owned(),
                upgrade("proration-none")
            ),
        ]
    );
}
