//! Coupons (SPEC §15): discount lines on a subscription's invoices, their durations, the
//! credit balance after them, and redemptions counted exactly. Expected amounts are worked
//! out by hand in the comments.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Tenant, TestApp};

/// A test tenant (clock at 2026-03-01) with plans `pro` ($49.99 a month) and `basic` ($10).
async fn tenant(app: &TestApp) -> Tenant {
    let t = app.tenant("test").await;
    let f = app
        .post(
            "/v1/features",
            &t.key,
            json!({"key": "calls", "name": "Calls", "type": "metered"}),
        )
        .await;
    assert_eq!(f.status, StatusCode::CREATED, "{:?}", f.body);
    for (key, amount) in [("pro", "49.99"), ("basic", "10.00")] {
        let r = app
            .post(
                "/v1/plans",
                &t.key,
                json!({"key": key, "name": key,
                       "prices": [{"interval": "month", "amount": amount, "currency": "usd"}],
                       "entitlements": [{"feature": "calls", "limit": 100}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    app.set_clock(&t, "2026-03-01T00:00:00Z").await;
    t
}

async fn coupon(app: &TestApp, t: &Tenant, body: Value) -> Value {
    let r = app.post("/v1/coupons", &t.key, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body
}

async fn subscribe(app: &TestApp, t: &Tenant, customer: &str, coupon: Option<&str>) -> Value {
    // Made, or already there.
    let c = app
        .put(&format!("/v1/customers/{customer}"), &t.key, json!({}))
        .await;
    assert!(c.status.is_success(), "{:?}", c.body);
    let mut body = json!({"customer": customer, "plan": "pro"});
    if let Some(c) = coupon {
        body["coupon"] = json!(c);
    }
    let r = app.post("/v1/subscriptions", &t.key, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body
}

/// `(subtotal, discount line amount or "", total)` of each of the customer's invoices, oldest
/// first.
async fn bills(app: &TestApp, t: &Tenant, customer: &str) -> Vec<(String, String, String)> {
    app.invoices(t, customer)
        .await
        .iter()
        .map(|inv| {
            let discount = inv["lines"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| l["type"] == "discount")
                .map(|l| l["amount"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join(",");
            (
                inv["subtotal"].as_str().unwrap().to_string(),
                discount,
                inv["total"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn bill(subtotal: &str, discount: &str, total: &str) -> (String, String, String) {
    (subtotal.into(), discount.into(), total.into())
}

#[tokio::test]
async fn a_forever_percentage_and_a_once_amount_are_taken_off_and_capped_at_the_subtotal() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    let c = coupon(
        &app,
        &t,
        json!({"code": "FIFTEEN", "name": "Launch", "percent_off": 15, "duration": "forever"}),
    )
    .await;
    assert_eq!(c["percent_off"], json!(15));
    assert_eq!(c["times_redeemed"], 0);
    coupon(
        &app,
        &t,
        json!({"code": "HUNDRED", "amount_off": "100.00", "duration": "once"}),
    )
    .await;

    // 15% of 49.99 = 7.4985, rounded once: 7.50; 49.99 − 7.50 = 42.49, every period.
    let sub = subscribe(&app, &t, "fifteen", Some("FIFTEEN")).await;
    assert_eq!(sub["discount"]["coupon"], "FIFTEEN");
    assert_eq!(sub["discount"]["end"], Value::Null);
    // $100 once on 49.99: capped at 49.99, total 0.00; the next invoice pays in full.
    let once = subscribe(&app, &t, "hundred", Some("HUNDRED")).await;
    assert_eq!(once["discount"]["coupon"], "HUNDRED");
    let inv = &app.invoices(&t, "fifteen").await[0];
    let line = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["type"] == "discount")
        .unwrap()
        .clone();
    assert_eq!(line["description"], "Discount: Launch (15% off)");
    assert_eq!(line["quantity"], json!(1));
    // The preview of the next invoice shows it too.
    let up = app
        .get("/v1/customers/fifteen/upcoming_invoice", &t.key)
        .await;
    assert_eq!(up.status, StatusCode::OK, "{:?}", up.body);
    assert_eq!(up.body["subtotal"], "49.99");
    assert_eq!(up.body["total"], "42.49");

    app.advance_clock(&t, "2026-04-01T02:00:00Z").await;
    assert_eq!(
        bills(&app, &t, "fifteen").await,
        [
            bill("49.99", "-7.50", "42.49"),
            bill("49.99", "-7.50", "42.49")
        ]
    );
    assert_eq!(
        bills(&app, &t, "hundred").await,
        [bill("49.99", "-49.99", "0.00"), bill("49.99", "", "49.99")]
    );
    let first = &app.invoices(&t, "hundred").await[0];
    assert_eq!(first["status"], "paid", "nothing was due");
    // The once discount ended with the invoice it discounted.
    let s = app
        .get(
            &format!("/v1/subscriptions/{}", once["id"].as_str().unwrap()),
            &t.key,
        )
        .await;
    assert_eq!(s.body["discount"], Value::Null);
    let c = app.get("/v1/coupons/HUNDRED", &t.key).await;
    assert_eq!(c.body["times_redeemed"], 1);
}

#[tokio::test]
async fn a_repeating_coupon_discounts_the_start_and_two_renewals_of_three_periods() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    coupon(
        &app,
        &t,
        json!({"code": "THREE", "percent_off": "20", "duration": "repeating",
               "duration_in_periods": 3}),
    )
    .await;
    let sub = subscribe(&app, &t, "acme", Some("THREE")).await;
    // Applied 2026-03-01 for three monthly periods: it ends 2026-06-01.
    assert_eq!(sub["discount"]["start"], "2026-03-01T00:00:00Z");
    assert_eq!(sub["discount"]["end"], "2026-06-01T00:00:00Z");
    for to in [
        "2026-04-01T02:00:00Z",
        "2026-05-01T02:00:00Z",
        "2026-06-01T02:00:00Z",
    ] {
        app.advance_clock(&t, to).await;
    }
    // 20% of 49.99 = 9.998: 10.00; the renewal made at the end (June) is not discounted.
    assert_eq!(
        bills(&app, &t, "acme").await,
        [
            bill("49.99", "-10.00", "39.99"),
            bill("49.99", "-10.00", "39.99"),
            bill("49.99", "-10.00", "39.99"),
            bill("49.99", "", "49.99"),
        ]
    );
}

#[tokio::test]
async fn the_discount_comes_before_the_credit_balance() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    coupon(
        &app,
        &t,
        json!({"code": "FIFTEEN", "percent_off": 15, "duration": "forever"}),
    )
    .await;
    app.customer(&t, "acme").await;
    let r = app
        .post(
            "/v1/customers/acme/credits",
            &t.key,
            json!({"amount": "10.00", "description": "goodwill"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    subscribe(&app, &t, "acme", Some("FIFTEEN")).await;
    // 49.99 − 7.50 = 42.49; then the 10.00 of credit: 32.49 due.
    let inv = &app.invoices(&t, "acme").await[0];
    assert_eq!(inv["subtotal"], "49.99");
    assert_eq!(inv["total"], "42.49");
    assert_eq!(inv["credit_applied"], "10.00");
    assert_eq!(inv["amount_due"], "32.49");
}

#[tokio::test]
async fn redemptions_are_counted_exactly_under_concurrency() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    coupon(
        &app,
        &t,
        json!({"code": "TEN", "percent_off": 50, "duration": "once", "max_redemptions": 10}),
    )
    .await;
    for i in 0..50 {
        app.customer(&t, &format!("c{i}")).await;
    }
    let attempts = (0..50).map(|i| {
        let (app, key) = (&app, &t.key);
        async move {
            app.post(
                "/v1/subscriptions",
                key,
                json!({"customer": format!("c{i}"), "plan": "pro", "coupon": "TEN"}),
            )
            .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let ok = results
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(ok, 10);
    for r in results.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
        assert_eq!(r.code(), "coupon_not_redeemable");
    }
    let c = app.get("/v1/coupons/TEN", &t.key).await;
    assert_eq!(c.body["times_redeemed"], 10);
    // Nothing half-written: the refused ones have no subscription.
    let subscribed = futures::future::join_all((0..50).map(|i| {
        let (app, key) = (&app, &t.key);
        async move {
            app.get(&format!("/v1/customers/c{i}/subscription"), key)
                .await
                .status
        }
    }))
    .await;
    assert_eq!(
        subscribed.iter().filter(|s| **s == StatusCode::OK).count(),
        10
    );
}

#[tokio::test]
async fn coupons_are_validated_limited_to_plans_and_applied_or_removed_later() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    for (body, code) in [
        (json!({"code": "X", "duration": "once"}), "invalid_discount"),
        (
            json!({"code": "X", "percent_off": 10, "amount_off": "5", "duration": "once"}),
            "invalid_discount",
        ),
        (
            json!({"code": "X", "percent_off": 0, "duration": "once"}),
            "invalid_percent_off",
        ),
        (
            json!({"code": "X", "percent_off": 100.5, "duration": "once"}),
            "invalid_percent_off",
        ),
        (
            json!({"code": "X", "percent_off": 100.001, "duration": "once"}),
            "invalid_percent_off",
        ),
        (
            json!({"code": "X", "percent_off": "12.345", "duration": "once"}),
            "invalid_percent_off",
        ),
        (
            json!({"code": "X", "amount_off": "0", "duration": "once"}),
            "invalid_amount_off",
        ),
        (
            json!({"code": "X", "amount_off": "1.001", "duration": "once"}),
            "invalid_amount_off",
        ),
        (
            json!({"code": "X", "percent_off": 10, "duration": "weekly"}),
            "invalid_duration",
        ),
        (
            json!({"code": "X", "percent_off": 10, "duration": "repeating"}),
            "invalid_duration_in_periods",
        ),
        (
            json!({"code": "X", "percent_off": 10, "duration": "once", "duration_in_periods": 2}),
            "invalid_duration_in_periods",
        ),
        (
            json!({"code": "X", "percent_off": 10, "duration": "once", "max_redemptions": 0}),
            "invalid_max_redemptions",
        ),
    ] {
        let r = app.post("/v1/coupons", &t.key, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
        assert_eq!(r.code(), code, "{body}");
    }
    let list = app.get("/v1/coupons", &t.key).await;
    assert_eq!(list.body["data"], json!([]), "nothing was written");

    coupon(
        &app,
        &t,
        json!({"code": "BASIC", "percent_off": 10, "duration": "forever", "plans": ["basic"]}),
    )
    .await;
    coupon(
        &app,
        &t,
        json!({"code": "LATE", "percent_off": 10, "duration": "forever",
               "redeem_by": "2026-02-01T00:00:00Z"}),
    )
    .await;
    let five = coupon(
        &app,
        &t,
        json!({"code": "FIVE", "amount_off": "5", "duration": "forever"}),
    )
    .await;
    assert_eq!(five["amount_off"], "5.00");
    let r = app
        .post(
            "/v1/coupons",
            &t.key,
            json!({"code": "FIVE", "percent_off": 1, "duration": "once"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "coupon_exists");

    app.customer(&t, "acme").await;
    for (code, status, error) in [
        ("NOPE", StatusCode::NOT_FOUND, "coupon_not_found"),
        ("BASIC", StatusCode::CONFLICT, "coupon_not_applicable"),
        ("LATE", StatusCode::CONFLICT, "coupon_not_redeemable"),
    ] {
        let r = app
            .post(
                "/v1/subscriptions",
                &t.key,
                json!({"customer": "acme", "plan": "pro", "coupon": code}),
            )
            .await;
        assert_eq!(r.status, status, "{code}: {:?}", r.body);
        assert_eq!(r.code(), error);
    }
    let basic = app.get("/v1/coupons/BASIC", &t.key).await;
    assert_eq!(
        basic.body["times_redeemed"], 0,
        "a refused redemption is not counted"
    );

    // Applied later: the next invoice (the renewal) gets it; removed, the one after does not.
    let sub = subscribe(&app, &t, "acme", None).await;
    let id = sub["id"].as_str().unwrap();
    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/discount"),
            &t.key,
            json!({"coupon": "FIVE"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["discount"]["coupon"], "FIVE");
    app.advance_clock(&t, "2026-04-01T02:00:00Z").await;
    let r = app
        .delete(&format!("/v1/subscriptions/{id}/discount"), &t.key)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["discount"], Value::Null);
    app.advance_clock(&t, "2026-05-01T02:00:00Z").await;
    assert_eq!(
        bills(&app, &t, "acme").await,
        [
            bill("49.99", "", "49.99"),
            bill("49.99", "-5.00", "44.99"),
            bill("49.99", "", "49.99"),
        ]
    );
    // Deleted: listed no more, redeemable no more.
    let r = app.delete("/v1/coupons/FIVE", &t.key).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/discount"),
            &t.key,
            json!({"coupon": "FIVE"}),
        )
        .await;
    assert_eq!(r.code(), "coupon_not_redeemable");
    let codes: Vec<Value> = app.get("/v1/coupons", &t.key).await.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].clone())
        .collect();
    assert_eq!(codes, [json!("BASIC"), json!("LATE")]);
    let log = app
        .get(&format!("/v1/audit_log?resource=subscription/{id}"), &t.key)
        .await;
    let actions: Vec<&str> = log.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"subscription.discount_applied"),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"subscription.discount_removed"),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_shows_the_customers_discount() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    coupon(
        &app,
        &t,
        json!({"code": "THREE", "percent_off": 20, "duration": "repeating",
               "duration_in_periods": 3}),
    )
    .await;
    subscribe(&app, &t, "acme", Some("THREE")).await;
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
    assert_eq!(
        b.text("#plan .discount").await,
        "Discount THREE applies until 2026-06-01"
    );
}

#[tokio::test]
async fn the_discount_reaches_stripe_as_a_negative_item() {
    let app = spawn_app().await;
    let fake = crate::fakes::FakeStripe::start().await;
    let t = tenant(&app).await;
    crate::stripe::connect(&app, &t, Some(&fake)).await;
    coupon(
        &app,
        &t,
        json!({"code": "FIFTEEN", "percent_off": 15, "duration": "forever"}),
    )
    .await;
    subscribe(&app, &t, "acme", Some("FIFTEEN")).await;
    crate::stripe::drain_stripe(&app, 1).await;
    let st = fake.lock();
    let sent = &st.invoices[&st.invoice_order[0]];
    // 49.99 and −7.50, in cents; the discount as an amount.
    assert_eq!(sent.items, [4999, -750]);
    assert_eq!(sent.item_units, [Some((1, "4999".to_string())), None]);
}
