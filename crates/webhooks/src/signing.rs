//! [Standard Webhooks](https://www.standardwebhooks.com/) signatures.
//!
//! Every delivery carries `webhook-id`, `webhook-timestamp` (unix seconds) and
//! `webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`. The key is the
//! base64-decoded part of a `whsec_…` secret. While a secret is being rotated the header holds one
//! space-separated `v1,` entry per secret, and a receiver accepts the message if any entry matches.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the message id (the event id; the same on every retry).
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the signing time in unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated `v1,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// How far (either way) a timestamp may be from the receiver's clock, as the spec's libraries use.
pub const DEFAULT_TOLERANCE_SECONDS: u64 = 5 * 60;

const SECRET_PREFIX: &str = "whsec_";
const SECRET_LEN_BYTES: usize = 24;

/// A signing secret: raw key bytes, written as `whsec_` + base64. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

/// Why a `whsec_…` string is not a usable secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The string does not start with `whsec_`.
    #[error("webhook secret must start with `whsec_`")]
    MissingPrefix,
    /// The part after the prefix is not standard base64.
    #[error("webhook secret is not valid base64")]
    InvalidBase64,
    /// The key is empty.
    #[error("webhook secret is empty")]
    Empty,
}

/// Why an incoming message's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `webhook-timestamp` is not an integer.
    #[error("invalid webhook-timestamp header")]
    InvalidTimestamp,
    /// The timestamp is older than the tolerance allows (possible replay).
    #[error("webhook timestamp too old")]
    TimestampTooOld,
    /// The timestamp is further in the future than the tolerance allows.
    #[error("webhook timestamp too new")]
    TimestampTooNew,
    /// No `v1` entry of `webhook-signature` matches this secret.
    #[error("no matching webhook signature")]
    NoMatchingSignature,
}

impl WebhookSecret {
    /// A fresh secret of 24 random bytes.
    pub fn generate() -> Self {
        let mut key = vec![0u8; SECRET_LEN_BYTES];
        rand::thread_rng().fill_bytes(&mut key);
        Self { key }
    }

    /// Parses a `whsec_<base64>` string.
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let encoded = s
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = BASE64
            .decode(encoded)
            .map_err(|_| SecretError::InvalidBase64)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { key })
    }

    /// The `whsec_…` form, to store and to show the endpoint's owner.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.key))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = match HmacSha256::new_from_slice(&self.key) {
            Ok(mac) => mac,
            // HMAC pads or hashes the key, so every length is valid.
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(whsec_<redacted>)")
    }
}

/// The `webhook-signature` header value: one `v1,<base64>` entry per secret, space-separated.
pub fn sign(secrets: &[&WebhookSecret], msg_id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .map(|secret| {
            let tag = secret.mac(msg_id, timestamp, body.as_bytes()).finalize();
            format!("v1,{}", BASE64.encode(tag.into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a received message as a Standard Webhooks receiver would: the timestamp must be within
/// `tolerance_seconds` of `now` (either way), then some `v1` entry of `signature_header` must be
/// the HMAC of the raw `body` under `secret` (compared in constant time).
pub fn verify(
    secret: &WebhookSecret,
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now: OffsetDateTime,
    tolerance_seconds: u64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp)?;
    let now = now.unix_timestamp();
    if now.abs_diff(ts) > tolerance_seconds {
        return Err(if ts < now {
            VerifyError::TimestampTooOld
        } else {
            VerifyError::TimestampTooNew
        });
    }
    let expected = secret.mac(msg_id, ts, body);
    let matched = signature_header
        .split_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| BASE64.decode(sig).ok())
        .any(|sig| expected.clone().verify_slice(&sig).is_ok());
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vector shared by the official standard-webhooks libraries' test suites.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1_614_265_330;
    const SPEC_PAYLOAD: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    fn check(
        secret: &WebhookSecret,
        signature: &str,
        body: &str,
        now: i64,
    ) -> Result<(), VerifyError> {
        verify(
            secret,
            SPEC_MSG_ID,
            &SPEC_TIMESTAMP.to_string(),
            signature,
            body.as_bytes(),
            at(now),
            DEFAULT_TOLERANCE_SECONDS,
        )
    }

    #[test]
    fn spec_vector_signs() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        assert_eq!(
            sign(&[&secret], SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_PAYLOAD),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn spec_vector_verifies() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        assert_eq!(
            check(&secret, SPEC_SIGNATURE, SPEC_PAYLOAD, SPEC_TIMESTAMP),
            Ok(())
        );
    }

    #[test]
    fn tampered_body_is_refused() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        assert_eq!(
            check(
                &secret,
                SPEC_SIGNATURE,
                r#"{"test": 2432232315}"#,
                SPEC_TIMESTAMP
            ),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn tampered_id_or_timestamp_is_refused() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        let other_id = verify(
            &secret,
            "msg_other",
            &SPEC_TIMESTAMP.to_string(),
            SPEC_SIGNATURE,
            SPEC_PAYLOAD.as_bytes(),
            at(SPEC_TIMESTAMP),
            DEFAULT_TOLERANCE_SECONDS,
        );
        assert_eq!(other_id, Err(VerifyError::NoMatchingSignature));
        let other_ts = verify(
            &secret,
            SPEC_MSG_ID,
            &(SPEC_TIMESTAMP + 1).to_string(),
            SPEC_SIGNATURE,
            SPEC_PAYLOAD.as_bytes(),
            at(SPEC_TIMESTAMP),
            DEFAULT_TOLERANCE_SECONDS,
        );
        assert_eq!(other_ts, Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn wrong_secret_is_refused() {
        let other = WebhookSecret::generate();
        assert_eq!(
            check(&other, SPEC_SIGNATURE, SPEC_PAYLOAD, SPEC_TIMESTAMP),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn stale_timestamp_is_refused() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        let tol = DEFAULT_TOLERANCE_SECONDS as i64;
        assert_eq!(
            check(&secret, SPEC_SIGNATURE, SPEC_PAYLOAD, SPEC_TIMESTAMP + tol),
            Ok(())
        );
        assert_eq!(
            check(
                &secret,
                SPEC_SIGNATURE,
                SPEC_PAYLOAD,
                SPEC_TIMESTAMP + tol + 1
            ),
            Err(VerifyError::TimestampTooOld)
        );
    }

    #[test]
    fn future_timestamp_is_refused() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        let tol = DEFAULT_TOLERANCE_SECONDS as i64;
        assert_eq!(
            check(&secret, SPEC_SIGNATURE, SPEC_PAYLOAD, SPEC_TIMESTAMP - tol),
            Ok(())
        );
        assert_eq!(
            check(
                &secret,
                SPEC_SIGNATURE,
                SPEC_PAYLOAD,
                SPEC_TIMESTAMP - tol - 1
            ),
            Err(VerifyError::TimestampTooNew)
        );
    }

    #[test]
    fn invalid_timestamp_header_is_refused() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        for ts in ["", "abc", "1614265330.5", "99999999999999999999999"] {
            let r = verify(
                &secret,
                SPEC_MSG_ID,
                ts,
                SPEC_SIGNATURE,
                SPEC_PAYLOAD.as_bytes(),
                at(SPEC_TIMESTAMP),
                DEFAULT_TOLERANCE_SECONDS,
            );
            assert_eq!(r, Err(VerifyError::InvalidTimestamp), "{ts:?}");
        }
    }

    #[test]
    fn rotation_either_secret_verifies() {
        let old = WebhookSecret::parse(SPEC_SECRET).unwrap();
        let new = WebhookSecret::generate();
        let header = sign(&[&new, &old], SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_PAYLOAD);
        let entries: Vec<_> = header.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1], SPEC_SIGNATURE);
        assert_eq!(check(&old, &header, SPEC_PAYLOAD, SPEC_TIMESTAMP), Ok(()));
        assert_eq!(check(&new, &header, SPEC_PAYLOAD, SPEC_TIMESTAMP), Ok(()));
        let stranger = WebhookSecret::generate();
        assert_eq!(
            check(&stranger, &header, SPEC_PAYLOAD, SPEC_TIMESTAMP),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn unknown_versions_and_garbage_entries_are_skipped() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        let sig = SPEC_SIGNATURE.trim_start_matches("v1,");
        let header = format!("v2,{sig} v1a,{sig} nonsense v1,!!notbase64 {SPEC_SIGNATURE}");
        assert_eq!(
            check(&secret, &header, SPEC_PAYLOAD, SPEC_TIMESTAMP),
            Ok(())
        );
        let only_other_versions = format!("v2,{sig} v1a,{sig}");
        assert_eq!(
            check(&secret, &only_other_versions, SPEC_PAYLOAD, SPEC_TIMESTAMP),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check(&secret, "", SPEC_PAYLOAD, SPEC_TIMESTAMP),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn generated_secret_round_trips() {
        let secret = WebhookSecret::generate();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(text.len(), "whsec_".len() + 32);
        assert_eq!(WebhookSecret::parse(&text).unwrap(), secret);
        assert_ne!(WebhookSecret::generate(), secret);
        assert_eq!(
            WebhookSecret::parse(SPEC_SECRET).unwrap().expose(),
            SPEC_SECRET
        );
    }

    #[test]
    fn parse_rejects_bad_secrets() {
        assert_eq!(
            WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SecretError::MissingPrefix)
        );
        assert_eq!(
            WebhookSecret::parse("whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SecretError::MissingPrefix)
        );
        assert_eq!(
            WebhookSecret::parse("whsec_not base64!"),
            Err(SecretError::InvalidBase64)
        );
        assert_eq!(WebhookSecret::parse("whsec_"), Err(SecretError::Empty));
    }

    #[test]
    fn debug_redacts_the_key() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        let debug = format!("{secret:?}");
        assert!(!debug.contains("MfKQ9r8G"), "{debug}");
    }
}
