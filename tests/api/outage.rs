//! The database going away (docs/API-DESIGN.md, "Errors"): while PostgreSQL is down or restarting every request
//! is a 503 in the error shape (never a 500, never a hang), `/readyz` says so within a second,
//! and the service recovers by itself once the database is back. This test runs its own
//! PostgreSQL, since it stops it.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use tollgate::config::Secret;
use tollgate::embedded_pg::EmbeddedPg;
use tollgate::AppState;

use crate::helpers::{num, ADMIN_TOKEN};

struct Reply {
    status: StatusCode,
    body: Value,
    took: Duration,
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: String,
    body: Option<Value>,
) -> Reply {
    let start = Instant::now();
    let mut req = client.request(method, url).bearer_auth(&key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let body = resp.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        body,
        took: start.elapsed(),
    }
}

fn assert_unavailable(r: &Reply, what: &str) {
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {}",
        r.body
    );
    assert_eq!(r.body["error"]["type"], "unavailable", "{what}: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_503_and_the_service_recovers_by_itself() {
    let dir =
        std::env::temp_dir().join(format!("tollgate-outage-{}", uuid::Uuid::new_v4().simple()));
    let pg = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || EmbeddedPg::start(&dir)
    })
    .await
    .unwrap()
    .unwrap();
    tollgate::embedded_pg::ensure_database(&pg.url("postgres"), "tollgate")
        .await
        .unwrap();
    let url = pg.url("tollgate");
    let db = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url)
        .await
        .unwrap();
    tollgate::MIGRATOR.run(&db).await.unwrap();
    let state = AppState::new(db.clone(), Some(Secret::from(ADMIN_TOKEN)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tollgate::serve(listener, state, std::future::pending()));
    let client = reqwest::Client::new();
    let post = |path: &str, key: &str, body: Value| {
        call(
            &client,
            reqwest::Method::POST,
            format!("{base}{path}"),
            key.to_string(),
            Some(body),
        )
    };

    // A tenant with a metered feature, a default plan and a customer.
    let t = post("/admin/v1/tenants", ADMIN_TOKEN, json!({"name": "Outage"})).await;
    assert_eq!(t.status, StatusCode::CREATED);
    let key = t.body["api_key"].as_str().unwrap().to_string();
    let f = post(
        "/v1/features",
        &key,
        json!({"key": "f", "name": "F", "type": "metered"}),
    )
    .await;
    assert_eq!(f.status, StatusCode::CREATED);
    let p = post(
        "/v1/plans",
        &key,
        json!({"key": "p", "name": "P", "default": true, "entitlements": [{"feature": "f", "limit": 1000}]}),
    )
    .await;
    assert_eq!(p.status, StatusCode::CREATED);
    let c = call(
        &client,
        reqwest::Method::PUT,
        format!("{base}/v1/customers/u1"),
        key.clone(),
        Some(json!({})),
    )
    .await;
    assert_eq!(c.status, StatusCode::CREATED);
    let usage = json!({"customer": "u1", "feature": "f"});
    assert_eq!(
        post("/v1/usage", &key, usage.clone()).await.status,
        StatusCode::OK
    );

    // Load running across the shutdown: every answer is a 200 or a 503, never a 500.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, base, key, stop) = (client.clone(), base.clone(), key.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for path in ["/v1/usage", "/v1/check"] {
                    let r = call(
                        &client,
                        reqwest::Method::POST,
                        format!("{base}{path}"),
                        key.clone(),
                        Some(json!({"customer": "u1", "feature": "f"})),
                    )
                    .await;
                    seen.push((path, r.status, r.body));
                }
            }
            seen
        }));
    }
    // `pg_ctl stop -m fast`: open sessions are terminated (SQLSTATE 57P01) mid-load.
    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();

    // Down: the hot paths, an ordinary read, and readiness.
    for path in ["/v1/usage", "/v1/check"] {
        assert_unavailable(&post(path, &key, usage.clone()).await, path);
    }
    let tenant = call(
        &client,
        reqwest::Method::GET,
        format!("{base}/v1/tenant"),
        key.clone(),
        None,
    )
    .await;
    assert_unavailable(&tenant, "GET /v1/tenant");
    let ready = call(
        &client,
        reqwest::Method::GET,
        format!("{base}/readyz"),
        String::new(),
        None,
    )
    .await;
    assert_unavailable(&ready, "/readyz");
    assert!(
        ready.took < Duration::from_secs(1),
        "/readyz took {:?}",
        ready.took
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut recorded_during = 0;
    for h in load {
        for (path, status, body) in h.await.unwrap() {
            assert!(
                status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                "{path} answered {status} during the shutdown: {body}"
            );
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(body["error"]["type"], "unavailable", "{body}");
            } else if path == "/v1/usage" {
                recorded_during += 1;
            }
        }
    }

    // Back on the same port: ready again within 5 s, without restarting Tollgate. (Polled:
    // nothing tells the test when PostgreSQL accepts connections again.)
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart().unwrap();
        pg
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = call(
            &client,
            reqwest::Method::GET,
            format!("{base}/readyz"),
            String::new(),
            None,
        )
        .await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_unavailable(&r, "/readyz while restarting");
        assert!(
            Instant::now() < deadline,
            "not ready 5 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every acknowledged event was counted; nothing refused was.
    let r = post("/v1/usage", &key, usage.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(num(&r.body["used"]), (recorded_during + 2).to_string());
    let r = post("/v1/check", &key, usage.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(num(&r.body["used"]), (recorded_during + 2).to_string());
    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
