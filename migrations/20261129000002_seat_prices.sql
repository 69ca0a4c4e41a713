-- Seat prices (docs/API-DESIGN.md, "Organisations and seats"): per interval a plan may have
-- one flat price and one per-seat price; a per-seat price charges `amount` per seat or, with
-- `tiers`, by volume or graduated tiers; it bills at least `min_seats`.

ALTER TABLE plan_prices DROP CONSTRAINT plan_prices_pkey;
ALTER TABLE plan_prices ADD PRIMARY KEY (tenant_id, plan_key, version, interval, per_seat);
ALTER TABLE plan_prices ALTER COLUMN amount DROP NOT NULL;
ALTER TABLE plan_prices
    ADD COLUMN min_seats  integer NOT NULL DEFAULT 1 CHECK (min_seats >= 0),
    -- [{"up_to": 10 | null, "unit_amount": "50.00"}, ...], ascending, the last one open.
    ADD COLUMN tiers      jsonb,
    ADD COLUMN tiers_mode text CHECK (tiers_mode IN ('volume', 'graduated')),
    ADD CONSTRAINT plan_prices_amount_or_tiers CHECK (
        (amount IS NOT NULL AND tiers IS NULL AND tiers_mode IS NULL)
        OR (amount IS NULL AND tiers IS NOT NULL AND tiers_mode IS NOT NULL AND per_seat));

-- Lines waiting for a subscription's next invoice (of whatever kind): the prorated seat
-- changes of members added or removed mid-period. Written in the member's transaction;
-- `invoice_id` is set in the transaction that puts the line on an invoice.
CREATE TABLE pending_lines (
    tenant_id       text        NOT NULL,
    subscription_id text        NOT NULL,
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    type            text        NOT NULL CHECK (type IN ('seat')),
    description     text        NOT NULL,
    quantity        numeric     NOT NULL,
    unit_amount     numeric     NOT NULL,
    amount          numeric     NOT NULL,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    invoice_id      text,
    PRIMARY KEY (tenant_id, subscription_id, seq),
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES subscriptions (tenant_id, subscription_id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, invoice_id)
);
CREATE INDEX pending_lines_open ON pending_lines (tenant_id, subscription_id) WHERE invoice_id IS NULL;
