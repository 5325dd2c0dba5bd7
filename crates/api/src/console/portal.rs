//! The end users' billing page at `/portal/{token}`: balance, credits about to expire, history,
//! plans and credit packs to buy, the subscription with the provider's portal, and the daily
//! check-in. The token in the path is the session (15 minutes, see `tally-console`); being
//! unguessable, it also stands in for a CSRF token on the page's forms.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use tally_catalog::PlanKind;
use tally_checkout::CreateSession;
use tally_console::PortalSession;
use tally_ledger::{AccountRef, TransactionQuery};

use super::pages::{Notice, notice, refusal};
use super::view::{css_link, instant, money, number};
use super::{PageError, html, see_other};
use crate::routes::detached;
use crate::{ApiError, AppState};

/// History rows on the page.
const HISTORY: i64 = 20;

async fn session(state: &AppState, token: &str) -> Result<PortalSession, PageError> {
    match state.sessions.portal(token, state.ledger.now()).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(PageError::PortalExpired),
        Err(e) => {
            tracing::error!(error = %e, "portal session lookup failed");
            Err(PageError::Internal)
        }
    }
}

fn account(s: &PortalSession) -> Result<AccountRef, PageError> {
    AccountRef::new(s.app.clone(), s.user.clone()).map_err(|_| PageError::PortalExpired)
}

async fn portal_page(
    state: &AppState,
    token: &str,
    s: &PortalSession,
    notice_: Option<Notice>,
) -> Result<Markup, PageError> {
    let account = account(s)?;
    let balance = state
        .ledger
        .balance(account.clone())
        .await
        .map_err(ApiError::from)?;
    let checkin = state
        .ledger
        .checkin_status(account.clone())
        .await
        .map_err(ApiError::from)?;
    let subscription = state
        .checkout
        .subscription(&s.app, &s.user)
        .await
        .map_err(ApiError::from)?;
    let plans = state
        .catalog
        .public_plans(&s.app)
        .await
        .map_err(ApiError::from)?;
    let (history, _) = state
        .ledger
        .transactions(TransactionQuery {
            app: s.app.clone(),
            user: Some(s.user.clone()),
            limit: HISTORY,
            ..Default::default()
        })
        .await
        .map_err(ApiError::from)?;
    let channels = state.checkout.channels();
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
                    form method="post" action={ (base) "/manage" } {
                        button.secondary type="submit" id="manage" { "Manage subscription" }
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
    Ok(frame(s, body))
}

/// The portal's frame: the app's name, a way back, and `body`.
fn frame(s: &PortalSession, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Billing · " (s.app) }
                (css_link())
            }
            body {
                header.portal-head {
                    div.brand { (s.app) }
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
    Ok(html(
        StatusCode::OK,
        portal_page(&state, &token, &s, None).await?,
    ))
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
    Ok(html(
        status,
        portal_page(&state, &token, &s, Some(n)).await?,
    ))
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
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| PageError::NotFound("no such plan".into()))?;
    let request = CreateSession {
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
    };
    let checkout = state.checkout.clone();
    let (app, user) = (s.app.clone(), s.user.clone());
    let result =
        detached(async move { checkout.create_session(&app, &user, request, None).await }).await;
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
        Err(e) if e.status.is_client_error() || e.status == StatusCode::BAD_GATEWAY => {
            let n = Notice::Refused(refusal(&e));
            Ok(html(e.status, portal_page(state, token, s, Some(n)).await?))
        }
        Err(_) => Err(PageError::Internal),
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
