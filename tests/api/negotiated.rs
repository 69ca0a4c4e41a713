//! Negotiated prices (SPEC §15): `price_overrides` on a subscription, kept across renewals,
//! a change of them prorated like a plan change, and the effective prices wherever a price
//! shows (invoices, the upcoming invoice, MRR). Expected amounts are worked out by hand in
//! the comments: a March period is 31 days = 2 678 400 s.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{num, spawn_app, Tenant, TestApp};

/// A test tenant (clock at 2026-03-01) with plans `pro` ($49.99 a month) and `basic` ($10 a
/// month, $100 a year).
async fn tenant(app: &TestApp) -> Tenant {
    let t = app.tenant("test").await;
    for body in [
        json!({"key": "pro", "name": "Pro",
               "prices": [{"interval": "month", "amount": "49.99", "currency": "usd"}]}),
        json!({"key": "basic", "name": "Basic",
               "prices": [{"interval": "month", "amount": "10", "currency": "usd"},
                          {"interval": "year", "amount": "100", "currency": "usd"}]}),
    ] {
        let r = app.post("/v1/plans", &t.key, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    app.set_clock(&t, "2026-03-01T00:00:00Z").await;
    t
}

fn flat(amount: &str) -> Value {
    json!([{"interval": "month", "amount": amount, "currency": "usd"}])
}

/// Each invoice's `(billing_reason, [(type, amount)], total)`, oldest first.
async fn bills(app: &TestApp, t: &Tenant, customer: &str) -> Vec<(String, Vec<Value>, String)> {
    app.invoices(t, customer)
        .await
        .iter()
        .map(|inv| {
            let lines = inv["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| json!([l["type"], l["amount"]]))
                .collect();
            (
                inv["billing_reason"].as_str().unwrap().to_string(),
                lines,
                inv["total"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn bill(reason: &str, lines: &[(&str, &str)], total: &str) -> (String, Vec<Value>, String) {
    (
        reason.to_string(),
        lines.iter().map(|(k, a)| json!([k, a])).collect(),
        total.to_string(),
    )
}

async fn change(app: &TestApp, t: &Tenant, sub: &str, body: Value) -> Value {
    let r = app
        .post(&format!("/v1/subscriptions/{sub}/change"), &t.key, body)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

#[tokio::test]
async fn a_raise_is_prorated_now_a_cut_waits_for_the_period_end_and_both_are_kept() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    app.customer(&t, "acme").await;
    let r = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "acme", "plan": "pro", "price_overrides": flat("39.99")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["price_overrides"][0]["amount"], "39.99");
    let sub = r.body["id"].as_str().unwrap().to_string();

    // 2026-03-11 12:00, 1 771 200 s left: raised to 59.99, now. The unused time at 39.99:
    // −39.99 × 1 771 200 / 2 678 400 = −26.445 → −26.45 (half away from zero); the rest at
    // 59.99: 39.6708… → 39.67.
    app.advance_clock(&t, "2026-03-11T12:00:00Z").await;
    let s = change(
        &app,
        &t,
        &sub,
        json!({"plan": "pro", "price_overrides": flat("59.99")}),
    )
    .await;
    assert_eq!(s["price_overrides"][0]["amount"], "59.99");
    assert_eq!(s["pending_change"], Value::Null);
    // The same prices again change nothing.
    let same = app
        .post(
            &format!("/v1/subscriptions/{sub}/change"),
            &t.key,
            json!({"plan": "pro", "price_overrides": flat("59.99")}),
        )
        .await;
    assert_eq!(same.status, StatusCode::CONFLICT);
    assert_eq!(same.code(), "same_plan");
    // Cut to 29.99: at the period end; 59.99 still holds until then.
    let s = change(
        &app,
        &t,
        &sub,
        json!({"plan": "pro", "price_overrides": flat("29.99")}),
    )
    .await;
    assert_eq!(s["price_overrides"][0]["amount"], "59.99");
    assert_eq!(s["pending_change"]["at"], "2026-04-01T00:00:00Z");
    let up = app.get("/v1/customers/acme/upcoming_invoice", &t.key).await;
    assert_eq!(up.body["total"], "29.99", "{:?}", up.body);

    app.advance_clock(&t, "2026-04-01T02:00:00Z").await;
    app.advance_clock(&t, "2026-05-01T02:00:00Z").await;
    assert_eq!(
        bills(&app, &t, "acme").await,
        [
            bill("subscription_create", &[("subscription", "39.99")], "39.99"),
            bill(
                "subscription_update",
                &[("proration", "-26.45"), ("proration", "39.67")],
                "13.22"
            ),
            // Kept across renewals.
            bill("subscription_cycle", &[("subscription", "29.99")], "29.99"),
            bill("subscription_cycle", &[("subscription", "29.99")], "29.99"),
        ]
    );
    // The MRR is the negotiated price.
    let a = app.get("/v1/analytics/summary", &t.key).await;
    assert_eq!(a.body["mrr"], "29.99", "{:?}", a.body);
    // The audit log names the change of prices.
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
    assert!(
        actions.contains(&"subscription.prices_changed"),
        "{actions:?}"
    );

    // Another plan without overrides clears them: basic at its own $10 (a downgrade, at
    // the period end).
    let s = change(&app, &t, &sub, json!({"plan": "basic"})).await;
    assert_eq!(s["pending_change"]["plan"], "basic");
    app.advance_clock(&t, "2026-06-01T02:00:00Z").await;
    let s = app.get(&format!("/v1/subscriptions/{sub}"), &t.key).await;
    assert_eq!(s.body["plan"], "basic");
    assert_eq!(s.body["price_overrides"], Value::Null);
    assert_eq!(bills(&app, &t, "acme").await[4].2, "10.00");
}

#[tokio::test]
async fn negotiated_seat_tiers_replace_the_plans_and_bad_overrides_write_nothing() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    app.customer(&t, "org").await;
    for i in 0..12 {
        let r = app
            .put(
                &format!("/v1/customers/org/members/m{i}"),
                &t.key,
                json!({"role": "member"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    // $1,000 flat plus graduated seats: 10 at 50.00, the other 2 at 40.00:
    // 1000 + 500 + 80 = 1580.00.
    let overrides = json!([
        {"interval": "month", "amount": "1000", "currency": "usd"},
        {"interval": "month", "per_seat": true, "currency": "usd", "tiers_mode": "graduated",
         "tiers": [{"up_to": 10, "unit_amount": "50"}, {"up_to": null, "unit_amount": "40"}]}
    ]);
    let bad = [
        (
            json!([{"interval": "year", "amount": "100", "currency": "usd"}]),
            "price_interval_mismatch",
            "price_overrides[0].interval",
        ),
        (
            json!([{"interval": "month", "amount": "-1", "currency": "usd"}]),
            "invalid_amount",
            "price_overrides[0].amount",
        ),
        (
            json!([{"interval": "month", "amount": "5", "currency": "eur"}]),
            "invalid_currency",
            "price_overrides[0].currency",
        ),
        (json!([]), "invalid_price_overrides", "price_overrides"),
    ];
    for (o, code, param) in bad {
        let r = app
            .post(
                "/v1/subscriptions",
                &t.key,
                json!({"customer": "org", "plan": "pro", "price_overrides": o}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{o}: {:?}", r.body);
        assert_eq!(r.code(), code, "{o}");
        assert_eq!(r.body["error"]["param"], param, "{o}");
    }
    assert!(app.invoices(&t, "org").await.is_empty(), "nothing written");
    let r = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "org", "plan": "pro", "price_overrides": overrides}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(
        r.body["price_overrides"][1]["tiers"][1]["unit_amount"],
        "40.00"
    );
    let inv = &app.invoices(&t, "org").await[0];
    assert_eq!(inv["total"], "1580.00", "{inv}");
    let seats: Vec<(String, String)> = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["type"] == "seat")
        .map(|l| {
            (
                num(&l["quantity"]),
                l["amount"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seats,
        [("10".into(), "500.00".into()), ("2".into(), "80.00".into())]
    );
    // A change of interval must bring prices for the new one: year overrides on a monthly
    // subscription are refused on change too.
    let sub = r.body["id"].as_str().unwrap();
    let r = app
        .post(
            &format!("/v1/subscriptions/{sub}/change"),
            &t.key,
            json!({"plan": "pro", "price_overrides": [{"interval": "year", "amount": "1", "currency": "usd"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.code(), "price_interval_mismatch");
}

#[tokio::test]
async fn the_mrr_counts_negotiated_prices_and_add_ons_less_a_forever_discount() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    let r = app
        .post(
            "/v1/addons",
            &t.key,
            json!({"key": "extra", "name": "Extra",
                   "prices": [{"interval": "month", "amount": "20", "currency": "usd"},
                              {"interval": "year", "amount": "200", "currency": "usd"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = app
        .post(
            "/v1/coupons",
            &t.key,
            json!({"code": "TEN", "percent_off": 10, "duration": "forever"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = app
        .post(
            "/v1/coupons",
            &t.key,
            json!({"code": "ONCE", "amount_off": "5", "duration": "once"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    app.customer(&t, "acme").await;
    let r = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "acme", "plan": "pro", "price_overrides": flat("100"),
                   "coupon": "TEN"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let sub = r.body["id"].as_str().unwrap().to_string();
    let r = app
        .post(
            &format!("/v1/subscriptions/{sub}/addons"),
            &t.key,
            json!({"addon": "extra", "quantity": 2}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // A once coupon does not count: basic yearly at $100 is 8.3333… a month, in full.
    app.customer(&t, "beta").await;
    let r = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "beta", "plan": "basic", "interval": "year", "coupon": "ONCE"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // Acme: (100 + 2 × 20) × 0.9 = 126; beta: 100 / 12 = 8.3333…; 134.3333… → 134.33.
    let a = app.get("/v1/analytics/summary", &t.key).await;
    assert_eq!(a.body["mrr"], "134.33", "{:?}", a.body);
    assert_eq!(a.body["by_plan"][0]["mrr"], "126.00");
    // The series reads the same from the history (the add-on is a change of terms).
    let m = app.get("/v1/analytics/mrr?months=1", &t.key).await;
    assert_eq!(m.body["data"][0]["mrr"], "134.33", "{:?}", m.body);
    // Without the discount: 140 + 8.33.
    let r = app
        .delete(&format!("/v1/subscriptions/{sub}/discount"), &t.key)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let a = app.get("/v1/analytics/summary", &t.key).await;
    assert_eq!(a.body["mrr"], "148.33", "{:?}", a.body);
}
