//! Alerts and outbound webhooks: to a real local receiver, verified with the
//! Standard Webhooks scheme, and usage alerts under a concurrent burst.

use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::json;
use sha2::Sha256;

use crate::fakes::{Delivery, Receiver};
use crate::helpers::{spawn_app, TestApp};
use crate::stripe::drain_webhooks;

/// Verifies a delivery as a Standard Webhooks receiver does; written here from the
/// specification, independently of Tollgate's signer.
pub fn verify(secret: &str, d: &Delivery) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let signed = format!(
        "{}.{}.{}",
        d.header("webhook-id"),
        d.header("webhook-timestamp"),
        d.body
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(signed.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    d.header("webhook-signature")
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| sig == expected)
}

async fn endpoint(
    app: &TestApp,
    key: &str,
    receiver: &Receiver,
    events: serde_json::Value,
) -> (String, String) {
    let r = app
        .post(
            "/v1/webhook_endpoints",
            key,
            json!({"url": receiver.url, "events": events}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    (
        r.body["id"].as_str().unwrap().to_string(),
        r.body["secret"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn deliveries_are_signed_retried_with_the_same_id_and_logged() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let t = app.tenant("test").await;
    let (endpoint_id, secret) =
        endpoint(&app, &t.key, &receiver, json!(["customer.created"])).await;
    assert!(secret.starts_with("whsec_"));
    // The secret is shown once.
    let list = app.get("/v1/webhook_endpoints", &t.key).await;
    assert_eq!(list.body["data"][0]["id"], endpoint_id.as_str());
    assert!(list.body["data"][0].get("secret").is_none());

    receiver.state.lock().unwrap().fail_first = 2;
    let r = app
        .put(
            "/v1/customers/c1",
            &t.key,
            json!({"email": "a@example.com"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    drain_webhooks(&app).await;

    let got = receiver.got();
    assert_eq!(got.len(), 1, "delivered once it was accepted");
    let d = &got[0];
    assert!(verify(&secret, d), "the signature verifies");
    let mut tampered = d.clone();
    tampered.body = tampered.body.replace("c1", "c2");
    assert!(
        !verify(&secret, &tampered),
        "and would not for another body"
    );
    let ts: i64 = d.header("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    let body = d.json();
    assert_eq!(body["type"], "customer.created");
    assert_eq!(body["data"]["id"], "c1");
    assert_eq!(body["data"]["email"], "a@example.com");
    assert!(body["timestamp"].is_string());

    let log = app
        .get(
            &format!("/v1/webhook_endpoints/{endpoint_id}/deliveries"),
            &t.key,
        )
        .await;
    assert_eq!(log.status, StatusCode::OK);
    let entry = &log.body["data"][0];
    assert_eq!(
        entry["event_id"],
        d.header("webhook-id"),
        "the same id on every attempt"
    );
    assert_eq!(entry["type"], "customer.created");
    assert_eq!(entry["status"], "delivered");
    assert_eq!(entry["attempts"], 3);
    assert_eq!(entry["last_status"], 204);
    assert!(entry["delivered_at"].is_string());

    // Not subscribed: no deliveries for other types; deleting stops new ones.
    let r = app
        .post(
            "/v1/plans",
            &t.key,
            json!({"key": "p", "name": "P", "default": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = app.put("/v1/customers/c2", &t.key, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    drain_webhooks(&app).await;
    let types: Vec<String> = receiver
        .got()
        .iter()
        .map(|d| d.json()["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["customer.created", "customer.created"]);
    let r = app
        .delete(&format!("/v1/webhook_endpoints/{endpoint_id}"), &t.key)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.put("/v1/customers/c3", &t.key, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    drain_webhooks(&app).await;
    assert_eq!(receiver.got().len(), 2);

    // Bad input is a clear 400.
    let bad = app
        .post(
            "/v1/webhook_endpoints",
            &t.key,
            json!({"url": "ftp://x", "events": ["*"]}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["error"]["code"], "invalid_url");
    let bad = app
        .post(
            "/v1/webhook_endpoints",
            &t.key,
            json!({"url": receiver.url, "events": ["invoice.nope"]}),
        )
        .await;
    assert_eq!(bad.body["error"]["code"], "invalid_events");
}

#[tokio::test]
async fn alerts_fire_once_per_level_under_a_concurrent_burst() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let t = app.tenant_with_plan(json!({"limit": 100})).await;
    let (_, secret) = endpoint(&app, &t.key, &receiver, json!(["usage.threshold_reached"])).await;
    app.customer(&t, "u1").await;

    let sends = (0..200).map(|i| {
        app.post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "id": format!("e{i}")}),
        )
    });
    let results = futures::future::join_all(sends).await;
    let ok = results
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let refused = results
        .iter()
        .filter(|r| r.status == StatusCode::PAYMENT_REQUIRED)
        .count();
    assert_eq!((ok, refused), (100, 100));

    let alerts = app.get("/v1/customers/u1/alerts", &t.key).await;
    assert_eq!(alerts.status, StatusCode::OK);
    let mut levels: Vec<(String, String)> = alerts.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["customer"], "u1");
            assert_eq!(a["feature"], "f");
            (
                a["level"].as_str().unwrap().to_string(),
                a["used"].to_string(),
            )
        })
        .collect();
    levels.sort();
    assert_eq!(
        levels,
        [
            ("critical".to_string(), "95".to_string()),
            ("exceeded".to_string(), "100".to_string()),
            ("warning".to_string(), "80".to_string())
        ],
        "each level once, at the event that crossed it"
    );

    drain_webhooks(&app).await;
    let got = receiver.got();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|d| verify(&secret, d)));
    let mut hooked: Vec<String> = got
        .iter()
        .map(|d| d.json()["data"]["level"].as_str().unwrap().to_string())
        .collect();
    hooked.sort();
    assert_eq!(hooked, ["critical", "exceeded", "warning"]);

    // Usage past the limit, or again in the same period, raises nothing new.
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "id": "late", "enforce": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let alerts = app.get("/v1/customers/u1/alerts", &t.key).await;
    assert_eq!(alerts.body["data"].as_array().unwrap().len(), 3);
    let missing = app.get("/v1/customers/nobody/alerts", &t.key).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delivered_events_and_sent_rows_are_kept_thirty_days() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let t = app.tenant("test").await;
    endpoint(&app, &t.key, &receiver, json!(["customer.created"])).await;
    for c in ["old", "pending"] {
        let r = app
            .put(&format!("/v1/customers/{c}"), &t.key, json!({}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    // One delivered long ago, one still pending (its receiver down) for as long.
    use tollgate::testing::stored;
    let marked = stored::mark_delivered(&app.db, &t.tid(), "old")
        .await
        .unwrap();
    assert_eq!(marked, 1);
    let long_ago = chrono::Utc::now() - chrono::Duration::days(40);
    stored::backdate_webhook_events(&app.db, &t.tid(), long_ago)
        .await
        .unwrap();
    tollgate::testing::cleanup(&app.db).await.unwrap();
    let left = stored::webhook_event_subjects(&app.db, &t.tid())
        .await
        .unwrap();
    assert_eq!(
        left,
        ["pending"],
        "a delivery still being retried keeps its event"
    );
    let deliveries = stored::row_counts(&app.db, Some(&t.tid()))
        .await
        .unwrap()
        .webhook_deliveries;
    assert_eq!(deliveries, 1);
}
