//! Features, plans and versions, customers and subscriptions (the basic part).

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{num, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_version_and_subscriptions_keep_theirs() {
    let app = spawn_app().await;
    let t = app
        .tenant_with_plan(json!({"limit": 5, "reset": "month"}))
        .await;
    app.customer(&t, "old").await;
    let dup = app
        .post("/v1/plans", &t.key, json!({"key": "p", "name": "P"}))
        .await;
    assert_eq!(
        (dup.status, dup.code()),
        (StatusCode::CONFLICT, "plan_exists")
    );
    // Same definition: no new version.
    let same = app
        .put(
            "/v1/plans/p",
            &t.key,
            json!({"name": "P", "entitlements": [{"feature": "f", "limit": 5, "reset": "month"}]}),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(same.body["version"], 1);
    let v2 = app
        .put(
            "/v1/plans/p",
            &t.key,
            json!({"name": "P", "entitlements": [{"feature": "f", "limit": 50, "reset": "month"}]}),
        )
        .await;
    assert_eq!(v2.body["version"], 2);
    assert_eq!(v2.body["default"], true, "still the default plan");
    app.customer(&t, "new").await;
    let old = app.get("/v1/customers/old/subscription", &t.key).await;
    assert_eq!(old.body["plan_version"], 1);
    let new = app.get("/v1/customers/new/subscription", &t.key).await;
    assert_eq!(new.body["plan_version"], 2);
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "old", "feature": "f"}),
        )
        .await;
    assert_eq!(num(&c.body["limit"]), "5");
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "new", "feature": "f"}),
        )
        .await;
    assert_eq!(num(&c.body["limit"]), "50");
    let v1 = app.get("/v1/plans/p?version=1", &t.key).await;
    assert_eq!(num(&v1.body["entitlements"][0]["limit"]), "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_trials_and_one_live_per_customer() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    app.set_clock(&t, "2026-01-31T10:00:00Z").await;
    app.post(
        "/v1/features",
        &t.key,
        json!({"key": "m", "name": "M", "type": "metered"}),
    )
    .await;
    let p = app
        .post(
            "/v1/plans",
            &t.key,
            json!({"key": "growth", "name": "Growth",
        "prices": [{"interval": "month", "amount": "79.00", "currency": "usd"},
                   {"interval": "year", "amount": "790.00", "currency": "usd"}],
        "trial_days": 14,
        "entitlements": [{"feature": "m", "limit": 300}]}),
        )
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{:?}", p.body);
    app.customer(&t, "u1").await;
    // No default plan: no subscription, checks say so.
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "m"}),
        )
        .await;
    assert_eq!(c.body["reason"], "subscription_inactive");
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "m"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYMENT_REQUIRED, "subscription_inactive")
    );
    let s = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "u1", "plan": "growth", "interval": "year"}),
        )
        .await;
    assert_eq!(s.status, StatusCode::CREATED, "{:?}", s.body);
    assert_eq!(s.body["status"], "trialing");
    assert_eq!(s.body["interval"], "year");
    assert_eq!(s.body["trial_end"], "2026-02-14T10:00:00Z");
    assert_eq!(s.body["current_period_end"], "2026-02-14T10:00:00Z");
    let again = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "u1", "plan": "growth"}),
        )
        .await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "subscription_exists")
    );
    app.customer(&t, "u2").await;
    let s2 = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "u2", "plan": "growth", "trial_days": 0}),
        )
        .await;
    assert_eq!(s2.body["status"], "active");
    // Anchored on the 31st: the first period ends on the last day of February.
    assert_eq!(s2.body["current_period_end"], "2026-02-28T10:00:00Z");
    let id = s2.body["id"].as_str().unwrap();
    let got = app.get(&format!("/v1/subscriptions/{id}"), &t.key).await;
    assert_eq!(got.body, s2.body);
    let bad = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "u2", "plan": "nope"}),
        )
        .await;
    assert_eq!(bad.code(), "plan_not_found");
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "m"}),
        )
        .await;
    assert_eq!(c.body["allowed"], true);
    assert_eq!(c.body["resets_at"], "2026-02-14T10:00:00Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_upsert_and_default_plan_changes() {
    let app = spawn_app().await;
    let t = app.tenant_with_plan(json!({"limit": 1})).await;
    let r = app.put("/v1/customers/user_2abc", &t.key, json!({"email": "a@example.com", "name": "A", "metadata": {"team": "x"}, "net_days": 30})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app
        .put("/v1/customers/user_2abc", &t.key, json!({"name": "A2"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["email"], "a@example.com");
    assert_eq!(r.body["name"], "A2");
    assert_eq!(r.body["net_days"], 30);
    assert_eq!(r.body["metadata"]["team"], "x");
    let subs = tollgate::testing::stored::row_counts(&app.db, Some(&t.tid()))
        .await
        .unwrap()
        .subscriptions;
    assert_eq!(subs, 1, "an update does not subscribe again");
    let r = app
        .patch("/v1/tenant", &t.key, json!({"default_plan": null}))
        .await;
    assert!(r.body["default_plan"].is_null());
    app.customer(&t, "u9").await;
    let r = app.get("/v1/customers/u9/subscription", &t.key).await;
    assert_eq!(r.code(), "subscription_not_found");
    let r = app
        .patch("/v1/tenant", &t.key, json!({"default_plan": "missing"}))
        .await;
    assert_eq!(r.code(), "plan_not_found");
    let r = app.put("/v1/customers/bad%20id", &t.key, json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}
