//! Pricing and usage over `tally_store::Store`: features, rate versions, allowances and their
//! windows, carried fractions, refusals that change nothing, replays and concurrent calls.
//!
//! Each case runs on both backends through `tally_testkit::backend_tests!` (`<case>::postgres`
//! passes with a notice when `TALLY_TEST_POSTGRES_URL` is unset); after every case
//! `Ledger::verify` (the ledger's and the usage invariants) must find nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use common::{Backend, TestDb};
use serde_json::json;
use tally_ledger::pricing::{Dimensions, FeatureKind, FeatureSpec, PRICE_SCALE, RateSpec, Tier};
use tally_ledger::usage::{Entitlement, FREE_SCOPE, Overage, Reset, UsageOutcome, UsageRequest};
use tally_ledger::{
    AccountRef, CheckinConfig, Ledger, LedgerError, ManualClock, Movement, MovementKind,
    TransactionQuery, TxnType,
};
use time::Duration;
use tokio::task::JoinSet;

struct Ctx {
    ledger: Ledger,
    clock: Arc<ManualClock>,
    /// The database's URL, for a second server on it.
    url: String,
}

async fn run<F, Fut>(backend: Backend, name: &str, case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (ledger, clock) = db.ledger().await;
    case(Ctx {
        ledger: ledger.clone(),
        clock,
        url: db.url.clone(),
    })
    .await;
    let violations = ledger.verify().await.unwrap();
    assert!(
        violations.is_empty(),
        "{name} on {}: {violations:#?}",
        backend.label()
    );
}

tally_testkit::backend_tests!(run = run;
    prices_are_exact_and_fractions_carried,
    a_new_rate_version_prices_only_later_calls,
    allowances_reset_at_their_local_boundaries,
    block_and_credit_overage,
    refusals_change_nothing,
    replays_charge_once,
    concurrent_calls_never_exceed_allowance_plus_balance,
    features_and_rates_are_admin_checked,
    holds_price_quantities_at_the_rates_of_their_start,
    holds_set_aside_allowances,
    another_servers_pricing_changes_apply_at_once,
);

const APP: &str = "default";

fn alice() -> AccountRef {
    AccountRef::new(APP, "alice").unwrap()
}

async fn grant(l: &Ledger, a: &AccountRef, credits: i64) {
    l.apply(Movement {
        account: a.clone(),
        kind: MovementKind::Grant {
            txn_type: TxnType::Purchase,
            credits,
            expires_at: None,
        },
        description: "top-up".into(),
        idempotency_key: None,
        metadata: None,
        actor: None,
    })
    .await
    .unwrap();
}

async fn feature(l: &Ledger, key: &str, kind: FeatureKind) {
    let unit = (kind == FeatureKind::Metered).then(|| "units".to_owned());
    l.put_feature(
        APP,
        FeatureSpec {
            key: key.into(),
            name: key.into(),
            kind,
            unit,
        },
        true,
    )
    .await
    .unwrap();
}

fn dims(pairs: &[(&str, &str)]) -> Dimensions {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn rate(l: &Ledger, feature: &str, d: Dimensions, credits: i64, per: i64) {
    l.add_rate(
        APP,
        RateSpec {
            feature: feature.into(),
            dimensions: d,
            credits,
            per,
            tiers: vec![],
            effective_from: None,
        },
        "admin",
    )
    .await
    .unwrap();
}

/// The chat example of the docs: two models priced per token, messages with an allowance.
async fn chat(l: &Ledger) {
    feature(l, "input_tokens", FeatureKind::Metered).await;
    feature(l, "messages", FeatureKind::Metered).await;
    feature(l, "premium_models", FeatureKind::Boolean).await;
    rate(l, "input_tokens", dims(&[]), 1, 1_000).await;
    rate(l, "input_tokens", dims(&[("model", "gpt-4o")]), 25, 10_000).await;
    rate(l, "messages", dims(&[]), 2, 1).await;
}

fn call(key: &str, quantities: &[(&str, i64)], d: Dimensions) -> UsageRequest {
    UsageRequest {
        account: alice(),
        quantities: quantities
            .iter()
            .map(|(k, q)| ((*k).to_owned(), *q))
            .collect(),
        features: vec![],
        dimensions: d,
        description: "chat completion".into(),
        metadata: Some(json!({"request": key})),
        idempotency_key: Some(key.into()),
    }
}

fn ai_usage(limit: i64) -> TransactionQuery {
    TransactionQuery {
        app: APP.into(),
        user: Some("alice".into()),
        txn_type: Some(TxnType::AiUsage),
        from: None,
        to: None,
        limit,
        offset: 0,
        before: None,
    }
}

async fn balance(l: &Ledger) -> i64 {
    l.balance(alice()).await.unwrap().balance
}

async fn free_tier(l: &Ledger, list: Vec<Entitlement>) {
    l.set_entitlements(APP, FREE_SCOPE.into(), list)
        .await
        .unwrap();
}

fn messages(included: i64, reset: Reset, overage: Overage) -> Entitlement {
    Entitlement {
        feature: "messages".into(),
        included: Some(included),
        reset,
        overage,
    }
}

/// Moves the app's day (and its day and month windows) to Tokyo's time zone.
async fn tokyo(l: &Ledger) {
    l.set_checkin_config(
        APP,
        CheckinConfig {
            timezone: "Asia/Tokyo".into(),
            ..CheckinConfig::default()
        },
        "admin",
    )
    .await
    .unwrap();
}

async fn used(l: &Ledger, feature: &str) -> i64 {
    let status = l.feature_status(alice()).await.unwrap();
    status
        .iter()
        .find(|s| s.feature.key == feature)
        .unwrap()
        .used
}

async fn prices_are_exact_and_fractions_carried(c: Ctx) {
    let l = &c.ledger;
    chat(l).await;
    grant(l, &alice(), 1_000).await;
    let gpt = dims(&[("model", "gpt-4o")]);
    // 1,000 tokens at 25 per 10,000 = 2.5 credits: 2 charged, 0.5 carried; then 3.
    let first = l
        .track(call("c1", &[("input_tokens", 1_000)], gpt.clone()))
        .await
        .unwrap();
    assert_eq!(first.credits, 2);
    let second = l
        .track(call("c2", &[("input_tokens", 1_000)], gpt.clone()))
        .await
        .unwrap();
    assert_eq!(second.credits, 3);
    // Another model falls back to the default rate: 1 per 1,000 → 0.3, nothing yet.
    let other = l
        .track(call(
            "c3",
            &[("input_tokens", 300)],
            dims(&[("model", "mini")]),
        ))
        .await
        .unwrap();
    assert_eq!((other.credits, other.transaction_id), (0, None));
    assert_eq!(balance(l).await, 995);
    // The history shows the rate each line used.
    let history = l.transactions(ai_usage(10)).await.unwrap().0;
    assert_eq!(history.len(), 2);
    let meta = history[0].metadata.clone().unwrap();
    assert_eq!(meta["usage"]["input_tokens"]["rate"]["credits"], 25);
    assert_eq!(meta["usage"]["input_tokens"]["rate"]["per"], 10_000);
    assert_eq!(meta["usage"]["input_tokens"]["credits"], 3);
    assert_eq!(meta["dimensions"]["model"], "gpt-4o");
    assert_eq!(meta["metadata"]["request"], "c2");
    // Volume tiers price the whole call by its size.
    l.add_rate(
        APP,
        RateSpec {
            feature: "input_tokens".into(),
            dimensions: dims(&[("model", "tiered")]),
            credits: 1,
            per: 1,
            tiers: vec![Tier {
                up_to: 10,
                credits: 3,
                per: 1,
            }],
            effective_from: None,
        },
        "admin",
    )
    .await
    .unwrap();
    let tiered = dims(&[("model", "tiered")]);
    let small = l
        .track(call("t1", &[("input_tokens", 10)], tiered.clone()))
        .await
        .unwrap();
    // 30 credits, plus the 0.3 carried from the default-rate call.
    assert_eq!(small.credits, 30);
    let large = l
        .track(call("t2", &[("input_tokens", 11)], tiered))
        .await
        .unwrap();
    assert_eq!(large.credits, 11);
}

async fn a_new_rate_version_prices_only_later_calls(c: Ctx) {
    let l = &c.ledger;
    chat(l).await;
    grant(l, &alice(), 1_000).await;
    let before = l
        .track(call("v1", &[("messages", 3)], dims(&[])))
        .await
        .unwrap();
    assert_eq!(before.credits, 6);
    let v1 = before.lines[0].rate.unwrap();
    rate(l, "messages", dims(&[]), 5, 1).await;
    let after = l
        .track(call("v2", &[("messages", 3)], dims(&[])))
        .await
        .unwrap();
    assert_eq!(after.credits, 15);
    let v2 = after.lines[0].rate.unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    // The first call's record is unchanged, and a replay of it still answers 6.
    let replay = l
        .track(call("v1", &[("messages", 3)], dims(&[])))
        .await
        .unwrap();
    assert_eq!(replay, before);
    // A version that takes effect later does not price calls before then.
    l.add_rate(
        APP,
        RateSpec {
            feature: "messages".into(),
            dimensions: dims(&[]),
            credits: 100,
            per: 1,
            tiers: vec![],
            effective_from: Some(l.now() + Duration::hours(1)),
        },
        "admin",
    )
    .await
    .unwrap();
    let now = l
        .track(call("v3", &[("messages", 1)], dims(&[])))
        .await
        .unwrap();
    assert_eq!(now.credits, 5);
    c.clock.advance(Duration::hours(2));
    let later = l
        .track(call("v4", &[("messages", 1)], dims(&[])))
        .await
        .unwrap();
    assert_eq!(later.credits, 100);
    let versions = l.rates(APP, Some("messages".into())).await.unwrap();
    assert_eq!(
        versions.iter().map(|r| r.version).collect::<Vec<_>>(),
        [3, 2, 1]
    );
}

async fn allowances_reset_at_their_local_boundaries(c: Ctx) {
    let l = &c.ledger;
    chat(l).await;
    feature(l, "images", FeatureKind::Metered).await;
    free_tier(
        l,
        vec![
            messages(2, Reset::Day, Overage::Block),
            Entitlement {
                feature: "images".into(),
                included: Some(3),
                reset: Reset::Month,
                overage: Overage::Block,
            },
        ],
    )
    .await;
    // The app's day is Tokyo's (UTC+9): it starts at 15:00 UTC.
    tokyo(l).await;
    // The clock starts 2026-06-01 12:00 UTC = 21:00 in Tokyo; that day ends at 15:00 UTC.
    let n = |key: &str, feature: &str| call(key, &[(feature, 1)], dims(&[]));
    l.track(n("d1", "messages")).await.unwrap();
    l.track(n("d2", "messages")).await.unwrap();
    let refused = l.track(n("d3", "messages")).await;
    assert!(
        matches!(&refused, Err(LedgerError::EntitlementExceeded { feature }) if feature == "messages"),
        "{refused:?}"
    );
    c.clock.advance(Duration::hours(3) - Duration::SECOND); // 14:59:59 UTC
    assert!(l.track(n("d4", "messages")).await.is_err());
    c.clock.advance(Duration::SECOND); // 15:00 UTC: a new local day
    l.track(n("d5", "messages")).await.unwrap();
    assert_eq!(used(l, "messages").await, 1);
    // Images: three a calendar month (Tokyo's), so June 30 15:00 UTC starts July.
    for i in 0..3 {
        l.track(n(&format!("i{i}"), "images")).await.unwrap();
    }
    assert!(l.track(n("i3", "images")).await.is_err());
    let june_end = time::macros::datetime!(2026-06-30 15:00 UTC);
    c.clock.set(june_end - Duration::SECOND);
    assert!(l.track(n("i4", "images")).await.is_err());
    c.clock.set(june_end);
    l.track(n("i5", "images")).await.unwrap();
    let status = l.feature_status(alice()).await.unwrap();
    let images = status.iter().find(|s| s.feature.key == "images").unwrap();
    assert_eq!((images.used, images.remaining()), (1, Some(2)));
    assert_eq!(
        images.window.unwrap().end,
        Some(time::macros::datetime!(2026-07-31 15:00 UTC))
    );
    // Nothing was charged: every use was inside an allowance.
    assert_eq!(balance(l).await, 0);
}

async fn block_and_credit_overage(c: Ctx) {
    let l = &c.ledger;
    chat(l).await;
    free_tier(l, vec![messages(3, Reset::Month, Overage::Credits)]).await;
    grant(l, &alice(), 10).await;
    let out = l
        .track(call("o1", &[("messages", 5)], dims(&[])))
        .await
        .unwrap();
    // 3 included, 2 at 2 credits.
    assert_eq!(
        (
            out.lines[0].included_used,
            out.lines[0].credits,
            out.credits
        ),
        (3, 4, 4)
    );
    assert_eq!(balance(l).await, 6);
    free_tier(l, vec![messages(3, Reset::Month, Overage::Block)]).await;
    assert!(matches!(
        l.track(call("o2", &[("messages", 1)], dims(&[]))).await,
        Err(LedgerError::EntitlementExceeded { .. })
    ));
    // A bigger allowance mid-window counts what was used already.
    free_tier(l, vec![messages(5, Reset::Month, Overage::Block)]).await;
    let out = l
        .track(call("o3", &[("messages", 2)], dims(&[])))
        .await
        .unwrap();
    assert_eq!((out.lines[0].included_used, out.credits), (2, 0));
    assert_eq!(used(l, "messages").await, 5);
}

async fn refusals_change_nothing(c: Ctx) {
    let l = &c.ledger;
    chat(l).await;
    free_tier(l, vec![messages(1, Reset::Month, Overage::Credits)]).await;
    grant(l, &alice(), 3).await;
    let snapshot = |l: &Ledger| {
        let l = l.clone();
        async move {
            (
                l.balance(alice()).await.unwrap().balance,
                used_of(&l).await,
                l.verify().await.unwrap().len(),
            )
        }
    };
    async fn used_of(l: &Ledger) -> i64 {
        used(l, "messages").await
    }
    let before = snapshot(l).await;
    // Unknown feature, boolean given a quantity, no rate for the dimensions, negative quantity.
    let bad: Vec<(UsageRequest, &str)> = vec![
        (
            call("b1", &[("messages", 1), ("images", 1)], dims(&[])),
            "quantities.images",
        ),
        (
            call("b2", &[("messages", 1), ("premium_models", 1)], dims(&[])),
            "quantities.premium_models",
        ),
        (
            call("b3", &[("messages", -1)], dims(&[])),
            "quantities.messages",
        ),
    ];
    for (request, field) in bad {
        match l.track(request).await {
            Err(LedgerError::Validation(f)) => assert_eq!(f[0].field, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // Messages within the allowance, tokens with no rate at all for the dimensions: refused whole.
    l.put_feature(
        APP,
        FeatureSpec {
            key: "output_tokens".into(),
            name: "Output tokens".into(),
            kind: FeatureKind::Metered,
            unit: Some("tokens".into()),
        },
        true,
    )
    .await
    .unwrap();
    assert!(matches!(
        l.track(call("b4", &[("messages", 1), ("output_tokens", 5)], dims(&[]))).await,
        Err(LedgerError::RateNotFound { feature }) if feature == "output_tokens"
    ));
    // More than the balance: 1 included + 2 at 2 credits = 4 > 3.
    assert!(matches!(
        l.track(call("b5", &[("messages", 3)], dims(&[]))).await,
        Err(LedgerError::InsufficientCredits { .. })
    ));
    assert_eq!(snapshot(l).await, before);
    // The refused keys are free: the same key with an affordable call goes through.
    let ok = l
        .track(call("b5", &[("messages", 2)], dims(&[])))
        .await
        .unwrap();
    assert_eq!(ok.credits, 2);
}

async fn replays_charge_once(c: Ctx) {
    let l = &c.ledger;
    chat(l).await;
    grant(l, &alice(), 100).await;
    let first = l
        .track(call("r1", &[("messages", 4)], dims(&[])))
        .await
        .unwrap();
    let again = l
        .track(call("r1", &[("messages", 4)], dims(&[])))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(balance(l).await, 92);
    assert!(matches!(
        l.track(call("r1", &[("messages", 5)], dims(&[]))).await,
        Err(LedgerError::IdempotencyKeyReused)
    ));
    assert_eq!(balance(l).await, 92);
}

async fn concurrent_calls_never_exceed_allowance_plus_balance(c: Ctx) {
    let l = &c.ledger;
    chat(l).await;
    free_tier(l, vec![messages(10, Reset::Month, Overage::Credits)]).await;
    grant(l, &alice(), 30).await;
    // 32 calls of one message, each sent twice at once: 10 included, 15 at 2 credits, 7 refused.
    let mut tasks = JoinSet::new();
    for i in 0..64 {
        let l = l.clone();
        tasks.spawn(async move {
            l.track(call(&format!("k{}", i % 32), &[("messages", 1)], dims(&[])))
                .await
        });
    }
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut charged: BTreeMap<Option<i64>, UsageOutcome> = BTreeMap::new();
    while let Some(result) = tasks.join_next().await {
        let label = match result.unwrap() {
            Ok(out) => {
                if out.transaction_id.is_some() {
                    charged.insert(out.transaction_id, out);
                }
                "ok"
            }
            Err(LedgerError::InsufficientCredits { .. }) => "insufficient",
            Err(e) => panic!("{e}"),
        };
        *outcomes.entry(label).or_default() += 1;
    }
    assert_eq!(balance(l).await, 0);
    assert_eq!(used(l, "messages").await, 10);
    // 25 keys go through (10 inside the allowance, 15 charged), each answered twice; once the
    // balance is gone the other 7 are refused, both times (a refusal stores nothing).
    assert_eq!(charged.len(), 15);
    assert_eq!(
        (outcomes["ok"], outcomes["insufficient"]),
        (50, 14),
        "{outcomes:?}"
    );
    let history = l.transactions(ai_usage(100)).await.unwrap().0;
    assert_eq!(history.len(), 15);
    assert!(history.iter().all(|t| t.amount == -2));
}

async fn features_and_rates_are_admin_checked(c: Ctx) {
    let l = &c.ledger;
    chat(l).await;
    let spec = FeatureSpec {
        key: "messages".into(),
        name: "Chat messages".into(),
        kind: FeatureKind::Metered,
        unit: Some("messages".into()),
    };
    assert!(matches!(
        l.put_feature(APP, spec.clone(), true).await,
        Err(LedgerError::Conflict(_))
    ));
    let renamed = l.put_feature(APP, spec.clone(), false).await.unwrap();
    assert_eq!(renamed.name, "Chat messages");
    assert!(matches!(
        l.put_feature(
            APP,
            FeatureSpec {
                kind: FeatureKind::Boolean,
                unit: None,
                ..spec
            },
            false
        )
        .await,
        Err(LedgerError::Conflict(_))
    ));
    let rate_for = |feature: &str| RateSpec {
        feature: feature.into(),
        dimensions: dims(&[]),
        credits: 1,
        per: 1,
        tiers: vec![],
        effective_from: None,
    };
    for feature in ["premium_models", "nope"] {
        match l.add_rate(APP, rate_for(feature), "admin").await {
            Err(LedgerError::Validation(f)) => assert_eq!(f[0].field, "feature"),
            other => panic!("{other:?}"),
        }
    }
    match l
        .set_entitlements(
            APP,
            FREE_SCOPE.into(),
            vec![Entitlement {
                feature: "premium_models".into(),
                included: Some(1),
                reset: Reset::Month,
                overage: Overage::Block,
            }],
        )
        .await
    {
        Err(LedgerError::Validation(f)) => assert_eq!(f[0].field, "entitlements[0].included"),
        other => panic!("{other:?}"),
    }
    assert!(l.entitlements(APP, None).await.unwrap().is_empty());
    assert_eq!(l.features(APP).await.unwrap().len(), 3);
    // Another app sees none of it.
    assert!(l.features("other").await.unwrap().is_empty());
    assert_eq!(PRICE_SCALE, 1_000_000_000_000);
}

fn estimate(key: &str, quantities: &[(&str, i64)], d: Dimensions) -> UsageRequest {
    UsageRequest {
        description: "streamed completion".into(),
        ..call(key, quantities, d)
    }
}

async fn holds_price_quantities_at_the_rates_of_their_start(c: Ctx) {
    let l = &c.ledger;
    chat(l).await;
    free_tier(l, vec![messages(5, Reset::Month, Overage::Credits)]).await;
    grant(l, &alice(), 100).await;
    let gpt = dims(&[("model", "gpt-4o")]);
    // 2,000 tokens at 25 per 10,000: 5 credits held; the message is inside the allowance.
    let hold = l
        .reserve_usage(
            estimate(
                "h1",
                &[("input_tokens", 2_000), ("messages", 1)],
                gpt.clone(),
            ),
            60,
        )
        .await
        .unwrap();
    assert_eq!(hold.amount, 5);
    assert_eq!(l.balance(alice()).await.unwrap().available, 95);
    // A replay answers the same hold, even after the estimate would change.
    c.clock.advance(Duration::seconds(1));
    rate(l, "input_tokens", gpt.clone(), 50, 10_000).await;
    let again = l
        .reserve_usage(
            estimate(
                "h1",
                &[("input_tokens", 2_000), ("messages", 1)],
                gpt.clone(),
            ),
            60,
        )
        .await
        .unwrap();
    assert_eq!((again.id, again.amount), (hold.id, 5));
    // The call used 4,000 tokens: priced at the hold's rate (version 1), not the new one.
    c.clock.advance(Duration::seconds(5));
    let quantities: BTreeMap<String, i64> = [
        ("input_tokens".to_owned(), 4_000),
        ("messages".to_owned(), 1),
    ]
    .into();
    let (captured, outcome, txn) = l
        .capture_usage(APP, hold.id, quantities.clone())
        .await
        .unwrap();
    assert_eq!((captured.captured, outcome.credits), (Some(10), 10));
    let tokens = outcome
        .lines
        .iter()
        .find(|l| l.feature == "input_tokens")
        .unwrap();
    assert_eq!(tokens.rate.unwrap().version, 1);
    assert_eq!(txn.unwrap().amount, -10);
    assert_eq!(balance(l).await, 90);
    assert_eq!(used(l, "messages").await, 1);
    // The same capture again answers the first; another is refused.
    let (_, replay, _) = l.capture_usage(APP, hold.id, quantities).await.unwrap();
    assert_eq!(replay, outcome);
    assert!(matches!(
        l.capture_usage(APP, hold.id, [("input_tokens".to_owned(), 1)].into())
            .await,
        Err(LedgerError::HoldNotActive { .. })
    ));
    assert_eq!(balance(l).await, 90);
    // Covered by the allowance: a hold of 0 credits, even with nothing to spend.
    let bob = AccountRef::new(APP, "bob").unwrap();
    let free = l
        .reserve_usage(
            UsageRequest {
                account: bob.clone(),
                ..estimate("h2", &[("messages", 2)], dims(&[]))
            },
            60,
        )
        .await
        .unwrap();
    assert_eq!(free.amount, 0);
    let (_, outcome, txn) = l
        .capture_usage(APP, free.id, [("messages".to_owned(), 3)].into())
        .await
        .unwrap();
    assert_eq!((outcome.credits, txn), (0, None));
    // One left to run out: the sweep marks it expired, once.
    let idle = l
        .reserve_usage(
            UsageRequest {
                account: bob.clone(),
                ..estimate("h3", &[("messages", 1)], dims(&[]))
            },
            60,
        )
        .await
        .unwrap();
    assert_eq!(idle.amount, 0);
    c.clock.advance(Duration::seconds(61));
    assert_eq!(l.sweep_expired(100).await.unwrap(), 1);
    assert_eq!(l.sweep_expired(100).await.unwrap(), 0);
    assert_eq!(
        l.hold(APP, idle.id).await.unwrap().status,
        tally_ledger::HoldStatus::Expired
    );
    // A hold of credits is captured with credits, not quantities.
    let plain = l
        .reserve(tally_ledger::ReserveRequest {
            account: alice(),
            credits: 5,
            ttl_seconds: 60,
            description: "plain".into(),
            idempotency_key: None,
            metadata: None,
        })
        .await
        .unwrap();
    match l
        .capture_usage(APP, plain.id, [("messages".to_owned(), 1)].into())
        .await
    {
        Err(LedgerError::Validation(f)) => assert_eq!(f[0].field, "quantities"),
        other => panic!("{other:?}"),
    }
}

async fn reserved(l: &Ledger, feature: &str) -> (i64, i64, Option<i64>) {
    let status = l.feature_status(alice()).await.unwrap();
    let s = status.iter().find(|s| s.feature.key == feature).unwrap();
    (s.used, s.reserved, s.remaining())
}

async fn holds_set_aside_allowances(c: Ctx) {
    let l = &c.ledger;
    chat(l).await;
    free_tier(l, vec![messages(5, Reset::Day, Overage::Block)]).await;
    let hold = |key: &str, n: i64| estimate(key, &[("messages", n)], dims(&[]));
    // Sixteen streamed calls at once, one message each: five get the allowance, none more.
    let mut tasks = JoinSet::new();
    for i in 0..16 {
        let l = l.clone();
        tasks.spawn(async move { l.reserve_usage(hold(&format!("p{i}"), 1), 60).await });
    }
    let (mut held, mut refused) = (Vec::new(), 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(h) => held.push(h),
            Err(LedgerError::EntitlementExceeded { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((held.len(), refused), (5, 11));
    assert_eq!(reserved(l, "messages").await, (0, 5, Some(0)));
    // Nothing left for a track either; releasing gives the units back.
    assert!(matches!(
        l.track(call("t0", &[("messages", 1)], dims(&[]))).await,
        Err(LedgerError::EntitlementExceeded { .. })
    ));
    for h in &held[..2] {
        l.release(APP, h.id).await.unwrap();
    }
    assert_eq!(reserved(l, "messages").await, (0, 3, Some(2)));
    l.track(call("t1", &[("messages", 2)], dims(&[])))
        .await
        .unwrap();
    // A capture uses what its own hold set aside.
    let (_, outcome, _) = l
        .capture_usage(APP, held[2].id, [("messages".to_owned(), 1)].into())
        .await
        .unwrap();
    assert_eq!(outcome.lines[0].included_used, 1);
    assert_eq!(reserved(l, "messages").await, (3, 2, Some(0)));
    // The last two run out: the sweep gives their units back.
    c.clock.advance(Duration::seconds(61));
    assert_eq!(l.sweep_expired(100).await.unwrap(), 1);
    assert_eq!(reserved(l, "messages").await, (3, 0, Some(2)));
}

/// A server keeps each app's pricing in memory; a change made through another server on the
/// same database (rates, entitlements, the time zone of day windows) prices the next call.
async fn another_servers_pricing_changes_apply_at_once(c: Ctx) {
    let l = &c.ledger;
    chat(l).await;
    grant(l, &alice(), 1_000).await;
    let n = |key: &str| call(key, &[("messages", 1)], dims(&[]));
    assert_eq!(l.track(n("a1")).await.unwrap().credits, 2);
    let store = tally_store::Store::connect(&c.url).await.unwrap();
    let other = Ledger::with_clock(Arc::new(store), c.clock.clone());
    rate(&other, "messages", dims(&[]), 5, 1).await;
    assert_eq!(l.track(n("a2")).await.unwrap().credits, 5);
    // One message a day included, then refused; the day is UTC's: it ends at 00:00 UTC.
    free_tier(&other, vec![messages(1, Reset::Day, Overage::Block)]).await;
    let included = l.track(n("a3")).await.unwrap();
    assert_eq!((included.credits, included.lines[0].included_used), (0, 1));
    assert!(matches!(
        l.track(n("a4")).await,
        Err(LedgerError::EntitlementExceeded { .. })
    ));
    // Moved to Tokyo on the other server, the day ended at 15:00 UTC: at 16:00 UTC a new one
    // has begun.
    tokyo(&other).await;
    c.clock.advance(Duration::hours(4));
    let next_day = l.track(n("a5")).await.unwrap();
    assert_eq!((next_day.credits, next_day.lines[0].included_used), (0, 1));
    assert_eq!(balance(l).await, 1_000 - 2 - 5);
}
