-- Tollgate schema, version 1.
-- Every table carries tenant_id and it leads every primary key and unique index, so the schema
-- can be distributed by tenant later without a rewrite. Money and quantities are numeric.

CREATE TABLE tenants (
    tenant_id             text        PRIMARY KEY,
    name                  text        NOT NULL,
    mode                  text        NOT NULL CHECK (mode IN ('test', 'live')),
    default_plan          text,
    warning_threshold     numeric     NOT NULL DEFAULT 0.8,
    critical_threshold    numeric     NOT NULL DEFAULT 0.95,
    invoice_grace_minutes integer     NOT NULL DEFAULT 60 CHECK (invoice_grace_minutes >= 0),
    stripe_secret_key     text,
    stripe_webhook_secret text,
    stripe_api_base       text,
    -- A test-mode tenant's frozen clock; NULL means it follows real time.
    test_clock_now        timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    tenant_id  text        NOT NULL REFERENCES tenants (tenant_id),
    key_id     text        NOT NULL,
    -- SHA-256 of the whole secret key; the key itself is never stored.
    key_hash   bytea       NOT NULL,
    key_hint   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    PRIMARY KEY (tenant_id, key_id),
    UNIQUE (tenant_id, key_hash)
);

CREATE TABLE features (
    tenant_id               text        NOT NULL REFERENCES tenants (tenant_id),
    feature_key             text        NOT NULL,
    name                    text        NOT NULL,
    type                    text        NOT NULL CHECK (type IN ('boolean', 'metered', 'limit', 'concurrency')),
    unit                    text,
    aggregation             text        NOT NULL DEFAULT 'sum' CHECK (aggregation IN ('sum', 'max')),
    stripe_meter_event_name text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, feature_key)
);

CREATE TABLE plans (
    tenant_id      text        NOT NULL REFERENCES tenants (tenant_id),
    plan_key       text        NOT NULL,
    latest_version integer     NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, plan_key)
);

-- Plan versions are immutable once written: a change is a new version.
CREATE TABLE plan_versions (
    tenant_id      text        NOT NULL,
    plan_key       text        NOT NULL,
    version        integer     NOT NULL CHECK (version >= 1),
    name           text        NOT NULL,
    trial_days     integer     NOT NULL DEFAULT 0 CHECK (trial_days >= 0),
    retention_days integer     CHECK (retention_days >= 0),
    -- The normalized definition, compared to make re-applying an unchanged plan a no-op.
    definition     jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, plan_key, version),
    FOREIGN KEY (tenant_id, plan_key) REFERENCES plans (tenant_id, plan_key)
);

CREATE TABLE plan_prices (
    tenant_id       text    NOT NULL,
    plan_key        text    NOT NULL,
    version         integer NOT NULL,
    interval        text    NOT NULL CHECK (interval IN ('month', 'year')),
    amount          numeric NOT NULL CHECK (amount >= 0),
    currency        text    NOT NULL,
    per_seat        boolean NOT NULL DEFAULT false,
    stripe_price_id text,
    PRIMARY KEY (tenant_id, plan_key, version, interval),
    FOREIGN KEY (tenant_id, plan_key, version) REFERENCES plan_versions (tenant_id, plan_key, version)
);

CREATE TABLE plan_entitlements (
    tenant_id           text    NOT NULL,
    plan_key            text    NOT NULL,
    version             integer NOT NULL,
    feature_key         text    NOT NULL,
    enabled             boolean NOT NULL DEFAULT true,
    -- NULL = unlimited.
    limit_value         numeric CHECK (limit_value >= 0),
    reset               text    NOT NULL DEFAULT 'billing_period'
                                CHECK (reset IN ('day', 'month', 'billing_period', 'never')),
    overage_unit_amount numeric CHECK (overage_unit_amount >= 0),
    overage_per_units   numeric CHECK (overage_per_units > 0),
    overage_cap_amount  numeric CHECK (overage_cap_amount >= 0),
    PRIMARY KEY (tenant_id, plan_key, version, feature_key),
    FOREIGN KEY (tenant_id, plan_key, version) REFERENCES plan_versions (tenant_id, plan_key, version),
    FOREIGN KEY (tenant_id, feature_key) REFERENCES features (tenant_id, feature_key)
);

CREATE TABLE customers (
    tenant_id   text        NOT NULL REFERENCES tenants (tenant_id),
    customer_id text        NOT NULL,
    email       text,
    name        text,
    metadata    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    net_days    integer     NOT NULL DEFAULT 0 CHECK (net_days >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    PRIMARY KEY (tenant_id, customer_id)
);

CREATE TABLE subscriptions (
    tenant_id            text        NOT NULL,
    subscription_id      text        NOT NULL,
    customer_id          text        NOT NULL,
    plan_key             text        NOT NULL,
    plan_version         integer     NOT NULL,
    interval             text        NOT NULL CHECK (interval IN ('month', 'year')),
    status               text        NOT NULL CHECK (status IN ('trialing', 'active', 'past_due', 'canceled')),
    -- Periods roll on the anniversary of billing_anchor (with month-end clamping).
    billing_anchor       timestamptz NOT NULL,
    current_period_start timestamptz NOT NULL,
    current_period_end   timestamptz NOT NULL,
    trial_end            timestamptz,
    cancel_at_period_end boolean     NOT NULL DEFAULT false,
    canceled_at          timestamptz,
    ended_at             timestamptz,
    pending_plan_key     text,
    pending_plan_version integer,
    pending_interval     text,
    pending_at           timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subscription_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, customer_id),
    FOREIGN KEY (tenant_id, plan_key, plan_version) REFERENCES plan_versions (tenant_id, plan_key, version),
    CHECK (current_period_start < current_period_end)
);

-- At most one live subscription per customer.
CREATE UNIQUE INDEX subscriptions_one_live_per_customer
    ON subscriptions (tenant_id, customer_id)
    WHERE status IN ('trialing', 'active', 'past_due');
CREATE INDEX subscriptions_customer ON subscriptions (tenant_id, customer_id, created_at);

-- Raw usage events: the audit trail. The primary key makes an event id unique per tenant for
-- as long as the event is kept.
CREATE TABLE usage_events (
    tenant_id          text        NOT NULL,
    event_id           text        NOT NULL,
    customer_id        text        NOT NULL,
    feature_key        text        NOT NULL,
    quantity           numeric     NOT NULL CHECK (quantity >= 0),
    occurred_at        timestamptz NOT NULL,
    period_start       timestamptz NOT NULL,
    member_id          text,
    billable           boolean     NOT NULL DEFAULT true,
    properties         jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    stripe_reported_at timestamptz,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX usage_events_customer_time ON usage_events (tenant_id, customer_id, occurred_at);

-- Per-period counters: the check path reads these and never aggregates raw events.
-- For reset = 'never' the period starts at the epoch and has no end.
CREATE TABLE usage_counters (
    tenant_id    text        NOT NULL,
    customer_id  text        NOT NULL,
    feature_key  text        NOT NULL,
    period_start timestamptz NOT NULL,
    period_end   timestamptz,
    used         numeric     NOT NULL DEFAULT 0 CHECK (used >= 0),
    event_count  bigint      NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id, feature_key, period_start)
);

-- Per-member totals for organisation summaries.
CREATE TABLE usage_member_counters (
    tenant_id    text        NOT NULL,
    customer_id  text        NOT NULL,
    feature_key  text        NOT NULL,
    period_start timestamptz NOT NULL,
    member_id    text        NOT NULL,
    used         numeric     NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, customer_id, feature_key, period_start, member_id)
);

-- Concurrency slots.
CREATE TABLE leases (
    tenant_id   text        NOT NULL,
    lease_id    text        NOT NULL,
    customer_id text        NOT NULL,
    feature_key text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, lease_id)
);
CREATE INDEX leases_active ON leases (tenant_id, customer_id, feature_key, expires_at);

-- Idempotency-Key records for POST requests (kept 24 hours).
CREATE TABLE idempotency_keys (
    tenant_id       text        NOT NULL,
    idempotency_key text        NOT NULL,
    request_hash    bytea       NOT NULL,
    response_status smallint,
    response_body   bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, idempotency_key)
);
