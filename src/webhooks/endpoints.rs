//! Webhook endpoints: where a tenant's events are delivered, and each one's delivery log.

use crate::ids::{EndpointId, TenantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::audit::{self, Change, Origin, Resource};
use crate::db;
use crate::db::webhooks::{DeliveryRow, EndpointRow, NewEndpoint};
use crate::error::{Error, Result};
use crate::secrets::{Place, Secrets};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Where deliveries are POSTed (http or https).
    pub url: String,
    /// `["*"]` for every event, or event types (`customer.created`, `subscription.created`,
    /// `subscription.updated`, `subscription.canceled`, `usage.threshold_reached`,
    /// `invoice.finalized`, `invoice.paid`, `invoice.payment_failed`).
    pub events: Vec<String>,
    pub description: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    #[schema(value_type = String, example = "we_0192f3a45b6c7d8e9f00112233445566")]
    pub id: EndpointId,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    /// The signing secret (`whsec_<base64>`): shown only when the endpoint is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The event id, also sent as `webhook-id`.
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (retries given up).
    pub status: String,
    pub attempts: i32,
    /// The HTTP status of the last attempt, if it got a response.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

fn validate(body: &CreateEndpoint) -> Result<()> {
    let url_ok = (body.url.starts_with("http://") || body.url.starts_with("https://"))
        && body.url.len() <= 2048
        && reqwest::Url::parse(&body.url).is_ok();
    if !url_ok {
        return Err(Error::invalid_param(
            "invalid_url",
            "url",
            "url must be an http(s) URL of at most 2048 characters.",
        ));
    }
    if body.events.is_empty() {
        return Err(Error::invalid_param(
            "invalid_events",
            "events",
            "events must name at least one event type, or be [\"*\"].",
        ));
    }
    if let Some(bad) = body
        .events
        .iter()
        .find(|e| e.as_str() != "*" && !super::events::TYPES.contains(&e.as_str()))
    {
        return Err(Error::invalid_param(
            "invalid_events",
            "events",
            format!("Unknown event type `{bad}`."),
        ));
    }
    if body.description.as_ref().is_some_and(|d| d.len() > 500) {
        return Err(Error::invalid_param(
            "invalid_description",
            "description",
            "description is longer than 500 characters.",
        ));
    }
    Ok(())
}

fn endpoint_not_found() -> Error {
    Error::no_such::<EndpointId>()
}

impl From<EndpointRow> for Endpoint {
    fn from(r: EndpointRow) -> Self {
        Endpoint {
            id: r.endpoint_id,
            url: r.url,
            events: r.events,
            description: r.description,
            secret: None,
            created_at: r.created_at,
        }
    }
}

impl From<DeliveryRow> for Delivery {
    fn from(r: DeliveryRow) -> Self {
        Delivery {
            next_attempt_at: (r.status == "pending").then_some(r.next_attempt_at),
            event_id: r.event_id,
            event_type: r.event_type,
            status: r.status,
            attempts: r.attempts,
            last_status: r.last_status,
            last_error: r.last_error,
            created_at: r.created_at,
            last_attempt_at: r.last_attempt_at,
            delivered_at: r.delivered_at,
            payload: r.payload,
        }
    }
}

/// Creates an endpoint with a new signing secret (shown only in this answer), stored sealed
/// under `secrets`' key (with none, `409 secrets_key_missing`).
pub async fn create(
    db: &PgPool,
    (origin, secrets): (&Origin, &Secrets),
    tenant_id: &TenantId,
    body: &CreateEndpoint,
    now: DateTime<Utc>,
) -> Result<Endpoint> {
    validate(body)?;
    let mut events = body.events.clone();
    events.sort();
    events.dedup();
    let id: EndpointId = crate::ids::new();
    let secret = super::new_secret();
    let sealed = secrets.seal(tenant_id, Place::EndpointSecret(&id), &secret)?;
    let mut tx = audit::begin(db, origin).await?;
    let created_at = db::webhooks::insert_endpoint(
        &mut tx,
        tenant_id,
        &NewEndpoint {
            endpoint_id: &id,
            url: &body.url,
            events: &events,
            secret: &sealed,
            description: body.description.as_deref(),
        },
    )
    .await?;
    let mut endpoint = Endpoint {
        id,
        url: body.url.clone(),
        events,
        description: body.description.clone(),
        secret: None,
        created_at,
    };
    // The signing secret is shown once, here, and never logged.
    let change = Change::new(Resource::WebhookEndpoint(&endpoint.id), "created").after(&endpoint);
    audit::record(&mut tx, tenant_id, change, now).await?;
    tx.commit().await?;
    endpoint.secret = Some(secret);
    Ok(endpoint)
}

pub async fn list(db: &PgPool, tenant_id: &TenantId) -> Result<Vec<Endpoint>> {
    let mut conn = db.acquire().await?;
    let rows = db::webhooks::endpoints(&mut conn, tenant_id).await?;
    Ok(rows.into_iter().map(Endpoint::from).collect())
}

/// Deletes an endpoint; its pending deliveries are given up.
pub async fn delete(
    db: &PgPool,
    origin: &Origin,
    tenant_id: &TenantId,
    endpoint_id: &EndpointId,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut tx = audit::begin(db, origin).await?;
    if !db::webhooks::delete_endpoint(&mut tx, tenant_id, endpoint_id).await? {
        return Err(endpoint_not_found());
    }
    let change = Change::new(Resource::WebhookEndpoint(endpoint_id), "deleted");
    audit::record(&mut tx, tenant_id, change, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Up to `limit` deliveries to an endpoint after `starting_after`, newest first, plus one
/// more if there is one.
pub async fn deliveries(
    db: &PgPool,
    tenant_id: &TenantId,
    endpoint_id: &EndpointId,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<Delivery>> {
    let mut conn = db.acquire().await?;
    if !db::webhooks::endpoint_exists(&mut conn, tenant_id, endpoint_id).await? {
        return Err(endpoint_not_found());
    }
    let rows =
        db::webhooks::deliveries(&mut conn, tenant_id, endpoint_id, starting_after, limit + 1)
            .await?;
    Ok(rows.into_iter().map(Delivery::from).collect())
}
