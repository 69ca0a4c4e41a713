//! The audit log (SPEC §12): every change appends one entry — who, what, before and after,
//! when on the tenant's clock — in the transaction of the change, so a rolled-back change
//! leaves none and a committed one always has one.
//!
//! A write transaction begins with [`begin`], which names its [`Origin`] (actor and request
//! id) for the transaction; [`record`] then needs only what changed. Usage events are their
//! own record and are not copied here.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::db;
pub use crate::domain::audit::{Actor, Origin, Resource};
use crate::domain::id::{AuditId, PrefixedId, TenantId};
use crate::error::{Error, Result};

/// Begins a write transaction acting as `origin`.
pub async fn begin(db: &PgPool, origin: &Origin) -> Result<Transaction<'static, Postgres>> {
    let mut tx = db.begin().await?;
    db::audit::act_as(&mut tx, origin).await?;
    Ok(tx)
}

/// Names `origin` as the actor for the rest of a transaction begun elsewhere.
pub async fn act_as(conn: &mut PgConnection, origin: &Origin) -> Result<()> {
    Ok(db::audit::act_as(conn, origin).await?)
}

/// One change: `<type>.<verb>` on `resource`, with the resource before and after as JSON.
pub struct Change<'a> {
    pub resource: Resource<'a>,
    pub verb: &'a str,
    /// The customer the change is about when the resource is not the customer or one of its
    /// members (a subscription's, an invoice's).
    pub customer: Option<&'a str>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl<'a> Change<'a> {
    pub fn new(resource: Resource<'a>, verb: &'a str) -> Self {
        Change {
            resource,
            verb,
            customer: None,
            before: None,
            after: None,
        }
    }

    pub fn before(mut self, value: &impl Serialize) -> Self {
        self.before = Some(json(value));
        self
    }

    pub fn after(mut self, value: &impl Serialize) -> Self {
        self.after = Some(json(value));
        self
    }

    pub fn customer(mut self, customer: &'a str) -> Self {
        self.customer = Some(customer);
        self
    }
}

fn json(value: &impl Serialize) -> Value {
    // The API's own types always serialize; a failure would only lose the snapshot.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Appends `change`, made at `at` on the tenant's clock, in the caller's transaction (which
/// must have named its actor: [`begin`] or [`act_as`]). A change whose after equals its before
/// (a `PUT` of what is already there) changed nothing and is not logged.
pub async fn record(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    change: Change<'_>,
    at: DateTime<Utc>,
) -> Result<()> {
    if change.before.is_some() && change.before == change.after {
        return Ok(());
    }
    let customer = match change.resource {
        Resource::Customer(id) => Some(id),
        Resource::Member { customer, .. } => Some(customer),
        _ => change.customer,
    };
    let audit_id: AuditId = crate::ids::new();
    db::audit::append(
        conn,
        &db::audit::NewEntry {
            tenant_id,
            audit_id: &audit_id,
            action: &change.resource.action(change.verb),
            resource: &change.resource.to_string(),
            customer_id: customer,
            before: change.before.as_ref(),
            after: change.after.as_ref(),
            at,
        },
    )
    .await?;
    Ok(())
}

/// An audit log entry as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    #[schema(value_type = String, example = "aud_0192f3a45b6c7d8e9f00112233445566")]
    pub id: AuditId,
    /// `key_…`, `admin`, `cli`, `session:<id>`, `stripe:<event id>` or `worker`.
    pub actor: String,
    /// `<type>.<verb>`, e.g. `subscription.canceled`.
    pub action: String,
    /// `<type>/<id>`, e.g. `customer/user_123`.
    pub resource: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    pub request_id: Option<String>,
    /// On the tenant's clock.
    pub created_at: DateTime<Utc>,
}

impl From<db::audit::EntryRow> for AuditEntry {
    fn from(r: db::audit::EntryRow) -> Self {
        AuditEntry {
            id: r.audit_id,
            actor: r.actor,
            action: r.action,
            resource: r.resource,
            before: r.before,
            after: r.after,
            request_id: r.request_id,
            created_at: r.created_at,
        }
    }
}

/// Which entries to list.
pub struct Query<'a> {
    pub resource: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub action: Option<&'a str>,
    pub starting_after: Option<&'a str>,
    pub limit: i64,
}

/// Up to `limit` entries, newest first, plus one more if there is one.
pub async fn list(db: &PgPool, tenant_id: &TenantId, q: &Query<'_>) -> Result<Vec<AuditEntry>> {
    let cursor = match q.starting_after {
        None => None,
        Some(s) => Some(AuditId::parse(s).ok_or_else(Error::no_such::<AuditId>)?),
    };
    let mut conn = db.acquire().await?;
    let rows = db::audit::list(
        &mut conn,
        tenant_id,
        &db::audit::Filter {
            resource: q.resource,
            actor: q.actor,
            action: q.action,
            starting_after: cursor.as_ref(),
            limit: q.limit + 1,
        },
    )
    .await?
    .ok_or_else(Error::no_such::<AuditId>)?;
    Ok(rows.into_iter().map(AuditEntry::from).collect())
}

/// The entries about one customer, oldest first.
pub async fn about_customer(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<Vec<AuditEntry>> {
    let rows = db::audit::about_customer(conn, tenant_id, customer_id).await?;
    Ok(rows.into_iter().map(AuditEntry::from).collect())
}
