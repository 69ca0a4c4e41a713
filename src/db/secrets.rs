//! The stored secrets as a whole (`tenants.stripe_secret_key`, `tenants.stripe_webhook_secret`,
//! `webhook_endpoints.secret`), for the start's check and the key's rotation (`secrets::store`).
//! The statements that read one secret to use it are with their tables.

use crate::domain::id::{EndpointId, TenantId};
use sqlx::PgConnection;

/// Which column a stored secret is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    StripeSecretKey,
    StripeWebhookSecret,
    /// `webhook_endpoints.secret` of this endpoint.
    EndpointSecret(EndpointId),
}

/// One stored secret, as stored (sealed, or in clear from before sealing).
#[derive(Debug)]
pub struct Stored {
    pub tenant_id: TenantId,
    pub column: Column,
    pub value: String,
}

/// Every stored secret, of every tenant: statements that span tenants, so `conn` is in a
/// transaction begun by [`super::spanning_tenants`].
pub async fn all(conn: &mut PgConnection) -> Result<Vec<Stored>, sqlx::Error> {
    let mut out = Vec::new();
    let stripe = sqlx::query!(
        r#"SELECT tenant_id AS "tenant_id: TenantId", stripe_secret_key, stripe_webhook_secret
           FROM tenants
           WHERE stripe_secret_key IS NOT NULL OR stripe_webhook_secret IS NOT NULL
           ORDER BY tenant_id"#
    )
    .fetch_all(&mut *conn)
    .await?;
    for r in stripe {
        for (column, value) in [
            (Column::StripeSecretKey, r.stripe_secret_key),
            (Column::StripeWebhookSecret, r.stripe_webhook_secret),
        ] {
            if let Some(value) = value {
                out.push(Stored {
                    tenant_id: r.tenant_id.clone(),
                    column,
                    value,
                });
            }
        }
    }
    let endpoints = sqlx::query!(
        r#"SELECT tenant_id AS "tenant_id: TenantId", endpoint_id AS "endpoint_id: EndpointId", secret
           FROM webhook_endpoints ORDER BY tenant_id, endpoint_id"#
    )
    .fetch_all(&mut *conn)
    .await?;
    out.extend(endpoints.into_iter().map(|r| Stored {
        tenant_id: r.tenant_id,
        column: Column::EndpointSecret(r.endpoint_id),
        value: r.secret,
    }));
    Ok(out)
}

/// Holds off every write to the tables that store secrets until the transaction ends (reads
/// go on), so that no secret is stored under the old key while the stored ones are rotated.
pub async fn lock_writes(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("LOCK TABLE tenants, webhook_endpoints IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *conn)
        .await
        .map(drop)
}

/// Stores `new` in place of `s`, if the place still holds `s.value`; whether it did.
pub async fn replace(conn: &mut PgConnection, s: &Stored, new: &str) -> Result<bool, sqlx::Error> {
    let tenant = s.tenant_id.as_str();
    let done = match &s.column {
        Column::StripeSecretKey => sqlx::query!(
            "UPDATE tenants SET stripe_secret_key = $3
             WHERE tenant_id = $1 AND stripe_secret_key = $2",
            tenant,
            s.value,
            new
        )
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        Column::StripeWebhookSecret => sqlx::query!(
            "UPDATE tenants SET stripe_webhook_secret = $3
             WHERE tenant_id = $1 AND stripe_webhook_secret = $2",
            tenant,
            s.value,
            new
        )
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        Column::EndpointSecret(endpoint) => sqlx::query!(
            "UPDATE webhook_endpoints SET secret = $4
             WHERE tenant_id = $1 AND endpoint_id = $2 AND secret = $3",
            tenant,
            endpoint.as_str(),
            s.value,
            new
        )
        .execute(&mut *conn)
        .await?
        .rows_affected(),
    };
    Ok(done == 1)
}
