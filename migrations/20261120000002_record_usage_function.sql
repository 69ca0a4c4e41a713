-- Records one usage event in a single round trip: the event insert (deduplicated by id) and
-- the conditional counter upsert run in one statement, so they commit or abort together.
-- A refused event raises SQLSTATE 'TG402' and so leaves nothing behind.
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
    p_ceiling      numeric
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
BEGIN
    INSERT INTO usage_events AS e (tenant_id, event_id, customer_id, feature_key, quantity,
                                   occurred_at, period_start, member_id, billable, properties)
    VALUES (p_tenant, p_event, p_customer, p_feature, p_quantity, p_occurred_at, p_period_start,
            p_member, p_billable, p_properties)
    ON CONFLICT ON CONSTRAINT usage_events_pkey DO NOTHING;

    IF NOT FOUND THEN
        -- Seen before: answer with the stored event and its counter; change nothing.
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

    IF NOT p_billable THEN
        -- Kept for the audit trail; counts neither against limits nor towards charges.
        RETURN QUERY
            SELECT 'recorded'::text,
                   COALESCE((SELECT c.used FROM usage_counters c
                              WHERE c.tenant_id = p_tenant AND c.customer_id = p_customer
                                AND c.feature_key = p_feature
                                AND c.period_start = p_period_start), 0),
                   p_customer, p_feature, p_quantity, p_occurred_at;
        RETURN;
    END IF;

    -- An event alone past the ceiling never fits (this also covers the insert path below,
    -- where ON CONFLICT's WHERE does not apply).
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

    RETURN QUERY SELECT 'recorded'::text, v_used, p_customer, p_feature, p_quantity, p_occurred_at;
END;
$$;
