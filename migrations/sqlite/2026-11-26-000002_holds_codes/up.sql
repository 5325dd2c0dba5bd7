-- Holds reserve credits for streaming usage; redemption codes grant credits once per user.
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
CREATE UNIQUE INDEX holds_idempotency ON holds (account_id, idempotency_key);
CREATE INDEX holds_active ON holds (account_id) WHERE status = 'active';
CREATE INDEX holds_due ON holds (expires_at) WHERE status = 'active';

CREATE TABLE redemption_codes (
    id                  INTEGER PRIMARY KEY,
    app_key             TEXT      NOT NULL,
    code                TEXT      NOT NULL,
    batch               TEXT      NOT NULL,
    credits             BIGINT    NOT NULL CHECK (credits > 0),
    max_uses            BIGINT    NOT NULL CHECK (max_uses > 0),
    uses                BIGINT    NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    expires_at          TIMESTAMP,
    credits_expire_days INTEGER,
    description         TEXT      NOT NULL,
    created_by          TEXT      NOT NULL,
    created_at          TIMESTAMP NOT NULL,
    CONSTRAINT redemption_codes_app_code UNIQUE (app_key, code)
);
CREATE INDEX redemption_codes_app_id ON redemption_codes (app_key, id DESC);

CREATE TABLE redemptions (
    id             INTEGER PRIMARY KEY,
    code_id        BIGINT    NOT NULL REFERENCES redemption_codes (id),
    app_key        TEXT      NOT NULL,
    user_id        TEXT      NOT NULL,
    transaction_id BIGINT    NOT NULL REFERENCES transactions (id),
    created_at     TIMESTAMP NOT NULL,
    CONSTRAINT redemptions_once_per_user UNIQUE (code_id, user_id)
);

CREATE TABLE redeem_failures (
    id         INTEGER PRIMARY KEY,
    app_key    TEXT      NOT NULL,
    user_id    TEXT      NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX redeem_failures_user ON redeem_failures (app_key, user_id, created_at);
