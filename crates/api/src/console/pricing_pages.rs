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
use crate::AppState;

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

/// A wide panel titled `title` (its heading's id `<id>-title`): `lead`, then `table`, or `none`
/// when there is nothing to list.
fn panel(id: &str, title: &str, lead: Markup, none: Option<&str>, table: Markup) -> Markup {
    html! {
        section.panel.wide aria-labelledby={ (id) "-title" } {
            h2 id={ (id) "-title" } { (title) }
            (lead)
            @match none {
                Some(none) => p.empty { (none) },
                None => (table),
            }
        }
    }
}

/// The pricing page.
pub(crate) async fn pricing(
    state: web::Data<AppState>,
    Signed(op): Signed,
) -> Result<HttpResponse, PageError> {
    let features = state.ledger.features(&op.app).await?;
    let rates = state.ledger.rates(&op.app, None).await?;
    let mut scopes: BTreeMap<String, Vec<Entitlement>> = BTreeMap::new();
    for (scope, e) in state.ledger.entitlements(&op.app, None).await? {
        scopes.entry(scope).or_default().push(e);
    }
    let plans = state.catalog.plans(&op.app).await?;
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
    let features_table = html! {
        table id="features" {
            thead { tr { th { "Key" } th { "Name" } th { "Kind" } th { "Unit" } } }
            tbody { @for f in &features { tr id={ "feature-" (f.key) } {
                td { code { (f.key) } } td { (f.name) } td { (f.kind.as_str()) }
                td { @match &f.unit { Some(u) => (u), None => span.muted { "—" } } }
            } } }
        }
    };
    let rates_table = html! {
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
    };
    let entitlements_table = html! {
        table id="entitlements" {
            thead { tr { th { "Plan" } th { "Feature" } th { "Allowance" } } }
            tbody { @for (scope, list) in &scopes { @for e in list { tr {
                td { (plan_name(scope)) } td { code { (e.feature) } } td { (allowance(e)) }
            } } } }
        }
    };
    let where_set = html! {
        p.muted { "Set through the admin API: " code { "/admin/pricing/features" } ", " code { "/admin/pricing/rates" } ", " code { "/admin/pricing/free-entitlements" } " and a plan's " code { "entitlements" } "." }
    };
    let body = html! {
        (panel("features", "Features", where_set, features.is_empty().then_some("No features yet."), features_table))
        (panel("rates", "Rates", html! {}, rates.is_empty().then_some("No rates yet."), rates_table))
        (panel(
            "entitlements",
            "What each plan includes",
            html! {},
            scopes.is_empty().then_some("No entitlements yet: every metered feature is charged at its rate."),
            entitlements_table,
        ))
    };
    Ok(html(
        StatusCode::OK,
        view::page(&op, "/console/pricing", "Pricing", body),
    ))
}
