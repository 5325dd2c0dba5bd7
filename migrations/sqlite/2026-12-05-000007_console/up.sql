-- The operators' console: one-time sign-in links and the sessions they open; and the end users'
-- billing-portal sessions and each app's portal branding. Only the SHA-256
-- of each secret is kept, so a copy of the database opens nothing.
CREATE TABLE console_links (
    token_hash  TEXT      PRIMARY KEY,
    app_key     TEXT      NOT NULL,
    operator    TEXT      NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    expires_at  TIMESTAMP NOT NULL,
    used_at     TIMESTAMP
);

CREATE TABLE console_sessions (
    id_hash       TEXT      PRIMARY KEY,
    app_key       TEXT      NOT NULL,
    operator      TEXT      NOT NULL,
    csrf_token    TEXT      NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    last_seen_at  TIMESTAMP NOT NULL
);
CREATE INDEX console_sessions_seen ON console_sessions (last_seen_at);

CREATE TABLE portal_sessions (
    token_hash  TEXT      PRIMARY KEY,
    app_key     TEXT      NOT NULL,
    user_id     TEXT      NOT NULL,
    return_url  TEXT      NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    expires_at  TIMESTAMP NOT NULL
);
CREATE INDEX portal_sessions_expiry ON portal_sessions (expires_at);

CREATE TABLE app_branding (
    app_key       TEXT      PRIMARY KEY,
    display_name  TEXT,
    accent_color  TEXT,
    logo_url      TEXT,
    updated_by    TEXT      NOT NULL,
    updated_at    TIMESTAMP NOT NULL
);
