//! The console's pages and forms.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{Markup, html};
use serde::Deserialize;
use tally_console::{ConsoleError, Operator, new_secret};
use tally_ledger::stats::{Bucket, StatsQuery};
use tally_ledger::{AccountQuery, AccountRef, Movement, MovementKind, TransactionQuery};
use time::Duration;

use super::view::{self, chart, instant, money, number, pill, segment};
use super::{ConsoleConfig, PageError, Signed, check_csrf, html, see_other, session_cookie};
use crate::routes::detached;
use crate::{ApiError, AppState};

/// Rows per page of the console's lists.
const PAGE: i64 = 25;

fn config(state: &AppState) -> Result<&ConsoleConfig, PageError> {
    state
        .console
        .as_ref()
        .ok_or_else(|| PageError::NotFound("the console is switched off".into()))
}

/// What went wrong with a form, for the operator.
pub(crate) fn refusal(e: &ApiError) -> String {
    let fields = e
        .details
        .as_ref()
        .and_then(|d| d["fields"].as_array())
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| {
                    Some(format!(
                        "{}: {}",
                        f["field"].as_str()?,
                        f["message"].as_str()?
                    ))
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty());
    fields.unwrap_or_else(|| e.message.clone())
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    token: Option<String>,
}

/// The page a console link opens: one button, so that a link preview cannot use the link up.
pub(crate) async fn login_page(
    state: web::Data<AppState>,
    query: web::Query<TokenQuery>,
) -> Result<HttpResponse, PageError> {
    config(&state)?;
    let body = match query.token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => html! {
            p { "This one-time link signs you in to the operators' console." }
            form method="post" action="/console/login" {
                input type="hidden" name="token" value=(token);
                button id="sign-in" type="submit" { "Sign in" }
            }
        },
        None => html! {
            p { "Sign in with a console link. On the server, run:" }
            p { code { "tally console-link" } }
            p.muted { "It prints a URL that works once, for 10 minutes." }
        },
    };
    Ok(html(StatusCode::OK, view::bare("Sign in", body)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenForm {
    token: String,
}

/// Redeems a console link and opens a session.
pub(crate) async fn login(
    state: web::Data<AppState>,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, PageError> {
    let config = config(&state)?;
    match state
        .sessions
        .sign_in(&form.token, state.ledger.now())
        .await
    {
        Ok((id, _)) => {
            let secure = if config.secure_cookie { "; Secure" } else { "" };
            let mut answer = see_other("/console");
            answer.headers_mut().insert(
                header::SET_COOKIE,
                header::HeaderValue::from_str(&format!(
                    "{}={id}; Path=/console; HttpOnly; SameSite=Strict{secure}",
                    super::COOKIE
                ))
                .map_err(|_| PageError::Internal)?,
            );
            Ok(answer)
        }
        Err(ConsoleError::LinkInvalid) => Ok(html(
            StatusCode::FORBIDDEN,
            view::message_page(
                "Link not valid",
                "This console link was already used, has expired, or was never issued. \
                 Run `tally console-link` for a new one.",
            ),
        )),
        Err(e) => {
            super::log_failure("console sign-in", &e);
            Err(PageError::Internal)
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

/// Ends the session.
pub(crate) async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    Signed(op): Signed,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&op, &form.csrf)?;
    if let Some(id) = session_cookie(&req) {
        state
            .sessions
            .sign_out(&id, state.ledger.now())
            .await
            .map_err(super::failed("console sign-out"))?;
    }
    let mut answer = see_other("/console/login");
    answer.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_static(
            "tally_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(answer)
}

/// The last 30 days at a glance.
pub(crate) async fn overview(
    state: web::Data<AppState>,
    Signed(op): Signed,
) -> Result<HttpResponse, PageError> {
    let config = config(&state)?;
    let now = state.ledger.now();
    let query = StatsQuery {
        app: op.app.clone(),
        from: now.date() - Duration::days(29),
        to: now.date(),
        bucket: Bucket::Day,
    };
    let ledger = state.ledger.clone();
    let (counted_at, stats) = config
        .overview
        .get(&op.app, now, || async move { ledger.stats(query).await })
        .await?;
    let sum = |f: fn(&tally_ledger::stats::StatsBucket) -> i64| -> i64 {
        stats.buckets.iter().map(f).sum()
    };
    let mut revenue = std::collections::BTreeMap::<String, i64>::new();
    for b in &stats.buckets {
        for (currency, amount) in &b.revenue {
            *revenue.entry(currency.clone()).or_default() += amount;
        }
    }
    let days: Vec<(String, i64, i64)> = stats
        .buckets
        .iter()
        .map(|b| (b.start.to_string(), b.credits.granted, b.credits.spent))
        .collect();
    let today = stats.buckets.last();
    let body = html! {
        div.cards {
            div.card { div.label { "Credits granted, 30 days" } div.value id="granted-30" { (number(sum(|b| b.credits.granted))) } }
            div.card { div.label { "Credits spent, 30 days" } div.value { (number(sum(|b| b.credits.spent))) } }
            div.card { div.label { "Revenue, 30 days" } div.value {
                @if revenue.is_empty() { "—" }
                @for (currency, amount) in &revenue { div { (money(*amount, currency)) } }
            } }
            div.card { div.label { "Active subscriptions" } div.value { (number(stats.active_subscriptions)) } }
            div.card { div.label { "New customers, 30 days" } div.value { (number(sum(|b| b.new_accounts))) } }
            div.card { div.label { "Check-ins today" } div.value { (number(today.map_or(0, |b| b.checkins))) } }
        }
        section.panel aria-labelledby="chart-title" {
            h2 id="chart-title" { "Credits per day (UTC)" }
            (chart(&days))
        }
        p.muted id="counted" { "Counted " (instant(counted_at)) "; counted again after 30 seconds." }
    };
    Ok(html(
        StatusCode::OK,
        view::page(&op, "/console", "Overview", body),
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct CustomersQuery {
    query: Option<String>,
    before: Option<String>,
}

/// Customers, newest first, searchable by user id prefix.
pub(crate) async fn customers(
    state: web::Data<AppState>,
    Signed(op): Signed,
    query: web::Query<CustomersQuery>,
) -> Result<HttpResponse, PageError> {
    let search = query.query.clone().unwrap_or_default();
    let result = state
        .ledger
        .accounts(AccountQuery {
            app: op.app.clone(),
            prefix: Some(search.clone()).filter(|s| !s.is_empty()),
            before: query.before.clone().filter(|s| !s.is_empty()),
            limit: PAGE,
        })
        .await
        .map_err(ApiError::from);
    let body = html! {
        form.search method="get" action="/console/customers" role="search" {
            label for="query" class="visually-hidden" { "User id starts with" }
            input type="search" id="query" name="query" value=(search) placeholder="User id starts with…";
            button type="submit" { "Search" }
        }
        @match &result {
            Err(e) => div.notice.error role="alert" { (refusal(e)) },
            Ok((rows, has_more)) => {
                div.panel.wide {
                    @if rows.is_empty() {
                        p.empty { "No customers" @if !search.is_empty() { " whose id starts with “" (search) "”" } "." }
                    } @else {
                        table {
                            thead { tr { th { "User" } th.num { "Balance" } th.num { "Held" } th { "Since" } th { "Last activity" } } }
                            tbody {
                                @for a in rows {
                                    tr {
                                        td { a href={ "/console/customers/" (segment(&a.user)) } { (a.user) } }
                                        td.num { (number(a.balance)) }
                                        td.num { (number(a.held)) }
                                        td { (instant(a.created_at)) }
                                        td { (instant(a.updated_at)) }
                                    }
                                }
                            }
                        }
                    }
                    @if *has_more {
                        @if let Some(last) = rows.last() {
                            div.actions { a href={ "/console/customers?query=" (segment(&search)) "&before=" (segment(&last.user)) } { "Older customers →" } }
                        }
                    }
                }
            },
        }
    };
    Ok(html(
        StatusCode::OK,
        view::page(&op, "/console/customers", "Customers", body),
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct CustomerQuery {
    before: Option<i64>,
    done: Option<i64>,
}

/// A notice at the top of a page.
pub(crate) enum Notice {
    /// It worked.
    Done(String),
    /// It was refused, and why.
    Refused(String),
}

/// The names behind a form's ticked checkboxes named `<prefix><name>` (a form's repeated
/// choices arrive as one field per box).
pub(crate) fn ticked(
    fields: &std::collections::BTreeMap<String, String>,
    prefix: &str,
) -> Vec<String> {
    fields
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .map(str::to_owned)
        .collect()
}

/// A form that could not be read, refused the way the domain's refusals are.
pub(crate) fn unreadable(message: String) -> ApiError {
    ApiError::new(crate::ErrorCode::ValidationError, message)
}

/// Where a form's change leads: on to `next` when it was made; back to the form's page (`again`)
/// with why not, answered 400, when it was refused; a failure page otherwise.
pub(crate) async fn form_outcome<T, Fut>(
    made: Result<T, ApiError>,
    next: &str,
    again: impl FnOnce(Notice) -> Fut,
) -> Result<HttpResponse, PageError>
where
    Fut: std::future::Future<Output = Result<Markup, PageError>>,
{
    match made {
        Ok(_) => Ok(see_other(next)),
        Err(e) if e.status.is_client_error() => Ok(html(
            StatusCode::BAD_REQUEST,
            again(Notice::Refused(refusal(&e))).await?,
        )),
        Err(_) => Err(PageError::Internal),
    }
}

impl Notice {
    /// The status of the page that shows this notice: 200 when it worked, else 400.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Done(_) => StatusCode::OK,
            Self::Refused(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// What became of a form's change, as a notice: done (`done` says what), or refused and why;
/// any other failure is the failure page.
pub(crate) fn outcome<T>(
    made: Result<T, ApiError>,
    done: impl FnOnce(T) -> String,
) -> Result<Notice, PageError> {
    match made {
        Ok(t) => Ok(Notice::Done(done(t))),
        Err(e) if e.status.is_client_error() => Ok(Notice::Refused(refusal(&e))),
        Err(_) => Err(PageError::Internal),
    }
}

/// Makes the change a form asks for on its own task (see [`detached`]), once the form has been
/// read (`read`); a form that could not be read is refused as `read` says.
pub(crate) async fn make<S, T, E, Fut>(
    read: Result<S, ApiError>,
    change: impl FnOnce(S) -> Fut,
) -> Result<T, ApiError>
where
    Fut: std::future::Future<Output = Result<T, E>> + 'static,
    T: 'static,
    E: 'static,
    ApiError: From<E>,
{
    detached(change(read?)).await
}

/// A page, answered 200.
pub(crate) async fn shown(
    page: impl std::future::Future<Output = Result<Markup, PageError>>,
) -> Result<HttpResponse, PageError> {
    Ok(html(StatusCode::OK, page.await?))
}

/// The notice, if any.
pub(crate) fn notice(notice: &Option<Notice>) -> Markup {
    html! {
        @match notice {
            Some(Notice::Done(m)) => div.notice.ok role="status" id="notice" { (m) },
            Some(Notice::Refused(m)) => div.notice.error role="alert" id="notice" { "Not applied: " (m) },
            None => {},
        }
    }
}

/// One customer: figures, actions, lots, holds, subscription, orders and history.
pub(crate) async fn customer(
    state: web::Data<AppState>,
    Signed(op): Signed,
    user: web::Path<String>,
    query: web::Query<CustomerQuery>,
) -> Result<HttpResponse, PageError> {
    let notice = query
        .done
        .map(|id| Notice::Done(format!("Saved as transaction {id}.")));
    let page = customer_page(&state, &op, &user, query.before, notice).await?;
    Ok(html(StatusCode::OK, page))
}

async fn customer_page(
    state: &AppState,
    op: &Operator,
    user: &str,
    before: Option<i64>,
    notice_: Option<Notice>,
) -> Result<Markup, PageError> {
    let account = AccountRef::new(op.app.clone(), user.to_owned())
        .map_err(|_| PageError::NotFound("no such customer".into()))?;
    let detail = state.ledger.account_detail(account.clone()).await?;
    let checkin = state.ledger.checkin_status(account.clone()).await?;
    let subscription = state.checkout.subscription(&op.app, user).await?;
    let orders = state.checkout.orders(&op.app, user, 10, 0).await?;
    let (history, more) = state
        .ledger
        .transactions(TransactionQuery {
            app: op.app.clone(),
            user: Some(user.to_owned()),
            limit: PAGE,
            before,
            ..Default::default()
        })
        .await?;
    let path = format!("/console/customers/{}", segment(user));
    let body = html! {
        (notice(&notice_))
        @match &detail {
            None => p.muted { "No movements yet: this user has no account in " (op.app) ". An adjustment below opens one." },
            Some((_, balance, _)) => div.cards {
                div.card { div.label { "Balance" } div.value id="balance" { (number(balance.balance)) } }
                div.card { div.label { "Available" } div.value { (number(balance.available)) } }
                div.card { div.label { "Held" } div.value { (number(balance.held)) } }
                div.card { div.label { "Check-in streak" } div.value { (number(checkin.streak)) } }
            },
        }
        section.panel aria-labelledby="adjust-title" {
            h2 id="adjust-title" { "Grant or deduct credits" }
            form method="post" action={ (path) "/adjust" } {
                input type="hidden" name="csrf" value=(op.csrf_token);
                input type="hidden" name="key" value=(new_secret());
                div.fields {
                    div {
                        label for="amount" { "Credits (negative deducts)" }
                        input type="number" id="amount" name="amount" required step="1";
                    }
                    div {
                        label for="description" { "Reason" }
                        input type="text" id="description" name="description" required maxlength="500";
                    }
                }
                label.check for="allow_negative" {
                    input type="checkbox" id="allow_negative" name="allow_negative" value="yes";
                    "Allow the balance to go below zero (a deduction larger than the balance becomes a debt)"
                }
                div.actions { button type="submit" id="apply" { "Apply" } }
            }
        }
        @if let Some((_, _, view)) = &detail {
            section.panel aria-labelledby="lots-title" {
                h2 id="lots-title" { "Live lots" }
                @if view.lots.len() as i64 >= tally_ledger::DETAIL_ROWS {
                    p.muted { "The first " (tally_ledger::DETAIL_ROWS) ", in the order they are spent." }
                }
                @if view.lots.is_empty() { p.empty { "No credits left in any lot." } } @else {
                    table { thead { tr { th { "Lot" } th.num { "Remaining" } th { "Expires" } } }
                        tbody { @for l in &view.lots { tr {
                            td { (l.id) } td.num { (number(l.remaining)) }
                            td { @match l.expires_at { Some(at) => (instant(at)), None => span.muted { "never" } } }
                        } } } }
                }
                @if !view.holds.is_empty() {
                    h2 { "Active holds" }
                    @if view.holds.len() as i64 >= tally_ledger::DETAIL_ROWS {
                        p.muted { "The first " (tally_ledger::DETAIL_ROWS) " to run out." }
                    }
                    table { thead { tr { th { "Hold" } th.num { "Credits" } th { "Releases" } } }
                        tbody { @for h in &view.holds { tr { td { (h.id) } td.num { (number(h.amount)) } td { (instant(h.expires_at)) } } } } }
                }
            }
        }
        section.panel aria-labelledby="sub-title" {
            h2 id="sub-title" { "Subscription" }
            @match &subscription {
                None => p.empty { "No subscription." },
                Some(s) => p {
                    "Plan " strong { (s.plan_id) } " (" (s.interval.as_str()) "ly, " (s.channel.as_str()) ") " (pill(s.status.as_str()))
                    @if let Some(end) = s.current_period_end { " · period ends " (instant(end)) }
                    @if s.cancel_at_period_end { " · cancels at period end" }
                },
            }
        }
        section.panel.wide aria-labelledby="orders-title" {
            h2 id="orders-title" { "Latest orders" }
            @if orders.is_empty() { p.empty { "No orders." } } @else {
                table { thead { tr { th { "Order" } th { "Type" } th { "Status" } th.num { "Amount" } th { "Created" } } }
                    tbody { @for o in &orders { tr {
                        td { code { (o.id) } } td { (o.order_type.as_str()) } td { (pill(o.status.as_str())) }
                        td.num { (money(o.amount_minor - o.discount_minor, &o.currency)) } td { (instant(o.created_at)) }
                    } } } }
            }
        }
        section.panel.wide aria-labelledby="history-title" {
            h2 id="history-title" { "History" }
            @if history.is_empty() { p.empty { "No transactions." } } @else {
                table id="history" { thead { tr { th { "Id" } th { "Type" } th.num { "Credits" } th.num { "Balance after" } th { "Description" } th { "By" } th { "When" } } }
                    tbody { @for t in &history { tr {
                        td { (t.id) } td { (t.txn_type.as_str()) } td.num { (number(t.amount)) } td.num { (number(t.balance_after)) }
                        td { (t.description) } td { @if let Some(a) = &t.actor { (a) } @else { span.muted { "—" } } }
                        td { (instant(t.created_at)) }
                    } } } }
                @if more { @if let Some(last) = history.last() {
                    div.actions { a href={ (path) "?before=" (last.id) } { "Older transactions →" } }
                } }
            }
        }
    };
    Ok(view::page(
        op,
        "/console/customers",
        &format!("Customer {user}"),
        body,
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct AdjustForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    description: String,
    allow_negative: Option<String>,
}

/// Grants or deducts credits; the operator is the transaction's actor, and the form's key makes
/// a resubmission a replay.
pub(crate) async fn adjust(
    state: web::Data<AppState>,
    Signed(op): Signed,
    user: web::Path<String>,
    form: web::Form<AdjustForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&op, &form.csrf)?;
    let form = form.into_inner();
    let refused = |message: String| async {
        let page = customer_page(&state, &op, &user, None, Some(Notice::Refused(message))).await?;
        Ok::<_, PageError>(html(StatusCode::BAD_REQUEST, page))
    };
    let amount = match form.amount.trim().parse::<i64>() {
        Ok(n) if n != 0 => n,
        _ => return refused("credits must be a whole number other than 0".into()).await,
    };
    if form.description.trim().is_empty() {
        return refused("give a reason".into()).await;
    }
    let account = AccountRef::new(op.app.clone(), user.to_string())
        .map_err(|_| PageError::NotFound("no such customer".into()))?;
    let movement = Movement {
        account,
        kind: MovementKind::Adjust {
            credits: amount,
            allow_negative: form.allow_negative.is_some(),
            expires_at: None,
        },
        description: form.description,
        idempotency_key: Some(form.key).filter(|k| !k.is_empty()),
        metadata: None,
        actor: Some(super::catalog_pages::console_actor(&op)),
    };
    let ledger = state.ledger.clone();
    match detached(async move { ledger.apply(movement).await }).await {
        Ok(txn) => Ok(see_other(&format!(
            "/console/customers/{}?done={}",
            segment(&user),
            txn.id
        ))),
        Err(e) if e.status.is_client_error() => refused(refusal(&e)).await,
        Err(_) => Err(PageError::Internal),
    }
}

async fn apps_page(
    state: &AppState,
    op: &Operator,
    switchable: bool,
    notice_: Option<Notice>,
) -> Result<Markup, PageError> {
    let apps = state
        .sessions
        .apps()
        .await
        .map_err(super::failed("listing the apps"))?;
    let body = html! {
        (notice(&notice_))
        section.panel aria-labelledby="apps-title" {
            h2 id="apps-title" { "Apps" }
            @if !switchable {
                p.muted { "Signed in through the gateway: its headers choose the app." }
            }
            table id="apps" {
                thead { tr { th { "App" } th { span.visually-hidden { "Action" } } } }
                tbody {
                    @for app in &apps {
                        tr {
                            td { (app) }
                            td {
                                @if *app == op.app {
                                    span.pill.on { "current" }
                                } @else if switchable {
                                    form.inline method="post" action="/console/apps" {
                                        input type="hidden" name="csrf" value=(op.csrf_token);
                                        input type="hidden" name="app" value=(app);
                                        button.secondary type="submit" aria-label={ "Switch to " (app) } { "Switch" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if apps.is_empty() {
                p.empty { "No app is registered." }
            }
            p.muted { "The registered apps: those of the configuration (TALLY_APPS, TALLY_SERVICE_KEYS) and those registered through POST /admin/apps." }
        }
    };
    Ok(view::page(op, "/console/apps", "Apps", body))
}

/// The registered apps, with a way to switch the session to each.
pub(crate) async fn apps(
    state: web::Data<AppState>,
    req: HttpRequest,
    Signed(op): Signed,
) -> Result<HttpResponse, PageError> {
    let switchable = session_cookie(&req).is_some() && !signed_by_gateway(&state, &req);
    Ok(html(
        StatusCode::OK,
        apps_page(&state, &op, switchable, None).await?,
    ))
}

/// Whether the gateway's headers signed this request in (they win over a session cookie).
fn signed_by_gateway(state: &AppState, req: &HttpRequest) -> bool {
    state
        .auth
        .gateway
        .as_ref()
        .and_then(|g| g.console_operator(req))
        .is_some()
}

#[derive(Debug, Deserialize)]
pub(crate) struct AppForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    app: String,
}

/// Moves the session to another registered app, then shows its overview.
pub(crate) async fn switch_app(
    state: web::Data<AppState>,
    req: HttpRequest,
    Signed(op): Signed,
    form: web::Form<AppForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&op, &form.csrf)?;
    let refused = |message: &str| Some(Notice::Refused(message.to_owned()));
    let session = session_cookie(&req).filter(|_| !signed_by_gateway(&state, &req));
    let Some(id) = session else {
        let why = refused("signed in through the gateway, whose headers choose the app");
        return Ok(html(
            StatusCode::BAD_REQUEST,
            apps_page(&state, &op, false, why).await?,
        ));
    };
    match state
        .sessions
        .switch_app(&id, &form.app, state.ledger.now())
        .await
    {
        Ok(()) => Ok(see_other("/console")),
        Err(ConsoleError::UnknownApp) => {
            let why = refused(&format!("no app named \"{}\" is registered", form.app));
            Ok(html(
                StatusCode::BAD_REQUEST,
                apps_page(&state, &op, true, why).await?,
            ))
        }
        Err(ConsoleError::SessionEnded) => Err(PageError::SignIn),
        Err(e) => {
            super::log_failure("switching the console's app", &e);
            Err(PageError::Internal)
        }
    }
}
