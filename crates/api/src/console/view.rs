//! The console's look: the page frame, numbers, money and instants for people, and the chart.

use maud::{DOCTYPE, Markup, html};
use tally_console::Operator;
use time::OffsetDateTime;

use super::{css_path, js_path};

/// The console's sections, in navigation order: (path, label).
const NAV: [(&str, &str); 11] = [
    ("/console", "Overview"),
    ("/console/customers", "Customers"),
    ("/console/orders", "Orders"),
    ("/console/events", "Provider events"),
    ("/console/plans", "Plans"),
    ("/console/coupons", "Coupons"),
    ("/console/pricing", "Pricing"),
    ("/console/webhooks", "Webhooks"),
    ("/console/checkin", "Check-in"),
    ("/console/codes", "Codes"),
    ("/console/branding", "Portal"),
];

/// The stylesheet's `<link>` and the script that shows instants in the reader's time zone.
pub(crate) fn css_link() -> Markup {
    html! {
        link rel="stylesheet" href=(css_path());
        script src=(js_path()) defer {}
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Tally console" }
            (css_link())
        }
    }
}

/// A page of the signed-in console: navigation, the app, sign-out, and `body`.
pub(crate) fn page(op: &Operator, current: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                div.shell {
                    aside.side {
                        div.brand { "Tally" }
                        div.app {
                            "App " strong { (op.app) } " · " (op.operator) br;
                            a.switch href="/console/apps" aria-current=[(current == "/console/apps").then_some("page")] { "Switch app" }
                        }
                        nav aria-label="Console" {
                            @for (path, label) in NAV {
                                @if path == current {
                                    a href=(path) aria-current="page" { (label) }
                                } @else {
                                    a href=(path) { (label) }
                                }
                            }
                        }
                        form method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(op.csrf_token);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                    main id="main" { h1 { (title) } (body) }
                }
            }
        }
    }
}

/// A page outside a session (sign-in, refusals).
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { main.login { div.panel { h1 { (title) } (body) } } }
        }
    }
}

/// A page that only says something.
pub(crate) fn message_page(title: &str, message: &str) -> Markup {
    bare(
        title,
        html! { p { (message) } p { a href="/console" { "Back to the console" } } },
    )
}

/// `1234567` as `1,234,567`.
pub(crate) fn number(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Minor units as money with its currency: `1498, "usd"` → `14.98 USD`.
pub(crate) fn money(minor: i64, currency: &str) -> String {
    let code = currency.to_ascii_uppercase();
    // Zero-decimal currencies count whole units.
    if matches!(currency, "jpy" | "krw") {
        return format!("{} {code}", number(minor));
    }
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    format!(
        "{sign}{}.{:02} {code}",
        number(i64::try_from(minor / 100).unwrap_or(i64::MAX)),
        minor % 100
    )
}

/// Money typed by a person (`9.99`, `10`, `1,000.50`) in minor units of `currency`; `None`
/// when it is not an amount with at most the currency's decimals.
pub(crate) fn parse_money(s: &str, currency: &str) -> Option<i64> {
    let decimals: u32 = if matches!(currency, "jpy" | "krw") {
        0
    } else {
        2
    };
    let s: String = s.trim().chars().filter(|c| *c != ',').collect();
    let (whole, fraction) = s.split_once('.').unwrap_or((&s, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if fraction.len() > decimals as usize || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.contains('.') && (decimals == 0 || fraction.is_empty()) {
        return None;
    }
    let scale = 10_i64.pow(decimals);
    let padded = format!("{fraction:0<width$}", width = decimals as usize);
    let minor = if padded.is_empty() {
        0
    } else {
        padded.parse::<i64>().ok()?
    };
    whole
        .parse::<i64>()
        .ok()?
        .checked_mul(scale)?
        .checked_add(minor)
}

/// An instant for people: UTC on the server; the page's script rewrites it in the reader's
/// time zone and keeps the exact UTC instant on hover.
pub(crate) fn instant(at: OffsetDateTime) -> Markup {
    let iso = crate::dto::rfc3339(at);
    let short = format!("{} {:02}:{:02} UTC", at.date(), at.hour(), at.minute());
    html! { time datetime=(iso) title=(iso) { (short) } }
}

/// Bars of credits granted and spent per day, drawn on the server.
pub(crate) fn chart(days: &[(String, i64, i64)]) -> Markup {
    const HEIGHT: i64 = 160;
    const SLOT: i64 = 24;
    let max = days
        .iter()
        .map(|(_, g, s)| (*g).max(*s))
        .max()
        .unwrap_or(0)
        .max(1);
    let width = SLOT * days.len().max(1) as i64;
    let bar = |v: i64| v * HEIGHT / max;
    html! {
        div.legend {
            span { span.swatch.granted {} "Granted" }
            span { span.swatch.spent {} "Spent" }
        }
        svg.chart viewBox={ "0 0 " (width) " " (HEIGHT + 20) } role="img"
            aria-label="Credits granted and spent per day" {
            @for (i, (day, granted, spent)) in days.iter().enumerate() {
                @let x = i as i64 * SLOT;
                rect.granted x=(x + 3) y=(HEIGHT - bar(*granted)) width="8" height=(bar(*granted)) {
                    title { (day) ": " (number(*granted)) " granted" }
                }
                rect.spent x=(x + 12) y=(HEIGHT - bar(*spent)) width="8" height=(bar(*spent)) {
                    title { (day) ": " (number(*spent)) " spent" }
                }
                @if i % 7 == 0 {
                    text x=(x + 2) y=(HEIGHT + 14) { (day.get(5..).unwrap_or(day)) }
                }
            }
        }
    }
}

/// A status as a coloured pill.
pub(crate) fn pill(status: &str) -> Markup {
    html! { span class={ "pill " (status) } { (status.replace('_', " ")) } }
}

/// Percent-encodes a path segment (user ids may hold any character).
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_money_read_like_people_write_them() {
        assert_eq!(number(0), "0");
        assert_eq!(number(999), "999");
        assert_eq!(number(1000), "1,000");
        assert_eq!(number(-1234567), "-1,234,567");
        assert_eq!(money(1498, "usd"), "14.98 USD");
        assert_eq!(money(-5, "eur"), "-0.05 EUR");
        assert_eq!(money(123456789, "usd"), "1,234,567.89 USD");
        assert_eq!(money(5000, "jpy"), "5,000 JPY");
    }

    #[test]
    fn money_typed_by_people() {
        assert_eq!(parse_money("9.99", "usd"), Some(999));
        assert_eq!(parse_money("10", "usd"), Some(1000));
        assert_eq!(parse_money("1,000.5", "usd"), Some(100_050));
        assert_eq!(parse_money("0.05", "eur"), Some(5));
        assert_eq!(parse_money("500", "jpy"), Some(500));
        for bad in ["", "-1", "9.999", "abc", "1.2.3", ".5", "5.", "1e3"] {
            assert_eq!(parse_money(bad, "usd"), None, "{bad:?}");
        }
        assert_eq!(parse_money("5.5", "jpy"), None);
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("alice"), "alice");
        assert_eq!(segment("a b/c?<x>"), "a%20b%2Fc%3F%3Cx%3E");
    }

    #[test]
    fn escaped_by_the_template() {
        let op = Operator {
            app: "<app>".into(),
            operator: "\"ops\"".into(),
            csrf_token: "t".into(),
        };
        let html = page(&op, "/console", "<script>alert(1)</script>", html! {}).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("&lt;app&gt;"));
    }
}
