//! Seat changes mid-period: a member added to or removed from an organisation whose live
//! subscription has a per-seat price writes a prorated `seat` line for the subscription's next
//! invoice (of whatever kind), in the transaction that changes the member.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::db;
use crate::db::plans::PlanCache;
use crate::domain::invoice::{Line, LineType};
use crate::domain::plan::Charge;
use crate::domain::seats::{billable_seats, change_amount};
use crate::domain::status::SubscriptionStatus;
use crate::error::{Error, Result};
use crate::ids::TenantId;

/// Records that a customer's member count went from `old` to `new` at `at`: the prorated
/// difference of the seat charge for the rest of the current period, as a pending line, if
/// it moves any money (no subscription, a trial, no per-seat price or a change under
/// `min_seats` writes nothing). The caller holds the customer's lock.
pub async fn members_changed(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    customer_id: &str,
    (old, new): (i64, i64),
    at: DateTime<Utc>,
) -> Result<()> {
    let Some(sub) = db::subscriptions::live_for_customer(conn, tenant_id, customer_id).await?
    else {
        return Ok(());
    };
    if sub.status == SubscriptionStatus::Trialing
        || at < sub.current_period_start
        || at >= sub.current_period_end
    {
        return Ok(());
    }
    let plan = plans
        .of_subscription(conn, tenant_id, &sub)
        .await?
        .ok_or_else(|| Error::internal("subscription plan version missing"))?;
    let Some(price) = plan.seat_price(sub.interval) else {
        return Ok(());
    };
    let Charge::Seats { pricing, min_seats } = &price.charge else {
        return Ok(());
    };
    let (from, to) = (
        billable_seats(old, *min_seats),
        billable_seats(new, *min_seats),
    );
    let amount = change_amount(
        pricing,
        (from, to),
        (sub.current_period_start, sub.current_period_end),
        at,
        &price.currency,
    );
    if amount.is_zero() {
        return Ok(());
    }
    let quantity = Decimal::from(to - from);
    let when = at.format("%Y-%m-%d %H:%M:%S UTC");
    let line = Line {
        kind: LineType::Seat,
        description: format!(
            "{} seats: {from} → {to} after {when} (remaining time)",
            plan.name
        ),
        feature: None,
        quantity,
        // What one seat of the change came to (the amount is rounded once, as a whole).
        unit_amount: crate::domain::money::round_to_minor(amount / quantity, &price.currency),
        amount,
        period_start: at,
        period_end: sub.current_period_end,
    };
    db::pending_lines::insert(conn, tenant_id, &sub.subscription_id, &line, at).await?;
    Ok(())
}
