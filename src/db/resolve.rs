//! The resolve query: in one statement, a caller's key (when the hot path defers it here),
//! the tenant, the customer, its live subscription, the tenant's default plan and, for a
//! check, the feature's newest counter. One form for one lookup, one for a batch of them
//! (`check_batch`), and one for many customers of an authenticated tenant (usage batches).

use crate::domain::id::TenantId;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

/// One lookup of a batch.
pub struct Lookup {
    pub tenant_id: TenantId,
    /// Empty when the caller is already authenticated.
    pub key_hash: Vec<u8>,
    /// `key_hash` is a customer session's: it is checked against `customer_sessions`, and the
    /// customer is the session's (`customer` is ignored).
    pub session: bool,
    pub customer: String,
    pub feature: String,
}

/// What a usage event was resolved against, checked by the statement that records it
/// (migration 20261130000002): the key whose row is checked (`None`: the caller was
/// authenticated otherwise), and the tenant's and the customer's stamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamps {
    pub key_hash: Option<Vec<u8>>,
    pub tenant: String,
    pub customer: String,
}

/// One row of the resolve query.
#[derive(Clone)]
pub struct ResolveRow {
    pub tenant_id: TenantId,
    pub mode: String,
    pub default_plan: Option<String>,
    pub warning_threshold: Decimal,
    pub critical_threshold: Decimal,
    pub test_clock_now: Option<DateTime<Utc>>,
    pub key_id: Option<String>,
    pub customer_id: Option<String>,
    pub plan_key: Option<String>,
    pub plan_version: Option<i32>,
    /// The subscription's attached add-ons as text (`None`: none attached).
    pub addons: Option<String>,
    pub interval: Option<String>,
    pub billing_anchor: Option<DateTime<Utc>>,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub default_version: Option<i32>,
    pub counter_start: Option<DateTime<Utc>>,
    pub counter_used: Option<Decimal>,
    /// `tollgate_tenant_stamp` and `tollgate_customer_stamp` (usage resolves only).
    pub tenant_stamp: Option<String>,
    pub customer_stamp: Option<String>,
}

/// The batched form of the resolve query (every column nullable: the tenant is outer-joined).
struct BatchRow {
    ord: i64,
    tenant_id: Option<TenantId>,
    mode: Option<String>,
    default_plan: Option<String>,
    warning_threshold: Option<Decimal>,
    critical_threshold: Option<Decimal>,
    test_clock_now: Option<DateTime<Utc>>,
    key_id: Option<String>,
    customer_id: Option<String>,
    plan_key: Option<String>,
    plan_version: Option<i32>,
    addons: Option<String>,
    interval: Option<String>,
    billing_anchor: Option<DateTime<Utc>>,
    current_period_start: Option<DateTime<Utc>>,
    current_period_end: Option<DateTime<Utc>>,
    default_version: Option<i32>,
    counter_start: Option<DateTime<Utc>>,
    counter_used: Option<Decimal>,
    tenant_stamp: Option<String>,
    customer_stamp: Option<String>,
}

/// The resolve query with a counter, for many lookups in one statement (see `check_batch`).
/// Returns one entry per lookup, in order; `None` where the tenant does not exist.
///
/// With `route` (on Citus, where the caller passes one tenant's lookups), every table is read
/// for the lookups' tenants only (`tenant_id = ANY(the tenants)`), so that the statement is a
/// router query on the tenant's node. The stamps are written out rather than called
/// (`tollgate_tenant_stamp`, `tollgate_customer_stamp` read tables themselves, which Citus
/// cannot do inside a statement it ships to a node).
pub async fn fetch_batch(
    conn: &mut PgConnection,
    lookups: &[&Lookup],
    now: DateTime<Utc>,
    route: bool,
) -> Result<Vec<Option<ResolveRow>>, sqlx::Error> {
    let tenants: Vec<&str> = lookups.iter().map(|l| l.tenant_id.as_str()).collect();
    // The tenants every table is read for, on Citus (see above); on one PostgreSQL none
    // (NULL), so that the generic plan there keeps its probes by each lookup's tenant alone
    // (measured: with the redundant condition, checks fell from 23.8k/s to 15.6k/s).
    let scope: Option<Vec<&str>> = route.then(|| {
        let mut distinct = tenants.clone();
        distinct.sort_unstable();
        distinct.dedup();
        distinct
    });
    let hashes: Vec<&[u8]> = lookups.iter().map(|l| l.key_hash.as_slice()).collect();
    let customers: Vec<&str> = lookups.iter().map(|l| l.customer.as_str()).collect();
    let features: Vec<&str> = lookups.iter().map(|l| l.feature.as_str()).collect();
    let sessions: Vec<bool> = lookups.iter().map(|l| l.session).collect();
    let rows = sqlx::query_as!(
        BatchRow,
        // The caller (tenant, key or session, default plan) is resolved once per distinct
        // caller in the batch (most batches have one or two), then every lookup is its own
        // LATERAL subquery (OFFSET 0 keeps the planner from flattening it into a hash join),
        // so each is an index probe per row whatever the table statistics say.
        r#"WITH r AS (
           SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $6::bool[])
                  WITH ORDINALITY AS r(tenant_id, key_hash, customer_id, feature_key, is_session, ord)),
       a AS MATERIALIZED (
           SELECT d.tenant_id AS caller_tenant, d.key_hash, d.is_session, t.tenant_id, t.mode,
                  t.default_plan, t.warning_threshold, t.critical_threshold, t.test_clock_now,
                  t.default_version, k.key_id, k.session_customer,
                  -- A usage event's tenant stamp (no feature), checked when it is recorded:
                  -- tollgate_tenant_stamp written out. The key is the one this resolve
                  -- checks, when it checks one.
                  CASE WHEN d.usage AND t.tenant_id IS NOT NULL THEN
                      t.xmin::text
                      || '/' || coalesce((SELECT p.xmin::text FROM plans p
                                          WHERE (p.tenant_id = ANY($7) OR $7 IS NULL) AND p.tenant_id = t.tenant_id
                                            AND p.plan_key = t.default_plan), '')
                      || '/' || CASE WHEN NOT d.is_session THEN coalesce(k.key_xmin, '') ELSE '' END
                  END AS tenant_stamp
           FROM (SELECT r.tenant_id, r.key_hash, r.is_session, bool_or(r.feature_key = '') AS usage
                 FROM r GROUP BY 1, 2, 3) d
           LEFT JOIN LATERAL (
               SELECT t.tenant_id, t.mode, t.default_plan, t.warning_threshold,
                      t.critical_threshold, t.test_clock_now, t.xmin,
                      (SELECT p.latest_version FROM plans p
                        WHERE (p.tenant_id = ANY($7) OR $7 IS NULL) AND p.tenant_id = t.tenant_id
                          AND p.plan_key = t.default_plan) AS default_version
               FROM tenants t WHERE (t.tenant_id = ANY($7) OR $7 IS NULL) AND t.tenant_id = d.tenant_id OFFSET 0) t ON true
           LEFT JOIN LATERAL (
               SELECT k.key_id, NULL::text AS session_customer, k.xmin::text AS key_xmin
               FROM api_keys k
               WHERE NOT d.is_session AND (k.tenant_id = ANY($7) OR $7 IS NULL) AND k.tenant_id = d.tenant_id
                 AND k.key_hash = d.key_hash AND k.revoked_at IS NULL
               UNION ALL
               SELECT s.session_id, s.customer_id, NULL FROM customer_sessions s
               WHERE d.is_session AND (s.tenant_id = ANY($7) OR $7 IS NULL) AND s.tenant_id = d.tenant_id
                 AND s.token_hash = d.key_hash
                 AND s.revoked_at IS NULL AND s.expires_at > $5
                 -- An erased customer's sessions end with it.
                 AND EXISTS (SELECT 1 FROM customers e
                             WHERE (e.tenant_id = ANY($7) OR $7 IS NULL) AND e.tenant_id = s.tenant_id
                               AND e.customer_id = s.customer_id AND e.deleted_at IS NULL)
               LIMIT 1) k ON true)
       SELECT r.ord AS "ord!", a.tenant_id AS "tenant_id?: TenantId", a.mode AS "mode?",
              a.default_plan, a.warning_threshold AS "warning_threshold?",
              a.critical_threshold AS "critical_threshold?", a.test_clock_now,
              a.key_id AS "key_id?",
              c.customer_id AS "customer_id?", s.plan_key AS "plan_key?",
              s.plan_version AS "plan_version?", s.addons AS "addons?", s.interval AS "interval?",
              s.billing_anchor AS "billing_anchor?",
              s.current_period_start AS "current_period_start?",
              s.current_period_end AS "current_period_end?",
              a.default_version AS "default_version?",
              u.period_start AS "counter_start?", u.used AS "counter_used?",
              -- A usage event's stamps, checked when it is recorded (the customer's is
              -- tollgate_customer_stamp written out).
              CASE WHEN r.feature_key = '' AND c.customer_id IS NOT NULL THEN a.tenant_stamp
              END AS tenant_stamp,
              CASE WHEN r.feature_key = '' AND c.customer_id IS NOT NULL THEN
                  c.xmin::text || '/' || coalesce(s.xmin::text, '')
              END AS customer_stamp
       FROM r
       JOIN a ON a.caller_tenant = r.tenant_id AND a.key_hash = r.key_hash
             AND a.is_session = r.is_session
       LEFT JOIN LATERAL (
           SELECT c.customer_id, c.xmin FROM customers c
           WHERE (c.tenant_id = ANY($7) OR $7 IS NULL) AND c.tenant_id = r.tenant_id
             AND c.customer_id = CASE WHEN r.is_session THEN a.session_customer
                                      ELSE r.customer_id END
             AND c.deleted_at IS NULL OFFSET 0) c ON true
       LEFT JOIN LATERAL (
           SELECT s.plan_key, s.plan_version, s.interval, s.billing_anchor,
                  CASE WHEN s.addons <> '[]' THEN s.addons::text END AS addons,
                  s.current_period_start, s.current_period_end, s.xmin
           FROM subscriptions s
           WHERE (s.tenant_id = ANY($7) OR $7 IS NULL) AND s.tenant_id = r.tenant_id
             AND s.customer_id = c.customer_id
             AND s.status IN ('trialing', 'active', 'past_due') OFFSET 0) s ON true
       LEFT JOIN LATERAL (
           -- No feature (a usage event's resolve): no counter, and no probe for one.
           SELECT x.period_start, x.used FROM usage_counters x
           WHERE r.feature_key <> ''
             AND (x.tenant_id = ANY($7) OR $7 IS NULL) AND x.tenant_id = r.tenant_id
             AND x.customer_id = c.customer_id
             AND x.feature_key = r.feature_key
             AND x.period_start <= COALESCE(a.test_clock_now, $5)
           ORDER BY x.period_start DESC LIMIT 1) u ON true"#,
        &tenants as &[&str],
        &hashes as &[&[u8]],
        &customers as &[&str],
        &features as &[&str],
        now,
        &sessions as &[bool],
        scope.as_deref() as Option<&[&str]>
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(in_order(rows, lookups.len()))
}

/// The resolve query for many customers of one tenant whose caller is already authenticated
/// (a usage batch): the tenant and its default plan once, then per customer the customer and
/// its live subscription; no key and no counter. One entry per customer, in order; `None`
/// where the tenant does not exist.
pub async fn fetch_customers(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customers: &[&str],
) -> Result<Vec<Option<ResolveRow>>, sqlx::Error> {
    let rows = sqlx::query_as!(
        BatchRow,
        r#"WITH t AS MATERIALIZED (
           SELECT t.tenant_id, t.mode, t.default_plan, t.warning_threshold,
                  t.critical_threshold, t.test_clock_now, p.latest_version AS default_version,
                  t.xmin::text || '/' || coalesce(p.xmin::text, '') || '/' AS stamp
           FROM tenants t
           LEFT JOIN plans p ON p.tenant_id = $1 AND p.plan_key = t.default_plan
           WHERE t.tenant_id = $1)
       SELECT r.ord AS "ord!", t.tenant_id AS "tenant_id?: TenantId", t.mode AS "mode?",
              t.default_plan, t.warning_threshold AS "warning_threshold?",
              t.critical_threshold AS "critical_threshold?", t.test_clock_now,
              NULL::text AS "key_id?",
              c.customer_id AS "customer_id?", s.plan_key AS "plan_key?",
              s.plan_version AS "plan_version?", s.addons AS "addons?", s.interval AS "interval?",
              s.billing_anchor AS "billing_anchor?",
              s.current_period_start AS "current_period_start?",
              s.current_period_end AS "current_period_end?",
              t.default_version AS "default_version?",
              NULL::timestamptz AS "counter_start?", NULL::numeric AS "counter_used?",
              -- The stamps (tollgate_tenant_stamp with no key, and
              -- tollgate_customer_stamp, written out).
              t.stamp AS tenant_stamp,
              CASE WHEN c.customer_id IS NOT NULL THEN
                  c.xmin::text || '/' || coalesce(s.xmin::text, '')
              END AS customer_stamp
       FROM unnest($2::text[]) WITH ORDINALITY AS r(customer_id, ord)
       CROSS JOIN t
       LEFT JOIN LATERAL (
           SELECT c.customer_id, c.xmin FROM customers c
           WHERE c.tenant_id = $1 AND c.customer_id = r.customer_id
             AND c.deleted_at IS NULL OFFSET 0) c ON true
       LEFT JOIN LATERAL (
           SELECT s.plan_key, s.plan_version, s.interval, s.billing_anchor,
                  CASE WHEN s.addons <> '[]' THEN s.addons::text END AS addons,
                  s.current_period_start, s.current_period_end, s.xmin
           FROM subscriptions s
           WHERE s.tenant_id = $1 AND s.customer_id = c.customer_id
             AND s.status IN ('trialing', 'active', 'past_due') OFFSET 0) s ON true"#,
        tenant_id.as_str(),
        customers as &[&str]
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(in_order(rows, customers.len()))
}

/// The rows of a batched resolve, one entry per lookup in order (`None` where the tenant does
/// not exist).
fn in_order(rows: Vec<BatchRow>, n: usize) -> Vec<Option<ResolveRow>> {
    let mut out: Vec<Option<ResolveRow>> = Vec::with_capacity(n);
    out.resize_with(n, || None);
    for r in rows {
        let Some(slot) = usize::try_from(r.ord - 1).ok().and_then(|i| out.get_mut(i)) else {
            continue;
        };
        let (Some(tenant_id), Some(mode), Some(warning), Some(critical)) = (
            r.tenant_id,
            r.mode,
            r.warning_threshold,
            r.critical_threshold,
        ) else {
            continue;
        };
        *slot = Some(ResolveRow {
            tenant_id,
            mode,
            default_plan: r.default_plan,
            warning_threshold: warning,
            critical_threshold: critical,
            test_clock_now: r.test_clock_now,
            key_id: r.key_id,
            customer_id: r.customer_id,
            plan_key: r.plan_key,
            plan_version: r.plan_version,
            addons: r.addons,
            interval: r.interval,
            billing_anchor: r.billing_anchor,
            current_period_start: r.current_period_start,
            current_period_end: r.current_period_end,
            default_version: r.default_version,
            counter_start: r.counter_start,
            counter_used: r.counter_used,
            tenant_stamp: r.tenant_stamp,
            customer_stamp: r.customer_stamp,
        });
    }
    out
}

/// The resolve query for one lookup (every table named by the tenant, so that on Citus it
/// is routed to the tenant's node); `feature` adds its newest counter that starts no later
/// than `now` (checks), which writers do not need (under concurrent writes the counter lookup
/// costs more). `None`: no such tenant.
pub async fn fetch(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key_hash: &[u8],
    customer_id: &str,
    feature: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<ResolveRow>, sqlx::Error> {
    match feature {
        Some(feature) => {
            sqlx::query_as!(
                ResolveRow,
                r#"SELECT t.tenant_id AS "tenant_id: TenantId", t.mode, t.default_plan, t.warning_threshold,
                      t.critical_threshold, t.test_clock_now, k.key_id AS "key_id?",
                      c.customer_id AS "customer_id?", s.plan_key AS "plan_key?",
                      s.plan_version AS "plan_version?",
                      CASE WHEN s.addons <> '[]' THEN s.addons::text END AS "addons?",
                      s.interval AS "interval?",
                      s.billing_anchor AS "billing_anchor?",
                      s.current_period_start AS "current_period_start?",
                      s.current_period_end AS "current_period_end?",
                      (SELECT p.latest_version FROM plans p
                        WHERE p.tenant_id = $1 AND p.plan_key = t.default_plan) AS default_version,
                      u.period_start AS "counter_start?", u.used AS "counter_used?",
                      NULL::text AS "tenant_stamp?", NULL::text AS "customer_stamp?"
               FROM tenants t
               LEFT JOIN api_keys k
                 ON k.tenant_id = $1 AND k.key_hash = $2 AND k.revoked_at IS NULL
               LEFT JOIN customers c
                 ON c.tenant_id = $1 AND c.customer_id = $3 AND c.deleted_at IS NULL
               LEFT JOIN subscriptions s
                 ON s.tenant_id = $1 AND s.customer_id = c.customer_id
                AND s.status IN ('trialing', 'active', 'past_due')
               LEFT JOIN LATERAL (
                   SELECT x.period_start, x.used FROM usage_counters x
                   WHERE x.tenant_id = $1 AND x.customer_id = c.customer_id
                     AND x.feature_key = $4 AND x.period_start <= COALESCE(t.test_clock_now, $5)
                   ORDER BY x.period_start DESC LIMIT 1) u ON true
               WHERE t.tenant_id = $1"#,
                tenant_id.as_str(),
                key_hash,
                customer_id,
                feature,
                now
            )
            .fetch_optional(&mut *conn)
            .await
        }
        None => {
            sqlx::query_as!(
                ResolveRow,
                r#"SELECT t.tenant_id AS "tenant_id: TenantId", t.mode, t.default_plan, t.warning_threshold,
                      t.critical_threshold, t.test_clock_now, k.key_id AS "key_id?",
                      c.customer_id AS "customer_id?", s.plan_key AS "plan_key?",
                      s.plan_version AS "plan_version?",
                      CASE WHEN s.addons <> '[]' THEN s.addons::text END AS "addons?",
                      s.interval AS "interval?",
                      s.billing_anchor AS "billing_anchor?",
                      s.current_period_start AS "current_period_start?",
                      s.current_period_end AS "current_period_end?",
                      (SELECT p.latest_version FROM plans p
                        WHERE p.tenant_id = $1 AND p.plan_key = t.default_plan) AS default_version,
                      NULL::timestamptz AS "counter_start?", NULL::numeric AS "counter_used?",
                      NULL::text AS "tenant_stamp?", NULL::text AS "customer_stamp?"
               FROM tenants t
               LEFT JOIN api_keys k
                 ON k.tenant_id = $1 AND k.key_hash = $2 AND k.revoked_at IS NULL
               LEFT JOIN customers c
                 ON c.tenant_id = $1 AND c.customer_id = $3 AND c.deleted_at IS NULL
               LEFT JOIN subscriptions s
                 ON s.tenant_id = $1 AND s.customer_id = c.customer_id
                AND s.status IN ('trialing', 'active', 'past_due')
               WHERE t.tenant_id = $1"#,
                tenant_id.as_str(),
                key_hash,
                customer_id
            )
            .fetch_optional(&mut *conn)
            .await
        }
    }
}
