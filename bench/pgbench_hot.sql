-- The hot counter baseline: one counter row that every client bumps, one transaction per
-- event (what one-commit-per-event does to a counter many writers share). Tables: see the
-- setup in bench/run.sh (database pgbench_usage).
INSERT INTO usage_counters (tenant_id, customer_id, feature_key, period_start, used)
  VALUES ('t_bench', 'hot', 'hot', date_trunc('month', now()), 1)
  ON CONFLICT (tenant_id, customer_id, feature_key, period_start)
  DO UPDATE SET used = usage_counters.used + 1;
