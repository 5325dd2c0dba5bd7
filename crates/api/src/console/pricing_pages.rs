//! The console's pricing page: the app's features, their rate versions and what the free tier
//! and each plan include. Read-only: prices change through the admin API (`/admin/pricing/*`),
//! where every change is a new version.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use maud::{Markup, html};
use tally_ledger::pricing::Rate;
use tally_ledger::usage::{Entitlement, FREE_SCOPE, Overage, scope_plan};

use super::view::{self, instant, number};
use super::{PageError, Signed, html};
use crate::{ApiError, AppState};

fn price(credits: i64, per: i64) -> String {
    format!("{} per {}", number(credits), number(per))
}

fn dimensions(rate: &Rate) -> Markup {
    html! {
        @if rate.dimensions.is_empty() {
            span.muted { "default" }
        } @else {
            @for (i, (k, v)) in rate.dimensions.iter().enumerate() {
                @if i > 0 { ", " }
                code { (k) "=" (v) }
            }
        }
    }
}

fn allowance(e: &Entitlement) -> Markup {
    html! {
        @match e.included {
            Some(n) => {
                (number(n)) " per " (e.reset.as_str()) ", then "
                @match e.overage { Overage::Credits => "charged at the rate", Overage::Block => "refused" }
            },
            None => "included",
        }
    }
}

/// The pricing page.
pub(crate) async fn pricing(
    state: web::Data<AppState>,
    Signed(op): Signed,
) -> Result<HttpResponse, PageError> {
    let features = state
        .ledger
        .features(&op.app)
        .await
        .map_err(ApiError::from)?;
    let rates = state
        .ledger
        .rates(&op.app, None)
        .await
        .map_err(ApiError::from)?;
    let mut scopes: BTreeMap<String, Vec<Entitlement>> = BTreeMap::new();
    for (scope, e) in state
        .ledger
        .entitlements(&op.app, None)
        .await
        .map_err(ApiError::from)?
    {
        scopes.entry(scope).or_default().push(e);
    }
    let plans = state.catalog.plans(&op.app).await.map_err(ApiError::from)?;
    let plan_name = |scope: &str| -> String {
        match scope_plan(scope) {
            Some(id) => plans
                .iter()
                .find(|p| p.id == id)
                .map_or_else(|| format!("Plan {id}"), |p| p.name.clone()),
            None if scope == FREE_SCOPE => "Free tier".to_owned(),
            None => scope.to_owned(),
        }
    };
    let body = html! {
        section.panel.wide aria-labelledby="features-title" {
            h2 id="features-title" { "Features" }
            p.muted { "Set through the admin API: " code { "/admin/pricing/features" } ", " code { "/admin/pricing/rates" } ", " code { "/admin/pricing/free-entitlements" } " and a plan's " code { "entitlements" } "." }
            @if features.is_empty() {
                p.empty { "No features yet." }
            } @else {
                table id="features" {
                    thead { tr { th { "Key" } th { "Name" } th { "Kind" } th { "Unit" } } }
                    tbody { @for f in &features { tr id={ "feature-" (f.key) } {
                        td { code { (f.key) } } td { (f.name) } td { (f.kind.as_str()) }
                        td { @match &f.unit { Some(u) => (u), None => span.muted { "—" } } }
                    } } }
                }
            }
        }
        section.panel.wide aria-labelledby="rates-title" {
            h2 id="rates-title" { "Rates" }
            @if rates.is_empty() {
                p.empty { "No rates yet." }
            } @else {
                table id="rates" {
                    thead { tr { th { "Feature" } th { "For" } th.num { "Version" } th { "Price (credits)" } th { "Tiers" } th { "In force from" } th { "By" } } }
                    tbody { @for r in &rates { tr id={ "rate-" (r.id) } {
                        td { code { (r.feature) } } td { (dimensions(r)) } td.num { (r.version) }
                        td { (price(r.credits, r.per)) }
                        td { @if r.tiers.is_empty() { span.muted { "—" } } @else {
                            @for t in &r.tiers { "≤ " (number(t.up_to)) ": " (price(t.credits, t.per)) br; }
                        } }
                        td { (instant(r.effective_from)) } td { (r.created_by) }
                    } } }
                }
            }
        }
        section.panel.wide aria-labelledby="entitlements-title" {
            h2 id="entitlements-title" { "What each plan includes" }
            @if scopes.is_empty() {
                p.empty { "No entitlements yet: every metered feature is charged at its rate." }
            } @else {
                table id="entitlements" {
                    thead { tr { th { "Plan" } th { "Feature" } th { "Allowance" } } }
                    tbody { @for (scope, list) in &scopes { @for e in list { tr {
                        td { (plan_name(scope)) } td { code { (e.feature) } } td { (allowance(e)) }
                    } } } }
                }
            }
        }
    };
    Ok(html(
        StatusCode::OK,
        view::page(&op, "/console/pricing", "Pricing", body),
    ))
}
