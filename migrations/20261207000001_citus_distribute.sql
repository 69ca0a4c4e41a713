-- Scale-out on Citus (SPEC §14, docs/SCALING.md): on a database with the `citus` extension,
-- every table is distributed by `tenant_id` (Citus's default shard count), all in one
-- co-location group with `tenants`, and the SQL functions reach the worker nodes. On plain
-- PostgreSQL this migration only creates the helper `tollgate_distribute` (a no-op there),
-- which later migrations call for each table they create.
--
-- A migration that creates a table calls `SELECT tollgate_distribute('the_table')` after
-- it; one that creates a function acting for one tenant calls
-- `SELECT tollgate_distribute_function('name(argtypes)', '$1')` with its tenant argument
-- (docs/DEVELOPING.md). Citus itself copies every function created while the extension is
-- there to every node, so functions need nothing else.

-- Distributes `p_table` by tenant_id, co-located with `tenants` (`tenants` itself first).
-- Does nothing on plain PostgreSQL, or when the table is distributed already.
CREATE FUNCTION tollgate_distribute(p_table regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = p_table) THEN
        RETURN;
    END IF;
    IF p_table = 'tenants'::regclass THEN
        PERFORM create_distributed_table(p_table, 'tenant_id');
    ELSE
        PERFORM create_distributed_table(p_table, 'tenant_id', colocate_with => 'tenants');
    END IF;
END;
$$;

-- Makes `p_function` (a regprocedure, as 'name(argtypes)') a distributed function on its
-- tenant argument `p_tenant_arg` ('$1', …), co-located with `tenants`: a call of it outside
-- a transaction block runs on the tenant's node, in one round trip. Does nothing on plain
-- PostgreSQL.
CREATE FUNCTION tollgate_distribute_function(p_function regprocedure, p_tenant_arg text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    PERFORM create_distributed_function(p_function, p_tenant_arg, colocate_with => 'tenants');
END;
$$;

DO $$
DECLARE
    v_table text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    -- One transaction over many shards on few connections; audit_log's append-only
    -- triggers are created on its shards (they only raise, so they are safe there).
    SET LOCAL citus.multi_shard_modify_mode TO 'sequential';
    SET LOCAL citus.enable_unsafe_triggers TO on;

    -- Referenced tables before the tables that reference them.
    FOREACH v_table IN ARRAY ARRAY[
        'tenants', 'api_keys', 'idempotency_keys', 'console_sessions',
        'features', 'plans', 'plan_versions', 'plan_prices', 'plan_entitlements',
        'customers', 'customer_sessions', 'customer_members', 'seat_changes',
        'subscriptions', 'subscription_history',
        'usage_events', 'usage_events_purged', 'usage_counters', 'usage_member_counters',
        'usage_alerts', 'leases',
        'audit_log',
        'invoice_numbers', 'invoices', 'invoice_lines', 'pending_lines', 'credit_notes',
        'balance_transactions',
        'stripe_outbox', 'stripe_events',
        'webhook_endpoints', 'webhook_events', 'webhook_deliveries'
    ] LOOP
        PERFORM tollgate_distribute(v_table::regclass);
    END LOOP;

    -- The functions that act for one tenant, on their tenant argument.
    PERFORM tollgate_distribute_function(
        'tollgate_emit_event(text,text,jsonb,timestamptz)', '$1');
    PERFORM tollgate_distribute_function('tollgate_tenant_stamp(text,bytea)', '$1');
    PERFORM tollgate_distribute_function('tollgate_customer_stamp(text,text)', '$1');
    PERFORM tollgate_distribute_function(
        'tollgate_usage_alerts(text,text,text,timestamptz,numeric,numeric,numeric,numeric,'
        'numeric,timestamptz)', '$1');
END;
$$;
