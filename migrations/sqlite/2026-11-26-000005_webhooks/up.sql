-- Outbound webhooks: the receivers an app registered, the outbox of events written in the same
-- transaction as the change each reports, one delivery per (event, endpoint), and every attempt.
CREATE TABLE webhook_endpoints (
    id                   TEXT      PRIMARY KEY,
    app_key              TEXT      NOT NULL,
    url                  TEXT      NOT NULL,
    description          TEXT      NOT NULL,
    event_types          TEXT      NOT NULL,
    wants_spent          BOOLEAN   NOT NULL,
    enabled              BOOLEAN   NOT NULL,
    secret               TEXT      NOT NULL,
    previous_secret      TEXT,
    previous_expires_at  TIMESTAMP,
    failing_since        TIMESTAMP,
    disabled_reason      TEXT,
    created_at           TIMESTAMP NOT NULL,
    updated_at           TIMESTAMP NOT NULL
);
CREATE INDEX webhook_endpoints_app ON webhook_endpoints (app_key, created_at);

CREATE TABLE webhook_settings (
    app_key               TEXT      PRIMARY KEY,
    low_balance_threshold BIGINT    CHECK (low_balance_threshold >= 0),
    updated_at            TIMESTAMP NOT NULL
);

CREATE TABLE webhook_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT      NOT NULL UNIQUE,
    app_key     TEXT      NOT NULL,
    user_id     TEXT,
    event_type  TEXT      NOT NULL,
    payload     TEXT      NOT NULL,
    fanned_out  BOOLEAN   NOT NULL,
    created_at  TIMESTAMP NOT NULL
);
CREATE INDEX webhook_events_pending ON webhook_events (seq) WHERE NOT fanned_out;

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq       BIGINT    NOT NULL REFERENCES webhook_events (seq),
    endpoint_id     TEXT      NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    app_key         TEXT      NOT NULL,
    status          TEXT      NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts        INTEGER   NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    first_attempt_at TIMESTAMP,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL,
    CONSTRAINT webhook_deliveries_once UNIQUE (event_seq, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_app ON webhook_deliveries (app_key, id DESC);

CREATE TABLE webhook_attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id      BIGINT    NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at     TIMESTAMP NOT NULL,
    status_code      INTEGER,
    latency_ms       BIGINT    NOT NULL,
    response_excerpt TEXT,
    error            TEXT,
    succeeded        BOOLEAN   NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
