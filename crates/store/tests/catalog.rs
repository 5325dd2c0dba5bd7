//! The catalog over `tally_store::Store`: plans and coupons, written once and run on both
//! backends (`<case>::sqlite` and `<case>::postgres`; the latter pass with a notice when
//! `TALLY_TEST_POSTGRES_URL` is unset).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::sync::Arc;

use common::{Backend, START, TestDb};
use tally_catalog::{
    Catalog, CatalogError, CouponDuration, CouponSpec, Plan, PlanKind, PlanPatch, PlanSpec,
};
use tally_ledger::ManualClock;
use time::Duration;
use time::macros::datetime;

/// What each case receives.
struct Ctx {
    catalog: Catalog,
    clock: Arc<ManualClock>,
}

async fn run<F, Fut>(backend: Backend, _name: &str, case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let clock = Arc::new(ManualClock::new(START));
    let catalog = Catalog::with_clock(Arc::new(db.store().await), clock.clone());
    case(Ctx { catalog, clock }).await;
    drop(db);
}

tally_testkit::backend_tests!(
    run = run;
    plans_round_trip,
    partial_update_replaces_only_given_fields,
    invalid_writes_change_nothing,
    listing_order_and_active_filter,
    apps_are_isolated,
    coupons_round_trip_and_page,
    duplicate_coupon_code_conflicts,
    coupon_plan_ids_must_exist_in_the_app,
);

// ---------------------------------------------------------------------------------------------
// Helpers

fn subscription(name: &str, sort_order: i64) -> PlanSpec {
    PlanSpec {
        name: name.into(),
        description: format!("{name} plan"),
        kind: PlanKind::Subscription,
        currency: "usd".into(),
        price_monthly: Some(999),
        price_yearly: Some(9990),
        price: None,
        credits_included: 10_000,
        features: vec!["Unlimited AI chat".into(), "Priority support".into()],
        stripe_price_id_monthly: Some("price_month".into()),
        stripe_price_id_yearly: Some("price_year".into()),
        stripe_price_id: None,
        creem_product_id_monthly: Some("prod_month".into()),
        creem_product_id_yearly: None,
        creem_product_id: None,
        active: true,
        sort_order,
        credits_expire_days: Some(30),
        trial_days: Some(14),
        trial_credits: 50,
    }
}

fn pack(name: &str, sort_order: i64) -> PlanSpec {
    PlanSpec {
        kind: PlanKind::CreditPack,
        price_monthly: None,
        price_yearly: None,
        price: Some(499),
        credits_included: 5_000,
        stripe_price_id_monthly: None,
        stripe_price_id_yearly: None,
        stripe_price_id: Some("price_pack".into()),
        creem_product_id_monthly: None,
        creem_product_id: Some("prod_pack".into()),
        credits_expire_days: None,
        trial_days: None,
        trial_credits: 0,
        ..subscription(name, sort_order)
    }
}

fn coupon(code: &str) -> CouponSpec {
    CouponSpec {
        code: code.into(),
        percent_off: Some(20),
        amount_off: None,
        currency: None,
        duration: CouponDuration::Forever,
        duration_months: None,
        max_redemptions: None,
        expires_at: None,
        plan_ids: vec![],
        active: true,
    }
}

fn invalid_fields(e: CatalogError) -> Vec<String> {
    match e {
        CatalogError::Validation(f) => f.into_iter().map(|f| f.field).collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn names(plans: &[Plan]) -> Vec<&str> {
    plans.iter().map(|p| p.name.as_str()).collect()
}

// ---------------------------------------------------------------------------------------------
// Cases

async fn plans_round_trip(cx: Ctx) {
    let c = &cx.catalog;
    let pro = c
        .create_plan("default", subscription("Pro", 1), "root")
        .await
        .unwrap();
    let pack = c
        .create_plan("default", pack("Pack", 2), "root")
        .await
        .unwrap();
    assert_ne!(pro.id, pack.id);
    assert!(pro.id.parse::<i64>().is_ok(), "ids are decimal integers");
    assert_eq!(pro.app, "default");
    assert_eq!(pro.kind, PlanKind::Subscription);
    assert_eq!(pro.features, ["Unlimited AI chat", "Priority support"]);
    assert_eq!(pro.credits_expire_days, Some(30));
    assert_eq!(pro.creem_product_id_monthly.as_deref(), Some("prod_month"));
    assert_eq!(pro.creem_product_id_yearly, None);
    assert_eq!(
        (pro.created_by.as_str(), pro.updated_by.as_str()),
        ("root", "root")
    );
    assert_eq!((pro.created_at, pro.updated_at), (START, START));
    assert_eq!(pack.kind, PlanKind::CreditPack);
    assert_eq!((pack.price, pack.price_monthly), (Some(499), None));

    let listed = c.plans("default").await.unwrap();
    assert_eq!(listed, [pro.clone(), pack]);
    assert_eq!(c.plan("default", &pro.id).await.unwrap(), Some(pro));
    assert_eq!(c.plan("default", "999999").await.unwrap(), None);
    assert_eq!(c.plan("default", "not-a-number").await.unwrap(), None);
}

async fn partial_update_replaces_only_given_fields(cx: Ctx) {
    let c = &cx.catalog;
    let pro = c
        .create_plan("default", subscription("Pro", 1), "root")
        .await
        .unwrap();
    cx.clock.advance(Duration::minutes(5));
    let patch = PlanPatch {
        description: Some("Now with more".into()),
        price_yearly: Some(None),
        stripe_price_id_yearly: Some(None),
        features: Some(vec!["One".into()]),
        credits_expire_days: Some(None),
        active: Some(false),
        ..PlanPatch::default()
    };
    let updated = c
        .update_plan("default", &pro.id, patch, "ops")
        .await
        .unwrap();
    assert_eq!(updated.description, "Now with more");
    assert_eq!(updated.price_yearly, None);
    assert_eq!(updated.stripe_price_id_yearly, None);
    assert_eq!(updated.features, ["One"]);
    assert_eq!(updated.credits_expire_days, None);
    assert!(!updated.active);
    // Untouched fields stay.
    assert_eq!(updated.name, pro.name);
    assert_eq!(updated.price_monthly, Some(999));
    assert_eq!(updated.stripe_price_id_monthly, pro.stripe_price_id_monthly);
    assert_eq!(updated.sort_order, 1);
    assert_eq!(updated.created_by, "root");
    assert_eq!(updated.updated_by, "ops");
    assert_eq!(updated.created_at, START);
    assert_eq!(updated.updated_at, START + Duration::minutes(5));
    assert_eq!(
        c.plan("default", &pro.id).await.unwrap(),
        Some(updated.clone())
    );

    // Switching kind works when the same patch supplies the new kind's price and clears the old.
    let to_pack = PlanPatch {
        kind: Some(PlanKind::CreditPack),
        price: Some(Some(1500)),
        price_monthly: Some(None),
        stripe_price_id_monthly: Some(None),
        creem_product_id_monthly: Some(None),
        trial_days: Some(None),
        trial_credits: Some(0),
        ..PlanPatch::default()
    };
    let packed = c
        .update_plan("default", &pro.id, to_pack, "ops")
        .await
        .unwrap();
    assert_eq!(
        (packed.kind, packed.price),
        (PlanKind::CreditPack, Some(1500))
    );

    // An empty patch answers the plan as it is.
    let same = c
        .update_plan("default", &pro.id, PlanPatch::default(), "other-admin")
        .await
        .unwrap();
    assert_eq!(same, packed);
}

async fn invalid_writes_change_nothing(cx: Ctx) {
    let c = &cx.catalog;
    let pro = c
        .create_plan("default", subscription("Pro", 1), "root")
        .await
        .unwrap();
    let before = c.plans("default").await.unwrap();

    let mut bad = subscription("", 1);
    bad.currency = "xyz".into();
    bad.price_monthly = Some(-1);
    let e = c.create_plan("default", bad, "root").await.unwrap_err();
    assert_eq!(invalid_fields(e), ["name", "currency", "price_monthly"]);

    let mut no_price = pack("Pack", 1);
    no_price.price = None;
    let e = c
        .create_plan("default", no_price, "root")
        .await
        .unwrap_err();
    assert_eq!(invalid_fields(e), ["price"]);

    // The merged plan is validated: dropping both prices of a subscription is refused.
    let patch = PlanPatch {
        price_monthly: Some(None),
        price_yearly: Some(None),
        stripe_price_id_monthly: Some(None),
        stripe_price_id_yearly: Some(None),
        creem_product_id_monthly: Some(None),
        ..PlanPatch::default()
    };
    let e = c
        .update_plan("default", &pro.id, patch, "ops")
        .await
        .unwrap_err();
    assert_eq!(invalid_fields(e), ["price_monthly"]);
    let patch = PlanPatch {
        kind: Some(PlanKind::CreditPack),
        ..PlanPatch::default()
    };
    assert!(matches!(
        c.update_plan("default", &pro.id, patch, "ops").await,
        Err(CatalogError::Validation(_))
    ));

    let patch = PlanPatch {
        name: Some("Ghost".into()),
        ..PlanPatch::default()
    };
    for id in ["424242", "abc", ""] {
        assert!(matches!(
            c.update_plan("default", id, patch.clone(), "ops").await,
            Err(CatalogError::PlanNotFound)
        ));
    }
    assert!(matches!(
        c.update_plan("default", "424242", PlanPatch::default(), "ops")
            .await,
        Err(CatalogError::PlanNotFound)
    ));
    assert!(matches!(
        c.create_plan("bad app", subscription("X", 1), "root").await,
        Err(CatalogError::Validation(_))
    ));
    assert_eq!(c.plans("default").await.unwrap(), before);
}

async fn listing_order_and_active_filter(cx: Ctx) {
    let c = &cx.catalog;
    let b = c
        .create_plan("default", subscription("B", 2), "root")
        .await
        .unwrap();
    c.create_plan("default", pack("A", 1), "root")
        .await
        .unwrap();
    c.create_plan("default", subscription("C", 1), "root")
        .await
        .unwrap();
    let mut hidden = pack("Hidden", 0);
    hidden.active = false;
    c.create_plan("default", hidden, "root").await.unwrap();
    c.create_plan("default", pack("Neg", -5), "root")
        .await
        .unwrap();

    // sort_order ascending, ties by id (creation order).
    assert_eq!(
        names(&c.plans("default").await.unwrap()),
        ["Neg", "Hidden", "A", "C", "B"]
    );
    assert_eq!(
        names(&c.public_plans("default").await.unwrap()),
        ["Neg", "A", "C", "B"]
    );

    let patch = PlanPatch {
        active: Some(false),
        sort_order: Some(-10),
        ..PlanPatch::default()
    };
    c.update_plan("default", &b.id, patch, "ops").await.unwrap();
    assert_eq!(
        names(&c.public_plans("default").await.unwrap()),
        ["Neg", "A", "C"]
    );
    assert_eq!(
        names(&c.plans("default").await.unwrap()),
        ["B", "Neg", "Hidden", "A", "C"]
    );
}

async fn apps_are_isolated(cx: Ctx) {
    let c = &cx.catalog;
    let mine = c
        .create_plan("default", subscription("Mine", 1), "root")
        .await
        .unwrap();
    let theirs = c
        .create_plan("other", subscription("Theirs", 1), "root")
        .await
        .unwrap();
    assert_eq!(names(&c.plans("default").await.unwrap()), ["Mine"]);
    assert_eq!(names(&c.public_plans("other").await.unwrap()), ["Theirs"]);
    assert!(c.plans("empty").await.unwrap().is_empty());
    assert_eq!(c.plan("default", &theirs.id).await.unwrap(), None);

    let patch = PlanPatch {
        name: Some("Hijacked".into()),
        ..PlanPatch::default()
    };
    assert!(matches!(
        c.update_plan("default", &theirs.id, patch, "root").await,
        Err(CatalogError::PlanNotFound)
    ));
    assert_eq!(
        c.plan("other", &theirs.id).await.unwrap().unwrap().name,
        "Theirs"
    );

    // Codes are unique per app, not globally.
    c.create_coupon("default", coupon("SAVE"), "root")
        .await
        .unwrap();
    c.create_coupon("other", coupon("SAVE"), "root")
        .await
        .unwrap();
    assert_eq!(c.coupons("default", 10, 0).await.unwrap().len(), 1);
    let mut restricted = coupon("MINE");
    restricted.plan_ids = vec![mine.id.clone()];
    assert!(c.create_coupon("default", restricted, "root").await.is_ok());
}

async fn coupons_round_trip_and_page(cx: Ctx) {
    let c = &cx.catalog;
    let pro = c
        .create_plan("default", subscription("Pro", 1), "root")
        .await
        .unwrap();
    let spec = CouponSpec {
        code: "launch_2026".into(),
        percent_off: None,
        amount_off: Some(500),
        currency: Some("USD".into()),
        duration: CouponDuration::Repeating,
        duration_months: Some(3),
        max_redemptions: Some(100),
        expires_at: Some(datetime!(2026-12-31 23:59:59.123456789 UTC)),
        plan_ids: vec![pro.id.clone(), pro.id.clone()],
        active: true,
    };
    let made = c.create_coupon("default", spec, "root").await.unwrap();
    assert_eq!(made.code, "LAUNCH_2026");
    assert_eq!(made.currency.as_deref(), Some("usd"));
    assert_eq!((made.amount_off, made.percent_off), (Some(500), None));
    assert_eq!(made.duration, CouponDuration::Repeating);
    assert_eq!(made.duration_months, Some(3));
    assert_eq!(made.max_redemptions, Some(100));
    assert_eq!(made.times_redeemed, 0);
    assert_eq!(
        made.expires_at,
        Some(datetime!(2026-12-31 23:59:59.123456 UTC))
    );
    assert_eq!(made.plan_ids, [pro.id.as_str()]);
    assert_eq!((made.created_by.as_str(), made.created_at), ("root", START));

    for i in 0..4 {
        c.create_coupon("default", coupon(&format!("C{i}")), "root")
            .await
            .unwrap();
    }
    let all = c.coupons("default", 10, 0).await.unwrap();
    let codes: Vec<_> = all.iter().map(|c| c.code.as_str()).collect();
    assert_eq!(
        codes,
        ["C3", "C2", "C1", "C0", "LAUNCH_2026"],
        "newest first"
    );
    assert_eq!(all[4], made);
    let page: Vec<_> = c
        .coupons("default", 2, 2)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.code)
        .collect();
    assert_eq!(page, ["C1", "C0"]);
    assert!(c.coupons("default", 0, 0).await.is_err());
}

async fn duplicate_coupon_code_conflicts(cx: Ctx) {
    let c = &cx.catalog;
    let first = c
        .create_coupon("default", coupon("Welcome"), "root")
        .await
        .unwrap();
    assert_eq!(first.code, "WELCOME");
    let mut again = coupon("welcome");
    again.percent_off = Some(90);
    assert!(matches!(
        c.create_coupon("default", again, "root").await,
        Err(CatalogError::Conflict(_))
    ));
    assert_eq!(c.coupons("default", 10, 0).await.unwrap(), [first]);
}

async fn coupon_plan_ids_must_exist_in_the_app(cx: Ctx) {
    let c = &cx.catalog;
    let pro = c
        .create_plan("default", subscription("Pro", 1), "root")
        .await
        .unwrap();
    let theirs = c
        .create_plan("other", subscription("Theirs", 1), "root")
        .await
        .unwrap();
    let mut eur = subscription("Euro", 2);
    eur.currency = "eur".into();
    let eur = c.create_plan("default", eur, "root").await.unwrap();

    let mut spec = coupon("X");
    spec.plan_ids = vec![pro.id.clone(), "999999".into(), theirs.id.clone()];
    let e = c.create_coupon("default", spec, "root").await.unwrap_err();
    assert_eq!(invalid_fields(e), ["plan_ids[1]", "plan_ids[2]"]);

    let mut amount = coupon("Y");
    amount.percent_off = None;
    amount.amount_off = Some(100);
    amount.currency = Some("usd".into());
    amount.plan_ids = vec![pro.id.clone(), eur.id.clone()];
    let e = c
        .create_coupon("default", amount, "root")
        .await
        .unwrap_err();
    assert_eq!(invalid_fields(e), ["plan_ids[1]"]);

    let mut repeating = coupon("Z");
    repeating.duration = CouponDuration::Repeating;
    let e = c
        .create_coupon("default", repeating, "root")
        .await
        .unwrap_err();
    assert_eq!(invalid_fields(e), ["duration_months"]);

    let mut past = coupon("P");
    past.expires_at = Some(START - Duration::seconds(1));
    let e = c.create_coupon("default", past, "root").await.unwrap_err();
    assert_eq!(invalid_fields(e), ["expires_at"]);

    assert!(c.coupons("default", 10, 0).await.unwrap().is_empty());
}
