-- Usage recording, version 8: composed of small functions, and one tenant per call on Citus
-- (SPEC §14).
--
-- Version 7 (migration 20261130000002) was one function of some 400 lines, re-created whole by
-- every change. Version 8 does the same work, step for step, in pieces, each a function of its
-- own: a later change re-creates only the piece it changes.
--
--   tollgate_usage_stale_tenants   step 0: the tenants whose rows changed since the resolve
--   tollgate_usage_insert_events   step 1: the raw events (ids deduplicated, customers locked)
--   tollgate_usage_states          step 2: why an event was not inserted
--   tollgate_usage_count_grouped   step 3: the counters that take a batch in one upsert
--   tollgate_usage_count_each      step 4: the counters that take one event at a time
--   tollgate_usage_member_totals   step 5: the per-member totals
--   tollgate_usage_meter_events    step 6: the Stripe meter events
--   tollgate_record_usage_batch    the steps in order, and the answers (step 7)
--
-- Every statement reads and writes only the rows of the call's tenants, named as such
-- (`tenant_id = ANY (p_scope)`): on Citus, Tollgate calls it for one tenant at a time, with
-- that tenant as its first argument, so it is a distributed function on that argument
-- (`tollgate_distribute_function`): the call runs on the tenant's node, and every statement
-- in it on that node's shard. On one PostgreSQL, one call still records the events of any
-- number of tenants (the first argument NULL).

-- Citus runs an upsert on a distributed table only if the functions in its DO UPDATE are
-- IMMUTABLE. The key's text is unchanged (the epoch of an instant is the same in UTC).
CREATE OR REPLACE FUNCTION tollgate_counter_key(p_tenant text, p_customer text,
                                                p_feature text, p_period_start timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_tenant || chr(31) || p_customer || chr(31) || p_feature || chr(31)
           || extract(epoch FROM (p_period_start AT TIME ZONE 'UTC'))::text
$$;

-- The stamps (version 7), as statements of one table each, the tenant named in each: on
-- Citus a PL/pgSQL statement is routed to the tenant's shard when it plans it, and these are
-- the simplest statements it routes (a row version read in a subquery of another table's
-- query is one it cannot ship).
CREATE OR REPLACE FUNCTION tollgate_tenant_stamp(p_tenant text, p_key_hash bytea) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_tenant text;
    v_default_plan text;
    v_plan text;
    v_key text;
BEGIN
    SELECT t.xmin::text, t.default_plan INTO v_tenant, v_default_plan
    FROM tenants t WHERE t.tenant_id = p_tenant;
    IF v_tenant IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT p.xmin::text INTO v_plan
    FROM plans p WHERE p.tenant_id = p_tenant AND p.plan_key = v_default_plan;
    SELECT k.xmin::text INTO v_key
    FROM api_keys k
    WHERE k.tenant_id = p_tenant AND k.key_hash = p_key_hash AND k.revoked_at IS NULL;
    RETURN v_tenant || '/' || coalesce(v_plan, '') || '/' || coalesce(v_key, '');
END;
$$;

CREATE OR REPLACE FUNCTION tollgate_customer_stamp(p_tenant text, p_customer text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_customer text;
    v_subscription text;
BEGIN
    SELECT c.xmin::text INTO v_customer
    FROM customers c
    WHERE c.tenant_id = p_tenant AND c.customer_id = p_customer AND c.deleted_at IS NULL;
    IF v_customer IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT s.xmin::text INTO v_subscription
    FROM subscriptions s
    WHERE s.tenant_id = p_tenant AND s.customer_id = p_customer
      AND s.status IN ('trialing', 'active', 'past_due');
    RETURN v_customer || '/' || coalesce(v_subscription, '');
END;
$$;

-- Version 1 to 3's one-event function, unused since the group commit (migration 10).
DROP FUNCTION tollgate_record_usage(text, text, text, text, numeric, timestamptz, timestamptz,
                                    timestamptz, text, boolean, jsonb, boolean, numeric);

DROP FUNCTION tollgate_record_usage_batch(text[], text[], text[], text[], numeric[],
                                          timestamptz[], timestamptz[], timestamptz[], text[],
                                          boolean[], jsonb[], boolean[], numeric[], numeric[],
                                          numeric[], numeric[], text[], boolean[], timestamptz[],
                                          integer[], bytea[], text[], text[]);

-- Step 0. The tenants (with the caller's key and the stamp) whose rows have changed since
-- their events were resolved, as tenant, unit separator, key hash in hex, unit separator,
-- stamp: once per tenant and key rather than once per event.
CREATE FUNCTION tollgate_usage_stale_tenants(p_tenant text[], p_key_hash bytea[],
                                             p_tenant_stamp text[])
RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_stale text[];
BEGIN
    SELECT coalesce(array_agg(g.t || chr(31) || coalesce(encode(g.kh, 'hex'), '') || chr(31)
                              || g.ts), '{}')
    INTO v_stale
    FROM (SELECT DISTINCT i.t, i.kh, i.ts
          FROM unnest(p_tenant, p_key_hash, p_tenant_stamp) AS i(t, kh, ts)
          -- Not pushed down below the DISTINCT: once per tenant, not per event.
          OFFSET 0) g
    WHERE tollgate_tenant_stamp(g.t, g.kh) IS DISTINCT FROM g.ts;
    RETURN v_stale;
END;
$$;

-- Step 1. The raw events, in id order, but for those that are not to be written: a repeat of
-- an id earlier in the batch, an event the plan refuses, an id purged by retention (a
-- duplicate for ever, SPEC §12), an event whose tenant or customer changed since its
-- resolve, an event in a closed period. Each event's customer is locked FOR KEY SHARE as it
-- is read, against invoice finalization closing its periods meanwhile (finalization takes one
-- customer FOR UPDATE, and waits for nothing a batch holds, so the customers need no global
-- order). An id that conflicts was recorded before (or by a concurrent batch meanwhile): a
-- duplicate. (ON CONFLICT finds it through the primary key itself; a lookup planned while
-- the table had no statistics yet could take another index and scan it whole.) Returns the
-- events inserted (tenant, id).
CREATE FUNCTION tollgate_usage_insert_events(
    p_scope text[], p_tenant text[], p_event text[], p_customer text[], p_feature text[],
    p_quantity numeric[], p_occurred_at timestamptz[], p_period_start timestamptz[],
    p_member text[], p_billable boolean[], p_properties jsonb[], p_refused boolean[],
    p_first integer[], p_key_hash bytea[], p_tenant_stamp text[], p_customer_stamp text[],
    p_stale_tenants text[],
    OUT out_tenant text[], OUT out_event text[])
LANGUAGE plpgsql AS $$
BEGIN
    WITH ins AS (
        INSERT INTO usage_events AS e (tenant_id, event_id, customer_id, feature_key,
                                       quantity, occurred_at, period_start, member_id,
                                       billable, properties)
        SELECT i.t, i.e, i.c, i.f, i.q, i.at, i.ps, i.m, i.b, i.props
        FROM unnest(p_tenant, p_event, p_customer, p_feature, p_quantity, p_occurred_at,
                    p_period_start, p_member, p_billable, p_properties, p_refused, p_first,
                    p_key_hash, p_tenant_stamp, p_customer_stamp)
                 WITH ORDINALITY AS i(t, e, c, f, q, at, ps, m, b, props, refused, first,
                                      kh, ts, cs, ord)
        WHERE i.first = i.ord AND NOT i.refused
          -- OFFSET 0 keeps it a probe per event: pulled up into an anti-join, its generic
          -- plan scanned the whole index for every event (with sequential scans off).
          AND NOT EXISTS (SELECT 1 FROM usage_events_purged x
                          WHERE x.tenant_id = ANY (p_scope)
                            AND x.tenant_id = i.t AND x.event_id = i.e OFFSET 0)
          -- Resolved against the rows as they are now: its tenant's (step 0), and its
          -- customer's (tollgate_customer_stamp, written out: a call per event costs more
          -- than the probes themselves), read as the customer is locked; and not in a closed
          -- period.
          AND (p_stale_tenants = '{}'
               OR NOT (i.t || chr(31) || coalesce(encode(i.kh, 'hex'), '') || chr(31) || i.ts)
                      = ANY (p_stale_tenants))
          AND coalesce((SELECT c.xmin::text
                               || '/' || coalesce((SELECT s.xmin::text FROM subscriptions s
                                                   WHERE s.tenant_id = ANY (p_scope)
                                                     AND s.tenant_id = c.tenant_id
                                                     AND s.customer_id = c.customer_id
                                                     AND s.status IN ('trialing', 'active',
                                                                      'past_due')), '')
                               = i.cs
                           AND i.at >= coalesce(c.usage_closed_before, '-infinity')
                        FROM customers c
                        WHERE c.tenant_id = ANY (p_scope)
                          AND c.tenant_id = i.t AND c.customer_id = i.c
                          AND c.deleted_at IS NULL
                        FOR KEY SHARE), false)
        ORDER BY i.t COLLATE "C", i.e COLLATE "C"
        ON CONFLICT ON CONSTRAINT usage_events_pkey DO NOTHING
        RETURNING e.tenant_id, e.event_id
    )
    SELECT array_agg(ins.tenant_id), array_agg(ins.event_id)
    INTO out_tenant, out_event
    FROM ins;
END;
$$;

-- Step 2. Per event, why it was or was not inserted: 'recorded', 'repeat' (an id seen
-- earlier in the batch), 'stale', 'duplicate', 'refused' or 'period_closed'. (The inserted
-- ids are looked up in a jsonb object, not joined: a join of two arrays could be planned as
-- a nested loop, quadratic in the batch.)
CREATE FUNCTION tollgate_usage_states(
    p_scope text[], p_tenant text[], p_event text[], p_customer text[],
    p_occurred_at timestamptz[], p_refused boolean[], p_first integer[], p_key_hash bytea[],
    p_tenant_stamp text[], p_customer_stamp text[], p_stale_tenants text[],
    p_ins_tenant text[], p_ins_event text[])
RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_n        integer := cardinality(p_event);
    v_inserted jsonb;
    v_state    text[];
BEGIN
    -- Every event inserted (the common case): every event is recorded.
    IF coalesce(cardinality(p_ins_event), 0) = v_n THEN
        RETURN array_fill('recorded'::text, ARRAY[v_n]);
    END IF;
    SELECT jsonb_object_agg(x.t || chr(31) || x.e, true)
    INTO v_inserted
    FROM unnest(p_ins_tenant, p_ins_event) AS x(t, e);
    SELECT array_agg(CASE
               WHEN i.first <> i.ord THEN 'repeat'
               WHEN v_inserted ? (i.t || chr(31) || i.e) THEN 'recorded'
               -- Resolved against rows that have changed since: resolved again by the
               -- caller, whatever else is true of it.
               -- (The customer's stamp is tollgate_customer_stamp written out: a function
               -- that reads tables cannot run inside a statement Citus ships to a shard.)
               WHEN (i.t || chr(31) || coalesce(encode(i.kh, 'hex'), '') || chr(31) || i.ts)
                    = ANY (p_stale_tenants)
                 OR (SELECT c.xmin::text
                            || '/' || coalesce((SELECT s.xmin::text FROM subscriptions s
                                                WHERE s.tenant_id = ANY (p_scope)
                                                  AND s.tenant_id = c.tenant_id
                                                  AND s.customer_id = c.customer_id
                                                  AND s.status IN ('trialing', 'active',
                                                                   'past_due')), '')
                     FROM customers c
                     WHERE c.tenant_id = ANY (p_scope)
                       AND c.tenant_id = i.t AND c.customer_id = i.c
                       AND c.deleted_at IS NULL) IS DISTINCT FROM i.cs THEN 'stale'
               WHEN EXISTS (SELECT 1 FROM usage_events_purged x
                            WHERE x.tenant_id = ANY (p_scope)
                              AND x.tenant_id = i.t AND x.event_id = i.e) THEN 'duplicate'
               WHEN i.refused OR i.at < (SELECT c.usage_closed_before FROM customers c
                                         WHERE c.tenant_id = ANY (p_scope)
                                           AND c.tenant_id = i.t AND c.customer_id = i.c)
               THEN CASE WHEN EXISTS (SELECT 1 FROM usage_events e
                                      WHERE e.tenant_id = ANY (p_scope)
                                        AND e.tenant_id = i.t AND e.event_id = i.e)
                             THEN 'duplicate'
                         WHEN i.refused THEN 'refused'
                         ELSE 'period_closed' END
               ELSE 'duplicate'
           END ORDER BY i.ord)
    INTO v_state
    FROM unnest(p_tenant, p_event, p_customer, p_occurred_at, p_refused, p_first,
                p_key_hash, p_tenant_stamp, p_customer_stamp)
             WITH ORDINALITY AS i(t, e, c, at, refused, first, kh, ts, cs, ord);
    RETURN v_state;
END;
$$;

-- Step 3. The counters, coalesced: all of a counter's events in one upsert, in key order
-- (one row version, and one lock, per counter per batch). Under a ceiling the upsert
-- happens only if the whole group fits; the ceiling is looked up by counter key. Then the
-- alerts of the counters so updated: the levels between before and after. Returns the
-- counters after the batch, by counter key (NULL: none updated so).
CREATE FUNCTION tollgate_usage_count_grouped(
    p_scope text[], p_tenant text[], p_customer text[], p_feature text[],
    p_period_start timestamptz[], p_period_end timestamptz[], p_quantity numeric[],
    p_billable boolean[], p_is_max boolean[], p_ceiling numeric[], p_limit numeric[],
    p_warning numeric[], p_critical numeric[], p_now timestamptz[], p_state text[])
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    -- The ceilings of the counters (those with one), by counter key.
    v_ceilings jsonb;
    v_after    jsonb;
BEGIN
    IF array_remove(p_ceiling, NULL) <> '{}' THEN
        SELECT jsonb_object_agg(g.key, g.ceil)
        INTO v_ceilings
        FROM (SELECT tollgate_counter_key(i.t, i.c, i.f, i.ps) AS key, min(i.ceil) AS ceil
              FROM unnest(p_tenant, p_customer, p_feature, p_period_start, p_ceiling, p_state,
                          p_billable) AS i(t, c, f, ps, ceil, s, b)
              WHERE i.s = 'recorded' AND i.b AND i.ceil IS NOT NULL
              GROUP BY 1) g;
    END IF;
    WITH g AS (
        SELECT i.t COLLATE "C" AS t, i.c COLLATE "C" AS c, i.f COLLATE "C" AS f, i.ps,
               min(i.pe) AS pe, sum(i.q) AS total, count(*) AS n
        FROM unnest(p_tenant, p_customer, p_feature, p_period_start, p_period_end,
                    p_quantity, p_billable, p_is_max, p_ceiling, p_state)
                 AS i(t, c, f, ps, pe, q, b, is_max, ceil, s)
        WHERE i.s = 'recorded' AND i.b
        GROUP BY 1, 2, 3, 4
        -- One ceiling for all its events (or none), a sum, and the whole group under it:
        -- else one event at a time (step 4).
        HAVING NOT bool_or(i.is_max)
           AND (count(i.ceil) = 0
                OR (count(i.ceil) = count(*) AND min(i.ceil) = max(i.ceil)))
           AND (min(i.ceil) IS NULL OR sum(i.q) <= min(i.ceil))
    ),
    up AS (
        INSERT INTO usage_counters AS c (tenant_id, customer_id, feature_key, period_start,
                                         period_end, used, event_count, updated_at)
        SELECT g.t, g.c, g.f, g.ps, g.pe, g.total, g.n, now() FROM g
        ORDER BY g.t, g.c, g.f, g.ps
        ON CONFLICT ON CONSTRAINT usage_counters_pkey DO UPDATE SET
            used = c.used + EXCLUDED.used,
            event_count = c.event_count + EXCLUDED.event_count,
            updated_at = EXCLUDED.updated_at
        WHERE v_ceilings IS NULL
           OR c.used + EXCLUDED.used <= coalesce(
                  (v_ceilings ->> tollgate_counter_key(c.tenant_id, c.customer_id,
                                                       c.feature_key, c.period_start))::numeric,
                  c.used + EXCLUDED.used)
        RETURNING c.tenant_id, c.customer_id, c.feature_key, c.period_start, c.used
    )
    SELECT jsonb_object_agg(tollgate_counter_key(up.tenant_id, up.customer_id, up.feature_key,
                                                 up.period_start), up.used)
    INTO v_after
    FROM up;

    IF v_after IS NOT NULL AND array_remove(p_limit, NULL) <> '{}' THEN
        PERFORM tollgate_usage_alerts(g.t, g.c, g.f, g.ps, g.after - g.total, g.after,
                                      g.lim, g.warn, g.crit, g.now)
        FROM (SELECT i.t, i.c, i.f, i.ps, sum(i.q) AS total, min(i.lim) AS lim,
                     min(i.warn) AS warn, min(i.crit) AS crit, max(i.now) AS now,
                     (v_after ->> tollgate_counter_key(i.t, i.c, i.f, i.ps))::numeric AS after
              FROM unnest(p_tenant, p_customer, p_feature, p_period_start, p_quantity,
                          p_billable, p_limit, p_warning, p_critical, p_now, p_state)
                       AS i(t, c, f, ps, q, b, lim, warn, crit, now, s)
              WHERE i.s = 'recorded' AND i.b AND i.lim IS NOT NULL
              GROUP BY i.t, i.c, i.f, i.ps) g
        WHERE g.after IS NOT NULL
          AND tollgate_level(g.after, g.lim, g.warn, g.crit)
              > tollgate_level(g.after - g.total, g.lim, g.warn, g.crit);
    END IF;
    RETURN v_after;
END;
$$;

-- Step 4. The other counters (a max feature, or a ceiling reached within the batch): one
-- event at a time in arrival order, each refused on its own if it would pass its ceiling
-- ('unrecorded'). Counters in key order. Returns the states so changed, and per event the
-- counter after it.
CREATE FUNCTION tollgate_usage_count_each(
    p_scope text[], p_tenant text[], p_customer text[], p_feature text[],
    p_period_start timestamptz[], p_period_end timestamptz[], p_quantity numeric[],
    p_billable boolean[], p_is_max boolean[], p_ceiling numeric[], p_limit numeric[],
    p_warning numeric[], p_critical numeric[], p_now timestamptz[], p_after jsonb,
    INOUT io_state text[], OUT out_used numeric[])
LANGUAGE plpgsql AS $$
DECLARE
    v_group  record;
    v_k      integer;
    v_o      integer;
    v_q      numeric;
    v_ceil   numeric;
    v_level  numeric;
    v_before numeric;
BEGIN
    out_used := array_fill(NULL::numeric, ARRAY[cardinality(io_state)]);
    FOR v_group IN
        SELECT i.t COLLATE "C" AS t, i.c COLLATE "C" AS c, i.f COLLATE "C" AS f, i.ps,
               min(i.pe) AS pe, bool_or(i.is_max) AS is_max,
               array_agg(i.ord ORDER BY i.ord) AS ords,
               array_agg(i.q ORDER BY i.ord) AS qs,
               array_agg(i.ceil ORDER BY i.ord) AS ceils,
               count(*) AS n, min(i.lim) AS lim, min(i.warn) AS warn, min(i.crit) AS crit,
               max(i.now) AS now
        FROM unnest(p_tenant, p_customer, p_feature, p_period_start, p_period_end, p_quantity,
                    p_billable, p_is_max, p_ceiling, p_limit, p_warning, p_critical, p_now,
                    io_state)
                 WITH ORDINALITY AS i(t, c, f, ps, pe, q, b, is_max, ceil, lim, warn, crit, now,
                                      s, ord)
        WHERE i.s = 'recorded' AND i.b
          AND (p_after IS NULL OR NOT p_after ? tollgate_counter_key(i.t, i.c, i.f, i.ps))
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4
    LOOP
        FOR v_k IN 1 .. v_group.n LOOP
            v_o := v_group.ords[v_k];
            v_q := v_group.qs[v_k];
            v_ceil := v_group.ceils[v_k];
            v_level := NULL;
            IF v_ceil IS NULL OR v_q <= v_ceil THEN
                INSERT INTO usage_counters AS c (tenant_id, customer_id, feature_key,
                                                 period_start, period_end, used, event_count,
                                                 updated_at)
                VALUES (v_group.t, v_group.c, v_group.f, v_group.ps, v_group.pe, v_q, 1, now())
                ON CONFLICT ON CONSTRAINT usage_counters_pkey DO UPDATE SET
                    used = CASE WHEN v_group.is_max THEN GREATEST(c.used, EXCLUDED.used)
                                ELSE c.used + EXCLUDED.used END,
                    event_count = c.event_count + 1,
                    updated_at = EXCLUDED.updated_at
                WHERE v_ceil IS NULL
                   OR (CASE WHEN v_group.is_max THEN GREATEST(c.used, EXCLUDED.used)
                            ELSE c.used + EXCLUDED.used END) <= v_ceil
                RETURNING c.used INTO v_level;
            END IF;
            IF v_level IS NULL THEN
                io_state[v_o] := 'unrecorded';
                CONTINUE;
            END IF;
            out_used[v_o] := v_level;
            -- A max feature's level before is unknown when this event set it: every level
            -- it reached is tried (the alerts' unique key keeps each once).
            v_before := CASE WHEN NOT v_group.is_max THEN v_level - v_q
                             WHEN v_level = v_q THEN 0
                             ELSE v_level END;
            PERFORM tollgate_usage_alerts(v_group.t, v_group.c, v_group.f, v_group.ps,
                                          v_before, v_level, v_group.lim, v_group.warn,
                                          v_group.crit, v_group.now);
        END LOOP;
    END LOOP;
END;
$$;

-- Step 5. Per-member totals of what was counted (sum features, then max features).
CREATE FUNCTION tollgate_usage_member_totals(
    p_scope text[], p_tenant text[], p_customer text[], p_feature text[],
    p_period_start timestamptz[], p_member text[], p_quantity numeric[], p_billable boolean[],
    p_is_max boolean[], p_state text[], p_first integer[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_member_counters AS m (tenant_id, customer_id, feature_key,
                                            period_start, member_id, used)
    SELECT i.t COLLATE "C", i.c COLLATE "C", i.f COLLATE "C", i.ps, i.m COLLATE "C",
           sum(i.q)
    FROM unnest(p_tenant, p_customer, p_feature, p_period_start, p_member, p_quantity,
                p_billable, p_is_max, p_state, p_first)
             WITH ORDINALITY AS i(t, c, f, ps, m, q, b, is_max, s, first, ord)
    WHERE i.s = 'recorded' AND i.first = i.ord AND i.b AND i.m IS NOT NULL AND NOT i.is_max
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT ON CONSTRAINT usage_member_counters_pkey DO UPDATE SET
        used = m.used + EXCLUDED.used;

    INSERT INTO usage_member_counters AS m (tenant_id, customer_id, feature_key,
                                            period_start, member_id, used)
    SELECT i.t COLLATE "C", i.c COLLATE "C", i.f COLLATE "C", i.ps, i.m COLLATE "C",
           max(i.q)
    FROM unnest(p_tenant, p_customer, p_feature, p_period_start, p_member, p_quantity,
                p_billable, p_is_max, p_state, p_first)
             WITH ORDINALITY AS i(t, c, f, ps, m, q, b, is_max, s, first, ord)
    WHERE i.s = 'recorded' AND i.first = i.ord AND i.b AND i.m IS NOT NULL AND i.is_max
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT ON CONSTRAINT usage_member_counters_pkey DO UPDATE SET
        used = GREATEST(m.used, EXCLUDED.used);
END;
$$;

-- Step 6. A Stripe meter event for each counted event, when its tenant is connected to
-- Stripe.
CREATE FUNCTION tollgate_usage_meter_events(
    p_scope text[], p_tenant text[], p_event text[], p_customer text[], p_quantity numeric[],
    p_occurred_at timestamptz[], p_billable boolean[], p_meter_event text[], p_state text[],
    p_first integer[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    -- The tenants connected to Stripe, read first: an insert whose rows come from arrays
    -- may not also read a table in a subquery on Citus (stripe_outbox's id is made where
    -- the rows are, so the insert is planned apart from its select).
    v_connected text[];
BEGIN
    SELECT coalesce(array_agg(t.tenant_id), '{}') INTO v_connected
    FROM tenants t
    WHERE t.tenant_id = ANY (p_scope) AND t.stripe_secret_key IS NOT NULL;
    IF v_connected = '{}' THEN
        RETURN;
    END IF;
    INSERT INTO stripe_outbox (tenant_id, kind, resource_id, payload)
    SELECT i.t, 'meter_event', i.e,
           jsonb_build_object('event_name', i.meter, 'customer', i.c, 'value', i.q,
                              'timestamp', extract(epoch FROM i.at)::bigint)
    FROM unnest(p_tenant, p_event, p_customer, p_quantity, p_occurred_at, p_billable,
                p_meter_event, p_state, p_first)
             WITH ORDINALITY AS i(t, e, c, q, at, b, meter, s, first, ord)
    WHERE i.s = 'recorded' AND i.first = i.ord AND i.b AND i.meter IS NOT NULL
      AND i.t = ANY (v_connected)
    ORDER BY i.ord;
END;
$$;

-- Records a batch of usage events (parallel arrays, one element per event, in arrival order)
-- of the tenant `p_tenant_scope`, or of any tenants when it is NULL (one PostgreSQL only).
-- p_refused marks an event the plan refuses (decided by the caller): it is answered as a
-- duplicate if its id was seen before, else 'refused', and never written. p_first is, per
-- event, the ordinal (from 1) of the batch's first event with the same tenant and id (its own
-- for most). p_key_hash, p_tenant_stamp and p_customer_stamp are what the event was resolved
-- against (tollgate_tenant_stamp, tollgate_customer_stamp; the key hash NULL when the caller
-- was authenticated otherwise): an event whose stamps no longer match is 'stale', never
-- written, and the caller resolves it again. Returns one row per event, in order: out_outcome
-- is 'recorded', 'duplicate', 'refused', 'period_closed' or 'stale'; out_used the counter
-- after the event (recorded), or now (duplicate); the rest the stored event's fields for a
-- duplicate, else the input's.
--
-- Set-based: a handful of statements whatever the batch size. Every lookup is a LATERAL or
-- scalar subquery, so an index probe per event whatever the cached (generic) plan estimates,
-- never a join the planner might turn into a scan of millions of rows.
CREATE FUNCTION tollgate_record_usage_batch(
    p_tenant_scope text,
    p_tenant       text[],
    p_event        text[],
    p_customer     text[],
    p_feature      text[],
    p_quantity     numeric[],
    p_occurred_at  timestamptz[],
    p_period_start timestamptz[],
    p_period_end   timestamptz[],
    p_member       text[],
    p_billable     boolean[],
    p_properties   jsonb[],
    p_is_max       boolean[],
    p_ceiling      numeric[],
    p_limit        numeric[],
    p_warning      numeric[],
    p_critical     numeric[],
    p_meter_event  text[],
    p_refused      boolean[],
    p_now          timestamptz[],
    p_first        integer[],
    p_key_hash     bytea[],
    p_tenant_stamp text[],
    p_customer_stamp text[]
) RETURNS TABLE (
    out_ord         integer,
    out_outcome     text,
    out_used        numeric,
    out_customer    text,
    out_feature     text,
    out_quantity    numeric,
    out_occurred_at timestamptz
)
LANGUAGE plpgsql
-- The statements below are planned once per connection (their shape does not depend on the
-- batch; re-planning them per call cost more than running them), and every table lookup in
-- them is by primary key: with sequential scans off, a plan made while a table was still
-- small never scans it once it has grown to millions of rows.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    v_n       integer := coalesce(cardinality(p_event), 0);
    -- The tenants every statement is limited to.
    v_scope   text[];
    -- Per event: 'recorded', 'repeat', 'duplicate', 'refused', 'period_closed', 'stale';
    -- 'unrecorded' once its ceiling refused it (its raw row is deleted again); in the end
    -- one of the API's outcomes.
    v_state   text[];
    v_stale   text[];
    v_ins_t   text[];
    v_ins_e   text[];
    -- The counters after the batch, by counter key, for the counters updated in one go.
    v_after   jsonb;
    -- Per event, the counter after it (the counters updated one event at a time).
    v_used    numeric[] := array_fill(NULL::numeric, ARRAY[coalesce(cardinality(p_event), 0)]);
    v_o       integer;
BEGIN
    IF v_n = 0 THEN
        RETURN;
    END IF;
    IF p_tenant_scope IS NULL THEN
        SELECT array_agg(DISTINCT t) INTO v_scope FROM unnest(p_tenant) AS t;
    ELSIF EXISTS (SELECT 1 FROM unnest(p_tenant) AS t WHERE t IS DISTINCT FROM p_tenant_scope)
    THEN
        RAISE EXCEPTION 'tollgate_record_usage_batch: an event of another tenant than %',
                        p_tenant_scope;
    ELSE
        v_scope := ARRAY[p_tenant_scope];
    END IF;

    v_stale := tollgate_usage_stale_tenants(p_tenant, p_key_hash, p_tenant_stamp);
    SELECT x.out_tenant, x.out_event INTO v_ins_t, v_ins_e
    FROM tollgate_usage_insert_events(v_scope, p_tenant, p_event, p_customer, p_feature,
                                      p_quantity, p_occurred_at, p_period_start, p_member,
                                      p_billable, p_properties, p_refused, p_first,
                                      p_key_hash, p_tenant_stamp, p_customer_stamp,
                                      v_stale) AS x;
    v_state := tollgate_usage_states(v_scope, p_tenant, p_event, p_customer, p_occurred_at,
                                     p_refused, p_first, p_key_hash, p_tenant_stamp,
                                     p_customer_stamp, v_stale, v_ins_t, v_ins_e);
    v_after := tollgate_usage_count_grouped(v_scope, p_tenant, p_customer, p_feature,
                                            p_period_start, p_period_end, p_quantity,
                                            p_billable, p_is_max, p_ceiling, p_limit,
                                            p_warning, p_critical, p_now, v_state);
    -- Without a ceiling or a max feature, every counter was updated in one go.
    IF array_remove(p_ceiling, NULL) <> '{}' OR array_position(p_is_max, true) IS NOT NULL THEN
        SELECT x.io_state, x.out_used INTO v_state, v_used
        FROM tollgate_usage_count_each(v_scope, p_tenant, p_customer, p_feature,
                                       p_period_start, p_period_end, p_quantity, p_billable,
                                       p_is_max, p_ceiling, p_limit, p_warning, p_critical,
                                       p_now, v_after, v_state) AS x;
    END IF;

    -- The raw rows of the events their ceiling refused go again.
    IF 'unrecorded' = ANY (v_state) THEN
        FOR v_o IN 1 .. v_n LOOP
            IF v_state[v_o] = 'unrecorded' THEN
                DELETE FROM usage_events e
                WHERE e.tenant_id = ANY (v_scope)
                  AND e.tenant_id = p_tenant[v_o] AND e.event_id = p_event[v_o];
                v_state[v_o] := 'refused';
            END IF;
        END LOOP;
    END IF;

    -- Later events with an id seen earlier in the batch: a duplicate of it if it was
    -- recorded, else the same answer.
    IF EXISTS (SELECT 1 FROM unnest(p_first) WITH ORDINALITY AS f(first, ord)
               WHERE f.first <> f.ord) THEN
        FOR v_o IN 1 .. v_n LOOP
            IF v_state[v_o] = 'repeat' THEN
                v_state[v_o] := CASE WHEN v_state[p_first[v_o]] IN ('recorded', 'duplicate')
                                     THEN 'duplicate' ELSE v_state[p_first[v_o]] END;
            END IF;
        END LOOP;
    END IF;

    IF array_remove(p_member, NULL) <> '{}' THEN
        PERFORM tollgate_usage_member_totals(v_scope, p_tenant, p_customer, p_feature,
                                             p_period_start, p_member, p_quantity, p_billable,
                                             p_is_max, v_state, p_first);
    END IF;
    IF array_remove(p_meter_event, NULL) <> '{}' THEN
        PERFORM tollgate_usage_meter_events(v_scope, p_tenant, p_event, p_customer,
                                            p_quantity, p_occurred_at, p_billable,
                                            p_meter_event, v_state, p_first);
    END IF;

    -- 7. The answers, in order. A counter updated in one go gives each of its events the
    -- running total in arrival order (as if they had come one by one).
    RETURN QUERY
        SELECT i.ord::integer,
               i.s,
               CASE WHEN i.s = 'recorded' AND i.b THEN
                        coalesce(i.u, (v_after ->> tollgate_counter_key(i.t, i.c, i.f, i.ps))::numeric
                                      - coalesce(sum(i.q) FILTER (WHERE i.s = 'recorded' AND i.b)
                                                     OVER (counter ORDER BY i.ord ROWS BETWEEN
                                                           1 FOLLOWING AND UNBOUNDED FOLLOWING),
                                                 0))
                    WHEN i.s IN ('recorded', 'duplicate') THEN COALESCE(cnt.used, 0) END,
               COALESCE(e.customer_id, i.c), COALESCE(e.feature_key, i.f),
               COALESCE(e.quantity, i.q), COALESCE(e.occurred_at, i.at)
        FROM unnest(p_tenant, p_event, p_customer, p_feature, p_quantity, p_occurred_at,
                    p_period_start, p_billable, v_state, v_used)
                 WITH ORDINALITY AS i(t, ev, c, f, q, at, ps, b, s, u, ord)
        LEFT JOIN LATERAL (
            SELECT e.customer_id, e.feature_key, e.quantity, e.occurred_at, e.period_start
            FROM usage_events e
            WHERE i.s = 'duplicate' AND e.tenant_id = ANY (v_scope)
              AND e.tenant_id = i.t AND e.event_id = i.ev
            OFFSET 0) e ON true
        LEFT JOIN LATERAL (
            SELECT cnt.used FROM usage_counters cnt
            WHERE (i.s = 'duplicate' OR (i.s = 'recorded' AND NOT i.b))
              AND cnt.tenant_id = ANY (v_scope)
              AND cnt.tenant_id = i.t AND cnt.customer_id = COALESCE(e.customer_id, i.c)
              AND cnt.feature_key = COALESCE(e.feature_key, i.f)
              AND cnt.period_start = COALESCE(e.period_start, i.ps)
            OFFSET 0) cnt ON true
        WINDOW counter AS (PARTITION BY i.t COLLATE "C", i.c COLLATE "C", i.f COLLATE "C", i.ps)
        ORDER BY i.ord;
END;
$$;

SELECT tollgate_distribute_function(
    'tollgate_record_usage_batch(text,text[],text[],text[],text[],numeric[],timestamptz[],'
    'timestamptz[],timestamptz[],text[],boolean[],jsonb[],boolean[],numeric[],numeric[],'
    'numeric[],numeric[],text[],boolean[],timestamptz[],integer[],bytea[],text[],text[])',
    '$1');

-- On Citus the statements are planned for each call instead: Citus routes a statement to its
-- tenant's shard when it plans it, which it can only do knowing the tenant (a generic plan
-- of these statements does not know it and cannot be made).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        ALTER FUNCTION tollgate_record_usage_batch(
            text, text[], text[], text[], text[], numeric[], timestamptz[], timestamptz[],
            timestamptz[], text[], boolean[], jsonb[], boolean[], numeric[], numeric[],
            numeric[], numeric[], text[], boolean[], timestamptz[], integer[], bytea[], text[],
            text[])
        SET plan_cache_mode = force_custom_plan;
    END IF;
END;
$$;
