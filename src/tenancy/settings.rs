//! The tenant's own settings (`GET`/`PATCH /v1/tenant`) and its API keys.

use crate::ids::{ApiKeyId, TenantId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use crate::audit::{self, Change, Origin, Resource};
use crate::db;
use crate::domain::qty::Qty;
use crate::error::{Error, Result};
use crate::secrets::{Place, Secrets};

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WarningThresholds {
    pub warning: Qty,
    pub critical: Qty,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StripeSettings {
    /// Whether a secret key is set (the key itself is write-only).
    pub secret_key_set: bool,
    pub webhook_secret_set: bool,
    pub api_base: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub mode: String,
    pub default_plan: Option<String>,
    pub warning_thresholds: WarningThresholds,
    pub invoice_grace_minutes: i32,
    /// Dunning: payment retries, in days after the first failed payment.
    pub dunning_retry_days: Vec<i32>,
    pub stripe: StripeSettings,
    pub portal: PortalSettings,
    /// The origins its customer sessions may be used from in a browser (SPEC §9); empty: any.
    #[schema(example = json!(["https://app.example.com"]))]
    pub cors_origins: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// The hosted portal's branding.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalSettings {
    /// Shown as the portal's title (default: the tenant's name).
    pub name: Option<String>,
    /// `#RRGGBB`.
    #[schema(example = "#4F46E5")]
    pub accent_color: Option<String>,
    /// Where the portal's "back" link goes (http or https).
    pub return_url: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalPatch {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// `#RRGGBB`; other colour forms are refused.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, example = "#4F46E5")]
    pub accent_color: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub return_url: Option<Option<String>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StripePatch {
    pub secret_key: Option<String>,
    pub webhook_secret: Option<String>,
    pub api_base: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    /// A plan key, or null to remove the default.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub default_plan: Option<Option<String>>,
    pub warning_thresholds: Option<WarningThresholds>,
    pub invoice_grace_minutes: Option<i32>,
    /// Payment retries after a failed payment, in days after the first failure: increasing,
    /// 1 to 60, at most 10 (default `[1, 3, 5]`; `[]`: no retries).
    pub dunning_retry_days: Option<Vec<i32>>,
    pub stripe: Option<StripePatch>,
    /// The hosted portal's branding; a field set to null goes back to the default.
    pub portal: Option<PortalPatch>,
    /// The origins the tenant's customer sessions may be used from in a browser: at most 20
    /// serialized origins (`scheme://host[:port]`, no path, no `*`); `[]`: any.
    pub cors_origins: Option<Vec<String>>,
}

/// Tells an explicit `null` (Some(None)) from an absent field (None).
pub fn double_option<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

pub async fn get(db: &PgPool, tenant_id: &TenantId) -> Result<Tenant> {
    let mut conn = db.acquire().await?;
    read(&mut conn, tenant_id).await
}

/// The tenant as the API shows it (secrets only as "set"), read on `conn`.
pub async fn read(conn: &mut PgConnection, tenant_id: &TenantId) -> Result<Tenant> {
    let r = db::tenants::settings(conn, tenant_id)
        .await?
        .ok_or_else(Error::no_such::<TenantId>)?;
    Ok(Tenant {
        id: r.tenant_id.into_string(),
        name: r.name,
        mode: r.mode,
        default_plan: r.default_plan,
        warning_thresholds: WarningThresholds {
            warning: Qty(r.warning_threshold.normalize()),
            critical: Qty(r.critical_threshold.normalize()),
        },
        invoice_grace_minutes: r.invoice_grace_minutes,
        dunning_retry_days: r.dunning_retry_days,
        stripe: StripeSettings {
            secret_key_set: r.sk,
            webhook_secret_set: r.whs,
            api_base: r.stripe_api_base,
        },
        portal: PortalSettings {
            name: r.portal_name,
            accent_color: r.portal_accent_color,
            return_url: r.portal_return_url,
        },
        cors_origins: r.cors_origins,
        created_at: r.created_at,
    })
}

/// Applies a patch in one transaction: all of it, or (on any invalid part) none of it. The
/// Stripe secrets are stored sealed under `secrets`' key (with none, a patch that sets one is
/// `409 secrets_key_missing`).
pub async fn patch(
    db: &PgPool,
    (origin, secrets): (&Origin, &Secrets),
    tenant_id: &TenantId,
    patch: &TenantPatch,
    now: DateTime<Utc>,
) -> Result<Tenant> {
    let stripe = patch.stripe.as_ref();
    let secret_key = stripe
        .and_then(|s| s.secret_key.as_deref())
        .map(|k| secrets.seal(tenant_id, Place::StripeSecretKey, k))
        .transpose()?;
    let webhook_secret = stripe
        .and_then(|s| s.webhook_secret.as_deref())
        .map(|k| secrets.seal(tenant_id, Place::StripeWebhookSecret, k))
        .transpose()?;
    let mut tx = audit::begin(db, origin).await?;
    let before = read(&mut tx, tenant_id).await?;
    if let Some(default_plan) = &patch.default_plan {
        if let Some(key) = default_plan {
            if !db::plans::exists(&mut tx, tenant_id, key).await? {
                return Err(Error::invalid_param(
                    "plan_not_found",
                    "default_plan",
                    format!("No plan with key `{key}`."),
                ));
            }
        }
        db::tenants::set_default_plan(&mut tx, tenant_id, default_plan.as_deref()).await?;
    }
    if let Some(t) = &patch.warning_thresholds {
        let (warning, critical) = (t.warning.0, t.critical.0);
        let ok = warning > Decimal::ZERO && warning <= critical && critical <= Decimal::ONE;
        if !ok {
            return Err(Error::invalid_param(
                "invalid_thresholds",
                "warning_thresholds",
                "Thresholds must satisfy 0 < warning <= critical <= 1.",
            ));
        }
        db::tenants::set_thresholds(&mut tx, tenant_id, warning, critical).await?;
    }
    if let Some(minutes) = patch.invoice_grace_minutes {
        if !(0..=60 * 24 * 30).contains(&minutes) {
            return Err(Error::invalid_param(
                "invalid_grace",
                "invoice_grace_minutes",
                "invoice_grace_minutes must be between 0 and 43200.",
            ));
        }
        db::tenants::set_invoice_grace(&mut tx, tenant_id, minutes).await?;
    }
    if let Some(days) = &patch.dunning_retry_days {
        let increasing = days.windows(2).all(|w| w[0] < w[1]);
        if days.len() > 10 || !increasing || days.iter().any(|d| !(1..=60).contains(d)) {
            return Err(Error::invalid_param(
                "invalid_dunning_schedule",
                "dunning_retry_days",
                "dunning_retry_days must be at most 10 increasing whole days between 1 and 60.",
            ));
        }
        db::tenants::set_dunning_retry_days(&mut tx, tenant_id, days).await?;
    }
    if let Some(stripe) = &patch.stripe {
        if let Some(base) = &stripe.api_base {
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(Error::invalid_param(
                    "invalid_url",
                    "stripe.api_base",
                    "stripe.api_base must be an http(s) URL.",
                ));
            }
        }
        db::tenants::set_stripe(
            &mut tx,
            tenant_id,
            secret_key.as_deref(),
            webhook_secret.as_deref(),
            stripe.api_base.as_deref(),
        )
        .await?;
    }
    if let Some(portal) = &patch.portal {
        check_portal(portal)?;
        db::tenants::set_portal(
            &mut tx,
            tenant_id,
            portal.name.as_ref().map(Option::as_deref),
            portal.accent_color.as_ref().map(Option::as_deref),
            portal.return_url.as_ref().map(Option::as_deref),
        )
        .await?;
    }
    if let Some(origins) = &patch.cors_origins {
        let origins = check_origins(origins)?;
        db::tenants::set_cors_origins(&mut tx, tenant_id, &origins).await?;
    }
    let after = read(&mut tx, tenant_id).await?;
    let change = Change::new(Resource::Tenant(tenant_id), "updated")
        .before(&before)
        .after(&after);
    audit::record(&mut tx, tenant_id, change, now).await?;
    tx.commit().await?;
    Ok(after)
}

/// The most origins a tenant may list.
const MAX_ORIGINS: usize = 20;

/// Validates `cors_origins` and returns them as browsers send them in `Origin` (lower case,
/// without a default port), without repeats.
fn check_origins(origins: &[String]) -> Result<Vec<String>> {
    if origins.len() > MAX_ORIGINS {
        return Err(Error::invalid_param(
            "invalid_cors_origins",
            "cors_origins",
            format!("cors_origins lists at most {MAX_ORIGINS} origins."),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(origins.len());
    for (i, o) in origins.iter().enumerate() {
        let origin = serialized_origin(o).ok_or_else(|| {
            Error::invalid_param(
                "invalid_cors_origins",
                &format!("cors_origins[{i}]"),
                "Each origin is scheme://host[:port] (http or https), with no path and no `*`.",
            )
        })?;
        if !out.contains(&origin) {
            out.push(origin);
        }
    }
    Ok(out)
}

/// May the tenant's customer sessions be used from a page of `origin` (the request's `Origin`
/// header)? Yes when the tenant lists no origins (or is gone: the session's own check answers
/// that), else only for a listed one.
pub async fn admits_origin(db: &PgPool, tenant_id: &TenantId, origin: &str) -> Result<bool> {
    let mut conn = db.acquire().await?;
    let allowed = db::tenants::cors_origins(&mut conn, tenant_id)
        .await?
        .unwrap_or_default();
    Ok(allowed.is_empty() || serialized_origin(origin).is_some_and(|o| allowed.contains(&o)))
}

/// `o` as a browser serializes an origin (`https://app.example.com`, `http://localhost:5173`),
/// or `None` if it is not one.
pub fn serialized_origin(o: &str) -> Option<String> {
    let lower = o.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://")?;
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let (host, port) = match rest.strip_prefix('[') {
        // An IPv6 literal: [::1] or [::1]:3000.
        Some(v6) => {
            let (inner, after) = v6.split_once(']')?;
            let ok = !inner.is_empty()
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if !ok {
                return None;
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (&rest[..inner.len() + 2], port)
        }
        None => {
            let (host, port) = match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            let ok = !host.is_empty()
                && !host.starts_with('.')
                && !host.ends_with('.')
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return None;
            }
            (host, port)
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return None;
        }
    }
    Some(match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// Whether a colour is `#RRGGBB` (the one form the portal takes).
pub fn is_hex_color(c: &str) -> bool {
    c.len() == 7 && c.starts_with('#') && c[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_portal(p: &PortalPatch) -> Result<()> {
    if let Some(Some(name)) = &p.name {
        if name.trim().is_empty() || name.len() > 100 {
            return Err(Error::invalid_param(
                "invalid_name",
                "portal.name",
                "portal.name must be 1 to 100 characters.",
            ));
        }
    }
    if let Some(Some(color)) = &p.accent_color {
        if !is_hex_color(color) {
            return Err(Error::invalid_param(
                "invalid_color",
                "portal.accent_color",
                "portal.accent_color must be a #RRGGBB colour.",
            ));
        }
    }
    if let Some(Some(url)) = &p.return_url {
        let ok = (url.starts_with("https://") || url.starts_with("http://")) && url.len() <= 2000;
        if !ok {
            return Err(Error::invalid_param(
                "invalid_url",
                "portal.return_url",
                "portal.return_url must be an http(s) URL.",
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    #[schema(value_type = String, example = "key_0192f3a45b6c7d8e9f00112233445566")]
    pub id: ApiKeyId,
    /// The last four characters of the key.
    pub hint: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<db::api_keys::KeyRow> for ApiKey {
    fn from(r: db::api_keys::KeyRow) -> Self {
        ApiKey {
            id: r.id,
            hint: r.hint,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

pub async fn list_keys(db: &PgPool, tenant_id: &TenantId) -> Result<Vec<ApiKey>> {
    let mut conn = db.acquire().await?;
    let rows = db::api_keys::list(&mut conn, tenant_id).await?;
    Ok(rows.into_iter().map(ApiKey::from).collect())
}

pub async fn revoke_key(
    db: &PgPool,
    origin: &Origin,
    tenant_id: &TenantId,
    key_id: &ApiKeyId,
    now: DateTime<Utc>,
) -> Result<ApiKey> {
    let mut tx = audit::begin(db, origin).await?;
    let key = db::api_keys::revoke(&mut tx, tenant_id, key_id, now)
        .await?
        .map(ApiKey::from)
        .ok_or_else(Error::no_such::<ApiKeyId>)?;
    let change = Change::new(Resource::ApiKey(key_id), "revoked").after(&key);
    audit::record(&mut tx, tenant_id, change, now).await?;
    tx.commit().await?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::serialized_origin;

    #[test]
    fn origins_are_serialized_as_browsers_send_them() {
        let ok = [
            ("https://app.example.com", "https://app.example.com"),
            ("HTTPS://App.Example.com:443", "https://app.example.com"),
            ("http://localhost:5173", "http://localhost:5173"),
            ("http://127.0.0.1:80", "http://127.0.0.1"),
            ("http://[::1]:3000", "http://[::1]:3000"),
        ];
        for (input, want) in ok {
            assert_eq!(serialized_origin(input).as_deref(), Some(want), "{input}");
        }
        for bad in [
            "*",
            "https://*.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "ftp://example.com",
            "example.com",
            "https://",
            "https://a.com:99999",
            "https://a.com:",
            "https://a.com?x=1",
        ] {
            assert_eq!(serialized_origin(bad), None, "{bad}");
        }
    }
}
