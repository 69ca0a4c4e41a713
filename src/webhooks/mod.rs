//! Outbound webhook deliveries, following the Standard Webhooks specification:
//! `webhook-id` (the event id, the same on every retry), `webhook-timestamp` (seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the
//! base64-decoded part of the endpoint's `whsec_` secret.
//!
//! Delivery is at least once. A worker claims due rows with `FOR UPDATE SKIP LOCKED` and leases
//! them (pushes `next_attempt_at` past its own send timeout) in one statement, then sends without
//! holding a transaction; the result is written back only if the lease is still its own (the
//! attempt count matches). Failures retry with exponential backoff and jitter until a day after
//! the event, then the delivery is parked as `failed`.

pub mod endpoints;
pub mod events;

use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;

use crate::db;
use crate::db::webhooks::Claimed;
use crate::retry::backoff;
use crate::secrets::{Place, Secrets};
use secrecy::ExposeSecret;

/// How deliveries are attempted.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Per request.
    pub timeout: Duration,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Retries stop this long after the event.
    pub give_up_after: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(10),
            base_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// A new endpoint secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The `webhook-signature` header value for a message, `None` if the secret is malformed.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let sig = mac.finalize().into_bytes();
    Some(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    ))
}

enum Sent {
    Delivered(u16),
    Failed { status: Option<u16>, error: String },
}

/// Sends up to `max` due deliveries, concurrently; returns how many were attempted.
pub async fn deliver_due(
    db: &PgPool,
    http: &reqwest::Client,
    secrets: &Secrets,
    cfg: &DeliveryConfig,
    max: i64,
) -> Result<usize, sqlx::Error> {
    let lease = cfg.timeout.as_secs_f64() + 30.0;
    let tenants = db::webhooks::due_tenants(db, max).await?;
    let claimed = db::claim_per_tenant(tenants, max, |tenant, left| async move {
        db::webhooks::claim_due(db, &tenant, left, lease).await
    })
    .await?;
    let n = claimed.len();
    let sends = claimed.into_iter().map(|c| async move {
        let result = if c.endpoint_deleted {
            Sent::Failed {
                status: None,
                error: "the endpoint was deleted".into(),
            }
        } else {
            send(http, secrets, cfg, &c).await
        };
        if let Err(e) = record(db, cfg, &c, result).await {
            tracing::warn!(error = %e, event = %c.event_id, "could not record a webhook delivery; it will be retried");
        }
    });
    futures::future::join_all(sends).await;
    Ok(n)
}

async fn send(
    http: &reqwest::Client,
    secrets: &Secrets,
    cfg: &DeliveryConfig,
    c: &Claimed,
) -> Sent {
    // The signing secret is opened here, once for each delivery attempt.
    let secret = match secrets.open(
        &c.tenant_id,
        Place::EndpointSecret(&c.endpoint_id),
        &c.secret,
    ) {
        Ok(secret) => secret,
        Err(e) => {
            tracing::error!(event = %c.event_id, endpoint = %c.endpoint_id, error = %e, "webhook delivery held back: restart this process with the current TOLLGATE_SECRETS_KEY");
            return Sent::Failed {
                status: None,
                error: format!(
                    "the endpoint's signing secret cannot be opened by this process: {e}"
                ),
            };
        }
    };
    let body = match serde_json::to_vec(&c.payload) {
        Ok(b) => b,
        Err(e) => {
            return Sent::Failed {
                status: None,
                error: e.to_string(),
            }
        }
    };
    let timestamp = Utc::now().timestamp();
    let Some(signature) = sign(secret.expose_secret(), &c.event_id, timestamp, &body) else {
        return Sent::Failed {
            status: None,
            error: "the endpoint secret is malformed".into(),
        };
    };
    let response = http
        .post(&c.url)
        .timeout(cfg.timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &c.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => Sent::Delivered(r.status().as_u16()),
        Ok(r) => Sent::Failed {
            status: Some(r.status().as_u16()),
            error: format!("HTTP {}", r.status()),
        },
        Err(e) => Sent::Failed {
            status: None,
            error: if e.is_timeout() {
                "timed out".to_string()
            } else {
                format!("request failed: {e}")
            },
        },
    }
}

/// Writes an attempt's outcome, if the lease is still this attempt's.
async fn record(
    db: &PgPool,
    cfg: &DeliveryConfig,
    c: &Claimed,
    result: Sent,
) -> Result<(), sqlx::Error> {
    match result {
        Sent::Delivered(status) => {
            db::webhooks::mark_delivered(db, c, i32::from(status)).await?;
        }
        Sent::Failed { status, error } => {
            let age = (Utc::now() - c.created_at).to_std().unwrap_or_default();
            let give_up = c.endpoint_deleted || age >= cfg.give_up_after;
            let wait = backoff(c.attempts, cfg.base_delay, cfg.max_delay);
            tracing::info!(event = %c.event_id, endpoint = %c.endpoint_id, attempts = c.attempts, give_up, %error, "webhook delivery failed");
            db::webhooks::mark_failed(
                db,
                c,
                give_up,
                wait.as_secs_f64(),
                status.map(i32::from),
                &error,
            )
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signs_like_the_specification() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn secrets_are_whsec_base64_of_32_bytes() {
        let s = new_secret();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert_ne!(s, new_secret());
    }
}
