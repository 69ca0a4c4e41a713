-- Every change of a subscription's plan, interval or status, as it stands from `at` (business
-- time: the tenant's test clock when frozen). With seat_changes, the history MRR and churn are
-- computed from. Written in the transaction of the change; never updated.
CREATE TABLE subscription_history (
    tenant_id       text        NOT NULL,
    subscription_id text        NOT NULL,
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    customer_id     text        NOT NULL,
    event           text        NOT NULL
        CHECK (event IN ('created', 'renewed', 'plan_changed', 'status_changed', 'ended')),
    plan_key        text        NOT NULL,
    plan_version    integer     NOT NULL,
    interval        text        NOT NULL,
    status          text        NOT NULL,
    at              timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id, seq),
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES subscriptions (tenant_id, subscription_id)
);

-- Subscriptions from before the history: their state as it stands, from their creation (the
-- changes before today are not known).
INSERT INTO subscription_history
    (tenant_id, subscription_id, customer_id, event, plan_key, plan_version, interval, status, at)
SELECT tenant_id, subscription_id, customer_id, 'created', plan_key, plan_version, interval,
       status, created_at
FROM subscriptions;
