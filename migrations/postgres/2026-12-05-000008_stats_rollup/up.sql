-- The operators' statistics of finished days, counted once: per app and UTC day, one marker row
-- ('day') and one row per figure (credits per transaction type, revenue per currency, accounts
-- opened, check-ins, subscriptions started). A finished day's figures never change.
CREATE TABLE stats_days (
    app_key     TEXT   NOT NULL,
    day         TEXT   NOT NULL,
    metric      TEXT   NOT NULL,
    dim         TEXT   NOT NULL,
    amount_in   BIGINT NOT NULL,
    amount_out  BIGINT NOT NULL,
    PRIMARY KEY (app_key, day, metric, dim)
);

-- The unfinished days are counted from the tables by (app, time range): these indexes let the
-- count read one day's rows instead of the app's whole history (the transactions index holds
-- every column the count reads).
CREATE INDEX transactions_app_created ON transactions (app_key, created_at, txn_type, amount);
CREATE INDEX accounts_app_created ON accounts (app_key, created_at);
CREATE INDEX checkins_app_created ON checkins (app_key, created_at);
CREATE INDEX payments_app_created ON payments (app_key, created_at);
