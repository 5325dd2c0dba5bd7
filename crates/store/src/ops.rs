//! The ledger's queries, written once and expanded per backend by [`backend_ops!`]: each
//! expansion is checked by the compiler against that backend, so a dialect-only construct fails
//! to build at its own line. The only per-backend difference is the row lock, which SQLite does
//! not need (its write transactions start with `BEGIN IMMEDIATE` and run one at a time).

macro_rules! backend_ops {
    ($module:ident, $conn:ty $(, $lock:ident)?) => {
        pub(crate) mod $module {
            use diesel::prelude::*;
            use diesel::result::{DatabaseErrorKind, Error as DieselError};
            use diesel_async::RunQueryDsl;
            use tally_ledger::checkin::{streak_for, CheckinRecord, CheckinRequest};
            use tally_ledger::plan::{plan_expiry, plan_movement, Plan};
            use tally_ledger::{
                AccountAudit, AccountRef, AccountView, CheckinConfig, LedgerError, Movement,
                MovementKind, Transaction, TransactionQuery, TxnType,
            };
            use time::{Date, OffsetDateTime};

            use crate::rows::{
                to_db, AccountRow, AuditRow, LotRow, NewTxn, TxnRow, AUDIT_SQL,
            };
            use crate::schema::{accounts, checkin_configs, checkins, lots, transactions};
            use crate::StoreError;

            type Conn = $conn;

            /// Locks the account row for this transaction, creating it on first use.
            async fn lock_account(
                conn: &mut Conn,
                account: &AccountRef,
                now: OffsetDateTime,
            ) -> Result<AccountRow, StoreError> {
                let find = || {
                    accounts::table
                        .filter(accounts::app_key.eq(&account.app))
                        .filter(accounts::user_id.eq(&account.user))
                        .select(AccountRow::as_select())
                        $(.$lock())?
                };
                if let Some(row) = find().first(conn).await.optional()? {
                    return Ok(row);
                }
                diesel::insert_into(accounts::table)
                    .values((
                        accounts::app_key.eq(&account.app),
                        accounts::user_id.eq(&account.user),
                        accounts::balance.eq(0_i64),
                        accounts::held.eq(0_i64),
                        accounts::created_at.eq(to_db(now)),
                        accounts::updated_at.eq(to_db(now)),
                    ))
                    .on_conflict((accounts::app_key, accounts::user_id))
                    .do_nothing()
                    .execute(conn)
                    .await?;
                Ok(find().first(conn).await?)
            }

            async fn lock_account_by_id(conn: &mut Conn, id: i64) -> Result<AccountRow, StoreError> {
                Ok(accounts::table
                    .find(id)
                    .select(AccountRow::as_select())
                    $(.$lock())?
                    .first(conn)
                    .await?)
            }

            async fn live_lots(conn: &mut Conn, account_id: i64) -> Result<AccountView, StoreError> {
                let lots = lots::table
                    .filter(lots::account_id.eq(account_id))
                    .filter(lots::remaining.gt(0))
                    .order(lots::id)
                    .select(LotRow::as_select())
                    .load(conn)
                    .await?;
                Ok(AccountView {
                    balance: 0,
                    held: 0,
                    lots: lots.into_iter().map(Into::into).collect(),
                })
            }

            async fn state(conn: &mut Conn, account: &AccountRow) -> Result<AccountView, StoreError> {
                let mut view = live_lots(conn, account.id).await?;
                view.balance = account.balance;
                view.held = account.held;
                Ok(view)
            }

            /// What the movement's own row carries besides the plan's figures.
            pub(crate) struct MainRow<'a> {
                pub description: &'a str,
                pub idempotency_key: Option<&'a str>,
                pub request_hash: Option<&'a str>,
                pub metadata: Option<String>,
                pub actor: Option<&'a str>,
            }

            /// Writes a plan; returns the movement's own transaction, if the plan has one.
            async fn write_plan(
                conn: &mut Conn,
                account: &AccountRow,
                plan: &Plan,
                main: Option<MainRow<'_>>,
                now: OffsetDateTime,
            ) -> Result<Option<Transaction>, StoreError> {
                let at = to_db(now);
                for &(lot_id, remaining) in &plan.lot_updates {
                    diesel::update(lots::table.find(lot_id))
                        .set(lots::remaining.eq(remaining))
                        .execute(conn)
                        .await?;
                }
                for entry in &plan.expiries {
                    let metadata = entry.expired_lot.map(|id| format!("{{\"lot_id\":{id}}}"));
                    diesel::insert_into(transactions::table)
                        .values(NewTxn {
                            account_id: account.id,
                            app_key: &account.app_key,
                            user_id: &account.user_id,
                            txn_type: TxnType::Expiry.as_str(),
                            amount: entry.amount,
                            balance_after: entry.balance_after,
                            description: "Credits expired",
                            idempotency_key: None,
                            request_hash: None,
                            metadata,
                            actor: None,
                            created_at: at,
                        })
                        .execute(conn)
                        .await?;
                }
                let mut written = None;
                if let (Some(entry), Some(main)) = (&plan.main, main) {
                    let row: TxnRow = diesel::insert_into(transactions::table)
                        .values(NewTxn {
                            account_id: account.id,
                            app_key: &account.app_key,
                            user_id: &account.user_id,
                            txn_type: entry.txn_type.as_str(),
                            amount: entry.amount,
                            balance_after: entry.balance_after,
                            description: main.description,
                            idempotency_key: main.idempotency_key,
                            request_hash: main.request_hash,
                            metadata: main.metadata,
                            actor: main.actor,
                            created_at: at,
                        })
                        .returning(TxnRow::as_returning())
                        .get_result(conn)
                        .await
                        .map_err(|e| match e {
                            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                                StoreError::IdempotencyRace
                            }
                            e => e.into(),
                        })?;
                    if let Some(lot) = &plan.new_lot {
                        if lot.amount > 0 {
                            diesel::insert_into(lots::table)
                                .values((
                                    lots::account_id.eq(account.id),
                                    lots::transaction_id.eq(row.id),
                                    lots::source.eq(lot.source.as_str()),
                                    lots::amount.eq(lot.amount),
                                    lots::remaining.eq(lot.remaining),
                                    lots::expires_at.eq(lot.expires_at.map(to_db)),
                                    lots::created_at.eq(at),
                                ))
                                .execute(conn)
                                .await?;
                        }
                    }
                    written = Some(Transaction::try_from(row)?);
                }
                if plan.balance != account.balance || written.is_some() {
                    diesel::update(accounts::table.find(account.id))
                        .set((accounts::balance.eq(plan.balance), accounts::updated_at.eq(at)))
                        .execute(conn)
                        .await?;
                }
                Ok(written)
            }

            /// Applies a movement inside the caller's write transaction.
            pub(crate) async fn apply(
                conn: &mut Conn,
                movement: &Movement,
                request_hash: &str,
                now: OffsetDateTime,
            ) -> Result<Transaction, StoreError> {
                let account = lock_account(conn, &movement.account, now).await?;
                if let Some(key) = &movement.idempotency_key {
                    let stored = transactions::table
                        .filter(transactions::account_id.eq(account.id))
                        .filter(transactions::idempotency_key.eq(key))
                        .select(TxnRow::as_select())
                        .first(conn)
                        .await
                        .optional()?;
                    if let Some(row) = stored {
                        return if row.request_hash.as_deref() == Some(request_hash) {
                            Ok(Transaction::try_from(row)?)
                        } else {
                            Err(LedgerError::IdempotencyKeyReused.into())
                        };
                    }
                }
                let state = state(conn, &account).await?;
                let plan = plan_movement(&state, &movement.kind, now)?;
                let metadata = movement.metadata.as_ref().map(|m| m.to_string());
                let main = MainRow {
                    description: &movement.description,
                    idempotency_key: movement.idempotency_key.as_deref(),
                    request_hash: movement.idempotency_key.as_ref().map(|_| request_hash),
                    metadata,
                    actor: movement.actor.as_deref(),
                };
                write_plan(conn, &account, &plan, Some(main), now)
                    .await?
                    .ok_or_else(|| StoreError::Invariant("movement wrote no transaction"))
            }

            /// Claims the local day and grants the reward inside the caller's write transaction.
            pub(crate) async fn checkin(
                conn: &mut Conn,
                request: &CheckinRequest,
            ) -> Result<CheckinRecord, StoreError> {
                let account = lock_account(conn, &request.account, request.now).await?;
                let previous = latest_checkin(conn, &request.account).await?;
                let streak = streak_for(request.day, previous.as_ref());
                let reward = request.config.reward_for(streak);
                let kind = MovementKind::Grant {
                    txn_type: TxnType::Checkin,
                    credits: reward,
                    expires_at: request.config.expiry_for(request.now),
                };
                let state = state(conn, &account).await?;
                let plan = plan_movement(&state, &kind, request.now)?;
                let description = format!("Daily check-in (streak day {streak})");
                let main = MainRow {
                    description: &description,
                    idempotency_key: None,
                    request_hash: None,
                    metadata: None,
                    actor: None,
                };
                let txn = write_plan(conn, &account, &plan, Some(main), request.now)
                    .await?
                    .ok_or_else(|| StoreError::Invariant("check-in wrote no transaction"))?;
                let day = request.day.to_string();
                // The unique constraint on (app, user, day) is what makes this once per day.
                diesel::insert_into(checkins::table)
                    .values((
                        checkins::app_key.eq(&request.account.app),
                        checkins::user_id.eq(&request.account.user),
                        checkins::day.eq(&day),
                        checkins::streak.eq(streak),
                        checkins::awarded.eq(reward),
                        checkins::transaction_id.eq(txn.id),
                        checkins::created_at.eq(to_db(request.now)),
                    ))
                    .execute(conn)
                    .await
                    .map_err(|e| match e {
                        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                            StoreError::Ledger(LedgerError::AlreadyCheckedIn { day: day.clone() })
                        }
                        e => e.into(),
                    })?;
                Ok(CheckinRecord {
                    day: request.day,
                    streak,
                    awarded: reward,
                    balance_after: txn.balance_after,
                })
            }

            pub(crate) async fn latest_checkin(
                conn: &mut Conn,
                account: &AccountRef,
            ) -> Result<Option<CheckinRecord>, StoreError> {
                let row: Option<(String, i64, i64, i64)> = checkins::table
                    .inner_join(transactions::table)
                    .filter(checkins::app_key.eq(&account.app))
                    .filter(checkins::user_id.eq(&account.user))
                    .order(checkins::day.desc())
                    .select((
                        checkins::day,
                        checkins::streak,
                        checkins::awarded,
                        transactions::balance_after,
                    ))
                    .first(conn)
                    .await
                    .optional()?;
                row.map(|(day, streak, awarded, balance_after)| {
                    let format = time::macros::format_description!("[year]-[month]-[day]");
                    let day = Date::parse(&day, format)
                        .map_err(|_| StoreError::Invariant("stored check-in day is malformed"))?;
                    Ok(CheckinRecord { day, streak, awarded, balance_after })
                })
                .transpose()
            }

            /// The account and its live lots in one statement: read outside a transaction, two
            /// statements could see two states (a balance from before a movement, lots after it).
            pub(crate) async fn account(
                conn: &mut Conn,
                account: &AccountRef,
            ) -> Result<AccountView, StoreError> {
                let rows: Vec<(AccountRow, Option<LotRow>)> = accounts::table
                    .left_join(
                        lots::table.on(lots::account_id
                            .eq(accounts::id)
                            .and(lots::remaining.gt(0))),
                    )
                    .filter(accounts::app_key.eq(&account.app))
                    .filter(accounts::user_id.eq(&account.user))
                    .order(lots::id)
                    .select((AccountRow::as_select(), Option::<LotRow>::as_select()))
                    .load(conn)
                    .await?;
                let mut view = AccountView::default();
                for (row, lot) in rows {
                    view.balance = row.balance;
                    view.held = row.held;
                    view.lots.extend(lot.map(Into::into));
                }
                Ok(view)
            }

            pub(crate) async fn transactions(
                conn: &mut Conn,
                query: &TransactionQuery,
            ) -> Result<Vec<Transaction>, StoreError> {
                let mut q = transactions::table
                    .filter(transactions::app_key.eq(&query.app))
                    .select(TxnRow::as_select())
                    .order(transactions::id.desc())
                    .limit(query.limit)
                    .offset(query.offset)
                    .into_boxed();
                if let Some(user) = &query.user {
                    q = q.filter(transactions::user_id.eq(user));
                }
                if let Some(t) = query.txn_type {
                    q = q.filter(transactions::txn_type.eq(t.as_str()));
                }
                if let Some(from) = query.from {
                    q = q.filter(transactions::created_at.ge(to_db(from)));
                }
                if let Some(to) = query.to {
                    q = q.filter(transactions::created_at.lt(to_db(to)));
                }
                let rows = q.load(conn).await?;
                rows.into_iter()
                    .map(|r| Transaction::try_from(r).map_err(StoreError::from))
                    .collect()
            }

            pub(crate) async fn checkin_config(
                conn: &mut Conn,
                app: &str,
            ) -> Result<Option<CheckinConfig>, StoreError> {
                let row: Option<(bool, String, String, Option<i32>)> = checkin_configs::table
                    .find(app)
                    .select((
                        checkin_configs::enabled,
                        checkin_configs::rewards,
                        checkin_configs::timezone,
                        checkin_configs::credits_expire_days,
                    ))
                    .first(conn)
                    .await
                    .optional()?;
                row.map(|(enabled, rewards, timezone, days)| {
                    Ok(CheckinConfig {
                        enabled,
                        rewards: serde_json::from_str(&rewards)
                            .map_err(|_| StoreError::Invariant("stored rewards are malformed"))?,
                        timezone,
                        credits_expire_days: days.and_then(|d| u32::try_from(d).ok()),
                    })
                })
                .transpose()
            }

            pub(crate) async fn put_checkin_config(
                conn: &mut Conn,
                app: &str,
                config: &CheckinConfig,
                actor: &str,
                now: OffsetDateTime,
            ) -> Result<(), StoreError> {
                let rewards = serde_json::to_string(&config.rewards)
                    .map_err(|_| StoreError::Invariant("rewards do not serialise"))?;
                let days = config.credits_expire_days.and_then(|d| i32::try_from(d).ok());
                let values = (
                    checkin_configs::enabled.eq(config.enabled),
                    checkin_configs::rewards.eq(&rewards),
                    checkin_configs::timezone.eq(&config.timezone),
                    checkin_configs::credits_expire_days.eq(days),
                    checkin_configs::updated_by.eq(actor),
                    checkin_configs::updated_at.eq(to_db(now)),
                );
                diesel::insert_into(checkin_configs::table)
                    .values((checkin_configs::app_key.eq(app), values.clone()))
                    .on_conflict(checkin_configs::app_key)
                    .do_update()
                    .set(values)
                    .execute(conn)
                    .await?;
                Ok(())
            }

            /// Accounts holding lots due at `now`.
            pub(crate) async fn accounts_with_due_lots(
                conn: &mut Conn,
                now: OffsetDateTime,
                limit: i64,
            ) -> Result<Vec<i64>, StoreError> {
                Ok(lots::table
                    .filter(lots::remaining.gt(0))
                    .filter(lots::expires_at.le(to_db(now)))
                    .select(lots::account_id)
                    .distinct()
                    .limit(limit)
                    .load(conn)
                    .await?)
            }

            /// Writes the due expiries of one account inside the caller's write transaction.
            pub(crate) async fn expire_account(
                conn: &mut Conn,
                account_id: i64,
                now: OffsetDateTime,
            ) -> Result<bool, StoreError> {
                let account = lock_account_by_id(conn, account_id).await?;
                let state = state(conn, &account).await?;
                let plan = plan_expiry(&state, now);
                if plan.expiries.is_empty() {
                    return Ok(false);
                }
                write_plan(conn, &account, &plan, None, now).await?;
                Ok(true)
            }

            pub(crate) async fn audit(conn: &mut Conn) -> Result<Vec<AccountAudit>, StoreError> {
                let rows: Vec<AuditRow> = diesel::sql_query(AUDIT_SQL).load(conn).await?;
                Ok(rows
                    .into_iter()
                    .map(|r| AccountAudit {
                        app: r.app_key,
                        user: r.user_id,
                        balance: r.balance,
                        held: r.held,
                        transaction_sum: r.transaction_sum,
                        live_lot_sum: r.live_lot_sum,
                        malformed_lots: r.malformed_lots,
                        broken_balance_after: r.broken_balance_after,
                        has_debt_source: r.debt_sources > 0,
                        duplicate_idempotency_keys: r.duplicate_keys,
                        duplicate_checkins: r.duplicate_checkins,
                    })
                    .collect())
            }

            pub(crate) async fn ping(conn: &mut Conn) -> Result<(), StoreError> {
                diesel::sql_query("SELECT 1").execute(conn).await?;
                Ok(())
            }
        }
    };
}

backend_ops!(pg, diesel_async::AsyncPgConnection, for_update);
backend_ops!(sqlite, crate::SqliteConn);
