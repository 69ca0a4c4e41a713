//! The error of the layers below HTTP (services, the worker, the CLI): what went wrong, by
//! kind, with no HTTP in it. `http::error::ApiError` is made from it at the edge; the worker
//! and the CLI log it with its cause.
//!
//! A refusal the caller can act on is [`Error::Rejected`] with a stable snake_case `code`
//! (`customer_not_found`, `limit_exceeded`, …) and the `param` it is about. The database
//! going away is [`Error::Unavailable`], told apart from other database failures by
//! [`is_unavailable`], so clients get a 503 to retry rather than a 500.

use std::borrow::Cow;
use std::sync::Arc;

/// The class of a refusal; each maps to one HTTP status at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed or names something impossible (400).
    Invalid,
    /// No valid credentials (401).
    Unauthenticated,
    /// Valid credentials that may not do this (403).
    Forbidden,
    NotFound,
    /// The state of a resource forbids it now (409).
    Conflict,
    /// A limit, spend cap or plan refuses it (402).
    Refused,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Refused for the caller's reasons; nothing was written.
    #[error("{code}: {message}")]
    Rejected {
        kind: Kind,
        code: Cow<'static, str>,
        message: Cow<'static, str>,
        param: Option<String>,
    },
    /// The database is unreachable, shutting down or restarting: retry shortly.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Arc<sqlx::Error>),
    /// A stored secret this process's key does not open (the key was rotated and the process
    /// not yet restarted with the new one): retry once it is.
    #[error("a stored secret does not open: {0}")]
    SecretUnreadable(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(#[source] Arc<sqlx::Error>),
    /// A broken invariant or a failure of something else (a payload that cannot be encoded,
    /// a plan version that should exist); the cause says which.
    #[error("{0:#}")]
    Internal(Arc<anyhow::Error>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn rejected(
        kind: Kind,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::Rejected {
            kind,
            code: code.into(),
            message: message.into(),
            param: None,
        }
    }

    /// Names the field or header the refusal is about.
    pub fn with_param(mut self, name: impl Into<String>) -> Self {
        if let Error::Rejected { param, .. } = &mut self {
            *param = Some(name.into());
        }
        self
    }

    pub fn invalid(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::rejected(Kind::Invalid, code, message)
    }

    pub fn invalid_param(
        code: &'static str,
        param: &str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::invalid(code, message).with_param(param)
    }

    pub fn unauthenticated(message: &'static str) -> Self {
        Self::rejected(Kind::Unauthenticated, "unauthenticated", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::rejected(Kind::Forbidden, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::rejected(Kind::NotFound, code, message)
    }

    /// No object has this id (or it is malformed, or another kind's: the same answer, so a
    /// client cannot tell them apart).
    pub fn no_such<T: crate::domain::id::PrefixedId>() -> Self {
        let (code, message) = T::NOT_FOUND;
        Self::not_found(code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::rejected(Kind::Conflict, code, message)
    }

    /// Refused by a limit, a spend cap or the plan (`limit_exceeded`, `not_in_plan`, …).
    pub fn limit(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::rejected(Kind::Refused, code, message)
    }

    /// A broken invariant, with its cause.
    pub fn internal(cause: impl Into<Cow<'static, str>>) -> Self {
        Error::Internal(Arc::new(anyhow::anyhow!(cause.into())))
    }

    /// A quantity refused by [`crate::domain::qty::validate_quantity`], naming its field.
    pub fn invalid_quantity(err: crate::domain::qty::InvalidQuantity, param: &str) -> Self {
        Self::invalid_param("invalid_quantity", param, err.to_string())
    }

    /// The refusal's kind, or `None` for a failure of Tollgate or its database.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Error::Rejected { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether the work ran into a failure of the database (its connection should not be
    /// reused) rather than a refusal.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Error::Rejected { .. })
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        if is_unavailable(&err) {
            Error::Unavailable(Arc::new(err))
        } else {
            Error::Database(Arc::new(err))
        }
    }
}

/// A failure shared by several operations (a batch's statement).
impl From<Arc<sqlx::Error>> for Error {
    fn from(err: Arc<sqlx::Error>) -> Self {
        if is_unavailable(&err) {
            Error::Unavailable(err)
        } else {
            Error::Database(err)
        }
    }
}

impl From<anyhow::Error> for Error {
    fn from(err: anyhow::Error) -> Self {
        Error::Internal(Arc::new(err))
    }
}

/// Whether a database error means "the database is not there right now" (unreachable,
/// shutting down, restarting, out of connections) rather than a fault of the statement.
///
/// SQLSTATE classes: `08` connection exceptions; `57P01` admin shutdown, `57P02` crash
/// shutdown, `57P03` cannot connect now (starting up or in recovery), `57P05` idle session
/// timeout; `53300` too many connections; `53` insufficient resources in general.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "57P05")
        }),
        _ => false,
    }
}
