//! The seeds' pricing tables over time (test clocks): overage on renewal, proration, annual
//! renewal and scheduled downgrades.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{num, Tenant, TestApp};
use crate::seeds::seeded;

/// Moves a customer's live subscription to `plan` (an upgrade is charged now).
async fn change(app: &TestApp, t: &Tenant, customer: &str, body: Value) -> Value {
    let live = app
        .get(&format!("/v1/customers/{customer}/subscription"), &t.key)
        .await;
    assert_eq!(live.status, StatusCode::OK, "{:?}", live.body);
    let r = app
        .post(
            &format!(
                "/v1/subscriptions/{}/change",
                live.body["id"].as_str().unwrap()
            ),
            &t.key,
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

async fn latest_invoice(app: &TestApp, t: &Tenant, customer: &str) -> Value {
    let r = app
        .get(
            &format!("/v1/customers/{customer}/invoices?limit=1"),
            &t.key,
        )
        .await;
    r.body["data"][0].clone()
}

fn lines(inv: &Value) -> Vec<(String, Option<String>, String)> {
    inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap().to_string(),
                l["feature"].as_str().map(str::to_string),
                l["amount"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn usage(app: &TestApp, t: &Tenant, body: Value) -> crate::helpers::Resp {
    app.post("/v1/usage", &t.key, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_overage_is_capped_on_renewal_and_human_calls_bill_per_call() {
    let (app, t) = seeded("000_ai_coaching.toml").await;
    app.set_clock(&t, "2026-03-01T00:00:00Z").await;
    for (customer, plan) in [("life", "lifestyle"), ("grow", "growth")] {
        app.customer(&t, customer).await;
        let s = change(&app, &t, customer, json!({"plan": plan})).await;
        assert_eq!(s["current_period_end"], "2026-04-01T00:00:00Z");
    }
    // Lifestyle: 120 minutes, then $0.10 a minute up to $20 (320 minutes in all).
    let r = usage(
        &app,
        &t,
        json!({"customer": "life", "feature": "ai_voice_minutes", "quantity": 320}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = usage(
        &app,
        &t,
        json!({"customer": "life", "feature": "ai_voice_minutes", "quantity": 1}),
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYMENT_REQUIRED, "spend_cap_reached")
    );
    // A call that already happened is recorded (350 minutes in all); the charge stays capped.
    let r = usage(
        &app,
        &t,
        json!({"customer": "life", "feature": "ai_voice_minutes", "quantity": 30, "enforce": false}),
    )
    .await;
    assert_eq!(num(&r.body["used"]), "350");
    // Growth: 1 human call a month, then $25 a call.
    for _ in 0..2 {
        let r = usage(
            &app,
            &t,
            json!({"customer": "grow", "feature": "human_calls"}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let done = app.advance_clock(&t, "2026-04-01T02:00:00Z").await;
    assert_eq!(done["processed"]["renewals"], 2);
    let life = latest_invoice(&app, &t, "life").await;
    assert_eq!(life["billing_reason"], "subscription_cycle");
    assert_eq!(life["status"], "open");
    assert_eq!(
        lines(&life),
        vec![
            ("subscription".into(), None, "29.00".into()),
            (
                "overage".into(),
                Some("ai_voice_minutes".into()),
                "20.00".into()
            )
        ]
    );
    assert_eq!(life["total"], "49.00");
    let grow = latest_invoice(&app, &t, "grow").await;
    assert_eq!(
        lines(&grow),
        vec![
            ("subscription".into(), None, "79.00".into()),
            ("overage".into(), Some("human_calls".into()), "25.00".into())
        ]
    );
    let call_line = &grow["lines"][1];
    assert_eq!(num(&call_line["quantity"]), "1");
    assert_eq!(call_line["unit_amount"], "25.00");
    // April starts from zero.
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "life", "feature": "ai_voice_minutes"}),
        )
        .await;
    assert_eq!(num(&c.body["used"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_001_starter_to_premium_mid_month_prorates() {
    let (app, t) = seeded("001_interview_practice.toml").await;
    app.set_clock(&t, "2026-11-01T00:00:00Z").await;
    // New users start on Starter ($30), invoiced at once.
    app.customer(&t, "cand").await;
    let first = latest_invoice(&app, &t, "cand").await;
    assert_eq!(first["billing_reason"], "subscription_create");
    assert_eq!(
        lines(&first),
        vec![("subscription".into(), None, "30.00".into())]
    );
    app.advance_clock(&t, "2026-11-16T00:00:00Z").await;
    let s = change(&app, &t, "cand", json!({"plan": "premium"})).await;
    assert_eq!(s["plan"], "premium");
    let inv = latest_invoice(&app, &t, "cand").await;
    assert_eq!(
        lines(&inv),
        vec![
            ("proration".into(), None, "-15.00".into()),
            ("proration".into(), None, "49.50".into())
        ]
    );
    assert_eq!(inv["total"], "34.50");
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "cand", "feature": "advanced_analytics"}),
        )
        .await;
    assert_eq!(c.body["allowed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_annual_standard_renews_after_a_year_with_storage_overage() {
    let (app, t) = seeded("002_life_twin.toml").await;
    app.set_clock(&t, "2026-02-10T12:00:00Z").await;
    app.customer(&t, "fam").await;
    let s = change(
        &app,
        &t,
        "fam",
        json!({"plan": "standard", "interval": "year"}),
    )
    .await;
    assert_eq!(s["interval"], "year");
    assert_eq!(s["current_period_end"], "2027-02-10T12:00:00Z");
    let first = latest_invoice(&app, &t, "fam").await;
    assert_eq!(
        lines(&first),
        vec![("subscription".into(), None, "499.90".into())]
    );
    // Storage is a level: the highest reported counts (60 GB: 10 over at $0.10).
    for level in [30, 60, 45] {
        let r = usage(
            &app,
            &t,
            json!({"customer": "fam", "feature": "storage_gb", "quantity": level}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let done = app.advance_clock(&t, "2026-12-31T00:00:00Z").await;
    assert_eq!(
        done["processed"]["renewals"], 0,
        "no renewal within the year"
    );
    let done = app.advance_clock(&t, "2027-02-10T14:00:00Z").await;
    assert_eq!(done["processed"]["renewals"], 1);
    let renewal = latest_invoice(&app, &t, "fam").await;
    assert_eq!(renewal["period_start"], "2027-02-10T12:00:00Z");
    assert_eq!(renewal["period_end"], "2028-02-10T12:00:00Z");
    assert_eq!(
        lines(&renewal),
        vec![
            ("subscription".into(), None, "499.90".into()),
            ("overage".into(), Some("storage_gb".into()), "1.00".into())
        ]
    );
    assert_eq!(renewal["number"], "INV-000002");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_003_pro_to_free_downgrade_happens_at_period_end() {
    let (app, t) = seeded("003_transcription.toml").await;
    app.set_clock(&t, "2026-07-05T00:00:00Z").await;
    app.customer(&t, "pod").await;
    change(&app, &t, "pod", json!({"plan": "pro"})).await;
    app.advance_clock(&t, "2026-07-20T00:00:00Z").await;
    let s = change(&app, &t, "pod", json!({"plan": "free"})).await;
    assert_eq!(s["plan"], "pro", "not yet");
    assert_eq!(s["pending_change"]["plan"], "free");
    assert_eq!(s["pending_change"]["at"], "2026-08-05T00:00:00Z");
    let check = |size: i64| {
        let app = &app;
        let t = &t;
        async move {
            app.post(
                "/v1/check",
                &t.key,
                json!({"customer": "pod", "feature": "max_file_size_mb", "quantity": size}),
            )
            .await
            .body["allowed"]
                .clone()
        }
    };
    assert_eq!(check(200).await, true, "Pro's 200 MB until period end");
    let done = app.advance_clock(&t, "2026-08-05T00:00:01Z").await;
    assert_eq!(done["processed"]["scheduled_changes"], 1);
    assert_eq!(check(200).await, false, "Free's 50 MB from then on");
    assert_eq!(check(50).await, true);
    let s = app.get("/v1/customers/pod/subscription", &t.key).await;
    assert_eq!(s.body["plan"], "free");
    assert!(s.body["pending_change"].is_null());
}

/// Seed 002 end to end: an organisation on Enterprise (a base fee plus volume-tiered seats,
/// annual, net 30) whose members come and go, and a Standard customer over its storage and API
/// allowances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_enterprise_seats_and_standard_overage_through_a_year() {
    let (app, t) = seeded("002_life_twin.toml").await;
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;

    // Acme: 12 members, net 30, on the Free default until it moves to Enterprise yearly.
    let r = app
        .put("/v1/customers/acme", &t.key, json!({"net_days": 30}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    for m in 1..=12 {
        let r = app
            .put(
                &format!("/v1/customers/acme/members/user_{m:02}"),
                &t.key,
                json!({"role": if m == 1 { "owner" } else { "member" }}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    change(
        &app,
        &t,
        "acme",
        json!({"plan": "enterprise", "interval": "year", "when": "now"}),
    )
    .await;
    // A new interval starts a new period: 2027-01-01 to 2028-01-01 (365 days), in advance:
    //   base                              10,000.00
    //   12 seats, volume tier 11-50 at 480.00: 12 × 480.00 = 5,760.00
    //   total                             15,760.00, due in 30 days.
    let start = latest_invoice(&app, &t, "acme").await;
    assert_eq!(
        lines(&start),
        [
            ("subscription".to_string(), None, "10000.00".to_string()),
            ("seat".to_string(), None, "5760.00".to_string()),
        ]
    );
    assert_eq!(start["total"], "15760.00");
    assert_eq!(start["amount_due"], "15760.00");
    assert_eq!(start["due_date"], "2027-01-31T00:00:00Z");
    let r = app
        .post(
            &format!("/v1/invoices/{}/pay", start["id"].as_str().unwrap()),
            &t.key,
            json!({"paid_out_of_band": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // 2027-05-27: day 146 of 365, so 219/365 = 0.6 of the year is left. Two members join:
    //   12 → 13: (13 − 12) × 480.00 × 0.6 = 288.00
    //   13 → 14: (14 − 13) × 480.00 × 0.6 = 288.00
    app.advance_clock(&t, "2027-05-27T00:00:00Z").await;
    for m in ["user_13", "user_14"] {
        let r = app
            .put(
                &format!("/v1/customers/acme/members/{m}"),
                &t.key,
                json!({"role": "member"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    // 2027-10-20: day 292, so 73/365 = 0.2 is left. One leaves:
    //   14 → 13: −480.00 × 0.2 = −96.00
    app.advance_clock(&t, "2027-10-20T00:00:00Z").await;
    let r = app
        .delete("/v1/customers/acme/members/user_07", &t.key)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let upcoming = app.get("/v1/customers/acme/upcoming_invoice", &t.key).await;
    assert_eq!(
        lines(&upcoming.body),
        [
            ("seat".to_string(), None, "288.00".to_string()),
            ("seat".to_string(), None, "288.00".to_string()),
            ("seat".to_string(), None, "-96.00".to_string()),
            ("subscription".to_string(), None, "10000.00".to_string()),
            ("seat".to_string(), None, "6240.00".to_string()),
        ]
    );

    // The renewal, 2028-01-01, finalized after the grace hour: the new year in advance at 13
    // seats (13 × 480.00 = 6,240.00) plus the three changes (288 + 288 − 96 = 480.00):
    //   10,000.00 + 6,240.00 + 480.00 = 16,720.00, due 2028-01-31.
    app.advance_clock(&t, "2028-01-01T02:00:00Z").await;
    let renewal = latest_invoice(&app, &t, "acme").await;
    assert_eq!(renewal["billing_reason"], "subscription_cycle");
    assert_eq!(
        lines(&renewal),
        [
            ("subscription".to_string(), None, "10000.00".to_string()),
            ("seat".to_string(), None, "6240.00".to_string()),
            ("seat".to_string(), None, "288.00".to_string()),
            ("seat".to_string(), None, "288.00".to_string()),
            ("seat".to_string(), None, "-96.00".to_string()),
        ]
    );
    assert_eq!(renewal["total"], "16720.00");
    assert_eq!(renewal["status"], "open");
    // Finalized when the grace hour ended (01:00), due 30 days later.
    assert_eq!(renewal["due_date"], "2028-01-31T01:00:00Z");

    // The subscription history MRR is computed from: each change with its business time.
    let history = tollgate::testing::stored::subscription_history(&app.db, &t.tid(), "acme")
        .await
        .unwrap();
    let steps: Vec<(&str, &str, &str, String)> = history
        .iter()
        .map(|h| {
            (
                h.event.as_str(),
                h.plan_key.as_str(),
                h.interval.as_str(),
                h.at.to_rfc3339(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (
                "created",
                "free",
                "month",
                "2027-01-01T00:00:00+00:00".to_string()
            ),
            (
                "plan_changed",
                "enterprise",
                "year",
                "2027-01-01T00:00:00+00:00".to_string()
            ),
            (
                "renewed",
                "enterprise",
                "year",
                "2028-01-01T00:00:00+00:00".to_string()
            ),
        ]
    );
}

/// Seed 002's Standard plan: $49.99 a month, 50 GB of storage (a level) with $0.10 per GB over,
/// 10,000 API calls a month with $0.01 per call over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_standard_storage_and_api_overage_on_renewal() {
    let (app, t) = seeded("002_life_twin.toml").await;
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;
    app.customer(&t, "solo").await;
    change(&app, &t, "solo", json!({"plan": "standard", "when": "now"})).await;
    // From Free at the very start of the month: all of January at 49.99.
    let first = latest_invoice(&app, &t, "solo").await;
    assert_eq!(first["total"], "49.99");
    app.advance_clock(&t, "2027-01-20T00:00:00Z").await;
    for (feature, quantity) in [
        ("storage_gb", json!(63.4)),
        ("storage_gb", json!(41)),
        ("api_calls", json!(10250)),
    ] {
        let r = usage(
            &app,
            &t,
            json!({"customer": "solo", "feature": feature, "quantity": quantity}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    // February 1, after the grace hour:
    //   Standard (monthly)                                49.99
    //   storage: peak 63.4 GB, 13.4 over → 14 GB × 0.10    1.40
    //   API calls: 10,250, 250 over × 0.01                 2.50
    //   total                                             53.89
    app.advance_clock(&t, "2027-02-01T02:00:00Z").await;
    let renewal = latest_invoice(&app, &t, "solo").await;
    assert_eq!(renewal["status"], "open", "{renewal:?}");
    let mut got = lines(&renewal);
    got.sort();
    assert_eq!(
        got,
        [
            (
                "overage".to_string(),
                Some("api_calls".to_string()),
                "2.50".to_string()
            ),
            (
                "overage".to_string(),
                Some("storage_gb".to_string()),
                "1.40".to_string()
            ),
            ("subscription".to_string(), None, "49.99".to_string()),
        ]
    );
    assert_eq!(renewal["total"], "53.89");
}

/// Seed 002's Enterprise package end to end (SPEC §15): an organisation on a negotiated
/// $12,000 a month with graduated seats, the Advanced Analytics add-on attached mid-period,
/// the white-label setup as a one-time add-on, ten hours of custom development as invoice
/// items, and another customer on Standard yearly with the 10% annual-prepay coupon; all
/// net 30. A January period is 31 days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_enterprise_package_negotiated_with_addons_charges_and_a_coupon() {
    let (app, t) = seeded("002_life_twin.toml").await;
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;
    for c in ["acme", "beta"] {
        let r = app
            .put(
                &format!("/v1/customers/{c}"),
                &t.key,
                json!({"net_days": 30}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    for m in 1..=12 {
        let r = app
            .put(
                &format!("/v1/customers/acme/members/user_{m:02}"),
                &t.key,
                json!({"role": "member"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    // Acme leaves the Free default for Enterprise monthly at its negotiated price: $12,000
    // and graduated seats, the first 10 at $40 and the rest at $30. In advance:
    //   12,000.00 + 10 × 40.00 + 2 × 30.00 = 12,460.00.
    let live = app.get("/v1/customers/acme/subscription", &t.key).await;
    let sub = live.body["id"].as_str().unwrap().to_string();
    let negotiated = json!([
        {"interval": "month", "amount": "12000", "currency": "usd"},
        {"interval": "month", "per_seat": true, "currency": "usd", "tiers_mode": "graduated",
         "tiers": [{"up_to": 10, "unit_amount": "40"}, {"up_to": null, "unit_amount": "30"}]}
    ]);
    let s = change(
        &app,
        &t,
        "acme",
        json!({"plan": "enterprise", "interval": "month", "when": "now",
               "price_overrides": negotiated}),
    )
    .await;
    assert_eq!(s["price_overrides"][0]["amount"], "12000.00");
    let start = latest_invoice(&app, &t, "acme").await;
    assert_eq!(start["total"], "12460.00", "{start}");
    assert_eq!(start["due_date"], "2027-01-31T00:00:00Z");

    // 2027-01-11: 21 of 31 days left. Advanced Analytics, $2,000 a month:
    //   2,000 × 21 / 31 = 1,354.8387… → 1,354.84.
    app.advance_clock(&t, "2027-01-11T00:00:00Z").await;
    let check = |feature: &'static str| {
        let (app, key) = (&app, t.key.clone());
        async move {
            app.post(
                "/v1/check",
                &key,
                json!({"customer": "acme", "feature": feature}),
            )
            .await
            .body
        }
    };
    assert_eq!(check("advanced_analytics").await["reason"], "not_in_plan");
    let r = app
        .post(
            &format!("/v1/subscriptions/{sub}/addons"),
            &t.key,
            json!({"addon": "advanced_analytics"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(check("advanced_analytics").await["allowed"], true);
    let analytics = latest_invoice(&app, &t, "acme").await;
    assert_eq!(
        lines(&analytics),
        [("addon".to_string(), None, "1354.84".to_string())]
    );
    // The white-label setup, once: 15,000.00 now, due in 30 days.
    let r = app
        .post(
            &format!("/v1/subscriptions/{sub}/addons"),
            &t.key,
            json!({"addon": "white_label_setup"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let setup = latest_invoice(&app, &t, "acme").await;
    assert_eq!(setup["total"], "15000.00");
    assert_eq!(setup["due_date"], "2027-02-10T00:00:00Z");
    // Ten hours of custom development at $150, pending until the next invoice: 1,500.00.
    let r = app
        .post(
            "/v1/customers/acme/invoice_items",
            &t.key,
            json!({"description": "Custom development (hours)", "unit_amount": "150",
                   "quantity": 10}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["amount"], "1500.00");

    // Beta takes ANNUAL10 on the Free default, then moves to Standard yearly: the upgrade's
    // invoice is discounted: 499.90 − 10% (49.99) = 449.91.
    let live = app.get("/v1/customers/beta/subscription", &t.key).await;
    let r = app
        .post(
            &format!(
                "/v1/subscriptions/{}/discount",
                live.body["id"].as_str().unwrap()
            ),
            &t.key,
            json!({"coupon": "ANNUAL10"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    change(
        &app,
        &t,
        "beta",
        json!({"plan": "standard", "interval": "year", "when": "now"}),
    )
    .await;
    let beta = latest_invoice(&app, &t, "beta").await;
    assert_eq!(
        lines(&beta),
        [
            ("subscription".to_string(), None, "499.90".to_string()),
            ("discount".to_string(), None, "-49.99".to_string()),
        ]
    );
    assert_eq!(beta["total"], "449.91");
    assert_eq!(beta["due_date"], "2027-02-10T00:00:00Z");

    // MRR: Acme 12,460 + 2,000; Beta 499.90 / 12 × 0.9 = 37.4925: 14,497.4925 → 14,497.49.
    let a = app.get("/v1/analytics/summary", &t.key).await;
    assert_eq!(a.body["mrr"], "14497.49", "{:?}", a.body);

    // The renewal, 2027-02-01 (finalized after the grace hour): the negotiated price, the
    // add-on in advance and the pending hours:
    //   12,460.00 + 2,000.00 + 1,500.00 = 15,960.00, due 30 days after finalization.
    app.advance_clock(&t, "2027-02-01T02:00:00Z").await;
    let renewal = latest_invoice(&app, &t, "acme").await;
    assert_eq!(renewal["billing_reason"], "subscription_cycle");
    assert_eq!(
        lines(&renewal),
        [
            ("subscription".to_string(), None, "12000.00".to_string()),
            ("seat".to_string(), None, "400.00".to_string()),
            ("seat".to_string(), None, "60.00".to_string()),
            ("addon".to_string(), None, "2000.00".to_string()),
            ("charge".to_string(), None, "1500.00".to_string()),
        ]
    );
    assert_eq!(renewal["total"], "15960.00");
    assert_eq!(renewal["due_date"], "2027-03-03T01:00:00Z");
    // Every invoice of Acme, to the cent.
    let totals: Vec<String> = app
        .invoices(&t, "acme")
        .await
        .iter()
        .map(|i| i["total"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(totals, ["12460.00", "1354.84", "15000.00", "15960.00"]);
}
