//! Browsers (SPEC §9): the `/v1/me` routes answer CORS, preflights included, for any origin
//! unless the tenant lists its `cors_origins`; tenant-key and admin routes never answer it.
//! Checked over plain HTTP, and in headless Chromium from a page on another origin.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Tenant, TestApp};

/// A tenant whose default plan grants the metered feature `f` (limit 10), a customer `u1` and
/// a session for it: (tenant, session token).
async fn session(app: &TestApp) -> (Tenant, String) {
    let t = app.tenant_with_plan(json!({"limit": 10})).await;
    app.customer(&t, "u1").await;
    let r = app
        .post("/v1/customer_sessions", &t.key, json!({"customer": "u1"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    (t, r.body["token"].as_str().unwrap().to_string())
}

fn header(r: &crate::helpers::Resp, name: &str) -> Option<String> {
    r.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .reduce(|a, b| format!("{a}, {b}"))
}

async fn preflight(app: &TestApp, path: &str, origin: &str) -> crate::helpers::Resp {
    app.request(
        Method::OPTIONS,
        path,
        None,
        None,
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type,idempotency-key",
            ),
        ],
    )
    .await
}

#[tokio::test]
async fn preflights_are_answered_on_me_routes_only_and_origins_are_enforced() {
    let app = spawn_app().await;
    let (t, token) = session(&app).await;
    let origin = "https://app.example.com";

    let p = preflight(&app, "/v1/me/check", origin).await;
    assert!(p.status.is_success(), "{:?}", p.status);
    assert_eq!(
        header(&p, "access-control-allow-origin").as_deref(),
        Some(origin)
    );
    let methods = header(&p, "access-control-allow-methods")
        .unwrap()
        .to_lowercase();
    for m in ["get", "post", "delete"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = header(&p, "access-control-allow-headers")
        .unwrap()
        .to_lowercase();
    for h in ["authorization", "content-type", "idempotency-key"] {
        assert!(headers.contains(h), "{headers}");
    }
    assert!(header(&p, "vary")
        .unwrap()
        .to_lowercase()
        .contains("origin"));
    assert_eq!(header(&p, "access-control-allow-credentials"), None);
    // Another origin gets its own answer.
    let p = preflight(&app, "/v1/me", "http://localhost:5173").await;
    assert_eq!(
        header(&p, "access-control-allow-origin").as_deref(),
        Some("http://localhost:5173")
    );
    // Tenant-key and admin routes never answer CORS.
    for path in [
        "/v1/check",
        "/v1/usage",
        "/v1/customers/u1",
        "/admin/v1/tenants",
    ] {
        let p = preflight(&app, path, origin).await;
        assert_eq!(header(&p, "access-control-allow-origin"), None, "{path}");
    }

    // A request with the token and an Origin: answered, with the CORS headers.
    let me = |origin: &'static str| {
        let (app, token) = (&app, token.clone());
        async move {
            app.request(
                Method::POST,
                "/v1/me/check",
                Some(&token),
                Some(json!({"feature": "f"})),
                &[("Origin", origin)],
            )
            .await
        }
    };
    let r = me("https://app.example.com").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["allowed"], true);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );

    // The tenant lists its origins: others are refused on the request itself.
    let r = app
        .patch(
            "/v1/tenant",
            &t.key,
            json!({"cors_origins": ["HTTPS://App.Example.com:443", "http://localhost:5173"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.body["cors_origins"],
        json!(["https://app.example.com", "http://localhost:5173"])
    );
    assert_eq!(me("https://app.example.com").await.status, StatusCode::OK);
    let refused = me("https://evil.example").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    assert_eq!(refused.code(), "origin_not_allowed");
    let r = app
        .request(
            Method::GET,
            "/v1/me",
            Some(&token),
            None,
            &[("Origin", "https://evil.example")],
        )
        .await;
    assert_eq!(r.code(), "origin_not_allowed");
    // No Origin (a server, not a browser): the list does not apply.
    let r = app
        .request(
            Method::POST,
            "/v1/me/check",
            Some(&token),
            Some(json!({"feature": "f"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // Preflights carry no token: still answered for any origin.
    let p = preflight(&app, "/v1/me/check", "https://evil.example").await;
    assert!(p.status.is_success());

    // Bad lists are refused whole, and change nothing.
    let too_many: Vec<String> = (0..21).map(|i| format!("https://a{i}.example")).collect();
    for (bad, param) in [
        (json!(["*"]), "cors_origins[0]"),
        (json!(["https://app.example.com/path"]), "cors_origins[0]"),
        (
            json!(["https://ok.example", "app.example.com"]),
            "cors_origins[1]",
        ),
        (json!(too_many), "cors_origins"),
    ] {
        let r = app
            .patch("/v1/tenant", &t.key, json!({"cors_origins": bad}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
        assert_eq!(r.code(), "invalid_cors_origins");
        assert_eq!(r.body["error"]["param"], param);
    }
    let r = app.get("/v1/tenant", &t.key).await;
    assert_eq!(r.body["cors_origins"].as_array().unwrap().len(), 2);
    // Empty means any origin again.
    let r = app
        .patch("/v1/tenant", &t.key, json!({"cors_origins": []}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(me("https://evil.example").await.status, StatusCode::OK);
}

/// A page that calls Tollgate with `fetch` as its query string says, and writes the outcome
/// into `#out`: the status and body, or `blocked` when the browser refused the request.
const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>app</title>
<pre id="pending">…</pre>
<script>
const q = new URLSearchParams(location.search);
const init = {method: q.get("method") || "GET",
              headers: {"Authorization": "Bearer " + q.get("token"),
                        "Content-Type": "application/json"}};
if (q.get("body")) init.body = q.get("body");
function out(text) {
  const el = document.createElement("pre");
  el.id = "out";
  el.textContent = text;
  document.body.appendChild(el);
}
fetch(q.get("api") + q.get("path"), init)
  .then(async r => out(r.status + " " + await r.text()))
  .catch(e => out("blocked " + e.name));
</script>"#;

/// Serves [`PAGE`] on its own origin (another port of loopback); its base URL.
async fn page_origin() -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::response::Html(PAGE) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn page_url(page: &str, app: &TestApp, path: &str, token: &str, body: Option<Value>) -> String {
    let mut q = url_query(&[("api", &app.base), ("path", path), ("token", token)]);
    if let Some(b) = body {
        q.push('&');
        q.push_str(&url_query(&[("method", "POST"), ("body", &b.to_string())]));
    }
    format!("{page}/?{q}")
}

fn url_query(pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://x/").unwrap();
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_page_on_another_origin_uses_a_session_and_not_a_tenant_key() {
    let app = spawn_app().await;
    let (t, token) = session(&app).await;
    let page = page_origin().await;
    let b = crate::browser::Browser::start().await;

    // /v1/me/check from the page's origin, with the session token: answered.
    b.goto(&page_url(
        &page,
        &app,
        "/v1/me/check",
        &token,
        Some(json!({"feature": "f"})),
    ))
    .await;
    let text = b.text_when("#out").await;
    let (status, body) = text.split_once(' ').unwrap();
    assert_eq!(status, "200", "{text}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["allowed"], true);
    assert_eq!(body["customer"], "u1");
    assert_eq!(body["limit"], json!(10));

    // A tenant-key route, cross-origin: the browser refuses it (no CORS answer).
    b.goto(&page_url(
        &page,
        &app,
        "/v1/check",
        &t.key,
        Some(json!({"customer": "u1", "feature": "f"})),
    ))
    .await;
    assert_eq!(b.text_when("#out").await, "blocked TypeError");

    // The tenant lists another origin: the page's is refused (a 403 it can read).
    let r = app
        .patch(
            "/v1/tenant",
            &t.key,
            json!({"cors_origins": ["https://app.example.com"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    b.goto(&page_url(&page, &app, "/v1/me", &token, None)).await;
    let text = b.text_when("#out").await;
    assert!(text.starts_with("403 "), "{text}");
    assert!(text.contains("origin_not_allowed"), "{text}");
    // Listed: answered again.
    let r = app
        .patch("/v1/tenant", &t.key, json!({"cors_origins": [page]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    b.goto(&page_url(&page, &app, "/v1/me", &token, None)).await;
    let text = b.text_when("#out").await;
    assert!(text.starts_with("200 "), "{text}");
}
