//! The stored secrets as a whole: what `serve` and `worker` check at start, and the key's
//! rotation (`tollgate secrets rotate`).
//!
//! **At start** ([`prepare`]) every stored secret is read and opened with the process's key,
//! in one transaction. A secret that does not open, or stored secrets and no key, stop the
//! process with one line ([`StoreError`]): it never runs with secrets it cannot read. Secrets
//! still stored in clear (by a Tollgate from before sealing, or one still running beside this
//! one during an upgrade) are sealed in the same transaction. This is a step of the start and
//! not a migration, because the key is not in the database and a migration must not need it
//! (`sqlx migrate run` runs the same files).
//!
//! **Rotation** ([`rotate`]) reads every stored secret with the current key and stores it
//! sealed under the new one, in one transaction, holding off writes to the two tables meanwhile;
//! after it the old key opens nothing.

use sqlx::PgPool;

use super::{Place, Secrets, SecretsError, SecretsKey};
use crate::db;
use crate::db::secrets::{Column, Stored};

/// Why the stored secrets cannot be served or rotated. Each displays as the one line the
/// process exits with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the database holds {0} stored secrets (Stripe keys, webhook secrets) and \
         TOLLGATE_SECRETS_KEY is not set: set it to the key they are sealed under \
         (docs/SECRETS.md)"
    )]
    KeyMissing(usize),
    #[error(
        "the database holds {0} secrets stored in clear by an older Tollgate and \
         TOLLGATE_SECRETS_KEY is not set: set it (`tollgate secrets new-key` makes one) and \
         start again to seal them"
    )]
    ClearWithoutKey(usize),
    #[error(
        "TOLLGATE_SECRETS_KEY (key {ours}) does not open {failed} of the {total} stored \
         secrets ({detail}); start with the key they are sealed under"
    )]
    WrongKey {
        ours: String,
        failed: usize,
        total: usize,
        detail: SecretsError,
    },
    #[error("a stored secret changed while the secrets were being sealed; run it again")]
    Raced,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What [`prepare`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// Secrets stored, all of which open with the key.
    pub stored: usize,
    /// Of them, how many were in clear and are now sealed.
    pub sealed_now: usize,
}

/// Checks at start that every stored secret opens with `secrets`' key, and seals those still
/// stored in clear (module docs).
pub async fn prepare(db: &PgPool, secrets: &Secrets) -> Result<Prepared, StoreError> {
    let mut tx = db::spanning_tenants(db).await?;
    let stored = db::secrets::all(&mut tx).await?;
    let total = stored.len();
    let clear: Vec<&Stored> = stored
        .iter()
        .filter(|s| !super::is_sealed(&s.value))
        .collect();
    if secrets.key_id().is_none() {
        return match (total, clear.len()) {
            (0, _) => Ok(Prepared {
                stored: 0,
                sealed_now: 0,
            }),
            (n, c) if c == n => Err(StoreError::ClearWithoutKey(n)),
            (n, _) => Err(StoreError::KeyMissing(n)),
        };
    }
    let mut failures = stored
        .iter()
        .filter(|s| super::is_sealed(&s.value))
        .filter_map(|s| open(secrets, s).err());
    if let Some(first) = failures.next() {
        return Err(StoreError::WrongKey {
            ours: secrets.key_id().unwrap_or_default().to_string(),
            failed: 1 + failures.count(),
            total,
            detail: first,
        });
    }
    for s in &clear {
        let sealed =
            seal(secrets, s, &s.value).map_err(|_| StoreError::ClearWithoutKey(clear.len()))?;
        // Another process starting at the same time may have sealed it first: then it
        // holds a sealed value, and that is all this step is for.
        db::secrets::replace(&mut tx, s, &sealed).await?;
    }
    tx.commit().await?;
    if !clear.is_empty() {
        tracing::info!(
            sealed = clear.len(),
            "secrets stored in clear are now sealed"
        );
    }
    Ok(Prepared {
        stored: total,
        sealed_now: clear.len(),
    })
}

/// Re-seals every stored secret under `new`, in one transaction: opened with `current` (the
/// process's key; secrets stored in clear are taken as they are). Returns how many there are.
/// Nothing changes if any of them does not open.
pub async fn rotate(db: &PgPool, current: &Secrets, new: SecretsKey) -> Result<usize, StoreError> {
    let next = Secrets::new(new);
    let mut tx = db::spanning_tenants(db).await?;
    db::secrets::lock_writes(&mut tx).await?;
    let stored = db::secrets::all(&mut tx).await?;
    let total = stored.len();
    let mut opened = Vec::with_capacity(total);
    let mut failed = Vec::new();
    for s in &stored {
        match open(current, s) {
            Ok(plain) => opened.push((s, plain)),
            Err(e) => failed.push(e),
        }
    }
    if let Some(first) = failed.first() {
        return Err(match first {
            SecretsError::NoKey => StoreError::KeyMissing(total),
            detail => StoreError::WrongKey {
                ours: current.key_id().unwrap_or_default().to_string(),
                failed: failed.len(),
                total,
                detail: detail.clone(),
            },
        });
    }
    for (s, plain) in opened {
        use secrecy::ExposeSecret;
        let sealed = seal(&next, s, plain.expose_secret()).map_err(|_| StoreError::Raced)?;
        let replaced = db::secrets::replace(&mut tx, s, &sealed).await?;
        // The writes to the tables are held off: every place still holds what was read. A
        // kept response may have expired meanwhile (the idempotency cache is not held off).
        if !replaced && !matches!(s.column, Column::Replay(_)) {
            return Err(StoreError::Raced);
        }
    }
    tx.commit().await?;
    Ok(total)
}

fn open(secrets: &Secrets, s: &Stored) -> Result<secrecy::SecretString, SecretsError> {
    match &s.column {
        Column::StripeSecretKey => secrets.open_at(&s.owner, Place::StripeSecretKey, &s.value),
        Column::StripeWebhookSecret => {
            secrets.open_at(&s.owner, Place::StripeWebhookSecret, &s.value)
        }
        Column::EndpointSecret(endpoint) => {
            secrets.open_at(&s.owner, Place::EndpointSecret(endpoint), &s.value)
        }
        Column::Replay(key) => secrets.open_replay(&s.owner, key, &s.value),
    }
}

fn seal(secrets: &Secrets, s: &Stored, plain: &str) -> Result<String, super::KeyMissing> {
    match &s.column {
        Column::StripeSecretKey => secrets.seal_at(&s.owner, Place::StripeSecretKey, plain),
        Column::StripeWebhookSecret => secrets.seal_at(&s.owner, Place::StripeWebhookSecret, plain),
        Column::EndpointSecret(endpoint) => {
            secrets.seal_at(&s.owner, Place::EndpointSecret(endpoint), plain)
        }
        Column::Replay(key) => secrets.seal_replay(&s.owner, key, plain),
    }
}
