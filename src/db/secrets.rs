//! The stored secrets as a whole (`tenants.stripe_secret_key`, `tenants.stripe_webhook_secret`,
//! `webhook_endpoints.secret`, and the sealed responses the idempotency cache keeps), for the
//! start's check and the key's rotation (`secrets::store`). The statements that read one
//! secret to use it are with their tables.

use crate::domain::id::EndpointId;
use sqlx::PgConnection;

/// Where a stored secret is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    StripeSecretKey,
    StripeWebhookSecret,
    /// `webhook_endpoints.secret` of this endpoint.
    EndpointSecret(EndpointId),
    /// `idempotency_keys.response_body` of this idempotency key: a response that held a
    /// secret, kept sealed for a replay.
    Replay(String),
}

/// One stored secret, as stored (sealed, or in clear from before sealing).
#[derive(Debug)]
pub struct Stored {
    /// The row's `tenant_id`: a tenant id, or the admin API's idempotency scope.
    pub owner: String,
    pub column: Column,
    pub value: String,
}

/// What a sealed value starts with, as bytes (`secrets::is_sealed`).
const SEALED: &[u8] = b"tgenc:";

/// Every stored secret, of every tenant: statements that span tenants, so `conn` is in a
/// transaction begun by [`super::spanning_tenants`]. Responses in the idempotency cache are
/// among them only when sealed (the others hold no secret).
pub async fn all(conn: &mut PgConnection) -> Result<Vec<Stored>, sqlx::Error> {
    let mut out = Vec::new();
    let stripe = sqlx::query!(
        r#"SELECT tenant_id, stripe_secret_key, stripe_webhook_secret
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
                    owner: r.tenant_id.clone(),
                    column,
                    value,
                });
            }
        }
    }
    let endpoints = sqlx::query!(
        r#"SELECT tenant_id, endpoint_id AS "endpoint_id: EndpointId", secret
           FROM webhook_endpoints ORDER BY tenant_id, endpoint_id"#
    )
    .fetch_all(&mut *conn)
    .await?;
    out.extend(endpoints.into_iter().map(|r| Stored {
        owner: r.tenant_id,
        column: Column::EndpointSecret(r.endpoint_id),
        value: r.secret,
    }));
    let replays = sqlx::query!(
        r#"SELECT tenant_id, idempotency_key, response_body AS "response_body!"
           FROM idempotency_keys
           WHERE position($1::bytea IN response_body) = 1
           ORDER BY tenant_id, idempotency_key"#,
        SEALED
    )
    .fetch_all(&mut *conn)
    .await?;
    out.extend(replays.into_iter().map(|r| Stored {
        owner: r.tenant_id,
        column: Column::Replay(r.idempotency_key),
        value: String::from_utf8_lossy(&r.response_body).into_owned(),
    }));
    Ok(out)
}

/// Holds off every write to the tables that store secrets until the transaction ends (reads
/// go on), so that no secret is stored under the old key while the stored ones are rotated.
/// (The idempotency cache is left open: a usage request must not wait for a rotation, and a
/// replay sealed meanwhile by a process with the old key is one that process could not open
/// after the rotation anyway.)
pub async fn lock_writes(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("LOCK TABLE tenants, webhook_endpoints IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *conn)
        .await
        .map(drop)
}

/// Stores `new` in place of `s`, if the place still holds `s.value`; whether it did.
pub async fn replace(conn: &mut PgConnection, s: &Stored, new: &str) -> Result<bool, sqlx::Error> {
    let owner = s.owner.as_str();
    let done = match &s.column {
        Column::StripeSecretKey => sqlx::query!(
            "UPDATE tenants SET stripe_secret_key = $3
             WHERE tenant_id = $1 AND stripe_secret_key = $2",
            owner,
            s.value,
            new
        )
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        Column::StripeWebhookSecret => sqlx::query!(
            "UPDATE tenants SET stripe_webhook_secret = $3
             WHERE tenant_id = $1 AND stripe_webhook_secret = $2",
            owner,
            s.value,
            new
        )
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        Column::EndpointSecret(endpoint) => sqlx::query!(
            "UPDATE webhook_endpoints SET secret = $4
             WHERE tenant_id = $1 AND endpoint_id = $2 AND secret = $3",
            owner,
            endpoint.as_str(),
            s.value,
            new
        )
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        Column::Replay(key) => sqlx::query!(
            "UPDATE idempotency_keys SET response_body = $4
             WHERE tenant_id = $1 AND idempotency_key = $2 AND response_body = $3",
            owner,
            key,
            s.value.as_bytes(),
            new.as_bytes()
        )
        .execute(&mut *conn)
        .await?
        .rows_affected(),
    };
    Ok(done == 1)
}
