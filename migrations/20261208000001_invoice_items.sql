-- One-off charges (SPEC §15): `invoice_items`, pending until the customer's next invoice of
-- any kind (or invoiced at once), where each becomes a `charge` line.

-- In a DO block: Citus ships an ADD CONSTRAINT on a distributed table to the shards as the
-- statement's own query text, which in a migration file is the whole file (refused:
-- "cannot insert multiple commands into a prepared statement"); under EXECUTE the text is
-- the one statement (docs/DEVELOPING.md).
DO $$
BEGIN
    EXECUTE 'ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_type_check';
    EXECUTE $ddl$ALTER TABLE invoice_lines ADD CONSTRAINT invoice_lines_type_check
        CHECK (type IN ('subscription', 'proration', 'overage', 'seat', 'addon', 'charge',
                        'discount'))$ddl$;
END;
$$;

CREATE TABLE invoice_items (
    tenant_id   text        NOT NULL,
    item_id     text        NOT NULL,
    customer_id text        NOT NULL,
    description text        NOT NULL,
    unit_amount numeric     NOT NULL CHECK (unit_amount > 0),
    quantity    numeric     NOT NULL CHECK (quantity > 0),
    -- unit_amount × quantity, rounded once to the currency's minor unit.
    amount      numeric     NOT NULL,
    currency    text        NOT NULL,
    -- The invoice that carries it (NULL: pending), and its line there.
    invoice_id  text,
    line_no     integer,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, item_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, customer_id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, invoice_id),
    CHECK ((invoice_id IS NULL) = (line_no IS NULL))
);

-- A customer's items, newest first, and its pending ones (claimed by its next invoice).
CREATE INDEX invoice_items_customer ON invoice_items (tenant_id, customer_id, created_at DESC, item_id DESC);
CREATE INDEX invoice_items_pending ON invoice_items (tenant_id, customer_id) WHERE invoice_id IS NULL;

SELECT tollgate_distribute('invoice_items');
