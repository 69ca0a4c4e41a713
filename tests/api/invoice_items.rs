//! One-off charges (SPEC §15): invoice items pending until the customer's next invoice, or
//! invoiced at once. Expected amounts are worked out by hand in the comments.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::fakes::FakeStripe;
use crate::helpers::{spawn_app, Tenant, TestApp};
use crate::stripe::{billing_tenant, connect, drain_stripe, subscribe_pro};

async fn item(app: &TestApp, t: &Tenant, customer: &str, body: Value) -> Value {
    let r = app
        .post(
            &format!("/v1/customers/{customer}/invoice_items"),
            &t.key,
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body
}

async fn pending(app: &TestApp, t: &Tenant, customer: &str) -> Vec<Value> {
    let r = app
        .get(
            &format!("/v1/customers/{customer}/invoice_items?pending=true"),
            &t.key,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["data"].as_array().unwrap().clone()
}

/// `(type, description, amount)` of each line.
fn lines(invoice: &Value) -> Vec<(String, String, String)> {
    invoice["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap().to_string(),
                l["description"].as_str().unwrap().to_string(),
                l["amount"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn pending_items_land_on_the_next_renewal_as_charge_lines() {
    let app = spawn_app().await;
    let t = billing_tenant(&app, "2026-03-01T00:00:00Z").await;
    let sub = subscribe_pro(&app, &t, "acme").await;
    // 7.5 hours at $150.00: 1125.00. 3 × $0.333 = 0.999, rounded once: 1.00.
    let dev = item(
        &app,
        &t,
        "acme",
        json!({"description": "Custom development", "unit_amount": "150.00", "quantity": 7.5}),
    )
    .await;
    assert_eq!(dev["amount"], "1125.00");
    assert_eq!(dev["unit_amount"], "150.00");
    assert_eq!(dev["quantity"], json!(7.5));
    assert_eq!(dev["currency"], "usd");
    assert_eq!(dev["invoice"], Value::Null);
    assert!(dev["id"].as_str().unwrap().starts_with("ii_"));
    let tiny = item(
        &app,
        &t,
        "acme",
        json!({"description": "Pages", "unit_amount": "0.333", "quantity": 3}),
    )
    .await;
    assert_eq!(tiny["amount"], "1.00");
    assert_eq!(tiny["unit_amount"], "0.333");
    assert_eq!(pending(&app, &t, "acme").await.len(), 2);

    // The preview shows them beside next period's fee: 30.00 + 1125.00 + 1.00 = 1156.00.
    let up = app.get("/v1/customers/acme/upcoming_invoice", &t.key).await;
    assert_eq!(up.status, StatusCode::OK, "{:?}", up.body);
    let charges: Vec<_> = lines(&up.body)
        .into_iter()
        .filter(|l| l.0 == "charge")
        .collect();
    assert_eq!(
        charges,
        [
            (
                "charge".into(),
                "Custom development".into(),
                "1125.00".into()
            ),
            ("charge".into(), "Pages".into(), "1.00".into())
        ]
    );
    assert_eq!(up.body["subtotal"], "1156.00");

    // The renewal carries them. While it is a draft (the grace period), an item on it can
    // still be removed, and its line goes: 1156.00 − 1.00 = 1155.00.
    app.advance_clock(&t, "2026-04-01T00:30:00Z").await;
    let draft = app.invoices(&t, "acme").await[1].clone();
    assert_eq!(draft["status"], "draft");
    assert_eq!(draft["total"], "1156.00");
    let r = app
        .delete(
            &format!("/v1/invoice_items/{}", tiny["id"].as_str().unwrap()),
            &t.key,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    app.advance_clock(&t, "2026-04-01T02:00:00Z").await;
    let invoices = app.invoices(&t, "acme").await;
    assert_eq!(invoices.len(), 2, "the start invoice and the renewal");
    let renewal = &invoices[1];
    assert_eq!(renewal["id"], draft["id"]);
    assert_eq!(renewal["subscription"], sub["id"]);
    assert_eq!(renewal["status"], "open");
    let ls = lines(renewal);
    assert_eq!(ls.len(), 2, "{ls:?}");
    assert_eq!(ls[0].0, "subscription");
    assert_eq!(ls[0].2, "30.00");
    assert_eq!(
        ls[1],
        (
            "charge".into(),
            "Custom development".into(),
            "1125.00".into()
        )
    );
    assert_eq!(renewal["subtotal"], "1155.00");
    assert_eq!(renewal["total"], "1155.00");
    assert!(pending(&app, &t, "acme").await.is_empty());
    let all = app.get("/v1/customers/acme/invoice_items", &t.key).await;
    for i in all.body["data"].as_array().unwrap() {
        assert_eq!(i["invoice"], renewal["id"]);
    }
    // Once a finalized invoice carries it, it stays.
    let r = app
        .delete(
            &format!("/v1/invoice_items/{}", dev["id"].as_str().unwrap()),
            &t.key,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "invoice_item_invoiced");
}

#[tokio::test]
async fn invoice_now_bills_a_customer_without_a_subscription_and_reaches_stripe() {
    let app = spawn_app().await;
    let fake = FakeStripe::start().await;
    let t = app.tenant("test").await;
    connect(&app, &t, Some(&fake)).await;
    app.customer(&t, "walk-in").await;
    let setup = item(
        &app,
        &t,
        "walk-in",
        json!({"description": "White-label setup", "unit_amount": "15000"}),
    )
    .await;
    assert_eq!(setup["amount"], "15000.00");
    // 3 × 19.99 = 59.97, invoiced at once with the pending setup fee: 15059.97.
    let now = item(
        &app,
        &t,
        "walk-in",
        json!({"description": "Training seats", "unit_amount": "19.99", "quantity": 3,
               "invoice_now": true}),
    )
    .await;
    let invoice_id = now["invoice"].as_str().expect("invoiced at once");
    let inv = app.get(&format!("/v1/invoices/{invoice_id}"), &t.key).await;
    assert_eq!(inv.body["status"], "open");
    assert_eq!(inv.body["subscription"], Value::Null);
    assert_eq!(inv.body["billing_reason"], "manual");
    assert_eq!(inv.body["currency"], "usd");
    assert_eq!(inv.body["number"], "INV-000001");
    assert_eq!(
        lines(&inv.body),
        [
            (
                "charge".into(),
                "White-label setup".into(),
                "15000.00".into()
            ),
            ("charge".into(), "Training seats".into(), "59.97".into())
        ]
    );
    assert_eq!(inv.body["total"], "15059.97");
    assert_eq!(inv.body["amount_due"], "15059.97");
    assert!(pending(&app, &t, "walk-in").await.is_empty());

    // Stripe gets the same lines in minor units.
    drain_stripe(&app, 1).await;
    let st = fake.lock();
    let sent: Vec<_> = st.invoices.values().collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].items, [1_500_000, 5_997]);
    assert_eq!(sent[0].item_units[1], Some((3, "1999".to_string())));
}

#[tokio::test]
async fn items_are_validated_removed_while_pending_and_audited() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    app.customer(&t, "c1").await;
    for (body, code, param) in [
        (
            json!({"description": "x", "unit_amount": "0"}),
            "invalid_amount",
            "unit_amount",
        ),
        (
            json!({"description": "x", "unit_amount": "-5"}),
            "invalid_amount",
            "unit_amount",
        ),
        (
            json!({"description": "x", "unit_amount": "0.001"}),
            "invalid_amount",
            "unit_amount",
        ),
        (
            json!({"description": "x", "unit_amount": "5", "quantity": 0}),
            "invalid_quantity",
            "quantity",
        ),
        (
            json!({"description": "x", "unit_amount": "5", "quantity": -1}),
            "invalid_quantity",
            "quantity",
        ),
        (
            json!({"description": " ", "unit_amount": "5"}),
            "invalid_description",
            "description",
        ),
    ] {
        let r = app
            .post("/v1/customers/c1/invoice_items", &t.key, body.clone())
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
        assert_eq!(r.code(), code, "{body}");
        assert_eq!(r.body["error"]["param"], param, "{body}");
    }
    let r = app
        .post(
            "/v1/customers/c1/invoice_items",
            &t.key,
            json!({"description": "x", "unit_amount": "5", "colour": "red"}),
        )
        .await;
    assert_eq!(r.code(), "unknown_field");
    let r = app
        .post(
            "/v1/customers/nobody/invoice_items",
            &t.key,
            json!({"description": "x", "unit_amount": "5"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "customer_not_found");
    assert!(
        pending(&app, &t, "c1").await.is_empty(),
        "nothing was written"
    );

    let kept = item(
        &app,
        &t,
        "c1",
        json!({"description": "Kept", "unit_amount": "10"}),
    )
    .await;
    let gone = item(
        &app,
        &t,
        "c1",
        json!({"description": "Gone", "unit_amount": "20"}),
    )
    .await;
    let gone_id = gone["id"].as_str().unwrap();
    let r = app
        .delete(&format!("/v1/invoice_items/{gone_id}"), &t.key)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["id"], gone["id"]);
    let left = pending(&app, &t, "c1").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], kept["id"]);
    let r = app
        .delete(&format!("/v1/invoice_items/{gone_id}"), &t.key)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "invoice_item_not_found");
    // Another tenant's item does not exist for this one.
    let other = app.tenant("test").await;
    let r = app
        .delete(
            &format!("/v1/invoice_items/{}", kept["id"].as_str().unwrap()),
            &other.key,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let log = app
        .get(
            &format!("/v1/audit_log?resource=invoice_item/{gone_id}"),
            &t.key,
        )
        .await;
    let actions: Vec<&str> = log.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["invoice_item.deleted", "invoice_item.created"]);
    assert_eq!(log.body["data"][0]["before"]["amount"], "20.00");

    // The export lists the customer's items.
    let export = app.get("/v1/customers/c1/export", &t.key).await;
    let items = export.body["invoice_items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["description"], "Kept");
}
