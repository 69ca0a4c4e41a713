//! Analytics on a known history built with the test clock, checked to the cent.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Tenant, TestApp};

async fn subscribe(app: &TestApp, t: &Tenant, customer: &str, body: Value) -> Value {
    let mut body = body;
    body["customer"] = json!(customer);
    let r = app.post("/v1/subscriptions", &t.key, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body
}

async fn pay_latest(app: &TestApp, t: &Tenant, customer: &str) {
    let r = app
        .get(
            &format!("/v1/customers/{customer}/invoices?limit=1"),
            &t.key,
        )
        .await;
    let id = r.body["data"][0]["id"].as_str().unwrap().to_string();
    let r = app
        .post(
            &format!("/v1/invoices/{id}/pay"),
            &t.key,
            json!({"paid_out_of_band": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

/// A test tenant with Basic (10.00 a month), Pro (30.00 a month, 300.00 a year) and Team
/// (20.00 a month plus 5.00 a seat).
async fn priced_tenant(app: &TestApp) -> Tenant {
    let t = app.tenant("test").await;
    for plan in [
        json!({"key": "basic", "name": "Basic",
               "prices": [{"interval": "month", "amount": "10.00", "currency": "usd"}]}),
        json!({"key": "pro", "name": "Pro",
               "prices": [{"interval": "month", "amount": "30.00", "currency": "usd"},
                          {"interval": "year", "amount": "300.00", "currency": "usd"}]}),
        json!({"key": "team", "name": "Team",
               "prices": [{"interval": "month", "amount": "20.00", "currency": "usd"},
                          {"interval": "month", "amount": "5.00", "currency": "usd", "per_seat": true}]}),
    ] {
        let r = app.post("/v1/plans", &t.key, plan).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_figures_from_a_known_history() {
    let app = spawn_app().await;
    let t = priced_tenant(&app).await;
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;
    for c in ["old", "churn", "annual", "team", "trial"] {
        app.customer(&t, c).await;
    }
    subscribe(&app, &t, "old", json!({"plan": "basic"})).await;
    let churn = subscribe(&app, &t, "churn", json!({"plan": "basic"})).await;
    subscribe(
        &app,
        &t,
        "annual",
        json!({"plan": "pro", "interval": "year"}),
    )
    .await;
    pay_latest(&app, &t, "annual").await; // paid 2027-01-01: before the window

    app.advance_clock(&t, "2027-02-05T00:00:00Z").await; // the monthly ones renewed on Feb 1
    for m in ["a", "b", "c"] {
        let r = app
            .put(
                &format!("/v1/customers/team/members/{m}"),
                &t.key,
                json!({"role": "member"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    subscribe(&app, &t, "team", json!({"plan": "team"})).await;
    pay_latest(&app, &t, "team").await; // 20.00 + 3 × 5.00 = 35.00, paid Feb 5

    app.advance_clock(&t, "2027-02-10T00:00:00Z").await;
    subscribe(&app, &t, "trial", json!({"plan": "pro", "trial_days": 14})).await;

    app.advance_clock(&t, "2027-02-15T00:00:00Z").await;
    let r = app
        .post(
            &format!("/v1/subscriptions/{}/cancel", churn["id"].as_str().unwrap()),
            &t.key,
            json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    app.advance_clock(&t, "2027-02-20T00:00:00Z").await;
    pay_latest(&app, &t, "old").await; // its February renewal, 10.00, paid Feb 20

    // Now 2027-02-20; the window is (2027-01-21, 2027-02-20].
    //   MRR: old 10.00 + annual 300.00 / 12 = 25.00 + team 20.00 + 3 × 5.00 = 35.00
    //        (the trial counts as a subscription, not in MRR)        = 70.00; ARR 840.00
    //   live: old, annual, team, trial                                = 4
    //   by plan: team 35.00 (1), pro 25.00 (2), basic 10.00 (1)
    //   new: team (Feb 5), trial (Feb 10)                             = 2
    //   churned: churn (Feb 15)                                       = 1
    //   live on Jan 21: old, churn, annual = 3; churn rate 1 / 3      = 0.3333
    //   revenue: team's 35.00 (Feb 5) + old's 10.00 (Feb 20)          = 45.00
    let r = app.get("/v1/analytics/summary", &t.key).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({
            "mrr": "70.00",
            "arr": "840.00",
            "active_subscriptions": 4,
            "by_plan": [
                {"plan": "team", "subscriptions": 1, "mrr": "35.00"},
                {"plan": "pro", "subscriptions": 2, "mrr": "25.00"},
                {"plan": "basic", "subscriptions": 1, "mrr": "10.00"}
            ],
            "new_30d": 2,
            "churned_30d": 1,
            "churn_rate_30d": "0.3333",
            "revenue_30d": "45.00"
        })
    );

    // Another tenant has none of it.
    let other = app.tenant("test").await;
    let r = app.get("/v1/analytics/summary", &other.key).await;
    assert_eq!(
        r.body,
        json!({
            "mrr": "0.00", "arr": "0.00", "active_subscriptions": 0, "by_plan": [],
            "new_30d": 0, "churned_30d": 0, "churn_rate_30d": "0.0000", "revenue_30d": "0.00"
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mrr_series_with_new_expansion_contraction_and_churn() {
    let app = spawn_app().await;
    let t = priced_tenant(&app).await;
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;
    for c in ["a", "b", "c", "d", "e", "f"] {
        app.customer(&t, c).await;
    }
    // January: a, b and d on Basic (10.00), f on Pro (30.00): 60.00, all new.
    subscribe(&app, &t, "a", json!({"plan": "basic"})).await;
    let b = subscribe(&app, &t, "b", json!({"plan": "basic"})).await;
    let d = subscribe(&app, &t, "d", json!({"plan": "basic"})).await;
    let f = subscribe(&app, &t, "f", json!({"plan": "pro"})).await;
    // February: b up to Pro (+20.00 expansion); c annual Pro (300.00 / 12 = 25.00 new): 105.00.
    app.advance_clock(&t, "2027-02-10T00:00:00Z").await;
    let r = app
        .post(
            &format!("/v1/subscriptions/{}/change", b["id"].as_str().unwrap()),
            &t.key,
            json!({"plan": "pro"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    app.advance_clock(&t, "2027-02-15T00:00:00Z").await;
    subscribe(&app, &t, "c", json!({"plan": "pro", "interval": "year"})).await;
    // March: e on Team with 2 members (20.00 + 2 × 5.00 = 30.00 new); d canceled (10.00
    // churned): 125.00.
    app.advance_clock(&t, "2027-03-01T00:00:00Z").await;
    for m in ["m1", "m2"] {
        let r = app
            .put(
                &format!("/v1/customers/e/members/{m}"),
                &t.key,
                json!({"role": "member"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    subscribe(&app, &t, "e", json!({"plan": "team"})).await;
    app.advance_clock(&t, "2027-03-10T00:00:00Z").await;
    let r = app
        .post(
            &format!("/v1/subscriptions/{}/cancel", d["id"].as_str().unwrap()),
            &t.key,
            json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // April (to the 20th): f down to Basic now (−20.00 contraction); e a third member (+5.00
    // expansion): 110.00.
    app.advance_clock(&t, "2027-04-02T00:00:00Z").await;
    let r = app
        .post(
            &format!("/v1/subscriptions/{}/change", f["id"].as_str().unwrap()),
            &t.key,
            json!({"plan": "basic", "when": "now"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    app.advance_clock(&t, "2027-04-05T00:00:00Z").await;
    let r = app
        .put(
            "/v1/customers/e/members/m3",
            &t.key,
            json!({"role": "member"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    app.advance_clock(&t, "2027-04-20T00:00:00Z").await;

    let r = app.get("/v1/analytics/mrr?months=4", &t.key).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let month = |m: &str, mrr: &str, new: &str, exp: &str, con: &str, churn: &str| {
        json!({"month": m, "mrr": mrr, "new": new, "expansion": exp,
               "contraction": con, "churned": churn})
    };
    assert_eq!(
        r.body["data"],
        json!([
            month("2027-01", "60.00", "60.00", "0.00", "0.00", "0.00"),
            month("2027-02", "105.00", "25.00", "20.00", "0.00", "0.00"),
            month("2027-03", "125.00", "30.00", "0.00", "0.00", "10.00"),
            month("2027-04", "110.00", "0.00", "5.00", "20.00", "0.00"),
        ])
    );
    // The summary agrees on today's MRR.
    let s = app.get("/v1/analytics/summary", &t.key).await;
    assert_eq!(s.body["mrr"], "110.00");
    // Twelve months by default: the months before any subscription are zero.
    let r = app.get("/v1/analytics/mrr", &t.key).await;
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 12);
    assert_eq!(data[0]["month"], "2026-05");
    assert_eq!(data[0]["mrr"], "0.00");
    assert_eq!(data[11]["month"], "2027-04");
    let r = app.get("/v1/analytics/mrr?months=0", &t.key).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "invalid_months");
}
