-- Pricing and entitlements: an app's features, their versioned rates, what each plan (or the
-- free tier) includes, and per account the allowances used, the carried fractions of a credit
-- and every reported call with its lines.
CREATE TABLE pricing_features (
    app_key     TEXT      NOT NULL,
    feature_key TEXT      NOT NULL,
    name        TEXT      NOT NULL,
    kind        TEXT      NOT NULL,
    unit        TEXT,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (app_key, feature_key)
);

-- dimensions: canonical JSON (sorted keys); tiers: a JSON array.
CREATE TABLE pricing_rates (
    id             BIGSERIAL PRIMARY KEY,
    app_key        TEXT      NOT NULL,
    feature_key    TEXT      NOT NULL,
    version        BIGINT    NOT NULL,
    dimensions     TEXT      NOT NULL,
    credits        BIGINT    NOT NULL CHECK (credits >= 0),
    per            BIGINT    NOT NULL CHECK (per > 0),
    tiers          TEXT      NOT NULL,
    effective_from TIMESTAMP NOT NULL,
    created_at     TIMESTAMP NOT NULL,
    created_by     TEXT      NOT NULL,
    UNIQUE (app_key, feature_key, dimensions, version)
);

-- scope: 'free', or 'plan:<plan id>'.
CREATE TABLE entitlements (
    app_key     TEXT   NOT NULL,
    scope       TEXT   NOT NULL,
    feature_key TEXT   NOT NULL,
    included    BIGINT CHECK (included >= 0),
    reset       TEXT   NOT NULL,
    overage     TEXT   NOT NULL,
    position    BIGINT NOT NULL,
    PRIMARY KEY (app_key, scope, feature_key)
);

CREATE TABLE allowances (
    account_id   BIGINT    NOT NULL REFERENCES accounts (id),
    feature_key  TEXT      NOT NULL,
    window_start TIMESTAMP NOT NULL,
    window_end   TIMESTAMP,
    included     BIGINT    NOT NULL CHECK (included >= 0),
    used         BIGINT    NOT NULL CHECK (used >= 0),
    reserved     BIGINT    NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (account_id, feature_key, window_start)
);

-- What an active hold taken for quantities set aside of an allowance; given back when the hold
-- is captured, released or runs out.
CREATE TABLE hold_allowances (
    hold_id      BIGINT    NOT NULL,
    account_id   BIGINT    NOT NULL,
    feature_key  TEXT      NOT NULL,
    window_start TIMESTAMP NOT NULL,
    units        BIGINT    NOT NULL CHECK (units > 0),
    PRIMARY KEY (hold_id, feature_key)
);

-- carry: the fraction of a credit priced but not yet charged, in 10^-12 credits.
CREATE TABLE usage_meters (
    account_id  BIGINT    NOT NULL REFERENCES accounts (id),
    feature_key TEXT      NOT NULL,
    quantity    BIGINT    NOT NULL,
    charged     BIGINT    NOT NULL,
    carry       BIGINT    NOT NULL CHECK (carry >= 0 AND carry < 1000000000000),
    updated_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (account_id, feature_key)
);

CREATE TABLE usage_events (
    id              BIGSERIAL PRIMARY KEY,
    account_id      BIGINT    NOT NULL REFERENCES accounts (id),
    app_key         TEXT      NOT NULL,
    user_id         TEXT      NOT NULL,
    idempotency_key TEXT      NOT NULL,
    request_hash    TEXT      NOT NULL,
    credits         BIGINT    NOT NULL,
    transaction_id  BIGINT    REFERENCES transactions (id),
    created_at      TIMESTAMP NOT NULL,
    UNIQUE (account_id, idempotency_key)
);

-- price_whole, price_frac: the exact price of the billable units, split at 10^12.
CREATE TABLE usage_lines (
    id            BIGSERIAL PRIMARY KEY,
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
CREATE INDEX usage_lines_account ON usage_lines (account_id, feature_key);

-- A hold taken for quantities the allowances cover reserves 0 credits.
ALTER TABLE holds DROP CONSTRAINT holds_amount_check;
ALTER TABLE holds ADD CONSTRAINT holds_amount_check CHECK (amount >= 0);
