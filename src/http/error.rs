//! The error type of the HTTP edge, and its JSON shape (docs/API-DESIGN.md, "Errors"):
//! `{"error": {"type", "code", "message", "param"?}}`. The layers below return
//! [`crate::error::Error`]; it becomes an `ApiError` here, where its cause is logged (never
//! sent).

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Error, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    Conflict,
    LimitExceeded,
    RateLimited,
    Unavailable,
    Internal,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorType,
    pub code: Cow<'static, str>,
    pub message: Cow<'static, str>,
    pub param: Option<String>,
}

/// The body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: ErrorType,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ApiError {
            status,
            kind,
            code: code.into(),
            message: message.into(),
            param: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn invalid(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequest,
            code,
            message,
        )
    }

    pub fn invalid_param(
        code: &'static str,
        param: &str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::invalid(code, message).with_param(param)
    }

    pub fn unauthenticated(message: &'static str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::Authentication,
            "unauthenticated",
            message,
        )
    }

    pub fn forbidden(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorType::Permission, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorType::NotFound, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorType::Conflict, code, message)
    }

    pub fn limit(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            ErrorType::LimitExceeded,
            code,
            message,
        )
    }

    pub fn unavailable(message: &'static str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Unavailable,
            "unavailable",
            message,
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::Internal,
            "internal_error",
            "An internal error occurred.",
        )
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                kind: self.kind,
                code: self.code.to_string(),
                message: self.message.to_string(),
                param: self.param.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::Rejected {
                kind,
                code,
                message,
                param,
            } => {
                let (status, kind) = match kind {
                    Kind::Invalid => (StatusCode::BAD_REQUEST, ErrorType::InvalidRequest),
                    Kind::Unauthenticated => (StatusCode::UNAUTHORIZED, ErrorType::Authentication),
                    Kind::Forbidden => (StatusCode::FORBIDDEN, ErrorType::Permission),
                    Kind::NotFound => (StatusCode::NOT_FOUND, ErrorType::NotFound),
                    Kind::Conflict => (StatusCode::CONFLICT, ErrorType::Conflict),
                    Kind::Refused => (StatusCode::PAYMENT_REQUIRED, ErrorType::LimitExceeded),
                };
                ApiError {
                    status,
                    kind,
                    code,
                    message,
                    param,
                }
            }
            Error::Unavailable(cause) => {
                tracing::error!(error = %cause, "database unavailable");
                ApiError::unavailable("The database is unavailable; retry shortly.")
            }
            Error::SecretUnreadable(cause) => {
                tracing::error!(error = %cause, "a stored secret does not open: restart with the current TOLLGATE_SECRETS_KEY");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorType::Unavailable,
                    "secrets_unreadable",
                    "This server cannot open the tenant's stored secrets right now; retry shortly.",
                )
            }
            err @ (Error::Database(_) | Error::Internal(_)) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                ApiError::internal()
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Error::from(err).into()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        Error::from(err).into()
    }
}
