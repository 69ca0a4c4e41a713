//! Concurrency slots: a lease holds one slot of a `concurrency` feature until it is released
//! or expires. Taking a slot is serialized per customer and feature (`db::leases::lock_slots`),
//! so the limit holds across any number of processes.

use crate::ids::LeaseId;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::check::feature_type;
use super::Entitlements;
use crate::db::leases::{self, LeaseRow, NewLease};
use crate::domain::entitlement::{Denial, FeatureType};
use crate::domain::plan::gate_use;
use crate::error::{Error, Result};
use crate::tenancy::TenantCtx;

const DEFAULT_TTL_SECONDS: i64 = 300;
const MAX_TTL_SECONDS: i64 = 86_400;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLease {
    pub customer: String,
    pub feature: String,
    /// 1 to 86400 seconds, default 300. The slot frees itself when it expires.
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Lease {
    #[schema(value_type = String, example = "lease_0192f3a45b6c7d8e9f00112233445566")]
    pub id: LeaseId,
    pub customer: String,
    pub feature: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl From<LeaseRow> for Lease {
    fn from(r: LeaseRow) -> Self {
        Lease {
            id: r.lease_id,
            customer: r.customer_id,
            feature: r.feature_key,
            expires_at: r.expires_at,
            created_at: r.created_at,
        }
    }
}

impl Entitlements {
    /// Takes a slot, or refuses with `limit_exceeded` when every slot is taken.
    pub async fn take_lease(&self, ctx: &TenantCtx, body: &CreateLease) -> Result<Lease> {
        let ttl = body.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
        if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
            return Err(Error::invalid_param(
                "invalid_ttl",
                "ttl_seconds",
                "ttl_seconds must be between 1 and 86400.",
            ));
        }
        let mut tx = self.db.begin().await?;
        let resolved = self.resolve(&mut tx, ctx, &body.customer).await?;
        let ent = match gate_use(resolved.plan.as_deref(), &body.feature) {
            Ok(ent) => ent,
            Err(denial) => {
                feature_type(&mut tx, &ctx.tenant_id, &body.feature).await?;
                return Err(match denial {
                    Denial::SubscriptionInactive => Error::limit(
                        "subscription_inactive",
                        "The customer has no live subscription.",
                    )
                    .with_param("customer"),
                    _ => Error::limit("not_in_plan", "The feature is not in the customer's plan.")
                        .with_param("feature"),
                });
            }
        };
        if ent.feature_type != FeatureType::Concurrency {
            return Err(Error::invalid_param(
                "feature_not_concurrency",
                "feature",
                "Leases are for concurrency features.",
            ));
        }
        let now = ctx.now(&self.clock);
        let expires_at = now + Duration::seconds(ttl);
        let id: LeaseId = crate::ids::new();
        leases::lock_slots(&mut tx, &ctx.tenant_id, &body.customer, &body.feature).await?;
        let taken = leases::take(
            &mut tx,
            &NewLease {
                tenant_id: &ctx.tenant_id,
                lease_id: &id,
                customer_id: &body.customer,
                feature_key: &body.feature,
                expires_at,
                now,
                limit: ent.limit,
            },
        )
        .await?;
        let Some(created_at) = taken else {
            return Err(Error::limit(
                "limit_exceeded",
                "Every concurrency slot is taken; release a lease or wait for one to expire.",
            )
            .with_param("feature"));
        };
        tx.commit().await?;
        Ok(Lease {
            id,
            customer: body.customer.clone(),
            feature: body.feature.clone(),
            expires_at,
            created_at,
        })
    }

    /// Gives a slot back.
    pub async fn release_lease(&self, ctx: &TenantCtx, lease_id: &LeaseId) -> Result<Lease> {
        let mut conn = self.db.acquire().await?;
        leases::release(&mut conn, &ctx.tenant_id, lease_id)
            .await?
            .map(Lease::from)
            .ok_or_else(Error::no_such::<LeaseId>)
    }
}
