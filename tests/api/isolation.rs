//! Tenants never see or change each other's data (404, never 403), and keys revoke at once.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_on, ADMIN_TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_resources_are_404() {
    let app = spawn_app().await;
    let a = app.tenant_with_plan(json!({"limit": 10})).await;
    app.customer(&a, "u1").await;
    let used = app
        .post(
            "/v1/usage",
            &a.key,
            json!({"customer": "u1", "feature": "f", "quantity": 3}),
        )
        .await;
    assert_eq!(used.status, StatusCode::OK);
    let sub = app.get("/v1/customers/u1/subscription", &a.key).await;
    let sub_id = sub.body["id"].as_str().unwrap().to_string();
    let keys = app.get("/v1/api_keys", &a.key).await;
    let a_key_id = keys.body["data"][0]["id"].as_str().unwrap().to_string();

    let b = app.tenant("test").await;
    let gets = [
        "/v1/customers/u1".to_string(),
        "/v1/customers/u1/subscription".into(),
        "/v1/customers/u1/entitlements".into(),
        "/v1/customers/u1/usage?period=current".into(),
        "/v1/customers/u1/usage/history".into(),
        "/v1/customers/u1/usage/members".into(),
        "/v1/customers/u1/export".into(),
        "/v1/customers/u1/members".into(),
        format!("/v1/subscriptions/{sub_id}"),
        "/v1/plans/p".into(),
        "/v1/features/f".into(),
    ];
    for path in &gets {
        let r = app.get(path, &b.key).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "GET {path}: {:?}", r.body);
        assert_eq!(r.error_type(), "not_found");
    }
    for path in [
        format!("/v1/api_keys/{a_key_id}"),
        "/v1/customers/u1".to_string(),
    ] {
        let r = app.delete(&path, &b.key).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "DELETE {path}: {:?}",
            r.body
        );
    }
    // A's audit log is not B's: B sees only its own key's creation, and A's entry ids are
    // not cursors for B.
    let a_log = app.get("/v1/audit_log", &a.key).await;
    let b_log = app.get("/v1/audit_log", &b.key).await;
    assert_eq!(b_log.body["data"].as_array().unwrap().len(), 1);
    let a_entry = a_log.body["data"][0]["id"].as_str().unwrap();
    let r = app
        .get(&format!("/v1/audit_log?starting_after={a_entry}"), &b.key)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    for (path, body) in [
        ("/v1/check", json!({"customer": "u1", "feature": "f"})),
        ("/v1/usage", json!({"customer": "u1", "feature": "f"})),
        ("/v1/subscriptions", json!({"customer": "u1", "plan": "p"})),
    ] {
        let r = app.post(path, &b.key, body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "POST {path}: {:?}", r.body);
    }
    // Reusing A's event id in B is B's own event, not a duplicate of A's.
    let listed = app.get("/v1/customers", &b.key).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 0);
    let plans = app.get("/v1/plans", &b.key).await;
    assert_eq!(plans.body["data"].as_array().unwrap().len(), 0);
    // The same ids in B are B's own namespace; A is untouched.
    app.customer(&b, "u1").await;
    let r = app.get("/v1/customers/u1/usage/history", &a.key).await;
    assert_eq!(crate::helpers::num(&r.body["data"][0]["used"]), "3");
    // A tenant key is no admin token.
    let r = app
        .request(
            Method::POST,
            &format!("/admin/v1/tenants/{}/api_keys", a.id),
            Some(&b.key),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_hashed_and_revocation_is_immediate_on_every_process() {
    let app = spawn_app().await;
    let other_process = spawn_app_on(&app.db_url).await;
    let t = app.tenant("live").await;
    assert!(t.key.starts_with("tg_live_"));
    let second = app
        .request(
            Method::POST,
            &format!("/admin/v1/tenants/{}/api_keys", t.id),
            Some(ADMIN_TOKEN),
            None,
            &[],
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED);
    let key2 = second.body["api_key"].as_str().unwrap().to_string();
    let key2_id = second.body["id"].as_str().unwrap().to_string();
    // Only hashes are stored.
    let stored = tollgate::testing::stored::api_keys(&app.db).await.unwrap();
    assert_eq!(stored.len(), 2);
    for k in &stored {
        assert_eq!(k.key_hash.len(), 32, "a SHA-256");
        assert!(
            !k.row_text.contains(&key2[12..]),
            "a key is stored in clear"
        );
    }

    assert_eq!(
        other_process.get("/v1/tenant", &key2).await.status,
        StatusCode::OK
    );
    let r = app.delete(&format!("/v1/api_keys/{key2_id}"), &t.key).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["revoked_at"].is_string());
    assert_eq!(
        app.get("/v1/tenant", &key2).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        other_process.get("/v1/tenant", &key2).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        other_process.get("/v1/tenant", &t.key).await.status,
        StatusCode::OK
    );
    let tenant = app.get("/v1/tenant", &t.key).await;
    assert_eq!(tenant.body["mode"], "live");
    assert_eq!(tenant.body["stripe"]["secret_key_set"], false);
}

/// A path id that is malformed, or another kind's (`in_…` where a subscription is named), gets
/// exactly the answer a well-formed id of nothing gets: 404 with the kind's code and message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_foreign_kind_ids_are_the_same_404_as_missing_ones() {
    let app = spawn_app().await;
    let t = app.tenant_with_plan(json!({"limit": 10})).await;
    app.customer(&t, "u1").await;
    let sub = app.get("/v1/customers/u1/subscription", &t.key).await;
    let sub_id = sub.body["id"].as_str().unwrap().to_string();
    assert!(sub_id.starts_with("sub_") && sub_id.len() == 36, "{sub_id}");
    let hex = &sub_id["sub_".len()..];

    let missing_hex = "0".repeat(32);
    for (kind, code) in [
        ("/v1/subscriptions/", "subscription_not_found"),
        ("/v1/invoices/", "invoice_not_found"),
    ] {
        let prefix = if kind.contains("subscriptions") {
            "sub"
        } else {
            "in"
        };
        let missing = app
            .get(&format!("{kind}{prefix}_{missing_hex}"), &t.key)
            .await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert_eq!(missing.code(), code);
        for bad in [
            "nonsense".to_string(),
            format!("xx_{hex}"),
            format!("{prefix}_{}", hex.to_uppercase()),
            format!("{prefix}_{hex}0"),
            // The subscription's own hex under the other kind's prefix.
            format!("{}_{hex}", if prefix == "sub" { "in" } else { "sub" }),
        ] {
            let r = app.get(&format!("{kind}{bad}"), &t.key).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{kind}{bad}");
            assert_eq!(r.body, missing.body, "{kind}{bad}");
        }
    }
    for (method_path, code) in [
        ("/v1/leases/lease_nope", "lease_not_found"),
        ("/v1/api_keys/key_nope", "api_key_not_found"),
        (
            "/v1/webhook_endpoints/we_nope",
            "webhook_endpoint_not_found",
        ),
    ] {
        let r = app.delete(method_path, &t.key).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method_path}");
        assert_eq!(r.code(), code, "{method_path}");
    }
    let r = app
        .request(
            Method::POST,
            "/admin/v1/tenants/ten_nope/api_keys",
            Some(ADMIN_TOKEN),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "tenant_not_found");
    // The real subscription still answers.
    let ok = app
        .get(&format!("/v1/subscriptions/{sub_id}"), &t.key)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body["id"], sub_id.as_str());
}
