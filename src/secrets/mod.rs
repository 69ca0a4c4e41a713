//! Secrets at rest (SPEC §3): the tenants' Stripe secret keys and Stripe webhook secrets and
//! the outbound webhook endpoints' signing secrets, which Tollgate must read back to use, are
//! stored sealed under the operator's key (`TOLLGATE_SECRETS_KEY`, 32 bytes, base64).
//!
//! The cipher is AES-256-GCM (RustCrypto's `aes-gcm`), with a fresh random 96-bit nonce for
//! every value. Each value is bound to its place: the associated data names the tenant, the
//! column and (for an endpoint's secret) the endpoint, so a sealed value copied to another
//! tenant's row, another column or another endpoint fails to open. A stored value reads
//!
//! ```text
//! tgenc:v1:<key id>:<base64 of nonce ‖ ciphertext ‖ tag>
//! ```
//!
//! where the key id (12 hex digits of a SHA-256 of the key, which tells nothing of the key)
//! lets a start tell "sealed under another key" from "damaged" at a glance. Secrets that
//! Tollgate only verifies (API keys, session and console tokens) are hashed instead and are not
//! here. How stored secrets are checked at start, sealed when found in clear, and rotated is
//! in [`store`]; the operator's side is docs/SECRETS.md.

pub mod store;

use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::domain::id::{EndpointId, TenantId};

/// What a sealed value starts with (and a value stored in clear does not).
const PREFIX: &str = "tgenc:v1:";
const NONCE_LEN: usize = 12;

/// Where a secret is stored; part of what it is sealed to.
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    /// `tenants.stripe_secret_key`.
    StripeSecretKey,
    /// `tenants.stripe_webhook_secret`.
    StripeWebhookSecret,
    /// `webhook_endpoints.secret` of this endpoint.
    EndpointSecret(&'a EndpointId),
}

impl Place<'_> {
    /// What a value in this place of `owner`'s (a tenant id) is sealed to.
    fn associated_data(&self, tenant: &str) -> String {
        match self {
            Place::StripeSecretKey => format!("tollgate/{tenant}/tenants.stripe_secret_key"),
            Place::StripeWebhookSecret => {
                format!("tollgate/{tenant}/tenants.stripe_webhook_secret")
            }
            Place::EndpointSecret(endpoint) => {
                format!("tollgate/{tenant}/webhook_endpoints.secret/{endpoint}")
            }
        }
    }
}

/// Why a secret could not be sealed: no key is configured (`TOLLGATE_SECRETS_KEY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("TOLLGATE_SECRETS_KEY is not set")]
pub struct KeyMissing;

/// Why a stored secret could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// It is sealed, and no key is configured (`TOLLGATE_SECRETS_KEY`).
    #[error("it is sealed and TOLLGATE_SECRETS_KEY is not set")]
    NoKey,
    /// Sealed under another key.
    #[error("the secret is sealed under key {stored}, not under this key ({ours})")]
    OtherKey { stored: String, ours: String },
    /// Sealed under this key, but it does not open: damaged, or moved from another place.
    #[error("the secret does not open under this key (damaged, or moved from another row)")]
    DoesNotOpen,
}

/// What a service answers: a secret to store with no key configured is the caller's
/// `409 secrets_key_missing` (nothing is written); a stored secret that does not open is the
/// server's own trouble (503, retried).
impl From<KeyMissing> for crate::error::Error {
    fn from(_: KeyMissing) -> Self {
        crate::error::Error::conflict(
            "secrets_key_missing",
            "Storing a secret needs a secrets key (TOLLGATE_SECRETS_KEY), and this Tollgate \
             has none; nothing was written.",
        )
    }
}

impl From<SecretsError> for crate::error::Error {
    fn from(err: SecretsError) -> Self {
        crate::error::Error::SecretUnreadable(err.to_string())
    }
}

/// The operator's key, parsed.
pub struct SecretsKey {
    cipher: Aes256Gcm,
    id: String,
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsKey").field("id", &self.id).finish()
    }
}

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a secrets key must be 32 bytes in base64 (generate one with `tollgate secrets new-key`)")]
pub struct BadKey;

impl SecretsKey {
    /// A key from its base64 text (standard alphabet, padded; surrounding blanks ignored).
    pub fn parse(text: &SecretString) -> Result<SecretsKey, BadKey> {
        let bytes = secrecy::zeroize::Zeroizing::new(
            B64.decode(text.expose_secret().trim())
                .map_err(|_| BadKey)?,
        );
        if bytes.len() != 32 {
            return Err(BadKey);
        }
        let digest = Sha256::new()
            .chain_update(b"tollgate secrets key id\0")
            .chain_update(&bytes[..])
            .finalize();
        Ok(SecretsKey {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
            id: hex::encode(&digest[..6]),
        })
    }

    /// A new random key, as the base64 text `parse` takes.
    pub fn generate() -> SecretString {
        use rand::RngCore;
        let mut key = secrecy::zeroize::Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut key[..]);
        SecretString::from(B64.encode(&key[..]))
    }

    /// The key's id (12 hex digits), as sealed values name it.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn seal(&self, aad: &str, plain: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            // Encryption fails only for plaintexts past GCM's limit (64 GiB).
            .unwrap_or_default();
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.id, B64.encode(bytes))
    }

    fn open(&self, aad: &str, stored: &str) -> Result<SecretString, SecretsError> {
        let Some((key_id, body)) = sealed_parts(stored) else {
            return Err(SecretsError::DoesNotOpen);
        };
        if key_id != self.id {
            return Err(SecretsError::OtherKey {
                stored: key_id.to_string(),
                ours: self.id.clone(),
            });
        }
        let bytes = B64.decode(body).map_err(|_| SecretsError::DoesNotOpen)?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretsError::DoesNotOpen);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::DoesNotOpen)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| SecretsError::DoesNotOpen)
    }
}

/// `(key id, base64 body)` of a sealed value; `None` for a value stored in clear.
fn sealed_parts(stored: &str) -> Option<(&str, &str)> {
    stored.strip_prefix(PREFIX)?.split_once(':')
}

/// Whether a stored value is sealed (rather than stored in clear by an older Tollgate).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// The key ring a process holds: the operator's key, or none. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    key: Option<Arc<SecretsKey>>,
}

impl Secrets {
    pub fn new(key: SecretsKey) -> Secrets {
        Secrets {
            key: Some(Arc::new(key)),
        }
    }

    /// No key: stores nothing, opens only what is stored in clear.
    pub fn none() -> Secrets {
        Secrets::default()
    }

    pub fn key_id(&self) -> Option<&str> {
        self.key.as_deref().map(SecretsKey::id)
    }

    /// `plain` sealed for its place, as it is to be stored.
    pub fn seal(
        &self,
        tenant: &TenantId,
        place: Place<'_>,
        plain: &str,
    ) -> Result<String, KeyMissing> {
        self.seal_at(tenant.as_str(), place, plain)
    }

    fn seal_at(&self, owner: &str, place: Place<'_>, plain: &str) -> Result<String, KeyMissing> {
        let key = self.key.as_deref().ok_or(KeyMissing)?;
        Ok(key.seal(&place.associated_data(owner), plain))
    }

    /// A stored value opened. A value stored in clear (by a Tollgate from before sealing, not
    /// yet sealed by a start with a key) is taken as it is.
    pub fn open(
        &self,
        tenant: &TenantId,
        place: Place<'_>,
        stored: &str,
    ) -> Result<SecretString, SecretsError> {
        self.open_at(tenant.as_str(), place, stored)
    }

    fn open_at(
        &self,
        owner: &str,
        place: Place<'_>,
        stored: &str,
    ) -> Result<SecretString, SecretsError> {
        if !is_sealed(stored) {
            return Ok(SecretString::from(stored));
        }
        let key = self.key.as_deref().ok_or(SecretsError::NoKey)?;
        key.open(&place.associated_data(owner), stored)
    }

    /// A response that holds a secret shown once (a new API key, a session token, an
    /// endpoint's signing secret), sealed as the idempotency cache keeps it for a replay:
    /// bound to the key's scope (the tenant, or the admin API) and the idempotency key.
    pub fn seal_replay(&self, scope: &str, key: &str, body: &str) -> Result<String, KeyMissing> {
        let cipher = self.key.as_deref().ok_or(KeyMissing)?;
        Ok(cipher.seal(&replay_data(scope, key), body))
    }

    /// A sealed replay (see [`Secrets::seal_replay`]) opened.
    pub fn open_replay(
        &self,
        scope: &str,
        key: &str,
        stored: &str,
    ) -> Result<SecretString, SecretsError> {
        let cipher = self.key.as_deref().ok_or(SecretsError::NoKey)?;
        cipher.open(&replay_data(scope, key), stored)
    }
}

fn replay_data(scope: &str, key: &str) -> String {
    format!("tollgate/{scope}/idempotency_keys.response_body/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::id::PrefixedId;

    fn key() -> SecretsKey {
        SecretsKey::parse(&SecretsKey::generate()).unwrap()
    }

    fn tenant(n: u128) -> TenantId {
        TenantId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn a_sealed_value_opens_in_its_place_only() {
        let secrets = Secrets::new(key());
        let (a, b) = (tenant(1), tenant(2));
        let sealed = secrets
            .seal(&a, Place::StripeSecretKey, "sk_test_123")
            .unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("sk_test_123"));
        let opened = secrets.open(&a, Place::StripeSecretKey, &sealed).unwrap();
        assert_eq!(opened.expose_secret(), "sk_test_123");
        // Another tenant's row, another column, another endpoint: nothing opens.
        for (t, place) in [
            (&b, Place::StripeSecretKey),
            (&a, Place::StripeWebhookSecret),
            (
                &a,
                Place::EndpointSecret(&EndpointId::from_uuid(uuid::Uuid::from_u128(3))),
            ),
        ] {
            assert_eq!(
                secrets.open(t, place, &sealed).unwrap_err(),
                SecretsError::DoesNotOpen
            );
        }
        let e1 = EndpointId::from_uuid(uuid::Uuid::from_u128(4));
        let e2 = EndpointId::from_uuid(uuid::Uuid::from_u128(5));
        let hook = secrets
            .seal(&a, Place::EndpointSecret(&e1), "whsec_x")
            .unwrap();
        assert!(secrets.open(&a, Place::EndpointSecret(&e1), &hook).is_ok());
        assert_eq!(
            secrets
                .open(&a, Place::EndpointSecret(&e2), &hook)
                .unwrap_err(),
            SecretsError::DoesNotOpen
        );
    }

    #[test]
    fn every_seal_has_its_own_nonce_and_tampering_is_caught() {
        let secrets = Secrets::new(key());
        let t = tenant(1);
        let one = secrets
            .seal(&t, Place::StripeWebhookSecret, "whsec_same")
            .unwrap();
        let two = secrets
            .seal(&t, Place::StripeWebhookSecret, "whsec_same")
            .unwrap();
        assert_ne!(one, two);
        let (id, body) = sealed_parts(&one).unwrap();
        let mut bytes = B64.decode(body).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("{PREFIX}{id}:{}", B64.encode(bytes));
        assert_eq!(
            secrets
                .open(&t, Place::StripeWebhookSecret, &tampered)
                .unwrap_err(),
            SecretsError::DoesNotOpen
        );
        assert_eq!(
            secrets
                .open(&t, Place::StripeWebhookSecret, "tgenc:v1:nonsense")
                .unwrap_err(),
            SecretsError::DoesNotOpen
        );
    }

    #[test]
    fn another_key_is_told_apart_and_no_key_opens_only_clear_values() {
        let (old, new) = (Secrets::new(key()), Secrets::new(key()));
        let t = tenant(7);
        let sealed = old.seal(&t, Place::StripeSecretKey, "sk_live_x").unwrap();
        assert!(matches!(
            new.open(&t, Place::StripeSecretKey, &sealed),
            Err(SecretsError::OtherKey { .. })
        ));
        let none = Secrets::none();
        assert_eq!(
            none.seal(&t, Place::StripeSecretKey, "sk").unwrap_err(),
            KeyMissing
        );
        assert_eq!(
            none.open(&t, Place::StripeSecretKey, &sealed).unwrap_err(),
            SecretsError::NoKey
        );
        let clear = none
            .open(&t, Place::StripeSecretKey, "sk_test_clear")
            .unwrap();
        assert_eq!(clear.expose_secret(), "sk_test_clear");
    }

    #[test]
    fn keys_are_32_bytes_of_base64_and_their_ids_are_stable() {
        let text = SecretsKey::generate();
        let (k1, k2) = (
            SecretsKey::parse(&text).unwrap(),
            SecretsKey::parse(&SecretString::from(format!(" {}\n", text.expose_secret()))).unwrap(),
        );
        assert_eq!(k1.id(), k2.id());
        assert_eq!(k1.id().len(), 12);
        assert!(!format!("{k1:?}").contains(text.expose_secret()));
        for bad in [
            "",
            "not base64!",
            "c2hvcnQ=",
            &B64.encode([0u8; 31]),
            &B64.encode([0u8; 33]),
        ] {
            assert_eq!(
                SecretsKey::parse(&SecretString::from(bad)).unwrap_err(),
                BadKey
            );
        }
    }
}
