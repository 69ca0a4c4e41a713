//! Typed, prefixed ids: `ten_…`, `sub_…`, `in_…`. Each kind of object Tollgate names has its
//! own type, so a subscription id cannot be passed where an invoice id is wanted, and a function
//! taking a tenant, a customer and a subscription cannot have two of them swapped.
//!
//! An id is its prefix and the 32 hex digits of a UUIDv7 (`sub_0192…`), so ids sort by creation
//! and double as pagination cursors. Making one needs the clock and randomness, which `domain/`
//! does not touch: [`crate::ids::new`] does that and hands the UUID to [`PrefixedId::from_uuid`].
//!
//! [`PrefixedId::parse`] is strict (prefix, then 32 lowercase hex digits). A path segment that does
//! not parse names no object: the caller answers it as "not found", exactly as for a well-formed
//! id that does not exist, so a malformed id and a foreign one look the same to a client.
//!
//! Ids that tenants choose (customers, features, plans, usage events) are not prefixed; they are
//! validated by [`is_valid_external_id`].

use std::fmt;

use uuid::Uuid;

/// What every prefixed id type offers.
pub trait PrefixedId: Sized {
    /// The prefix before the underscore, e.g. `sub`.
    const PREFIX: &'static str;

    /// The error code and message when no object has the id (or the id is malformed or
    /// another kind's), e.g. `subscription_not_found`.
    const NOT_FOUND: (&'static str, &'static str);

    /// The id of the object with this UUID.
    fn from_uuid(uuid: Uuid) -> Self;

    /// The id in `text`, if it is one of this kind.
    fn parse(text: &str) -> Option<Self>;

    fn as_str(&self) -> &str;
}

/// Whether `text` is `prefix`, an underscore and 32 lowercase hex digits.
fn is_well_formed(prefix: &str, text: &str) -> bool {
    text.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|hex| {
            hex.len() == 32
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// An id that is not of the kind expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {prefix}_… id")]
pub struct MalformedId {
    pub prefix: &'static str,
    pub value: String,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $code:literal, $message:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl PrefixedId for $name {
            const PREFIX: &'static str = $prefix;
            const NOT_FOUND: (&'static str, &'static str) = ($code, $message);

            fn from_uuid(uuid: Uuid) -> Self {
                $name(format!("{}_{}", $prefix, uuid.simple()))
            }

            fn parse(text: &str) -> Option<Self> {
                is_well_formed($prefix, text).then(|| $name(text.to_string()))
            }

            fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl $name {
            /// The id in `text`, or what is wrong with it.
            pub fn try_from_str(text: &str) -> Result<Self, MalformedId> {
                <$name as PrefixedId>::parse(text).ok_or_else(|| MalformedId {
                    prefix: $prefix,
                    value: text.to_string(),
                })
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = MalformedId;

            fn from_str(text: &str) -> Result<Self, MalformedId> {
                $name::try_from_str(text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::try_from_str(&text).map_err(serde::de::Error::custom)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

prefixed_id!(
    /// A tenant: one SaaS product using Tollgate.
    TenantId,
    "ten",
    "tenant_not_found",
    "No such tenant."
);
prefixed_id!(
    /// An API key (the id, not the secret).
    ApiKeyId,
    "key",
    "api_key_not_found",
    "No such API key."
);
prefixed_id!(
    /// A subscription of a customer to a plan.
    SubscriptionId,
    "sub",
    "subscription_not_found",
    "No such subscription."
);
prefixed_id!(
    /// An invoice.
    InvoiceId,
    "in",
    "invoice_not_found",
    "No such invoice."
);
prefixed_id!(
    /// A one-off charge for a customer (SPEC §15).
    InvoiceItemId,
    "ii",
    "invoice_item_not_found",
    "No such invoice item."
);
prefixed_id!(
    /// A held concurrency slot.
    LeaseId,
    "lease",
    "lease_not_found",
    "No such lease (released already?)."
);
prefixed_id!(
    /// A webhook endpoint of a tenant.
    EndpointId,
    "we",
    "webhook_endpoint_not_found",
    "No such webhook endpoint."
);

prefixed_id!(
    /// An audit log entry.
    AuditId,
    "aud",
    "audit_entry_not_found",
    "No such audit log entry."
);

prefixed_id!(
    /// A customer session: a frontend acting for one customer.
    CustomerSessionId,
    "csn",
    "customer_session_not_found",
    "No such customer session."
);

/// Ids chosen by tenants (customers, features, plans, usage events): 1–255 printable ASCII
/// characters without spaces or slashes, so they are safe in paths.
pub fn is_valid_external_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'?' && b != b'#' && b != b'%')
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0192f3a4-5b6c-7d8e-9f00-112233445566";

    #[test]
    fn an_id_is_its_prefix_and_the_uuid_in_hex() {
        let id = SubscriptionId::from_uuid(Uuid::parse_str(UUID).unwrap());
        assert_eq!(id.as_str(), "sub_0192f3a45b6c7d8e9f00112233445566");
        assert_eq!(id.to_string(), id.as_str());
        assert_eq!(SubscriptionId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn parse_refuses_other_kinds_and_malformed_text() {
        let sub = SubscriptionId::from_uuid(Uuid::parse_str(UUID).unwrap());
        assert_eq!(
            InvoiceId::parse(sub.as_str()),
            None,
            "a sub_ id is not an invoice id"
        );
        for bad in [
            "",
            "sub",
            "sub_",
            "sub_0192f3a45b6c7d8e9f0011223344556", // 31 digits
            "sub_0192f3a45b6c7d8e9f001122334455667", // 33 digits
            "sub_0192F3A45B6C7D8E9F00112233445566", // upper case
            "sub_0192f3a45b6c7d8e9f0011223344556g",
            "subx0192f3a45b6c7d8e9f00112233445566",
            "in_0192f3a45b6c7d8e9f00112233445566",
            "sub_0192f3a45b6c7d8e9f00112233445566 ",
        ] {
            assert_eq!(SubscriptionId::parse(bad), None, "{bad:?}");
        }
        // `in` is a prefix of nothing else's prefix confusion: `in_` must not accept `inv_`.
        assert_eq!(
            InvoiceId::parse("inv_0192f3a45b6c7d8e9f00112233445566"),
            None
        );
    }

    #[test]
    fn serde_is_the_plain_string_and_checks_the_kind() {
        let id = LeaseId::from_uuid(Uuid::parse_str(UUID).unwrap());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"lease_0192f3a45b6c7d8e9f00112233445566\"");
        assert_eq!(serde_json::from_str::<LeaseId>(&json).unwrap(), id);
        let err = serde_json::from_str::<TenantId>(&json).unwrap_err();
        assert!(err.to_string().contains("is not a ten_… id"), "{err}");
    }

    #[test]
    fn external_ids_are_path_safe() {
        assert!(is_valid_external_id("user_123"));
        assert!(is_valid_external_id("org:acme@example.com"));
        for bad in ["", "a b", "a/b", "a?b", "a#b", "a%b", "é"] {
            assert!(!is_valid_external_id(bad), "{bad:?}");
        }
        assert!(!is_valid_external_id(&"x".repeat(256)));
        assert!(is_valid_external_id(&"x".repeat(255)));
    }
}
