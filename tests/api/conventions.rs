//! API conventions (docs/API-DESIGN.md): errors, bad input, idempotency, pagination, OpenAPI, operational endpoints.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, ADMIN_TOKEN};

async fn raw(
    app: &crate::helpers::TestApp,
    path: &str,
    key: &str,
    body: &'static str,
) -> (StatusCode, Value) {
    let r = app
        .client
        .post(format!("{}{}", app.base, path))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

async fn counts(app: &crate::helpers::TestApp) -> tollgate::testing::stored::RowCounts {
    tollgate::testing::stored::row_counts(&app.db, None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_writes_nothing() {
    let app = spawn_app().await;
    let t = app.tenant_with_plan(json!({"limit": 10})).await;
    app.customer(&t, "u1").await;
    let before = counts(&app).await;

    let (s, b) = raw(&app, "/v1/usage", &t.key, "{\"customer\": \"u1\", ").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["type"], "invalid_request");
    assert_eq!(b["error"]["code"], "invalid_json");

    let (s, b) = raw(&app, "/v1/usage", &t.key, "").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );

    let cases = [
        (
            json!({"customer": "u1", "feature": "f", "colour": "red"}),
            "unknown_field",
            Some("colour"),
        ),
        (
            json!({"customer": "u1", "feature": "f", "quantity": -1}),
            "invalid_quantity",
            Some("quantity"),
        ),
        (
            json!({"customer": "u1", "feature": "f", "quantity": 1e16}),
            "invalid_quantity",
            Some("quantity"),
        ),
        (
            json!({"customer": "u1", "feature": "f", "quantity": 1e40}),
            "invalid_field",
            Some("quantity"),
        ),
        (
            json!({"customer": "u1", "feature": "f", "quantity": 0.0000000000001}),
            "invalid_quantity",
            Some("quantity"),
        ),
        (
            json!({"customer": "u1", "feature": "f", "quantity": "lots"}),
            "invalid_field",
            Some("quantity"),
        ),
        (
            json!({"customer": "u1", "feature": "f", "quantity": "5"}),
            "invalid_field",
            Some("quantity"),
        ),
        (json!({"customer": "u1"}), "missing_field", Some("feature")),
        (
            json!({"customer": "u1", "feature": "f", "timestamp": "yesterday"}),
            "invalid_field",
            Some("timestamp"),
        ),
        (
            json!({"customer": 42, "feature": "f"}),
            "invalid_field",
            Some("customer"),
        ),
    ];
    for (body, code, param) in cases {
        let r = app.post("/v1/usage", &t.key, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body} -> {:?}", r.body);
        assert_eq!(r.code(), code, "{body} -> {:?}", r.body);
        assert_eq!(r.body["error"]["param"].as_str(), param, "{body}");
        assert!(r.body["error"]["message"].as_str().unwrap().len() > 5);
    }
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "ghost", "feature": "f"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "customer_not_found")
    );
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "nope"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "feature_not_found")
    );
    let r = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "nope"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "feature_not_found")
    );
    // Defined but not in the plan: 402 for usage, allowed=false for checks.
    app.post(
        "/v1/features",
        &t.key,
        json!({"key": "g", "name": "G", "type": "metered"}),
    )
    .await;
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "g"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYMENT_REQUIRED, "not_in_plan")
    );
    let r = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "g"}),
        )
        .await;
    assert_eq!(r.body["allowed"], false);
    assert_eq!(r.body["reason"], "not_in_plan");

    let after = counts(&app).await;
    let one_more_feature = tollgate::testing::stored::RowCounts {
        features: before.features + 1,   // `g`, defined on purpose above
        audit_log: before.audit_log + 1, // and its `feature.created`
        ..before
    };
    assert_eq!(after, one_more_feature, "nothing half-written");

    // Bad plan input names the field.
    let r = app
        .post(
            "/v1/plans",
            &t.key,
            json!({"key": "x", "name": "X",
        "entitlements": [{"feature": "f", "limit": -5}]}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_limit")
    );
    assert_eq!(r.body["error"]["param"], "entitlements[0].limit");
    let r = app
        .post(
            "/v1/plans",
            &t.key,
            json!({"key": "x", "name": "X",
        "entitlements": [{"feature": "ghost"}]}),
        )
        .await;
    assert_eq!(r.code(), "feature_not_found");
    assert_eq!(counts(&app).await.plans, 1, "no half-written plan");
    let r = app
        .post(
            "/v1/features",
            &t.key,
            json!({"key": "h", "name": "H", "type": "gauge"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_field")
    );

    // NUL characters (which PostgreSQL text cannot hold) are a 400, in bodies and paths.
    let r = app
        .put("/v1/customers/u9", &t.key, json!({"name": "a\u{0}b"}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_string")
    );
    let r = app.get("/v1/customers/u%009", &t.key).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_string")
    );
    let r = app.get("/v1/customers?starting_after=%00", &t.key).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_string")
    );
    // An escaped backslash followed by "u0000" is ordinary text.
    let r = app
        .put("/v1/customers/u9", &t.key, json!({"name": "a\\u0000b"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["name"], "a\\u0000b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_errors_and_unknown_routes_use_the_error_shape() {
    let app = spawn_app().await;
    let r = app
        .request(Method::GET, "/v1/tenant", None, None, &[])
        .await;
    assert_eq!(
        (r.status, r.error_type()),
        (StatusCode::UNAUTHORIZED, "authentication")
    );
    let r = app
        .get(
            "/v1/tenant",
            "tg_test_0123456789abcdef0123456789abcdef_nottherealsecretatall",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .request(
            Method::POST,
            "/admin/v1/tenants",
            Some("wrong"),
            Some(json!({"name": "x"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let t = app.tenant("test").await;
    let r = app.get("/v1/nothing-here", &t.key).await;
    assert_eq!(
        (r.status, r.error_type()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    // Every answer carries a request id (routed or not): a new one, or the client's own.
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let r = app
        .request(
            Method::GET,
            "/v1/nothing-here",
            Some(&t.key),
            None,
            &[("x-request-id", "client-chosen-7")],
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "client-chosen-7");
    let r = app.delete("/v1/check", &t.key).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.error_type(), "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_one_mib_are_413() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    let big = format!(
        "{{\"key\": \"k\", \"name\": \"{}\", \"type\": \"boolean\"}}",
        "x".repeat(1024 * 1024 + 10)
    );
    for headers in [vec![], vec![("Idempotency-Key", "big-1")]] {
        let mut req = app
            .client
            .post(format!("{}/v1/features", app.base))
            .bearer_auth(&t.key)
            .header("content-type", "application/json")
            .body(big.clone());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["code"], "body_too_large");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_and_rejects_reuse() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    let body = json!({"key": "mod.a", "name": "Module A", "type": "boolean"});
    let first = app
        .request(
            Method::POST,
            "/v1/features",
            Some(&t.key),
            Some(body.clone()),
            &[("Idempotency-Key", "k1")],
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second = app
        .request(
            Method::POST,
            "/v1/features",
            Some(&t.key),
            Some(body.clone()),
            &[("Idempotency-Key", "k1")],
        )
        .await;
    assert_eq!(
        second.status,
        StatusCode::CREATED,
        "replayed, not a 409 feature_exists"
    );
    assert_eq!(second.body, first.body);
    assert_eq!(second.headers.get("idempotent-replayed").unwrap(), "true");
    let other = app
        .request(
            Method::POST,
            "/v1/features",
            Some(&t.key),
            Some(json!({"key": "mod.b", "name": "B", "type": "boolean"})),
            &[("Idempotency-Key", "k1")],
        )
        .await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::CONFLICT, "idempotency_key_reused")
    );
    assert_eq!(counts(&app).await.features, 1);
    // Without the key, the duplicate is a plain conflict.
    let dup = app.post("/v1/features", &t.key, body).await;
    assert_eq!(
        (dup.status, dup.code()),
        (StatusCode::CONFLICT, "feature_exists")
    );
    // The admin API honours keys too: a retried tenant creation makes one tenant.
    let mk = || {
        app.request(
            Method::POST,
            "/admin/v1/tenants",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "Once"})),
            &[("Idempotency-Key", "tenant-once")],
        )
    };
    let (a, b) = (mk().await, mk().await);
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body["id"], b.body["id"]);
    let n = tollgate::testing::stored::tenants_named(&app.db, "Once")
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Keys are per tenant.
    let t2 = app.tenant("test").await;
    let r = app
        .request(
            Method::POST,
            "/v1/features",
            Some(&t2.key),
            Some(json!({"key": "mod.b", "name": "B", "type": "boolean"})),
            &[("Idempotency-Key", "k1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_paginate_with_cursors() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    for i in 0..5 {
        app.customer(&t, &format!("c{i}")).await;
    }
    let p1 = app.get("/v1/customers?limit=2", &t.key).await;
    let ids = |r: &crate::helpers::Resp| {
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&p1), ["c0", "c1"]);
    assert_eq!(p1.body["has_more"], true);
    let p3 = app
        .get("/v1/customers?limit=2&starting_after=c3", &t.key)
        .await;
    assert_eq!(ids(&p3), ["c4"]);
    assert_eq!(p3.body["has_more"], false);
    let bad = app.get("/v1/customers?limit=101", &t.key).await;
    assert_eq!(bad.code(), "invalid_limit");
    let bad = app.get("/v1/customers?offset=3", &t.key).await;
    assert_eq!(bad.code(), "unknown_field");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_health_and_metrics() {
    let app = spawn_app().await;
    let r = app
        .request(Method::GET, "/openapi.json", None, None, &[])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = r.body["paths"].as_object().unwrap();
    for p in [
        "/v1/check",
        "/v1/usage",
        "/v1/usage/batch",
        "/v1/plans/{key}",
        "/v1/customers/{id}",
        "/v1/customers/{id}/entitlements",
        "/v1/subscriptions",
        "/admin/v1/tenants",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(paths["/v1/usage"]["post"]["requestBody"].is_object());
    // Every operation has an id of its own (generated clients name their calls by it).
    let mut ids = std::collections::BTreeMap::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if let Some(id) = op["operationId"].as_str() {
                if let Some(other) = ids.insert(id.to_owned(), format!("{method} {path}")) {
                    panic!("operationId {id} names both {other} and {method} {path}");
                }
            }
        }
    }
    assert_eq!(paths["/v1/me/check"]["post"]["operationId"], "me_check");
    // The committed snapshot matches what the code generates.
    let snapshot: Value =
        serde_json::from_str(&std::fs::read_to_string("docs/openapi.json").unwrap()).unwrap();
    assert_eq!(
        snapshot,
        serde_json::to_value(tollgate::http::openapi()).unwrap(),
        "docs/openapi.json is stale: run `cargo run -- openapi > docs/openapi.json`"
    );
    let docs = app
        .client
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("<html"));
    let h = app.request(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(h.body["status"], "ok");
    let h = app.request(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(h.body["status"], "ready");
    let m = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("tollgate_http_requests_total"), "{m}");
}

/// Sends `body` to `path` over a raw connection with `Transfer-Encoding: chunked` (no
/// Content-Length), in 64 KiB chunks; returns the status and the response body.
async fn post_chunked(base: &str, path: &str, auth: &str, body: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(64 * 1024) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        // The server may answer (and close) before reading everything: stop writing then.
        if s.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    // The body may itself be chunked: take the JSON object inside it.
    let json = body
        .find('{')
        .zip(body.rfind('}'))
        .and_then(|(a, b)| serde_json::from_str(&body[a..=b]).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_refuses_bodies_over_one_mib_and_does_nothing() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    let big = vec![b'x'; 2 * 1024 * 1024];
    // Paths whose handlers never read a body, an admin path, and the Stripe webhook path.
    let paths = [
        (
            format!("/admin/v1/tenants/{}/api_keys", t.id),
            ADMIN_TOKEN.to_string(),
        ),
        ("/v1/invoices/in_nope/void".to_string(), t.key.clone()),
        (
            "/v1/subscriptions/sub_nope/reactivate".to_string(),
            t.key.clone(),
        ),
        (format!("/v1/stripe/webhooks/{}", t.id), t.key.clone()),
        ("/v1/usage".to_string(), t.key.clone()),
        ("/v1/check".to_string(), t.key.clone()),
    ];
    for (path, auth) in &paths {
        let r = app
            .client
            .post(format!("{}{path}", app.base))
            .bearer_auth(auth)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["type"], "invalid_request", "{path}: {b}");
        assert_eq!(b["error"]["code"], "body_too_large", "{path}: {b}");

        // The same without a Content-Length (chunked): read up to the limit, then refused.
        let (status, b) = post_chunked(&app.base, path, auth, &big).await;
        assert_eq!(status, 413, "{path} chunked");
        assert_eq!(b["error"]["code"], "body_too_large", "{path} chunked: {b}");
    }
    // No key was minted: the tenant still has its one key.
    let keys = app.get("/v1/api_keys", &t.key).await;
    assert_eq!(
        keys.body["data"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        keys.body
    );

    // A chunked body under the limit still reaches its handler.
    let small = json!({"name": "Chunked"}).to_string();
    let (status, b) = post_chunked(
        &app.base,
        "/admin/v1/tenants",
        ADMIN_TOKEN,
        small.as_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["name"], "Chunked");
}
