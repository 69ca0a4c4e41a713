//! Extractors whose rejections use the API's error shape.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorType};
use crate::domain::id::PrefixedId;
use crate::error::Error;

/// The most a request body may be.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorType::InvalidRequest,
        "body_too_large",
        "The request body is larger than 1 MiB.",
    )
}

/// A JSON body. Unknown fields, wrong types and malformed JSON are 400s naming the field.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    ApiError::invalid("invalid_body", "The request body could not be read.")
                }
            })?;
        parse_json(&bytes).map(Json)
    }
}

/// A JSON body that may be absent (an empty body is `None`).
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    ApiError::invalid("invalid_body", "The request body could not be read.")
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        parse_json(&bytes).map(|v| OptionalJson(Some(v)))
    }
}

/// Parses JSON into `T`, mapping serde's errors to API errors with the failing field as
/// `param`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "invalid_json",
            "The request body must be a JSON object.",
        ));
    }
    if has_nul_escape(bytes) {
        return Err(nul_refused());
    }
    // The plain parse is the fast path; only a failure pays for tracking the field path.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    result.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        ApiError::from(json_error(&path, &inner))
    })
}

/// PostgreSQL text cannot hold NUL characters, so they are refused at the edge (JSON can
/// only carry one as the escape `\u0000`).
fn has_nul_escape(bytes: &[u8]) -> bool {
    if !bytes.contains(&b'\\') {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1..i + 6) == Some(b"u0000") {
                return true;
            }
            // Skip the escaped character (so `\\u0000` is a backslash and text).
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

fn nul_refused() -> ApiError {
    ApiError::invalid(
        "invalid_string",
        "Strings may not contain NUL (\\u0000) characters.",
    )
}

/// Whether a URI's path or query carries a percent-encoded NUL.
fn uri_has_nul(parts: &Parts) -> bool {
    let s = parts.uri.path_and_query().map_or("", |pq| pq.as_str());
    s.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
}

/// Deserializes an already-parsed value (batch events), with the same errors.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Error> {
    let result: Result<T, _> = serde_path_to_error::deserialize(value);
    result.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        json_error(&path, &inner)
    })
}

fn json_error(path: &str, inner: &serde_json::Error) -> Error {
    use serde_json::error::Category;
    let msg = inner.to_string();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => Error::invalid(
            "invalid_json",
            format!("The request body is not valid JSON: {msg}"),
        ),
        Category::Data => {
            if let Some(rest) = msg.strip_prefix("unknown field `") {
                let field = rest.split('`').next().unwrap_or_default();
                let param = join_path(path, field);
                return Error::invalid_param(
                    "unknown_field",
                    &param,
                    format!("Unknown field `{param}`."),
                );
            }
            if let Some(rest) = msg.strip_prefix("missing field `") {
                let field = rest.split('`').next().unwrap_or_default();
                let param = join_path(path, field);
                return Error::invalid_param(
                    "missing_field",
                    &param,
                    format!("Missing required field `{param}`."),
                );
            }
            let param = if path == "." {
                None
            } else {
                Some(path.to_string())
            };
            let err = Error::invalid(
                "invalid_field",
                match &param {
                    Some(p) => format!("Invalid value for `{p}`: {msg}"),
                    None => format!("Invalid request body: {msg}"),
                },
            );
            match param {
                Some(p) => err.with_param(p),
                None => err,
            }
        }
    }
}

/// serde_path_to_error's path already ends with the unknown/missing field in some cases.
fn join_path(path: &str, field: &str) -> String {
    if path.is_empty() || path == "." {
        field.to_string()
    } else if path == field || path.ends_with(&format!(".{field}")) {
        path.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Path parameters.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if uri_has_nul(parts) {
            return Err(nul_refused());
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| {
                ApiError::invalid("invalid_path", format!("Invalid path: {e}"))
            })
    }
}

/// A path whose one parameter is a prefixed id of kind `T`. An id that does not parse (another
/// kind's, malformed) names nothing: it is the kind's "not found", the same answer as for an id
/// that does not exist.
pub struct IdPath<T>(pub T);

impl<T, S> FromRequestParts<S> for IdPath<T>
where
    T: PrefixedId + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
        T::parse(&raw)
            .map(IdPath)
            .ok_or_else(|| Error::no_such::<T>().into())
    }
}

/// Query-string parameters; unknown parameters are rejected like unknown JSON fields.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if uri_has_nul(parts) {
            return Err(nul_refused());
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| {
                let text = e.body_text();
                if let Some(rest) = text.split("unknown field `").nth(1) {
                    let field = rest.split('`').next().unwrap_or_default();
                    return ApiError::invalid_param(
                        "unknown_field",
                        field,
                        format!("Unknown query parameter `{field}`."),
                    );
                }
                ApiError::invalid("invalid_query", text)
            })
    }
}

/// `?limit=&starting_after=` cursor pagination.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
    /// The id of the last item of the previous page.
    pub starting_after: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(20),
            Some(n) if (1..=100).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::invalid_param(
                "invalid_limit",
                "limit",
                "limit must be between 1 and 100.",
            )),
        }
    }
}

/// A page of a list: `{"data": [...], "has_more": bool}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

impl<T> List<T> {
    /// Builds a page from up to `limit + 1` fetched rows.
    pub fn from_rows(mut rows: Vec<T>, limit: i64) -> Self {
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit.max(0) as usize);
        List {
            data: rows,
            has_more,
        }
    }
}
