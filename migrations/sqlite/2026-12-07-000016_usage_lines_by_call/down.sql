CREATE TEMPORARY TABLE usage_lines_copy AS SELECT * FROM usage_lines;
DROP TABLE usage_lines;
CREATE TABLE usage_lines (
    id            INTEGER PRIMARY KEY,
    event_id      BIGINT    NOT NULL REFERENCES usage_events (id),
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
    rate_per      BIGINT
);
CREATE INDEX usage_lines_event ON usage_lines (event_id);
INSERT INTO usage_lines (event_id, account_id, feature_key, quantity, included_used, window_start, credits,
       price_whole, price_frac, rate_id, rate_version, rate_credits, rate_per)
SELECT event_id, account_id, feature_key, quantity, included_used, window_start, credits,
       price_whole, price_frac, rate_id, rate_version, rate_credits, rate_per
  FROM usage_lines_copy ORDER BY event_id, feature_key;
DROP TABLE usage_lines_copy;
