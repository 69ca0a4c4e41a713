//! Period math: calendar periods and billing periods that roll on the anniversary of an anchor,
//! with month-end clamping (an anchor on the 31st renews on the last day of shorter months and
//! returns to the 31st afterwards).

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// How often a usage counter starts again from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reset {
    Day,
    Month,
    BillingPeriod,
    Never,
}

impl Reset {
    pub fn as_str(self) -> &'static str {
        match self {
            Reset::Day => "day",
            Reset::Month => "month",
            Reset::BillingPeriod => "billing_period",
            Reset::Never => "never",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Reset::Day),
            "month" => Some(Reset::Month),
            "billing_period" => Some(Reset::BillingPeriod),
            "never" => Some(Reset::Never),
            _ => None,
        }
    }
}

/// Billing interval of a price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Month,
    Year,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "month" => Some(Interval::Month),
            "year" => Some(Interval::Year),
            _ => None,
        }
    }

    pub fn months(self) -> u32 {
        match self {
            Interval::Month => 1,
            Interval::Year => 12,
        }
    }
}

/// A half-open period `[start, end)`; `end` is `None` for a period that never ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

/// The start of the one period of a `never`-resetting allowance.
pub fn epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// `anchor` moved by `n` months (may be negative), clamped to the end of shorter months. Always
/// computed from the anchor, never cumulatively, so the day of month comes back after clamping.
pub fn add_months_clamped(anchor: DateTime<Utc>, n: i64) -> DateTime<Utc> {
    let magnitude = Months::new(n.unsigned_abs().min(u32::MAX as u64) as u32);
    let moved = if n >= 0 {
        anchor.checked_add_months(magnitude)
    } else {
        anchor.checked_sub_months(magnitude)
    };
    // chrono clamps to the last day of the month; it only fails outside its date range.
    moved.unwrap_or(anchor)
}

/// The billing period that contains `t` for a subscription anchored at `anchor`.
pub fn billing_period_containing(
    anchor: DateTime<Utc>,
    interval: Interval,
    t: DateTime<Utc>,
) -> Period {
    let step = interval.months() as i64;
    let months_between =
        (t.year() as i64 - anchor.year() as i64) * 12 + t.month() as i64 - anchor.month() as i64;
    // A first guess, then correct by at most a step or two either way.
    let mut k = months_between.div_euclid(step);
    loop {
        let start = add_months_clamped(anchor, k * step);
        if start > t {
            k -= 1;
            continue;
        }
        let end = add_months_clamped(anchor, (k + 1) * step);
        if end <= t {
            k += 1;
            continue;
        }
        return Period {
            start,
            end: Some(end),
        };
    }
}

/// The calendar day (UTC) containing `t`.
pub fn day_containing(t: DateTime<Utc>) -> Period {
    let start = Utc.from_utc_datetime(
        &t.date_naive()
            .and_hms_opt(0, 0, 0)
            .unwrap_or_else(|| t.naive_utc()),
    );
    Period {
        start,
        end: start.checked_add_days(Days::new(1)),
    }
}

/// The calendar month (UTC) containing `t`.
pub fn month_containing(t: DateTime<Utc>) -> Period {
    let first = NaiveDate::from_ymd_opt(t.year(), t.month(), 1).unwrap_or(t.date_naive());
    let start = Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).unwrap_or(t.naive_utc()));
    Period {
        start,
        end: start.checked_add_months(Months::new(1)),
    }
}

/// A subscription's billing cycle: its anchor and interval, and the period it is in now (which
/// may differ from the anniversary rule, e.g. a trial).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillingCycle {
    pub anchor: DateTime<Utc>,
    pub interval: Interval,
    pub current: Period,
}

impl BillingCycle {
    /// The billing period containing `t`: the current one if `t` is in it, otherwise the
    /// anniversary period of the anchor.
    pub fn period_at(&self, t: DateTime<Utc>) -> Period {
        let in_current = self.current.start <= t && self.current.end.is_none_or(|end| t < end);
        if in_current {
            self.current
        } else {
            billing_period_containing(self.anchor, self.interval, t)
        }
    }
}

/// The counter period of a usage event at `t` under a reset rule. Without a billing cycle,
/// billing periods are calendar months.
pub fn counter_period(reset: Reset, t: DateTime<Utc>, billing: Option<&BillingCycle>) -> Period {
    match reset {
        Reset::Day => day_containing(t),
        Reset::Month => month_containing(t),
        Reset::BillingPeriod => match billing {
            Some(cycle) => cycle.period_at(t),
            None => month_containing(t),
        },
        Reset::Never => Period {
            start: epoch(),
            end: None,
        },
    }
}

/// The billing period that follows one ending at `at`: its anchor and its end. A trial's end,
/// or a change of interval, starts a new anniversary at `at`; otherwise the period rolls on
/// the old anchor. Renewals and the upcoming-invoice preview both use this.
pub fn next_period(
    anchor: DateTime<Utc>,
    at: DateTime<Utc>,
    old_interval: Interval,
    new_interval: Interval,
    trial: bool,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let anchor = if trial || new_interval != old_interval {
        at
    } else {
        anchor
    };
    let end = billing_period_containing(anchor, new_interval, at)
        .end
        .unwrap_or_else(|| add_months_clamped(at, new_interval.months() as i64));
    (anchor, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_period_keeps_the_anniversary_unless_a_trial_or_interval_change_restarts_it() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let anchor = t("2027-01-31T10:00:00Z");
        let at = t("2027-02-28T10:00:00Z");
        assert_eq!(
            next_period(anchor, at, Interval::Month, Interval::Month, false),
            (anchor, t("2027-03-31T10:00:00Z"))
        );
        assert_eq!(
            next_period(anchor, at, Interval::Month, Interval::Month, true),
            (at, t("2027-03-28T10:00:00Z"))
        );
        assert_eq!(
            next_period(anchor, at, Interval::Month, Interval::Year, false),
            (at, t("2028-02-28T10:00:00Z"))
        );
    }
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn month_end_clamping_returns_to_the_31st() {
        let anchor = at("2026-01-31T10:00:00Z");
        let p = billing_period_containing(anchor, Interval::Month, at("2026-02-15T00:00:00Z"));
        assert_eq!(p.start, at("2026-01-31T10:00:00Z"));
        assert_eq!(p.end, Some(at("2026-02-28T10:00:00Z")));
        let p = billing_period_containing(anchor, Interval::Month, at("2026-03-01T00:00:00Z"));
        assert_eq!(p.start, at("2026-02-28T10:00:00Z"));
        assert_eq!(p.end, Some(at("2026-03-31T10:00:00Z")));
        let p = billing_period_containing(anchor, Interval::Month, at("2026-04-05T00:00:00Z"));
        assert_eq!(p.start, at("2026-03-31T10:00:00Z"));
        assert_eq!(p.end, Some(at("2026-04-30T10:00:00Z")));
    }

    #[test]
    fn annual_periods_and_leap_days() {
        let anchor = at("2024-02-29T00:00:00Z");
        let p = billing_period_containing(anchor, Interval::Year, at("2025-06-01T00:00:00Z"));
        assert_eq!(p.start, at("2025-02-28T00:00:00Z"));
        assert_eq!(p.end, Some(at("2026-02-28T00:00:00Z")));
        let p = billing_period_containing(anchor, Interval::Year, at("2028-03-01T00:00:00Z"));
        assert_eq!(p.start, at("2028-02-29T00:00:00Z"));
    }

    #[test]
    fn calendar_periods() {
        let t = at("2026-12-31T23:59:59Z");
        assert_eq!(day_containing(t).start, at("2026-12-31T00:00:00Z"));
        assert_eq!(day_containing(t).end, Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(month_containing(t).start, at("2026-12-01T00:00:00Z"));
        assert_eq!(month_containing(t).end, Some(at("2027-01-01T00:00:00Z")));
        let never = counter_period(Reset::Never, t, None);
        assert_eq!(never.start, epoch());
        assert_eq!(never.end, None);
    }

    proptest! {
        #[test]
        fn billing_period_contains_t_and_starts_on_an_anniversary(
            anchor_secs in 0i64..4_000_000_000,
            offset_secs in -400_000_000i64..400_000_000,
            yearly in any::<bool>(),
        ) {
            let anchor = DateTime::<Utc>::from_timestamp(anchor_secs, 0).unwrap();
            let t = DateTime::<Utc>::from_timestamp(anchor_secs + offset_secs, 0).unwrap();
            let interval = if yearly { Interval::Year } else { Interval::Month };
            let p = billing_period_containing(anchor, interval, t);
            let end = p.end.unwrap();
            prop_assert!(p.start <= t && t < end);
            // The start is the anchor moved by a whole number of intervals (clamped).
            let step = interval.months() as i64;
            let months = (p.start.year() as i64 - anchor.year() as i64) * 12
                + p.start.month() as i64 - anchor.month() as i64;
            prop_assert_eq!(months % step, 0);
            prop_assert_eq!(add_months_clamped(anchor, months), p.start);
            prop_assert_eq!(add_months_clamped(anchor, months + step), end);
            // Same time of day, and the day of month is the anchor's unless clamped.
            prop_assert_eq!(p.start.time(), anchor.time());
            prop_assert!(p.start.day() == anchor.day() || p.start.day() < anchor.day());
            // The next period starts where this one ends.
            let next = billing_period_containing(anchor, interval, end);
            prop_assert_eq!(next.start, end);
        }
    }
}
