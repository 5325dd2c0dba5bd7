//! Handlers, one module per area.

pub mod admin;
pub mod admin_billing;
pub mod admin_users;
pub mod apps;
pub mod catalog;
pub mod checkin;
pub mod codes;
pub mod credits;
pub mod holds;
pub mod internal;
pub mod orders;
pub mod payment;
pub mod portal;
pub mod pricing;
pub mod refunds;
pub mod subscriptions;
pub mod system;
pub mod usage;
pub mod webhooks;

use std::future::Future;

use actix_web::HttpRequest;
use tally_ledger::TxnType;
use tally_ledger::service::MAX_OFFSET;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::Instrument;

use crate::error::ApiError;

/// Runs a money path on its own task so that a client hanging up cannot cancel a database
/// transaction halfway; the handler still waits for the result.
pub(crate) async fn detached<T: 'static, E: 'static>(
    fut: impl Future<Output = Result<T, E>> + 'static,
) -> Result<T, ApiError>
where
    ApiError: From<E>,
{
    actix_web::rt::spawn(fut.instrument(tracing::Span::current()))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from)
}

/// Answers one keyset page of `rows`, fetched with `limit + 1`: an extra row means there is
/// more, and the id of the last row kept (`id_of`) is the next page's `before` cursor.
pub(crate) fn keyset_page<T, D: serde::Serialize>(
    mut rows: Vec<T>,
    (limit, offset): (i64, i64),
    id_of: impl Fn(&T) -> String,
    dto: impl FnMut(T) -> D,
) -> actix_web::HttpResponse {
    let has_more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next_before = has_more.then(|| rows.last().map(&id_of)).flatten();
    let rows: Vec<D> = rows.into_iter().map(dto).collect();
    crate::error::ok_cursor_page(rows, limit, offset, has_more, next_before)
}

/// Every list's `limit` (1–100, default 20) and `offset` (0 to [`MAX_OFFSET`], default 0).
pub(crate) fn page(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(20);
    let offset = offset.unwrap_or(0);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::validation("limit", "must be between 1 and 100"));
    }
    if !(0..=MAX_OFFSET).contains(&offset) {
        return Err(ApiError::validation(
            "offset",
            format!("must be between 0 and {MAX_OFFSET}"),
        ));
    }
    Ok((limit, offset))
}

/// An optional RFC 3339 instant from a query parameter named `field`.
pub(crate) fn instant(field: &str, v: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    v.map(|s| {
        OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|_| ApiError::validation(field, "must be an RFC 3339 timestamp"))
    })
    .transpose()
}

pub(crate) fn txn_type(s: Option<&str>) -> Result<Option<TxnType>, ApiError> {
    s.map(|s| {
        TxnType::parse(s).ok_or_else(|| {
            let all: Vec<_> = TxnType::ALL.iter().map(|t| t.as_str()).collect();
            ApiError::validation("type", format!("must be one of {}", all.join(", ")))
        })
    })
    .transpose()
}

/// The idempotency key from the `Idempotency-Key` header or the body; both must agree.
pub(crate) fn idempotency_key(
    req: &HttpRequest,
    body: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let header = match req.headers().get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::validation("Idempotency-Key", "must be printable ASCII"))?,
        ),
        None => None,
    };
    match (header, body) {
        (Some(h), Some(b)) if h != b => Err(ApiError::validation(
            "idempotency_key",
            "differs from the Idempotency-Key header",
        )),
        (Some(k), _) | (None, Some(k)) => Ok(Some(k.to_owned())),
        (None, None) => Ok(None),
    }
}
