//! Operational endpoints: liveness, readiness, Prometheus metrics.

use std::sync::OnceLock;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::error::ApiError;
use super::extract::{too_large, MAX_BODY_BYTES};
use crate::AppState;

/// How long `/readyz` waits for the database.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(900);

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide metrics recorder once.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Counts requests and their latency by matched route (low cardinality) and status, and ends
/// a request that runs past the configured timeout with a 503 in the API's error shape.
pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    tracing::Span::current().record("route", route.as_str());
    let method = req.method().as_str().to_owned();
    let resp = match tokio::time::timeout(state.request_timeout, browser_cors(req, next)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::http::error::ErrorType::Unavailable,
            "request_timeout",
            "The request took too long; it may or may not have taken effect. Retry with the same Idempotency-Key.",
        )
        .into_response(),
    };
    let status = resp.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("tollgate_http_requests_total", &labels).increment(1);
    metrics::histogram!("tollgate_http_request_duration_seconds", &labels[..2])
        .record(start.elapsed().as_secs_f64());
    resp
}

/// CORS on the `/v1/me` routes (SPEC §9, `super::browser_cors`); every other path goes on
/// untouched.
async fn browser_cors(req: Request, next: Next) -> Response {
    use tower::{Layer, ServiceExt};
    static CORS: std::sync::OnceLock<tower_http::cors::CorsLayer> = std::sync::OnceLock::new();
    let path = req.uri().path();
    if path != "/v1/me" && !path.starts_with("/v1/me/") {
        return limit_body(req, next).await;
    }
    let inner = tower::service_fn(move |req: Request| {
        let next = next.clone();
        async move { Ok::<_, std::convert::Infallible>(limit_body(req, next).await) }
    });
    match CORS
        .get_or_init(super::browser_cors)
        .layer(inner)
        .oneshot(req)
        .await
    {
        Ok(res) => res.map(axum::body::Body::new),
        Err(never) => match never {},
    }
}

/// How much of an oversized body is read and thrown away before the 413 is sent, so that a
/// client still sending gets the answer instead of a reset connection (a "lingering close", as
/// nginx does). A body declared larger than this gets the answer at once and the connection
/// closes.
const DRAIN_LIMIT: u64 = 8 * 1024 * 1024;

/// Holds every path to the 1 MiB body limit, including paths whose handler never reads the
/// body (axum's `DefaultBodyLimit` binds only the extractors that read it): a declared
/// `Content-Length` over the limit is refused without reaching the handler; a body of unknown
/// length (chunked) is read up to the limit first.
async fn limit_body(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > MAX_BODY_BYTES as u64 => {
            if len <= DRAIN_LIMIT {
                let _ = read_within(req.into_body(), MAX_BODY_BYTES).await;
            }
            too_large().into_response()
        }
        Some(_) => next.run(req).await,
        None if req.headers().contains_key(header::TRANSFER_ENCODING) => {
            let (parts, body) = req.into_parts();
            match read_within(body, MAX_BODY_BYTES).await {
                Ok(bytes) => {
                    next.run(Request::from_parts(parts, Body::from(bytes)))
                        .await
                }
                Err(BodyRead::TooLarge) => too_large().into_response(),
                Err(BodyRead::Broken) => {
                    ApiError::invalid("invalid_body", "The request body could not be read.")
                        .into_response()
                }
            }
        }
        None => next.run(req).await,
    }
}

enum BodyRead {
    TooLarge,
    Broken,
}

/// Reads a body whole if it is at most `max` bytes; past that, keeps reading (and dropping)
/// up to [`DRAIN_LIMIT`] and says it was too large.
async fn read_within(mut body: Body, max: usize) -> Result<Bytes, BodyRead> {
    let mut kept = BytesMut::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyRead::Broken)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total <= max as u64 {
            kept.extend_from_slice(&data);
        } else if total > DRAIN_LIMIT {
            return Err(BodyRead::TooLarge);
        }
    }
    if total > max as u64 {
        Err(BodyRead::TooLarge)
    } else {
        Ok(kept.freeze())
    }
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "The process is up")))]
pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "The database is reachable"),
    (status = 503, description = "The database is not reachable", body = crate::http::error::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    // Answer within a second whatever the database does: a probe must not hang while the
    // pool waits out its acquire timeout or a restarting server.
    let ping = crate::db::ping(&state.db);
    match tokio::time::timeout(READY_TIMEOUT, ping).await {
        Ok(Ok(())) => Ok(axum::Json(serde_json::json!({"status": "ready"}))),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: database not reachable");
            Err(ApiError::unavailable("The database is not reachable."))
        }
        Err(_) => {
            tracing::warn!("readiness: database did not answer within 1 s");
            Err(ApiError::unavailable("The database is not reachable."))
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics_text(State(state): State<AppState>) -> Response {
    let pool = &state.db;
    metrics::gauge!("tollgate_db_pool_connections").set(pool.size() as f64);
    metrics::gauge!("tollgate_db_pool_idle_connections").set(pool.num_idle() as f64);
    let body = prometheus().map(|h| h.render()).unwrap_or_default();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
        .into_response()
}
