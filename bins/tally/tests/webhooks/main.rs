//! Outbound webhooks over HTTP: signed deliveries a receiver can verify, retries on the
//! injected clock, endpoints disabled after failing, events written only with their change,
//! SSRF refusals, the admin API's bad input, and (in `processes`) crash recovery and several
//! server processes sharing one PostgreSQL — each on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod admin;
mod delivery;
mod processes;
mod receiver;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tally_webhooks::WebhookSecret;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use common::{Body, Db, TestApp, admin_token};
use receiver::Received;

/// A server whose dispatcher may call local receivers and polls often.
pub async fn spawn(db: Db) -> TestApp {
    TestApp::spawn_with(db, |s| {
        s.webhook_allow_private_urls = true;
        s.webhook_poll_ms = 20;
        s.sandbox_enabled = true;
        s.allowed_redirect_hosts = "app.example".into();
    })
    .await
}

/// Registers an endpoint in the default app; answers its id and secret.
pub async fn create_endpoint(app: &TestApp, url: &str, types: Option<&[&str]>) -> (String, String) {
    let mut body = json!({ "url": url, "description": "test receiver" });
    if let Some(types) = types {
        body["event_types"] = json!(types);
    }
    let (status, body, _) = app
        .request(
            Method::POST,
            "/admin/webhooks/endpoints",
            Some(&admin_token("root")),
            &[],
            Body::Json(body),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let data = &body["data"];
    (
        data["id"].as_str().unwrap().to_owned(),
        data["secret"].as_str().unwrap().to_owned(),
    )
}

/// The default app's deliveries (newest first, up to 100), optionally filtered.
pub async fn deliveries(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, body, _) = app
        .get(
            &format!("/admin/webhooks/deliveries?limit=100{query}"),
            &admin_token("root"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

/// One delivery with its attempts.
pub async fn delivery(app: &TestApp, id: &str) -> Value {
    let (status, body, _) = app
        .get(
            &format!("/admin/webhooks/deliveries/{id}"),
            &admin_token("root"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// Waits until `check` holds for the default app's deliveries.
pub async fn wait_deliveries(
    app: &TestApp,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = deliveries(app, "").await;
        if check(&all) {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn parse_time(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().expect("a timestamp"), &Rfc3339).expect("RFC 3339")
}

/// Verifies a delivery the way a Standard Webhooks receiver does, against the wall clock.
pub fn verify(r: &Received, secret: &str) -> Result<(), tally_webhooks::VerifyError> {
    let secret = WebhookSecret::parse(secret).expect("a whsec_ secret");
    tally_webhooks::verify(
        &secret,
        r.id(),
        r.header("webhook-timestamp"),
        r.header("webhook-signature"),
        r.body.as_bytes(),
        OffsetDateTime::now_utc(),
        tally_webhooks::DEFAULT_TOLERANCE_SECONDS,
    )
}

/// The Python interpreter with the official `standardwebhooks` package, if there is one:
/// `TALLY_TEST_PYTHON`, else `python3` when it can import the package.
pub fn python_with_standardwebhooks() -> Option<String> {
    let candidates = std::env::var("TALLY_TEST_PYTHON")
        .ok()
        .into_iter()
        .chain(std::iter::once("python3".to_owned()));
    candidates.into_iter().find(|python| {
        std::process::Command::new(python)
            .args(["-c", "import standardwebhooks"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Checks deliveries with the official Python library: each `(delivery, secret, should_pass)`.
/// Answers false (with a notice) when the library is not installed.
pub fn verify_with_python(cases: &[(Received, String, bool)]) -> bool {
    let Some(python) = python_with_standardwebhooks() else {
        assert!(
            std::env::var_os("TALLY_TEST_PYTHON").is_none(),
            "TALLY_TEST_PYTHON is set but cannot import standardwebhooks"
        );
        eprintln!(
            "skipping the standardwebhooks (Python) check: no interpreter with the package; \
             set TALLY_TEST_PYTHON (.ci/run installs it)"
        );
        return false;
    };
    let input: Vec<Value> = cases
        .iter()
        .map(|(r, secret, pass)| {
            json!({
                "secret": secret,
                "headers": {
                    "webhook-id": r.id(),
                    "webhook-timestamp": r.header("webhook-timestamp"),
                    "webhook-signature": r.header("webhook-signature"),
                },
                "body": r.body,
                "expect": pass,
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.json");
    std::fs::write(&file, serde_json::to_vec(&input).unwrap()).unwrap();
    let script = format!("{}/tests/webhooks/verify.py", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&file)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "standardwebhooks disagreed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}
