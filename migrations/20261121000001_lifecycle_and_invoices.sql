-- Subscription lifecycle, invoices and closed periods (SPEC §6, §8, §13).

-- Usage timestamped before this instant is refused (409 period_closed): the end of the latest
-- billing period whose invoice has been finalized.
ALTER TABLE customers ADD COLUMN usage_closed_before timestamptz;

-- Why a subscription ended, and the one it replaced (a fallback to the default plan).
ALTER TABLE subscriptions ADD COLUMN ended_reason text;
ALTER TABLE subscriptions ADD COLUMN replaces_subscription_id text;
-- Due work: renewals, trial ends, scheduled changes and cancellations happen at period end.
CREATE INDEX subscriptions_due ON subscriptions (current_period_end)
    WHERE status IN ('trialing', 'active', 'past_due');

-- Per-tenant gapless invoice numbers: the row is locked by the transaction that takes a number,
-- so a rolled-back invoice gives its number back.
CREATE TABLE invoice_numbers (
    tenant_id   text   PRIMARY KEY REFERENCES tenants (tenant_id),
    last_number bigint NOT NULL
);

CREATE TABLE invoices (
    tenant_id       text        NOT NULL,
    invoice_id      text        NOT NULL,
    number          bigint      NOT NULL,
    customer_id     text        NOT NULL,
    subscription_id text,
    -- subscription_create | subscription_cycle | subscription_update | subscription_cancel
    billing_reason  text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('draft', 'open', 'paid', 'void', 'uncollectible')),
    currency        text        NOT NULL,
    subtotal        numeric     NOT NULL,
    total           numeric     NOT NULL,
    amount_due      numeric     NOT NULL CHECK (amount_due >= 0),
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    -- For a renewal: the ended period whose overage is billed in arrears (and closed on
    -- finalization).
    usage_period_start timestamptz,
    usage_period_end   timestamptz,
    -- Plan version whose overage prices apply to usage_period.
    usage_plan_key     text,
    usage_plan_version integer,
    net_days        integer     NOT NULL DEFAULT 0,
    due_date        timestamptz,
    -- When a draft is due to be finalized (the end of the grace period).
    finalize_at     timestamptz,
    created_at      timestamptz NOT NULL,
    finalized_at    timestamptz,
    paid_at         timestamptz,
    paid_out_of_band boolean    NOT NULL DEFAULT false,
    voided_at       timestamptz,
    uncollectible_at timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, invoice_id),
    UNIQUE (tenant_id, number),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, customer_id)
);
CREATE INDEX invoices_customer ON invoices (tenant_id, customer_id, invoice_id);
CREATE INDEX invoices_due_drafts ON invoices (finalize_at) WHERE status = 'draft';

CREATE TABLE invoice_lines (
    tenant_id    text        NOT NULL,
    invoice_id   text        NOT NULL,
    line_no      integer     NOT NULL,
    type         text        NOT NULL CHECK (type IN ('subscription', 'proration', 'overage', 'seat', 'addon', 'discount')),
    description  text        NOT NULL,
    feature_key  text,
    quantity     numeric     NOT NULL,
    unit_amount  numeric     NOT NULL,
    amount       numeric     NOT NULL,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, invoice_id, line_no),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, invoice_id)
);

-- Usage recording now also refuses events in a closed period. The customer row is read
-- FOR KEY SHARE, which waits for an invoice finalization in progress (it holds the row
-- FOR UPDATE while it closes the period and reads the counters): so an event is either counted
-- before the invoice reads the counters, or refused after.
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
    v_closed timestamptz;
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

    IF v_closed IS NOT NULL AND p_occurred_at < v_closed THEN
        RAISE EXCEPTION 'period closed' USING ERRCODE = 'TG409';
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
