//! Organisations: a customer's members. Each add or remove is one transaction that locks the
//! customer, writes the member, appends the new member count to the seat history
//! (`seat_changes`, which seat billing and MRR are computed from) and, when the customer's
//! subscription has a per-seat price, the prorated seat line for its next invoice.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::audit::{self, Change, Origin, Resource};
use crate::db;
use crate::db::members::{MemberFields, MemberRow};
use crate::db::plans::PlanCache;
use crate::domain::id::is_valid_external_id;
use crate::domain::status::MemberRole;
use crate::entitlements::resolve::{customer_must_exist, customer_not_found};
use crate::error::{Error, Result};
use crate::ids::TenantId;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberInput {
    /// `owner`, `admin`, `member` or `viewer`.
    pub role: String,
    pub email: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Member {
    /// The tenant's own user id.
    pub member_id: String,
    pub customer: String,
    pub role: MemberRole,
    pub email: Option<String>,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<MemberRow> for Member {
    fn from(r: MemberRow) -> Self {
        Member {
            member_id: r.member_id,
            customer: r.customer_id,
            role: r.role,
            email: r.email,
            name: r.name,
            created_at: r.created_at,
        }
    }
}

pub fn member_not_found() -> Error {
    Error::not_found("member_not_found", "No such member of this customer.")
}

fn validate(member_id: &str, body: &MemberInput) -> Result<MemberRole> {
    if !is_valid_external_id(member_id) {
        return Err(Error::invalid_param(
            "invalid_member_id",
            "member_id",
            "Member ids are 1 to 255 visible ASCII characters without `/ ? # %`.",
        ));
    }
    let role = MemberRole::parse(&body.role).map_err(|_| {
        Error::invalid_param(
            "invalid_role",
            "role",
            "role must be one of owner, admin, member, viewer.",
        )
    })?;
    if let Some(email) = &body.email {
        if email.len() > 320 || !email.contains('@') {
            return Err(Error::invalid_param(
                "invalid_email",
                "email",
                "email is not an email address.",
            ));
        }
    }
    if body.name.as_ref().is_some_and(|n| n.len() > 500) {
        return Err(Error::invalid_param(
            "invalid_name",
            "name",
            "name is longer than 500 characters.",
        ));
    }
    Ok(role)
}

/// Adds a member to a customer, or updates it: its role, and its email and name when given
/// (like a customer's `PUT`, fields not given are kept); `(member, added)`.
pub async fn put(
    db: &PgPool,
    plans: &PlanCache,
    origin: &Origin,
    tenant_id: &TenantId,
    (customer_id, member_id): (&str, &str),
    body: &MemberInput,
    now: DateTime<Utc>,
) -> Result<(Member, bool)> {
    let role = validate(member_id, body)?;
    let mut tx = audit::begin(db, origin).await?;
    if !db::members::lock_customer(&mut tx, tenant_id, customer_id).await? {
        return Err(customer_not_found());
    }
    let before = db::members::get(&mut tx, tenant_id, customer_id, member_id)
        .await?
        .map(Member::from);
    let fields = MemberFields {
        role,
        email: body.email.as_deref(),
        name: body.name.as_deref(),
    };
    let (row, added) =
        db::members::upsert(&mut tx, tenant_id, customer_id, member_id, &fields, now).await?;
    if added {
        let seats =
            db::members::record_seat_change(&mut tx, tenant_id, customer_id, member_id, 1, now)
                .await?;
        let seats = i64::from(seats);
        crate::billing::seats::members_changed(
            &mut tx,
            plans,
            tenant_id,
            customer_id,
            (seats - 1, seats),
            now,
        )
        .await?;
    }
    let member = Member::from(row);
    let resource = Resource::Member {
        customer: customer_id,
        member: member_id,
    };
    let change = match &before {
        None => Change::new(resource, "added"),
        Some(before) => Change::new(resource, "updated").before(before),
    };
    audit::record(&mut tx, tenant_id, change.after(&member), now).await?;
    tx.commit().await?;
    Ok((member, added))
}

/// Removes a member from a customer; the removed member.
pub async fn remove(
    db: &PgPool,
    plans: &PlanCache,
    origin: &Origin,
    tenant_id: &TenantId,
    customer_id: &str,
    member_id: &str,
    now: DateTime<Utc>,
) -> Result<Member> {
    let mut tx = audit::begin(db, origin).await?;
    if !db::members::lock_customer(&mut tx, tenant_id, customer_id).await? {
        return Err(customer_not_found());
    }
    let row = db::members::delete(&mut tx, tenant_id, customer_id, member_id)
        .await?
        .ok_or_else(member_not_found)?;
    let seats = i64::from(
        db::members::record_seat_change(&mut tx, tenant_id, customer_id, member_id, -1, now)
            .await?,
    );
    crate::billing::seats::members_changed(
        &mut tx,
        plans,
        tenant_id,
        customer_id,
        (seats + 1, seats),
        now,
    )
    .await?;
    let member = Member::from(row);
    let resource = Resource::Member {
        customer: customer_id,
        member: member_id,
    };
    let change = Change::new(resource, "removed").before(&member);
    audit::record(&mut tx, tenant_id, change, now).await?;
    tx.commit().await?;
    Ok(member)
}

/// Up to `limit` members of a customer after `starting_after`, plus one more if there is one.
pub async fn list(
    db: &PgPool,
    tenant_id: &TenantId,
    customer_id: &str,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<Member>> {
    let mut conn = db.acquire().await?;
    customer_must_exist(&mut conn, tenant_id, customer_id).await?;
    let rows =
        db::members::list(&mut conn, tenant_id, customer_id, starting_after, limit + 1).await?;
    Ok(rows.into_iter().map(Member::from).collect())
}
