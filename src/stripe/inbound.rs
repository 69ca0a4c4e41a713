//! Stripe webhooks in.
//!
//! A webhook's `Stripe-Signature` is verified by async-stripe (`Webhook::construct_event`,
//! 5-minute tolerance) with the tenant's webhook secret before anything is read. The few fields
//! Tollgate applies are then read from the JSON with serde, so a Stripe API version whose objects
//! differ in unrelated fields never makes an event undeliverable. Each event id is stored once,
//! in the transaction that applies it: a redelivery is answered 200 and changes nothing.

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use stripe_webhook::{Webhook, WebhookError};

use crate::audit::{self, Actor, Origin};
use crate::billing::subscriptions as subs;
use crate::billing::{dunning, invoices, lifecycle};
use crate::clock::Clock;
use crate::db;
use crate::db::plans::PlanCache;
use crate::domain::status::SubscriptionStatus;
use crate::error::{Error, Result};
use crate::secrets::{Place, Secrets};
use secrecy::ExposeSecret;

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

fn bad_signature(message: &'static str) -> Error {
    Error::invalid("invalid_signature", message).with_param("Stripe-Signature")
}

/// Verifies and applies one Stripe event for `tenant_id`. `signature` is the
/// `Stripe-Signature` header.
pub async fn receive(
    db: &PgPool,
    (plans, secrets): (&PlanCache, &Secrets),
    (clock, request_id): (&Clock, Option<&str>),
    tenant_id: &TenantId,
    signature: Option<&str>,
    body: &[u8],
) -> Result<WebhookReceived> {
    let mut conn = db.acquire().await?;
    let tenant = db::tenants::stripe_webhook(&mut conn, tenant_id)
        .await?
        .ok_or_else(Error::no_such::<TenantId>)?;
    drop(conn);
    let Some(stored) = tenant.stripe_webhook_secret else {
        return Err(Error::invalid(
            "stripe_not_configured",
            "The tenant has no Stripe webhook secret (PATCH /v1/tenant).",
        ));
    };
    // Opened once for this request (503 if this process's key does not open it: Stripe
    // retries).
    let secret = secrets.open(tenant_id, Place::StripeWebhookSecret, &stored)?;
    let signature =
        signature.ok_or_else(|| bad_signature("The Stripe-Signature header is missing."))?;
    let payload = std::str::from_utf8(body)
        .map_err(|_| Error::invalid("invalid_body", "The body is not UTF-8."))?;
    match Webhook::construct_event(payload, signature, secret.expose_secret()) {
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
        .map_err(|e| Error::invalid("invalid_body", format!("Not a Stripe event: {e}")))?;
    let created = DateTime::<Utc>::from_timestamp(event.created, 0)
        .ok_or_else(|| Error::invalid("invalid_body", "created is out of range."))?;
    let now = clock.tenant_now(tenant.test_clock_now);

    let origin = Origin::new(
        Actor::Stripe(event.id.clone()),
        request_id.map(str::to_string),
    );
    let mut tx = audit::begin(db, &origin).await?;
    if !db::stripe_events::claim(&mut tx, tenant_id, &event.id, &event.event_type, created).await? {
        return Ok(WebhookReceived {
            received: true,
            outcome: "duplicate".into(),
        });
    }
    let outcome = apply(&mut tx, plans, tenant_id, &event, created, now).await?;
    db::stripe_events::set_outcome(&mut tx, tenant_id, &event.id, outcome).await?;
    tx.commit().await?;
    tracing::info!(event = %event.id, r#type = %event.event_type, outcome, "stripe webhook");
    Ok(WebhookReceived {
        received: true,
        outcome: outcome.into(),
    })
}

async fn apply(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    event: &StripeEvent,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<&'static str> {
    let obj = &event.data.object;
    match event.event_type.as_str() {
        "invoice.paid" | "invoice.payment_failed" => {
            let found = db::stripe_events::find_invoice(
                conn,
                tenant_id,
                obj.id.as_deref(),
                obj.meta("tollgate_invoice_id"),
            )
            .await?;
            let Some(invoice_id) = found else {
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
                plans,
                tenant_id,
                &invoice_id,
                dunning::FailedAttempt {
                    attempt: obj.attempt_count,
                    error: "Stripe reported the payment failed.",
                    at: now,
                },
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
            let found = db::stripe_events::lock_subscription(
                conn,
                tenant_id,
                stripe_id,
                obj.meta("tollgate_subscription_id"),
            )
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
            db::stripe_events::mark_subscription_seen(
                conn,
                tenant_id,
                &found.subscription_id,
                created,
                stripe_id,
            )
            .await?;
            let sub = subs::get(conn, tenant_id, &found.subscription_id, true).await?;
            let ended = event.event_type == "customer.subscription.deleted"
                || matches!(status, "canceled" | "incomplete_expired");
            if ended {
                if sub.status != SubscriptionStatus::Canceled {
                    let grace = db::tenants::invoice_grace_minutes(conn, tenant_id).await?;
                    let ending = (now, "stripe", subs::Ending::Ended);
                    lifecycle::end_now(conn, plans, tenant_id, sub, grace, ending).await?;
                }
                return Ok("applied");
            }
            let mirrored = match status {
                "active" => SubscriptionStatus::Active,
                "trialing" => SubscriptionStatus::Trialing,
                "past_due" | "unpaid" => SubscriptionStatus::PastDue,
                _ => return Ok("ignored"),
            };
            subs::set_status(conn, tenant_id, &sub.subscription_id, mirrored, now).await?;
            Ok("applied")
        }
        _ => Ok("ignored"),
    }
}
