//! The end users' billing page at `/portal/{token}`: balance, credits about to expire, history,
//! plans and credit packs to buy, the subscription with the provider's portal, and the daily
//! check-in. The token in the path is the session (15 minutes, see `tally-console`); being
//! unguessable, it also stands in for a CSRF token on the page's forms.

use crate::checkout_dto::CreateSessionRequest;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use tally_catalog::PlanKind;
use tally_checkout::SubscriptionChange;
use tally_console::{Branding, Operator, PortalSession};
use tally_ledger::{AccountRef, TransactionQuery};

use super::catalog_pages::console_actor;
use super::pages::{Notice, notice, refusal, shown};
use super::view::{self, css_link, instant, money, number};
use super::{PageError, Signed, check_csrf, html, html_with_policy, see_other};
use crate::routes::detached;
use crate::{ApiError, AppState};

/// History rows on the page.
const HISTORY: i64 = 20;

async fn session(state: &AppState, token: &str) -> Result<PortalSession, PageError> {
    match state.sessions.portal(token, state.ledger.now()).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(PageError::PortalExpired),
        Err(e) => {
            super::log_failure("portal session lookup", &e);
            Err(PageError::Internal)
        }
    }
}

fn account(s: &PortalSession) -> Result<AccountRef, PageError> {
    AccountRef::new(s.app.clone(), s.user.clone()).map_err(|_| PageError::PortalExpired)
}

/// The billing page, answered with `status` under the portal's policy.
async fn portal_page(
    state: &AppState,
    token: &str,
    s: &PortalSession,
    notice_: Option<Notice>,
    status: StatusCode,
) -> Result<HttpResponse, PageError> {
    let account = account(s)?;
    let balance = state.ledger.balance(account.clone()).await?;
    let checkin = state.ledger.checkin_status(account.clone()).await?;
    let subscription = state.checkout.subscription(&s.app, &s.user).await?;
    let plans = state.catalog.public_plans(&s.app).await?;
    let (history, _) = state
        .ledger
        .transactions(TransactionQuery {
            app: s.app.clone(),
            user: Some(s.user.clone()),
            limit: HISTORY,
            ..Default::default()
        })
        .await?;
    let channels = state.checkout.channels();
    // One live subscription per user: plans are offered only to users without one.
    let subscribed = subscription.as_ref().is_some_and(|s| s.status.is_live());
    let base = format!("/portal/{token}");
    let buy = |plan_id: &str, interval: Option<&str>, label: Markup| {
        html! {
            form.inline method="post" action={ (base) "/buy" } {
                input type="hidden" name="plan_id" value=(plan_id);
                @if let Some(i) = interval { input type="hidden" name="interval" value=(i); }
                @if channels.len() == 1 {
                    input type="hidden" name="channel" value=(channels[0].as_str());
                } @else {
                    label.visually-hidden for={ "channel-" (plan_id) (interval.unwrap_or("")) } { "Pay with" }
                    select id={ "channel-" (plan_id) (interval.unwrap_or("")) } name="channel" {
                        @for c in &channels { option value=(c.as_str()) { (c.as_str()) } }
                    }
                }
                button type="submit" { (label) }
            }
        }
    };
    let body = html! {
        (notice(&notice_))
        div.cards {
            div.card { div.label { "Credits" } div.value id="balance" { (number(balance.balance)) } }
            div.card { div.label { "Available now" } div.value { (number(balance.available)) } }
            @if let Some(first) = balance.expiring.first() {
                div.card { div.label { "Expiring next" } div.value { (number(first.amount)) } div.muted { (instant(first.expires_at)) } }
            }
        }
        @if checkin.enabled {
            section.panel aria-labelledby="checkin-title" {
                h2 id="checkin-title" { "Daily check-in" }
                p { "Streak: " strong id="streak" { (number(checkin.streak)) } @if checkin.streak == 1 { " day." } @else { " days." } }
                @if checkin.checked_in_today {
                    p.muted { "Done for today. Next check-in from " (instant(checkin.next_checkin_at)) "." }
                } @else {
                    form method="post" action={ (base) "/checkin" } {
                        button type="submit" id="checkin" { "Check in for " (number(checkin.next_reward)) " credits" }
                    }
                }
            }
        }
        section.panel aria-labelledby="sub-title" {
            h2 id="sub-title" { "Subscription" }
            @match &subscription {
                None => p.empty { "No subscription." },
                Some(sub) => {
                    p { "Plan " strong { (plans.iter().find(|p| p.id == sub.plan_id).map_or(sub.plan_id.as_str(), |p| p.name.as_str())) }
                        " · " (sub.status.as_str().replace('_', " "))
                        @if let Some(end) = sub.current_period_end { " · current period ends " (instant(end)) }
                        @if sub.cancel_at_period_end { " · ends then" } }
                    div.actions {
                        @if sub.status.is_live() {
                            @if sub.cancel_at_period_end {
                                form.inline method="post" action={ (base) "/resume" } {
                                    button type="submit" id="resume" { "Keep my subscription" }
                                }
                            } @else {
                                form.inline method="post" action={ (base) "/cancel" } {
                                    button.secondary type="submit" id="cancel" { "Cancel at period end" }
                                }
                            }
                        }
                        // The sandbox has no portal but this page.
                        @if sub.channel != tally_checkout::Channel::Sandbox {
                            form.inline method="post" action={ (base) "/manage" } {
                                button.secondary type="submit" id="manage" { "Manage subscription" }
                            }
                        }
                    }
                },
            }
        }
        @if !plans.is_empty() && !channels.is_empty() {
            section.panel aria-labelledby="plans-title" {
                h2 id="plans-title" { "Plans and credit packs" }
                div.cards.plans {
                    @for p in &plans {
                        div.card id={ "plan-" (p.id) } {
                            div.label { (p.name) }
                            div.value { (number(p.credits_included)) " credits" @if p.kind == PlanKind::Subscription { " a period" } }
                            @if !p.description.is_empty() { p.muted { (p.description) } }
                            @if p.kind == PlanKind::CreditPack {
                                @if let Some(price) = p.price { div.actions { (buy(&p.id, None, html! { "Buy for " (money(price, &p.currency)) })) } }
                            } @else if let Some(sub) = subscription.as_ref().filter(|_| subscribed) {
                                @if sub.plan_id == p.id {
                                    p.muted { "Your plan." }
                                } @else if let Some(price) = interval_price(p, sub.interval) {
                                    div.actions {
                                        form.inline method="post" action={ (base) "/change" } {
                                            input type="hidden" name="plan_id" value=(p.id);
                                            button type="submit" id={ "switch-" (p.id) } { "Switch for " (money(price, &p.currency)) " a " (sub.interval.as_str()) }
                                        }
                                    }
                                } @else {
                                    p.muted { "Not offered " (sub.interval.as_str()) "ly." }
                                }
                            } @else {
                                div.actions {
                                    @if let Some(m) = p.price_monthly { (buy(&p.id, Some("month"), html! { (money(m, &p.currency)) " a month" })) }
                                    @if let Some(y) = p.price_yearly { (buy(&p.id, Some("year"), html! { (money(y, &p.currency)) " a year" })) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.panel.wide aria-labelledby="history-title" {
            h2 id="history-title" { "History" }
            @if history.is_empty() { p.empty { "Nothing yet." } } @else {
                table id="history" {
                    thead { tr { th { "When" } th { "What" } th.num { "Credits" } th.num { "Balance" } } }
                    tbody { @for t in &history { tr {
                        td { (instant(t.created_at)) }
                        td { (t.description) }
                        td.num { @if t.amount > 0 { "+" } (number(t.amount)) }
                        td.num { (number(t.balance_after)) }
                    } } }
                }
            }
        }
    };
    let branding = state
        .sessions
        .branding(&s.app)
        .await
        .map_err(super::failed("reading the portal's branding"))?;
    Ok(html_with_policy(
        status,
        frame(s, &branding, body),
        portal_policy(&branding),
    ))
}

/// The accent colour as a stylesheet of one rule, and the CSP source that allows exactly it.
fn accent_style(branding: &Branding) -> Option<(String, String)> {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let color = branding.accent_color.as_deref()?;
    let css = format!(":root{{--accent:{color}}}.portal-head{{background:{color}}}");
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(css.as_bytes()));
    Some((css, format!("'sha256-{hash}'")))
}

/// The portal's content security policy: the console's, plus the branding's colour rule and
/// an https logo.
fn portal_policy(branding: &Branding) -> String {
    let style = accent_style(branding).map_or(String::new(), |(_, source)| format!(" {source}"));
    format!(
        "default-src 'none'; style-src 'self'{style}; script-src 'self'; img-src 'self' https:; \
         form-action 'self' https: http:; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// The portal's frame: the app's name (and logo), a way back, and `body`.
fn frame(s: &PortalSession, branding: &Branding, body: Markup) -> Markup {
    let name = branding.display_name.as_deref().unwrap_or(&s.app);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Billing · " (name) }
                (css_link())
                @if let Some((css, _)) = accent_style(branding) { style { (css) } }
            }
            body {
                header.portal-head {
                    div.brand {
                        @if let Some(logo) = &branding.logo_url { img.logo src=(logo) alt=""; }
                        (name)
                    }
                    a href=(s.return_url) id="back" { "← Back to the app" }
                }
                main.portal { h1 { "Billing" } (body) }
            }
        }
    }
}

/// The billing page.
pub(crate) async fn page(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let s = session(&state, &token).await?;
    portal_page(&state, &token, &s, None, StatusCode::OK).await
}

/// Today's check-in.
pub(crate) async fn checkin(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let s = session(&state, &token).await?;
    let ledger = state.ledger.clone();
    let account = account(&s)?;
    let n = match detached(async move { ledger.checkin(account).await }).await {
        Ok(out) => Notice::Done(format!(
            "Checked in: +{} credits, a {}-day streak.",
            number(out.awarded),
            out.streak
        )),
        Err(e) if e.status.is_client_error() => Notice::Refused(e.message),
        Err(_) => return Err(PageError::Internal),
    };
    let status = if matches!(n, Notice::Done(_)) {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    portal_page(&state, &token, &s, Some(n), status).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct BuyForm {
    #[serde(default)]
    plan_id: String,
    #[serde(default)]
    channel: String,
    interval: Option<String>,
}

/// Opens a checkout for a plan or pack and sends the user to it.
pub(crate) async fn buy(
    state: web::Data<AppState>,
    token: web::Path<String>,
    form: web::Form<BuyForm>,
) -> Result<HttpResponse, PageError> {
    let s = session(&state, &token).await?;
    let plan = state
        .catalog
        .plan(&s.app, &form.plan_id)
        .await?
        .ok_or_else(|| PageError::NotFound("no such plan".into()))?;
    let request = CreateSessionRequest {
        channel: form.channel.clone(),
        order_type: match plan.kind {
            PlanKind::Subscription => "subscription",
            PlanKind::CreditPack => "credits",
        }
        .to_owned(),
        plan_id: plan.id,
        interval: form.interval.clone(),
        coupon_code: None,
        success_url: s.return_url.clone(),
        cancel_url: Some(s.return_url.clone()),
    }
    .command();
    let checkout = state.checkout.clone();
    let (app, user) = (s.app.clone(), s.user.clone());
    let result = match request {
        Ok(request) => {
            detached(async move { checkout.create_session(&app, &user, request, None).await }).await
        }
        Err(e) => Err(e),
    };
    redirect_or_refusal(&state, &token, &s, result.map(|session| session.url)).await
}

/// Sends the user on to `result`'s URL, or shows the page again with why not (a refusal, or
/// the provider failing).
async fn redirect_or_refusal(
    state: &AppState,
    token: &str,
    s: &PortalSession,
    result: Result<String, ApiError>,
) -> Result<HttpResponse, PageError> {
    match result {
        Ok(url) => Ok(see_other(&url)),
        Err(e) => told(state, token, s, Err(e)).await,
    }
}

/// The page again with what became of a request: done (the text says what), or why not (a
/// refusal, or the provider failing), answered with the failure's status.
async fn told(
    state: &AppState,
    token: &str,
    s: &PortalSession,
    done: Result<String, ApiError>,
) -> Result<HttpResponse, PageError> {
    let (n, status) = match done {
        Ok(text) => (Notice::Done(text), StatusCode::OK),
        Err(e) if e.status.is_client_error() || e.status == StatusCode::BAD_GATEWAY => {
            (Notice::Refused(refusal(&e)), e.status)
        }
        Err(_) => return Err(PageError::Internal),
    };
    portal_page(state, token, s, Some(n), status).await
}

/// What the user reads while the provider has yet to confirm a change.
const PENDING: &str =
    "Your request was sent to the payment provider; this page shows the change once it confirms.";

/// Cancels the user's subscription at the end of the paid period.
pub(crate) async fn cancel(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    change(state, token, SubscriptionChange::CancelAtPeriodEnd).await
}

/// Undoes a pending cancel: the subscription renews again.
pub(crate) async fn resume(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    change(state, token, SubscriptionChange::Resume).await
}

/// Asks for `change` (as `POST /subscription/cancel` and `/resume` do) and shows the page with
/// what happened, or why not.
async fn change(
    state: web::Data<AppState>,
    token: web::Path<String>,
    change: SubscriptionChange,
) -> Result<HttpResponse, PageError> {
    let s = session(&state, &token).await?;
    let checkout = state.checkout.clone();
    let (app, user) = (s.app.clone(), s.user.clone());
    let asked = detached(async move {
        checkout
            .change_subscription(&app, &user, change, None)
            .await
    })
    .await;
    let answer = match asked {
        Ok(answer) => crate::routes::subscriptions::settle(&state, answer).await,
        Err(e) => Err(e),
    };
    let text = answer.map(|done| {
        match (change, done.subscription.cancel_at_period_end) {
            (SubscriptionChange::CancelAtPeriodEnd, true) => {
                "Your subscription ends with the current period; it will not renew."
            }
            (SubscriptionChange::Resume, false) => {
                "Your subscription continues and renews as before."
            }
            _ => PENDING,
        }
        .to_owned()
    });
    told(&state, &token, &s, text).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChangeForm {
    #[serde(default)]
    plan_id: String,
}

/// Switches the user's subscription to another plan (as `POST /subscription/change` does) and
/// shows the page with what happened, or why not.
pub(crate) async fn change_plan(
    state: web::Data<AppState>,
    token: web::Path<String>,
    form: web::Form<ChangeForm>,
) -> Result<HttpResponse, PageError> {
    let s = session(&state, &token).await?;
    let checkout = state.checkout.clone();
    let (app, user, plan_id) = (s.app.clone(), s.user.clone(), form.plan_id.clone());
    let asked = detached(async move {
        checkout
            .change_plan(&app, &user, &plan_id, None, None)
            .await
    })
    .await;
    let answer = match asked {
        Ok(answer) => crate::routes::subscriptions::settle_plan_change(&state, answer).await,
        Err(e) => Err(e),
    };
    let text = answer.map(|done| {
        if done.subscription.plan_id != form.plan_id {
            return PENDING.to_owned();
        }
        let mut text = "Your plan is changed".to_owned();
        if done.preview.credits_now > 0 {
            text.push_str(&format!(
                ": +{} credits for the rest of this period",
                number(done.preview.credits_now)
            ));
        }
        if done.preview.amount_due_now_minor > 0 {
            text.push_str(&format!(
                "; about {} is charged now",
                money(done.preview.amount_due_now_minor, &done.preview.currency)
            ));
        }
        text.push('.');
        text
    });
    told(&state, &token, &s, text).await
}

/// A subscription plan's price for `interval`, if it has one.
fn interval_price(plan: &tally_catalog::Plan, interval: tally_checkout::Interval) -> Option<i64> {
    match interval {
        tally_checkout::Interval::Month => plan.price_monthly,
        tally_checkout::Interval::Year => plan.price_yearly,
    }
}

/// Sends the user to the provider's own subscription portal.
pub(crate) async fn manage(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let s = session(&state, &token).await?;
    let result = state
        .checkout
        .portal(&s.app, &s.user, Some(s.return_url.clone()))
        .await
        .map_err(ApiError::from);
    redirect_or_refusal(&state, &token, &s, result).await
}

async fn branding_page(
    state: &AppState,
    op: &Operator,
    notice_: Option<Notice>,
) -> Result<Markup, PageError> {
    let b = state
        .sessions
        .branding(&op.app)
        .await
        .map_err(super::failed("reading the portal's branding"))?;
    let body = html! {
        (notice(&notice_))
        section.panel aria-labelledby="branding-title" {
            h2 id="branding-title" { "Billing portal" }
            p.muted { "How your users' billing page presents itself. Blank fields fall back to the defaults (the app key, Tally's blue, no logo)." }
            form method="post" action="/console/branding" {
                input type="hidden" name="csrf" value=(op.csrf_token);
                div.fields {
                    div { label for="brand-name" { "Display name" } input type="text" id="brand-name" name="display_name" maxlength="100" value=[b.display_name.as_deref()]; }
                    div { label for="brand-color" { "Accent colour (#rrggbb)" } input type="text" id="brand-color" name="accent_color" maxlength="7" placeholder="#3b5bdb" value=[b.accent_color.as_deref()]; }
                    div { label for="brand-logo" { "Logo URL (https)" } input type="text" id="brand-logo" name="logo_url" value=[b.logo_url.as_deref()]; }
                }
                div.actions { button type="submit" id="save-branding" { "Save" } }
            }
        }
    };
    Ok(view::page(op, "/console/branding", "Portal", body))
}

/// The app's portal branding.
pub(crate) async fn branding(
    state: web::Data<AppState>,
    Signed(op): Signed,
) -> Result<HttpResponse, PageError> {
    shown(branding_page(&state, &op, None)).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct BrandingForm {
    #[serde(default)]
    csrf: String,
    display_name: Option<String>,
    accent_color: Option<String>,
    logo_url: Option<String>,
}

/// Saves the app's portal branding.
pub(crate) async fn save_branding(
    state: web::Data<AppState>,
    Signed(op): Signed,
    form: web::Form<BrandingForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&op, &form.csrf)?;
    let form = form.into_inner();
    let branding = Branding {
        display_name: form.display_name,
        accent_color: form.accent_color,
        logo_url: form.logo_url,
    };
    let saved = state
        .sessions
        .set_branding(&op.app, branding, &console_actor(&op), state.ledger.now())
        .await;
    let n = match saved {
        Ok(_) => Notice::Done("Saved.".into()),
        Err(Ok((field, message))) => Notice::Refused(format!("{field}: {message}")),
        Err(Err(e)) => {
            super::log_failure("saving the portal's branding", &e);
            return Err(PageError::Internal);
        }
    };
    Ok(html(n.status(), branding_page(&state, &op, Some(n)).await?))
}
