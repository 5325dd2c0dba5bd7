//! The caller's own credits.

use actix_web::{HttpResponse, get, web};
use tally_ledger::TransactionQuery;

use crate::AppState;
use crate::auth::User;
use crate::dto::{BalanceDto, HistoryQuery, TransactionDto, before_cursor};
use crate::error::{ApiError, ok, ok_cursor_page};
use crate::routes::{page, txn_type};

/// The caller's balance.
#[utoipa::path(
    tag = "credits",
    security(("bearer" = [])),
    responses((status = 200, description = "Balance", body = BalanceDto), (status = 401, description = "No or invalid credentials"))
)]
#[get("/credits/balance")]
pub async fn balance(
    state: web::Data<AppState>,
    User(caller): User,
) -> Result<HttpResponse, ApiError> {
    let view = state.ledger.balance(caller.account()).await?;
    Ok(ok(BalanceDto::from(view)))
}

/// The caller's history, newest first.
#[utoipa::path(
    operation_id = "list_transactions",
    tag = "credits",
    security(("bearer" = [])),
    params(HistoryQuery),
    responses((status = 200, description = "A page of transactions; `meta.next_before` is the cursor of the next page", body = [TransactionDto]), (status = 400, description = "Bad pagination, cursor or type"))
)]
#[get("/credits/transactions")]
pub async fn transactions(
    state: web::Data<AppState>,
    User(caller): User,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = page(query.limit, query.offset)?;
    let (rows, has_more) = state
        .ledger
        .transactions(TransactionQuery {
            app: caller.app,
            user: Some(caller.user),
            txn_type: txn_type(query.txn_type.as_deref())?,
            limit,
            offset,
            before: before_cursor(query.before.as_deref())?,
            ..TransactionQuery::default()
        })
        .await?;
    let rows: Vec<TransactionDto> = rows.into_iter().map(Into::into).collect();
    let next_before = has_more
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    Ok(ok_cursor_page(rows, limit, offset, has_more, next_before))
}
