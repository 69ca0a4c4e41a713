//! The tenant console's content (SPEC §9): plans side by side, customers (search and cursor
//! pages), MRR over the last 12 months, and one customer's subscription, usage, invoices,
//! alerts and audit entries — from the services the API uses. The pages are rendered at the
//! HTTP edge.

use chrono::{DateTime, Utc};

use crate::analytics::{self, MrrSeries, Summary};
use crate::audit::{self, AuditEntry};
use crate::billing::invoicing;
use crate::billing::views::{Invoice, Subscription};
use crate::catalog::plans::{self, Plan};
use crate::customers::{self, Customer};
use crate::entitlements::alerts::Alert;
use crate::error::Result;
use crate::portal::{self, Deps, Meter};
use crate::tenancy::{settings, TenantCtx};

/// A page of customers.
pub const PAGE: i64 = 25;

/// The console's home page.
#[derive(Debug)]
pub struct Home {
    pub tenant_name: String,
    pub plans: Vec<PlanCard>,
    pub summary: Summary,
    pub mrr: MrrSeries,
    pub customers: Vec<Customer>,
    /// The cursor of the next page, when there is one.
    pub next: Option<String>,
    pub query: String,
}

/// A plan, as its card shows it.
#[derive(Debug)]
pub struct PlanCard {
    pub plan: Plan,
    pub price: String,
    pub lines: Vec<String>,
}

/// One customer's page.
#[derive(Debug)]
pub struct CustomerPage {
    pub tenant_name: String,
    pub customer: Customer,
    pub subscription: Option<Subscription>,
    pub meters: Vec<Meter>,
    pub invoices: Vec<Invoice>,
    pub alerts: Vec<Alert>,
    pub audit: Vec<AuditEntry>,
}

/// The home page: plans, MRR, and a page of customers (all, or those matching `query`).
pub async fn home(
    deps: &Deps<'_>,
    ctx: &TenantCtx,
    (query, starting_after): (&str, Option<&str>),
    now: DateTime<Utc>,
) -> Result<Home> {
    let tenant_id = &ctx.tenant_id;
    let tenant = settings::get(deps.db, tenant_id).await?;
    let all = plans::list(deps.db, deps.plans, tenant_id, None, 100).await?;
    let features = crate::catalog::features::list(deps.db, tenant_id, None, 100).await?;
    let name_of = |key: &str| {
        features
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.name.clone())
            .unwrap_or_else(|| key.to_string())
    };
    let cards = all
        .into_iter()
        .map(|plan| PlanCard {
            price: portal::plan_price(&plan),
            lines: plan
                .entitlements
                .iter()
                .map(|e| format!("{}: {}", name_of(&e.feature), portal::entitlement_text(e)))
                .collect(),
            plan,
        })
        .collect();
    let query = query.trim();
    let mut rows = if query.is_empty() {
        customers::list(deps.db, tenant_id, starting_after, PAGE).await?
    } else {
        customers::search(deps.db, tenant_id, query, starting_after, PAGE).await?
    };
    let next = (rows.len() as i64 > PAGE).then(|| {
        rows.truncate(PAGE as usize);
        rows.last().map(|c| c.id.clone()).unwrap_or_default()
    });
    Ok(Home {
        tenant_name: tenant.name,
        plans: cards,
        summary: analytics::summary(deps.db, deps.plans, tenant_id, now).await?,
        mrr: analytics::mrr_series(deps.db, deps.plans, tenant_id, 12, now).await?,
        customers: rows,
        next,
        query: query.to_string(),
    })
}

/// One customer's page.
pub async fn customer(deps: &Deps<'_>, ctx: &TenantCtx, id: &str) -> Result<CustomerPage> {
    let tenant_id = &ctx.tenant_id;
    let customer = customers::get(deps.db, tenant_id, id).await?;
    let tenant = settings::get(deps.db, tenant_id).await?;
    let subscription = {
        match crate::billing::subscribing::live_for_customer(deps.db, tenant_id, id).await {
            Ok(s) => Some(s),
            Err(e) if e.kind() == Some(crate::error::Kind::NotFound) => None,
            Err(e) => return Err(e),
        }
    };
    let features = crate::catalog::features::list(deps.db, tenant_id, None, 100).await?;
    let list = deps.entitlements.list(ctx, id).await?;
    let meters = list
        .data
        .iter()
        .filter(|r| r.feature_type == Some(crate::domain::entitlement::FeatureType::Metered))
        .map(|r| {
            let name = features
                .iter()
                .find(|f| f.key == r.feature)
                .map(|f| f.name.clone())
                .unwrap_or_else(|| r.feature.clone());
            portal::meter(r, name)
        })
        .collect();
    let invoices = invoicing::for_customer(deps.db, tenant_id, id, None, 50).await?;
    let alerts = deps.entitlements.alerts(tenant_id, id, None, 20).await?;
    let mut conn = deps.db.acquire().await?;
    let mut audit = audit::about_customer(&mut conn, tenant_id, id).await?;
    audit.reverse();
    audit.truncate(50);
    Ok(CustomerPage {
        tenant_name: tenant.name,
        customer,
        subscription,
        meters,
        invoices,
        alerts,
        audit,
    })
}
