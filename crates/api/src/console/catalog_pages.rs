//! The console's plans, credit packs and coupons.

use actix_web::{HttpResponse, web};
use maud::{Markup, html};
use serde::Deserialize;
use tally_catalog::{CouponDuration, CouponPatch, CouponSpec, PlanKind, PlanPatch, PlanSpec};
use tally_console::Operator;

use super::pages::{Notice, form_outcome, make, notice, shown, unreadable};
use super::view::{self, instant, money, number, parse_money, segment};
use super::{PageError, Signed, check_csrf, see_other};
use crate::routes::detached;
use crate::{ApiError, AppState};

/// An optional text field: blank means absent.
fn given(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// An optional whole number; blank means absent.
fn whole(field: &str, s: &str) -> Result<Option<i64>, String> {
    given(s)
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| format!("{field}: a whole number"))
        })
        .transpose()
}

/// An optional amount of money in `currency`; blank means absent.
fn amount(field: &str, s: &str, currency: &str) -> Result<Option<i64>, String> {
    given(s)
        .map(|s| {
            parse_money(&s, currency).ok_or_else(|| format!("{field}: an amount such as 9.99"))
        })
        .transpose()
}

async fn plans_page(
    state: &AppState,
    op: &Operator,
    notice_: Option<Notice>,
) -> Result<Markup, PageError> {
    let plans = state.catalog.plans(&op.app).await?;
    let body = html! {
        (notice(&notice_))
        div.panel.wide {
            @if plans.is_empty() { p.empty { "No plans or credit packs yet." } } @else {
                table id="plans" {
                    thead { tr { th { "Id" } th { "Name" } th { "Kind" } th.num { "Price" } th.num { "Credits" } th { "Credits expire" } th { "State" } th { "" } } }
                    tbody { @for p in &plans { tr id={ "plan-" (p.id) } {
                        td { (p.id) }
                        td { a href={ "/console/plans/" (segment(&p.id)) } { (p.name) } }
                        td { @if p.kind == PlanKind::Subscription { "subscription" } @else { "credit pack" } }
                        td.num {
                            @if let Some(m) = p.price_monthly { div { (money(m, &p.currency)) " / month" } }
                            @if let Some(y) = p.price_yearly { div { (money(y, &p.currency)) " / year" } }
                            @if let Some(x) = p.price { (money(x, &p.currency)) }
                        }
                        td.num { (number(p.credits_included)) }
                        td { @match p.credits_expire_days { Some(d) => { "after " (d) " days" }, None => span.muted { "never" } } }
                        td { @if p.active { span.pill.on { "on sale" } } @else { span.pill.off { "archived" } } }
                        td {
                            form.inline method="post" action={ "/console/plans/" (segment(&p.id)) "/active" } {
                                input type="hidden" name="csrf" value=(op.csrf_token);
                                input type="hidden" name="active" value=(if p.active { "false" } else { "true" });
                                button.secondary type="submit" { @if p.active { "Archive" } @else { "Restore" } }
                            }
                        }
                    } } }
                }
            }
        }
        section.panel aria-labelledby="new-plan" {
            h2 id="new-plan" { "New plan or credit pack" }
            form method="post" action="/console/plans" {
                input type="hidden" name="csrf" value=(op.csrf_token);
                div.fields {
                    div { label for="plan-name" { "Name" } input type="text" id="plan-name" name="name" required maxlength="100"; }
                    div { label for="plan-kind" { "Kind" }
                        select id="plan-kind" name="kind" {
                            option value="subscription" { "Subscription" }
                            option value="credit_pack" { "Credit pack" }
                        }
                    }
                    div { label for="plan-currency" { "Currency" } input type="text" id="plan-currency" name="currency" value="usd" required maxlength="3"; }
                    div { label for="plan-credits" { "Credits (per period or pack)" } input type="number" id="plan-credits" name="credits" required min="0" step="1"; }
                    div { label for="plan-monthly" { "Price per month (subscriptions)" } input type="text" id="plan-monthly" name="price_monthly" placeholder="9.99" inputmode="decimal"; }
                    div { label for="plan-yearly" { "Price per year (subscriptions)" } input type="text" id="plan-yearly" name="price_yearly" placeholder="99.00" inputmode="decimal"; }
                    div { label for="plan-price" { "Price (credit packs)" } input type="text" id="plan-price" name="price" placeholder="4.99" inputmode="decimal"; }
                    div { label for="plan-expire" { "Credits expire after (days, blank = never)" } input type="number" id="plan-expire" name="credits_expire_days" min="1" step="1"; }
                    div { label for="plan-trial" { "Free trial (days, subscriptions; blank = none)" } input type="number" id="plan-trial" name="trial_days" min="1" max="730" step="1"; }
                    div { label for="plan-trial-credits" { "Trial credits" } input type="number" id="plan-trial-credits" name="trial_credits" min="0" step="1"; }
                    div { label for="plan-stripe" { "Stripe price id (monthly or pack)" } input type="text" id="plan-stripe" name="stripe_price"; }
                    div { label for="plan-creem" { "Creem product id (monthly or pack)" } input type="text" id="plan-creem" name="creem_product"; }
                }
                div { label for="plan-description" { "Description" } input type="text" id="plan-description" name="description" maxlength="1000"; }
                div.actions { button type="submit" id="create-plan" { "Create" } }
            }
        }
    };
    Ok(view::page(
        op,
        "/console/plans",
        "Plans and credit packs",
        body,
    ))
}

/// Plans and credit packs, with a form for a new one.
pub(crate) async fn plans(
    state: web::Data<AppState>,
    Signed(op): Signed,
) -> Result<HttpResponse, PageError> {
    shown(plans_page(&state, &op, None)).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct PlanForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    credits: String,
    #[serde(default)]
    price_monthly: String,
    #[serde(default)]
    price_yearly: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    credits_expire_days: String,
    #[serde(default)]
    trial_days: String,
    #[serde(default)]
    trial_credits: String,
    #[serde(default)]
    stripe_price: String,
    #[serde(default)]
    creem_product: String,
    #[serde(default)]
    description: String,
}

impl PlanForm {
    /// The plan the form describes; the catalog then checks it as a whole.
    fn spec(&self) -> Result<PlanSpec, String> {
        let kind = match self.kind.as_str() {
            "subscription" => PlanKind::Subscription,
            "credit_pack" => PlanKind::CreditPack,
            _ => return Err("kind: subscription or credit pack".into()),
        };
        let currency = self.currency.trim().to_ascii_lowercase();
        let pack = kind == PlanKind::CreditPack;
        let days = whole("credits expire after", &self.credits_expire_days)?
            .map(|d| {
                u32::try_from(d).map_err(|_| "credits expire after: 1 or more days".to_owned())
            })
            .transpose()?;
        Ok(PlanSpec {
            name: self.name.trim().to_owned(),
            description: self.description.trim().to_owned(),
            kind,
            price_monthly: amount("price per month", &self.price_monthly, &currency)?,
            price_yearly: amount("price per year", &self.price_yearly, &currency)?,
            price: amount("price", &self.price, &currency)?,
            currency,
            credits_included: whole("credits", &self.credits)?.unwrap_or(0),
            features: Vec::new(),
            stripe_price_id_monthly: given(&self.stripe_price).filter(|_| !pack),
            stripe_price_id_yearly: None,
            stripe_price_id: given(&self.stripe_price).filter(|_| pack),
            creem_product_id_monthly: given(&self.creem_product).filter(|_| !pack),
            creem_product_id_yearly: None,
            creem_product_id: given(&self.creem_product).filter(|_| pack),
            active: true,
            sort_order: 0,
            credits_expire_days: days,
            trial_days: whole("free trial", &self.trial_days)?
                .map(|d| u32::try_from(d).map_err(|_| "free trial: 1 or more days".to_owned()))
                .transpose()?,
            trial_credits: whole("trial credits", &self.trial_credits)?.unwrap_or(0),
        })
    }
}

/// Creates a plan or credit pack.
pub(crate) async fn create_plan(
    state: web::Data<AppState>,
    Signed(op): Signed,
    form: web::Form<PlanForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&op, &form.csrf)?;
    let (catalog, app, actor) = (state.catalog.clone(), op.app.clone(), console_actor(&op));
    let made = make(form.spec().map_err(unreadable), |spec| async move {
        catalog.create_plan(&app, spec, &actor).await
    })
    .await;
    form_outcome(made, "/console/plans", |n| plans_page(&state, &op, Some(n))).await
}

/// The actor the console records for `op`.
pub(crate) fn console_actor(op: &Operator) -> String {
    format!("console:{}", op.operator)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ActiveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    active: String,
}

impl ActiveForm {
    fn active(&self) -> Result<bool, PageError> {
        match self.active.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(PageError::NotFound("no such switch".into())),
        }
    }

    /// Switches something off or on as the form asks (`change`, on its own task), then goes
    /// back to the list at `next`.
    async fn switch<T, E, Fut>(
        &self,
        op: &Operator,
        next: &str,
        change: impl FnOnce(bool) -> Fut,
    ) -> Result<HttpResponse, PageError>
    where
        Fut: std::future::Future<Output = Result<T, E>> + 'static,
        T: 'static,
        E: 'static,
        ApiError: From<E>,
    {
        check_csrf(op, &self.csrf)?;
        detached(change(self.active()?)).await?;
        Ok(see_other(next))
    }
}

/// Archives a plan (no longer listed or sold) or puts it back on sale.
pub(crate) async fn plan_active(
    state: web::Data<AppState>,
    Signed(op): Signed,
    id: web::Path<String>,
    form: web::Form<ActiveForm>,
) -> Result<HttpResponse, PageError> {
    let (catalog, app, actor, id) = (
        state.catalog.clone(),
        op.app.clone(),
        console_actor(&op),
        id.into_inner(),
    );
    form.switch(&op, "/console/plans", |active| async move {
        let patch = PlanPatch {
            active: Some(active),
            ..Default::default()
        };
        catalog.update_plan(&app, &id, patch, &actor).await
    })
    .await
}

async fn coupons_page(
    state: &AppState,
    op: &Operator,
    notice_: Option<Notice>,
) -> Result<Markup, PageError> {
    let coupons = state.catalog.coupons(&op.app, 100, 0).await?;
    let body = html! {
        (notice(&notice_))
        div.panel.wide {
            @if coupons.is_empty() {
                p.empty { "No coupons yet." }
            } @else {
                table id="coupons" {
                    thead { tr { th { "Code" } th { "Discount" } th { "Duration" } th.num { "Redeemed" } th { "Expires" } th { "State" } th { "" } } }
                    tbody { @for c in &coupons { tr id={ "coupon-" (c.code) } {
                        td { a href={ "/console/coupons/" (segment(&c.id)) } { code { (c.code) } } }
                        td { @match (c.percent_off, c.amount_off, &c.currency) {
                            (Some(p), _, _) => { (p) " %" },
                            (None, Some(a), Some(cur)) => (money(a, cur)),
                            _ => "—",
                        } }
                        td { (c.duration.as_str()) @if let Some(m) = c.duration_months { " (" (m) " months)" } }
                        td.num { (number(c.times_redeemed)) @if let Some(max) = c.max_redemptions { " / " (number(max)) } }
                        td { @match c.expires_at { Some(at) => (instant(at)), None => span.muted { "never" } } }
                        td { @if c.active { span.pill.on { "on" } } @else { span.pill.off { "off" } } }
                        td {
                            form.inline method="post" action={ "/console/coupons/" (segment(&c.id)) "/active" } {
                                input type="hidden" name="csrf" value=(op.csrf_token);
                                input type="hidden" name="active" value=(if c.active { "false" } else { "true" });
                                button.secondary type="submit" { @if c.active { "Switch off" } @else { "Switch on" } }
                            }
                        }
                    } } }
                }
            }
        }
        section.panel aria-labelledby="new-coupon" {
            h2 id="new-coupon" { "New coupon" }
            form method="post" action="/console/coupons" {
                input type="hidden" name="csrf" value=(op.csrf_token);
                div.fields {
                    div { label for="coupon-code" { "Code" } input type="text" id="coupon-code" name="code" required maxlength="64" placeholder="LAUNCH-50"; }
                    div { label for="coupon-percent" { "Percent off" } input type="number" id="coupon-percent" name="percent_off" min="1" max="100" step="1"; }
                    div { label for="coupon-amount" { "Or amount off" } input type="text" id="coupon-amount" name="amount_off" placeholder="5.00" inputmode="decimal"; }
                    div { label for="coupon-currency" { "Currency of the amount" } input type="text" id="coupon-currency" name="currency" maxlength="3" placeholder="usd"; }
                    div { label for="coupon-duration" { "Duration" }
                        select id="coupon-duration" name="duration" {
                            option value="once" { "First payment" }
                            option value="repeating" { "Some months" }
                            option value="forever" { "Every payment" }
                        }
                    }
                    div { label for="coupon-months" { "Months (for some months)" } input type="number" id="coupon-months" name="duration_months" min="1" max="36" step="1"; }
                    div { label for="coupon-max" { "Redemptions allowed (blank = unlimited)" } input type="number" id="coupon-max" name="max_redemptions" min="1" step="1"; }
                }
                div.actions { button type="submit" id="create-coupon" { "Create" } }
            }
        }
    };
    Ok(view::page(op, "/console/coupons", "Coupons", body))
}

/// The app's coupons, with a switch for each and a form for a new one.
pub(crate) async fn coupons(
    state: web::Data<AppState>,
    Signed(op): Signed,
) -> Result<HttpResponse, PageError> {
    shown(coupons_page(&state, &op, None)).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct CouponForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    percent_off: String,
    #[serde(default)]
    amount_off: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    duration_months: String,
    #[serde(default)]
    max_redemptions: String,
}

impl CouponForm {
    fn spec(&self) -> Result<CouponSpec, String> {
        let currency = given(&self.currency).map(|c| c.to_ascii_lowercase());
        let amount_off = match &currency {
            Some(c) => amount("amount off", &self.amount_off, c)?,
            None if given(&self.amount_off).is_some() => {
                return Err("currency: required with an amount off".into());
            }
            None => None,
        };
        Ok(CouponSpec {
            code: self.code.clone(),
            percent_off: whole("percent off", &self.percent_off)?,
            amount_off,
            currency,
            duration: CouponDuration::parse(&self.duration).ok_or_else(|| {
                "duration: first payment, some months or every payment".to_owned()
            })?,
            duration_months: whole("months", &self.duration_months)?
                .map(|m| u32::try_from(m).map_err(|_| "months: 1-36".to_owned()))
                .transpose()?,
            max_redemptions: whole("redemptions allowed", &self.max_redemptions)?,
            expires_at: None,
            plan_ids: Vec::new(),
            active: true,
        })
    }
}

/// Creates a coupon.
pub(crate) async fn create_coupon(
    state: web::Data<AppState>,
    Signed(op): Signed,
    form: web::Form<CouponForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&op, &form.csrf)?;
    let (catalog, app, actor) = (state.catalog.clone(), op.app.clone(), console_actor(&op));
    let made = make(form.spec().map_err(unreadable), |spec| async move {
        catalog.create_coupon(&app, spec, &actor).await
    })
    .await;
    form_outcome(made, "/console/coupons", |n| {
        coupons_page(&state, &op, Some(n))
    })
    .await
}

/// Switches a coupon off or on.
pub(crate) async fn coupon_active(
    state: web::Data<AppState>,
    Signed(op): Signed,
    id: web::Path<String>,
    form: web::Form<ActiveForm>,
) -> Result<HttpResponse, PageError> {
    let (catalog, app, id) = (state.catalog.clone(), op.app.clone(), id.into_inner());
    form.switch(&op, "/console/coupons", |active| async move {
        let patch = CouponPatch {
            active: Some(active),
            ..Default::default()
        };
        catalog.update_coupon(&app, &id, patch).await
    })
    .await
}

/// A price for the form: minor units as the money people type, blank when unset.
fn price_text(minor: Option<i64>, currency: &str) -> String {
    minor.map_or(String::new(), |m| {
        let text = money(m, currency);
        text.rsplit_once(' ')
            .map_or(text.clone(), |(amount, _)| amount.replace(',', ""))
    })
}

async fn plan_page(
    state: &AppState,
    op: &Operator,
    id: &str,
    notice_: Option<Notice>,
) -> Result<Markup, PageError> {
    let p = state
        .catalog
        .plan(&op.app, id)
        .await?
        .ok_or_else(|| PageError::NotFound("no such plan".into()))?;
    let pack = p.kind == PlanKind::CreditPack;
    let stripe = if pack {
        &p.stripe_price_id
    } else {
        &p.stripe_price_id_monthly
    };
    let creem = if pack {
        &p.creem_product_id
    } else {
        &p.creem_product_id_monthly
    };
    let body = html! {
        (notice(&notice_))
        section.panel aria-labelledby="edit-plan" {
            h2 id="edit-plan" { @if pack { "Credit pack" } @else { "Subscription plan" } " " (p.id) " · " (p.currency.to_ascii_uppercase()) }
            form method="post" action={ "/console/plans/" (segment(&p.id)) } {
                input type="hidden" name="csrf" value=(op.csrf_token);
                div.fields {
                    div { label for="plan-name" { "Name" } input type="text" id="plan-name" name="name" required maxlength="100" value=(p.name); }
                    div { label for="plan-credits" { "Credits (per period or pack)" } input type="number" id="plan-credits" name="credits" required min="0" step="1" value=(p.credits_included); }
                    @if pack {
                        div { label for="plan-price" { "Price" } input type="text" id="plan-price" name="price" inputmode="decimal" value=(price_text(p.price, &p.currency)); }
                    } @else {
                        div { label for="plan-monthly" { "Price per month" } input type="text" id="plan-monthly" name="price_monthly" inputmode="decimal" value=(price_text(p.price_monthly, &p.currency)); }
                        div { label for="plan-yearly" { "Price per year" } input type="text" id="plan-yearly" name="price_yearly" inputmode="decimal" value=(price_text(p.price_yearly, &p.currency)); }
                    }
                    div { label for="plan-expire" { "Credits expire after (days, blank = never)" } input type="number" id="plan-expire" name="credits_expire_days" min="1" step="1" value=[p.credits_expire_days]; }
                    div { label for="plan-stripe" { @if pack { "Stripe price id" } @else { "Stripe price id (monthly)" } } input type="text" id="plan-stripe" name="stripe_price" value=[stripe.as_deref()]; }
                    div { label for="plan-creem" { @if pack { "Creem product id" } @else { "Creem product id (monthly)" } } input type="text" id="plan-creem" name="creem_product" value=[creem.as_deref()]; }
                    @if !pack {
                        div { label for="plan-stripe-yearly" { "Stripe price id (yearly)" } input type="text" id="plan-stripe-yearly" name="stripe_price_yearly" value=[p.stripe_price_id_yearly.as_deref()]; }
                        div { label for="plan-creem-yearly" { "Creem product id (yearly)" } input type="text" id="plan-creem-yearly" name="creem_product_yearly" value=[p.creem_product_id_yearly.as_deref()]; }
                    }
                }
                div { label for="plan-description" { "Description" } input type="text" id="plan-description" name="description" maxlength="1000" value=(p.description); }
                div {
                    label for="plan-features" { "Features (one per line, shown to buyers)" }
                    textarea id="plan-features" name="features" rows="4" { (p.features.join("\n")) }
                }
                div.actions { button type="submit" id="save-plan" { "Save" } a href="/console/plans" { "Back to plans" } }
            }
        }
    };
    Ok(view::page(
        op,
        "/console/plans",
        &format!("Plan {}", p.name),
        body,
    ))
}

/// One plan or pack, with its fields to edit.
pub(crate) async fn plan(
    state: web::Data<AppState>,
    Signed(op): Signed,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    shown(plan_page(&state, &op, &id, None)).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct PlanEditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    credits: String,
    price: Option<String>,
    price_monthly: Option<String>,
    price_yearly: Option<String>,
    #[serde(default)]
    credits_expire_days: String,
    #[serde(default)]
    stripe_price: String,
    #[serde(default)]
    creem_product: String,
    stripe_price_yearly: Option<String>,
    creem_product_yearly: Option<String>,
    #[serde(default)]
    description: String,
    features: Option<String>,
}

impl PlanEditForm {
    /// The change the form asks for: every field the form shows replaces the stored one (a
    /// blank price or id clears it); the kind and currency stay.
    fn patch(&self, current: &tally_catalog::Plan) -> Result<PlanPatch, String> {
        let pack = current.kind == PlanKind::CreditPack;
        let price = |field: &str, s: &Option<String>| -> Result<Option<Option<i64>>, String> {
            s.as_deref()
                .map(|s| amount(field, s, &current.currency))
                .transpose()
        };
        let days = whole("credits expire after", &self.credits_expire_days)?
            .map(|d| {
                u32::try_from(d).map_err(|_| "credits expire after: 1 or more days".to_owned())
            })
            .transpose()?;
        let stripe = Some(given(&self.stripe_price));
        let creem = Some(given(&self.creem_product));
        Ok(PlanPatch {
            name: Some(self.name.trim().to_owned()),
            description: Some(self.description.trim().to_owned()),
            credits_included: Some(whole("credits", &self.credits)?.unwrap_or(0)),
            price: if pack {
                price("price", &self.price)?
            } else {
                None
            },
            price_monthly: if pack {
                None
            } else {
                price("price per month", &self.price_monthly)?
            },
            price_yearly: if pack {
                None
            } else {
                price("price per year", &self.price_yearly)?
            },
            stripe_price_id: if pack { stripe.clone() } else { None },
            stripe_price_id_monthly: if pack { None } else { stripe },
            creem_product_id: if pack { creem.clone() } else { None },
            creem_product_id_monthly: if pack { None } else { creem },
            stripe_price_id_yearly: if pack {
                None
            } else {
                self.stripe_price_yearly.as_deref().map(given)
            },
            creem_product_id_yearly: if pack {
                None
            } else {
                self.creem_product_yearly.as_deref().map(given)
            },
            features: self.features.as_deref().map(|text| {
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            credits_expire_days: Some(days),
            ..Default::default()
        })
    }
}

/// Saves a plan's edited fields (the catalog checks the merged plan as a whole).
pub(crate) async fn update_plan(
    state: web::Data<AppState>,
    Signed(op): Signed,
    id: web::Path<String>,
    form: web::Form<PlanEditForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&op, &form.csrf)?;
    let current = state
        .catalog
        .plan(&op.app, &id)
        .await?
        .ok_or_else(|| PageError::NotFound("no such plan".into()))?;
    let (catalog, app, actor, plan_id) = (
        state.catalog.clone(),
        op.app.clone(),
        console_actor(&op),
        id.to_string(),
    );
    let made = make(
        form.patch(&current).map_err(unreadable),
        |patch| async move { catalog.update_plan(&app, &plan_id, patch, &actor).await },
    )
    .await;
    form_outcome(made, "/console/plans", |n| {
        plan_page(&state, &op, &id, Some(n))
    })
    .await
}

async fn coupon_page(
    state: &AppState,
    op: &Operator,
    id: &str,
    notice_: Option<Notice>,
) -> Result<Markup, PageError> {
    let c = state.catalog.coupon_by_id(&op.app, id).await?;
    let plans = state.catalog.plans(&op.app).await?;
    let expires = c
        .expires_at
        .map(|at| format!("{}T{:02}:{:02}", at.date(), at.hour(), at.minute()));
    let body = html! {
        (notice(&notice_))
        section.panel aria-labelledby="edit-coupon" {
            h2 id="edit-coupon" { "Coupon " code { (c.code) } }
            p.muted { "The code, the discount and its duration are fixed; a different discount is a new coupon. Redeemed " (number(c.times_redeemed)) " times." }
            form method="post" action={ "/console/coupons/" (segment(&c.id)) } {
                input type="hidden" name="csrf" value=(op.csrf_token);
                div.fields {
                    div { label for="coupon-max" { "Redemptions allowed (blank = unlimited)" } input type="number" id="coupon-max" name="max_redemptions" min="1" step="1" value=[c.max_redemptions]; }
                    div { label for="coupon-expires" { "Expires (UTC, blank = never)" } input type="datetime-local" id="coupon-expires" name="expires_at" value=[expires]; }
                }
                fieldset.choices {
                    legend { "Applies to (none ticked = every plan and pack)" }
                    input type="hidden" name="plans_listed" value="1";
                    @for plan in &plans {
                        label {
                            input type="checkbox" name={ "plan:" (plan.id) } value="on" checked[c.plan_ids.contains(&plan.id)];
                            " " (plan.name) " " span.muted { "(" (plan.id) ")" }
                        }
                    }
                    @if plans.is_empty() { p.muted { "No plans yet." } }
                }
                div.actions { button type="submit" id="save-coupon" { "Save" } a href="/console/coupons" { "Back to coupons" } }
            }
        }
    };
    Ok(view::page(
        op,
        "/console/coupons",
        &format!("Coupon {}", c.code),
        body,
    ))
}

/// One coupon, with what may change on it.
pub(crate) async fn coupon(
    state: web::Data<AppState>,
    Signed(op): Signed,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    shown(coupon_page(&state, &op, &id, None)).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct CouponEditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    max_redemptions: String,
    #[serde(default)]
    expires_at: String,
    /// Present when the form listed the plans; then the ticked `plan:<id>` boxes are the
    /// coupon's plans.
    plans_listed: Option<String>,
    #[serde(flatten)]
    ticked: std::collections::BTreeMap<String, String>,
}

impl CouponEditForm {
    fn patch(&self) -> Result<CouponPatch, String> {
        let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
        let expires_at = given(&self.expires_at)
            .map(|s| {
                time::PrimitiveDateTime::parse(&s, &format)
                    .map(time::PrimitiveDateTime::assume_utc)
                    .map_err(|_| "expires: a date and time".to_owned())
            })
            .transpose()?;
        Ok(CouponPatch {
            max_redemptions: Some(whole("redemptions allowed", &self.max_redemptions)?),
            expires_at: Some(expires_at),
            plan_ids: self
                .plans_listed
                .as_ref()
                .map(|_| super::pages::ticked(&self.ticked, "plan:")),
            ..Default::default()
        })
    }
}

/// Saves a coupon's limit and expiry (checked by `CouponPatch::merge`).
pub(crate) async fn update_coupon(
    state: web::Data<AppState>,
    Signed(op): Signed,
    id: web::Path<String>,
    form: web::Form<CouponEditForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&op, &form.csrf)?;
    let (catalog, app, coupon_id) = (state.catalog.clone(), op.app.clone(), id.to_string());
    let made = make(form.patch().map_err(unreadable), |patch| async move {
        catalog.update_coupon(&app, &coupon_id, patch).await
    })
    .await;
    form_outcome(made, "/console/coupons", |n| {
        coupon_page(&state, &op, &id, Some(n))
    })
    .await
}
