-- Organisations (docs/API-DESIGN.md, "Organisations and seats"): a customer's members, and
-- the history of its member count, which seat billing and MRR are computed from.

CREATE TABLE customer_members (
    tenant_id   text        NOT NULL,
    customer_id text        NOT NULL,
    -- The tenant's own user id; unique within its customer only (one person may belong to
    -- two organisations).
    member_id   text        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    email       text,
    name        text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, member_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, customer_id)
);

-- Every change of an organisation's member count, in order. Written in the transaction that
-- adds or removes the member, under the customer's row lock, so `seats` (the count after the
-- change) is exact under concurrency. Never updated or deleted.
CREATE TABLE seat_changes (
    tenant_id   text        NOT NULL,
    customer_id text        NOT NULL,
    seq         bigint      GENERATED ALWAYS AS IDENTITY,
    member_id   text        NOT NULL,
    delta       integer     NOT NULL CHECK (delta IN (-1, 1)),
    seats       integer     NOT NULL CHECK (seats >= 0),
    at          timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, seq),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, customer_id)
);
