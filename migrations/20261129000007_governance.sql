-- Governance (SPEC §12, docs/GOVERNANCE.md): the audit log, erasure and retention.

-- The audit log: one row per change, appended in the change's transaction. The actor and the
-- request id come from the transaction's own settings (`tollgate.actor`,
-- `tollgate.request_id`, set by `db::audit::act_as` when the transaction begins), so a write
-- deep in a service cannot be logged without them: an unset actor reads as '' and fails the
-- CHECK.
CREATE TABLE audit_log (
    tenant_id   text        NOT NULL REFERENCES tenants (tenant_id),
    seq         bigint      GENERATED ALWAYS AS IDENTITY,
    audit_id    text        NOT NULL,
    actor       text        NOT NULL CHECK (actor <> ''),
    action      text        NOT NULL,
    resource    text        NOT NULL,
    -- The customer the entry is about (customer, member, subscription, invoice entries): what
    -- the export lists and the erasure rewrites.
    customer_id text,
    before      jsonb,
    after       jsonb,
    request_id  text,
    -- On the tenant's clock.
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, audit_id)
);
-- Newest first, equal times by insertion; filtered by resource or customer.
CREATE INDEX audit_log_newest ON audit_log (tenant_id, created_at DESC, seq DESC);
CREATE INDEX audit_log_resource ON audit_log (tenant_id, resource, created_at DESC, seq DESC);
CREATE INDEX audit_log_customer ON audit_log (tenant_id, customer_id) WHERE customer_id IS NOT NULL;

-- Append-only, enforced by the database itself (superusers are not bound by privileges, but
-- are by triggers). The one exception is erasure: inside a transaction that has set
-- `tollgate.erasing` to `<tenant>/<customer>` being erased, that customer's entries may have their
-- `before` and `after` rewritten, and nothing else.
CREATE FUNCTION tollgate_audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.customer_id IS NOT NULL
           AND current_setting('tollgate.erasing', true) = OLD.tenant_id || '/' || OLD.customer_id
           AND (NEW.tenant_id, NEW.seq, NEW.audit_id, NEW.actor, NEW.action, NEW.resource,
                NEW.customer_id, NEW.request_id, NEW.created_at)
               IS NOT DISTINCT FROM
               (OLD.tenant_id, OLD.seq, OLD.audit_id, OLD.actor, OLD.action, OLD.resource,
                OLD.customer_id, OLD.request_id, OLD.created_at) THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION tollgate_audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_audit_log_append_only();

-- A JSON object with each of `keys` it has replaced by "[erased]" (erasure of personal
-- fields in stored copies).
CREATE FUNCTION tollgate_erase_keys(p_doc jsonb, p_keys text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(p_doc) = 'object'
                THEN p_doc || COALESCE((SELECT jsonb_object_agg(k, '"[erased]"'::jsonb)
                                        FROM jsonb_object_keys(p_doc) AS k
                                        WHERE k = ANY (p_keys)), '{}'::jsonb)
                ELSE p_doc END
$$;

-- A JSON document with every occurrence of each of `values` inside its strings replaced by
-- "[erased]" (erasure of an email address wherever a stored copy quoted it). Values are
-- matched as JSON-escaped text; callers pass values that cannot be mistaken for JSON syntax
-- or keys (email addresses).
CREATE FUNCTION tollgate_scrub_values(p_doc jsonb, p_values text[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_text text := p_doc::text;
    v_value text;
    v_quoted text;
BEGIN
    IF p_doc IS NULL THEN
        RETURN NULL;
    END IF;
    FOREACH v_value IN ARRAY p_values LOOP
        v_quoted := to_jsonb(v_value)::text;
        v_quoted := substr(v_quoted, 2, length(v_quoted) - 2);
        IF v_quoted <> '' THEN
            v_text := replace(v_text, v_quoted, '[erased]');
        END IF;
    END LOOP;
    RETURN v_text::jsonb;
END;
$$;

-- The Stripe customer's email and name are cleared through the outbox too.
ALTER TABLE stripe_outbox DROP CONSTRAINT stripe_outbox_kind_check;
ALTER TABLE stripe_outbox ADD CONSTRAINT stripe_outbox_kind_check
    CHECK (kind IN ('customer', 'invoice', 'invoice_payment', 'invoice_void', 'meter_event',
                    'credit_note', 'customer_erase'));

-- Retention: the ids of usage events purged, so that one sent again is still a duplicate.
-- Only the id is kept (the event itself, its properties and member, are gone).
CREATE TABLE usage_events_purged (
    tenant_id text NOT NULL,
    event_id  text NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE OR REPLACE FUNCTION tollgate_record_usage(
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

    -- An id whose event retention purged is a duplicate for ever (SPEC §12).
    IF EXISTS (SELECT 1 FROM usage_events_purged x
               WHERE x.tenant_id = p_tenant AND x.event_id = p_event) THEN
        RETURN QUERY
            SELECT 'duplicate'::text,
                   COALESCE((SELECT c.used FROM usage_counters c
                              WHERE c.tenant_id = p_tenant AND c.customer_id = p_customer
                                AND c.feature_key = p_feature
                                AND c.period_start = p_period_start), 0),
                   p_customer, p_feature, p_quantity, p_occurred_at;
        RETURN;
    END IF;

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
