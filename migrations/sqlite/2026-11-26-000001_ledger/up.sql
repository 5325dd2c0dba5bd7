-- Credits ledger: accounts, grant lots, the append-only history, check-in.
CREATE TABLE accounts (
    id          INTEGER PRIMARY KEY,
    app_key     TEXT      NOT NULL,
    user_id     TEXT      NOT NULL,
    balance     BIGINT    NOT NULL DEFAULT 0,
    held        BIGINT    NOT NULL DEFAULT 0 CHECK (held >= 0),
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    CONSTRAINT accounts_app_user UNIQUE (app_key, user_id)
);

CREATE TABLE transactions (
    id              INTEGER PRIMARY KEY,
    account_id      BIGINT    NOT NULL REFERENCES accounts (id),
    app_key         TEXT      NOT NULL,
    user_id         TEXT      NOT NULL,
    txn_type        TEXT      NOT NULL,
    amount          BIGINT    NOT NULL,
    balance_after   BIGINT    NOT NULL,
    description     TEXT      NOT NULL,
    idempotency_key TEXT,
    request_hash    TEXT,
    metadata        TEXT,
    actor           TEXT,
    created_at      TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX transactions_idempotency ON transactions (account_id, idempotency_key);
CREATE INDEX transactions_account_id ON transactions (account_id, id DESC);
CREATE INDEX transactions_app_id ON transactions (app_key, id DESC);

CREATE TABLE lots (
    id             INTEGER PRIMARY KEY,
    account_id     BIGINT    NOT NULL REFERENCES accounts (id),
    transaction_id BIGINT    NOT NULL REFERENCES transactions (id),
    source         TEXT      NOT NULL,
    amount         BIGINT    NOT NULL CHECK (amount > 0),
    remaining      BIGINT    NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    expires_at     TIMESTAMP,
    created_at     TIMESTAMP NOT NULL
);
CREATE INDEX lots_live ON lots (account_id) WHERE remaining > 0;
CREATE INDEX lots_due ON lots (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL;

CREATE TABLE checkins (
    id             INTEGER PRIMARY KEY,
    app_key        TEXT      NOT NULL,
    user_id        TEXT      NOT NULL,
    day            TEXT      NOT NULL,
    streak         BIGINT    NOT NULL,
    awarded        BIGINT    NOT NULL,
    transaction_id BIGINT    NOT NULL REFERENCES transactions (id),
    created_at     TIMESTAMP NOT NULL,
    CONSTRAINT checkins_one_per_day UNIQUE (app_key, user_id, day)
);

CREATE TABLE checkin_configs (
    app_key             TEXT      PRIMARY KEY,
    enabled             BOOLEAN   NOT NULL,
    rewards             TEXT      NOT NULL,
    timezone            TEXT      NOT NULL,
    credits_expire_days INTEGER,
    updated_by          TEXT      NOT NULL,
    updated_at          TIMESTAMP NOT NULL
);
