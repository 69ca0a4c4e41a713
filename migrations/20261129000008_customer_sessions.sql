-- Customer sessions (SPEC §9): a frontend acting for one customer with a short-lived token.
-- The token is `cs_<tenant>_<secret>` (the tenant part lets the lookup use the tenant-leading
-- key, as API keys do) and only its SHA-256 is stored. Lifetimes run on real time.
CREATE TABLE customer_sessions (
    tenant_id   text        NOT NULL,
    session_id  text        NOT NULL,
    customer_id text        NOT NULL,
    token_hash  bytea       NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, session_id),
    UNIQUE (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, customer_id)
);
-- Expired sessions are deleted a day after they expire (worker cleanup).
CREATE INDEX customer_sessions_expiry ON customer_sessions (expires_at);

-- The hosted portal's branding (PATCH /v1/tenant {portal: {...}}).
ALTER TABLE tenants ADD COLUMN portal_name text;
ALTER TABLE tenants ADD COLUMN portal_accent_color text
    CHECK (portal_accent_color ~ '^#[0-9A-Fa-f]{6}$');
ALTER TABLE tenants ADD COLUMN portal_return_url text;
