-- Checkout: orders, subscriptions, provider customers and coupons, received provider events, and
-- the payments that granted credits (with every id a refund may name them by). Money in minor
-- units, credits as BIGINT, ids of the providers as TEXT.
CREATE TABLE orders (
    id                       TEXT      PRIMARY KEY,
    app_key                  TEXT      NOT NULL,
    user_id                  TEXT      NOT NULL,
    order_type               TEXT      NOT NULL CHECK (order_type IN ('credits', 'subscription')),
    status                   TEXT      NOT NULL
        CHECK (status IN ('pending', 'completed', 'failed', 'expired', 'refunded')),
    plan_id                  TEXT      NOT NULL,
    billing_interval         TEXT      CHECK (billing_interval IN ('month', 'year')),
    channel                  TEXT      NOT NULL,
    amount_minor             BIGINT    NOT NULL CHECK (amount_minor >= 0),
    currency                 TEXT      NOT NULL,
    discount_minor           BIGINT    NOT NULL CHECK (discount_minor >= 0),
    coupon_code              TEXT,
    credits                  BIGINT    NOT NULL CHECK (credits >= 0),
    credits_expire_days      INTEGER,
    provider_session_id      TEXT,
    checkout_url             TEXT,
    provider_customer_id     TEXT,
    provider_subscription_id TEXT,
    failure_reason           TEXT,
    idempotency_key          TEXT,
    request_hash             TEXT      NOT NULL,
    created_at               TIMESTAMP NOT NULL,
    completed_at             TIMESTAMP,
    updated_at               TIMESTAMP NOT NULL,
    CONSTRAINT orders_idempotency UNIQUE (app_key, user_id, idempotency_key)
);
CREATE INDEX orders_user_created ON orders (app_key, user_id, created_at DESC, id DESC);
CREATE INDEX orders_session ON orders (channel, provider_session_id);

CREATE TABLE subscriptions (
    id                       BIGSERIAL PRIMARY KEY,
    app_key                  TEXT      NOT NULL,
    user_id                  TEXT      NOT NULL,
    plan_id                  TEXT      NOT NULL,
    billing_interval         TEXT      NOT NULL CHECK (billing_interval IN ('month', 'year')),
    channel                  TEXT      NOT NULL,
    order_id                 TEXT      NOT NULL REFERENCES orders (id),
    provider_subscription_id TEXT      NOT NULL,
    provider_customer_id     TEXT,
    status                   TEXT      NOT NULL
        CHECK (status IN ('active', 'trialing', 'past_due', 'canceled', 'expired')),
    current_period_start     TIMESTAMP,
    current_period_end       TIMESTAMP,
    cancel_at_period_end     BOOLEAN   NOT NULL,
    credits_per_period       BIGINT    NOT NULL CHECK (credits_per_period >= 0),
    credits_expire           BOOLEAN   NOT NULL,
    status_changed_at        TIMESTAMP,
    created_at               TIMESTAMP NOT NULL,
    updated_at               TIMESTAMP NOT NULL,
    CONSTRAINT subscriptions_provider UNIQUE (channel, provider_subscription_id)
);
CREATE INDEX subscriptions_user ON subscriptions (app_key, user_id, id DESC);

CREATE TABLE billing_customers (
    app_key     TEXT      NOT NULL,
    user_id     TEXT      NOT NULL,
    channel     TEXT      NOT NULL,
    customer_id TEXT      NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (app_key, user_id, channel)
);

CREATE TABLE provider_coupons (
    app_key     TEXT      NOT NULL,
    code        TEXT      NOT NULL,
    channel     TEXT      NOT NULL,
    price_ref   TEXT      NOT NULL,
    provider_id TEXT      NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (app_key, code, channel, price_ref)
);

CREATE TABLE billing_events (
    id                  BIGSERIAL PRIMARY KEY,
    channel             TEXT      NOT NULL,
    event_id            TEXT      NOT NULL,
    event_type          TEXT      NOT NULL,
    app_key             TEXT,
    user_id             TEXT,
    order_id            TEXT,
    outcome             TEXT      NOT NULL
        CHECK (outcome IN ('received', 'applied', 'ignored', 'unmatched')),
    detail              TEXT      NOT NULL,
    payload             TEXT      NOT NULL,
    provider_created_at TIMESTAMP,
    received_at         TIMESTAMP NOT NULL,
    CONSTRAINT billing_events_provider UNIQUE (channel, event_id)
);
CREATE INDEX billing_events_app_id ON billing_events (app_key, id DESC);

CREATE TABLE payments (
    id                BIGSERIAL PRIMARY KEY,
    channel           TEXT      NOT NULL,
    payment_id        TEXT      NOT NULL,
    app_key           TEXT      NOT NULL,
    user_id           TEXT      NOT NULL,
    order_id          TEXT      REFERENCES orders (id),
    subscription_id   BIGINT    REFERENCES subscriptions (id),
    credits_granted   BIGINT    NOT NULL CHECK (credits_granted >= 0),
    amount_paid_minor BIGINT    NOT NULL CHECK (amount_paid_minor >= 0),
    refunded_minor    BIGINT    NOT NULL CHECK (refunded_minor >= 0),
    clawed_back       BIGINT    NOT NULL CHECK (clawed_back >= 0 AND clawed_back <= credits_granted),
    created_at        TIMESTAMP NOT NULL,
    CONSTRAINT payments_provider UNIQUE (channel, payment_id)
);

CREATE TABLE payment_refs (
    channel     TEXT   NOT NULL,
    payment_ref TEXT   NOT NULL,
    payment     BIGINT NOT NULL REFERENCES payments (id),
    PRIMARY KEY (channel, payment_ref)
);

CREATE TABLE refunds (
    channel      TEXT      NOT NULL,
    refund_key   TEXT      NOT NULL,
    payment      BIGINT    NOT NULL REFERENCES payments (id),
    amount_minor BIGINT    NOT NULL,
    credits      BIGINT    NOT NULL CHECK (credits >= 0),
    created_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (channel, refund_key)
);
