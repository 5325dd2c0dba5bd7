//! The fixed predicates of the partial indexes, written into the statement text rather than
//! bound as parameters.
//!
//! `lots_live`/`lots_due` are defined `WHERE remaining > 0` (and `lots_expiring`/`lots_lasting`
//! with `expires_at IS [NOT] NULL` besides), `holds_active`/`holds_due`
//! `WHERE status = 'active'`, and the webhook outbox's `WHERE NOT fanned_out` and
//! `WHERE status = 'pending'`. With the constant bound as a parameter (`remaining > ?`), SQLite
//! decides whether the partial index applies by peeking at the bound value, and so marks the
//! prepared statement to be prepared again every time that parameter is bound — every execution;
//! PostgreSQL's generic plans cannot use such an index at all. Diesel's `sql()` literal would
//! keep the constant in the text but turns statement caching off, so these are small expression
//! types of their own: constant SQL, cacheable.

use diesel::backend::Backend;
use diesel::expression::{
    AppearsOnTable, Expression, SelectableExpression, ValidGrouping, is_aggregate,
};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::result::QueryResult;
use diesel::sql_types::Bool;

macro_rules! fixed_predicate {
    ($(#[$doc:meta])* $name:ident, $sql:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, QueryId)]
        pub(crate) struct $name;

        impl Expression for $name {
            type SqlType = Bool;
        }

        impl<QS> AppearsOnTable<QS> for $name {}

        impl<GB> ValidGrouping<GB> for $name {
            type IsAggregate = is_aggregate::Never;
        }

        impl<DB: Backend> QueryFragment<DB> for $name {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
                out.push_sql($sql);
                Ok(())
            }
        }
    };
}

fixed_predicate!(
    /// `lots.remaining > 0`: a lot with credits left (the `lots_live` and `lots_due` indexes).
    LiveLot,
    "\"lots\".\"remaining\" > 0"
);

fixed_predicate!(
    /// A lot with credits left that expires (the `lots_expiring` index).
    ExpiringLot,
    "(\"lots\".\"remaining\" > 0 AND \"lots\".\"expires_at\" IS NOT NULL)"
);

fixed_predicate!(
    /// A lot with credits left that never expires (the `lots_lasting` index).
    LastingLot,
    "(\"lots\".\"remaining\" > 0 AND \"lots\".\"expires_at\" IS NULL)"
);

fixed_predicate!(
    /// `holds.status = 'active'` (the `holds_active` and `holds_due` indexes).
    ActiveHold,
    "\"holds\".\"status\" = 'active'"
);

fixed_predicate!(
    /// `NOT webhook_events.fanned_out`: an outbox event not yet fanned out (the
    /// `webhook_events_pending` index).
    NewEvent,
    "NOT \"webhook_events\".\"fanned_out\""
);

fixed_predicate!(
    /// `webhook_deliveries.status = 'pending'` (the `webhook_deliveries_due` index).
    PendingDelivery,
    "\"webhook_deliveries\".\"status\" = 'pending'"
);

diesel::define_sql_function! {
    /// `substr(text, start, length)`: the first characters of a user id, compared exactly for a
    /// prefix search (`LIKE` is case-insensitive on SQLite and case-sensitive on PostgreSQL).
    fn substr(
        text: diesel::sql_types::Text,
        start: diesel::sql_types::Integer,
        length: diesel::sql_types::Integer,
    ) -> diesel::sql_types::Text;
}

/// Whether the account has an active hold due at the instant it carries: a subquery on the
/// `accounts` row of the statement it appears in, one step down the `holds_active` index. The
/// balance read uses it to tell whether any hold is due without reading the holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HoldDue(pub(crate) time::PrimitiveDateTime);

impl QueryId for HoldDue {
    type QueryId = HoldDue;
    // The text is constant; the instant is a bound parameter.
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Expression for HoldDue {
    type SqlType = Bool;
}

impl<QS> AppearsOnTable<QS> for HoldDue {}

impl<QS> SelectableExpression<QS> for HoldDue {}

impl<GB> ValidGrouping<GB> for HoldDue {
    type IsAggregate = is_aggregate::Never;
}

impl<DB> QueryFragment<DB> for HoldDue
where
    DB: Backend + diesel::sql_types::HasSqlType<diesel::sql_types::Timestamp>,
    time::PrimitiveDateTime: diesel::serialize::ToSql<diesel::sql_types::Timestamp, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(
            "(EXISTS (SELECT 1 FROM \"holds\" AS \"h\" \
             WHERE \"h\".\"account_id\" = \"accounts\".\"id\" AND \"h\".\"status\" = 'active' \
             AND \"h\".\"expires_at\" <= ",
        );
        out.push_bind_param::<diesel::sql_types::Timestamp, _>(&self.0)?;
        out.push_sql("))");
        Ok(())
    }
}
