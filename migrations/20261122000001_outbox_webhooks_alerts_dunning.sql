-- Stripe outbox, Stripe webhooks in, outbound webhooks, usage alerts and dunning
-- (SPEC §7 alerts, §8 dunning, §10, §11).

-- Dunning: payment retries after the first failure, in days from it.
ALTER TABLE tenants ADD COLUMN dunning_retry_days integer[] NOT NULL DEFAULT '{1,3,5}';

ALTER TABLE customers ADD COLUMN stripe_customer_id text;

ALTER TABLE invoices ADD COLUMN stripe_invoice_id text;
-- Failed payment attempts so far (Stripe's attempt_count; a webhook for an attempt already
-- counted is not applied again).
ALTER TABLE invoices ADD COLUMN payment_attempts integer NOT NULL DEFAULT 0;
-- When the dunning runner retries the payment (NULL: no retry scheduled).
ALTER TABLE invoices ADD COLUMN next_payment_attempt timestamptz;
ALTER TABLE invoices ADD COLUMN last_payment_error text;
-- The first failed payment: retries are scheduled from it.
ALTER TABLE invoices ADD COLUMN payment_failed_at timestamptz;
CREATE INDEX invoices_payment_retries ON invoices (next_payment_attempt)
    WHERE status = 'open' AND next_payment_attempt IS NOT NULL;
CREATE INDEX invoices_stripe ON invoices (tenant_id, stripe_invoice_id)
    WHERE stripe_invoice_id IS NOT NULL;

-- A Stripe subscription mirrored onto this one, and the creation time of the newest Stripe
-- event applied to it (older events never overwrite newer state).
ALTER TABLE subscriptions ADD COLUMN stripe_subscription_id text;
ALTER TABLE subscriptions ADD COLUMN stripe_event_created timestamptz;

-- Everything Stripe must learn, written in the transaction of the change. The row id is the
-- Stripe idempotency key. status: pending -> sent | failed (parked after max attempts).
CREATE TABLE stripe_outbox (
    tenant_id       text        NOT NULL REFERENCES tenants (tenant_id),
    outbox_id       bigint      GENERATED ALWAYS AS IDENTITY,
    kind            text        NOT NULL CHECK (kind IN ('customer', 'invoice', 'invoice_payment', 'invoice_void', 'meter_event')),
    resource_id     text        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    result          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    PRIMARY KEY (tenant_id, outbox_id)
);
CREATE INDEX stripe_outbox_due ON stripe_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX stripe_outbox_status ON stripe_outbox (tenant_id, status, outbox_id);
-- Retention: sent rows are deleted after 30 days (worker::cleanup).
CREATE INDEX stripe_outbox_sent ON stripe_outbox (sent_at) WHERE status = 'sent';

-- Stripe events received: each id is applied once.
CREATE TABLE stripe_events (
    tenant_id   text        NOT NULL REFERENCES tenants (tenant_id),
    event_id    text        NOT NULL,
    type        text        NOT NULL,
    created     timestamptz NOT NULL,
    -- applied | ignored | stale
    outcome     text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);
-- Kept 30 days (Stripe redelivers for 3), then deleted by worker::cleanup.
CREATE INDEX stripe_events_received ON stripe_events (received_at);

-- Outbound webhooks (Standard Webhooks).
CREATE TABLE webhook_endpoints (
    tenant_id   text        NOT NULL REFERENCES tenants (tenant_id),
    endpoint_id text        NOT NULL,
    url         text        NOT NULL,
    events      text[]      NOT NULL,
    -- whsec_<base64>: needed in the clear to sign deliveries.
    secret      text        NOT NULL,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    PRIMARY KEY (tenant_id, endpoint_id)
);

CREATE TABLE webhook_events (
    tenant_id  text        NOT NULL REFERENCES tenants (tenant_id),
    event_id   text        NOT NULL,
    type       text        NOT NULL,
    -- The whole body sent: {type, timestamp, data}.
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);

-- One row per event and endpoint: the delivery log. status: pending -> delivered | failed.
CREATE TABLE webhook_deliveries (
    tenant_id       text        NOT NULL,
    endpoint_id     text        NOT NULL,
    event_id        text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    PRIMARY KEY (tenant_id, endpoint_id, event_id),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints (tenant_id, endpoint_id),
    FOREIGN KEY (tenant_id, event_id) REFERENCES webhook_events (tenant_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (tenant_id, endpoint_id, event_id DESC);
-- Retention: events and their finished deliveries are deleted after 30 days.
CREATE INDEX webhook_events_created ON webhook_events (created_at);

-- A time-sortable id made in SQL: the prefix, 14 hex digits of microseconds since the epoch
-- and 18 random hex digits (so ids sort by creation, like the application's UUIDv7 ids).
CREATE FUNCTION tollgate_new_id(p_prefix text) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT p_prefix || '_'
        || lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000000)::bigint), 14, '0')
        || substr(replace(gen_random_uuid()::text, '-', ''), 1, 18)
$$;

-- Records an outbound event and a pending delivery for every endpoint subscribed to it, in the
-- caller's transaction. Nothing is stored when no endpoint wants it. p_at NULL = the tenant's
-- clock. Returns the event id (NULL when nothing was stored).
CREATE FUNCTION tollgate_emit_event(p_tenant text, p_type text, p_data jsonb, p_at timestamptz)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id text;
    v_at timestamptz;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints w
                   WHERE w.tenant_id = p_tenant AND w.deleted_at IS NULL
                     AND ('*' = ANY (w.events) OR p_type = ANY (w.events))) THEN
        RETURN NULL;
    END IF;
    v_id := tollgate_new_id('msg');
    SELECT COALESCE(p_at, t.test_clock_now, now()) INTO v_at FROM tenants t WHERE t.tenant_id = p_tenant;
    INSERT INTO webhook_events (tenant_id, event_id, type, payload)
    VALUES (p_tenant, v_id, p_type,
            jsonb_build_object('type', p_type,
                               'timestamp', to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                               'data', p_data));
    INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id)
    SELECT p_tenant, w.endpoint_id, v_id FROM webhook_endpoints w
    WHERE w.tenant_id = p_tenant AND w.deleted_at IS NULL
      AND ('*' = ANY (w.events) OR p_type = ANY (w.events));
    RETURN v_id;
END;
$$;

-- Usage alerts: one per customer, feature, counter period and level, ever.
CREATE TABLE usage_alerts (
    tenant_id    text        NOT NULL,
    alert_id     text        NOT NULL,
    customer_id  text        NOT NULL,
    feature_key  text        NOT NULL,
    period_start timestamptz NOT NULL,
    level        text        NOT NULL CHECK (level IN ('warning', 'critical', 'exceeded')),
    used         numeric     NOT NULL,
    limit_value  numeric     NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, alert_id),
    UNIQUE (tenant_id, customer_id, feature_key, period_start, level)
);
CREATE INDEX usage_alerts_customer ON usage_alerts (tenant_id, customer_id, alert_id DESC);

-- The warning level of a counter value, as in the check API (0 safe, 1 warning, 2 critical,
-- 3 exceeded). Nothing used is safe, even with a limit of 0.
CREATE FUNCTION tollgate_level(p_used numeric, p_limit numeric, p_warning numeric, p_critical numeric)
RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_limit IS NULL OR p_used <= 0 THEN 0
        WHEN p_used >= p_limit THEN 3
        WHEN p_used >= p_critical * p_limit THEN 2
        WHEN p_used >= p_warning * p_limit THEN 1
        ELSE 0
    END
$$;

-- Usage recording, version 3: also stores the alerts the event's increment crosses into (with a
-- usage.threshold_reached event) and, for a feature reported to a Stripe meter, an outbox row
-- for the meter event — all in the statement that counts the event. The version-2 signature
-- stays for processes of the previous release until a later migration drops it.
CREATE FUNCTION tollgate_record_usage(
    p_tenant       text,
    p_event        text,
    p_customer     text,
    p_feature      text,
    p_quantity     numeric,
    p_occurred_at  timestamptz,
    p_period_start timestamptz,
    p_period_end   timestamptz,
    p_member       text,
    p_billable     boolean,
    p_properties   jsonb,
    p_is_max       boolean,
    p_ceiling      numeric,
    p_limit        numeric,
    p_warning      numeric,
    p_critical     numeric,
    p_meter_event  text,
    p_now          timestamptz
) RETURNS TABLE (
    outcome      text,
    used         numeric,
    customer_id  text,
    feature_key  text,
    quantity     numeric,
    occurred_at  timestamptz
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_used numeric;
    v_before numeric;
    v_closed timestamptz;
    v_alert record;
BEGIN
    SELECT c.usage_closed_before INTO v_closed FROM customers c
    WHERE c.tenant_id = p_tenant AND c.customer_id = p_customer
    FOR KEY SHARE;

    INSERT INTO usage_events AS e (tenant_id, event_id, customer_id, feature_key, quantity,
                                   occurred_at, period_start, member_id, billable, properties)
    VALUES (p_tenant, p_event, p_customer, p_feature, p_quantity, p_occurred_at, p_period_start,
            p_member, p_billable, p_properties)
    ON CONFLICT ON CONSTRAINT usage_events_pkey DO NOTHING;

    IF NOT FOUND THEN
        RETURN QUERY
            SELECT 'duplicate'::text,
                   COALESCE((SELECT c.used FROM usage_counters c
                              WHERE c.tenant_id = p_tenant AND c.customer_id = e.customer_id
                                AND c.feature_key = e.feature_key
                                AND c.period_start = e.period_start), 0),
                   e.customer_id, e.feature_key, e.quantity, e.occurred_at
            FROM usage_events e
            WHERE e.tenant_id = p_tenant AND e.event_id = p_event;
        RETURN;
    END IF;

    IF v_closed IS NOT NULL AND p_occurred_at < v_closed THEN
        RAISE EXCEPTION 'period closed' USING ERRCODE = 'TG409';
    END IF;

    IF NOT p_billable THEN
        RETURN QUERY
            SELECT 'recorded'::text,
                   COALESCE((SELECT c.used FROM usage_counters c
                              WHERE c.tenant_id = p_tenant AND c.customer_id = p_customer
                                AND c.feature_key = p_feature
                                AND c.period_start = p_period_start), 0),
                   p_customer, p_feature, p_quantity, p_occurred_at;
        RETURN;
    END IF;

    IF p_ceiling IS NOT NULL AND p_quantity > p_ceiling THEN
        RAISE EXCEPTION 'usage refused' USING ERRCODE = 'TG402';
    END IF;

    INSERT INTO usage_counters AS c (tenant_id, customer_id, feature_key, period_start,
                                     period_end, used, event_count)
    VALUES (p_tenant, p_customer, p_feature, p_period_start, p_period_end, p_quantity, 1)
    ON CONFLICT ON CONSTRAINT usage_counters_pkey DO UPDATE SET
        used = CASE WHEN p_is_max THEN GREATEST(c.used, EXCLUDED.used)
                    ELSE c.used + EXCLUDED.used END,
        event_count = c.event_count + 1,
        updated_at = now()
    WHERE p_ceiling IS NULL
       OR (CASE WHEN p_is_max THEN GREATEST(c.used, EXCLUDED.used)
                ELSE c.used + EXCLUDED.used END) <= p_ceiling
    RETURNING c.used INTO v_used;

    IF NOT FOUND THEN
        RAISE EXCEPTION 'usage refused' USING ERRCODE = 'TG402';
    END IF;

    IF p_member IS NOT NULL THEN
        INSERT INTO usage_member_counters AS m (tenant_id, customer_id, feature_key,
                                                period_start, member_id, used)
        VALUES (p_tenant, p_customer, p_feature, p_period_start, p_member, p_quantity)
        ON CONFLICT ON CONSTRAINT usage_member_counters_pkey DO UPDATE SET
            used = CASE WHEN p_is_max THEN GREATEST(m.used, EXCLUDED.used)
                        ELSE m.used + EXCLUDED.used END;
    END IF;

    -- Alerts: the levels between the counter before this event and after it. The counter row
    -- is locked by the upsert, so concurrent events see distinct before/after values; the
    -- unique key makes a level's alert exist once even so (a max feature, whose level before
    -- is unknown, tries every level it reached).
    IF p_limit IS NOT NULL THEN
        v_before := CASE WHEN p_is_max THEN (CASE WHEN v_used = p_quantity THEN 0 ELSE v_used END)
                         ELSE v_used - p_quantity END;
        IF tollgate_level(v_used, p_limit, p_warning, p_critical)
           > tollgate_level(v_before, p_limit, p_warning, p_critical) THEN
            FOR v_alert IN
                INSERT INTO usage_alerts AS a (tenant_id, alert_id, customer_id, feature_key,
                                               period_start, level, used, limit_value, created_at)
                SELECT p_tenant, tollgate_new_id('alrt'), p_customer,
                       p_feature, p_period_start, l.name, v_used, p_limit, p_now
                FROM (VALUES (1, 'warning'), (2, 'critical'), (3, 'exceeded')) AS l(n, name)
                WHERE l.n > tollgate_level(v_before, p_limit, p_warning, p_critical)
                  AND l.n <= tollgate_level(v_used, p_limit, p_warning, p_critical)
                ON CONFLICT (tenant_id, customer_id, feature_key, period_start, level) DO NOTHING
                RETURNING a.alert_id, a.level, a.used, a.limit_value, a.created_at
            LOOP
                PERFORM tollgate_emit_event(p_tenant, 'usage.threshold_reached',
                    jsonb_build_object('id', v_alert.alert_id, 'customer', p_customer,
                                       'feature', p_feature, 'level', v_alert.level,
                                       'period_start', to_char(p_period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                                       'used', v_alert.used, 'limit', v_alert.limit_value,
                                       'created_at', to_char(v_alert.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
                    p_now);
            END LOOP;
        END IF;
    END IF;

    -- A Stripe meter event for this usage event, when the tenant is connected to Stripe.
    IF p_meter_event IS NOT NULL
       AND EXISTS (SELECT 1 FROM tenants t WHERE t.tenant_id = p_tenant AND t.stripe_secret_key IS NOT NULL) THEN
        INSERT INTO stripe_outbox (tenant_id, kind, resource_id, payload)
        VALUES (p_tenant, 'meter_event', p_event,
                jsonb_build_object('event_name', p_meter_event, 'customer', p_customer,
                                   'value', p_quantity,
                                   'timestamp', extract(epoch FROM p_occurred_at)::bigint));
    END IF;

    RETURN QUERY SELECT 'recorded'::text, v_used, p_customer, p_feature, p_quantity, p_occurred_at;
END;
$$;
