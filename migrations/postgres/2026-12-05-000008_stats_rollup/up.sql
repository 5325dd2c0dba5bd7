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
-- count read one day's rows instead of the app's whole history. History and check-in rows are
-- written in time order, so a BRIN index (a few pages per million rows, nearly free to keep up
-- on every movement) finds a day's blocks; the rarer accounts and payments take a B-tree.
CREATE INDEX transactions_created_brin ON transactions USING brin (created_at);
CREATE INDEX checkins_created_brin ON checkins USING brin (created_at);
CREATE INDEX accounts_app_created ON accounts (app_key, created_at);
CREATE INDEX payments_app_created ON payments (app_key, created_at);
