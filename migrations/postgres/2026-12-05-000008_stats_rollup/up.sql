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
