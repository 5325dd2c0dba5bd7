-- Holds of 0 credits must be settled before this runs.
ALTER TABLE holds RENAME TO holds_previous;
CREATE TABLE holds (
    id              INTEGER PRIMARY KEY,
    account_id      BIGINT    NOT NULL REFERENCES accounts (id),
    app_key         TEXT      NOT NULL,
    user_id         TEXT      NOT NULL,
    amount          BIGINT    NOT NULL CHECK (amount > 0),
    captured        BIGINT,
    status          TEXT      NOT NULL,
    description     TEXT      NOT NULL,
    metadata        TEXT,
    idempotency_key TEXT,
    request_hash    TEXT,
    capture_hash    TEXT,
    transaction_id  BIGINT    REFERENCES transactions (id),
    expires_at      TIMESTAMP NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL
);
INSERT INTO holds SELECT * FROM holds_previous;
DROP TABLE holds_previous;
CREATE UNIQUE INDEX holds_idempotency ON holds (account_id, idempotency_key);
CREATE INDEX holds_active ON holds (account_id) WHERE status = 'active';
CREATE INDEX holds_due ON holds (expires_at) WHERE status = 'active';
DROP TABLE usage_lines;
DROP TABLE usage_events;
DROP TABLE usage_meters;
DROP TABLE hold_allowances;
DROP TABLE allowances;
DROP TABLE entitlements;
DROP TABLE pricing_rates;
DROP TABLE pricing_features;
