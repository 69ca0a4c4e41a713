//! The states of subscriptions and invoices, as stored (text columns) and as the API shows
//! them. A value read back that is none of these is an error, never a guess.

use serde::Serialize;

pub use super::UnknownValue;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownValue { what: $what, value: other.to_string() }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownValue;

            fn try_from(s: String) -> Result<Self, UnknownValue> {
                Self::parse(&s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// A subscription's state. `trialing`, `active` and `past_due` are "live": a customer has
    /// at most one live subscription.
    SubscriptionStatus, "subscription status" {
        Trialing => "trialing",
        Active => "active",
        PastDue => "past_due",
        Canceled => "canceled",
    }
);

impl SubscriptionStatus {
    pub fn is_live(self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Trialing | SubscriptionStatus::Active | SubscriptionStatus::PastDue
        )
    }
}

text_enum!(
    /// An invoice's state: `draft` until finalized, then `open` until paid, voided or
    /// written off.
    InvoiceStatus, "invoice status" {
        Draft => "draft",
        Open => "open",
        Paid => "paid",
        Void => "void",
        Uncollectible => "uncollectible",
    }
);

text_enum!(
    /// A member's role in its organisation (a customer with members).
    MemberRole, "member role" {
        Owner => "owner",
        Admin => "admin",
        Member => "member",
        Viewer => "viewer",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_unknown_ones_are_errors() {
        for s in ["trialing", "active", "past_due", "canceled"] {
            assert_eq!(SubscriptionStatus::parse(s).unwrap().as_str(), s);
        }
        for s in ["draft", "open", "paid", "void", "uncollectible"] {
            assert_eq!(InvoiceStatus::parse(s).unwrap().as_str(), s);
        }
        for s in ["owner", "admin", "member", "viewer"] {
            assert_eq!(MemberRole::parse(s).unwrap().as_str(), s);
        }
        let err = SubscriptionStatus::parse("paused").unwrap_err();
        assert_eq!(err.to_string(), "unknown subscription status \"paused\"");
        assert!(SubscriptionStatus::PastDue.is_live());
        assert!(!SubscriptionStatus::Canceled.is_live());
        assert_eq!(
            serde_json::to_value(SubscriptionStatus::PastDue).unwrap(),
            serde_json::json!("past_due")
        );
    }
}
