//! Customer sessions and the `/v1/me` routes (SPEC §9).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Resp, Tenant, TestApp};

fn ok(r: &Resp, status: StatusCode) {
    assert_eq!(r.status, status, "{:?}", r.body);
}

/// A test tenant at 2027-01-01 with `calls` (10 a month) on `free` (the default) and `pro`
/// ($30/month, 100 calls), and customers `alice` and `bob`.
async fn tenant(app: &TestApp) -> Tenant {
    let t = app.tenant("test").await;
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;
    ok(
        &app.post(
            "/v1/features",
            &t.key,
            json!({"key": "calls", "name": "Calls", "type": "metered"}),
        )
        .await,
        StatusCode::CREATED,
    );
    ok(
        &app.post(
            "/v1/plans",
            &t.key,
            json!({"key": "free", "name": "Free", "default": true,
                   "entitlements": [{"feature": "calls", "limit": 10, "reset": "month"}]}),
        )
        .await,
        StatusCode::CREATED,
    );
    ok(
        &app.post(
            "/v1/plans",
            &t.key,
            json!({"key": "pro", "name": "Pro",
                   "prices": [{"interval": "month", "amount": "30.00", "currency": "usd"}],
                   "entitlements": [{"feature": "calls", "limit": 100, "reset": "month"}]}),
        )
        .await,
        StatusCode::CREATED,
    );
    for c in ["alice", "bob"] {
        ok(
            &app.put(
                &format!("/v1/customers/{c}"),
                &t.key,
                json!({"email": format!("{c}@example.test")}),
            )
            .await,
            StatusCode::CREATED,
        );
    }
    t
}

async fn session(app: &TestApp, t: &Tenant, customer: &str) -> Value {
    let r = app
        .post(
            "/v1/customer_sessions",
            &t.key,
            json!({"customer": customer}),
        )
        .await;
    ok(&r, StatusCode::CREATED);
    r.body
}

fn token(s: &Value) -> &str {
    s["token"].as_str().unwrap()
}

#[tokio::test]
async fn a_session_acts_for_its_one_customer_through_v1_me() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    let s = session(&app, &t, "alice").await;
    assert!(s["id"].as_str().unwrap().starts_with("csn_"));
    assert!(token(&s).starts_with("cs_"));
    assert_eq!(s["customer"], "alice");
    let created = chrono::DateTime::parse_from_rfc3339(s["created_at"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(s["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        (expires - created).num_seconds(),
        3600,
        "the default lifetime, on real time"
    );
    let cs = token(&s);

    let me = app.get("/v1/me", cs).await;
    ok(&me, StatusCode::OK);
    assert_eq!(me.body["id"], "alice");
    assert_eq!(me.body["email"], "alice@example.test");
    let used = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "alice", "feature": "calls", "quantity": 9}),
        )
        .await;
    ok(&used, StatusCode::OK);
    let check = app
        .post("/v1/me/check", cs, json!({"feature": "calls"}))
        .await;
    ok(&check, StatusCode::OK);
    assert_eq!(check.body["customer"], "alice");
    assert_eq!(check.body["allowed"], true);
    assert_eq!(check.body["remaining"], 1);
    assert_eq!(check.body["warning_level"], "warning");
    // The same answer as the tenant's own check.
    let tenant_check = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "alice", "feature": "calls"}),
        )
        .await;
    assert_eq!(check.body, tenant_check.body);
    let over = app
        .post(
            "/v1/me/check",
            cs,
            json!({"feature": "calls", "quantity": 2}),
        )
        .await;
    assert_eq!(over.body["allowed"], false);
    assert_eq!(over.body["reason"], "limit_exceeded");
    // A session cannot name another customer.
    let other = app
        .post(
            "/v1/me/check",
            cs,
            json!({"customer": "bob", "feature": "calls"}),
        )
        .await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    assert_eq!(other.code(), "unknown_field");

    let ents = app.get("/v1/me/entitlements", cs).await;
    ok(&ents, StatusCode::OK);
    let usage = app.get("/v1/me/usage", cs).await;
    ok(&usage, StatusCode::OK);
    assert_eq!(usage.body["customer"], "alice");
    let sub = app.get("/v1/me/subscription", cs).await;
    assert_eq!(sub.body["plan"], "free");

    // Upgrade: the same rules as the tenant API (now, prorated, invoiced).
    let up = app
        .post("/v1/me/subscription/change", cs, json!({"plan": "pro"}))
        .await;
    ok(&up, StatusCode::OK);
    assert_eq!(up.body["plan"], "pro");
    let invoices = app.get("/v1/me/invoices", cs).await;
    ok(&invoices, StatusCode::OK);
    let data = invoices.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["customer"], "alice");
    assert_eq!(data[0]["total"], "30.00");
    let invoice_id = data[0]["id"].as_str().unwrap().to_string();
    let pdf = app
        .get(&format!("/v1/me/invoices/{invoice_id}/pdf"), cs)
        .await;
    assert_eq!(pdf.status, StatusCode::OK);
    assert_eq!(pdf.headers["content-type"], "application/pdf");
    let upcoming = app.get("/v1/me/upcoming_invoice", cs).await;
    ok(&upcoming, StatusCode::OK);
    assert_eq!(upcoming.body["total"], "30.00");
    // Same plan again: the same error as the tenant API.
    let same = app
        .post("/v1/me/subscription/change", cs, json!({"plan": "pro"}))
        .await;
    assert_eq!(same.status, StatusCode::CONFLICT);
    assert_eq!(same.code(), "same_plan");
    // Cancel at period end, then undo it.
    let cancel = app.post("/v1/me/subscription/cancel", cs, json!({})).await;
    ok(&cancel, StatusCode::OK);
    assert_eq!(cancel.body["cancel_at_period_end"], true);
    assert_eq!(cancel.body["status"], "active");
    let again = app
        .post("/v1/me/subscription/reactivate", cs, json!({}))
        .await;
    ok(&again, StatusCode::OK);
    assert_eq!(again.body["cancel_at_period_end"], false);
    let twice = app
        .post("/v1/me/subscription/reactivate", cs, json!({}))
        .await;
    assert_eq!(twice.code(), "not_canceled");
    let members = app.get("/v1/me/members", cs).await;
    assert_eq!(members.body["data"], json!([]));
    let export = app.get("/v1/me/export", cs).await;
    ok(&export, StatusCode::OK);
    assert_eq!(export.body["customer"]["id"], "alice");

    // What the session did is the session's in the audit log.
    let actor = format!("session:{}", s["id"].as_str().unwrap());
    let by_session = app
        .get(&format!("/v1/audit_log?actor={actor}&limit=100"), &t.key)
        .await;
    let actions: Vec<&str> = by_session.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "subscription.reactivated",
            "subscription.canceled",
            "invoice.finalized",
            "invoice.created",
            "subscription.changed",
        ]
    );
    let created = app
        .get(
            &format!(
                "/v1/audit_log?resource=customer_session/{}",
                s["id"].as_str().unwrap()
            ),
            &t.key,
        )
        .await;
    assert_eq!(
        created.body["data"][0]["action"],
        "customer_session.created"
    );
    let text = created.body.to_string();
    assert!(!text.contains(cs), "the token is never logged");
}

#[tokio::test]
async fn a_session_sees_nothing_else_and_ends_when_revoked_or_expired() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    let alice = session(&app, &t, "alice").await;
    let cs = token(&alice);
    // Bob's invoice through Alice's session is 404.
    let bob = app.get("/v1/customers/bob/subscription", &t.key).await;
    let bob_sub = bob.body["id"].as_str().unwrap();
    ok(
        &app.post(
            &format!("/v1/subscriptions/{bob_sub}/change"),
            &t.key,
            json!({"plan": "pro"}),
        )
        .await,
        StatusCode::OK,
    );
    let bob_invoice = app.invoices(&t, "bob").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .get(&format!("/v1/me/invoices/{bob_invoice}/pdf"), cs)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "invoice_not_found");
    let mine = app.get("/v1/me/invoices", cs).await;
    assert_eq!(mine.body["data"], json!([]));

    // Every other /v1 route is 403 to a session, the deferred hot paths included.
    for (method, path, body) in [
        (Method::GET, "/v1/customers/alice", None),
        (Method::GET, "/v1/customers", None),
        (Method::GET, "/v1/tenant", None),
        (Method::GET, "/v1/audit_log", None),
        (
            Method::POST,
            "/v1/check",
            Some(json!({"customer": "alice", "feature": "calls"})),
        ),
        (
            Method::POST,
            "/v1/usage",
            Some(json!({"customer": "alice", "feature": "calls"})),
        ),
        (
            Method::POST,
            "/v1/customer_sessions",
            Some(json!({"customer": "bob"})),
        ),
    ] {
        let r = app.request(method.clone(), path, Some(cs), body, &[]).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {:?}",
            r.body
        );
        assert_eq!(r.error_type(), "permission");
        assert_eq!(r.code(), "customer_session_not_allowed");
    }
    // And a tenant key on /v1/me is 403 too: those routes act for a session's customer.
    let r = app.get("/v1/me", &t.key).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "customer_session_required");
    let r = app
        .post("/v1/me/check", &t.key, json!({"feature": "calls"}))
        .await;
    assert_eq!(r.code(), "customer_session_required");

    // Unknown or forged tokens are 401.
    // The forgery changes the last character (to one it is not: a token may end in 'x').
    let last = if cs.ends_with('x') { 'y' } else { 'x' };
    for bad in [
        format!("{}{last}", &cs[..cs.len() - 1]),
        "cs_garbage".to_string(),
        "cs_".to_string(),
    ] {
        let r = app.get("/v1/me", &bad).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(r.error_type(), "authentication");
    }
    // Another tenant's key cannot revoke it; the tenant can, at once.
    let other = app.tenant("test").await;
    let id = alice["id"].as_str().unwrap();
    let r = app
        .delete(&format!("/v1/customer_sessions/{id}"), &other.key)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "customer_session_not_found");
    ok(&app.get("/v1/me", cs).await, StatusCode::OK);
    let revoked = app
        .delete(&format!("/v1/customer_sessions/{id}"), &t.key)
        .await;
    ok(&revoked, StatusCode::OK);
    assert!(revoked.body["revoked_at"].is_string());
    let r = app.get("/v1/me", cs).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The check authenticates the session inside its own statement: revoked is 401 there too.
    let r = app
        .post("/v1/me/check", cs, json!({"feature": "calls"}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert_eq!(r.error_type(), "authentication");

    // Lifetimes: 60 s to a day; another customer's or a missing one is a 404.
    for ttl in [59, 86_401] {
        let r = app
            .post(
                "/v1/customer_sessions",
                &t.key,
                json!({"customer": "alice", "ttl_seconds": ttl}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.code(), "invalid_ttl");
    }
    let r = app
        .post(
            "/v1/customer_sessions",
            &t.key,
            json!({"customer": "nobody"}),
        )
        .await;
    assert_eq!(r.code(), "customer_not_found");
    let r = app
        .post(
            "/v1/customer_sessions",
            &other.key,
            json!({"customer": "alice"}),
        )
        .await;
    assert_eq!(r.code(), "customer_not_found");
    // An erased customer's sessions end with it.
    let bob = session(&app, &t, "bob").await;
    ok(&app.get("/v1/me", token(&bob)).await, StatusCode::OK);
    ok(
        &app.delete("/v1/customers/bob", &t.key).await,
        StatusCode::OK,
    );
    let r = app.get("/v1/me", token(&bob)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .post("/v1/me/check", token(&bob), json!({"feature": "calls"}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    // An expired one is 401 (expiry is real time: staged through the test support).
    let short = session(&app, &t, "alice").await;
    tollgate::testing::stored::expire_customer_session(
        &app.db,
        &t.tid(),
        short["id"].as_str().unwrap(),
    )
    .await
    .unwrap();
    let r = app.get("/v1/me", token(&short)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .post("/v1/me/check", token(&short), json!({"feature": "calls"}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
}

#[tokio::test]
async fn idempotency_keys_of_two_sessions_never_replay_each_others_answers() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    let alice = session(&app, &t, "alice").await;
    let bob = session(&app, &t, "bob").await;
    let key = [("Idempotency-Key", "same-key")];
    let a = app
        .request(
            Method::POST,
            "/v1/me/check",
            Some(token(&alice)),
            Some(json!({"feature": "calls"})),
            &key,
        )
        .await;
    let b = app
        .request(
            Method::POST,
            "/v1/me/check",
            Some(token(&bob)),
            Some(json!({"feature": "calls"})),
            &key,
        )
        .await;
    assert_eq!(a.body["customer"], "alice");
    assert_eq!(b.body["customer"], "bob");
    // The same session and key replays its own answer.
    let again = app
        .request(
            Method::POST,
            "/v1/me/check",
            Some(token(&alice)),
            Some(json!({"feature": "calls"})),
            &key,
        )
        .await;
    assert_eq!(again.body, a.body);
}

#[tokio::test]
async fn portal_branding_is_validated() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    let r = app
        .patch(
            "/v1/tenant",
            &t.key,
            json!({"portal": {"name": "Acme Billing", "accent_color": "#4F46E5",
                              "return_url": "https://app.acme.test/settings"}}),
        )
        .await;
    ok(&r, StatusCode::OK);
    assert_eq!(
        r.body["portal"],
        json!({"name": "Acme Billing", "accent_color": "#4F46E5",
               "return_url": "https://app.acme.test/settings"})
    );
    for (patch, code) in [
        (json!({"accent_color": "red"}), "invalid_color"),
        (json!({"accent_color": "#4F46E"}), "invalid_color"),
        (json!({"accent_color": "rgb(1,2,3)"}), "invalid_color"),
        (json!({"return_url": "javascript:alert(1)"}), "invalid_url"),
        (json!({"name": ""}), "invalid_name"),
    ] {
        let r = app
            .patch("/v1/tenant", &t.key, json!({ "portal": patch }))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{patch}");
        assert_eq!(r.code(), code, "{patch}");
    }
    // Null goes back to the default; unchanged fields stay.
    let r = app
        .patch("/v1/tenant", &t.key, json!({"portal": {"name": null}}))
        .await;
    assert_eq!(r.body["portal"]["name"], Value::Null);
    assert_eq!(r.body["portal"]["accent_color"], "#4F46E5");
}
