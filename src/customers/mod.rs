//! Customers: the tenant's own users or organisations, keyed by the tenant's ids. A new
//! customer is created in Stripe (through the outbox) and subscribed to the tenant's default
//! plan, in the transaction that creates it.

pub mod export;
pub mod members;

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::audit::{self, Change, Origin, Resource};
use crate::billing::subscriptions::NewSubscription;
use crate::db;
use crate::db::customers::{CustomerFields, CustomerRow};
use crate::db::plans::PlanCache;
use crate::entitlements::resolve::customer_not_found;
use crate::error::{Error, Result};
use crate::tenancy::TenantCtx;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerInput {
    pub email: Option<String>,
    pub name: Option<String>,
    /// A JSON object of the tenant's own data.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Payment terms in days (default 0).
    pub net_days: Option<i32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Customer {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub net_days: i32,
    /// Credit the customer is owed, used by its next invoices.
    #[schema(example = "0.00")]
    pub credit_balance: String,
    pub created_at: DateTime<Utc>,
}

fn validate(id: &str, c: &CustomerInput) -> Result<()> {
    if !crate::ids::is_valid_external_id(id) {
        return Err(Error::invalid_param(
            "invalid_id",
            "id",
            "Customer ids are 1 to 255 visible ASCII characters without `/ ? # %`.",
        ));
    }
    if let Some(email) = &c.email {
        if email.len() > 320 || !email.contains('@') {
            return Err(Error::invalid_param(
                "invalid_email",
                "email",
                "email is not an email address.",
            ));
        }
    }
    if c.name.as_ref().is_some_and(|n| n.len() > 500) {
        return Err(Error::invalid_param(
            "invalid_name",
            "name",
            "name is longer than 500 characters.",
        ));
    }
    if let Some(m) = &c.metadata {
        if !m.is_object() {
            return Err(Error::invalid_param(
                "invalid_metadata",
                "metadata",
                "metadata must be a JSON object.",
            ));
        }
    }
    if c.net_days.is_some_and(|d| !(0..=365).contains(&d)) {
        return Err(Error::invalid_param(
            "invalid_net_days",
            "net_days",
            "net_days must be between 0 and 365.",
        ));
    }
    Ok(())
}

impl From<CustomerRow> for Customer {
    fn from(r: CustomerRow) -> Self {
        Customer {
            id: r.id,
            email: r.email,
            name: r.name,
            metadata: r.metadata,
            net_days: r.net_days,
            credit_balance: crate::domain::money::format(r.credit_balance, "usd"),
            created_at: r.created_at,
        }
    }
}

/// Creates or updates a customer; `(customer, created)`.
pub async fn put(
    db: &PgPool,
    plans: &PlanCache,
    (ctx, origin): (&TenantCtx, &Origin),
    id: &str,
    body: &CustomerInput,
    now: DateTime<Utc>,
) -> Result<(Customer, bool)> {
    validate(id, body)?;
    let tenant_id = &ctx.tenant_id;
    let mut tx = audit::begin(db, origin).await?;
    let before = db::customers::get(&mut tx, tenant_id, id)
        .await?
        .map(Customer::from);
    let fields = CustomerFields {
        email: body.email.as_deref(),
        name: body.name.as_deref(),
        metadata: body.metadata.as_ref(),
        net_days: body.net_days,
    };
    let (row, inserted) = db::customers::upsert(&mut tx, tenant_id, id, &fields, now)
        .await?
        .ok_or_else(customer_erased)?;
    let customer = Customer::from(row);
    let change = match &before {
        None => Change::new(Resource::Customer(id), "created"),
        Some(before) => Change::new(Resource::Customer(id), "updated").before(before),
    };
    audit::record(&mut tx, tenant_id, change.after(&customer), now).await?;
    if inserted {
        crate::webhooks::events::emit(
            &mut tx,
            tenant_id,
            crate::webhooks::events::CUSTOMER_CREATED,
            &customer,
        )
        .await?;
        crate::db::outbox::enqueue(
            &mut tx,
            tenant_id,
            crate::domain::outbox::OutboxKind::Customer,
            id,
            None,
        )
        .await?;
        if let Some(default_plan) = &ctx.default_plan {
            if let Some(version) =
                db::plans::latest_version(&mut tx, tenant_id, default_plan).await?
            {
                if let Some(plan) = plans.get(&mut tx, tenant_id, default_plan, version).await? {
                    let new = NewSubscription {
                        tenant_id,
                        customer_id: id,
                        plan: &plan,
                        interval: plan.default_interval(),
                        trial_days: plan.trial_days,
                        now,
                        replaces: None,
                        discount: None,
                        price_overrides: None,
                    };
                    crate::billing::lifecycle::start(&mut tx, plans, &new).await?;
                }
            }
        }
    }
    tx.commit().await?;
    Ok((customer, inserted))
}

/// `PUT` of an id whose customer was erased: the id is not reused.
fn customer_erased() -> Error {
    Error::conflict(
        "customer_erased",
        "This customer was erased; its id cannot be used again.",
    )
}

/// Erases a customer (GDPR): its live subscription ends now (with its final invoice, and no
/// fall-back to the default plan), and its email, name and metadata and its members' emails
/// and names are removed from every table and every stored copy (the audit log keeps the
/// facts, with those fields `"[erased]"`). Usage, invoices and history stay for accounting;
/// the Stripe customer's email and name are cleared through the outbox. Returns the erased
/// customer.
pub async fn erase(
    db: &PgPool,
    plans: &PlanCache,
    origin: &Origin,
    tenant_id: &TenantId,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Customer> {
    let mut tx = audit::begin(db, origin).await?;
    if !db::members::lock_customer(&mut tx, tenant_id, id).await? {
        return Err(customer_not_found());
    }
    let before = db::customers::get(&mut tx, tenant_id, id)
        .await?
        .ok_or_else(customer_not_found)?;
    // The values to scrub from stored copies, read before they are cleared.
    let members = db::members::list(&mut tx, tenant_id, id, None, i64::MAX).await?;
    let emails: Vec<String> = before
        .email
        .iter()
        .chain(members.iter().filter_map(|m| m.email.as_ref()))
        .cloned()
        .collect();
    let personal: Vec<String> = emails
        .iter()
        .chain(&before.name)
        .chain(members.iter().filter_map(|m| m.name.as_ref()))
        .cloned()
        .collect();
    let erased = db::customers::erase(&mut tx, tenant_id, id, now)
        .await?
        .ok_or_else(customer_not_found)?;
    db::members::erase(&mut tx, tenant_id, id).await?;
    // The customer is gone now, so ending its subscription does not fall back to the default
    // plan.
    if let Some(sub) = db::subscriptions::live_for_customer(&mut tx, tenant_id, id).await? {
        crate::billing::lifecycle::erase_subscription(&mut tx, plans, tenant_id, sub, now).await?;
    }
    crate::db::outbox::enqueue(
        &mut tx,
        tenant_id,
        crate::domain::outbox::OutboxKind::CustomerErase,
        id,
        None,
    )
    .await?;
    let erased = Customer::from(erased);
    let change = Change::new(Resource::Customer(id), "erased")
        .before(&Customer::from(before))
        .after(&erased);
    audit::record(&mut tx, tenant_id, change, now).await?;
    // Last, so that the entries just written are scrubbed too.
    db::erasure::scrub_copies(&mut tx, tenant_id, id, &emails, &personal).await?;
    db::audit::erase_customer(&mut tx, tenant_id, id).await?;
    tx.commit().await?;
    Ok(erased)
}

pub async fn get(db: &PgPool, tenant_id: &TenantId, id: &str) -> Result<Customer> {
    let mut conn = db.acquire().await?;
    db::customers::get(&mut conn, tenant_id, id)
        .await?
        .map(Customer::from)
        .ok_or_else(customer_not_found)
}

/// Up to `limit` customers after `starting_after`, plus one more if there is one.
pub async fn list(
    db: &PgPool,
    tenant_id: &TenantId,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<Customer>> {
    let mut conn = db.acquire().await?;
    let rows = db::customers::list(&mut conn, tenant_id, starting_after, limit + 1).await?;
    Ok(rows.into_iter().map(Customer::from).collect())
}

/// Up to `limit` customers whose id starts with `query` or whose email contains it, after
/// `starting_after`, plus one more if there is one.
pub async fn search(
    db: &PgPool,
    tenant_id: &TenantId,
    query: &str,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<Customer>> {
    let mut conn = db.acquire().await?;
    let rows =
        db::customers::search(&mut conn, tenant_id, query, starting_after, limit + 1).await?;
    Ok(rows.into_iter().map(Customer::from).collect())
}
