//! The HTTP edge: one module per resource (thin handlers over the services), the router, the
//! middleware stack, and `ApiError` — the only place HTTP statuses exist
//! (docs/ARCHITECTURE.md).

pub mod addons;
pub mod admin;
pub mod alerts;
pub mod analytics;
pub mod audit;
pub mod auth;
pub mod chart;
pub mod console;
pub mod coupons;
pub mod customers;
pub mod error;
pub mod extract;
pub mod features;
pub mod idempotency;
pub mod invoice_items;
pub mod invoices;
pub mod leases;
pub mod me;
pub mod ops;
pub mod pages;
pub mod plans;
pub mod portal;
pub mod state;
pub mod stripe;
pub mod subscriptions;
pub mod tenant;
pub mod test_clock;
pub mod usage;
pub mod webhook_endpoints;

use std::future::Future;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use tokio::net::TcpListener;

use self::error::ApiError;

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate", description = "Multi-tenant billing and entitlements API."),
    modifiers(&SecurityAddon),
    security(("bearer" = [])),
    tags(
        (name = "tenant"), (name = "features"), (name = "plans"), (name = "customers"),
        (name = "subscriptions"), (name = "addons"), (name = "coupons"), (name = "invoices"), (name = "test_clock"), (name = "usage"), (name = "webhooks"), (name = "stripe"), (name = "analytics"), (name = "governance"), (name = "customer_sessions"), (name = "me"),
        (name = "admin"), (name = "ops")
    )
)]
struct ApiDoc;

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The tenant API under `/v1` (authenticated by tenant keys).
fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tenant::get_tenant, tenant::patch_tenant))
        .routes(routes!(tenant::list_api_keys))
        .routes(routes!(tenant::revoke_api_key))
        .routes(routes!(features::create_feature, features::list_features))
        .routes(routes!(features::get_feature))
        .routes(routes!(plans::create_plan, plans::list_plans))
        .routes(routes!(plans::get_plan, plans::put_plan))
        .routes(routes!(customers::list_customers))
        .routes(routes!(
            customers::put_customer,
            customers::get_customer,
            customers::delete_customer
        ))
        .routes(routes!(customers::list_members))
        .routes(routes!(customers::export_customer))
        .routes(routes!(customers::put_member, customers::delete_member))
        .routes(routes!(subscriptions::create_subscription))
        .routes(routes!(subscriptions::get_subscription))
        .routes(routes!(subscriptions::customer_subscription))
        .routes(routes!(subscriptions::change_subscription))
        .routes(routes!(subscriptions::cancel_subscription))
        .routes(routes!(subscriptions::reactivate_subscription))
        .routes(routes!(invoices::get_invoice))
        .routes(routes!(invoices::customer_invoices))
        .routes(routes!(invoices::pay_invoice))
        .routes(routes!(invoices::void_invoice))
        .routes(routes!(invoices::invoice_pdf))
        .routes(routes!(invoices::upcoming_invoice))
        .routes(routes!(invoices::create_credit_note))
        .routes(routes!(invoices::grant_credit))
        .routes(routes!(invoices::balance_transactions))
        .routes(routes!(
            invoice_items::create_item,
            invoice_items::list_items
        ))
        .routes(routes!(invoice_items::delete_item))
        .routes(routes!(addons::create_addon, addons::list_addons))
        .routes(routes!(addons::get_addon, addons::put_addon))
        .routes(routes!(addons::attach_addon))
        .routes(routes!(addons::remove_addon))
        .routes(routes!(coupons::create_coupon, coupons::list_coupons))
        .routes(routes!(coupons::get_coupon, coupons::delete_coupon))
        .routes(routes!(coupons::apply_discount, coupons::remove_discount))
        .routes(routes!(analytics::summary))
        .routes(routes!(analytics::mrr))
        .routes(routes!(audit::list))
        .routes(routes!(me::create_session))
        .routes(routes!(me::revoke_session))
        .routes(routes!(test_clock::get_clock))
        .routes(routes!(test_clock::advance))
        .routes(routes!(usage::check::entitlements))
        .routes(routes!(usage::readouts::current_usage))
        .routes(routes!(usage::readouts::usage_history))
        .routes(routes!(usage::readouts::member_usage))
        .routes(routes!(leases::create_lease))
        .routes(routes!(leases::release_lease))
        .routes(routes!(alerts::customer_alerts))
        .routes(routes!(
            webhook_endpoints::create_endpoint,
            webhook_endpoints::list_endpoints
        ))
        .routes(routes!(webhook_endpoints::delete_endpoint))
        .routes(routes!(webhook_endpoints::list_deliveries))
        .routes(routes!(stripe::sync_status))
}

/// `POST /v1/check`: the key is checked inside the check's own statement (unless the request
/// carries an Idempotency-Key; see `auth::defer_tenant_unless_idempotent`).
fn check_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage::check::check))
}

/// `POST /v1/usage/batch`: admitted by the size of its body (`usage::record::admit_batch`).
fn usage_batch_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage::record::record_usage_batch))
}

/// `POST /v1/usage`: the key is checked inside the recording's own statement.
fn usage_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage::record::record_usage))
}

/// `/v1/me`: a customer session acting for its one customer.
fn me_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me::me))
        .routes(routes!(me::entitlements))
        .routes(routes!(me::usage))
        .routes(routes!(me::subscription))
        .routes(routes!(me::invoices))
        .routes(routes!(me::invoice_pdf))
        .routes(routes!(me::upcoming_invoice))
        .routes(routes!(me::list_members))
        .routes(routes!(me::export))
        .routes(routes!(me::change_subscription))
        .routes(routes!(me::cancel_subscription))
        .routes(routes!(me::reactivate_subscription))
}

/// `POST /v1/me/check`: the session is checked inside the check's own statement (unless the
/// request carries an Idempotency-Key; see `auth::defer_session_unless_idempotent`).
fn me_check_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me::check))
}

fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin::create_tenant))
        .routes(routes!(admin::create_api_key))
}

fn ops_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        // Authenticated by Stripe's signature, not by a key.
        .routes(routes!(stripe::stripe_webhook))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics_text))
}

/// The OpenAPI document, generated from the routes and their annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, api) = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .merge(v1_routes())
        .merge(check_routes())
        .merge(usage_routes())
        .merge(usage_batch_routes())
        .merge(me_routes())
        .merge(me_check_routes())
        .merge(admin_routes())
        .merge(ops_routes())
        .split_for_parts();
    api
}

/// `GET /docs`: Swagger UI over `/openapi.json`, its assets served from the binary (no CDN:
/// it works offline), under a Content-Security-Policy that allows scripts from this origin
/// only — none inline.
fn docs_routes() -> Router<AppState> {
    let ui = SwaggerUi::new("/docs").config(SwaggerConfig::new(["/openapi.json"]));
    Router::from(ui).layer(axum::middleware::map_response(
        |mut res: axum::response::Response| async move {
            let h = res.headers_mut();
            h.insert(
                axum::http::header::CONTENT_SECURITY_POLICY,
                axum::http::HeaderValue::from_static(
                    "default-src 'none'; script-src 'self'; style-src 'self'; \
                     img-src 'self' data:; connect-src 'self'; font-src 'self' data:; \
                     frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
                ),
            );
            h.insert(
                axum::http::header::X_FRAME_OPTIONS,
                axum::http::HeaderValue::from_static("DENY"),
            );
            res
        },
    ))
}

/// CORS for the routes a browser calls with a customer session (SPEC §9, "Browsers"): any
/// origin is answered (the tenant's `cors_origins` are enforced on the request itself, by
/// `auth::allowed_origin`, since a preflight carries no token), `Vary: Origin`, no
/// credentials (the token is the credential, not a cookie). Answered around the whole router
/// (`ops::observe`), so that preflights (OPTIONS, a method no route has) reach it; tenant-key
/// and admin routes never get it: a browser is refused them.
pub(crate) fn browser_cors() -> tower_http::cors::CorsLayer {
    use axum::http::{header, Method};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::mirror_request())
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([HeaderName::from_static(auth::REQUEST_ID)])
        .max_age(std::time::Duration::from_secs(600))
}

/// Builds the whole application: the router, and around it, once, the layers every request
/// goes through (request id, trace span, panic guard). Wrapped around the router rather than
/// added with `Router::layer`, which wraps (and boxes, and clones per request) every route
/// once per layer: measured on `POST /v1/check`, ~3 µs less of Tollgate's CPU per request, of
/// ~43 (bench/README.md, "The outer layers").
pub fn build_app(
    state: AppState,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone
       + Send
       + Sync
       + 'static {
    ops::prometheus();
    // How a route authenticates is a property of the route: the layer it is mounted with.
    // Authentication, then Idempotency-Key handling, in one layer.
    let v1 = v1_routes().layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_tenant,
    ));
    let check = check_routes().layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::defer_tenant_unless_idempotent,
    ));
    let usage = usage_routes().layer(axum::middleware::from_fn(auth::defer_tenant));
    // Admitted first, so a batch waiting for room holds nothing (not even a key lookup).
    let usage_batch = usage_batch_routes()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_tenant,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            usage::record::admit_batch,
        ));
    // The `/v1/me` routes answer browsers (SPEC §9): the tenant's allowed origins are checked
    // before the session (CORS itself is answered around the whole router: `me_cors`).
    let me = me_routes()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_session,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::allowed_origin,
        ));
    let me_check = me_check_routes()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::defer_session_unless_idempotent,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::allowed_origin,
        ));
    let admin = admin_routes().layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_admin,
    ));
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(v1)
        .merge(check)
        .merge(usage)
        .merge(usage_batch)
        .merge(me)
        .merge(me_check)
        .merge(admin)
        .merge(ops_routes())
        .split_for_parts();

    let router = router
        .route("/openapi.json", axum::routing::get(openapi_json(&api)))
        .merge(docs_routes())
        .merge(portal::routes())
        .merge(console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        // Metrics and the request timeout, in one layer.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::observe,
        ))
        .with_state(state);
    let request_id = HeaderName::from_static(auth::REQUEST_ID);
    tower::ServiceBuilder::new()
        .map_response(|res: axum::http::Response<_>| res.map(axum::body::Body::new))
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                // Borrowed, not copied: spans are built for every request. The route is
                // recorded once routed (`ops::observe`).
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %req.method(), route = tracing::field::Empty, request_id = id, tenant = tracing::field::Empty)
            }),
        )
        .layer(CatchPanicLayer::custom(panic_response))
        .service(router)
}

/// `GET /openapi.json`: the document, serialized once at start (about 190 kB of JSON).
fn openapi_json(
    api: &utoipa::openapi::OpenApi,
) -> impl Fn() -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    let body =
        axum::body::Bytes::from(serde_json::to_vec(api).expect("the OpenAPI document serializes"));
    move || {
        std::future::ready(
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body.clone(),
            )
                .into_response(),
        )
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("route_not_found", "No such endpoint.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        self::error::ErrorType::InvalidRequest,
        "method_not_allowed",
        "This endpoint does not accept that method.",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::internal().into_response()
}

/// Serves the API on `listener` until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let app = build_app(state);
    // The recorder keeps histogram samples until they are folded into buckets; without a
    // scrape of /metrics they would pile up for the life of the process.
    if let Some(handle) = ops::prometheus() {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
    }
    // Small request/response exchanges: send each response at once (no Nagle delay).
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
    });
    // `into_make_service`: each connection gets a cheap handle on the one router. Serving the
    // `Router` itself rebuilds (deep-clones) every route for each new connection, which held
    // tens of MB per busy server.
    axum::serve(
        listener,
        axum::ServiceExt::<Request>::into_make_service(app),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
