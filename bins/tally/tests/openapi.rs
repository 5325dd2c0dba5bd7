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

/// What a generated client relies on: one name per operation, success bodies inside the
/// envelope the server writes, and the error envelope for every error status.
#[test]
fn every_operation_is_named_once_and_describes_the_envelope() {
    let doc: serde_json::Value = serde_json::from_str(&tally_api::openapi::document()).unwrap();
    let mut ids = std::collections::BTreeMap::<String, String>::new();
    let mut enveloped = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let at = format!("{} {path}", method.to_uppercase());
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: no id"));
            if let Some(other) = ids.insert(id.to_owned(), at.clone()) {
                panic!("operation id {id} names both {other} and {at}");
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                let Some(schema) = response["content"]["application/json"].get("schema") else {
                    continue;
                };
                if status.starts_with('2') {
                    assert_eq!(
                        schema["required"],
                        serde_json::json!(["success", "data"]),
                        "{at} {status}"
                    );
                    assert_eq!(
                        schema["properties"]["success"]["enum"],
                        serde_json::json!([true]),
                        "{at}"
                    );
                    enveloped += 1;
                } else {
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/ErrorEnvelope",
                        "{at} {status}"
                    );
                }
            }
            assert!(
                op["responses"]["default"].is_object(),
                "{at}: no default (error) response"
            );
        }
    }
    assert!(enveloped > 50, "only {enveloped} success bodies");
    let codes = &doc["components"]["schemas"]["ErrorEnvelope"]["properties"]["error"]["properties"]
        ["code"]["enum"];
    for code in [
        "VALIDATION_ERROR",
        "INSUFFICIENT_CREDITS",
        "ENTITLEMENT_EXCEEDED",
        "NOT_FOUND",
    ] {
        assert!(
            codes.as_array().unwrap().iter().any(|c| c == code),
            "{code} not listed"
        );
    }
}

/// The limits the credits endpoints enforce are stated in the OpenAPI document and in
/// `docs/api.md`.
#[test]
fn the_enforced_limits_are_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("docs/openapi.json")).unwrap())
            .unwrap();
    for request in ["ConsumeRequest", "GrantRequest"] {
        let fields = &doc["components"]["schemas"][request]["properties"];
        assert_eq!(fields["user_id"]["maxLength"], 128, "{request}");
        assert_eq!(fields["user_id"]["minLength"], 1, "{request}");
        assert_eq!(fields["description"]["maxLength"], 500, "{request}");
        assert_eq!(fields["idempotency_key"]["maxLength"], 255, "{request}");
        assert_eq!(fields["amount"]["minimum"], 1, "{request}");
        assert_eq!(
            fields["amount"]["maximum"], 1_000_000_000_000_i64,
            "{request}"
        );
        let metadata = fields["metadata"]["description"].as_str().unwrap();
        assert!(metadata.contains("4,096 bytes"), "{request}: {metadata}");
    }
    for path in ["/orders", "/credits/transactions", "/admin/billing/coupons"] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let param = |name: &str| {
            params
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{path} has no {name}"))["schema"]
                .clone()
        };
        assert_eq!(param("limit")["maximum"], 100, "{path}");
        assert_eq!(param("offset")["maximum"], 1_000_000, "{path}");
    }
    let api = std::fs::read_to_string(root.join("docs/api.md")).unwrap();
    for row in [
        "| `user_id` (and a token's `sub`) | 1–128 characters, no control characters |",
        "| `description` | at most 500 characters, no control characters",
        "| `idempotency_key` | 1–255 printable ASCII characters, no spaces |",
        "| `metadata` | a JSON object of at most 4,096 bytes |",
        "| `limit` / `offset` | 1–100 / 0 to 1,000,000;",
    ] {
        assert!(api.contains(row), "docs/api.md lacks {row}");
    }
}
