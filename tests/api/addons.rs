//! Add-ons (SPEC §15): versions, attach and quantity changes prorated to the second, removal
//! at the period end and now, one-time add-ons, renewals, and entitlements stacked on the
//! plan's (exactly, under concurrency). Expected amounts are worked out by hand in the
//! comments: a March period is 31 days = 2 678 400 s.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{num, spawn_app, Tenant, TestApp};

/// A test tenant (clock at 2026-03-01) with features `calls` (metered), `analytics`
/// (boolean), a plan `pro` ($49.99 a month, 50 calls a month, a hard limit) and add-ons
/// `analytics` ($2,000 a month, grants analytics), `extra_calls` ($10 a month, 25 calls),
/// `white_label` ($15,000 once) and `yearly_only` ($100 a year).
async fn tenant(app: &TestApp) -> Tenant {
    let t = app.tenant("test").await;
    for (key, ftype) in [("calls", "metered"), ("analytics", "boolean")] {
        let f = app
            .post(
                "/v1/features",
                &t.key,
                json!({"key": key, "name": key, "type": ftype}),
            )
            .await;
        assert_eq!(f.status, StatusCode::CREATED, "{:?}", f.body);
    }
    let r = app
        .post(
            "/v1/plans",
            &t.key,
            json!({"key": "pro", "name": "Pro",
                   "prices": [{"interval": "month", "amount": "49.99", "currency": "usd"}],
                   "entitlements": [{"feature": "calls", "limit": 50}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    for body in [
        json!({"key": "analytics", "name": "Advanced Analytics",
               "prices": [{"interval": "month", "amount": "2000", "currency": "usd"}],
               "entitlements": [{"feature": "analytics"}]}),
        json!({"key": "extra_calls", "name": "Extra calls",
               "prices": [{"interval": "month", "amount": "10.00", "currency": "usd"},
                          {"interval": "year", "amount": "100.00", "currency": "usd"}],
               "entitlements": [{"feature": "calls", "limit": 25}]}),
        json!({"key": "white_label", "name": "White-label setup",
               "prices": [{"interval": "one_time", "amount": "15000", "currency": "usd"}]}),
        json!({"key": "yearly_only", "name": "Yearly only",
               "prices": [{"interval": "year", "amount": "100", "currency": "usd"}]}),
    ] {
        let r = app.post("/v1/addons", &t.key, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    app.set_clock(&t, "2026-03-01T00:00:00Z").await;
    t
}

/// Subscribes `customer` to `pro`; the subscription's id.
async fn subscribe(app: &TestApp, t: &Tenant, customer: &str) -> String {
    app.customer(t, customer).await;
    let r = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": customer, "plan": "pro"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn attach(app: &TestApp, t: &Tenant, sub: &str, body: Value) -> Value {
    let r = app
        .post(&format!("/v1/subscriptions/{sub}/addons"), &t.key, body)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

/// Each invoice's `(billing_reason, [(type, quantity, amount)], total)`, oldest first.
async fn bills(app: &TestApp, t: &Tenant, customer: &str) -> Vec<(String, Vec<Value>, String)> {
    app.invoices(t, customer)
        .await
        .iter()
        .map(|inv| {
            let lines = inv["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| json!([l["type"], num(&l["quantity"]), l["amount"]]))
                .collect();
            (
                inv["billing_reason"].as_str().unwrap().to_string(),
                lines,
                inv["total"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn check(app: &TestApp, t: &Tenant, customer: &str, feature: &str) -> Value {
    let r = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": customer, "feature": feature}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

#[tokio::test]
async fn attach_and_quantity_changes_are_prorated_to_the_second_and_renewals_bill_in_advance() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    let sub = subscribe(&app, &t, "acme").await;

    // 2026-03-11 12:00: 20.5 days = 1 771 200 s of the period are left.
    app.advance_clock(&t, "2026-03-11T12:00:00Z").await;
    let s = attach(&app, &t, &sub, json!({"addon": "analytics"})).await;
    assert_eq!(
        s["addons"],
        json!([{"addon": "analytics", "version": 1, "quantity": 1, "removes_at": null}])
    );
    let s = attach(
        &app,
        &t,
        &sub,
        json!({"addon": "extra_calls", "quantity": 2}),
    )
    .await;
    assert_eq!(s["addons"][1]["quantity"], 2);
    // 2026-03-21 00:00: 11 days = 950 400 s left; extra_calls goes from 2 to 3.
    app.advance_clock(&t, "2026-03-21T00:00:00Z").await;
    let s = attach(
        &app,
        &t,
        &sub,
        json!({"addon": "extra_calls", "quantity": 3}),
    )
    .await;
    assert_eq!(s["addons"][1]["quantity"], 3);
    // The renewal bills the plan and both add-ons in advance.
    let up = app.get("/v1/customers/acme/upcoming_invoice", &t.key).await;
    assert_eq!(up.body["total"], "2079.99", "{:?}", up.body);
    app.advance_clock(&t, "2026-04-01T02:00:00Z").await;

    let line = |kind: &str, q: &str, amount: &str| json!([kind, q, amount]);
    assert_eq!(
        bills(&app, &t, "acme").await,
        [
            (
                "subscription_create".to_string(),
                vec![line("subscription", "1", "49.99")],
                "49.99".to_string()
            ),
            // 2000 × 1 771 200 / 2 678 400 = 1322.5806…
            (
                "subscription_update".to_string(),
                vec![line("addon", "1", "1322.58")],
                "1322.58".to_string()
            ),
            // 2 × 10 × 1 771 200 / 2 678 400 = 13.2258…
            (
                "subscription_update".to_string(),
                vec![line("addon", "2", "13.23")],
                "13.23".to_string()
            ),
            // (3 − 2) × 10 × 950 400 / 2 678 400 = 3.5483…
            (
                "subscription_update".to_string(),
                vec![line("addon", "1", "3.55")],
                "3.55".to_string()
            ),
            // 49.99 + 2000 + 3 × 10 = 2079.99.
            (
                "subscription_cycle".to_string(),
                vec![
                    line("subscription", "1", "49.99"),
                    line("addon", "1", "2000.00"),
                    line("addon", "3", "30.00"),
                ],
                "2079.99".to_string()
            ),
        ]
    );
    // Every add-on change is in the audit log, with the subscription before and after.
    let log = app
        .get(
            &format!("/v1/audit_log?resource=subscription/{sub}"),
            &t.key,
        )
        .await;
    let actions: Vec<&str> = log.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| a.starts_with("subscription.addon_"))
            .collect::<Vec<_>>(),
        [
            &"subscription.addon_updated",
            &"subscription.addon_attached",
            &"subscription.addon_attached"
        ]
    );
}

#[tokio::test]
async fn removal_now_credits_the_unused_time_and_at_period_end_stops_the_renewal() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    let sub = subscribe(&app, &t, "acme").await;
    // At the period's start, the whole period: 2000.00 and 2 × 10.00.
    attach(&app, &t, &sub, json!({"addon": "analytics"})).await;
    attach(
        &app,
        &t,
        &sub,
        json!({"addon": "extra_calls", "quantity": 2}),
    )
    .await;
    assert_eq!(check(&app, &t, "acme", "calls").await["limit"], json!(100));

    // At period end: still attached (and counted) until then.
    let r = app
        .delete(
            &format!("/v1/subscriptions/{sub}/addons/extra_calls"),
            &t.key,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["addons"][1]["removes_at"], "2026-04-01T00:00:00Z");
    assert_eq!(check(&app, &t, "acme", "calls").await["limit"], json!(100));

    // 2026-03-16 00:00: 16 days = 1 382 400 s left; analytics removed now:
    // −2000 × 1 382 400 / 2 678 400 = −1032.2580… → −1032.26, to the credit balance.
    app.advance_clock(&t, "2026-03-16T00:00:00Z").await;
    let r = app
        .delete(
            &format!("/v1/subscriptions/{sub}/addons/analytics?at_period_end=false"),
            &t.key,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["addons"].as_array().unwrap().len(), 1);
    let c = app.get("/v1/customers/acme", &t.key).await;
    assert_eq!(c.body["credit_balance"], "1032.26");
    // Removing one that is not attached is a 404, and changes nothing.
    let again = app
        .delete(&format!("/v1/subscriptions/{sub}/addons/analytics"), &t.key)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.code(), "addon_not_found");

    app.advance_clock(&t, "2026-04-01T02:00:00Z").await;
    let all = bills(&app, &t, "acme").await;
    let line = |kind: &str, q: &str, amount: &str| json!([kind, q, amount]);
    assert_eq!(all[1].1, [line("addon", "1", "2000.00")]);
    assert_eq!(all[2].1, [line("addon", "2", "20.00")]);
    assert_eq!(all[3].1, [line("addon", "-1", "-1032.26")]);
    // The renewal: the plan only (extra_calls was removed at the period end); 49.99 comes off
    // the balance: 1032.26 − 49.99 = 982.27 left.
    assert_eq!(
        all[4],
        (
            "subscription_cycle".to_string(),
            vec![line("subscription", "1", "49.99")],
            "49.99".to_string()
        )
    );
    let renewal = &app.invoices(&t, "acme").await[4];
    assert_eq!(renewal["amount_due"], "0.00");
    let c = app.get("/v1/customers/acme", &t.key).await;
    assert_eq!(c.body["credit_balance"], "982.27");
    let s = app.get(&format!("/v1/subscriptions/{sub}"), &t.key).await;
    assert_eq!(s.body["addons"], json!([]));
    assert_eq!(check(&app, &t, "acme", "calls").await["limit"], json!(50));
}

#[tokio::test]
async fn a_one_time_addon_is_invoiced_at_once_and_not_kept() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    let sub = subscribe(&app, &t, "acme").await;
    let s = attach(
        &app,
        &t,
        &sub,
        json!({"addon": "white_label", "quantity": 2}),
    )
    .await;
    assert_eq!(s["addons"], json!([]));
    let all = bills(&app, &t, "acme").await;
    // 2 × 15 000.
    assert_eq!(
        all[1],
        (
            "subscription_update".to_string(),
            vec![json!(["addon", "2", "30000.00"])],
            "30000.00".to_string()
        )
    );
    let inv = &app.invoices(&t, "acme").await[1];
    assert_eq!(inv["status"], "open");
    assert_eq!(
        inv["lines"][0]["description"],
        "White-label setup × 2 (one-time)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacked_limits_hold_exactly_under_200_concurrent_calls_and_drop_on_removal() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    let sub = subscribe(&app, &t, "acme").await;
    // analytics is not in the plan until the add-on grants it.
    let before = check(&app, &t, "acme", "analytics").await;
    assert_eq!(before["allowed"], false);
    assert_eq!(before["reason"], "not_in_plan");
    attach(&app, &t, &sub, json!({"addon": "analytics"})).await;
    attach(
        &app,
        &t,
        &sub,
        json!({"addon": "extra_calls", "quantity": 2}),
    )
    .await;
    assert_eq!(check(&app, &t, "acme", "analytics").await["allowed"], true);
    // 50 + 25 × 2.
    let c = check(&app, &t, "acme", "calls").await;
    assert_eq!(c["limit"], json!(100));
    let ents = app.get("/v1/customers/acme/entitlements", &t.key).await;
    let calls = ents.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["feature"] == "calls")
        .unwrap()
        .clone();
    assert_eq!(calls["limit"], json!(100));

    let app = Arc::new(app);
    let key = Arc::new(t.key.clone());
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let (app, key) = (app.clone(), key.clone());
            tokio::spawn(async move {
                app.post(
                    "/v1/usage",
                    &key,
                    json!({"customer": "acme", "feature": "calls"}),
                )
                .await
                .status
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for h in handles {
        match h.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::PAYMENT_REQUIRED => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, refused), (100, 100));
    let events = tollgate::testing::stored::row_counts(&app.db, Some(&t.tid()))
        .await
        .unwrap()
        .usage_events;
    assert_eq!(events, 100);

    // Removed now: the limit drops at once; the usage stays, and more is refused.
    let r = app
        .delete(
            &format!("/v1/subscriptions/{sub}/addons/extra_calls?at_period_end=false"),
            &t.key,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let c = check(&app, &t, "acme", "calls").await;
    assert_eq!(c["limit"], json!(50));
    assert_eq!(num(&c["used"]), "100");
    assert_eq!(c["allowed"], false);
    let more = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "acme", "feature": "calls"}),
        )
        .await;
    assert_eq!(more.status, StatusCode::PAYMENT_REQUIRED, "{:?}", more.body);
    assert_eq!(more.code(), "limit_exceeded");
    let r = app
        .delete(
            &format!("/v1/subscriptions/{sub}/addons/analytics?at_period_end=false"),
            &t.key,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        check(&app, &t, "acme", "analytics").await["reason"],
        "not_in_plan"
    );
}

#[tokio::test]
async fn versions_are_kept_by_attached_addons_and_bad_input_writes_nothing() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    let sub = subscribe(&app, &t, "acme").await;
    attach(&app, &t, &sub, json!({"addon": "analytics"})).await;
    // A new version at $2,500: attached keep version 1 (and its price) until changed.
    let r = app
        .put(
            "/v1/addons/analytics",
            &t.key,
            json!({"name": "Advanced Analytics",
                   "prices": [{"interval": "month", "amount": "2500", "currency": "usd"}],
                   "entitlements": [{"feature": "analytics"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["prices"][0]["amount"], "2500.00");
    let v1 = app.get("/v1/addons/analytics?version=1", &t.key).await;
    assert_eq!(v1.body["prices"][0]["amount"], "2000.00");
    let up = app.get("/v1/customers/acme/upcoming_invoice", &t.key).await;
    assert_eq!(up.body["total"], "2049.99", "{:?}", up.body);
    let list = app.get("/v1/addons", &t.key).await;
    let keys: Vec<&str> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["analytics", "extra_calls", "white_label", "yearly_only"]
    );

    let invoices_before = app.invoices(&t, "acme").await.len();
    let s_before = app.get(&format!("/v1/subscriptions/{sub}"), &t.key).await;
    let refused = [
        (
            json!({"addon": "extra_calls", "quantity": 0}),
            400,
            "invalid_quantity",
        ),
        (
            json!({"addon": "extra_calls", "quantity": 1.5}),
            400,
            "invalid_quantity",
        ),
        (json!({"addon": "nope"}), 404, "addon_not_found"),
        (
            json!({"addon": "yearly_only"}),
            409,
            "addon_interval_mismatch",
        ),
    ];
    for (body, status, code) in refused {
        let r = app
            .post(
                &format!("/v1/subscriptions/{sub}/addons"),
                &t.key,
                body.clone(),
            )
            .await;
        assert_eq!(r.status.as_u16(), status, "{body}: {:?}", r.body);
        assert_eq!(r.code(), code, "{body}");
    }
    // Add-ons that cannot be made.
    let bad_addons = [
        (
            json!({"key": "x", "name": "X", "prices": [{"interval": "month", "amount": "-1", "currency": "usd"}]}),
            "invalid_amount",
        ),
        (
            json!({"key": "x", "name": "X", "prices": []}),
            "invalid_price",
        ),
        (
            json!({"key": "x", "name": "X", "prices": [{"interval": "month", "amount": "1", "currency": "usd"}],
                "entitlements": [{"feature": "ghost", "limit": 1}]}),
            "feature_not_found",
        ),
        (
            json!({"key": "x", "name": "X", "prices": [{"interval": "month", "amount": "1", "currency": "usd"},
                                                   {"interval": "month", "amount": "2", "currency": "usd"}]}),
            "duplicate_price",
        ),
    ];
    for (body, code) in bad_addons {
        let r = app.post("/v1/addons", &t.key, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
        assert_eq!(r.code(), code, "{body}");
    }
    assert_eq!(
        app.get("/v1/addons/x", &t.key).await.status,
        StatusCode::NOT_FOUND
    );
    // Another tenant's subscription is not found.
    let other = tenant(&app).await;
    let r = app
        .post(
            &format!("/v1/subscriptions/{sub}/addons"),
            &other.key,
            json!({"addon": "analytics"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(app.invoices(&t, "acme").await.len(), invoices_before);
    let s_after = app.get(&format!("/v1/subscriptions/{sub}"), &t.key).await;
    assert_eq!(s_before.body, s_after.body);
}

#[tokio::test]
async fn the_portal_shows_the_add_ons_and_negotiated_price() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    app.customer(&t, "acme").await;
    let r = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "acme", "plan": "pro", "price_overrides":
                   [{"interval": "month", "amount": "45", "currency": "usd"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let sub = r.body["id"].as_str().unwrap().to_string();
    attach(&app, &t, &sub, json!({"addon": "analytics"})).await;
    attach(
        &app,
        &t,
        &sub,
        json!({"addon": "extra_calls", "quantity": 2}),
    )
    .await;
    let r = app
        .delete(
            &format!("/v1/subscriptions/{sub}/addons/extra_calls"),
            &t.key,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .post("/v1/customer_sessions", &t.key, json!({"customer": "acme"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let url = format!(
        "{}/portal?session={}",
        app.base,
        r.body["token"].as_str().unwrap()
    );
    let b = crate::browser::Browser::start().await;
    b.goto(&url).await;
    assert_eq!(b.text("#plan .price").await, "· 45.00 USD / month");
    assert_eq!(
        b.text("#plan .addons").await,
        "Advanced Analytics × 1 · 2000.00 USD / month\n\
         Extra calls × 2 · 10.00 USD / month, removed on 2026-04-01"
    );
}

#[tokio::test]
async fn add_on_charges_reach_stripe_with_the_same_amounts() {
    let app = spawn_app().await;
    let fake = crate::fakes::FakeStripe::start().await;
    let t = tenant(&app).await;
    crate::stripe::connect(&app, &t, Some(&fake)).await;
    let sub = subscribe(&app, &t, "acme").await;
    app.advance_clock(&t, "2026-03-11T12:00:00Z").await;
    attach(&app, &t, &sub, json!({"addon": "analytics"})).await;
    attach(
        &app,
        &t,
        &sub,
        json!({"addon": "white_label", "quantity": 2}),
    )
    .await;
    crate::stripe::drain_stripe(&app, 3).await;
    let st = fake.lock();
    let mut items: Vec<Vec<i64>> = st
        .invoice_order
        .iter()
        .map(|id| st.invoices[id].items.clone())
        .collect();
    items.sort();
    // 49.99; the prorated 1322.58; 2 × 15 000.00, in cents (sent in any order).
    assert_eq!(items, [vec![4999], vec![132258], vec![3000000]]);
    let setup = st.invoices.values().find(|i| i.items == [3000000]).unwrap();
    assert_eq!(setup.item_units, [Some((2, "1500000".to_string()))]);
}
