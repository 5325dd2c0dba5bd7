//! The committed OpenAPI document is the one the code generates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn committed_openapi_document_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}); generate it with `cargo run -- openapi > docs/openapi.json`",
            path.display()
        )
    });
    let generated = tally_api::openapi::document();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "docs/openapi.json is out of date; regenerate it with \
         `cargo run -- openapi > docs/openapi.json`"
    );
    // The document is valid JSON describing the routes the server serves.
    let doc: serde_json::Value =
        serde_json::from_str(&committed).expect("docs/openapi.json is JSON");
    for route in [
        "/credits/balance",
        "/credits/transactions",
        "/checkin",
        "/checkin/status",
        "/admin/credits/transactions",
        "/admin/credits/manual",
        "/admin/checkin/config",
        "/internal/credits/check",
        "/internal/credits/consume",
        "/internal/credits/grant",
        "/admin/users",
        "/billing/portal-sessions",
        "/internal/portal-sessions",
        "/admin/stats",
        "/admin/users/{user_id}",
        "/admin/orders",
        "/admin/orders/{id}",
        "/admin/subscriptions",
        "/admin/subscriptions/{id}",
        "/admin/billing/coupons/{id}",
    ] {
        assert!(doc["paths"][route].is_object(), "{route} is not documented");
    }
}
