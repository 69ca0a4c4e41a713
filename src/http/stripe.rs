//! Stripe (SPEC §10): webhooks in, and the outbox's state.
//!
//! A webhook's `Stripe-Signature` is verified by async-stripe (`Webhook::construct_event`,
//! 5-minute tolerance) with the tenant's webhook secret before anything is read. The few fields
//! Tollgate applies are then read from the JSON with serde, so a Stripe API version whose objects
//! differ in unrelated fields never makes an event undeliverable. Each event id is stored once,
//! in the transaction that applies it: a redelivery is answered 200 and changes nothing.

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stripe_webhook::{Webhook, WebhookError};

use super::extract::{Path, Query};
use crate::billing::subscriptions as subs;
use crate::billing::{dunning, invoices, lifecycle};
use crate::domain::status::SubscriptionStatus;
use crate::http::error::{ApiError, ApiResult};
use crate::tenancy::TenantCtx;
use crate::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookReceived {
    pub received: bool,
    /// `applied`, `ignored` (nothing to do: unknown type or object), `stale` (older than the
    /// state already applied) or `duplicate` (this event id was applied before).
    pub outcome: String,
}

#[derive(Deserialize)]
struct StripeEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    data: StripeEventData,
}

#[derive(Deserialize)]
struct StripeEventData {
    object: StripeObject,
}

#[derive(Deserialize, Default)]
struct StripeObject {
    id: Option<String>,
    status: Option<String>,
    attempt_count: Option<i32>,
    #[serde(default)]
    metadata: std::collections::HashMap<String, serde_json::Value>,
}

impl StripeObject {
    fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(|v| v.as_str())
    }
}

fn bad_signature(message: &'static str) -> ApiError {
    ApiError::invalid("invalid_signature", message).with_param("Stripe-Signature")
}

#[utoipa::path(post, path = "/v1/stripe/webhooks/{tenant_id}", tag = "stripe",
    params(("tenant_id" = String, Path, description = "The tenant the Stripe account belongs to"),
           ("Stripe-Signature" = String, Header, description = "Stripe's signature of the body")),
    request_body(content = Object, description = "A Stripe event, as Stripe sends it"),
    responses((status = 200, body = WebhookReceived),
              (status = 400, description = "Missing or bad signature, expired timestamp, or not JSON; nothing applied", body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<WebhookReceived>> {
    let tenant = sqlx::query!(
        "SELECT stripe_webhook_secret, test_clock_now FROM tenants WHERE tenant_id = $1",
        tenant_id
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("tenant_not_found", "No such tenant."))?;
    let Some(secret) = tenant.stripe_webhook_secret else {
        return Err(ApiError::invalid(
            "stripe_not_configured",
            "The tenant has no Stripe webhook secret (PATCH /v1/tenant).",
        ));
    };
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad_signature("The Stripe-Signature header is missing."))?;
    let payload = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid("invalid_body", "The body is not UTF-8."))?;
    match Webhook::construct_event(payload, signature, &secret) {
        // The signature and its timestamp were checked before the typed parse.
        Ok(_) | Err(WebhookError::BadParse(_)) => {}
        Err(WebhookError::BadTimestamp(_)) => {
            return Err(bad_signature(
                "The signature's timestamp is more than 5 minutes from now.",
            ))
        }
        Err(_) => return Err(bad_signature("The signature does not match the body.")),
    }
    let event: StripeEvent = serde_json::from_str(payload)
        .map_err(|e| ApiError::invalid("invalid_body", format!("Not a Stripe event: {e}")))?;
    let created = DateTime::<Utc>::from_timestamp(event.created, 0)
        .ok_or_else(|| ApiError::invalid("invalid_body", "created is out of range."))?;
    let now = state.clock.tenant_now(tenant.test_clock_now);

    let mut tx = state.db.begin().await?;
    let fresh = sqlx::query_scalar!(
        "INSERT INTO stripe_events (tenant_id, event_id, type, created, outcome)
         VALUES ($1, $2, $3, $4, 'pending')
         ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING event_id",
        tenant_id,
        event.id,
        event.event_type,
        created
    )
    .fetch_optional(&mut *tx)
    .await?;
    if fresh.is_none() {
        return Ok(axum::Json(WebhookReceived {
            received: true,
            outcome: "duplicate".into(),
        }));
    }
    let outcome = apply(&state, &mut tx, &tenant_id, &event, created, now).await?;
    sqlx::query!(
        "UPDATE stripe_events SET outcome = $3 WHERE tenant_id = $1 AND event_id = $2",
        tenant_id,
        event.id,
        outcome
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(event = %event.id, r#type = %event.event_type, outcome, "stripe webhook");
    Ok(axum::Json(WebhookReceived {
        received: true,
        outcome: outcome.into(),
    }))
}

async fn apply(
    state: &AppState,
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
    event: &StripeEvent,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ApiResult<&'static str> {
    let obj = &event.data.object;
    match event.event_type.as_str() {
        "invoice.paid" | "invoice.payment_failed" => {
            let Some(invoice_id) = find_invoice(conn, tenant_id, obj).await? else {
                return Ok("ignored");
            };
            let inv = invoices::get(conn, tenant_id, &invoice_id, true).await?;
            if event.event_type == "invoice.paid" {
                if invoices::payable(&inv).is_err() {
                    return Ok("ignored");
                }
                invoices::mark_paid(conn, tenant_id, &invoice_id, now, false).await?;
                return Ok("applied");
            }
            let failure = dunning::payment_failed(
                conn,
                &state.plans,
                tenant_id,
                &invoice_id,
                obj.attempt_count,
                "Stripe reported the payment failed.",
                now,
            )
            .await?;
            Ok(match failure {
                dunning::Failure::Ignored => "ignored",
                _ => "applied",
            })
        }
        "customer.subscription.updated" | "customer.subscription.deleted" => {
            let (Some(stripe_id), Some(status)) = (obj.id.as_deref(), obj.status.as_deref()) else {
                return Ok("ignored");
            };
            let found = sqlx::query!(
                "SELECT subscription_id, stripe_event_created FROM subscriptions
                 WHERE tenant_id = $1 AND (stripe_subscription_id = $2 OR subscription_id = $3)
                 ORDER BY (stripe_subscription_id = $2) DESC NULLS LAST LIMIT 1 FOR UPDATE",
                tenant_id,
                stripe_id,
                obj.meta("tollgate_subscription_id")
            )
            .fetch_optional(&mut *conn)
            .await?;
            let Some(found) = found else {
                return Ok("ignored");
            };
            if found
                .stripe_event_created
                .is_some_and(|seen| seen > created)
            {
                return Ok("stale");
            }
            sqlx::query!(
                "UPDATE subscriptions SET stripe_event_created = $3, stripe_subscription_id = $4
                 WHERE tenant_id = $1 AND subscription_id = $2",
                tenant_id,
                found.subscription_id,
                created,
                stripe_id
            )
            .execute(&mut *conn)
            .await?;
            let sub = subs::get(conn, tenant_id, &found.subscription_id, true).await?;
            let ended = event.event_type == "customer.subscription.deleted"
                || matches!(status, "canceled" | "incomplete_expired");
            if ended {
                if sub.status != SubscriptionStatus::Canceled {
                    let grace = sqlx::query_scalar!(
                        "SELECT invoice_grace_minutes FROM tenants WHERE tenant_id = $1",
                        tenant_id
                    )
                    .fetch_one(&mut *conn)
                    .await?;
                    lifecycle::end_now(conn, &state.plans, tenant_id, sub, grace, now, "stripe")
                        .await?;
                }
                return Ok("applied");
            }
            let mirrored = match status {
                "active" => SubscriptionStatus::Active,
                "trialing" => SubscriptionStatus::Trialing,
                "past_due" | "unpaid" => SubscriptionStatus::PastDue,
                _ => return Ok("ignored"),
            };
            subs::set_status(conn, tenant_id, &sub.subscription_id, mirrored).await?;
            Ok("applied")
        }
        _ => Ok("ignored"),
    }
}

/// The Tollgate invoice a Stripe invoice object stands for.
async fn find_invoice(
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
    obj: &StripeObject,
) -> ApiResult<Option<String>> {
    Ok(sqlx::query_scalar!(
        "SELECT invoice_id FROM invoices
         WHERE tenant_id = $1 AND (stripe_invoice_id = $2 OR invoice_id = $3)
         LIMIT 1",
        tenant_id,
        obj.id,
        obj.meta("tollgate_invoice_id")
    )
    .fetch_optional(&mut *conn)
    .await?)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SyncParams {
    /// How many failed rows to list (1 to 100, default 20).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncCounts {
    pub pending: i64,
    pub failed: i64,
    pub sent: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FailedRow {
    pub id: i64,
    /// `customer`, `invoice`, `invoice_payment`, `invoice_void` or `meter_event`.
    pub kind: String,
    /// The Tollgate id it is about (customer, invoice or usage event).
    pub resource_id: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncStatus {
    /// Whether the tenant has a Stripe secret key.
    pub connected: bool,
    pub counts: SyncCounts,
    /// The oldest pending row's creation time (how far behind the sync is).
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// Rows parked after their last attempt failed, newest first.
    pub failed: Vec<FailedRow>,
}

#[utoipa::path(get, path = "/v1/stripe/sync", tag = "stripe",
    params(SyncParams),
    responses((status = 200, body = SyncStatus)))]
pub async fn sync_status(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Query(params): Query<SyncParams>,
) -> ApiResult<axum::Json<SyncStatus>> {
    let limit = match params.limit {
        None => 20,
        Some(n) if (1..=100).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "invalid_limit",
                "limit",
                "limit must be between 1 and 100.",
            ))
        }
    };
    let mut conn = state.db.acquire().await?;
    let counts = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE o.status = 'pending') AS "pending!",
                  count(*) FILTER (WHERE o.status = 'failed') AS "failed!",
                  count(*) FILTER (WHERE o.status = 'sent') AS "sent!",
                  min(o.created_at) FILTER (WHERE o.status = 'pending') AS oldest,
                  (SELECT t.stripe_secret_key IS NOT NULL FROM tenants t WHERE t.tenant_id = $1) AS "connected!"
           FROM stripe_outbox o WHERE o.tenant_id = $1"#,
        ctx.tenant_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let failed = sqlx::query_as!(
        FailedRow,
        "SELECT outbox_id AS id, kind, resource_id, attempts, last_error, created_at
         FROM stripe_outbox WHERE tenant_id = $1 AND status = 'failed'
         ORDER BY outbox_id DESC LIMIT $2",
        ctx.tenant_id,
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(axum::Json(SyncStatus {
        connected: counts.connected,
        counts: SyncCounts {
            pending: counts.pending,
            failed: counts.failed,
            sent: counts.sent,
        },
        oldest_pending_at: counts.oldest,
        failed,
    }))
}
