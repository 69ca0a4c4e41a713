-- Credit (docs/API-DESIGN.md, "Credit"): what a customer is owed back. The balance changes
-- only together with a balance_transactions row in one statement, so it always equals the sum
-- of its transactions.

ALTER TABLE customers
    ADD COLUMN credit_balance numeric NOT NULL DEFAULT 0 CHECK (credit_balance >= 0);

ALTER TABLE invoices
    -- Credit balance used at finalization.
    ADD COLUMN credit_applied numeric NOT NULL DEFAULT 0 CHECK (credit_applied >= 0),
    -- Every credit note of the invoice.
    ADD COLUMN credit_notes_total numeric NOT NULL DEFAULT 0 CHECK (credit_notes_total >= 0),
    -- What the customer paid (the amount due when it was paid).
    ADD COLUMN amount_paid numeric NOT NULL DEFAULT 0 CHECK (amount_paid >= 0),
    -- The part of credit_notes_total issued after payment (it went to the balance).
    ADD COLUMN credited_after_payment numeric NOT NULL DEFAULT 0
        CHECK (credited_after_payment >= 0 AND credited_after_payment <= amount_paid);

CREATE TABLE credit_notes (
    tenant_id      text        NOT NULL,
    credit_note_id text        NOT NULL,
    invoice_id     text        NOT NULL,
    amount         numeric     NOT NULL CHECK (amount > 0),
    reason         text        NOT NULL CHECK (reason IN ('duplicate', 'fraudulent', 'order_change',
                                                          'product_unsatisfactory', 'other')),
    description    text,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, credit_note_id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, invoice_id)
);
CREATE INDEX credit_notes_invoice ON credit_notes (tenant_id, invoice_id);

CREATE TABLE balance_transactions (
    tenant_id      text        NOT NULL,
    transaction_id text        NOT NULL,
    customer_id    text        NOT NULL,
    -- Positive adds credit, negative uses it.
    amount         numeric     NOT NULL CHECK (amount <> 0),
    type           text        NOT NULL CHECK (type IN ('downgrade', 'manual', 'credit_note', 'applied')),
    invoice_id     text,
    credit_note_id text,
    description    text,
    -- The balance after this transaction.
    balance_after  numeric     NOT NULL CHECK (balance_after >= 0),
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, transaction_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, customer_id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, invoice_id),
    FOREIGN KEY (tenant_id, credit_note_id) REFERENCES credit_notes (tenant_id, credit_note_id)
);
CREATE INDEX balance_transactions_customer
    ON balance_transactions (tenant_id, customer_id, transaction_id);
