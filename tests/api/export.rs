//! `GET /v1/customers/{id}/export`: everything held about a customer, in one document.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{num, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_holds_everything_about_the_customer() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    let r = app
        .post(
            "/v1/features",
            &t.key,
            json!({"key": "calls", "name": "Calls", "type": "metered"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app
        .post(
            "/v1/plans",
            &t.key,
            json!({"key": "pro", "name": "Pro",
                   "prices": [{"interval": "month", "amount": "30.00", "currency": "usd"}],
                   "entitlements": [{"feature": "calls", "limit": 10}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;
    let r = app
        .put(
            "/v1/customers/acme",
            &t.key,
            json!({"email": "billing@acme.test", "name": "Acme", "metadata": {"crm": "42"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app
        .put(
            "/v1/customers/acme/members/ann",
            &t.key,
            json!({"role": "owner", "email": "ann@acme.test"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "acme", "plan": "pro"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let sub_id = r.body["id"].as_str().unwrap().to_string();
    // 9 of 10: past the warning level, so an alert is stored.
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "acme", "feature": "calls", "quantity": 9, "id": "ev-1",
                   "member": "ann"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .post(
            "/v1/customers/acme/credits",
            &t.key,
            json!({"amount": "3.00", "description": "Goodwill"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Another customer's data stays out of it.
    app.customer(&t, "other").await;

    let r = app.get("/v1/customers/acme/export", &t.key).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let e = &r.body;
    assert_eq!(e["customer"]["id"], "acme");
    assert_eq!(e["customer"]["email"], "billing@acme.test");
    assert_eq!(e["customer"]["metadata"]["crm"], "42");
    assert_eq!(e["customer"]["credit_balance"], "3.00");
    assert_eq!(e["members"][0]["member_id"], "ann");
    assert_eq!(e["members"][0]["email"], "ann@acme.test");
    assert_eq!(e["subscriptions"][0]["id"], sub_id.as_str());
    assert_eq!(e["subscriptions"][0]["plan"], "pro");
    assert_eq!(e["subscription_history"][0]["event"], "created");
    assert_eq!(
        e["subscription_history"][0]["subscription"],
        sub_id.as_str()
    );
    assert_eq!(e["invoices"][0]["total"], "30.00");
    assert_eq!(e["invoices"][0]["lines"][0]["amount"], "30.00");
    assert_eq!(e["usage_totals"][0]["feature"], "calls");
    assert_eq!(num(&e["usage_totals"][0]["used"]), "9");
    assert_eq!(e["usage_events"][0]["id"], "ev-1");
    assert_eq!(e["usage_events"][0]["member"], "ann");
    assert_eq!(num(&e["usage_events"][0]["quantity"]), "9");
    assert_eq!(e["alerts"][0]["feature"], "calls");
    assert_eq!(e["balance_transactions"][0]["type"], "manual");
    assert_eq!(e["balance_transactions"][0]["amount"], "3.00");
    // Every change about the customer, oldest first: its own, its member's, its
    // subscription's and its invoice's (usage events are not copied into the log).
    let actions: Vec<&str> = e["audit_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "customer.created",
            "member.added",
            "subscription.created",
            "invoice.created",
            "invoice.finalized",
            "customer.credited",
        ]
    );
    assert_eq!(e["audit_log"][0]["after"]["email"], "billing@acme.test");
    assert_eq!(
        e["audit_log"][2]["resource"],
        format!("subscription/{sub_id}")
    );
    for (section, n) in [
        ("members", 1),
        ("subscriptions", 1),
        ("invoices", 1),
        ("usage_events", 1),
        ("alerts", 1),
        ("balance_transactions", 1),
    ] {
        assert_eq!(e[section].as_array().unwrap().len(), n, "{section}");
    }

    let r = app.get("/v1/customers/nobody/export", &t.key).await;
    assert_eq!(r.code(), "customer_not_found");
    let other = app.tenant("test").await;
    let r = app.get("/v1/customers/acme/export", &other.key).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "customer_not_found");
}
