-- The minimal durable SQL for one usage event, in one transaction: append the raw event and
-- bump the per-period counter. Tables: see the setup in bench/run.sh (database pgbench_usage).
-- :customers is passed with `pgbench -D customers=N`.
\set c random(0, :customers - 1)
BEGIN;
INSERT INTO usage_events (tenant_id, event_id, customer_id, feature_key, quantity, occurred_at)
  VALUES ('t_bench', gen_random_uuid()::text, 'c' || :c, 'calls', 1, now());
INSERT INTO usage_counters (tenant_id, customer_id, feature_key, period_start, used)
  VALUES ('t_bench', 'c' || :c, 'calls', date_trunc('month', now()), 1)
  ON CONFLICT (tenant_id, customer_id, feature_key, period_start)
  DO UPDATE SET used = usage_counters.used + 1;
END;
