//! The subscription lifecycle: start, period end (trial end, renewal, scheduled
//! change, cancellation), immediate and scheduled plan changes, cancel, reactivate, and the
//! fallback to the tenant's default plan. Every function runs inside the caller's transaction
//! and takes "now" as an argument (the tenant's clock, or a due time), never reading it.

use crate::ids::{SubscriptionId, TenantId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::invoices::{self, NewInvoice, UsageWindow};
use crate::billing::subscriptions::{self as subs, Ending, NewSubscription, NextPeriod};
use crate::db;
use crate::db::plans::{PlanCache, PlanVersion};
use crate::db::subscriptions::SubscriptionRow;
use crate::domain::addon;
use crate::domain::invoice::{proration_lines, Line, LineType};
use crate::domain::period::{add_months_clamped, next_period, Interval};
use crate::domain::plan::{Charge, PriceDef};
use crate::domain::seats;
use crate::domain::status::SubscriptionStatus;
use crate::error::{Error, Result};

/// What a plan costs for one interval with `members` members: its flat price plus its seat
/// charge (zero for a free plan).
pub fn price_of(plan: &PlanVersion, interval: Interval, members: i64) -> Decimal {
    plan.base_amount(interval, members)
}

/// Monthly-equivalent price, to tell upgrades from downgrades across intervals.
fn monthly(plan: &PlanVersion, interval: Interval, members: i64) -> Decimal {
    price_of(plan, interval, members) / Decimal::from(interval.months())
}

/// The customer's member count at `at` (what per-seat prices count).
pub async fn members_at(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    at: DateTime<Utc>,
) -> Result<i64> {
    Ok(i64::from(
        db::members::seats_at(conn, tenant_id, customer_id, at).await?,
    ))
}

fn interval_of(row: &SubscriptionRow) -> Interval {
    row.interval
}

/// The lines a plan bills in advance for one period with `members` members: a
/// `subscription` line for its flat price and `seat` lines for its per-seat price (one per
/// tier used, for graduated tiers). Lines of zero are left out, so a free plan has none.
pub fn base_lines(
    plan: &PlanVersion,
    interval: Interval,
    members: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<Line> {
    let cadence = match interval {
        Interval::Month => "monthly",
        Interval::Year => "yearly",
    };
    let line = |kind, description, quantity: i64, unit_amount, amount| Line {
        kind,
        description,
        feature: None,
        quantity: Decimal::from(quantity),
        unit_amount,
        amount,
        period_start: start,
        period_end: end,
    };
    let mut lines = Vec::new();
    for price in plan.prices_of(interval) {
        match &price.charge {
            Charge::Flat(amount) => {
                let amount = crate::domain::money::round_to_minor(*amount, &price.currency);
                lines.push(line(
                    LineType::Subscription,
                    format!("{} ({cadence})", plan.name),
                    1,
                    amount,
                    amount,
                ));
            }
            Charge::Seats { pricing, min_seats } => {
                let count = seats::billable_seats(members, *min_seats);
                let parts = seats::charges(pricing, count, &price.currency);
                let tiered = parts.len() > 1;
                for part in parts {
                    let description = if tiered {
                        format!(
                            "{} seats ({cadence}), {} at {}",
                            plan.name,
                            part.quantity,
                            crate::domain::money::format(part.unit_amount, &price.currency)
                        )
                    } else {
                        format!("{} seats ({cadence})", plan.name)
                    };
                    lines.push(line(
                        LineType::Seat,
                        description,
                        part.quantity,
                        part.unit_amount,
                        part.amount,
                    ));
                }
            }
        }
    }
    lines.retain(|l| !l.amount.is_zero());
    lines
}

/// Does renewing on this plan bill anything (a base price, or overage of the ended period)?
fn bills_anything(plan: &PlanVersion, interval: Interval, members: i64) -> bool {
    price_of(plan, interval, members) > Decimal::ZERO
        || plan
            .features
            .iter()
            .any(|f| f.entitlement.overage.is_some())
}

/// Starts a subscription and, unless it is trialing or free, its first invoice (finalized at
/// once).
pub async fn start(
    conn: &mut PgConnection,
    plans: &PlanCache,
    new: &NewSubscription<'_>,
) -> Result<SubscriptionRow> {
    let row = subs::create(conn, new).await?;
    let (tenant_id, customer_id, plan, interval, now) = (
        new.tenant_id,
        new.customer_id,
        new.plan,
        new.interval,
        new.now,
    );
    let members = members_at(conn, tenant_id, customer_id, now).await?;
    let lines = base_lines(
        plan,
        interval,
        members,
        row.current_period_start,
        row.current_period_end,
    );
    if row.status == SubscriptionStatus::Active && !lines.is_empty() {
        invoices::create(
            conn,
            plans,
            NewInvoice {
                tenant_id,
                customer_id,
                subscription_id: Some(&row.subscription_id),
                billing_reason: "subscription_create",
                currency: plan.currency(),
                period_start: row.current_period_start,
                period_end: row.current_period_end,
                lines,
                usage: None,
                finalize_at: now,
                now,
            },
        )
        .await?;
    }
    Ok(row)
}

/// Subscribes a customer whose subscription ended to the tenant's default plan (its newest
/// version), if the tenant has one.
pub async fn fall_back(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    customer_id: &str,
    at: DateTime<Utc>,
    replaces: &SubscriptionId,
) -> Result<Option<SubscriptionRow>> {
    let default = db::plans::default_for_customer(conn, tenant_id, customer_id).await?;
    let Some(default) = default else {
        return Ok(None);
    };
    let Some(plan) = plans
        .get(conn, tenant_id, &default.plan_key, default.latest_version)
        .await?
    else {
        return Ok(None);
    };
    let interval = plan.default_interval();
    let new = NewSubscription {
        tenant_id,
        customer_id,
        plan: &plan,
        interval,
        trial_days: 0,
        now: at,
        replaces: Some(replaces),
        discount: None,
        price_overrides: None,
    };
    start(conn, plans, &new).await.map(Some)
}

/// What a period end did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodEndKind {
    TrialEnd,
    Renewal,
    ScheduledChange,
    Cancellation,
}

/// Processes the end of a (locked) subscription's current period, at that instant.
pub async fn period_end(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    sub: SubscriptionRow,
    grace_minutes: i32,
) -> Result<PeriodEndKind> {
    let at = sub.current_period_end;
    let old_plan = plans
        .of_subscription(conn, tenant_id, &sub)
        .await?
        .ok_or_else(|| Error::internal("subscription plan version missing"))?;
    let old_interval = interval_of(&sub);
    let trial = sub.status == SubscriptionStatus::Trialing;
    let window = (!trial).then(|| UsageWindow {
        start: sub.current_period_start,
        end: at,
        plan_key: sub.plan_key.clone(),
        plan_version: sub.plan_version,
        addons: sub.addons.0.clone(),
    });

    if sub.cancel_at_period_end {
        subs::end(conn, tenant_id, &sub, (at, "canceled", Ending::Ended)).await?;
        // The ended period's overage and waiting seat changes, in arrears (no invoice when
        // there are neither).
        if let Some(window) = window {
            final_overage_invoice(
                conn,
                plans,
                tenant_id,
                &sub,
                FinalOverage {
                    plan: &old_plan,
                    window,
                    grace_minutes,
                    now: at,
                },
            )
            .await?;
        }
        fall_back(
            conn,
            plans,
            tenant_id,
            &sub.customer_id,
            at,
            &sub.subscription_id,
        )
        .await?;
        return Ok(PeriodEndKind::Cancellation);
    }

    // The plan of the next period: a scheduled change, else the same.
    let (plan, interval, kind) = match (&sub.pending_plan_key, sub.pending_plan_version) {
        (Some(key), Some(version)) => {
            let plan = plans
                .get(conn, tenant_id, key, version)
                .await?
                .ok_or_else(|| Error::internal("pending plan version missing"))?;
            let interval = sub.pending_interval.unwrap_or(old_interval);
            // With the negotiated prices it moves to, and the add-ons it keeps.
            let plan = match &sub.pending_price_overrides {
                Some(o) => std::sync::Arc::new(plan.with_prices(interval, o)),
                None => plan,
            };
            (plan, interval, PeriodEndKind::ScheduledChange)
        }
        _ => (
            old_plan.clone(),
            old_interval,
            if trial {
                PeriodEndKind::TrialEnd
            } else {
                PeriodEndKind::Renewal
            },
        ),
    };
    let (anchor, next_end) = next_period(sub.billing_anchor, at, old_interval, interval, trial);
    let addons = super::addons::kept_at(&sub.addons, at);
    let next = NextPeriod {
        plan: &plan,
        interval,
        anchor,
        start: at,
        end: next_end,
        addons: &addons,
    };
    let verb = match kind {
        PeriodEndKind::TrialEnd => "trial_ended",
        PeriodEndKind::ScheduledChange => "changed",
        PeriodEndKind::Renewal | PeriodEndKind::Cancellation => "renewed",
    };
    subs::roll(conn, tenant_id, &sub, &next, verb).await?;

    // The next period's seats are the members at its start.
    let members = members_at(conn, tenant_id, &sub.customer_id, at).await?;
    let mut base = base_lines(&plan, interval, members, at, next_end);
    let period = (interval, at, next_end);
    base.extend(super::addons::period_lines(conn, plans, tenant_id, &addons, period).await?);
    let charge_base = !base.is_empty();
    if trial {
        // The first invoice, at trial end: the first period's price, finalized at once.
        if charge_base {
            invoices::create(
                conn,
                plans,
                NewInvoice {
                    tenant_id,
                    customer_id: &sub.customer_id,
                    subscription_id: Some(&sub.subscription_id),
                    billing_reason: "subscription_create",
                    currency: plan.currency(),
                    period_start: at,
                    period_end: next_end,
                    lines: base,
                    usage: None,
                    finalize_at: at,
                    now: at,
                },
            )
            .await?;
        }
        return Ok(kind);
    }
    if charge_base || bills_anything(&old_plan, old_interval, members) {
        // The next period in advance, the ended one's overage in arrears; a draft for the
        // grace period so late usage still lands on it.
        invoices::create(
            conn,
            plans,
            NewInvoice {
                tenant_id,
                customer_id: &sub.customer_id,
                subscription_id: Some(&sub.subscription_id),
                billing_reason: "subscription_cycle",
                currency: plan.currency(),
                period_start: at,
                period_end: next_end,
                lines: base,
                usage: window,
                finalize_at: invoices::after_minutes(at, grace_minutes),
                now: at,
            },
        )
        .await?;
    }
    Ok(kind)
}

/// When a change takes effect.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum When {
    Now,
    PeriodEnd,
}

pub struct ChangeRequest<'a> {
    pub plan: &'a PlanVersion,
    pub interval: Interval,
    pub when: Option<When>,
    /// The negotiated prices the subscription holds after the change (SPEC §15).
    pub overrides: Option<&'a [PriceDef]>,
}

impl ChangeRequest<'_> {
    /// The plan as the change bills it: its version with the negotiated prices in place.
    pub fn effective_plan(&self) -> PlanVersion {
        match self.overrides {
            Some(o) => self.plan.with_prices(self.interval, o),
            None => self.plan.clone(),
        }
    }
}

/// What a plan change does, worked out once: for the change itself and for its preview (the
/// portal's "this upgrade charges … now"), so the two can never disagree.
#[derive(Debug, Clone)]
pub enum ChangeEffect {
    /// At period end (a downgrade, or `when: period_end`): nothing is charged now.
    Scheduled { at: DateTime<Utc> },
    /// During a trial: the trial goes on, on the new plan; nothing is charged.
    TrialSwitch,
    /// Now: the plan switches, with a new period when the interval changes, and `lines` are
    /// invoiced at once (credit for the unused old time, the new price), over
    /// `invoice_period`.
    Now {
        new_period: Option<(DateTime<Utc>, DateTime<Utc>)>,
        lines: Vec<Line>,
        invoice_period: (DateTime<Utc>, DateTime<Utc>),
    },
}

impl ChangeEffect {
    /// What the change invoices at once (zero when nothing is).
    pub fn amount_now(&self) -> Decimal {
        match self {
            ChangeEffect::Now { lines, .. } => lines.iter().map(|l| l.amount).sum(),
            _ => Decimal::ZERO,
        }
    }
}

/// Works out what changing a subscription's plan would do, without doing it. Upgrades (a
/// higher monthly-equivalent price) take effect now with proration; downgrades at period end;
/// `when` overrides both.
pub async fn plan_change(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    sub: &SubscriptionRow,
    req: &ChangeRequest<'_>,
    now: DateTime<Utc>,
) -> Result<ChangeEffect> {
    let old_plan = plans
        .of_subscription(conn, tenant_id, sub)
        .await?
        .ok_or_else(|| Error::internal("subscription plan version missing"))?;
    let old_interval = interval_of(sub);
    let new_plan = &req.effective_plan();
    if new_plan.key == sub.plan_key
        && new_plan.version == sub.plan_version
        && req.interval == old_interval
        && req.overrides == sub.price_overrides.as_ref().map(|o| o.0.as_slice())
    {
        return Err(Error::conflict(
            "same_plan",
            "The subscription is already on this plan, version, interval and prices.",
        ));
    }
    if !new_plan.prices.is_empty() && !new_plan.has_price(req.interval) {
        return Err(Error::invalid_param(
            "price_not_found",
            "interval",
            format!(
                "Plan `{}` has no {} price.",
                new_plan.key,
                req.interval.as_str()
            ),
        ));
    }
    // Add-ons stay on through a change: they need a price for the new interval.
    if req.interval != old_interval {
        let kept = super::addons::kept_at(&sub.addons, sub.current_period_end);
        super::addons::check_interval(conn, plans, tenant_id, &kept, req.interval).await?;
    }
    // Seats count at the current member count, for the comparison and the proration alike.
    let members = members_at(conn, tenant_id, &sub.customer_id, now).await?;
    let upgrade =
        monthly(new_plan, req.interval, members) >= monthly(&old_plan, old_interval, members);
    let when = req
        .when
        .unwrap_or(if upgrade { When::Now } else { When::PeriodEnd });
    if when == When::PeriodEnd {
        return Ok(ChangeEffect::Scheduled {
            at: sub.current_period_end,
        });
    }
    if sub.status == SubscriptionStatus::Trialing {
        return Ok(ChangeEffect::TrialSwitch);
    }
    let currency = new_plan.currency();
    let old_price = price_of(&old_plan, old_interval, members);
    let new_price = price_of(new_plan, req.interval, members);
    if req.interval == old_interval {
        // Same period; proration for the rest of it.
        let mut lines = if old_price == new_price {
            Vec::new()
        } else {
            proration_lines(
                (&old_plan.name, old_price),
                (&new_plan.name, new_price),
                sub.current_period_start,
                sub.current_period_end,
                now,
                currency,
            )
        };
        lines.retain(|l| !l.amount.is_zero());
        return Ok(ChangeEffect::Now {
            new_period: None,
            lines,
            invoice_period: (now, sub.current_period_end),
        });
    }
    // A new interval starts a new period now: credit the unused old time, charge the new
    // period in full.
    let end = add_months_clamped(now, req.interval.months() as i64);
    let mut lines = proration_lines(
        (&old_plan.name, old_price),
        (&new_plan.name, Decimal::ZERO),
        sub.current_period_start,
        sub.current_period_end,
        now,
        currency,
    );
    lines.truncate(1);
    lines.extend(base_lines(new_plan, req.interval, members, now, end));
    // So do the add-ons: the unused time of each is credited, and those kept are charged
    // for the new period in full.
    let period = (sub.current_period_start, sub.current_period_end);
    for a in sub.addons.iter() {
        if let Some(version) = plans.addon(conn, tenant_id, &a.addon, a.version).await? {
            if let Some(price) = version.recurring(old_interval) {
                let credit = addon::prorated_line(&version.name, price, -a.quantity, period, now);
                lines.push(credit);
            }
        }
    }
    let kept = super::addons::kept_at(&sub.addons, sub.current_period_end);
    lines.extend(
        super::addons::period_lines(conn, plans, tenant_id, &kept, (req.interval, now, end))
            .await?,
    );
    lines.retain(|l| !l.amount.is_zero());
    Ok(ChangeEffect::Now {
        new_period: Some((now, end)),
        lines,
        invoice_period: (now, end),
    })
}

/// Changes a (locked) subscription's plan, as [`plan_change`] works it out.
pub async fn change(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    sub: SubscriptionRow,
    req: ChangeRequest<'_>,
    now: DateTime<Utc>,
) -> Result<SubscriptionRow> {
    let new_plan = req.plan;
    let effect = plan_change(conn, plans, tenant_id, &sub, &req, now).await?;
    let (new_period, lines, invoice_period) = match effect {
        ChangeEffect::Scheduled { at } => {
            let change = Some((new_plan, req.interval, at));
            return subs::schedule_change(conn, tenant_id, &sub, change, req.overrides, now).await;
        }
        ChangeEffect::TrialSwitch => {
            let plan = (new_plan, req.interval, req.overrides);
            return subs::switch_plan(conn, tenant_id, &sub, plan, None, now).await;
        }
        ChangeEffect::Now {
            new_period,
            lines,
            invoice_period,
        } => (new_period, lines, invoice_period),
    };
    let plan = (new_plan, req.interval, req.overrides);
    let mut row = subs::switch_plan(conn, tenant_id, &sub, plan, new_period, now).await?;
    if new_period.is_some() && row.addons.iter().any(|a| a.removes_at.is_some()) {
        // A new period: add-ons removed at the old one's end are gone now (credited above).
        let kept = super::addons::kept_at(&row.addons, sub.current_period_end);
        row = db::subscriptions::set_addons(conn, tenant_id, &row.subscription_id, &kept).await?;
    }
    if !lines.is_empty() {
        invoices::create(
            conn,
            plans,
            NewInvoice {
                tenant_id,
                customer_id: &sub.customer_id,
                subscription_id: Some(&sub.subscription_id),
                billing_reason: "subscription_update",
                currency: new_plan.currency(),
                period_start: invoice_period.0,
                period_end: invoice_period.1,
                lines,
                usage: None,
                finalize_at: now,
                now,
            },
        )
        .await?;
    }
    Ok(row)
}

/// Cancels a (locked) subscription at period end, or now (then the ended part of the
/// period's overage is invoiced and the customer falls back to the default plan).
pub async fn cancel(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    sub: SubscriptionRow,
    at_period_end: bool,
    grace_minutes: i32,
    now: DateTime<Utc>,
) -> Result<SubscriptionRow> {
    if at_period_end {
        return subs::set_cancel_at_period_end(conn, tenant_id, &sub, true, now).await;
    }
    let ending = (now, "canceled", Ending::CanceledNow);
    end_now(conn, plans, tenant_id, sub, grace_minutes, ending).await
}

/// Ends a (locked) subscription now: the ended part of the period's overage is invoiced and
/// the customer falls back to the default plan (unless it was erased). `reason` is kept as
/// `ended_reason`.
pub async fn end_now(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    sub: SubscriptionRow,
    grace_minutes: i32,
    (now, reason, ending): (DateTime<Utc>, &str, Ending),
) -> Result<SubscriptionRow> {
    let row = subs::end(conn, tenant_id, &sub, (now, reason, ending)).await?;
    if sub.status != SubscriptionStatus::Trialing {
        let window = UsageWindow {
            start: sub.current_period_start,
            end: now,
            plan_key: sub.plan_key.clone(),
            plan_version: sub.plan_version,
            addons: sub.addons.0.clone(),
        };
        let old_plan = plans
            .of_subscription(conn, tenant_id, &sub)
            .await?
            .ok_or_else(|| Error::internal("subscription plan version missing"))?;
        // Usage counted in billing-period counters ends with the subscription.
        db::usage::end_billing_period_counters(
            conn,
            tenant_id,
            &sub.customer_id,
            sub.current_period_start,
            now,
        )
        .await?;
        final_overage_invoice(
            conn,
            plans,
            tenant_id,
            &sub,
            FinalOverage {
                plan: &old_plan,
                window,
                grace_minutes,
                now,
            },
        )
        .await?;
    }
    fall_back(
        conn,
        plans,
        tenant_id,
        &sub.customer_id,
        now,
        &sub.subscription_id,
    )
    .await?;
    Ok(row)
}

/// What the last invoice of an ended subscription bills: the usage of `window` at `plan`'s
/// prices, as a draft for `grace_minutes` from `now`.
struct FinalOverage<'a> {
    plan: &'a PlanVersion,
    window: UsageWindow,
    grace_minutes: i32,
    now: DateTime<Utc>,
}

/// The last invoice of an ended subscription: its overage in arrears and the seat changes
/// waiting for it, as a draft for the grace period (none if there are neither).
async fn final_overage_invoice(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    sub: &SubscriptionRow,
    bill: FinalOverage<'_>,
) -> Result<()> {
    let FinalOverage {
        plan,
        window,
        grace_minutes,
        now,
    } = bill;
    let lines = invoices::overage_lines(
        conn,
        plans,
        tenant_id,
        &sub.customer_id,
        &window,
        plan.currency(),
    )
    .await?;
    let waiting = db::pending_lines::waiting(conn, tenant_id, &sub.subscription_id).await?;
    if lines.is_empty() && waiting.is_empty() {
        return Ok(());
    }
    invoices::create(
        conn,
        plans,
        NewInvoice {
            tenant_id,
            customer_id: &sub.customer_id,
            subscription_id: Some(&sub.subscription_id),
            billing_reason: "subscription_cancel",
            currency: plan.currency(),
            period_start: window.start,
            period_end: window.end,
            lines: Vec::new(),
            usage: Some(window),
            finalize_at: invoices::after_minutes(now, grace_minutes),
            now,
        },
    )
    .await?;
    Ok(())
}

/// Ends the live subscription of a customer being erased (already marked deleted, so there is
/// no fall-back plan), with its final invoice as any cancellation has.
pub async fn erase_subscription(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    sub: SubscriptionRow,
    now: DateTime<Utc>,
) -> Result<SubscriptionRow> {
    let sub = subs::get(conn, tenant_id, &sub.subscription_id, true).await?;
    let grace = db::tenants::invoice_grace_minutes(conn, tenant_id).await?;
    let ending = (now, "customer_erased", Ending::CanceledNow);
    end_now(conn, plans, tenant_id, sub, grace, ending).await
}

/// Undoes a cancellation at period end, before the period has ended.
pub async fn reactivate(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    sub: SubscriptionRow,
    now: DateTime<Utc>,
) -> Result<SubscriptionRow> {
    if sub.status == SubscriptionStatus::Canceled || now >= sub.current_period_end {
        return Err(Error::conflict(
            "subscription_ended",
            "The subscription has already ended; start a new one instead.",
        ));
    }
    if !sub.cancel_at_period_end {
        return Err(Error::conflict(
            "not_canceled",
            "The subscription is not scheduled to cancel.",
        ));
    }
    subs::set_cancel_at_period_end(conn, tenant_id, &sub, false, now).await
}
