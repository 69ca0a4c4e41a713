-- Add-ons (SPEC §15): versioned like plans, attached to a subscription with a quantity. Their
-- entitlements stack on the plan's; recurring ones are billed in advance with it.

CREATE TABLE addons (
    tenant_id      text        NOT NULL REFERENCES tenants (tenant_id),
    addon_key      text        NOT NULL,
    latest_version integer     NOT NULL CHECK (latest_version >= 1),
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, addon_key)
);

CREATE TABLE addon_versions (
    tenant_id  text        NOT NULL,
    addon_key  text        NOT NULL,
    version    integer     NOT NULL CHECK (version >= 1),
    name       text        NOT NULL,
    -- The normalized definition (name, prices, entitlements): immutable once written, and
    -- compared to make re-applying an unchanged add-on a no-op.
    definition jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, addon_key, version),
    FOREIGN KEY (tenant_id, addon_key) REFERENCES addons (tenant_id, addon_key)
);

SELECT tollgate_distribute('addons');
SELECT tollgate_distribute('addon_versions');

-- In a DO block: Citus ships an ALTER TABLE on a distributed table as its own query text
-- (docs/DEVELOPING.md).
DO $$
BEGIN
    -- A subscription's attached add-ons, sorted by key:
    -- [{"addon": key, "version": n, "quantity": q, "removes_at": instant | null}].
    -- On the subscription row itself, so that the resolve of a check or a usage event reads
    -- them with the subscription (no extra probe on the hot path), and so that attaching one
    -- changes the row version the usage stamps compare (migration 20261130000002).
    EXECUTE $ddl$ALTER TABLE subscriptions ADD COLUMN addons jsonb NOT NULL DEFAULT '[]'$ddl$;
    -- Negotiated prices (SPEC §15) for the subscription's interval, in the plan price shape,
    -- replacing the plan version's (NULL: the plan's).
    EXECUTE 'ALTER TABLE subscriptions ADD COLUMN price_overrides jsonb';
    -- Those of a change scheduled for the period end (with pending_plan_key; NULL: none).
    EXECUTE 'ALTER TABLE subscriptions ADD COLUMN pending_price_overrides jsonb';
    -- The same, as of each history entry (the MRR series), and the discount then.
    EXECUTE $ddl$ALTER TABLE subscription_history ADD COLUMN addons jsonb NOT NULL DEFAULT '[]'$ddl$;
    EXECUTE 'ALTER TABLE subscription_history ADD COLUMN price_overrides jsonb';
    EXECUTE 'ALTER TABLE subscription_history ADD COLUMN discount_coupon text';
    EXECUTE 'ALTER TABLE subscription_history ADD COLUMN discount_end timestamptz';
    EXECUTE 'ALTER TABLE subscription_history DROP CONSTRAINT subscription_history_event_check';
    EXECUTE $ddl$ALTER TABLE subscription_history ADD CONSTRAINT subscription_history_event_check
        CHECK (event IN ('created', 'renewed', 'plan_changed', 'status_changed', 'ended',
                         'terms_changed'))$ddl$;
    -- The add-ons whose entitlements the usage window's overage is billed against.
    EXECUTE $ddl$ALTER TABLE invoices ADD COLUMN usage_addons jsonb NOT NULL DEFAULT '[]'$ddl$;
END;
$$;
