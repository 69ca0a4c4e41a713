//! What the server-rendered pages (the portal and the console) share: the response with its
//! security headers, per-response CSP nonces, rendering, and CSRF tokens.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The CSRF token of a signed-in browser: a hash of its secret session token under a purpose
/// of its own, so only a holder of the (HttpOnly) cookie can know it, and it needs no storage.
pub fn csrf_token(session_token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("tollgate page csrf\n{session_token}").as_bytes(),
    ))
}

/// Whether a submitted CSRF token is the session's (compared in constant time).
pub fn csrf_ok(session_token: &str, submitted: Option<&str>) -> bool {
    let expected = csrf_token(session_token);
    submitted
        .map(|c| c.as_bytes().ct_eq(expected.as_bytes()).into())
        .unwrap_or(false)
}

pub fn new_nonce() -> String {
    use rand::Rng;
    hex::encode(rand::thread_rng().gen::<[u8; 16]>())
}

/// An HTML page with the headers every portal page carries.
pub struct Html {
    pub status: StatusCode,
    pub body: String,
    pub nonce: String,
}

impl IntoResponse for Html {
    fn into_response(self) -> Response {
        let csp = format!(
            "default-src 'none'; style-src 'self' 'nonce-{}'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            self.nonce
        );
        let mut res = (self.status, self.body).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&csp) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

/// Renders a template into a page.
pub fn render<T: Template>(
    status: StatusCode,
    t: &T,
    nonce: String,
) -> Result<Response, askama::Error> {
    let body = t.render().inspect_err(|e| {
        tracing::error!(error = %e, "page template failed");
    })?;
    Ok(Html {
        status,
        body,
        nonce,
    }
    .into_response())
}
