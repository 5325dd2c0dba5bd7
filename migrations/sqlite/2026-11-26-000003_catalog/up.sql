-- The catalog: plans (subscriptions and credit packs) and coupons, per app key. JSON arrays
-- (features, plan_ids) are stored as TEXT; money in minor units.
CREATE TABLE plans (
    id                       INTEGER PRIMARY KEY,
    app_key                  TEXT      NOT NULL,
    name                     TEXT      NOT NULL,
    description              TEXT      NOT NULL,
    kind                     TEXT      NOT NULL CHECK (kind IN ('subscription', 'credit_pack')),
    currency                 TEXT      NOT NULL,
    price_monthly            BIGINT    CHECK (price_monthly >= 0),
    price_yearly             BIGINT    CHECK (price_yearly >= 0),
    price                    BIGINT    CHECK (price >= 0),
    credits_included         BIGINT    NOT NULL CHECK (credits_included >= 0),
    features                 TEXT      NOT NULL,
    stripe_price_id_monthly  TEXT,
    stripe_price_id_yearly   TEXT,
    stripe_price_id          TEXT,
    creem_product_id_monthly TEXT,
    creem_product_id_yearly  TEXT,
    creem_product_id         TEXT,
    active                   BOOLEAN   NOT NULL,
    sort_order               BIGINT    NOT NULL,
    credits_expire_days      INTEGER,
    created_by               TEXT      NOT NULL,
    updated_by               TEXT      NOT NULL,
    created_at               TIMESTAMP NOT NULL,
    updated_at               TIMESTAMP NOT NULL
);
CREATE INDEX plans_app_order ON plans (app_key, sort_order, id);

CREATE TABLE coupons (
    id              INTEGER PRIMARY KEY,
    app_key         TEXT      NOT NULL,
    code            TEXT      NOT NULL,
    percent_off     BIGINT    CHECK (percent_off BETWEEN 1 AND 100),
    amount_off      BIGINT    CHECK (amount_off > 0),
    currency        TEXT,
    duration        TEXT      NOT NULL CHECK (duration IN ('once', 'repeating', 'forever')),
    duration_months INTEGER,
    max_redemptions BIGINT    CHECK (max_redemptions >= 1),
    times_redeemed  BIGINT    NOT NULL DEFAULT 0 CHECK (times_redeemed >= 0),
    expires_at      TIMESTAMP,
    plan_ids        TEXT      NOT NULL,
    active          BOOLEAN   NOT NULL,
    created_by      TEXT      NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    CONSTRAINT coupons_app_code UNIQUE (app_key, code),
    CONSTRAINT coupons_one_discount CHECK ((percent_off IS NULL) <> (amount_off IS NULL))
);
CREATE INDEX coupons_app_id ON coupons (app_key, id DESC);
