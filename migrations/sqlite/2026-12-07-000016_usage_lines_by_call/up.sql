-- A call's lines are keyed by the call and the feature (a call names each feature once), in one
-- b-tree instead of a rowid table and an index on the call, without a foreign key to the call
-- written in the same transaction; `tally verify` checks that every call's lines add up to what
-- it charged.
CREATE TEMPORARY TABLE usage_lines_copy AS SELECT * FROM usage_lines;
DROP TABLE usage_lines;
CREATE TABLE usage_lines (
    event_id      BIGINT    NOT NULL,
    account_id    BIGINT    NOT NULL,
    feature_key   TEXT      NOT NULL,
    quantity      BIGINT    NOT NULL,
    included_used BIGINT    NOT NULL,
    window_start  TIMESTAMP,
    credits       BIGINT    NOT NULL,
    price_whole   BIGINT    NOT NULL,
    price_frac    BIGINT    NOT NULL,
    rate_id       BIGINT,
    rate_version  BIGINT,
    rate_credits  BIGINT,
    rate_per      BIGINT,
    PRIMARY KEY (event_id, feature_key)
) WITHOUT ROWID;
INSERT INTO usage_lines (event_id, account_id, feature_key, quantity, included_used, window_start, credits,
       price_whole, price_frac, rate_id, rate_version, rate_credits, rate_per)
SELECT event_id, account_id, feature_key, quantity, included_used, window_start, credits,
       price_whole, price_frac, rate_id, rate_version, rate_credits, rate_per
  FROM usage_lines_copy;
DROP TABLE usage_lines_copy;
