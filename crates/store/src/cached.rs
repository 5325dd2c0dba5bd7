//! Prepared-statement caching for the statements Diesel prepares again on every execution.
//!
//! Diesel never caches an `UPDATE` or an upsert (`ON CONFLICT … DO UPDATE`): their `SET` lists
//! can skip `None` fields, so one Rust type can stand for several statement texts, and Diesel's
//! cache may key a statement by its type. On the money paths that is most statements of a write
//! — the account's and the lots' updates, the allowance and meter upserts — each parsed and
//! planned again every time (SQLite spends more on that than on running them).
//!
//! [`Cached`] keys such a statement by its SQL text instead (it declares no static query id), so
//! each distinct text is prepared once per connection and any text is right for its binds.
//! Use it for statements whose texts come from a small set — a fixed `SET` list, an `IN` list
//! as long as a call's features — not for texts that grow with the data.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::QueryResult;

/// `query`, prepared once per connection and statement text (see the module's documentation).
pub(crate) fn cached<Q>(query: Q) -> Cached<Q> {
    Cached(query)
}

/// A statement cached by its SQL text; built by [`cached`].
#[derive(Debug, Clone)]
pub(crate) struct Cached<Q>(Q);

impl<Q> QueryId for Cached<Q> {
    type QueryId = ();

    /// Never keyed by type: the cache keys the statement by its text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Cached<Q> {
    type SqlType = Q::SqlType;
}

impl<Q, DB> QueryFragment<DB> for Cached<Q>
where
    DB: Backend,
    Q: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}
