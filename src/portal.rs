//! The hosted customer portal's content (SPEC §9): everything the page shows one customer,
//! gathered from the same services the API uses — the plan and period, usage against limits,
//! the other plans with what an upgrade would charge now (worked out by the change's own code,
//! `billing::lifecycle::plan_change`), the upcoming invoice, invoices, credit and members. The
//! page itself (HTML, cookies, CSRF) is rendered at the HTTP edge.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::billing::invoicing;
use crate::billing::lifecycle::When;
use crate::billing::subscribing::{self, ChangePreview, ChangeSubscription};
use crate::billing::views::{Invoice, Subscription, UpcomingInvoice};
use crate::catalog::plans::{self, EntitlementOut, Plan, PriceOut};
use crate::customers::members::{self, Member};
use crate::customers::{self, Customer};
use crate::db::plans::PlanCache;
use crate::domain::entitlement::FeatureType;
use crate::domain::money;
use crate::entitlements::check::CheckResult;
use crate::entitlements::Entitlements;
use crate::error::{Error, Result};
use crate::tenancy::sessions::SessionCtx;
use crate::tenancy::settings;

/// The accent colour when the tenant has set none.
pub const DEFAULT_ACCENT: &str = "#4F46E5";

/// What the portal needs from the application.
pub struct Deps<'a> {
    pub db: &'a PgPool,
    pub plans: &'a PlanCache,
    pub entitlements: &'a Entitlements,
}

/// The tenant's branding.
#[derive(Debug, Clone)]
pub struct Brand {
    pub name: String,
    /// `#RRGGBB` (validated when set).
    pub accent_color: String,
    pub return_url: Option<String>,
}

/// The customer's subscription, as the page words it.
#[derive(Debug, Clone)]
pub struct Current {
    pub plan_key: String,
    pub plan_name: String,
    pub price: String,
    pub status: String,
    pub period_start: String,
    pub period_end: String,
    /// "Renews on …", "Trial ends on …" or "Cancels on …".
    pub next: String,
    pub cancel_at_period_end: bool,
    /// A change waiting for the period end.
    pub pending: Option<String>,
    /// The coupon discounting its invoices (SPEC §15), worded.
    pub discount: Option<String>,
    /// Its add-ons (SPEC §15), worded: name, quantity, price, and when one is removed.
    pub addons: Vec<String>,
}

/// One usage bar.
#[derive(Debug, Clone)]
pub struct Meter {
    pub feature: String,
    pub name: String,
    pub used: String,
    /// `None`: unlimited.
    pub limit: Option<String>,
    /// The bar's fill, 0 to 100.
    pub percent: u32,
    /// `safe`, `warning`, `critical` or `exceeded`.
    pub warning_level: String,
    pub resets_at: Option<String>,
    /// "2.50 of 10.00 USD cap billed so far", for features with overage.
    pub overage: Option<String>,
}

/// A feature that is on or off, or a fixed limit.
#[derive(Debug, Clone)]
pub struct FeatureLine {
    pub name: String,
    pub value: String,
}

/// Another plan, side by side with the current one.
#[derive(Debug, Clone)]
pub struct Offer {
    pub key: String,
    pub name: String,
    pub price: String,
    pub current: bool,
    /// What changes against the current plan, one line per feature.
    pub changes: Vec<String>,
    /// `Upgrade`, `Downgrade` or `Switch`.
    pub action: String,
    /// What the change would charge now ("28.06 USD now"), or when it takes effect.
    pub effect: String,
}

/// Everything the portal page shows.
#[derive(Debug)]
pub struct View {
    pub brand: Brand,
    pub customer: Customer,
    pub current: Option<Current>,
    pub meters: Vec<Meter>,
    pub features: Vec<FeatureLine>,
    pub offers: Vec<Offer>,
    pub upcoming: Option<UpcomingInvoice>,
    pub invoices: Vec<Invoice>,
    pub credit_balance: String,
    pub members: Vec<Member>,
}

/// A change to confirm: the offer and exactly what it would do.
#[derive(Debug)]
pub struct Confirm {
    pub brand: Brand,
    pub offer: Offer,
    pub preview: ChangePreview,
    pub amount_now: String,
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn price_text(p: &PriceOut) -> String {
    let currency = p.currency.to_uppercase();
    let unit = if p.per_seat { " / seat" } else { "" };
    match &p.amount {
        Some(amount) => format!("{amount} {currency}{unit} / {}", p.interval.as_str()),
        None => format!("tiered{unit} / {}", p.interval.as_str()),
    }
}

/// A plan's price, as the pages word it ("31.00 USD / month", "Free").
pub fn plan_price(plan: &Plan) -> String {
    if plan.prices.is_empty() {
        return "Free".to_string();
    }
    plan.prices
        .iter()
        .map(price_text)
        .collect::<Vec<_>>()
        .join(" + ")
}

/// What a plan grants of one feature ("100 / month", "unlimited", "yes").
pub fn entitlement_text(e: &EntitlementOut) -> String {
    match e.feature_type {
        FeatureType::Boolean => if e.enabled { "yes" } else { "no" }.to_string(),
        _ if e.unlimited => "unlimited".to_string(),
        _ => {
            let limit = e.limit.map(|l| l.0.normalize().to_string());
            let reset = e.reset.map(|r| format!(" / {}", r.as_str()));
            format!(
                "{}{}",
                limit.unwrap_or_else(|| "—".into()),
                reset.unwrap_or_default()
            )
        }
    }
}

/// What changes from `from` to `to`, feature by feature (the feature's name when known).
fn changes(from: Option<&Plan>, to: &Plan, name_of: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut out = Vec::new();
    for e in &to.entitlements {
        let before = from
            .and_then(|p| p.entitlements.iter().find(|f| f.feature == e.feature))
            .map(entitlement_text)
            .unwrap_or_else(|| "no".into());
        let after = entitlement_text(e);
        if before != after {
            out.push(format!("{}: {before} → {after}", name_of(&e.feature)));
        }
    }
    if let Some(from) = from {
        for e in &from.entitlements {
            if !to.entitlements.iter().any(|f| f.feature == e.feature) {
                out.push(format!(
                    "{}: {} → no",
                    name_of(&e.feature),
                    entitlement_text(e)
                ));
            }
        }
    }
    out
}

/// A usage bar from a feature's check result.
pub fn meter(r: &CheckResult, name: String) -> Meter {
    let used = r.used.map(|u| u.0).unwrap_or_default();
    let percent = match (r.unlimited, r.limit) {
        (false, Some(limit)) if !limit.0.is_zero() => {
            let p = (used / limit.0 * rust_decimal::Decimal::ONE_HUNDRED)
                .round()
                .clamp(
                    rust_decimal::Decimal::ZERO,
                    rust_decimal::Decimal::ONE_HUNDRED,
                );
            u32::try_from(p.mantissa() / 10i128.pow(p.scale())).unwrap_or(100)
        }
        (false, Some(_)) => 100,
        _ => 0,
    };
    Meter {
        feature: r.feature.clone(),
        name,
        used: used.normalize().to_string(),
        limit: (!r.unlimited)
            .then(|| r.limit.map(|l| l.0.normalize().to_string()))
            .flatten(),
        percent,
        warning_level: r
            .warning_level
            .map(|w| w.as_str().to_string())
            .unwrap_or_else(|| "safe".into()),
        resets_at: r.resets_at.map(when),
        overage: r.overage.as_ref().map(|o| match &o.cap_amount {
            Some(cap) => format!("{} of a {cap} cap billed so far", o.billed_so_far),
            None => format!("{} billed so far", o.billed_so_far),
        }),
    }
}

async fn brand(db: &PgPool, s: &SessionCtx) -> Result<Brand> {
    let t = settings::get(db, &s.tenant.tenant_id).await?;
    Ok(Brand {
        name: t.portal.name.unwrap_or(t.name),
        accent_color: t
            .portal
            .accent_color
            .unwrap_or_else(|| DEFAULT_ACCENT.to_string()),
        return_url: t.portal.return_url,
    })
}

/// The brand alone (for error and confirmation pages).
pub async fn branding(db: &PgPool, s: &SessionCtx) -> Result<Brand> {
    brand(db, s).await
}

/// A subscription's add-ons as the page words them ("Advanced Analytics × 2 · 2000.00 USD /
/// month, removed on 2027-02-01").
async fn addons_text(
    deps: &Deps<'_>,
    tenant_id: &crate::ids::TenantId,
    sub: &Subscription,
) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(sub.addons.len());
    for a in &sub.addons {
        let addon =
            crate::catalog::addons::get(deps.db, deps.plans, tenant_id, &a.addon, Some(a.version))
                .await?;
        let price = addon
            .prices
            .iter()
            .find(|p| p.interval == sub.interval.into())
            .map(|p| {
                format!(
                    " · {} {} / {}",
                    p.amount,
                    p.currency.to_uppercase(),
                    sub.interval.as_str()
                )
            })
            .unwrap_or_default();
        let removed = a
            .removes_at
            .map(|r| format!(", removed on {}", day(r)))
            .unwrap_or_default();
        out.push(format!("{} × {}{price}{removed}", addon.name, a.quantity));
    }
    Ok(out)
}

fn current(sub: &Subscription, plan: Option<&Plan>, addons: Vec<String>) -> Current {
    let plan_name = plan.map(|p| p.name.clone()).unwrap_or(sub.plan.clone());
    let status = sub.status.as_str().to_string();
    let next = if sub.cancel_at_period_end {
        format!("Cancels on {}", day(sub.current_period_end))
    } else if status == "trialing" {
        format!("Trial ends on {}", day(sub.current_period_end))
    } else {
        format!("Renews on {}", day(sub.current_period_end))
    };
    Current {
        plan_key: sub.plan.clone(),
        plan_name,
        // Negotiated prices (SPEC §15) in place of the plan's.
        price: match &sub.price_overrides {
            Some(o) => o.iter().map(price_text).collect::<Vec<_>>().join(" + "),
            None => plan.map(plan_price).unwrap_or_default(),
        },
        status,
        period_start: day(sub.current_period_start),
        period_end: day(sub.current_period_end),
        next,
        cancel_at_period_end: sub.cancel_at_period_end,
        pending: sub.pending_change.as_ref().map(|c| match c.at {
            Some(at) => format!("Changes to {} on {}", c.plan, day(at)),
            None => format!("Changes to {} at the end of the period", c.plan),
        }),
        discount: sub.discount.as_ref().map(|d| match d.end {
            Some(end) => format!("Discount {} applies until {}", d.coupon, day(end)),
            None => format!("Discount {} applies", d.coupon),
        }),
        addons,
    }
}

fn offer_effect(p: &ChangePreview) -> (String, String) {
    let currency = p.currency.to_uppercase();
    match p.takes_effect {
        When::PeriodEnd => ("Downgrade".into(), format!("from {}", day(p.effective_at))),
        When::Now if p.amount_now.is_sign_negative() => (
            "Switch".into(),
            format!(
                "{} {currency} credited now",
                money::format(-p.amount_now, &p.currency)
            ),
        ),
        When::Now => (
            "Upgrade".into(),
            format!(
                "{} {currency} now",
                money::format(p.amount_now, &p.currency)
            ),
        ),
    }
}

/// Everything the portal shows the session's customer, at `now` (the tenant's clock).
pub async fn view(deps: &Deps<'_>, s: &SessionCtx, now: DateTime<Utc>) -> Result<View> {
    let tenant_id = &s.tenant.tenant_id;
    let customer_id = s.customer_id.as_str();
    let customer = customers::get(deps.db, tenant_id, customer_id).await?;
    let features = crate::catalog::features::list(deps.db, tenant_id, None, 100).await?;
    let name_of = |key: &str| {
        features
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.name.clone())
            .unwrap_or_else(|| key.to_string())
    };
    let sub = {
        let mut conn = deps.db.acquire().await?;
        crate::db::subscriptions::live_for_customer(&mut conn, tenant_id, customer_id)
            .await?
            .map(Subscription::from)
    };
    let all_plans = plans::list(deps.db, deps.plans, tenant_id, None, 100).await?;
    let current_plan = sub
        .as_ref()
        .and_then(|s| all_plans.iter().find(|p| p.key == s.plan));

    let list = deps.entitlements.list(&s.tenant, customer_id).await?;
    let mut meters = Vec::new();
    let mut lines = Vec::new();
    for r in &list.data {
        match r.feature_type {
            Some(FeatureType::Metered) => meters.push(meter(r, name_of(&r.feature))),
            Some(FeatureType::Boolean) => lines.push(FeatureLine {
                name: name_of(&r.feature),
                value: "included".into(),
            }),
            Some(_) => lines.push(FeatureLine {
                name: name_of(&r.feature),
                value: if r.unlimited {
                    "unlimited".into()
                } else {
                    r.limit
                        .map(|l| l.0.normalize().to_string())
                        .unwrap_or_default()
                },
            }),
            None => {}
        }
    }

    let mut offers = Vec::new();
    for plan in &all_plans {
        let is_current = sub.as_ref().is_some_and(|s| s.plan == plan.key);
        let (action, effect) = match (&sub, is_current) {
            (Some(sub), false) => {
                let body = ChangeSubscription {
                    plan: plan.key.clone(),
                    interval: None,
                    when: None,
                    version: None,
                    price_overrides: None,
                };
                match subscribing::preview_change(
                    deps.db, deps.plans, tenant_id, &sub.id, &body, now,
                )
                .await
                {
                    Ok(p) => offer_effect(&p),
                    // A plan this subscription cannot move to (no price for its interval).
                    Err(Error::Rejected { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            _ => (String::new(), String::new()),
        };
        offers.push(Offer {
            key: plan.key.clone(),
            name: plan.name.clone(),
            price: plan_price(plan),
            current: is_current,
            changes: if is_current {
                Vec::new()
            } else {
                changes(current_plan, plan, &name_of)
            },
            action,
            effect,
        });
    }

    let upcoming = match &sub {
        Some(_) => invoicing::upcoming(deps.db, deps.plans, tenant_id, customer_id)
            .await
            .ok(),
        None => None,
    };
    let invoices = invoicing::for_customer(deps.db, tenant_id, customer_id, None, 24).await?;
    let members = members::list(deps.db, tenant_id, customer_id, None, 100).await?;
    Ok(View {
        brand: brand(deps.db, s).await?,
        credit_balance: format!("{} USD", customer.credit_balance),
        customer,
        current: match &sub {
            Some(s) => Some(current(
                s,
                current_plan,
                addons_text(deps, tenant_id, s).await?,
            )),
            None => None,
        },
        meters,
        features: lines,
        offers,
        upcoming,
        invoices,
        members,
    })
}

/// What moving to `plan` would do, for the confirmation page.
pub async fn confirm(
    deps: &Deps<'_>,
    s: &SessionCtx,
    plan: &str,
    now: DateTime<Utc>,
) -> Result<Confirm> {
    let tenant_id = &s.tenant.tenant_id;
    let sub = subscribing::live_for_customer(deps.db, tenant_id, &s.customer_id).await?;
    let target = plans::get(deps.db, deps.plans, tenant_id, plan, None).await?;
    let all_plans = plans::list(deps.db, deps.plans, tenant_id, None, 100).await?;
    let current_plan = all_plans.iter().find(|p| p.key == sub.plan);
    let body = ChangeSubscription {
        plan: plan.to_string(),
        interval: None,
        when: None,
        version: None,
        price_overrides: None,
    };
    let preview =
        subscribing::preview_change(deps.db, deps.plans, tenant_id, &sub.id, &body, now).await?;
    let (action, effect) = offer_effect(&preview);
    let features = crate::catalog::features::list(deps.db, tenant_id, None, 100).await?;
    let name_of = |key: &str| {
        features
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.name.clone())
            .unwrap_or_else(|| key.to_string())
    };
    Ok(Confirm {
        brand: brand(deps.db, s).await?,
        amount_now: money::format(preview.amount_now, &preview.currency),
        offer: Offer {
            key: target.key.clone(),
            name: target.name.clone(),
            price: plan_price(&target),
            current: false,
            changes: changes(current_plan, &target, &name_of),
            action,
            effect,
        },
        preview,
    })
}
