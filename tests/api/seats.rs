//! Per-seat prices: validation, tiers, seats billed in advance, and prorated seat changes
//! carried by the next invoice.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Tenant, TestApp};

async fn plan(app: &TestApp, t: &Tenant, body: Value) -> crate::helpers::Resp {
    app.post("/v1/plans", &t.key, body).await
}

async fn add_members(app: &TestApp, t: &Tenant, customer: &str, ids: impl Iterator<Item = String>) {
    for m in ids {
        let r = app
            .put(
                &format!("/v1/customers/{customer}/members/{m}"),
                &t.key,
                json!({"role": "member"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
}

async fn subscribe(app: &TestApp, t: &Tenant, customer: &str, plan: &str) -> Value {
    let r = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": customer, "plan": plan}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body
}

/// `(type, quantity, unit_amount, amount)` of a line.
type Shown = (String, String, String, String);

fn lines(inv: &Value) -> Vec<Shown> {
    inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap().to_string(),
                crate::helpers::num(&l["quantity"]),
                l["unit_amount"].as_str().unwrap().to_string(),
                l["amount"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn line(kind: &str, quantity: &str, unit: &str, amount: &str) -> Shown {
    (kind.into(), quantity.into(), unit.into(), amount.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_prices_are_validated_and_shown() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    let tiers =
        json!([{"up_to": 10, "unit_amount": "50.00"}, {"up_to": null, "unit_amount": "35.00"}]);
    for (price, code, param) in [
        (
            json!({"interval": "month", "currency": "usd", "tiers": tiers, "tiers_mode": "volume"}),
            "invalid_price",
            "prices[0].tiers",
        ),
        (
            json!({"interval": "month", "currency": "usd", "per_seat": true, "amount": "5.00",
                   "tiers": tiers, "tiers_mode": "volume"}),
            "invalid_price",
            "prices[0].amount",
        ),
        (
            json!({"interval": "month", "currency": "usd", "per_seat": true, "tiers": tiers}),
            "invalid_price",
            "prices[0].tiers_mode",
        ),
        (
            json!({"interval": "month", "currency": "usd", "per_seat": true, "tiers_mode": "graduated",
                   "tiers": [{"up_to": 10, "unit_amount": "50.00"}, {"up_to": 5, "unit_amount": "35.00"},
                             {"up_to": null, "unit_amount": "1.00"}]}),
            "invalid_tiers",
            "prices[0].tiers[1]",
        ),
        (
            json!({"interval": "month", "currency": "usd", "per_seat": true, "tiers_mode": "volume",
                   "tiers": [{"up_to": 10, "unit_amount": "50.00"}]}),
            "invalid_tiers",
            "prices[0].tiers[0]",
        ),
        (
            json!({"interval": "month", "currency": "usd", "amount": "5.00", "min_seats": 3}),
            "invalid_price",
            "prices[0].min_seats",
        ),
    ] {
        let r = plan(
            &app,
            &t,
            json!({"key": "p", "name": "P", "prices": [price]}),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
        assert_eq!(r.code(), code, "{:?}", r.body);
        assert_eq!(r.body["error"]["param"], param, "{:?}", r.body);
    }
    // Two per-seat prices for one interval: refused; one flat and one per-seat: fine.
    let two = plan(
        &app,
        &t,
        json!({"key": "p", "name": "P", "prices": [
            {"interval": "month", "currency": "usd", "per_seat": true, "amount": "5.00"},
            {"interval": "month", "currency": "usd", "per_seat": true, "amount": "6.00"}]}),
    )
    .await;
    assert_eq!(two.code(), "duplicate_price");
    let ok = plan(
        &app,
        &t,
        json!({"key": "ent", "name": "Enterprise", "prices": [
            {"interval": "year", "currency": "usd", "amount": "1000.00"},
            {"interval": "year", "currency": "usd", "per_seat": true, "min_seats": 5,
             "tiers_mode": "volume", "tiers": tiers}]}),
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.body);
    let prices = ok.body["prices"].as_array().unwrap();
    assert_eq!(prices.len(), 2);
    assert_eq!(prices[0]["per_seat"], false);
    assert_eq!(prices[0]["amount"], "1000.00");
    assert_eq!(prices[1]["per_seat"], true);
    assert!(prices[1]["amount"].is_null());
    assert_eq!(prices[1]["min_seats"], 5);
    assert_eq!(prices[1]["tiers_mode"], "volume");
    assert_eq!(prices[1]["tiers"][0]["up_to"], 10);
    assert_eq!(prices[1]["tiers"][0]["unit_amount"], "50.00");
    assert!(prices[1]["tiers"][1]["up_to"].is_null());
    // The same plan again is no new version.
    let same = app
        .put(
            "/v1/plans/ent",
            &t.key,
            json!({"name": "Enterprise", "prices": [
                {"interval": "year", "currency": "usd", "amount": "1000.00"},
                {"interval": "year", "currency": "usd", "per_seat": true, "min_seats": 5,
                 "tiers_mode": "volume", "tiers": tiers}]}),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK, "{:?}", same.body);
    assert_eq!(same.body["version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_invoices_bill_seats_by_tier_at_each_boundary() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    let tiers =
        json!([{"up_to": 10, "unit_amount": "50.00"}, {"up_to": null, "unit_amount": "35.00"}]);
    for (key, mode) in [("vol", "volume"), ("grad", "graduated")] {
        let r = plan(
            &app,
            &t,
            json!({"key": key, "name": key, "prices": [
                {"interval": "month", "currency": "usd", "amount": "100.00"},
                {"interval": "month", "currency": "usd", "per_seat": true,
                 "tiers_mode": mode, "tiers": tiers}]}),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let cases: [(&str, usize, Vec<Shown>, &str); 6] = [
        // Volume: every seat at the tier the count falls in.
        (
            "vol",
            9,
            vec![line("seat", "9", "50.00", "450.00")],
            "550.00",
        ),
        (
            "vol",
            10,
            vec![line("seat", "10", "50.00", "500.00")],
            "600.00",
        ),
        (
            "vol",
            11,
            vec![line("seat", "11", "35.00", "385.00")],
            "485.00",
        ),
        // Graduated: each tier's seats at its own price, a line per tier used.
        (
            "grad",
            9,
            vec![line("seat", "9", "50.00", "450.00")],
            "550.00",
        ),
        (
            "grad",
            10,
            vec![line("seat", "10", "50.00", "500.00")],
            "600.00",
        ),
        (
            "grad",
            11,
            vec![
                line("seat", "10", "50.00", "500.00"),
                line("seat", "1", "35.00", "35.00"),
            ],
            "635.00",
        ),
    ];
    for (i, (plan_key, members, seat_lines, total)) in cases.into_iter().enumerate() {
        let customer = format!("org{i}");
        app.customer(&t, &customer).await;
        add_members(&app, &t, &customer, (0..members).map(|m| format!("m{m}"))).await;
        subscribe(&app, &t, &customer, plan_key).await;
        let inv = &app.invoices(&t, &customer).await[0];
        let mut want = vec![line("subscription", "1", "100.00", "100.00")];
        want.extend(seat_lines);
        assert_eq!(lines(inv), want, "{plan_key} with {members} members");
        assert_eq!(inv["total"], total, "{plan_key} with {members} members");
    }
    // No members: the price's min_seats (default 1).
    app.customer(&t, "solo").await;
    subscribe(&app, &t, "solo", "vol").await;
    let inv = &app.invoices(&t, "solo").await[0];
    assert_eq!(inv["total"], "150.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_changes_mid_period_are_prorated_onto_the_next_invoice() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    let r = plan(
        &app,
        &t,
        json!({"key": "team", "name": "Team", "prices": [
            {"interval": "month", "currency": "usd", "per_seat": true, "amount": "30.00"}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;
    app.customer(&t, "org").await;
    add_members(&app, &t, "org", (1..=3).map(|m| format!("m{m}"))).await;
    subscribe(&app, &t, "org", "team").await;
    // The period is January: 31 days. Its first invoice: 3 seats in advance.
    let first = &app.invoices(&t, "org").await[0];
    assert_eq!(lines(first), [line("seat", "3", "30.00", "90.00")]);

    // Exactly half-way (15.5 of 31 days) a fourth member: half a seat, 15.00.
    let r = app
        .post(
            "/v1/test_clock/advance",
            &t.key,
            json!({"to": "2027-01-16T12:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    add_members(&app, &t, "org", std::iter::once("m4".to_string())).await;
    // A fifth added and removed at the same instant: +15.00 and -15.00, net zero.
    add_members(&app, &t, "org", std::iter::once("m5".to_string())).await;
    let r = app.delete("/v1/customers/org/members/m5", &t.key).await;
    assert_eq!(r.status, StatusCode::OK);
    // A role change moves no money.
    let r = app
        .put(
            "/v1/customers/org/members/m4",
            &t.key,
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let upcoming = app.get("/v1/customers/org/upcoming_invoice", &t.key).await;
    assert_eq!(upcoming.status, StatusCode::OK, "{:?}", upcoming.body);
    let pending = [
        line("seat", "1", "15.00", "15.00"),
        line("seat", "1", "15.00", "15.00"),
        line("seat", "-1", "15.00", "-15.00"),
    ];
    let mut want: Vec<_> = pending.to_vec();
    want.push(line("seat", "4", "30.00", "120.00"));
    assert_eq!(lines(&upcoming.body), want);
    assert_eq!(upcoming.body["total"], "135.00");

    // The renewal carries them, and bills February's four seats in advance.
    let r = app
        .post(
            "/v1/test_clock/advance",
            &t.key,
            json!({"to": "2027-02-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let all = app.invoices(&t, "org").await;
    assert_eq!(all.len(), 2);
    let renewal = &all[1];
    let mut want = vec![line("seat", "4", "30.00", "120.00")];
    want.extend(pending.iter().cloned());
    assert_eq!(lines(renewal), want);
    assert_eq!(renewal["total"], "135.00");
    // Carried once: the next preview has no pending line left.
    let upcoming = app.get("/v1/customers/org/upcoming_invoice", &t.key).await;
    assert_eq!(
        lines(&upcoming.body),
        [line("seat", "4", "30.00", "120.00")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_changes_weigh_and_prorate_seats_at_the_current_count() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    // Small: 20.00 + 10.00 a seat; Big: 50.00 + 5.00 a seat. At 10 seats Small costs 120.00
    // and Big 100.00 (Big is the downgrade); at 2 seats Small is 40.00 and Big 60.00.
    for (key, flat, seat) in [("small", "20.00", "10.00"), ("big", "50.00", "5.00")] {
        let r = plan(
            &app,
            &t,
            json!({"key": key, "name": key, "prices": [
                {"interval": "month", "currency": "usd", "amount": flat},
                {"interval": "month", "currency": "usd", "per_seat": true, "amount": seat}]}),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;
    for (org, members) in [("ten", 10), ("two", 2)] {
        app.customer(&t, org).await;
        add_members(&app, &t, org, (0..members).map(|m| format!("m{m}"))).await;
        subscribe(&app, &t, org, "small").await;
    }
    let sub_of = |org: &'static str| {
        let app = &app;
        let key = t.key.clone();
        async move {
            app.get(&format!("/v1/customers/{org}/subscription"), &key)
                .await
                .body["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    // Half-way through January (31 days).
    let r = app
        .post(
            "/v1/test_clock/advance",
            &t.key,
            json!({"to": "2027-01-16T12:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Ten seats: Big is cheaper, so by default it waits for the period's end.
    let ten = sub_of("ten").await;
    let r = app
        .post(
            &format!("/v1/subscriptions/{ten}/change"),
            &t.key,
            json!({"plan": "big"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["plan"], "small");
    assert_eq!(r.body["pending_change"]["plan"], "big");
    // Two seats: Big is dearer, so it starts now, prorated at two seats:
    //   credit −40.00 × ½ = −20.00, charge 60.00 × ½ = 30.00.
    let two = sub_of("two").await;
    let r = app
        .post(
            &format!("/v1/subscriptions/{two}/change"),
            &t.key,
            json!({"plan": "big"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["plan"], "big");
    let all = app.invoices(&t, "two").await;
    let change = &all[1];
    let amounts: Vec<String> = lines(change).into_iter().map(|l| l.3).collect();
    assert_eq!(amounts, ["-20.00", "30.00"]);
    assert_eq!(change["total"], "10.00");
}
