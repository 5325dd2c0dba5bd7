//! Pricing and usage queries: features, rate versions, entitlements, and the reported calls.
//! The rules come from `tally_ledger::usage` (`quote_usage` decides a call); this file reads what
//! it needs for the account (its allowances and carries under its lock) and writes what it
//! decided.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tally_ledger::error::FieldError;
use tally_ledger::holds::plan_capture;
use tally_ledger::plan::{InTurn, Plan, balance_view, plan_movement};
use tally_ledger::pricing::{
    Dimensions, Feature, FeatureKind, FeatureSpec, PRICE_SCALE, Rate, RateSpec,
};
use tally_ledger::usage::{
    AllowanceAudit, Entitlement, EventAudit, FREE_SCOPE, MeterAudit, RateUse, Refusal, TrackedLine,
    UsageLine, UsageOutcome, UsageQuote, UsageRequest, UsageState, Window, plan_scope, quote_usage,
    validate_entitlements, windows,
};
use tally_ledger::{
    AccountRef, Hold, LedgerError, MovementKind, ReserveRequest, Transaction, TxnType,
};
use tally_webhooks::payload::{Payload, UsageLimitReached};
use time::OffsetDateTime;

use crate::StoreError;
use crate::cached::cached;
use crate::pricing_cache::{Pricing, PricingCache};
use crate::rows::{AccountRow, from_db, to_db};
use crate::schema::{
    accounts, allowances, checkin_configs, entitlements, hold_allowances, pricing_features,
    pricing_generations, pricing_rates, transactions, usage_events, usage_lines, usage_meters,
};
use crate::usage_rows::{EntitlementRow, FeatureRow, RateRow, dimensions_text};

use super::ledger::{
    FIRST_READ, MainRow, Planned, account_state, account_values, bound_to_accounts, burn_lots,
    capturable, create_hold, debit_state, first_lots, first_lots_each, inserted_ids, lock_account,
    lock_hold, locked_account, locked_accounts, settle_hold, state, state_with_hold, stored_hold,
    unique_as, write_in_turn, write_plan,
};
use super::outbox::{self, OutboxRow};
use super::{Conn, Db, Pipe, bind};

/// The app's features, by key.
pub(crate) async fn features(conn: &mut Conn, app: &str) -> Result<Vec<Feature>, StoreError> {
    let rows = pricing_features::table
        .filter(pricing_features::app_key.eq(app))
        .order(pricing_features::feature_key)
        .select(FeatureRow::as_select())
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(Feature::try_from)
        .collect::<Result<_, _>>()?)
}

/// Creates or renames a feature; its kind never changes.
pub(crate) async fn put_feature(
    conn: &mut Conn,
    app: &str,
    spec: &FeatureSpec,
    create: bool,
    now: OffsetDateTime,
) -> Result<Feature, StoreError> {
    let existing = locked!(
        pricing_features::table
            .filter(pricing_features::app_key.eq(app))
            .filter(pricing_features::feature_key.eq(&spec.key))
            .select(FeatureRow::as_select())
    )
    .first(conn)
    .await
    .optional()?;
    match existing {
        Some(_) if create => {
            return Err(LedgerError::Conflict(format!(
                "feature '{}' exists; change it with PUT /admin/pricing/features/{}",
                spec.key, spec.key
            ))
            .into());
        }
        Some(row) if row.kind != spec.kind.as_str() => {
            return Err(LedgerError::Conflict(format!(
                "feature '{}' is {}; a feature's kind never changes (create another key)",
                spec.key, row.kind
            ))
            .into());
        }
        Some(_) => {
            diesel::update(
                pricing_features::table
                    .filter(pricing_features::app_key.eq(app))
                    .filter(pricing_features::feature_key.eq(&spec.key)),
            )
            .set((
                pricing_features::name.eq(&spec.name),
                pricing_features::unit.eq(&spec.unit),
                pricing_features::updated_at.eq(to_db(now)),
            ))
            .execute(conn)
            .await?;
        }
        None => {
            diesel::insert_into(pricing_features::table)
                .values((
                    pricing_features::app_key.eq(app),
                    pricing_features::feature_key.eq(&spec.key),
                    pricing_features::name.eq(&spec.name),
                    pricing_features::kind.eq(spec.kind.as_str()),
                    pricing_features::unit.eq(&spec.unit),
                    pricing_features::created_at.eq(to_db(now)),
                    pricing_features::updated_at.eq(to_db(now)),
                ))
                .execute(conn)
                .await
                .map_err(|e| {
                    unique_as(e, || {
                        StoreError::Ledger(LedgerError::Conflict(format!(
                            "feature '{}' was created at the same time",
                            spec.key
                        )))
                    })
                })?;
        }
    }
    bump_generation(conn, app).await?;
    let row = pricing_features::table
        .filter(pricing_features::app_key.eq(app))
        .filter(pricing_features::feature_key.eq(&spec.key))
        .select(FeatureRow::as_select())
        .first(conn)
        .await?;
    Ok(Feature::try_from(row)?)
}

/// The app's rate versions (of one feature), newest first.
pub(crate) async fn rates(
    conn: &mut Conn,
    app: &str,
    feature: Option<&str>,
) -> Result<Vec<Rate>, StoreError> {
    let mut query = pricing_rates::table
        .filter(pricing_rates::app_key.eq(app))
        .order(pricing_rates::id.desc())
        .select(RateRow::as_select())
        .into_boxed();
    if let Some(feature) = feature {
        query = query.filter(pricing_rates::feature_key.eq(feature));
    }
    let rows = query.load(conn).await?;
    Ok(rows
        .into_iter()
        .map(Rate::try_from)
        .collect::<Result<_, _>>()?)
}

/// Adds the next version of a rate; the feature must exist and be metered.
pub(crate) async fn add_rate(
    conn: &mut Conn,
    app: &str,
    spec: &RateSpec,
    actor: &str,
    now: OffsetDateTime,
) -> Result<Rate, StoreError> {
    let kind: Option<String> = pricing_features::table
        .filter(pricing_features::app_key.eq(app))
        .filter(pricing_features::feature_key.eq(&spec.feature))
        .select(pricing_features::kind)
        .first(conn)
        .await
        .optional()?;
    match kind.as_deref().and_then(FeatureKind::parse) {
        Some(FeatureKind::Metered) => {}
        Some(FeatureKind::Boolean) => {
            return Err(LedgerError::invalid(
                "feature",
                "is a boolean feature; only metered features have rates",
            )
            .into());
        }
        None => {
            return Err(LedgerError::from(FieldError::new(
                "feature",
                format!("no feature named '{}'", spec.feature),
            ))
            .into());
        }
    }
    let dimensions = dimensions_text(&spec.dimensions);
    let last: Option<i64> = pricing_rates::table
        .filter(pricing_rates::app_key.eq(app))
        .filter(pricing_rates::feature_key.eq(&spec.feature))
        .filter(pricing_rates::dimensions.eq(&dimensions))
        .select(diesel::dsl::max(pricing_rates::version))
        .first(conn)
        .await?;
    let tiers = serde_json::to_string(&spec.tiers).unwrap_or_else(|_| "[]".to_owned());
    let row: RateRow = diesel::insert_into(pricing_rates::table)
        .values((
            pricing_rates::app_key.eq(app),
            pricing_rates::feature_key.eq(&spec.feature),
            pricing_rates::version.eq(last.unwrap_or(0) + 1),
            pricing_rates::dimensions.eq(&dimensions),
            pricing_rates::credits.eq(spec.credits),
            pricing_rates::per.eq(spec.per),
            pricing_rates::tiers.eq(&tiers),
            // Never before now: a version takes over from its creation at the earliest, so a
            // call that started before it is never priced by it.
            pricing_rates::effective_from.eq(to_db(spec.effective_from.unwrap_or(now).max(now))),
            pricing_rates::created_at.eq(to_db(now)),
            pricing_rates::created_by.eq(actor),
        ))
        .returning(RateRow::as_returning())
        .get_result(conn)
        .await
        .map_err(|e| {
            unique_as(e, || {
                StoreError::Ledger(LedgerError::Conflict(
                    "another version of this rate was added at the same time; retry".to_owned(),
                ))
            })
        })?;
    bump_generation(conn, app).await?;
    Ok(Rate::try_from(row)?)
}

/// The app's entitlements with their scopes, in the order they were set.
pub(crate) async fn entitlements_of(
    conn: &mut Conn,
    app: &str,
    scope: Option<&str>,
) -> Result<Vec<(String, Entitlement)>, StoreError> {
    let mut query = entitlements::table
        .filter(entitlements::app_key.eq(app))
        .order((entitlements::scope, entitlements::position))
        .select(EntitlementRow::as_select())
        .into_boxed();
    if let Some(scope) = scope {
        query = query.filter(entitlements::scope.eq(scope));
    }
    let rows = query.load(conn).await?;
    Ok(rows
        .into_iter()
        .map(EntitlementRow::into_entitlement)
        .collect::<Result<_, _>>()?)
}

/// Replaces a scope's entitlements after checking them against the app's features.
pub(crate) async fn put_entitlements(
    conn: &mut Conn,
    app: &str,
    scope: &str,
    list: &[Entitlement],
) -> Result<Vec<Entitlement>, StoreError> {
    // Locking the app's features serialises two replacements of the same list (and keeps the
    // features they name as they are until the commit).
    let known: Vec<Feature> = locked!(
        pricing_features::table
            .filter(pricing_features::app_key.eq(app))
            .order(pricing_features::feature_key)
            .select(FeatureRow::as_select())
    )
    .load(conn)
    .await?
    .into_iter()
    .map(Feature::try_from)
    .collect::<Result<_, _>>()?;
    validate_entitlements(list, &known)?;
    diesel::delete(
        entitlements::table
            .filter(entitlements::app_key.eq(app))
            .filter(entitlements::scope.eq(scope)),
    )
    .execute(conn)
    .await?;
    for (position, e) in (0_i64..).zip(list) {
        diesel::insert_into(entitlements::table)
            .values((
                entitlements::app_key.eq(app),
                entitlements::scope.eq(scope),
                entitlements::feature_key.eq(&e.feature),
                entitlements::included.eq(e.included),
                entitlements::reset.eq(e.reset.as_str()),
                entitlements::overage.eq(e.overage.as_str()),
                entitlements::position.eq(position),
            ))
            .execute(conn)
            .await?;
    }
    bump_generation(conn, app).await?;
    Ok(list.to_vec())
}

/// Raises the app's pricing generation: every change to what [`pricing`] loads calls this in
/// its transaction (see `pricing_cache.rs`).
pub(crate) async fn bump_generation(conn: &mut Conn, app: &str) -> Result<(), StoreError> {
    diesel::insert_into(pricing_generations::table)
        .values((
            pricing_generations::app_key.eq(app),
            pricing_generations::generation.eq(1_i64),
        ))
        .on_conflict(pricing_generations::app_key)
        .do_update()
        .set(pricing_generations::generation.eq(pricing_generations::generation + 1))
        .execute(conn)
        .await?;
    Ok(())
}

/// The app's pricing at `generation`: from `cache` when it holds that generation, else loaded
/// (and kept there).
async fn pricing(
    conn: &mut Conn,
    cache: &PricingCache,
    app: &str,
    generation: i64,
) -> Result<Arc<Pricing>, StoreError> {
    if let Some(pricing) = cache.get(app, generation) {
        return Ok(pricing);
    }
    let mut by_scope: HashMap<String, Vec<Entitlement>> = HashMap::new();
    for (scope, e) in entitlements_of(conn, app, None).await? {
        by_scope.entry(scope).or_default().push(e);
    }
    let timezone: Option<String> = checkin_configs::table
        .filter(checkin_configs::app_key.eq(app))
        .select(checkin_configs::timezone)
        .first(conn)
        .await
        .optional()?;
    let pricing = Arc::new(Pricing {
        features: features(conn, app).await?,
        rates: rates(conn, app, None).await?,
        entitlements: by_scope,
        timezone: timezone.unwrap_or_else(|| "UTC".to_owned()),
    });
    cache.put(app, generation, pricing.clone());
    Ok(pricing)
}

#[derive(QueryableByName, Clone)]
struct GenerationAndPlan {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    generation: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    plan_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamp>)]
    period_start: Option<time::PrimitiveDateTime>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamp>)]
    period_end: Option<time::PrimitiveDateTime>,
}

/// The app's pricing generation (`bind(1)`; 0 before any change) and the live subscription of
/// the user (`bind(2)`), its plan and current period, in one statement.
fn generation_and_plan_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let (app, user) = (bind(1), bind(2));
        format!(
            "SELECT (SELECT generation FROM pricing_generations WHERE app_key = {app}) AS generation,
               s.plan_id, s.period_start, s.period_end
             FROM (SELECT 1 AS one) x LEFT JOIN (
               SELECT plan_id, current_period_start AS period_start,
                 current_period_end AS period_end
               FROM subscriptions
               WHERE app_key = {app} AND user_id = {user}
                 AND status IN ('active', 'trialing', 'past_due')
               ORDER BY id DESC LIMIT 1) s ON 1 = 1"
        )
    })
}

/// The user's live subscription: its plan and, when it has one, its current period.
type Subscription = Option<(String, Option<(OffsetDateTime, OffsetDateTime)>)>;

/// The app's pricing generation and the user's live subscription's plan and current period.
async fn generation_and_plan(
    conn: &mut Pipe<'_>,
    app: &str,
    user: &str,
) -> QueryResult<(i64, Subscription)> {
    use diesel::sql_types::Text;
    let row: GenerationAndPlan = cached(
        diesel::sql_query(generation_and_plan_sql())
            .bind::<Text, _>(app)
            .bind::<Text, _>(user),
    )
    .get_result(conn)
    .await?;
    Ok(row.decoded())
}

impl GenerationAndPlan {
    /// The generation (0 before any change) and the live subscription.
    fn decoded(self) -> (i64, Subscription) {
        let period = self
            .period_start
            .zip(self.period_end)
            .map(|(s, e)| (from_db(s), from_db(e)));
        (
            self.generation.unwrap_or(0),
            self.plan_id.map(|plan| (plan, period)),
        )
    }
}

/// [`generation_and_plan`] of an account, read with others' by [`generations_and_plans`].
#[derive(QueryableByName)]
struct GenerationAndPlanOf {
    #[diesel(sql_type = diesel::sql_types::Text)]
    app_key: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    user_id: String,
    #[diesel(embed)]
    row: GenerationAndPlan,
}

/// [`generation_and_plan`] of several accounts, in one statement.
async fn generations_and_plans(
    conn: &mut Pipe<'_>,
    accounts: &[&AccountRef],
) -> QueryResult<Vec<GenerationAndPlanOf>> {
    let sql = format!(
        "SELECT x.app_key, x.user_id, \
           (SELECT generation FROM pricing_generations g WHERE g.app_key = x.app_key) \
             AS generation, \
           s.plan_id, s.period_start, s.period_end \
         FROM (VALUES {}) AS x(app_key, user_id) LEFT JOIN LATERAL ( \
           SELECT plan_id, current_period_start AS period_start, \
             current_period_end AS period_end \
           FROM subscriptions \
           WHERE app_key = x.app_key AND user_id = x.user_id \
             AND status IN ('active', 'trialing', 'past_due') \
           ORDER BY id DESC LIMIT 1) s ON TRUE",
        account_values(accounts.len())
    );
    let query = bound_to_accounts(sql, accounts);
    cached(query).load(conn).await
}

/// What the app's pricing gives a user: the entitlements in force, the plan they come from and
/// the windows of their allowances at an instant.
struct InForce {
    pricing: Arc<Pricing>,
    entitlements: Vec<Entitlement>,
    plan_id: Option<String>,
    /// The subscription's current period, which `period` allowances follow.
    period: Option<(OffsetDateTime, OffsetDateTime)>,
    windows: BTreeMap<String, Window>,
}

impl InForce {
    /// The plan's entitlements when the user has a live subscription whose plan lists some,
    /// else the free tier's.
    fn of(
        pricing: Arc<Pricing>,
        subscription: Subscription,
        now: OffsetDateTime,
    ) -> Result<Self, StoreError> {
        let plan_entitlements = match &subscription {
            Some((plan, _)) => pricing.scope(&plan_scope(plan)),
            None => &[],
        };
        // A plan that lists no entitlements gives what the free tier gives.
        let plan_id = subscription
            .as_ref()
            .filter(|_| !plan_entitlements.is_empty())
            .map(|(plan, _)| plan.clone());
        let entitlements = if plan_entitlements.is_empty() {
            pricing.scope(FREE_SCOPE).to_vec()
        } else {
            plan_entitlements.to_vec()
        };
        let period = subscription.and_then(|(_, period)| period);
        let windows = windows(
            &entitlements,
            &pricing.features,
            now,
            &pricing.timezone,
            period,
        )?;
        Ok(Self {
            pricing,
            entitlements,
            plan_id,
            period,
            windows,
        })
    }

    /// The windows of the allowances at `now` (the same as [`InForce::windows`] unless one
    /// resets in between).
    fn windows_at(&self, now: OffsetDateTime) -> Result<BTreeMap<String, Window>, StoreError> {
        Ok(windows(
            &self.entitlements,
            &self.pricing.features,
            now,
            &self.pricing.timezone,
            self.period,
        )?)
    }

    /// The state calls naming the metered features `keys` are planned with, given what the
    /// account has used and carried.
    fn state<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k String>,
        account: AccountUse,
    ) -> UsageState {
        UsageState {
            features: self.pricing.features.clone(),
            rates: self.pricing.rates_of(keys),
            entitlements: self.entitlements.clone(),
            plan_id: self.plan_id.clone(),
            windows: self.windows.clone(),
            used: account.used,
            reserved: account.reserved,
            carries: account.carries,
        }
    }
}

/// What an account has used of its allowances' current windows and carried of its meters.
#[derive(Default)]
struct AccountUse {
    used: BTreeMap<String, i64>,
    reserved: BTreeMap<String, i64>,
    carries: BTreeMap<String, i64>,
}

/// Per feature with a window: the units used and reserved in the account's current window.
async fn allowances_used(
    conn: &mut Pipe<'_>,
    account_id: i64,
    windows: &BTreeMap<String, Window>,
) -> QueryResult<(BTreeMap<String, i64>, BTreeMap<String, i64>)> {
    let keys: Vec<&String> = windows.keys().collect();
    let starts: Vec<_> = windows.values().map(|w| to_db(w.start)).collect();
    let rows = allowance_rows(conn, &[account_id], &keys, &starts).await?;
    Ok(used_in(windows, rows))
}

/// A row of `allowances`: its account, feature, window's start, units used and reserved.
type AllowanceRow = (i64, String, time::PrimitiveDateTime, i64, i64);

/// The allowances of the accounts `ids` for any of `keys` whose window starts at any of
/// `starts` (a superset of what each account's windows name: see [`used_in`]).
async fn allowance_rows(
    conn: &mut Pipe<'_>,
    ids: &[i64],
    keys: &[&String],
    starts: &[time::PrimitiveDateTime],
) -> QueryResult<Vec<AllowanceRow>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    // Cached: the `IN` lists are as long as the call's features (PostgreSQL binds each list as
    // one array).
    cached(
        allowances::table
            .filter(allowances::account_id.eq_any(ids))
            .filter(allowances::feature_key.eq_any(keys))
            .filter(allowances::window_start.eq_any(starts))
            .select((
                allowances::account_id,
                allowances::feature_key,
                allowances::window_start,
                allowances::used,
                allowances::reserved,
            )),
    )
    .load(conn)
    .await
}

/// Per feature with a window: the units used and reserved in that window, from an account's
/// [`allowance_rows`].
fn used_in(
    windows: &BTreeMap<String, Window>,
    rows: impl IntoIterator<Item = AllowanceRow>,
) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let (mut used, mut reserved) = (BTreeMap::new(), BTreeMap::new());
    for (_, feature, start, n, held) in rows {
        if windows.get(&feature).map(|w| to_db(w.start)) == Some(start) {
            used.insert(feature.clone(), n);
            reserved.insert(feature, held);
        }
    }
    (used, reserved)
}

/// Per metered feature the request names: the fraction of a credit its meter carries.
async fn carries(
    conn: &mut Pipe<'_>,
    account_id: i64,
    request: &UsageRequest,
) -> QueryResult<BTreeMap<String, i64>> {
    let keys: Vec<&String> = request.quantities.keys().collect();
    let rows = carry_rows(conn, &[account_id], &keys).await?;
    Ok(rows
        .into_iter()
        .map(|(_, key, carry)| (key, carry))
        .collect())
}

/// The carries of the meters of the accounts `ids` for any of `keys`: account, feature, carry.
async fn carry_rows(
    conn: &mut Pipe<'_>,
    ids: &[i64],
    keys: &[&String],
) -> QueryResult<Vec<(i64, String, i64)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    cached(
        usage_meters::table
            .filter(usage_meters::account_id.eq_any(ids))
            .filter(usage_meters::feature_key.eq_any(keys))
            .select((
                usage_meters::account_id,
                usage_meters::feature_key,
                usage_meters::carry,
            )),
    )
    .load(conn)
    .await
}

/// Reads what planning `request` needs; `account_id` is none for an account not created yet.
async fn load_state(
    conn: &mut Conn,
    cache: &PricingCache,
    request: &UsageRequest,
    account_id: Option<i64>,
    now: OffsetDateTime,
) -> Result<UsageState, StoreError> {
    let (app, user) = (&request.account.app, &request.account.user);
    let (generation, subscription) = pipelined!(conn => generation_and_plan(conn, app, user))?;
    let pricing = pricing(conn, cache, app, generation).await?;
    let in_force = InForce::of(pricing, subscription, now)?;
    let mut account = AccountUse::default();
    if let Some(id) = account_id {
        ((account.used, account.reserved), account.carries) = pipelined!(conn =>
            allowances_used(conn, id, &in_force.windows),
            carries(conn, id, request),
        )?;
    }
    Ok(in_force.state(request.quantities.keys(), account))
}

/// What a check or the user's feature list reads (no lock; the caller runs it in a snapshot),
/// and the credits the account can spend now.
pub(crate) async fn usage_state(
    conn: &mut Conn,
    cache: &PricingCache,
    request: &UsageRequest,
    now: OffsetDateTime,
) -> Result<(UsageState, i64), StoreError> {
    let (view, account_id) = account_state(conn, &request.account, now).await?;
    let state = load_state(conn, cache, request, account_id, now).await?;
    Ok((state, balance_view(&view, now).available))
}

/// A stored call's outcome, for a replay.
async fn stored_outcome(
    conn: &mut Conn,
    event_id: i64,
    credits: i64,
    transaction_id: Option<i64>,
) -> Result<UsageOutcome, StoreError> {
    type LineRow = (
        String,
        i64,
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let mut rows: Vec<LineRow> = usage_lines::table
        .filter(usage_lines::event_id.eq(event_id))
        .select((
            usage_lines::feature_key,
            usage_lines::quantity,
            usage_lines::included_used,
            usage_lines::credits,
            usage_lines::rate_id,
            usage_lines::rate_version,
            usage_lines::rate_credits,
            usage_lines::rate_per,
        ))
        .load(conn)
        .await?;
    // In the order the call gave them (its quantities', by key), whatever the database's collation.
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let lines = rows
        .into_iter()
        .map(
            |(feature, quantity, included_used, credits, id, version, c, per)| {
                let rate = match (id, version, c, per) {
                    (Some(rate_id), Some(version), Some(credits), Some(per)) => Some(RateUse {
                        rate_id,
                        version,
                        credits,
                        per,
                    }),
                    _ => None,
                };
                TrackedLine {
                    feature,
                    quantity,
                    included_used,
                    credits,
                    rate,
                }
            },
        )
        .collect();
    Ok(UsageOutcome {
        lines,
        credits,
        transaction_id,
    })
}

/// The call stored as `event_id`, answered to a replay whose request hashes to `request_hash`.
async fn replayed(
    conn: &mut Conn,
    event_id: i64,
    request_hash: &str,
) -> Result<UsageOutcome, StoreError> {
    let (hash, credits, txn): (String, i64, Option<i64>) = usage_events::table
        .find(event_id)
        .select((
            usage_events::request_hash,
            usage_events::credits,
            usage_events::transaction_id,
        ))
        .first(conn)
        .await?;
    if hash == request_hash {
        stored_outcome(conn, event_id, credits, txn).await
    } else {
        Err(LedgerError::IdempotencyKeyReused.into())
    }
}

/// The usage transaction's metadata: each feature's line, the dimensions, the caller's own.
fn usage_metadata(request: &UsageRequest, quote: &UsageQuote) -> serde_json::Value {
    let usage: serde_json::Map<String, serde_json::Value> = quote
        .lines
        .iter()
        .map(|l| {
            let line = TrackedLine::from(l);
            (
                l.feature.clone(),
                serde_json::to_value(&line).unwrap_or_default(),
            )
        })
        .collect();
    let mut meta = serde_json::json!({ "usage": usage, "dimensions": request.dimensions });
    if let Some(own) = &request.metadata {
        meta["metadata"] = own.clone();
    }
    meta
}

/// The quote, unless it refuses the call.
fn allowed(quote: UsageQuote) -> Result<UsageQuote, StoreError> {
    match &quote.refusal {
        Some(
            Refusal::EntitlementExceeded { feature } | Refusal::FeatureNotIncluded { feature },
        ) => Err(LedgerError::EntitlementExceeded {
            feature: feature.clone(),
        }
        .into()),
        None => Ok(quote),
    }
}

/// The id of the call the user's account holds under `key`, found by the account's app and
/// user (for a pipeline with the account's lock: it may see the database before the lock).
async fn stored_call_of(
    conn: &mut Pipe<'_>,
    account: &AccountRef,
    key: &str,
) -> QueryResult<Option<i64>> {
    usage_events::table
        .inner_join(accounts::table.on(accounts::id.eq(usage_events::account_id)))
        .filter(accounts::app_key.eq(&account.app))
        .filter(accounts::user_id.eq(&account.user))
        .filter(usage_events::idempotency_key.eq(key))
        .select(usage_events::id)
        .first(conn)
        .await
        .optional()
}

/// Records one call inside the caller's write transaction (see `LedgerRepository::track`).
///
/// On PostgreSQL its statements take four round trips when the debit announces nothing: the
/// account's lock, the key's lookup and the pricing generation with the user's plan; the
/// account's first lots, allowances and carries; the debit (`write_plan`, one more when it
/// announces events); the call with its lines, its allowances, meters and any
/// `usage.limit_reached` ([`record_call`]). The key's lookup and the
/// plan's read may run before the lock is granted (the statements of a pipeline are not ordered,
/// and an account created by this call is locked only after them): a call is then priced by the
/// plan in force when it arrived, as if it came before a plan change committing meanwhile, and a
/// call under its key committed meanwhile is found by the unique key (the write is retried as a
/// replay) or, when the plan is refused first, by looking the key up again.
pub(crate) async fn track(
    conn: &mut Conn,
    cache: &PricingCache,
    request: &UsageRequest,
    request_hash: &str,
    now: OffsetDateTime,
) -> Result<UsageOutcome, StoreError> {
    let key = request
        .idempotency_key
        .as_deref()
        .ok_or(StoreError::Invariant("a tracked call has a key"))?;
    let (app, user) = (&request.account.app, &request.account.user);
    let (account, stored, (generation, subscription)) = pipelined!(conn =>
        locked_account(conn, &request.account, now),
        stored_call_of(conn, &request.account, key),
        generation_and_plan(conn, app, user),
    )?;
    if let Some(id) = stored {
        return replayed(conn, id, request_hash).await;
    }
    let pricing = pricing(conn, cache, app, generation).await?;
    let in_force = InForce::of(pricing, subscription, now)?;
    // The lots are read before the price is known: as many as a debit of up to `FIRST_READ`
    // credits needs.
    let (lots, (used, reserved), carries) = pipelined!(conn =>
        first_lots(conn, account.id, FIRST_READ),
        allowances_used(conn, account.id, &in_force.windows),
        carries(conn, account.id, request),
    )?;
    let usage = in_force.state(
        request.quantities.keys(),
        AccountUse {
            used,
            reserved,
            carries,
        },
    );
    let decided = async {
        let quote = allowed(quote_usage(&usage, request, now)?)?;
        if quote.credits == 0 {
            return Ok((quote, None));
        }
        let kind = MovementKind::Debit {
            txn_type: TxnType::AiUsage,
            credits: quote.credits,
        };
        let view = debit_state(conn, &account, Some(lots), quote.credits, now).await?;
        let plan = plan_movement(&view, &kind, now)?;
        Ok::<_, StoreError>((quote, Some(plan)))
    }
    .await;
    let (quote, plan) = match decided {
        Ok(decided) => decided,
        Err(StoreError::Ledger(refusal)) => {
            // The key's lookup may have run before the account's lock was granted; a call under
            // the key committed meanwhile (and the refusal may be its doing) is seen by a
            // statement of its own, and answers.
            return match pipelined!(conn => stored_call_of(conn, &request.account, key))? {
                Some(id) => replayed(conn, id, request_hash).await,
                None => Err(refusal.into()),
            };
        }
        Err(e) => return Err(e),
    };
    let transaction = match plan {
        Some(plan) => {
            let description = if request.description.is_empty() {
                "Usage".to_owned()
            } else {
                request.description.clone()
            };
            let main = MainRow {
                description: &description,
                idempotency_key: None,
                request_hash: None,
                metadata: Some(usage_metadata(request, &quote).to_string()),
                actor: None,
            };
            write_plan(conn, &account, &plan, Some(main), now).await?
        }
        None => None,
    };
    record_call(
        conn,
        &account,
        (key, request_hash),
        &quote,
        transaction.map(|t| t.id),
        usage.plan_id.as_deref(),
        now,
    )
    .await
}

/// What [`track_in_turn`] answers one call.
type TrackAnswer = Result<UsageOutcome, StoreError>;

/// How [`track_in_turn`] answers a call.
enum CallTurn {
    /// Answered without writing: a refusal, or a replay of a call the account holds.
    Answered(TrackAnswer),
    /// Recorded: the `n`th call recorded.
    Recorded(usize),
    /// Under the key of the `n`th call recorded: its replay when the same request, else refused.
    SameKey { n: usize, same: bool },
}

/// A call [`track_in_turn`] records.
struct PlannedCall<'w> {
    account: &'w AccountRow,
    request: &'w UsageRequest,
    key: &'w str,
    hash: &'w str,
    now: OffsetDateTime,
    quote: UsageQuote,
    /// Each line's price split by [`split_price`].
    prices: Vec<(i64, i64)>,
    plan_id: Option<String>,
    /// Its debit, when it charges credits.
    debit: Option<Plan>,
}

/// Records calls ([`track`]) of one or more accounts inside the caller's write transaction, as
/// if each ran alone, one after another in the order given — sorted by account (app, then
/// user), as a batch sorts them, each account's calls in arrival order — with a few statements
/// for them all: the accounts are locked in one statement, in that order, beside the apps'
/// pricing generations and the users' plans; their keys, first lots, allowances and carries
/// are read in a second round trip; each call is decided on what the ones before it leave
/// ([`UsageState::record`], [`InTurn`]); the debits are written in a third ([`write_in_turn`]),
/// and the calls with their lines, the allowances, meters and events in a fourth. On PostgreSQL
/// that is four round trips for them all, where one at a time takes four for each.
/// The statements are PostgreSQL's (a `LATERAL` join): PostgreSQL's batches use this.
///
/// Each call keeps the outcome it would have had alone: refused (its refusal, having used and
/// charged nothing), a replay of a call the account holds or of an earlier call here (its
/// outcome), a key reused with another request (refused). The keys are read once the locks are
/// granted. The plans are read beside the locks, as [`track`] reads them.
///
/// Answers `None`, having written nothing that the caller's savepoint does not undo, when the
/// calls are better recorded one at a time: an account does not exist yet (it is created by
/// its first call), an allowance's window resets between two of the calls, a debit finds a
/// lot or a hold due, or the lots read do not cover what the calls charge.
pub(crate) async fn track_in_turn(
    conn: &mut Conn,
    cache: &PricingCache,
    writes: &[(&UsageRequest, &str, OffsetDateTime)],
) -> Result<Option<Vec<TrackAnswer>>, StoreError> {
    let Some(latest) = writes.iter().map(|&(.., now)| now).max() else {
        return Ok(Some(Vec::new()));
    };
    let runs: Vec<&[(&UsageRequest, &str, OffsetDateTime)]> = writes
        .chunk_by(|(a, ..), (b, ..)| a.account == b.account)
        .collect();
    let refs: Vec<&AccountRef> = runs.iter().map(|run| &run[0].0.account).collect();
    let (locked, plans) = pipelined!(conn =>
        locked_accounts(conn, &refs),
        generations_and_plans(conn, &refs),
    )?;
    let Some(accounts) = locked.into_iter().collect::<Option<Vec<AccountRow>>>() else {
        return Ok(None);
    };
    let mut in_force = Vec::with_capacity(runs.len());
    for account in &refs {
        let row = plans
            .iter()
            .find(|p| p.app_key == account.app && p.user_id == account.user)
            .ok_or(StoreError::Invariant("an account's plan unread"))?;
        let (generation, subscription) = GenerationAndPlan::decoded(row.row.clone());
        let pricing = pricing(conn, cache, &account.app, generation).await?;
        in_force.push(InForce::of(pricing, subscription, latest)?);
    }
    let ids: Vec<i64> = accounts.iter().map(|a| a.id).collect();
    let keys: Vec<&str> = writes
        .iter()
        .filter_map(|(r, ..)| r.idempotency_key.as_deref())
        .collect();
    let metered: std::collections::BTreeSet<&String> = writes
        .iter()
        .flat_map(|(r, ..)| r.quantities.keys())
        .collect();
    let metered: Vec<&String> = metered.into_iter().collect();
    let windowed: std::collections::BTreeSet<&String> =
        in_force.iter().flat_map(|f| f.windows.keys()).collect();
    let windowed: Vec<&String> = windowed.into_iter().collect();
    let starts: std::collections::BTreeSet<time::PrimitiveDateTime> = in_force
        .iter()
        .flat_map(|f| f.windows.values().map(|w| to_db(w.start)))
        .collect();
    let starts: Vec<time::PrimitiveDateTime> = starts.into_iter().collect();
    let wants: Vec<(i64, i64)> = ids.iter().map(|&id| (id, FIRST_READ)).collect();
    let (stored, lots, allowance_rows, carry_rows) = pipelined!(conn =>
        calls_under(conn, &ids, &keys),
        first_lots_each(conn, &wants),
        allowance_rows(conn, &ids, &windowed, &starts),
        carry_rows(conn, &ids, &metered),
    )?;
    let mut turns = Vec::with_capacity(writes.len());
    let mut calls: Vec<PlannedCall> = Vec::new();
    let runs = runs.into_iter().zip(&accounts).zip(in_force).zip(lots);
    for (((run, account), in_force), read) in runs {
        let mine = |id: i64| id == account.id;
        let (used, reserved) = used_in(
            &in_force.windows,
            allowance_rows.iter().filter(|r| mine(r.0)).cloned(),
        );
        let carries = carry_rows
            .iter()
            .filter(|r| mine(r.0))
            .map(|(_, key, carry)| (key.clone(), *carry))
            .collect();
        let named = run.iter().flat_map(|(r, ..)| r.quantities.keys());
        let mut usage = in_force.state(
            named,
            AccountUse {
                used,
                reserved,
                carries,
            },
        );
        // What the run charges when every call is recorded, and a credit more for each line: a
        // call refused leaves more allowance and another carry to those after it, which can
        // charge up to a credit a line more. The lots read must cover what is charged.
        let mut bound = 0_i64;
        let mut ahead = usage.clone();
        for &(request, _, now) in run {
            if let Ok(quote) = quote_usage(&ahead, request, now)
                && quote.refusal.is_none()
            {
                bound = bound
                    .saturating_add(quote.credits)
                    .saturating_add(quote.lines.len() as i64);
                ahead.record(&quote);
            }
        }
        let mut in_turn = if bound > 0 {
            Some(InTurn::new(
                debit_state(conn, account, Some(read), bound, latest).await?,
            ))
        } else {
            None
        };
        let mut spent = 0_i64;
        let first = calls.len();
        for &(request, hash, now) in run {
            let key = request
                .idempotency_key
                .as_deref()
                .ok_or(StoreError::Invariant("a tracked call has a key"))?;
            if let Some(&(id, ..)) = stored.iter().find(|(_, a, k)| mine(*a) && k == key) {
                let answer = match replayed(conn, id, hash).await {
                    Err(StoreError::Ledger(refusal)) => Err(refusal.into()),
                    Err(e) => return Err(e),
                    ok => ok,
                };
                turns.push(CallTurn::Answered(answer));
                continue;
            }
            if let Some(n) = calls[first..].iter().position(|c| c.key == key) {
                let n = first + n;
                let same = calls[n].hash == hash;
                turns.push(CallTurn::SameKey { n, same });
                continue;
            }
            if in_force.windows_at(now)? != usage.windows {
                return Ok(None);
            }
            let decided = quote_usage(&usage, request, now)
                .map_err(StoreError::from)
                .and_then(allowed)
                .and_then(|quote| Ok((prices_of(&quote)?, quote)));
            let (prices, quote) = match decided {
                Ok(decided) => decided,
                Err(StoreError::Ledger(refusal)) => {
                    turns.push(CallTurn::Answered(Err(refusal.into())));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let debit = if quote.credits > 0 {
                let Some(in_turn) = in_turn.as_mut().filter(|_| spent + quote.credits <= bound)
                else {
                    return Ok(None);
                };
                let kind = MovementKind::Debit {
                    txn_type: TxnType::AiUsage,
                    credits: quote.credits,
                };
                match in_turn.plan(&kind, now) {
                    Ok(plan) if plan.expiries.is_empty() && plan.expired_holds.is_empty() => {
                        spent += quote.credits;
                        Some(plan)
                    }
                    Ok(_) => return Ok(None),
                    Err(refusal) => {
                        turns.push(CallTurn::Answered(Err(refusal.into())));
                        continue;
                    }
                }
            } else {
                None
            };
            usage.record(&quote);
            turns.push(CallTurn::Recorded(calls.len()));
            calls.push(PlannedCall {
                account,
                request,
                key,
                hash,
                now,
                quote,
                prices,
                plan_id: usage.plan_id.clone(),
                debit,
            });
        }
    }
    let transaction_ids = write_calls(conn, &mut calls, latest).await?;
    Ok(Some(
        turns
            .into_iter()
            .map(|turn| match turn {
                CallTurn::Answered(answer) => answer,
                CallTurn::Recorded(n) | CallTurn::SameKey { n, same: true } => {
                    Ok(outcome_of(&calls[n].quote, transaction_ids[n]))
                }
                CallTurn::SameKey { same: false, .. } => {
                    Err(LedgerError::IdempotencyKeyReused.into())
                }
            })
            .collect(),
    ))
}

/// Writes the calls [`track_in_turn`] decided: their debits ([`write_in_turn`]); then the calls
/// with their lines ([`insert_calls_with_lines`]), their allowances (each once, at its last
/// call's total), their meters (each once, with what they all add) and the events, in one round
/// trip. Answers each call's transaction, if it charged credits.
async fn write_calls(
    conn: &mut Conn,
    calls: &mut [PlannedCall<'_>],
    latest: OffsetDateTime,
) -> Result<Vec<Option<i64>>, StoreError> {
    let texts: Vec<(String, serde_json::Value)> = calls
        .iter()
        .map(|c| {
            let description = if c.request.description.is_empty() {
                "Usage".to_owned()
            } else {
                c.request.description.clone()
            };
            (description, usage_metadata(c.request, &c.quote))
        })
        .collect();
    let mut charged = Vec::new();
    let mut planned = Vec::new();
    for (i, (call, (description, metadata))) in calls.iter_mut().zip(&texts).enumerate() {
        if let Some(plan) = call.debit.take() {
            charged.push(i);
            planned.push(Planned {
                account: call.account,
                main: MainRow {
                    description,
                    idempotency_key: None,
                    request_hash: None,
                    metadata: Some(metadata.to_string()),
                    actor: None,
                },
                metadata: Some(metadata),
                now: call.now,
                plan,
            });
        }
    }
    let (written, announced) = write_in_turn(conn, &planned, latest).await?;
    let mut transaction_ids = vec![None; calls.len()];
    let mut announced_by: Vec<Vec<OutboxRow>> = calls.iter().map(|_| Vec::new()).collect();
    for ((&i, txn), events) in charged.iter().zip(&written).zip(announced) {
        transaction_ids[i] = Some(txn.id);
        announced_by[i] = events;
    }
    let mut events = Vec::new();
    let mut allowances: BTreeMap<(i64, &str), &UsageLine> = BTreeMap::new();
    let mut meters: BTreeMap<(i64, &str), MeterAdd> = BTreeMap::new();
    for (call, announced) in calls.iter().zip(announced_by) {
        let id = call.account.id;
        events.extend(announced);
        let plan_id = call.plan_id.as_deref();
        let limits = call
            .quote
            .lines
            .iter()
            .filter_map(|line| limit_reached(call.account, line, plan_id, call.now));
        events.extend(limits);
        for line in &call.quote.lines {
            allowances.insert((id, &line.feature), line);
        }
        for add in meter_adds(id, &call.quote.lines) {
            match meters.get_mut(&(id, add.feature)) {
                Some(meter) => {
                    meter.quantity += add.quantity;
                    meter.charged += add.charged;
                    meter.carry = add.carry;
                }
                None => {
                    meters.insert((id, add.feature), add);
                }
            }
        }
    }
    let new_calls: Vec<NewCall> = calls
        .iter()
        .zip(&transaction_ids)
        .map(|(c, &transaction_id)| NewCall {
            account: c.account,
            key: c.key,
            request_hash: c.hash,
            credits: c.quote.credits,
            transaction_id,
            now: c.now,
        })
        .collect();
    let allowances: Vec<(i64, &UsageLine)> =
        allowances.into_iter().map(|((id, _), l)| (id, l)).collect();
    let meters: Vec<MeterAdd> = meters.into_values().collect();
    let lines: Vec<KeyedLine> = calls
        .iter()
        .flat_map(|c| {
            c.quote
                .lines
                .iter()
                .zip(&c.prices)
                .map(move |(line, &price)| (c.account.id, c.key, line, price))
        })
        .collect();
    let (written, (), (), ()) = pipelined!(conn =>
        insert_calls_with_lines(conn, &new_calls, &lines),
        write_allowances(conn, &allowances, latest),
        add_to_meters(conn, &meters, latest),
        outbox::insert_events(conn, &events),
    )
    .map_err(|e| unique_as(e, || StoreError::IdempotencyRace))?;
    if written != (calls.len(), lines.len()) {
        return Err(StoreError::Invariant(
            "a batch's calls and lines answered another count",
        ));
    }
    Ok(transaction_ids)
}

/// The SQL types of a line's values in [`insert_calls_with_lines`], in its columns' order.
const LINE_TYPES: [&str; 13] = [
    "bigint",
    "text",
    "text",
    "bigint",
    "bigint",
    "timestamp",
    "bigint",
    "bigint",
    "bigint",
    "bigint",
    "bigint",
    "bigint",
    "bigint",
];

/// A line to insert beside its call: its account, its call's key, the line and its price split
/// by [`split_price`].
type KeyedLine<'a> = (i64, &'a str, &'a UsageLine, (i64, i64));

/// Inserts calls and their lines in one statement (PostgreSQL's: an `INSERT` in a `WITH`), each
/// line joined to its call's new id by the account and the key; answers how many calls and
/// lines it inserted. The text depends only on how many calls and lines there are.
async fn insert_calls_with_lines(
    conn: &mut Pipe<'_>,
    calls: &[NewCall<'_>],
    lines: &[KeyedLine<'_>],
) -> QueryResult<(usize, usize)> {
    use diesel::sql_types::{BigInt, Text};
    #[derive(QueryableByName)]
    struct Written {
        #[diesel(sql_type = BigInt)]
        calls: i64,
        #[diesel(sql_type = BigInt)]
        lines: i64,
    }
    if calls.is_empty() {
        return Ok((0, 0));
    }
    // Typed, so that the rows' columns need no inference from the lines' table.
    let typed_row = |first: usize| {
        let binds: Vec<String> = LINE_TYPES
            .iter()
            .enumerate()
            .map(|(i, t)| format!("{}::{t}", bind(first + i)))
            .collect();
        format!("({})", binds.join(", "))
    };
    let after_calls = calls.len() * 8;
    let line_rows = if lines.is_empty() {
        let nulls: Vec<String> = LINE_TYPES.iter().map(|t| format!("NULL::{t}")).collect();
        format!(
            "SELECT * FROM (VALUES ({})) AS none WHERE false",
            nulls.join(", ")
        )
    } else {
        let rows: Vec<String> = (0..lines.len())
            .map(|r| typed_row(after_calls + r * LINE_TYPES.len() + 1))
            .collect();
        format!("VALUES {}", rows.join(", "))
    };
    let sql = format!(
        "WITH calls AS (INSERT INTO usage_events (account_id, app_key, user_id, idempotency_key, \
         request_hash, credits, transaction_id, created_at) VALUES {} \
         RETURNING id, account_id, idempotency_key), \
         lines AS (INSERT INTO usage_lines (event_id, account_id, feature_key, quantity, \
         included_used, window_start, credits, price_whole, price_frac, rate_id, rate_version, \
         rate_credits, rate_per) \
         SELECT calls.id, l.account_id, l.feature_key, l.quantity, l.included_used, \
         l.window_start, l.credits, l.price_whole, l.price_frac, l.rate_id, l.rate_version, \
         l.rate_credits, l.rate_per \
         FROM ({line_rows}) AS l (account_id, idempotency_key, feature_key, quantity, \
         included_used, window_start, credits, price_whole, price_frac, rate_id, rate_version, \
         rate_credits, rate_per) \
         JOIN calls ON calls.account_id = l.account_id \
         AND calls.idempotency_key = l.idempotency_key RETURNING 1) \
         SELECT (SELECT count(*) FROM calls) AS calls, (SELECT count(*) FROM lines) AS lines",
        values_list(calls.len(), 8)
    );
    let mut query = diesel::sql_query(sql).into_boxed::<Db>();
    for call in calls {
        query = bind_call(query, call);
    }
    for &(account_id, key, line, price) in lines {
        query = query.bind::<BigInt, _>(account_id).bind::<Text, _>(key);
        query = bind_line(query, line, price);
    }
    // Each count of calls and lines is a text of its own: prepared once per connection for the
    // few calls a batch mostly holds (at most 4 × 17 texts, about the 64 the two statements
    // this replaced kept), and each time beyond.
    let written = if calls.len() <= 4 && lines.len() <= 16 {
        cached(query).get_result::<Written>(conn).await?
    } else {
        query.get_result::<Written>(conn).await?
    };
    let count = |n: i64| usize::try_from(n).unwrap_or(usize::MAX);
    Ok((count(written.calls), count(written.lines)))
}

/// The calls the accounts `ids` hold under any of `keys`: the call's id, its account and key.
async fn calls_under(
    conn: &mut Pipe<'_>,
    ids: &[i64],
    keys: &[&str],
) -> QueryResult<Vec<(i64, i64, String)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    cached(
        usage_events::table
            .filter(usage_events::account_id.eq_any(ids))
            .filter(usage_events::idempotency_key.eq_any(keys))
            .select((
                usage_events::id,
                usage_events::account_id,
                usage_events::idempotency_key,
            )),
    )
    .load(conn)
    .await
}

/// Stores a decided call: the call under its key with its lines, its allowances, its meters and
/// any `usage.limit_reached`, in one round trip on PostgreSQL ([`insert_calls_with_lines`]); on
/// SQLite, whose `WITH` holds no `INSERT`, the call, then its lines.
async fn record_call(
    conn: &mut Conn,
    account: &AccountRow,
    (key, request_hash): (&str, &str),
    quote: &UsageQuote,
    transaction_id: Option<i64>,
    plan_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<UsageOutcome, StoreError> {
    let prices = prices_of(quote)?;
    let call = NewCall {
        account,
        key,
        request_hash,
        credits: quote.credits,
        transaction_id,
        now,
    };
    let allowances: Vec<(i64, &UsageLine)> = quote.lines.iter().map(|l| (account.id, l)).collect();
    let meters = meter_adds(account.id, &quote.lines);
    let limits: Vec<OutboxRow> = quote
        .lines
        .iter()
        .filter_map(|line| limit_reached(account, line, plan_id, now))
        .collect();
    if super::WRITES_IN_WITH {
        let lines: Vec<KeyedLine> = quote
            .lines
            .iter()
            .zip(&prices)
            .map(|(line, &price)| (account.id, key, line, price))
            .collect();
        let (written, (), (), ()) = pipelined!(conn =>
            insert_calls_with_lines(conn, std::slice::from_ref(&call), &lines),
            write_allowances(conn, &allowances, now),
            add_to_meters(conn, &meters, now),
            outbox::insert_events(conn, &limits),
        )
        .map_err(|e| unique_as(e, || StoreError::IdempotencyRace))?;
        if written != (1, lines.len()) {
            return Err(StoreError::Invariant(
                "a call and its lines answered another count",
            ));
        }
        return Ok(outcome_of(quote, transaction_id));
    }
    let (ids, (), ()) = pipelined!(conn =>
        insert_calls(conn, std::slice::from_ref(&call)),
        write_allowances(conn, &allowances, now),
        add_to_meters(conn, &meters, now),
    )
    .map_err(|e| unique_as(e, || StoreError::IdempotencyRace))?;
    let event_id =
        *<[i64]>::first(&ids).ok_or(StoreError::Invariant("a call's insert answered no id"))?;
    let lines: Vec<LineOf> = quote
        .lines
        .iter()
        .zip(&prices)
        .map(|(line, &price)| (account.id, event_id, line, price))
        .collect();
    pipelined!(conn =>
        insert_lines(conn, &lines),
        outbox::insert_events(conn, &limits),
    )?;
    Ok(outcome_of(quote, transaction_id))
}

/// What a recorded call answers.
fn outcome_of(quote: &UsageQuote, transaction_id: Option<i64>) -> UsageOutcome {
    UsageOutcome {
        lines: quote.lines.iter().map(TrackedLine::from).collect(),
        credits: quote.credits,
        transaction_id,
    }
}

/// Each line's price split by [`split_price`].
fn prices_of(quote: &UsageQuote) -> Result<Vec<(i64, i64)>, StoreError> {
    quote.lines.iter().map(|l| split_price(l.scaled)).collect()
}

/// A price in [`PRICE_SCALE`]ths of a credit, split into whole credits and the fraction.
fn split_price(scaled: i128) -> Result<(i64, i64), StoreError> {
    let scale = i128::from(PRICE_SCALE);
    let whole = i64::try_from(scaled / scale).map_err(|_| LedgerError::Overflow)?;
    let frac = i64::try_from(scaled % scale).map_err(|_| LedgerError::Overflow)?;
    Ok((whole, frac))
}

/// `rows` rows of `columns` values each, numbered for [`super::bind`].
pub(super) fn values_list(rows: usize, columns: usize) -> String {
    let row = |r: usize| {
        let binds: Vec<String> = (1..=columns).map(|c| bind(r * columns + c)).collect();
        format!("({})", binds.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// A call to record under its key: its account, the request's hash, what it charged and when.
struct NewCall<'a> {
    account: &'a AccountRow,
    key: &'a str,
    request_hash: &'a str,
    credits: i64,
    transaction_id: Option<i64>,
    now: OffsetDateTime,
}

/// Inserts calls in one statement, whose text depends only on how many there are (one, or at
/// most a batch's); answers their ids in the order given.
async fn insert_calls(conn: &mut Pipe<'_>, calls: &[NewCall<'_>]) -> QueryResult<Vec<i64>> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "INSERT INTO usage_events (account_id, app_key, user_id, idempotency_key, request_hash, \
         credits, transaction_id, created_at) VALUES {} RETURNING id",
        values_list(calls.len(), 8)
    );
    let mut query = diesel::sql_query(sql).into_boxed::<Db>();
    for call in calls {
        query = bind_call(query, call);
    }
    inserted_ids(conn, query).await
}

/// A statement built row by row ([`values_list`]).
type RowsQuery<'a> = diesel::query_builder::BoxedSqlQuery<'a, Db, diesel::query_builder::SqlQuery>;

/// Binds a call's values, in the order of [`insert_calls`]' columns.
fn bind_call<'a>(query: RowsQuery<'a>, call: &'a NewCall<'_>) -> RowsQuery<'a> {
    use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
    query
        .bind::<BigInt, _>(call.account.id)
        .bind::<Text, _>(&call.account.app_key)
        .bind::<Text, _>(&call.account.user_id)
        .bind::<Text, _>(call.key)
        .bind::<Text, _>(call.request_hash)
        .bind::<BigInt, _>(call.credits)
        .bind::<Nullable<BigInt>, _>(call.transaction_id)
        .bind::<Timestamp, _>(to_db(call.now))
}

/// Binds a line's values from its feature on (what follows its call and account), with its
/// price split by [`split_price`].
fn bind_line<'a>(
    query: RowsQuery<'a>,
    line: &'a UsageLine,
    (whole, frac): (i64, i64),
) -> RowsQuery<'a> {
    use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
    let window = line.window.filter(|_| line.included.is_some());
    query
        .bind::<Text, _>(&line.feature)
        .bind::<BigInt, _>(line.quantity)
        .bind::<BigInt, _>(line.included_used)
        .bind::<Nullable<Timestamp>, _>(window.map(|w| to_db(w.start)))
        .bind::<BigInt, _>(line.credits)
        .bind::<BigInt, _>(whole)
        .bind::<BigInt, _>(frac)
        .bind::<Nullable<BigInt>, _>(line.rate.map(|r| r.rate_id))
        .bind::<Nullable<BigInt>, _>(line.rate.map(|r| r.version))
        .bind::<Nullable<BigInt>, _>(line.rate.map(|r| r.credits))
        .bind::<Nullable<BigInt>, _>(line.rate.map(|r| r.per))
}

/// A line to insert: its account, its call, the line and its price split by [`split_price`].
type LineOf<'a> = (i64, i64, &'a UsageLine, (i64, i64));

/// Calls' lines in one statement: its text depends only on how many lines there are (a call
/// has at most `MAX_FEATURES_PER_CALL`; a batch's calls, one statement per
/// [`LINES_PER_INSERT`]).
async fn insert_lines(conn: &mut Pipe<'_>, lines: &[LineOf<'_>]) -> QueryResult<()> {
    use diesel::sql_types::BigInt;
    for chunk in lines.chunks(LINES_PER_INSERT) {
        let sql = format!(
            "INSERT INTO usage_lines (event_id, account_id, feature_key, quantity, included_used, \
             window_start, credits, price_whole, price_frac, rate_id, rate_version, \
             rate_credits, rate_per) VALUES {}",
            values_list(chunk.len(), 13)
        );
        let mut query = diesel::sql_query(sql).into_boxed::<Db>();
        for &(account_id, event_id, line, price) in chunk {
            query = query
                .bind::<BigInt, _>(event_id)
                .bind::<BigInt, _>(account_id);
            query = bind_line(query, line, price);
        }
        execute_rows(conn, query, chunk.len()).await?;
    }
    Ok(())
}

/// Most lines one statement of [`insert_lines`] inserts (13 parameters each).
const LINES_PER_INSERT: usize = 128;

/// Multi-row statements of up to this many rows are prepared once per connection and text; a
/// call writes a few rows, and a batch's calls some tens. Longer ones are rare and prepared each
/// time, so that a connection keeps few texts.
const CACHED_ROWS: usize = 32;

/// Runs `query`, a statement of `rows` rows (see [`CACHED_ROWS`]).
async fn execute_rows(
    conn: &mut Pipe<'_>,
    query: diesel::query_builder::BoxedSqlQuery<'_, Db, diesel::query_builder::SqlQuery>,
    rows: usize,
) -> QueryResult<usize> {
    if rows <= CACHED_ROWS {
        cached(query).execute(conn).await
    } else {
        query.execute(conn).await
    }
}

/// What calls add to one meter of an account: units priced, credits charged, the carry after.
struct MeterAdd<'a> {
    account_id: i64,
    feature: &'a str,
    quantity: i64,
    charged: i64,
    carry: i64,
}

/// What the priced lines of an account's call add to its meters.
fn meter_adds(account_id: i64, lines: &[UsageLine]) -> Vec<MeterAdd<'_>> {
    lines
        .iter()
        .filter(|l| l.rate.is_some())
        .map(|l| MeterAdd {
            account_id,
            feature: &l.feature,
            quantity: l.billable,
            charged: l.credits,
            carry: l.carry_after,
        })
        .collect()
}

/// Adds to meters (quantity, credits charged, the carry after), in one upsert; each meter once
/// (an upsert updates a row once).
async fn add_to_meters(
    conn: &mut Pipe<'_>,
    adds: &[MeterAdd<'_>],
    now: OffsetDateTime,
) -> QueryResult<()> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    if adds.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO usage_meters (account_id, feature_key, quantity, charged, carry, \
         updated_at) VALUES {} \
         ON CONFLICT (account_id, feature_key) DO UPDATE SET \
         quantity = usage_meters.quantity + excluded.quantity, \
         charged = usage_meters.charged + excluded.charged, \
         carry = excluded.carry, updated_at = excluded.updated_at",
        values_list(adds.len(), 6)
    );
    let at = to_db(now);
    let mut query = diesel::sql_query(sql).into_boxed::<Db>();
    for add in adds {
        query = query
            .bind::<BigInt, _>(add.account_id)
            .bind::<Text, _>(add.feature)
            .bind::<BigInt, _>(add.quantity)
            .bind::<BigInt, _>(add.charged)
            .bind::<BigInt, _>(add.carry)
            .bind::<Timestamp, _>(at);
    }
    execute_rows(conn, query, adds.len()).await?;
    Ok(())
}

/// Records what lines with an allowance used of it (the window's total after the line's call),
/// `(account id, line)`, in one upsert; each allowance once (an upsert updates a row once).
async fn write_allowances(
    conn: &mut Pipe<'_>,
    lines: &[(i64, &UsageLine)],
    now: OffsetDateTime,
) -> QueryResult<()> {
    use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
    let counted: Vec<(i64, &UsageLine, Window, i64)> = lines
        .iter()
        .filter_map(|&(id, l)| Some((id, l, l.window?, l.included?)))
        .collect();
    if counted.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO allowances (account_id, feature_key, window_start, window_end, included, \
         used, updated_at) VALUES {} \
         ON CONFLICT (account_id, feature_key, window_start) DO UPDATE SET \
         included = excluded.included, used = excluded.used, updated_at = excluded.updated_at",
        values_list(counted.len(), 7)
    );
    let at = to_db(now);
    let mut query = diesel::sql_query(sql).into_boxed::<Db>();
    let rows = counted.len();
    for (account_id, line, window, included) in counted {
        query = query
            .bind::<BigInt, _>(account_id)
            .bind::<Text, _>(&line.feature)
            .bind::<Timestamp, _>(to_db(window.start))
            .bind::<Nullable<Timestamp>, _>(window.end.map(to_db))
            .bind::<BigInt, _>(included)
            .bind::<BigInt, _>(line.used_before + line.included_used)
            .bind::<Timestamp, _>(at);
    }
    execute_rows(conn, query, rows).await?;
    Ok(())
}

/// The `usage.limit_reached` a line that used its allowance up announces.
fn limit_reached(
    account: &AccountRow,
    line: &UsageLine,
    plan_id: Option<&str>,
    now: OffsetDateTime,
) -> Option<OutboxRow> {
    let (Some(window), Some(included)) = (line.window, line.included) else {
        return None;
    };
    if !line.limit_reached {
        return None;
    }
    let payload = Payload::UsageLimitReached(UsageLimitReached {
        feature: line.feature.clone(),
        included,
        used: line.used_before + line.included_used,
        window_start: tally_kernel::rfc3339(window.start),
        resets_at: window.end.map(tally_kernel::rfc3339),
        plan_id: plan_id.map(str::to_owned),
    });
    Some(OutboxRow::new(
        &payload,
        (&account.app_key, Some(&account.user_id)),
        now,
    ))
}

/// The key of a hold's metadata that holds the estimate of a hold taken for quantities (callers
/// cannot use it in their own: see `ReserveRequest::validate`).
const USAGE_ESTIMATE: &str = tally_ledger::holds::USAGE_ESTIMATE;

/// The key a hold's usage is recorded under.
fn hold_key(hold_id: i64) -> String {
    format!("hold {hold_id}")
}

/// Reserves what a call's estimated quantities would cost now, under the account's lock: the
/// allowances first, the rest at the rates (a `block` allowance that does not cover them
/// refuses). The hold's metadata keeps the quantities and dimensions, and its creation instant
/// fixes the rates its capture uses.
pub(crate) async fn reserve_usage(
    conn: &mut Conn,
    cache: &PricingCache,
    usage: &UsageRequest,
    reserve: &ReserveRequest,
    request_hash: &str,
    now: OffsetDateTime,
) -> Result<Hold, StoreError> {
    let account = lock_account(conn, &usage.account, now).await?;
    if let Some(stored) = stored_hold(conn, &account, reserve, request_hash).await? {
        return Ok(stored);
    }
    let view = state(conn, &account, now).await?;
    let loaded = load_state(conn, cache, usage, Some(account.id), now).await?;
    let quote = allowed(quote_usage(&loaded, usage, now)?)?;
    let request = ReserveRequest {
        credits: quote.credits,
        ..reserve.clone()
    };
    let hold = create_hold(conn, &account, &view, &request, request_hash, now).await?;
    for line in &quote.lines {
        if let (Some(window), Some(included)) = (line.window, line.included)
            && line.included_used > 0
        {
            reserve_allowance(conn, &account, hold.id, line, (window, included), now).await?;
        }
    }
    Ok(hold)
}

/// Sets aside `line.included_used` units of the line's allowance for hold `hold_id`.
async fn reserve_allowance(
    conn: &mut Conn,
    account: &AccountRow,
    hold_id: i64,
    line: &UsageLine,
    (window, included): (tally_ledger::usage::Window, i64),
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let (at, start) = (to_db(now), to_db(window.start));
    diesel::insert_into(allowances::table)
        .values((
            allowances::account_id.eq(account.id),
            allowances::feature_key.eq(&line.feature),
            allowances::window_start.eq(start),
            allowances::window_end.eq(window.end.map(to_db)),
            allowances::included.eq(included),
            allowances::used.eq(0_i64),
            allowances::reserved.eq(line.included_used),
            allowances::updated_at.eq(at),
        ))
        .on_conflict((
            allowances::account_id,
            allowances::feature_key,
            allowances::window_start,
        ))
        .do_update()
        .set((
            allowances::included.eq(included),
            allowances::reserved.eq(allowances::reserved + line.included_used),
            allowances::updated_at.eq(at),
        ))
        .execute(conn)
        .await?;
    diesel::insert_into(hold_allowances::table)
        .values((
            hold_allowances::hold_id.eq(hold_id),
            hold_allowances::account_id.eq(account.id),
            hold_allowances::feature_key.eq(&line.feature),
            hold_allowances::window_start.eq(start),
            hold_allowances::units.eq(line.included_used),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Gives back what holds set aside of allowances (their capture, release or expiry); holds
/// taken for credits set nothing aside, so for them this is one empty read.
pub(crate) async fn release_allowances(
    conn: &mut Conn,
    hold_ids: &[i64],
) -> Result<(), StoreError> {
    let rows: Vec<(i64, String, time::PrimitiveDateTime, i64)> = hold_allowances::table
        .filter(hold_allowances::hold_id.eq_any(hold_ids))
        .select((
            hold_allowances::account_id,
            hold_allowances::feature_key,
            hold_allowances::window_start,
            hold_allowances::units,
        ))
        .load(conn)
        .await?;
    if rows.is_empty() {
        return Ok(());
    }
    for (account_id, feature, start, units) in rows {
        diesel::update(
            allowances::table
                .filter(allowances::account_id.eq(account_id))
                .filter(allowances::feature_key.eq(&feature))
                .filter(allowances::window_start.eq(start)),
        )
        .set(allowances::reserved.eq(allowances::reserved - units))
        .execute(conn)
        .await?;
    }
    diesel::delete(hold_allowances::table.filter(hold_allowances::hold_id.eq_any(hold_ids)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Captures a hold taken with [`reserve_usage`] at the call's actual quantities: allowances
/// first, the rest priced by the rates in force when the hold was taken, charged as the hold's
/// `ai_usage` transaction (above the estimate only if the account covers the excess), the
/// call recorded under `hold <id>` (no caller key has a space). Repeating a capture with the same quantities answers the
/// first.
pub(crate) async fn capture_usage(
    conn: &mut Conn,
    cache: &PricingCache,
    app: &str,
    hold_id: i64,
    quantities: &BTreeMap<String, i64>,
    capture_hash: &str,
    now: OffsetDateTime,
) -> Result<(Hold, UsageOutcome, Option<Transaction>), StoreError> {
    let (account, hold) = lock_hold(conn, app, hold_id).await?;
    let key = hold_key(hold.id);
    if let Some((first, txn_row)) = capturable(conn, &hold, Some(capture_hash)).await? {
        let (id, credits, txn): (i64, i64, Option<i64>) = usage_events::table
            .filter(usage_events::account_id.eq(account.id))
            .filter(usage_events::idempotency_key.eq(&key))
            .select((
                usage_events::id,
                usage_events::credits,
                usage_events::transaction_id,
            ))
            .first(conn)
            .await?;
        let outcome = stored_outcome(conn, id, credits, txn).await?;
        return Ok((first, outcome, txn_row));
    }
    let Some(metadata) = hold.usage_metadata() else {
        return Err(LedgerError::invalid(
            "quantities",
            "this hold reserved an amount of credits: capture it with `amount`",
        )
        .into());
    };
    let dimensions: Dimensions =
        serde_json::from_value(metadata[USAGE_ESTIMATE]["dimensions"].clone()).unwrap_or_default();
    let estimate_metadata = metadata.get("metadata").cloned().filter(|m| !m.is_null());
    let usage = UsageRequest {
        account: tally_ledger::AccountRef::new(account.app_key.clone(), account.user_id.clone())?,
        quantities: quantities.clone(),
        features: vec![],
        dimensions,
        description: hold.description.clone(),
        metadata: estimate_metadata,
        idempotency_key: Some(key.clone()),
    };
    // What the hold set aside of the allowances is this call's to use.
    release_allowances(conn, &[hold.id]).await?;
    let mut view = state_with_hold(conn, &account, &hold, now).await?;
    let loaded = load_state(conn, cache, &usage, Some(account.id), now).await?;
    // Priced by the rates in force when the hold was taken.
    let quote = allowed(quote_usage(&loaded, &usage, from_db(hold.created_at))?)?;
    burn_lots(conn, account.id, &mut view, quote.credits, now).await?;
    let plan = plan_capture(&view, hold.id, quote.credits, now)?;
    let main = (quote.credits > 0).then(|| MainRow {
        description: &hold.description,
        idempotency_key: None,
        request_hash: None,
        metadata: Some(usage_metadata(&usage, &quote).to_string()),
        actor: None,
    });
    let txn = write_plan(conn, &account, &plan, main, now).await?;
    let row = settle_hold(
        conn,
        hold.id,
        quote.credits,
        Some(capture_hash),
        txn.as_ref(),
        now,
    )
    .await?;
    let outcome = record_call(
        conn,
        &account,
        (&key, capture_hash),
        &quote,
        txn.as_ref().map(|t| t.id),
        loaded.plan_id.as_deref(),
        now,
    )
    .await?;
    Ok((Hold::try_from(row)?, outcome, txn))
}

/// The figures of the usage invariants.
pub(crate) async fn usage_audit(
    conn: &mut Conn,
) -> Result<(Vec<AllowanceAudit>, Vec<MeterAudit>, Vec<EventAudit>), StoreError> {
    let owners: BTreeMap<i64, (String, String)> = accounts::table
        .filter(
            diesel::dsl::exists(
                usage_events::table.filter(usage_events::account_id.eq(accounts::id)),
            )
            .or(diesel::dsl::exists(
                allowances::table.filter(allowances::account_id.eq(accounts::id)),
            )),
        )
        .select((accounts::id, (accounts::app_key, accounts::user_id)))
        .load(conn)
        .await?
        .into_iter()
        .collect();
    let owner = |id: i64| owners.get(&id).cloned().unwrap_or_default();
    type Line = (
        i64,
        i64,
        String,
        Option<time::PrimitiveDateTime>,
        i64,
        i64,
        i64,
        i64,
    );
    let lines: Vec<Line> = usage_lines::table
        .select((
            usage_lines::event_id,
            usage_lines::account_id,
            usage_lines::feature_key,
            usage_lines::window_start,
            usage_lines::included_used,
            usage_lines::credits,
            usage_lines::price_whole,
            usage_lines::price_frac,
        ))
        .load(conn)
        .await?;
    let mut by_window: BTreeMap<(i64, String, time::PrimitiveDateTime), i64> = BTreeMap::new();
    let mut by_meter: BTreeMap<(i64, String), (i64, i128)> = BTreeMap::new();
    // Per call: its lines' accounts (one per line) and credits.
    let mut by_event: BTreeMap<i64, (Vec<i64>, i64)> = BTreeMap::new();
    for (event, account, feature, start, included_used, credits, whole, frac) in lines {
        if let Some(start) = start {
            *by_window
                .entry((account, feature.clone(), start))
                .or_default() += included_used;
        }
        let meter = by_meter.entry((account, feature)).or_default();
        meter.0 += credits;
        meter.1 += i128::from(whole) * i128::from(PRICE_SCALE) + i128::from(frac);
        let charged = by_event.entry(event).or_default();
        charged.0.push(account);
        charged.1 += credits;
    }
    let mut by_hold: BTreeMap<(i64, String, time::PrimitiveDateTime), i64> = BTreeMap::new();
    let held: Vec<(i64, String, time::PrimitiveDateTime, i64)> = hold_allowances::table
        .select((
            hold_allowances::account_id,
            hold_allowances::feature_key,
            hold_allowances::window_start,
            hold_allowances::units,
        ))
        .load(conn)
        .await?;
    for (account, feature, start, units) in held {
        *by_hold.entry((account, feature, start)).or_default() += units;
    }
    type AllowanceRow = (i64, String, time::PrimitiveDateTime, i64, i64);
    let allowance_rows: Vec<AllowanceRow> = allowances::table
        .select((
            allowances::account_id,
            allowances::feature_key,
            allowances::window_start,
            allowances::used,
            allowances::reserved,
        ))
        .load(conn)
        .await?;
    let allowance_audits = allowance_rows
        .into_iter()
        .map(|(account, feature, start, used, reserved)| {
            let key = (account, feature, start);
            AllowanceAudit {
                account: owner(account),
                lines_used: by_window.get(&key).copied().unwrap_or(0),
                holds_reserved: by_hold.get(&key).copied().unwrap_or(0),
                feature: key.1,
                used,
                reserved,
            }
        })
        .collect();
    let meter_rows: Vec<(i64, String, i64, i64)> = usage_meters::table
        .select((
            usage_meters::account_id,
            usage_meters::feature_key,
            usage_meters::charged,
            usage_meters::carry,
        ))
        .load(conn)
        .await?;
    let meter_audits = meter_rows
        .into_iter()
        .map(|(account, feature, charged, carry)| {
            let (lines_credits, lines_scaled) = by_meter
                .get(&(account, feature.clone()))
                .copied()
                .unwrap_or_default();
            MeterAudit {
                account: owner(account),
                feature,
                charged,
                carry,
                lines_credits,
                lines_scaled,
            }
        })
        .collect();
    let event_rows: Vec<(i64, i64, i64, Option<i64>)> = usage_events::table
        .left_join(
            // The call's own transaction: the account's, not another's that the id could name.
            transactions::table.on(transactions::id
                .nullable()
                .eq(usage_events::transaction_id)
                .and(transactions::account_id.eq(usage_events::account_id))),
        )
        .select((
            usage_events::id,
            usage_events::account_id,
            usage_events::credits,
            transactions::amount.nullable(),
        ))
        .load(conn)
        .await?;
    let mut event_audits: Vec<EventAudit> = event_rows
        .into_iter()
        .map(|(id, account, credits, amount)| {
            let (line_accounts, lines_credits) = by_event.remove(&id).unwrap_or_default();
            EventAudit {
                account: owner(account),
                event_id: id,
                credits,
                lines_credits,
                transaction_amount: amount,
                recorded: true,
                lines_elsewhere: line_accounts.iter().filter(|&&a| a != account).count(),
            }
        })
        .collect();
    // Lines whose call is missing, under their account.
    if !by_event.is_empty() {
        let ids: Vec<i64> = by_event
            .values()
            .flat_map(|(a, _)| <[i64]>::first(a).copied())
            .collect();
        let orphans: BTreeMap<i64, (String, String)> = accounts::table
            .filter(accounts::id.eq_any(ids))
            .select((accounts::id, (accounts::app_key, accounts::user_id)))
            .load(conn)
            .await?
            .into_iter()
            .collect();
        event_audits.extend(by_event.into_iter().map(|(id, (accounts, lines_credits))| {
            // Reported under its first line's account.
            let account = <[i64]>::first(&accounts).and_then(|a| orphans.get(a));
            EventAudit {
                account: account.cloned().unwrap_or_default(),
                event_id: id,
                credits: 0,
                lines_credits,
                transaction_amount: None,
                recorded: false,
                lines_elsewhere: 0,
            }
        }));
    }
    Ok((allowance_audits, meter_audits, event_audits))
}
