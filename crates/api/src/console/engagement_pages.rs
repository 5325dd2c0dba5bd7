//! The console's check-in settings and redemption codes.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use maud::{Markup, html};
use serde::Deserialize;
use tally_console::Operator;
use tally_ledger::{CheckinConfig, CodeBatchRequest, RedemptionCode};

use super::catalog_pages::console_actor;
use super::pages::{Notice, form_outcome, make, notice, outcome, shown};
use super::view::{self, instant, number};
use super::{PageError, Signed, check_csrf, html};
use crate::{ApiError, AppState};

/// Codes listed on the page and in the CSV.
const CODES: i64 = 1000;

async fn checkin_page(
    state: &AppState,
    op: &Operator,
    notice_: Option<Notice>,
) -> Result<Markup, PageError> {
    let config = state.ledger.checkin_config(&op.app).await?;
    let rewards: Vec<String> = config.rewards.iter().map(i64::to_string).collect();
    let body = html! {
        (notice(&notice_))
        section.panel aria-labelledby="checkin-title" {
            h2 id="checkin-title" { "Daily check-in" }
            p.muted { "Users check in once per local day; the reward follows their streak (day 1, day 2, …), and the last reward repeats." }
            form method="post" action="/console/checkin" {
                input type="hidden" name="csrf" value=(op.csrf_token);
                label.check for="checkin-enabled" {
                    input type="checkbox" id="checkin-enabled" name="enabled" value="yes" checked[config.enabled];
                    "Check-in is on"
                }
                div.fields {
                    div { label for="checkin-rewards" { "Rewards by streak day (comma-separated)" }
                        input type="text" id="checkin-rewards" name="rewards" value=(rewards.join(", ")) required; }
                    div { label for="checkin-timezone" { "Time zone (IANA)" }
                        input type="text" id="checkin-timezone" name="timezone" value=(config.timezone) required; }
                    div { label for="checkin-expire" { "Credits expire after (days, blank = never)" }
                        input type="number" id="checkin-expire" name="credits_expire_days" min="1" step="1"
                            value=[config.credits_expire_days]; }
                }
                div.actions { button type="submit" id="save-checkin" { "Save" } }
            }
        }
    };
    Ok(view::page(op, "/console/checkin", "Check-in", body))
}

/// The check-in settings.
pub(crate) async fn checkin(
    state: web::Data<AppState>,
    Signed(op): Signed,
) -> Result<HttpResponse, PageError> {
    shown(checkin_page(&state, &op, None)).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct CheckinForm {
    #[serde(default)]
    csrf: String,
    enabled: Option<String>,
    #[serde(default)]
    rewards: String,
    #[serde(default)]
    timezone: String,
    #[serde(default)]
    credits_expire_days: String,
}

impl CheckinForm {
    fn config(&self) -> Result<CheckinConfig, String> {
        let rewards = self
            .rewards
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<i64>()
                    .map_err(|_| format!("rewards: '{s}' is not a whole number"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let days = Some(self.credits_expire_days.trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<u32>()
                    .map_err(|_| "credits expire after: 1 or more days".to_owned())
            })
            .transpose()?;
        Ok(CheckinConfig {
            enabled: self.enabled.is_some(),
            rewards,
            timezone: self.timezone.trim().to_owned(),
            credits_expire_days: days,
        })
    }
}

/// Saves the check-in settings (validated like `PUT /admin/checkin/config`).
pub(crate) async fn save_checkin(
    state: web::Data<AppState>,
    Signed(op): Signed,
    form: web::Form<CheckinForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&op, &form.csrf)?;
    let (ledger, app, actor) = (state.ledger.clone(), op.app.clone(), console_actor(&op));
    let read = form.config().map_err(|m| ApiError::validation("form", m));
    let made = make(read, |config| async move {
        ledger.set_checkin_config(&app, config, &actor).await
    })
    .await;
    let n = outcome(made, |_| "Saved.".into())?;
    Ok(html(n.status(), checkin_page(&state, &op, Some(n)).await?))
}

async fn all_codes(state: &AppState, app: &str) -> Result<Vec<RedemptionCode>, PageError> {
    Ok(state.ledger.codes(app, CODES, 0).await?)
}

async fn codes_page(
    state: &AppState,
    op: &Operator,
    notice_: Option<Notice>,
) -> Result<Markup, PageError> {
    let codes = all_codes(state, &op.app).await?;
    let body = html! {
        (notice(&notice_))
        section.panel aria-labelledby="new-codes" {
            h2 id="new-codes" { "New batch" }
            form method="post" action="/console/codes" {
                input type="hidden" name="csrf" value=(op.csrf_token);
                div.fields {
                    div { label for="codes-count" { "How many codes" } input type="number" id="codes-count" name="count" min="1" max="1000" step="1" required value="10"; }
                    div { label for="codes-credits" { "Credits per redemption" } input type="number" id="codes-credits" name="credits" min="1" step="1" required; }
                    div { label for="codes-uses" { "Uses per code" } input type="number" id="codes-uses" name="max_uses" min="1" step="1" required value="1"; }
                    div { label for="codes-description" { "Description" } input type="text" id="codes-description" name="description" required maxlength="500"; }
                }
                div.actions { button type="submit" id="create-codes" { "Create codes" } }
            }
        }
        section.panel.wide aria-labelledby="codes-title" {
            h2 id="codes-title" { "Codes" }
            @if codes.is_empty() { p.empty { "No codes yet." } } @else {
                p { a href="/console/codes.csv" download="redemption-codes.csv" { "Download as CSV" } }
                table id="codes" {
                    thead { tr { th { "Code" } th { "Batch" } th.num { "Credits" } th.num { "Uses" } th { "Expires" } th { "Description" } th { "Created" } } }
                    tbody { @for c in &codes { tr {
                        td { code { (c.code) } }
                        td.muted { (c.batch) }
                        td.num { (number(c.credits)) }
                        td.num { (number(c.uses)) " / " (number(c.max_uses)) }
                        td { @match c.expires_at { Some(at) => (instant(at)), None => span.muted { "never" } } }
                        td { (c.description) }
                        td { (instant(c.created_at)) }
                    } } }
                }
            }
        }
    };
    Ok(view::page(op, "/console/codes", "Redemption codes", body))
}

/// The app's redemption codes, and a form for a new batch.
pub(crate) async fn codes(
    state: web::Data<AppState>,
    Signed(op): Signed,
) -> Result<HttpResponse, PageError> {
    shown(codes_page(&state, &op, None)).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct CodesForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    count: String,
    #[serde(default)]
    credits: String,
    #[serde(default)]
    max_uses: String,
    #[serde(default)]
    description: String,
}

/// Creates a batch of codes.
pub(crate) async fn create_codes(
    state: web::Data<AppState>,
    Signed(op): Signed,
    form: web::Form<CodesForm>,
) -> Result<HttpResponse, PageError> {
    check_csrf(&op, &form.csrf)?;
    let whole = |field: &str, s: &str| {
        s.trim()
            .parse::<i64>()
            .map_err(|_| ApiError::validation(field, "a whole number"))
    };
    let request = (|| {
        Ok::<_, ApiError>(CodeBatchRequest {
            app: op.app.clone(),
            count: whole("count", &form.count)?,
            credits: whole("credits", &form.credits)?,
            max_uses: whole("max_uses", &form.max_uses)?,
            expires_at: None,
            credits_expire_days: None,
            description: form.description.trim().to_owned(),
            created_by: console_actor(&op),
        })
    })();
    let ledger = state.ledger.clone();
    let result = make(request, |request| async move {
        ledger.create_codes(request).await
    })
    .await;
    form_outcome(result, "/console/codes", |n| {
        codes_page(&state, &op, Some(n))
    })
    .await
}

/// One CSV field, quoted when it needs to be; a leading `=`, `+`, `-` or `@` is prefixed with
/// `'` so that a spreadsheet does not run it as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The app's codes as CSV.
pub(crate) async fn codes_csv(
    state: web::Data<AppState>,
    Signed(op): Signed,
) -> Result<HttpResponse, PageError> {
    let codes = all_codes(&state, &op.app).await?;
    let mut out =
        String::from("code,batch,credits,uses,max_uses,expires_at,description,created_at\n");
    for c in &codes {
        let row = [
            csv_field(&c.code),
            csv_field(&c.batch),
            c.credits.to_string(),
            c.uses.to_string(),
            c.max_uses.to_string(),
            c.expires_at.map(crate::dto::rfc3339).unwrap_or_default(),
            csv_field(&c.description),
            crate::dto::rfc3339(c.created_at),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"redemption-codes.csv\"",
        ))
        .body(out))
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("ABCD-1234"), "ABCD-1234");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-5"), "'-5");
    }
}
