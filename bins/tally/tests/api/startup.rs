//! Unusable settings stop the server at start-up, with a message naming the setting.

use tally::Secret;

use crate::common::{Db, TestApp, fixture};

backend_tests!(bad_settings_stop_the_server);

type Configure = Box<dyn FnOnce(&mut tally::Settings) + Send>;

async fn bad_settings_stop_the_server(db: Db) {
    let cases: Vec<(&str, Configure)> = vec![
        (
            "at least 32 bytes",
            Box::new(|s| s.jwt_secret = Some(Secret::new("too-short"))),
        ),
        (
            "jwt_algorithm (TALLY_JWT_ALGORITHM): 'HS512'",
            Box::new(|s| s.jwt_algorithm = "HS512".into()),
        ),
        (
            "jwt_public_key (TALLY_JWT_PUBLIC_KEY) is required with RS256",
            Box::new(|s| s.jwt_algorithm = "RS256".into()),
        ),
        (
            "RS256 public key",
            Box::new(|s| {
                s.jwt_algorithm = "RS256".into();
                s.jwt_public_key = Some("-----BEGIN PUBLIC KEY-----\nnot a key\n".into());
            }),
        ),
        (
            "ES256 public key",
            Box::new(|s| {
                // An RSA key where an EC key belongs.
                s.jwt_algorithm = "ES256".into();
                s.jwt_public_key = Some(fixture("rs256_public.pem"));
            }),
        ),
        (
            "jwt_public_key (TALLY_JWT_PUBLIC_KEY): reading /nonexistent/key.pem",
            Box::new(|s| {
                s.jwt_algorithm = "EdDSA".into();
                s.jwt_public_key = Some("/nonexistent/key.pem".into());
            }),
        ),
        (
            "service_keys (TALLY_SERVICE_KEYS)",
            Box::new(|s| s.service_keys = Some(Secret::new("short"))),
        ),
        (
            "service_keys (TALLY_SERVICE_KEYS)",
            Box::new(|s| s.service_keys = Some(Secret::new("bad app=0123456789abcdef"))),
        ),
        (
            "apps (TALLY_APPS): 'bad app' must be 1-64 characters",
            Box::new(|s| s.apps = "shop, bad app".into()),
        ),
        (
            "gateway_secret (TALLY_GATEWAY_SECRET)",
            Box::new(|s| s.gateway_secret = Some(Secret::new("short"))),
        ),
        (
            "binding 256.0.0.1:0",
            Box::new(|s| s.bind = "256.0.0.1:0".into()),
        ),
    ];
    for (expected, configure) in cases {
        let error = TestApp::startup_error(db, configure).await;
        assert!(
            error.contains(expected),
            "expected {expected:?} in {error:?}"
        );
    }
    if db == Db::Postgres {
        let error = TestApp::startup_error(db, |s| s.jwt_secret = None).await;
        assert!(
            error.contains("TALLY_JWT_SECRET is required with PostgreSQL"),
            "{error}"
        );
    }
}
