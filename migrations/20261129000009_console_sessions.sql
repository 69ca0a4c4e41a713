-- Console sign-ins (SPEC §9): a tenant's staff sign in at /console/login with an API key, which
-- is exchanged for a console session: `tgc_<tenant>_<secret>` in an HttpOnly cookie, only its
-- SHA-256 stored. Signing out, or revoking the key it was made with, ends it.
CREATE TABLE console_sessions (
    tenant_id   text        NOT NULL REFERENCES tenants (tenant_id),
    session_id  text        NOT NULL,
    key_id      text        NOT NULL,
    token_hash  bytea       NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, session_id),
    UNIQUE (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, key_id) REFERENCES api_keys (tenant_id, key_id)
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
