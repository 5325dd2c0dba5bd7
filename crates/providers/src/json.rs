//! Lenient reading of provider JSON: webhook payloads change shape between API versions, so a
//! missing or oddly typed field reads as absent instead of failing the whole event.

use serde_json::Value;
use tally_checkout::ProviderError;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An event that cannot be read.
pub(crate) fn malformed(msg: impl Into<String>) -> ProviderError {
    ProviderError::Malformed(msg.into())
}

/// A verified event's body as JSON, with its `id` and its type (at `type_key`).
pub(crate) fn event_head(
    body: &[u8],
    type_key: &str,
) -> Result<(Value, String, String), ProviderError> {
    let event: Value =
        serde_json::from_slice(body).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let id = str_at(&event, &["id"]).ok_or_else(|| malformed("event has no `id`"))?;
    let event_type = str_at(&event, &[type_key])
        .ok_or_else(|| malformed(format!("event has no `{type_key}`")))?;
    Ok((event, id, event_type))
}

/// The value at `path` (object keys; a numeric segment indexes an array).
pub(crate) fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| match v {
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => v.get(key),
    })
}

/// A non-empty string at `path`.
pub(crate) fn str_at(value: &Value, path: &[&str]) -> Option<String> {
    at(value, path)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// An integer at `path`.
pub(crate) fn i64_at(value: &Value, path: &[&str]) -> Option<i64> {
    at(value, path).and_then(Value::as_i64)
}

/// A boolean at `path`.
pub(crate) fn bool_at(value: &Value, path: &[&str]) -> Option<bool> {
    at(value, path).and_then(Value::as_bool)
}

/// The id of a reference that is either an id string or an expanded object with an `id`.
pub(crate) fn id_at(value: &Value, path: &[&str]) -> Option<String> {
    match at(value, path)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        object @ Value::Object(_) => str_at(object, &["id"]),
        _ => None,
    }
}

/// Unix seconds at `path`.
pub(crate) fn unix_at(value: &Value, path: &[&str]) -> Option<OffsetDateTime> {
    i64_at(value, path).and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
}

/// Unix milliseconds at `path`.
pub(crate) fn unix_ms_at(value: &Value, path: &[&str]) -> Option<OffsetDateTime> {
    i64_at(value, path)
        .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
}

/// An RFC 3339 instant at `path`.
pub(crate) fn rfc3339_at(value: &Value, path: &[&str]) -> Option<OffsetDateTime> {
    at(value, path)
        .and_then(Value::as_str)
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

/// The present, non-empty ids, first occurrence only.
pub(crate) fn refs(candidates: impl IntoIterator<Item = Option<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in candidates.into_iter().flatten() {
        if !id.is_empty() && !out.contains(&id) {
            out.push(id);
        }
    }
    out
}
