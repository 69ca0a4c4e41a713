//! `tenants`: the tenant row, its settings and its test clock.

use crate::domain::id::TenantId;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

/// A tenant with the key that authenticated it.
pub struct TenantKeyRow {
    pub tenant_id: TenantId,
    pub mode: String,
    pub key_id: String,
    pub default_plan: Option<String>,
    pub warning_threshold: Decimal,
    pub critical_threshold: Decimal,
    pub test_clock_now: Option<DateTime<Utc>>,
}

/// The tenant a live (unrevoked) key belongs to.
pub async fn by_key(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    hash: &[u8],
) -> Result<Option<TenantKeyRow>, sqlx::Error> {
    sqlx::query_as!(
        TenantKeyRow,
        r#"SELECT t.tenant_id AS "tenant_id: TenantId", t.mode, k.key_id, t.default_plan, t.warning_threshold,
                  t.critical_threshold, t.test_clock_now
           FROM api_keys k JOIN tenants t ON t.tenant_id = $1
           WHERE k.tenant_id = $1 AND k.key_hash = $2 AND k.revoked_at IS NULL"#,
        tenant_id.as_str(),
        hash
    )
    .fetch_optional(&mut *conn)
    .await
}

pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    name: &str,
    mode: &str,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO tenants (tenant_id, name, mode) VALUES ($1, $2, $3) RETURNING created_at",
        tenant_id.as_str(),
        name,
        mode
    )
    .fetch_one(&mut *conn)
    .await
}

pub async fn mode(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT mode FROM tenants WHERE tenant_id = $1",
        tenant_id.as_str()
    )
    .fetch_optional(&mut *conn)
    .await
}

/// The tenant's settings as `GET /v1/tenant` shows them (secrets only as "set or not").
pub struct SettingsRow {
    pub tenant_id: TenantId,
    pub name: String,
    pub mode: String,
    pub default_plan: Option<String>,
    pub warning_threshold: Decimal,
    pub critical_threshold: Decimal,
    pub invoice_grace_minutes: i32,
    pub dunning_retry_days: Vec<i32>,
    pub sk: bool,
    pub whs: bool,
    pub stripe_api_base: Option<String>,
    pub portal_name: Option<String>,
    pub portal_accent_color: Option<String>,
    pub portal_return_url: Option<String>,
    pub cors_origins: Vec<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn settings(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<Option<SettingsRow>, sqlx::Error> {
    sqlx::query_as!(
        SettingsRow,
        "SELECT tenant_id AS \"tenant_id: TenantId\", name, mode, default_plan, warning_threshold, critical_threshold,
                invoice_grace_minutes, dunning_retry_days, stripe_secret_key IS NOT NULL AS \"sk!\",
                stripe_webhook_secret IS NOT NULL AS \"whs!\", stripe_api_base,
                portal_name, portal_accent_color, portal_return_url, cors_origins, created_at
         FROM tenants WHERE tenant_id = $1",
        tenant_id.as_str()
    )
    .fetch_optional(&mut *conn)
    .await
}

pub async fn set_default_plan(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    default_plan: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET default_plan = $2, updated_at = now() WHERE tenant_id = $1",
        tenant_id.as_str(),
        default_plan
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

pub async fn set_thresholds(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    warning: Decimal,
    critical: Decimal,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET warning_threshold = $2, critical_threshold = $3, updated_at = now()
             WHERE tenant_id = $1",
        tenant_id.as_str(),
        warning,
        critical
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

pub async fn set_invoice_grace(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    minutes: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET invoice_grace_minutes = $2, updated_at = now() WHERE tenant_id = $1",
        tenant_id.as_str(),
        minutes
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

pub async fn set_dunning_retry_days(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    days: &[i32],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET dunning_retry_days = $2, updated_at = now() WHERE tenant_id = $1",
        tenant_id.as_str(),
        days
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// Sets the Stripe connection; `None` keeps a value as it is.
pub async fn set_stripe(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    secret_key: Option<&str>,
    webhook_secret: Option<&str>,
    api_base: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET
                 stripe_secret_key = COALESCE($2, stripe_secret_key),
                 stripe_webhook_secret = COALESCE($3, stripe_webhook_secret),
                 stripe_api_base = COALESCE($4, stripe_api_base),
                 updated_at = now()
             WHERE tenant_id = $1",
        tenant_id.as_str(),
        secret_key,
        webhook_secret,
        api_base
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// The portal's branding; `None` keeps a value as it is, `Some(None)` clears it.
pub async fn set_portal(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    name: Option<Option<&str>>,
    accent_color: Option<Option<&str>>,
    return_url: Option<Option<&str>>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET
                 portal_name = CASE WHEN $2 THEN $3 ELSE portal_name END,
                 portal_accent_color = CASE WHEN $4 THEN $5 ELSE portal_accent_color END,
                 portal_return_url = CASE WHEN $6 THEN $7 ELSE portal_return_url END,
                 updated_at = now()
             WHERE tenant_id = $1",
        tenant_id.as_str(),
        name.is_some(),
        name.flatten(),
        accent_color.is_some(),
        accent_color.flatten(),
        return_url.is_some(),
        return_url.flatten()
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// Sets the origins the tenant's customer sessions may be used from (empty: any).
pub async fn set_cors_origins(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    origins: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET cors_origins = $2, updated_at = now() WHERE tenant_id = $1",
        tenant_id.as_str(),
        origins
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// The origins the tenant's customer sessions may be used from (empty: any); `None`: no
/// such tenant.
pub async fn cors_origins(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT cors_origins FROM tenants WHERE tenant_id = $1",
        tenant_id.as_str()
    )
    .fetch_optional(&mut *conn)
    .await
}

/// The settings a plan file may carry; `None` keeps a value as it is.
pub async fn apply_settings(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    warning: Option<Decimal>,
    critical: Option<Decimal>,
    invoice_grace_minutes: Option<i32>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET warning_threshold = COALESCE($2, warning_threshold),
                 critical_threshold = COALESCE($3, critical_threshold),
                 invoice_grace_minutes = COALESCE($4, invoice_grace_minutes), updated_at = now()
             WHERE tenant_id = $1",
        tenant_id.as_str(),
        warning,
        critical,
        invoice_grace_minutes
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// How long a renewal invoice stays a draft before it is finalized.
pub async fn invoice_grace_minutes(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT invoice_grace_minutes FROM tenants WHERE tenant_id = $1",
        tenant_id.as_str()
    )
    .fetch_one(&mut *conn)
    .await
}

/// What a Stripe webhook needs of its tenant: the signing secret and the clock.
pub struct StripeWebhookRow {
    pub stripe_webhook_secret: Option<String>,
    pub test_clock_now: Option<DateTime<Utc>>,
}

pub async fn stripe_webhook(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<Option<StripeWebhookRow>, sqlx::Error> {
    sqlx::query_as!(
        StripeWebhookRow,
        "SELECT stripe_webhook_secret, test_clock_now FROM tenants WHERE tenant_id = $1",
        tenant_id.as_str()
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Holds the tenant's test-clock lock until the transaction ends (one advance at a time).
pub async fn lock_test_clock(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('tollgate.test_clock.' || $1, 0))",
        tenant_id.as_str()
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// The tenant's test clock (`None`: it follows real time).
pub async fn test_clock(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT test_clock_now FROM tenants WHERE tenant_id = $1",
        tenant_id.as_str()
    )
    .fetch_one(&mut *conn)
    .await
}

/// Freezes a real-time tenant's clock at `now` (no-op when already frozen).
pub async fn freeze_test_clock(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET test_clock_now = $2 WHERE tenant_id = $1 AND test_clock_now IS NULL",
        tenant_id.as_str(),
        now
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

pub async fn set_test_clock(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    to: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET test_clock_now = $2, updated_at = now() WHERE tenant_id = $1",
        tenant_id.as_str(),
        to
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// The tenant's dunning schedule and invoice grace period.
pub struct DunningSettings {
    pub dunning_retry_days: Vec<i32>,
    pub invoice_grace_minutes: i32,
}

pub async fn dunning_settings(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<DunningSettings, sqlx::Error> {
    sqlx::query_as!(
        DunningSettings,
        "SELECT dunning_retry_days, invoice_grace_minutes FROM tenants WHERE tenant_id = $1",
        tenant_id.as_str()
    )
    .fetch_one(&mut *conn)
    .await
}
