//! The Stripe outbox and its worker (README, "Stripe, webhooks and alerts").
//!
//! Everything Stripe must learn is an `stripe_outbox` row written in the transaction of the
//! change (`enqueue`). Workers claim due rows with `FOR UPDATE SKIP LOCKED` and lease them (push
//! `next_attempt_at` past the time a send can take) in one statement, so any number of workers
//! run at once without taking the same row. Each Stripe request carries an idempotency key made
//! from the row id (and the step, for multi-step rows), so a request repeated after a timeout or
//! a crash is answered by Stripe with the first result instead of being applied twice. The
//! outcome is written back only while the lease is still the worker's own (the attempt count
//! matches), in one transaction with what it changes in Tollgate (the Stripe customer id, an
//! invoice paid, a failed payment's dunning step).
//!
//! Network errors, timeouts, 409 (a concurrent request with the same key), 429 and 5xx are
//! retried with exponential backoff and jitter; after `max_attempts` the row is parked as
//! `failed` with its last error. Other 4xx are parked at once: sending them again cannot help.

use crate::ids::{InvoiceId, TenantId};
use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use stripe::{
    ApiErrorsCode, ApiErrorsType, Client, ClientBuilder, IdempotencyKey, RequestStrategy,
    StripeError, StripeRequest,
};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::credit_note::CreateCreditNote;
use stripe_billing::invoice::{
    CreateInvoice, FinalizeInvoiceInvoice, PayInvoice, VoidInvoiceInvoice,
};
use stripe_billing::invoice_item::{CreateInvoiceItem, Period};
use stripe_billing::CreditNoteReason;
use stripe_billing::InvoiceCollectionMethod;
use stripe_core::customer::{CreateCustomer, UpdateCustomer};
use stripe_types::Currency;

use crate::domain::status::InvoiceStatus;

use crate::billing::{dunning, invoices};
use crate::db;
use crate::db::outbox::{Claimed, InvoiceInStripe};
use crate::db::plans::PlanCache;
use crate::error::{Error, Result};
use crate::secrets::{Place, Secrets};
use secrecy::ExposeSecret;

/// Stripe's API, unless the tenant sets `stripe.api_base`.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com/";

use crate::domain::outbox::OutboxKind as Kind;

/// How the worker sends.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Per Stripe request.
    pub timeout: Duration,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Attempts before a row is parked as `failed`.
    pub max_attempts: i32,
    /// Rows claimed at once by one worker pass.
    pub batch: i64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            timeout: Duration::from_secs(20),
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(3600),
            max_attempts: 12,
            batch: 32,
        }
    }
}

/// How long a row this process cannot send waits before it is looked at again.
const HELD_FOR: Duration = Duration::from_secs(60);

/// What one send came to.
enum Outcome {
    /// Done; `apply` runs in the transaction that marks the row sent.
    Sent(Apply),
    /// Not yet possible (waits for another row, e.g. the Stripe customer): try again soon
    /// without counting an attempt.
    Deferred(&'static str),
    /// Worth retrying (network, timeout, 409, 429, 5xx).
    Retry(String),
    /// This process cannot send it (its secrets key does not open the tenant's Stripe key:
    /// the key was rotated and the process not yet restarted): left for a process that can,
    /// without counting an attempt.
    Held(String),
    /// Will never work: parked at once.
    Permanent(String),
}

/// The Tollgate side of a sent row.
enum Apply {
    Nothing,
    CustomerCreated(String),
    MeterEventReported,
    InvoicePaid,
    PaymentFailed { attempt: i32, error: String },
}

/// Sends up to `cfg.batch` due rows (concurrently); returns how many were claimed.
pub async fn send_due(
    db: &PgPool,
    plans: &PlanCache,
    secrets: &Secrets,
    cfg: &SyncConfig,
) -> Result<usize> {
    let lease = cfg.timeout.as_secs_f64() * 4.0 + 60.0;
    let tenants = db::outbox::due_tenants(db, cfg.batch).await?;
    let claimed = db::claim_per_tenant(tenants, cfg.batch, |tenant, left| async move {
        db::outbox::claim_due(db, &tenant, left, lease).await
    })
    .await?;
    let n = claimed.len();
    let work = claimed.into_iter().map(|row| async move {
        let outcome = match client_for(&row, secrets, cfg) {
            Ok(client) => send(db, &client, &row).await,
            Err(o) => o,
        };
        if let Err(e) = record(db, plans, cfg, &row, outcome).await {
            tracing::warn!(outbox = row.outbox_id, tenant = %row.tenant_id, kind = row.kind, error = %e, "could not record a Stripe send; it will be retried");
        }
    });
    futures::future::join_all(work).await;
    Ok(n)
}

/// The tenant's Stripe client; its key is opened here, once for each row sent.
fn client_for(row: &Claimed, secrets: &Secrets, cfg: &SyncConfig) -> Result<Client, Outcome> {
    let Some(stored) = &row.secret_key else {
        return Err(Outcome::Permanent(
            "The tenant is no longer connected to Stripe.".into(),
        ));
    };
    let key = secrets
        .open(&row.tenant_id, Place::StripeSecretKey, stored)
        .map_err(|e| Outcome::Held(format!("the tenant's Stripe key cannot be opened: {e}")))?;
    let mut base = row
        .api_base
        .clone()
        .unwrap_or_else(|| DEFAULT_API_BASE.to_string());
    // async-stripe appends `v1/...` to the base as it is.
    if !base.ends_with('/') {
        base.push('/');
    }
    ClientBuilder::new(key.expose_secret())
        .url(base)
        .request_strategy(RequestStrategy::Once)
        .timeout(cfg.timeout)
        .build()
        .map_err(|e| Outcome::Permanent(format!("Stripe client: {e}")))
}

/// The idempotency key of one request of a row.
fn key(row: &Claimed, step: &str) -> RequestStrategy {
    let k = format!("tollgate-{}-{}{}", row.tenant_id, row.outbox_id, step);
    match IdempotencyKey::new(&k) {
        Ok(k) => RequestStrategy::Idempotent(k),
        // Tenant ids are short; a key is never over 255 bytes. Even so, never send unkeyed.
        Err(_) => RequestStrategy::Idempotent(
            IdempotencyKey::new(format!("tollgate-{}{}", row.outbox_id, step))
                .unwrap_or_else(|_| IdempotencyKey::new("tollgate").expect("non-empty key")),
        ),
    }
}

/// How a Stripe error is handled.
fn classify(e: StripeError) -> Outcome {
    match e {
        StripeError::Timeout => Outcome::Retry("timed out".into()),
        StripeError::ClientError(m) => Outcome::Retry(format!("network: {m}")),
        // A non-2xx whose body is not Stripe's error JSON (a proxy's page) loses its status in
        // async-stripe: treat it as transient.
        StripeError::JSONDeserialize(m) => Outcome::Retry(format!("unreadable response: {m}")),
        StripeError::ConfigError(m) => Outcome::Permanent(format!("configuration: {m}")),
        StripeError::Stripe(api, status) => {
            let msg = format!(
                "HTTP {status} {}: {}",
                api.type_.as_str(),
                api.message.as_deref().unwrap_or("")
            );
            if status == 409 || status == 429 || status >= 500 {
                Outcome::Retry(msg)
            } else {
                Outcome::Permanent(msg)
            }
        }
    }
}

fn is_card_error(e: &StripeError) -> Option<String> {
    match e {
        StripeError::Stripe(api, status)
            if *status == 402
                || matches!(api.type_, ApiErrorsType::CardError)
                || api.code == Some(ApiErrorsCode::CardDeclined) =>
        {
            Some(
                api.message
                    .clone()
                    .unwrap_or_else(|| "The card was declined.".into()),
            )
        }
        _ => None,
    }
}

async fn send(db: &PgPool, client: &Client, row: &Claimed) -> Outcome {
    let result = match Kind::parse(&row.kind) {
        Some(Kind::Customer) => send_customer(db, client, row).await,
        Some(Kind::MeterEvent) => send_meter_event(db, client, row).await,
        Some(Kind::Invoice) => send_invoice(db, client, row).await,
        Some(Kind::InvoicePayment) => send_payment(db, client, row).await,
        Some(Kind::InvoiceVoid) => send_void(db, client, row).await,
        Some(Kind::CreditNote) => send_credit_note(db, client, row).await,
        Some(Kind::CustomerErase) => send_customer_erase(db, client, row).await,
        None => Ok(Outcome::Permanent(format!("unknown kind {}", row.kind))),
    };
    result.unwrap_or_else(|e| Outcome::Retry(e.to_string()))
}

async fn send_customer(db: &PgPool, client: &Client, row: &Claimed) -> Result<Outcome> {
    // No connection is held across a call to Stripe.
    let mut conn = db.acquire().await?;
    let found = db::outbox::customer(&mut conn, &row.tenant_id, &row.resource_id).await?;
    drop(conn);
    let Some(c) = found else {
        return Ok(Outcome::Permanent("The customer no longer exists.".into()));
    };
    if c.stripe_customer_id.is_some() {
        return Ok(Outcome::Sent(Apply::Nothing));
    }
    let mut metadata = HashMap::new();
    metadata.insert("tollgate_customer_id".to_string(), row.resource_id.clone());
    metadata.insert("tollgate_tenant_id".to_string(), row.tenant_id.to_string());
    let mut req = CreateCustomer::new().metadata(metadata);
    if let Some(email) = &c.email {
        req = req.email(email.as_str());
    }
    if let Some(name) = &c.name {
        req = req.name(name.as_str());
    }
    Ok(
        match req
            .customize()
            .request_strategy(key(row, ""))
            .send(client)
            .await
        {
            Ok(customer) => Outcome::Sent(Apply::CustomerCreated(customer.id.as_str().to_string())),
            Err(e) => classify(e),
        },
    )
}

/// An erased customer: its Stripe customer's email and name are cleared (Stripe unsets a
/// field sent empty). A customer never sent to Stripe has nothing there to clear (and, if its
/// row is still queued, is created without them, as they are gone).
async fn send_customer_erase(db: &PgPool, client: &Client, row: &Claimed) -> Result<Outcome> {
    let mut conn = db.acquire().await?;
    let id = db::outbox::stripe_customer_id(&mut conn, &row.tenant_id, &row.resource_id).await?;
    drop(conn);
    let Some(id) = id else {
        return Ok(Outcome::Sent(Apply::Nothing));
    };
    Ok(
        match UpdateCustomer::new(id.as_str())
            .email("")
            .name("")
            .customize()
            .request_strategy(key(row, ""))
            .send(client)
            .await
        {
            Ok(_) => Outcome::Sent(Apply::Nothing),
            Err(e) => classify(e),
        },
    )
}

/// The customer's Stripe id; when it has none yet, makes sure a customer row is queued.
async fn stripe_customer(
    db: &PgPool,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<Option<String>> {
    let mut conn = db.acquire().await?;
    let id = db::outbox::stripe_customer_id(&mut conn, tenant_id, customer_id).await?;
    if id.is_none() {
        // A customer created before the tenant was connected to Stripe has no row yet.
        db::outbox::queue_customer(&mut conn, tenant_id, customer_id).await?;
    }
    Ok(id)
}

async fn send_meter_event(db: &PgPool, client: &Client, row: &Claimed) -> Result<Outcome> {
    let p = &row.payload;
    let (Some(event_name), Some(customer), Some(timestamp)) = (
        p["event_name"].as_str(),
        p["customer"].as_str(),
        p["timestamp"].as_i64(),
    ) else {
        return Ok(Outcome::Permanent("malformed meter event row".into()));
    };
    let Some(stripe_customer) = stripe_customer(db, &row.tenant_id, customer).await? else {
        return Ok(Outcome::Deferred("waiting for the Stripe customer"));
    };
    let value = match &p["value"] {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => return Ok(Outcome::Permanent("malformed meter event value".into())),
    };
    let mut payload = HashMap::new();
    payload.insert("stripe_customer_id".to_string(), stripe_customer);
    payload.insert("value".to_string(), value);
    let sent = CreateBillingMeterEvent::new(event_name, payload)
        .identifier(row.resource_id.as_str())
        .timestamp(timestamp)
        .customize()
        .request_strategy(key(row, ""))
        .send(client)
        .await;
    Ok(match sent {
        Ok(_) => Outcome::Sent(Apply::MeterEventReported),
        // Stripe keeps identifiers unique: one it already has was reported by an earlier
        // attempt whose answer was lost (after the idempotency key expired).
        Err(StripeError::Stripe(api, 400))
            if api
                .message
                .as_deref()
                .is_some_and(|m| m.contains("identifier") && m.contains("already")) =>
        {
            Outcome::Sent(Apply::MeterEventReported)
        }
        Err(e) => classify(e),
    })
}

/// A line as Stripe's `quantity` and `unit_amount_decimal` (in minor units), when it is a
/// whole positive number of units at a positive unit amount that makes its amount exactly.
fn per_unit(
    quantity: Decimal,
    unit_amount: Decimal,
    amount: Decimal,
    currency: &str,
) -> Option<(u64, String)> {
    // A negative line (a proration credit, a discount) goes as an amount, which Stripe takes
    // negative on an invoice item.
    if quantity <= Decimal::ZERO
        || unit_amount <= Decimal::ZERO
        || quantity.fract() != Decimal::ZERO
        || quantity * unit_amount != amount
    {
        return None;
    }
    let unit = minor_units(unit_amount, currency)?;
    Some((u64::try_from(quantity).ok()?, unit.to_string()))
}

/// Stripe amounts are integers in the currency's minor unit.
fn minor_units(amount: Decimal, currency: &str) -> Option<i64> {
    let scaled =
        amount * Decimal::from(10i64.pow(crate::domain::money::minor_unit_scale(currency)));
    if scaled.fract() != Decimal::ZERO {
        return None;
    }
    i64::try_from(scaled).ok()
}

/// Saves how far a multi-step row got (so a retry a day later, after Stripe's idempotency keys
/// expired, does not repeat finished steps).
async fn save_progress(db: &PgPool, row: &Claimed, progress: &serde_json::Value) -> Result<()> {
    let mut conn = db.acquire().await?;
    Ok(db::outbox::save_progress(&mut conn, row, progress).await?)
}

/// The invoice an `invoice` or `payment` row is about (its `resource_id`).
fn invoice_of(row: &Claimed) -> Result<InvoiceId> {
    InvoiceId::try_from_str(&row.resource_id)
        .map_err(|e| Error::internal(format!("stripe_outbox {}: {e}", row.outbox_id)))
}

async fn send_invoice(db: &PgPool, client: &Client, row: &Claimed) -> Result<Outcome> {
    let mut conn = db.acquire().await?;
    let inv = invoices::get(&mut conn, &row.tenant_id, &invoice_of(row)?, false).await?;
    drop(conn);
    if inv.status == InvoiceStatus::Void {
        return Ok(Outcome::Sent(Apply::Nothing));
    }
    let Some(customer) = stripe_customer(db, &row.tenant_id, &inv.customer_id).await? else {
        return Ok(Outcome::Deferred("waiting for the Stripe customer"));
    };
    let mut progress = row.result.clone().unwrap_or_else(|| json!({}));
    // An unknown currency is a fault of the stored invoice, not something to guess at.
    let Ok(currency) = inv.currency.parse::<Currency>();
    let currency = match currency {
        Currency::Unknown(code) => {
            return Ok(Outcome::Permanent(format!(
                "invoice {} has a currency Stripe does not know: {code:?}",
                inv.invoice_id
            )));
        }
        known => known,
    };

    // 1. The invoice itself.
    let stripe_id = match progress["stripe_invoice_id"].as_str() {
        Some(id) => id.to_string(),
        None => {
            let mut metadata = HashMap::new();
            metadata.insert(
                "tollgate_invoice_id".to_string(),
                inv.invoice_id.to_string(),
            );
            metadata.insert("tollgate_tenant_id".to_string(), row.tenant_id.to_string());
            let mut req = CreateInvoice::new()
                .customer(customer.as_str())
                .currency(currency.clone())
                .auto_advance(false)
                .metadata(metadata)
                .description(crate::domain::invoice::number(inv.number));
            req = if inv.net_days > 0 {
                req.collection_method(InvoiceCollectionMethod::SendInvoice)
                    .days_until_due(inv.net_days as u32)
            } else {
                req.collection_method(InvoiceCollectionMethod::ChargeAutomatically)
            };
            match req
                .customize()
                .request_strategy(key(row, "-create"))
                .send(client)
                .await
            {
                Ok(created) => {
                    let Some(id) = created.id else {
                        return Ok(Outcome::Retry(
                            "Stripe returned an invoice without id".into(),
                        ));
                    };
                    let id = id.as_str().to_string();
                    let mut conn = db.acquire().await?;
                    db::outbox::set_stripe_invoice_id(
                        &mut conn,
                        &row.tenant_id,
                        &inv.invoice_id,
                        &id,
                    )
                    .await?;
                    drop(conn);
                    progress["stripe_invoice_id"] = json!(id);
                    save_progress(db, row, &progress).await?;
                    id
                }
                Err(e) => return Ok(classify(e)),
            }
        }
    };

    // 2. Its lines, one invoice item each.
    let mut conn = db.acquire().await?;
    let lines = invoices::lines(
        &mut conn,
        &row.tenant_id,
        std::slice::from_ref(&inv.invoice_id),
    )
    .await?;
    drop(conn);
    let done = progress["lines_sent"].as_i64().unwrap_or(0);
    for (_, line) in lines.iter().filter(|(_, l)| i64::from(l.line_no) > done) {
        let Some(amount) = minor_units(line.amount, &inv.currency) else {
            return Ok(Outcome::Permanent(format!(
                "line {} amount {} is not a whole number of minor units",
                line.line_no, line.amount
            )));
        };
        let item = CreateInvoiceItem::new()
            .customer(customer.as_str())
            .invoice(stripe_id.as_str())
            .currency(currency.clone())
            .description(line.description.as_str())
            .period(Period::new(
                line.period_end.timestamp(),
                line.period_start.timestamp(),
            ));
        // Seats and other counted lines show their quantity and unit amount in Stripe too.
        let item = match per_unit(line.quantity, line.unit_amount, line.amount, &inv.currency) {
            Some((quantity, unit)) => item.quantity(quantity).unit_amount_decimal(unit),
            None => item.amount(amount),
        };
        let sent = item
            .customize()
            .request_strategy(key(row, &format!("-line-{}", line.line_no)))
            .send(client)
            .await;
        if let Err(e) = sent {
            return Ok(classify(e));
        }
        progress["lines_sent"] = json!(line.line_no);
        save_progress(db, row, &progress).await?;
    }

    // 2b. The credit balance it used, as a negative item (the Stripe customer balance is
    // left alone: Tollgate keeps the balance, and Stripe's invoice asks what Tollgate's does).
    if inv.credit_applied > Decimal::ZERO && progress["credit_sent"].as_bool() != Some(true) {
        let Some(credit) = minor_units(inv.credit_applied, &inv.currency) else {
            return Ok(Outcome::Permanent(format!(
                "credit applied {} is not a whole number of minor units",
                inv.credit_applied
            )));
        };
        let sent = CreateInvoiceItem::new()
            .customer(customer.as_str())
            .invoice(stripe_id.as_str())
            .currency(currency.clone())
            .description("Credit applied from the customer's balance")
            .amount(-credit)
            .customize()
            .request_strategy(key(row, "-credit"))
            .send(client)
            .await;
        if let Err(e) = sent {
            return Ok(classify(e));
        }
        progress["credit_sent"] = json!(true);
        save_progress(db, row, &progress).await?;
    }

    // 3. Finalized in Stripe too.
    if progress["finalized"].as_bool() != Some(true) {
        let finalized = FinalizeInvoiceInvoice::new(stripe_id.as_str())
            .auto_advance(false)
            .customize()
            .request_strategy(key(row, "-finalize"))
            .send(client)
            .await;
        if let Err(e) = finalized {
            return Ok(classify(e));
        }
        progress["finalized"] = json!(true);
        save_progress(db, row, &progress).await?;
    }

    // 4. Collected at once when it is charged automatically (net 0) and still open here.
    if inv.net_days > 0 || inv.status != InvoiceStatus::Open {
        return Ok(Outcome::Sent(Apply::Nothing));
    }
    Ok(pay(client, row, &stripe_id, "-pay", 1, false).await)
}

async fn pay(
    client: &Client,
    row: &Claimed,
    stripe_id: &str,
    step: &str,
    attempt: i32,
    out_of_band: bool,
) -> Outcome {
    let mut req = PayInvoice::new(stripe_id);
    if out_of_band {
        req = req.paid_out_of_band(true);
    }
    match req
        .customize()
        .request_strategy(key(row, step))
        .send(client)
        .await
    {
        Ok(paid) if out_of_band => {
            let _ = paid;
            Outcome::Sent(Apply::Nothing)
        }
        Ok(paid) => match paid.status.as_ref().map(|s| s.as_str()) {
            Some("paid") => Outcome::Sent(Apply::InvoicePaid),
            other => Outcome::Sent(Apply::PaymentFailed {
                attempt,
                error: format!("Stripe left the invoice {}", other.unwrap_or("unpaid")),
            }),
        },
        Err(e) => match is_card_error(&e) {
            Some(error) => Outcome::Sent(Apply::PaymentFailed { attempt, error }),
            None => classify(e),
        },
    }
}

async fn invoice_in_stripe(db: &PgPool, row: &Claimed) -> Result<Option<InvoiceInStripe>> {
    let mut conn = db.acquire().await?;
    Ok(db::outbox::invoice_in_stripe(&mut conn, &row.tenant_id, &invoice_of(row)?).await?)
}

async fn send_payment(db: &PgPool, client: &Client, row: &Claimed) -> Result<Outcome> {
    let found = invoice_in_stripe(db, row).await?;
    let Some(found) = found else {
        return Ok(Outcome::Permanent("The invoice no longer exists.".into()));
    };
    let out_of_band = row.payload["paid_out_of_band"].as_bool() == Some(true);
    // Only a finalized Stripe invoice can be paid: wait until its own row is done (it may have
    // a Stripe id while its items are still being added).
    if found.invoice_pending {
        return Ok(Outcome::Deferred("waiting for the invoice to reach Stripe"));
    }
    let Some(stripe_id) = found.stripe_invoice_id else {
        return Ok(if out_of_band {
            // Never sent to Stripe: nothing there to mark paid.
            Outcome::Sent(Apply::Nothing)
        } else {
            Outcome::Permanent("The invoice is not in Stripe.".into())
        });
    };
    if out_of_band {
        return Ok(pay(client, row, &stripe_id, "", 0, true).await);
    }
    let attempt = row.payload["attempt"]
        .as_i64()
        .and_then(|a| i32::try_from(a).ok())
        .unwrap_or(found.payment_attempts + 1);
    if found.status != InvoiceStatus::Open.as_str() || attempt <= found.payment_attempts {
        // Paid meanwhile, or this attempt's failure was already reported by a webhook.
        return Ok(Outcome::Sent(Apply::Nothing));
    }
    Ok(pay(client, row, &stripe_id, "", attempt, false).await)
}

async fn send_void(db: &PgPool, client: &Client, row: &Claimed) -> Result<Outcome> {
    let found = invoice_in_stripe(db, row).await?;
    let Some(found) = found else {
        return Ok(Outcome::Permanent("The invoice no longer exists.".into()));
    };
    // Only a finalized Stripe invoice can be voided: wait until its own row is done.
    if found.invoice_pending {
        return Ok(Outcome::Deferred("waiting for the invoice to reach Stripe"));
    }
    let Some(stripe_id) = found.stripe_invoice_id else {
        // Never sent to Stripe: nothing there to void.
        return Ok(Outcome::Sent(Apply::Nothing));
    };
    Ok(
        match VoidInvoiceInvoice::new(stripe_id.as_str())
            .customize()
            .request_strategy(key(row, ""))
            .send(client)
            .await
        {
            Ok(_) => Outcome::Sent(Apply::Nothing),
            Err(e) => classify(e),
        },
    )
}

/// A credit note: on an open invoice it lowers what the Stripe invoice asks; on a paid one
/// it is credited out of band (the credit stays in Tollgate's balance, not Stripe's).
async fn send_credit_note(db: &PgPool, client: &Client, row: &Claimed) -> Result<Outcome> {
    let found = invoice_in_stripe(db, row).await?;
    let Some(found) = found else {
        return Ok(Outcome::Permanent("The invoice no longer exists.".into()));
    };
    // Stripe credits only a finalized invoice: wait until its own row is done (it may have a
    // Stripe id while its items are still being added).
    if found.invoice_pending {
        return Ok(Outcome::Deferred("waiting for the invoice to reach Stripe"));
    }
    let Some(stripe_id) = found.stripe_invoice_id else {
        // Never sent to Stripe: nothing there to credit.
        return Ok(Outcome::Sent(Apply::Nothing));
    };
    let payload = &row.payload;
    let amount = payload["amount"]
        .as_str()
        .and_then(|a| a.parse::<Decimal>().ok());
    let currency = found.currency.as_str();
    let Some(amount) = amount.and_then(|a| minor_units(a, currency)) else {
        return Ok(Outcome::Permanent(format!(
            "credit note amount {} is not a whole number of minor units",
            payload["amount"]
        )));
    };
    let mut req = CreateCreditNote::new(stripe_id.as_str()).amount(amount);
    if payload["paid"].as_bool() == Some(true) {
        req = req.out_of_band_amount(amount);
    }
    let reason = match payload["reason"].as_str() {
        Some("duplicate") => Some(CreditNoteReason::Duplicate),
        Some("fraudulent") => Some(CreditNoteReason::Fraudulent),
        Some("order_change") => Some(CreditNoteReason::OrderChange),
        Some("product_unsatisfactory") => Some(CreditNoteReason::ProductUnsatisfactory),
        _ => None,
    };
    if let Some(reason) = reason {
        req = req.reason(reason);
    }
    if let Some(id) = payload["credit_note"].as_str() {
        req = req.memo(format!("Tollgate credit note {id}"));
    }
    Ok(
        match req
            .customize()
            .request_strategy(key(row, ""))
            .send(client)
            .await
        {
            Ok(_) => Outcome::Sent(Apply::Nothing),
            Err(e) => classify(e),
        },
    )
}

/// Writes a send's outcome, with its Tollgate side, if the lease is still this worker's.
async fn record(
    db: &PgPool,
    plans: &PlanCache,
    cfg: &SyncConfig,
    row: &Claimed,
    outcome: Outcome,
) -> Result<()> {
    // What a send changes in Tollgate (an invoice paid, dunning) is the worker's doing.
    let mut tx = crate::audit::begin(db, &crate::audit::Origin::worker()).await?;
    let (status, error, wait, attempts_back) = match &outcome {
        Outcome::Sent(_) => ("sent", None, Duration::ZERO, 0),
        Outcome::Deferred(why) => ("pending", Some(why.to_string()), cfg.base_delay, 1),
        Outcome::Held(why) => ("pending", Some(why.clone()), HELD_FOR, 1),
        Outcome::Retry(e) if row.attempts >= cfg.max_attempts => {
            ("failed", Some(e.clone()), Duration::ZERO, 0)
        }
        Outcome::Retry(e) => (
            "pending",
            Some(e.clone()),
            crate::retry::backoff(row.attempts, cfg.base_delay, cfg.max_delay),
            0,
        ),
        Outcome::Permanent(e) => ("failed", Some(e.clone()), Duration::ZERO, 0),
    };
    let updated = db::outbox::record_outcome(
        &mut tx,
        row,
        &db::outbox::Outcome {
            status,
            error: error.as_deref(),
            wait_secs: wait.as_secs_f64(),
            attempts_back,
            at: crate::clock::Clock.real_now(),
        },
    )
    .await?;
    if !updated {
        // The lease ran out and another worker owns the row now.
        return Ok(());
    }
    match &outcome {
        Outcome::Sent(apply) => {
            apply_sent(&mut tx, plans, row, apply).await?;
            tracing::debug!(outbox = row.outbox_id, kind = %row.kind, "sent to Stripe");
        }
        Outcome::Retry(e) | Outcome::Permanent(e) => {
            tracing::info!(outbox = row.outbox_id, kind = %row.kind, attempts = row.attempts, status, error = %e, "Stripe send failed");
        }
        Outcome::Held(e) => {
            tracing::error!(outbox = row.outbox_id, tenant = %row.tenant_id, error = %e, "Stripe send held back: restart this process with the current TOLLGATE_SECRETS_KEY");
        }
        Outcome::Deferred(_) => {}
    }
    tx.commit().await?;
    Ok(())
}

async fn apply_sent(
    conn: &mut PgConnection,
    plans: &PlanCache,
    row: &Claimed,
    apply: &Apply,
) -> Result<()> {
    let now = tenant_now(conn, &row.tenant_id).await?;
    match apply {
        Apply::Nothing => {}
        Apply::CustomerCreated(id) => {
            db::outbox::set_stripe_customer_id(conn, &row.tenant_id, &row.resource_id, id).await?;
        }
        Apply::MeterEventReported => {
            db::outbox::mark_meter_reported(conn, &row.tenant_id, &row.resource_id).await?;
        }
        Apply::InvoicePaid => {
            let invoice_id = invoice_of(row)?;
            let inv = invoices::get(conn, &row.tenant_id, &invoice_id, true).await?;
            if invoices::payable(&inv).is_ok() {
                invoices::mark_paid(conn, &row.tenant_id, &invoice_id, now, false).await?;
            }
        }
        Apply::PaymentFailed { attempt, error } => {
            dunning::payment_failed(
                conn,
                plans,
                &row.tenant_id,
                &invoice_of(row)?,
                dunning::FailedAttempt {
                    attempt: Some(*attempt),
                    error,
                    at: now,
                },
            )
            .await?;
        }
    }
    Ok(())
}

async fn tenant_now(conn: &mut PgConnection, tenant_id: &TenantId) -> Result<DateTime<Utc>> {
    let frozen = db::tenants::test_clock(conn, tenant_id).await?;
    Ok(crate::clock::Clock.tenant_now(frozen))
}

/// Sends until nothing is due (tests and `tollgate` one-shot runs).
pub async fn drain(
    db: &PgPool,
    plans: &PlanCache,
    secrets: &Secrets,
    cfg: &SyncConfig,
) -> Result<usize> {
    let mut total = 0;
    loop {
        let n = send_due(db, plans, secrets, cfg).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_are_exact() {
        assert_eq!(minor_units(Decimal::new(4950, 2), "usd"), Some(4950));
        assert_eq!(minor_units(Decimal::new(-1500, 2), "eur"), Some(-1500));
        assert_eq!(minor_units(Decimal::new(500, 0), "jpy"), Some(500));
        assert_eq!(minor_units(Decimal::new(1, 3), "usd"), None);
    }

    #[test]
    fn counted_lines_go_as_quantity_and_unit_and_negative_ones_as_amounts() {
        let d = |n: i64, scale: u32| Decimal::new(n, scale);
        assert_eq!(
            per_unit(d(3, 0), d(1250, 2), d(3750, 2), "usd"),
            Some((3, "1250".to_string()))
        );
        assert_eq!(per_unit(d(1, 0), d(-750, 2), d(-750, 2), "usd"), None);
        assert_eq!(per_unit(d(15, 1), d(100, 0), d(150, 0), "usd"), None);
    }
}
