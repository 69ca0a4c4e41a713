//! Seat pricing: what a per-seat price charges for a number of seats, flat per seat or in
//! tiers exactly as Stripe defines them (`up_to` inclusive; `volume`: every seat at the price
//! of the tier the count falls in; `graduated`: each tier's seats at that tier's price), and
//! the prorated charge of a change of seats mid-period.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::invoice::prorate;
use super::money::round_to_minor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TiersMode {
    /// Every seat at the unit amount of the tier the seat count falls in.
    Volume,
    /// Each tier's seats at that tier's unit amount.
    Graduated,
}

impl TiersMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TiersMode::Volume => "volume",
            TiersMode::Graduated => "graduated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "volume" => Some(TiersMode::Volume),
            "graduated" => Some(TiersMode::Graduated),
            _ => None,
        }
    }
}

/// One tier: the seats up to and including `up_to` (`None`: all the rest) cost `unit_amount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub up_to: Option<i64>,
    pub unit_amount: Decimal,
}

/// How a per-seat price charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatPricing {
    /// `unit_amount` per seat.
    PerSeat(Decimal),
    /// Tiered; the tiers are valid ([`check_tiers`]).
    Tiered { mode: TiersMode, tiers: Vec<Tier> },
}

/// Why a list of tiers is not valid, and which tier (index) it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tier {index}: {message}")]
pub struct TierError {
    pub index: usize,
    pub message: &'static str,
}

/// Tiers must be non-empty, their `up_to` positive and strictly ascending, only the last one
/// open (`None`), and no unit amount negative.
pub fn check_tiers(tiers: &[Tier]) -> Result<(), TierError> {
    if tiers.is_empty() {
        return Err(TierError {
            index: 0,
            message: "there must be at least one tier",
        });
    }
    let mut previous = 0;
    for (index, t) in tiers.iter().enumerate() {
        let last = index + 1 == tiers.len();
        if t.unit_amount.is_sign_negative() {
            return Err(TierError {
                index,
                message: "unit_amount must not be negative",
            });
        }
        match t.up_to {
            None if !last => {
                return Err(TierError {
                    index,
                    message: "only the last tier may have up_to null",
                })
            }
            None => {}
            Some(_) if last => {
                return Err(TierError {
                    index,
                    message: "the last tier must have up_to null",
                })
            }
            Some(up_to) if up_to <= previous => {
                return Err(TierError {
                    index,
                    message: "up_to must be ascending, each tier holding at least one seat",
                })
            }
            Some(up_to) => previous = up_to,
        }
    }
    Ok(())
}

/// One part of a seat charge, as an invoice line shows it: `quantity` seats at `unit_amount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatCharge {
    pub quantity: i64,
    pub unit_amount: Decimal,
    /// `quantity × unit_amount`, rounded to the minor unit.
    pub amount: Decimal,
}

/// The seats a price bills: the member count, at least `min_seats`.
pub fn billable_seats(members: i64, min_seats: i64) -> i64 {
    members.max(min_seats).max(0)
}

/// The charge for `seats` seats, in the parts an invoice shows: one part, except for
/// graduated tiers (one per tier used). No seats, no parts.
pub fn charges(pricing: &SeatPricing, seats: i64, currency: &str) -> Vec<SeatCharge> {
    let part = |quantity: i64, unit_amount: Decimal| SeatCharge {
        quantity,
        unit_amount,
        amount: round_to_minor(unit_amount * Decimal::from(quantity), currency),
    };
    if seats <= 0 {
        return Vec::new();
    }
    match pricing {
        SeatPricing::PerSeat(unit) => vec![part(seats, *unit)],
        SeatPricing::Tiered {
            mode: TiersMode::Volume,
            tiers,
        } => tiers
            .iter()
            .find(|t| t.up_to.is_none_or(|up_to| seats <= up_to))
            .map(|t| vec![part(seats, t.unit_amount)])
            .unwrap_or_default(),
        SeatPricing::Tiered {
            mode: TiersMode::Graduated,
            tiers,
        } => {
            let mut parts = Vec::new();
            let mut below = 0; // seats covered by earlier tiers
            for t in tiers {
                let top = t.up_to.map_or(seats, |up_to| up_to.min(seats));
                if top > below {
                    parts.push(part(top - below, t.unit_amount));
                    below = top;
                }
                if below >= seats {
                    break;
                }
            }
            parts
        }
    }
}

/// The whole charge for `seats` seats (the sum of its rounded parts).
pub fn total(pricing: &SeatPricing, seats: i64, currency: &str) -> Decimal {
    charges(pricing, seats, currency)
        .iter()
        .fold(Decimal::ZERO, |acc, c| acc + c.amount)
}

/// The prorated charge of going from `old` to `new` billable seats at `at` within the period
/// `[start, end)`: the charge at the new count minus the charge at the old count, times the
/// remaining fraction of the period (to the second), rounded once. Negative is a credit.
pub fn change_amount(
    pricing: &SeatPricing,
    (old, new): (i64, i64),
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    at: DateTime<Utc>,
    currency: &str,
) -> Decimal {
    let difference = total(pricing, new, currency) - total(pricing, old, currency);
    round_to_minor(prorate(difference, start, end, at), currency)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn tiers() -> Vec<Tier> {
        vec![
            Tier {
                up_to: Some(10),
                unit_amount: dec!(50.00),
            },
            Tier {
                up_to: Some(50),
                unit_amount: dec!(35.00),
            },
            Tier {
                up_to: None,
                unit_amount: dec!(25.00),
            },
        ]
    }

    fn volume() -> SeatPricing {
        SeatPricing::Tiered {
            mode: TiersMode::Volume,
            tiers: tiers(),
        }
    }

    fn graduated() -> SeatPricing {
        SeatPricing::Tiered {
            mode: TiersMode::Graduated,
            tiers: tiers(),
        }
    }

    #[test]
    fn volume_prices_every_seat_at_the_tier_the_count_falls_in() {
        for (seats, want) in [
            (1, dec!(50.00)),
            (9, dec!(450.00)),
            (10, dec!(500.00)), // up_to is inclusive
            (11, dec!(385.00)), // 11 × 35: crossing a tier makes the total drop
            (50, dec!(1750.00)),
            (51, dec!(1275.00)),
        ] {
            assert_eq!(total(&volume(), seats, "usd"), want, "{seats} seats");
            assert_eq!(charges(&volume(), seats, "usd").len(), 1);
        }
    }

    #[test]
    fn graduated_prices_each_tiers_seats_at_its_own_price() {
        for (seats, want) in [
            (9, dec!(450.00)),
            (10, dec!(500.00)),
            (11, dec!(535.00)),  // 10 × 50 + 1 × 35
            (50, dec!(1900.00)), // 500 + 40 × 35
            (51, dec!(1925.00)), // + 1 × 25
        ] {
            assert_eq!(total(&graduated(), seats, "usd"), want, "{seats} seats");
        }
        let parts = charges(&graduated(), 51, "usd");
        let shown: Vec<(i64, Decimal)> =
            parts.iter().map(|p| (p.quantity, p.unit_amount)).collect();
        assert_eq!(
            shown,
            [(10, dec!(50.00)), (40, dec!(35.00)), (1, dec!(25.00))]
        );
        assert!(charges(&graduated(), 0, "usd").is_empty());
    }

    #[test]
    fn min_seats_is_a_floor() {
        assert_eq!(billable_seats(2, 5), 5);
        assert_eq!(billable_seats(7, 5), 7);
        assert_eq!(billable_seats(0, 1), 1);
        assert_eq!(billable_seats(-3, 0), 0);
    }

    #[test]
    fn tiers_are_checked() {
        let t = |up_to: Option<i64>, amount: Decimal| Tier {
            up_to,
            unit_amount: amount,
        };
        assert!(check_tiers(&tiers()).is_ok());
        assert_eq!(check_tiers(&[]).unwrap_err().index, 0);
        let open_first = [t(None, dec!(1)), t(Some(5), dec!(1))];
        assert_eq!(check_tiers(&open_first).unwrap_err().index, 0);
        let closed_last = [t(Some(5), dec!(1)), t(Some(9), dec!(1))];
        assert_eq!(check_tiers(&closed_last).unwrap_err().index, 1);
        let not_ascending = [t(Some(5), dec!(1)), t(Some(5), dec!(1)), t(None, dec!(1))];
        assert_eq!(check_tiers(&not_ascending).unwrap_err().index, 1);
        let empty_first = [t(Some(0), dec!(1)), t(None, dec!(1))];
        assert_eq!(check_tiers(&empty_first).unwrap_err().index, 0);
        let negative = [t(Some(5), dec!(1)), t(None, dec!(-1))];
        assert_eq!(check_tiers(&negative).unwrap_err().index, 1);
    }

    #[test]
    fn a_seat_added_at_half_the_period_costs_half_a_seat() {
        let start = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2027, 1, 31, 0, 0, 0).unwrap();
        let half = Utc.with_ymd_and_hms(2027, 1, 16, 0, 0, 0).unwrap();
        let per_seat = SeatPricing::PerSeat(dec!(12.00));
        assert_eq!(
            change_amount(&per_seat, (3, 4), (start, end), half, "usd"),
            dec!(6.00)
        );
        assert_eq!(
            change_amount(&per_seat, (4, 3), (start, end), half, "usd"),
            dec!(-6.00)
        );
        // Crossing a volume tier: the 11th seat makes every seat cheaper, a credit.
        assert_eq!(
            change_amount(&volume(), (10, 11), (start, end), half, "usd"),
            dec!(-57.50)
        );
        // At the period's end nothing is left to prorate.
        assert_eq!(
            change_amount(&per_seat, (3, 4), (start, end), end, "usd"),
            dec!(0.00)
        );
    }

    fn arb_tiers() -> impl Strategy<Value = Vec<Tier>> {
        (
            prop::collection::vec((1i64..20, 0i64..10_000), 0..4),
            0i64..10_000,
        )
            .prop_map(|(steps, last)| {
                let mut up_to = 0;
                let mut tiers: Vec<Tier> = steps
                    .into_iter()
                    .map(|(step, cents)| {
                        up_to += step;
                        Tier {
                            up_to: Some(up_to),
                            unit_amount: Decimal::new(cents, 2),
                        }
                    })
                    .collect();
                tiers.push(Tier {
                    up_to: None,
                    unit_amount: Decimal::new(last, 2),
                });
                tiers
            })
    }

    proptest! {
        #[test]
        fn graduated_parts_cover_every_seat_once(tiers in arb_tiers(), seats in 0i64..200) {
            prop_assert!(check_tiers(&tiers).is_ok());
            let pricing = SeatPricing::Tiered { mode: TiersMode::Graduated, tiers };
            let parts = charges(&pricing, seats, "usd");
            prop_assert_eq!(parts.iter().map(|p| p.quantity).sum::<i64>(), seats);
            prop_assert!(parts.iter().all(|p| p.quantity > 0));
        }

        #[test]
        fn graduated_totals_never_fall_as_seats_grow(tiers in arb_tiers(), seats in 0i64..200) {
            let pricing = SeatPricing::Tiered { mode: TiersMode::Graduated, tiers };
            prop_assert!(total(&pricing, seats + 1, "usd") >= total(&pricing, seats, "usd"));
        }

        #[test]
        fn volume_is_one_part_at_one_tiers_price(tiers in arb_tiers(), seats in 1i64..200) {
            let pricing = SeatPricing::Tiered { mode: TiersMode::Volume, tiers: tiers.clone() };
            let parts = charges(&pricing, seats, "usd");
            prop_assert_eq!(parts.len(), 1);
            prop_assert_eq!(parts[0].quantity, seats);
            prop_assert!(tiers.iter().any(|t| t.unit_amount == parts[0].unit_amount));
        }

        #[test]
        fn an_add_and_a_remove_at_one_instant_net_to_zero(
            tiers in arb_tiers(),
            seats in 1i64..100,
            at_secs in 0i64..2_592_000,
        ) {
            let start = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
            let end = start + chrono::Duration::days(30);
            let at = start + chrono::Duration::seconds(at_secs);
            for mode in [TiersMode::Volume, TiersMode::Graduated] {
                let pricing = SeatPricing::Tiered { mode, tiers: tiers.clone() };
                let up = change_amount(&pricing, (seats, seats + 1), (start, end), at, "usd");
                let down = change_amount(&pricing, (seats + 1, seats), (start, end), at, "usd");
                prop_assert_eq!(up + down, Decimal::ZERO);
            }
        }
    }
}
