-- The app registry: a request naming an app that is not registered is refused. Every app that
-- already holds data is registered here, named by its key; start-up registers `default` and
-- the apps of the configuration.
CREATE TABLE apps (
    app_key    TEXT      PRIMARY KEY,
    name       TEXT      NOT NULL,
    time_zone  TEXT      NOT NULL,
    currency   TEXT      NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

INSERT INTO apps (app_key, name, time_zone, currency, created_at, updated_at)
SELECT app_key, app_key, 'UTC', 'usd', (now() AT TIME ZONE 'UTC'), (now() AT TIME ZONE 'UTC') FROM (
    SELECT app_key FROM accounts
    UNION SELECT app_key FROM plans
    UNION SELECT app_key FROM coupons
    UNION SELECT app_key FROM orders
    UNION SELECT app_key FROM redemption_codes
    UNION SELECT app_key FROM checkin_configs
    UNION SELECT app_key FROM webhook_endpoints
    UNION SELECT app_key FROM webhook_settings
    UNION SELECT app_key FROM app_branding
    UNION SELECT app_key FROM pricing_features
    UNION SELECT app_key FROM entitlements
) AS known;

-- Service keys kept in the database: the SHA-256 of the secret (hex) and its first characters;
-- the secret itself is shown once, when the key is made.
CREATE TABLE service_keys (
    id         BIGSERIAL PRIMARY KEY,
    app_key    TEXT      NOT NULL REFERENCES apps (app_key),
    name       TEXT      NOT NULL,
    key_hash   TEXT      NOT NULL UNIQUE,
    prefix     TEXT      NOT NULL,
    created_by TEXT      NOT NULL,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);

CREATE INDEX service_keys_by_app ON service_keys (app_key, id);
