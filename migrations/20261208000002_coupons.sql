-- Coupons (SPEC §15): percent or amount off, once, repeating or forever, redeemed onto a
-- subscription as its discount, which puts one `discount` line on each of its invoices while
-- it lasts.

CREATE TABLE coupons (
    tenant_id           text        NOT NULL REFERENCES tenants (tenant_id),
    code                text        NOT NULL,
    name                text,
    percent_off         numeric     CHECK (percent_off > 0 AND percent_off <= 100),
    amount_off          numeric     CHECK (amount_off > 0),
    currency            text        NOT NULL,
    duration            text        NOT NULL CHECK (duration IN ('once', 'repeating', 'forever')),
    duration_in_periods integer     CHECK (duration_in_periods >= 1),
    max_redemptions     integer     CHECK (max_redemptions >= 1),
    -- Counted in the statement that redeems, never past max_redemptions.
    times_redeemed      integer     NOT NULL DEFAULT 0,
    redeem_by           timestamptz,
    -- The plan keys it is limited to (NULL: any plan).
    plans               text[],
    created_at          timestamptz NOT NULL,
    deleted_at          timestamptz,
    PRIMARY KEY (tenant_id, code),
    CHECK ((percent_off IS NULL) <> (amount_off IS NULL)),
    CHECK ((duration = 'repeating') = (duration_in_periods IS NOT NULL)),
    CHECK (max_redemptions IS NULL OR times_redeemed <= max_redemptions)
);

SELECT tollgate_distribute('coupons');

-- A subscription's current discount, and the coupon that discounted an invoice (the
-- finalization recomputes that line). Added in a DO block: Citus ships an ALTER TABLE on a
-- distributed table as its own query text (docs/DEVELOPING.md).
DO $$
BEGIN
    EXECUTE 'ALTER TABLE subscriptions ADD COLUMN discount_coupon text';
    EXECUTE 'ALTER TABLE subscriptions ADD COLUMN discount_start timestamptz';
    -- NULL: no end (once, forever).
    EXECUTE 'ALTER TABLE subscriptions ADD COLUMN discount_end timestamptz';
    EXECUTE 'ALTER TABLE invoices ADD COLUMN discount_coupon text';
END;
$$;
