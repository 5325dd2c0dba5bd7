//! Webhook signature schemes: Stripe's timestamped `t=…,v1=…` header (also used by the sandbox)
//! and Creem's bare hex HMAC. Both are HMAC-SHA256 over the raw body, compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tally_checkout::{ProviderError, WebhookHeaders};
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// How old a Stripe-scheme timestamp may be, as in the official SDKs.
pub const STRIPE_TOLERANCE_SECONDS: i64 = 300;

/// The value of header `name` (already lower-case), if present and not blank.
pub(crate) fn header<'a>(headers: &'a WebhookHeaders, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn mac(secret: &str) -> HmacSha256 {
    match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC pads or hashes the key, so every length is valid.
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
    }
}

/// Lower-case hex HMAC-SHA256 of `parts` concatenated, keyed with the UTF-8 bytes of `secret`.
pub(crate) fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let mut m = mac(secret);
    for p in parts {
        m.update(p);
    }
    hex::encode(m.finalize().into_bytes())
}

/// The Stripe-scheme header for `body` signed at `t` (what the sandbox sends).
pub(crate) fn stripe_scheme_header(secret: &str, t: i64, body: &[u8]) -> String {
    let ts = t.to_string();
    format!(
        "t={ts},v1={}",
        hmac_hex(secret, &[ts.as_bytes(), b".", body])
    )
}

fn invalid(msg: &str) -> ProviderError {
    ProviderError::InvalidSignature(msg.to_owned())
}

/// Verifies a Stripe-scheme signature header (`t=<unix s>,v1=<hex>[,v1=…]`): any `v1` must
/// equal HMAC-SHA256(secret, `t.body`), and `t` may be at most 300 s in the past. Other schemes
/// (`v0`) are ignored so a downgrade cannot pass; a timestamp in the future is accepted, as the
/// official SDKs do (clock skew).
pub(crate) fn verify_stripe_scheme(
    header_value: Option<&str>,
    secret: &str,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<(), ProviderError> {
    let header_value = header_value.ok_or_else(|| invalid("no signature header"))?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for element in header_value.split(',') {
        let Some((key, value)) = element.split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" => timestamp = value.trim().parse::<i64>().ok(),
            "v1" => candidates.push(value.trim()),
            _ => {}
        }
    }
    let t =
        timestamp.ok_or_else(|| invalid("unable to extract timestamp from signature header"))?;
    if candidates.is_empty() {
        return Err(invalid("no signatures found with expected scheme v1"));
    }
    let mut signed = mac(secret);
    signed.update(t.to_string().as_bytes());
    signed.update(b".");
    signed.update(body);
    let matched = candidates.iter().any(|candidate| {
        hex::decode(candidate)
            .ok()
            .is_some_and(|bytes| signed.clone().verify_slice(&bytes).is_ok())
    });
    if !matched {
        return Err(invalid("no signature matches the payload"));
    }
    if now.unix_timestamp() - t > STRIPE_TOLERANCE_SECONDS {
        return Err(invalid("timestamp outside the tolerance zone"));
    }
    Ok(())
}

/// Verifies Creem's `creem-signature`: hex HMAC-SHA256(secret, body). There is no timestamp,
/// so replays are caught only by the event-id deduplication downstream.
pub(crate) fn verify_hex_hmac(
    header_value: Option<&str>,
    secret: &str,
    body: &[u8],
) -> Result<(), ProviderError> {
    let header_value = header_value.ok_or_else(|| invalid("no signature header"))?;
    let bytes = hex::decode(header_value).map_err(|_| invalid("signature is not hex"))?;
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&bytes)
        .map_err(|_| invalid("signature does not match the payload"))
}
