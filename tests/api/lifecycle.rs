//! The subscription lifecycle, invoices and test clocks, over HTTP.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{num, spawn_app, Tenant, TestApp};

/// A test tenant with a metered feature `mins` and plans `free` (10 mins; not the default),
/// `pro` ($30/month, 100 mins + $0.50 per 10 mins over, capped at $20) and `max` ($99/month,
/// 1000 mins), its clock frozen at `at`.
async fn billing_tenant(app: &TestApp, at: &str) -> Tenant {
    let t = app.tenant("test").await;
    let f = app
        .post(
            "/v1/features",
            &t.key,
            json!({"key": "mins", "name": "Minutes", "type": "metered", "unit": "minutes"}),
        )
        .await;
    assert_eq!(f.status, StatusCode::CREATED, "{:?}", f.body);
    for plan in [
        json!({"key": "free", "name": "Free",
               "entitlements": [{"feature": "mins", "limit": 10}]}),
        json!({"key": "pro", "name": "Pro",
               "prices": [{"interval": "month", "amount": "30.00", "currency": "usd"},
                          {"interval": "year", "amount": "300.00", "currency": "usd"}],
               "entitlements": [{"feature": "mins", "limit": 100,
                   "overage": {"unit_amount": "0.50", "per_units": 10, "cap_amount": "20.00"}}]}),
        json!({"key": "max", "name": "Max",
               "prices": [{"interval": "month", "amount": "99.00", "currency": "usd"}],
               "entitlements": [{"feature": "mins", "limit": 1000}]}),
    ] {
        let r = app.post("/v1/plans", &t.key, plan).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    app.set_clock(&t, at).await;
    t
}

async fn advance(app: &TestApp, t: &Tenant, to: &str) -> Value {
    let body = app.advance_clock(t, to).await;
    assert_eq!(body["now"], to);
    body
}

async fn subscribe(app: &TestApp, t: &Tenant, customer: &str, body: Value) -> Value {
    app.customer(t, customer).await;
    let mut body = body;
    body["customer"] = json!(customer);
    let r = app.post("/v1/subscriptions", &t.key, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body
}

async fn make_free_the_default(app: &TestApp, t: &Tenant) {
    let r = app
        .patch("/v1/tenant", &t.key, json!({"default_plan": "free"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

fn amounts(inv: &Value) -> Vec<(String, String)> {
    inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap().to_string(),
                l["amount"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_of_renewals_with_month_end_clamping_and_gapless_numbers() {
    let app = spawn_app().await;
    let t = billing_tenant(&app, "2026-01-31T10:00:00Z").await;
    let sub = subscribe(&app, &t, "u1", json!({"plan": "pro"})).await;
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["current_period_end"], "2026-02-28T10:00:00Z");
    let first = app.invoices(&t, "u1").await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["number"], "INV-000001");
    assert_eq!(first[0]["status"], "open");
    assert_eq!(first[0]["billing_reason"], "subscription_create");
    assert_eq!(first[0]["total"], "30.00");

    let done = advance(&app, &t, "2027-01-31T12:00:00Z").await;
    assert_eq!(done["processed"]["renewals"], 12);
    assert_eq!(done["processed"]["invoices_finalized"], 12);
    let all = app.invoices(&t, "u1").await;
    assert_eq!(all.len(), 13);
    let numbers: Vec<&str> = all.iter().map(|i| i["number"].as_str().unwrap()).collect();
    let expected: Vec<String> = (1..=13).map(|n| format!("INV-{n:06}")).collect();
    assert_eq!(numbers, expected, "gapless, in order");
    // Renewal dates: the 31st, clamped to the end of shorter months, and back.
    let starts: Vec<&str> = all[1..]
        .iter()
        .map(|i| i["period_start"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        vec![
            "2026-02-28T10:00:00Z",
            "2026-03-31T10:00:00Z",
            "2026-04-30T10:00:00Z",
            "2026-05-31T10:00:00Z",
            "2026-06-30T10:00:00Z",
            "2026-07-31T10:00:00Z",
            "2026-08-31T10:00:00Z",
            "2026-09-30T10:00:00Z",
            "2026-10-31T10:00:00Z",
            "2026-11-30T10:00:00Z",
            "2026-12-31T10:00:00Z",
            "2027-01-31T10:00:00Z",
        ]
    );
    for inv in &all[1..] {
        assert_eq!(inv["billing_reason"], "subscription_cycle");
        assert_eq!(inv["status"], "open", "finalized after the grace period");
        assert_eq!(amounts(inv), vec![("subscription".into(), "30.00".into())]);
        assert_eq!(inv["due_date"], inv["finalized_at"], "net 0");
    }
    let s = app.get("/v1/customers/u1/subscription", &t.key).await;
    assert_eq!(s.body["current_period_start"], "2027-01-31T10:00:00Z");
    assert_eq!(s.body["current_period_end"], "2027-02-28T10:00:00Z");

    let clock = app.get("/v1/test_clock", &t.key).await;
    assert_eq!(clock.body["now"], "2027-01-31T12:00:00Z");
    // Backwards is a 400; live tenants have no test clock.
    let r = app
        .post(
            "/v1/test_clock/advance",
            &t.key,
            json!({"to": "2027-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "clock_backwards")
    );
    let live = app.tenant("live").await;
    let r = app.get("/v1/test_clock", &live.key).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post(
            "/v1/test_clock/advance",
            &live.key,
            json!({"to": "2030-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_at_half_period_prorates_exactly_and_downgrade_waits_for_period_end() {
    let app = spawn_app().await;
    // November has 30 days: the 16th at 00:00 is exactly half way.
    let t = billing_tenant(&app, "2026-11-01T00:00:00Z").await;
    let sub = subscribe(&app, &t, "u1", json!({"plan": "pro"})).await;
    let id = sub["id"].as_str().unwrap().to_string();
    // 150 minutes used before the change: they stay counted.
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "mins", "quantity": 150}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    advance(&app, &t, "2026-11-16T00:00:00Z").await;

    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/change"),
            &t.key,
            json!({"plan": "max"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["plan"], "max");
    assert_eq!(r.body["current_period_start"], "2026-11-01T00:00:00Z");
    assert_eq!(r.body["current_period_end"], "2026-12-01T00:00:00Z");
    let all = app.invoices(&t, "u1").await;
    let proration = all.last().unwrap();
    assert_eq!(proration["billing_reason"], "subscription_update");
    assert_eq!(proration["status"], "open");
    assert_eq!(
        amounts(proration),
        vec![
            ("proration".into(), "-15.00".into()),
            ("proration".into(), "49.50".into())
        ]
    );
    assert_eq!(proration["total"], "34.50");
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "mins"}),
        )
        .await;
    assert_eq!(num(&c.body["used"]), "150", "usage stays counted");
    assert_eq!(num(&c.body["limit"]), "1000", "the new plan's limit");

    // The same plan and version again: 409.
    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/change"),
            &t.key,
            json!({"plan": "max"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "same_plan"));

    // A downgrade is scheduled for period end.
    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/change"),
            &t.key,
            json!({"plan": "pro"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["plan"], "max");
    assert_eq!(r.body["pending_change"]["plan"], "pro");
    assert_eq!(r.body["pending_change"]["at"], "2026-12-01T00:00:00Z");
    let before = app.invoices(&t, "u1").await.len();
    let done = advance(&app, &t, "2026-12-01T02:00:00Z").await;
    assert_eq!(done["processed"]["scheduled_changes"], 1);
    let s = app.get(&format!("/v1/subscriptions/{id}"), &t.key).await;
    assert_eq!(s.body["plan"], "pro");
    assert!(s.body["pending_change"].is_null());
    let all = app.invoices(&t, "u1").await;
    assert_eq!(all.len(), before + 1);
    // The next period at the new price; the ended period was on max (no overage prices).
    assert_eq!(
        amounts(all.last().unwrap()),
        vec![("subscription".into(), "30.00".into())]
    );

    // Moving to a plan's newest version.
    let r = app
        .put(
            "/v1/plans/pro",
            &t.key,
            json!({"name": "Pro", "prices": [{"interval": "month", "amount": "30.00", "currency": "usd"}],
                   "entitlements": [{"feature": "mins", "limit": 200}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/change"),
            &t.key,
            json!({"plan": "pro", "version": "latest"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["plan_version"], 2);
    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/change"),
            &t.key,
            json!({"plan": "pro", "version": "latest"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "same_plan"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trial_then_conversion_invoices_at_trial_end() {
    let app = spawn_app().await;
    let t = billing_tenant(&app, "2026-03-10T08:00:00Z").await;
    let sub = subscribe(&app, &t, "u1", json!({"plan": "pro", "trial_days": 14})).await;
    assert_eq!(sub["status"], "trialing");
    assert_eq!(sub["trial_end"], "2026-03-24T08:00:00Z");
    assert_eq!(sub["current_period_end"], "2026-03-24T08:00:00Z");
    assert!(
        app.invoices(&t, "u1").await.is_empty(),
        "no invoice while trialing"
    );
    let done = advance(&app, &t, "2026-03-24T08:00:00Z").await;
    assert_eq!(done["processed"]["trial_ends"], 1);
    let s = app
        .get(
            &format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap()),
            &t.key,
        )
        .await;
    assert_eq!(s.body["status"], "active");
    assert_eq!(s.body["current_period_start"], "2026-03-24T08:00:00Z");
    assert_eq!(s.body["current_period_end"], "2026-04-24T08:00:00Z");
    let all = app.invoices(&t, "u1").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["billing_reason"], "subscription_create");
    assert_eq!(all[0]["status"], "open");
    assert_eq!(all[0]["total"], "30.00");
    assert_eq!(all[0]["period_start"], "2026-03-24T08:00:00Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_at_period_end_reactivate_and_fall_back_to_the_default_plan() {
    let app = spawn_app().await;
    let t = billing_tenant(&app, "2026-05-01T00:00:00Z").await;
    let sub = subscribe(&app, &t, "u1", json!({"plan": "pro"})).await;
    make_free_the_default(&app, &t).await;
    let id = sub["id"].as_str().unwrap().to_string();
    let cancel = |body: Value| {
        let app = &app;
        let t = &t;
        let id = id.clone();
        async move {
            app.post(&format!("/v1/subscriptions/{id}/cancel"), &t.key, body)
                .await
        }
    };
    let r = cancel(json!({"at_period_end": true})).await;
    assert_eq!(r.body["cancel_at_period_end"], true);
    assert_eq!(r.body["status"], "active");
    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/reactivate"),
            &t.key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["cancel_at_period_end"], false);
    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/reactivate"),
            &t.key,
            json!({}),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "not_canceled"));
    // No body: at period end by default.
    let r = app
        .request(
            reqwest::Method::POST,
            &format!("/v1/subscriptions/{id}/cancel"),
            Some(&t.key),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["cancel_at_period_end"], true);

    let done = advance(&app, &t, "2026-06-01T00:00:00Z").await;
    assert_eq!(done["processed"]["cancellations"], 1);
    let old = app.get(&format!("/v1/subscriptions/{id}"), &t.key).await;
    assert_eq!(old.body["status"], "canceled");
    assert_eq!(old.body["ended_at"], "2026-06-01T00:00:00Z");
    let now = app.get("/v1/customers/u1/subscription", &t.key).await;
    assert_eq!(now.body["plan"], "free");
    assert_ne!(now.body["id"], old.body["id"]);
    assert_eq!(now.body["current_period_start"], "2026-06-01T00:00:00Z");
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "mins"}),
        )
        .await;
    assert_eq!(num(&c.body["limit"]), "10");
    // Only the first invoice: no renewal was billed, and the free plan bills nothing.
    assert_eq!(app.invoices(&t, "u1").await.len(), 1);
    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/reactivate"),
            &t.key,
            json!({}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "subscription_ended")
    );

    // Cancel now: ends at once, and the customer is on the default plan again.
    // (A new customer starts on the default plan; upgrading is charged at once.)
    app.customer(&t, "u2").await;
    let free = app.get("/v1/customers/u2/subscription", &t.key).await;
    assert_eq!(free.body["plan"], "free");
    let id2 = free.body["id"].as_str().unwrap();
    let r = app
        .post(
            &format!("/v1/subscriptions/{id2}/change"),
            &t.key,
            json!({"plan": "pro"}),
        )
        .await;
    assert_eq!(r.body["plan"], "pro");
    let upgrade = app.invoices(&t, "u2").await;
    assert_eq!(upgrade.len(), 1);
    assert_eq!(
        amounts(&upgrade[0]),
        vec![("proration".into(), "30.00".into())]
    );
    advance(&app, &t, "2026-06-10T00:00:00Z").await;
    let r = app
        .post(
            &format!("/v1/subscriptions/{id2}/cancel"),
            &t.key,
            json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(r.body["status"], "canceled");
    assert_eq!(r.body["ended_at"], "2026-06-10T00:00:00Z");
    let now = app.get("/v1/customers/u2/subscription", &t.key).await;
    assert_eq!(now.body["plan"], "free");
    let r = app
        .post(
            &format!("/v1/subscriptions/{id2}/cancel"),
            &t.key,
            json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "subscription_ended")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overage_is_invoiced_on_renewal_and_late_events_stop_at_finalization() {
    let app = spawn_app().await;
    let t = billing_tenant(&app, "2026-04-01T00:00:00Z").await;
    app.patch("/v1/tenant", &t.key, json!({"invoice_grace_minutes": 60}))
        .await;
    subscribe(&app, &t, "u1", json!({"plan": "pro"})).await;
    let usage = |q: Value, ts: Option<&str>| {
        let mut body = json!({"customer": "u1", "feature": "mins", "quantity": q});
        if let Some(ts) = ts {
            body["timestamp"] = json!(ts);
        }
        let app = &app;
        let t = &t;
        async move { app.post("/v1/usage", &t.key, body).await }
    };
    assert_eq!(usage(json!(125), None).await.status, StatusCode::OK);
    // The upcoming invoice previews next month's fee and the overage so far:
    // 25 over → 3 packages of 10 → $1.50.
    let up = app.get("/v1/customers/u1/upcoming_invoice", &t.key).await;
    assert_eq!(up.status, StatusCode::OK, "{:?}", up.body);
    assert_eq!(
        amounts(&up.body),
        vec![
            ("subscription".into(), "30.00".into()),
            ("overage".into(), "1.50".into())
        ]
    );
    assert_eq!(up.body["total"], "31.50");

    // Period ends: a draft with the overage so far, open to late usage for an hour.
    advance(&app, &t, "2026-05-01T00:30:00Z").await;
    let all = app.invoices(&t, "u1").await;
    let renewal = all.last().unwrap().clone();
    assert_eq!(renewal["status"], "draft");
    assert_eq!(renewal["finalizes_at"], "2026-05-01T01:00:00Z");
    assert_eq!(
        amounts(&renewal),
        vec![
            ("subscription".into(), "30.00".into()),
            ("overage".into(), "1.50".into())
        ]
    );
    // A late event for April, reported during the grace period, still counts and lands on it.
    let r = usage(json!(20), Some("2026-04-30T23:00:00Z")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(num(&r.body["used"]), "145");
    advance(&app, &t, "2026-05-01T01:00:00Z").await;
    let inv = app
        .get(
            &format!("/v1/invoices/{}", renewal["id"].as_str().unwrap()),
            &t.key,
        )
        .await;
    assert_eq!(inv.body["status"], "open");
    // 45 over → 5 packages → $2.50.
    assert_eq!(
        amounts(&inv.body),
        vec![
            ("subscription".into(), "30.00".into()),
            ("overage".into(), "2.50".into())
        ]
    );
    assert_eq!(inv.body["total"], "32.50");
    assert_eq!(inv.body["amount_due"], "32.50");
    // Now April is closed.
    let r = usage(json!(1), Some("2026-04-30T23:30:00Z")).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "period_closed")
    );
    let r = usage(json!(1), None).await;
    assert_eq!(r.status, StatusCode::OK, "May is open");
    assert_eq!(num(&r.body["used"]), "1");

    // Pay out of band; paying again is a 409; a paid invoice cannot be voided.
    let id = renewal["id"].as_str().unwrap();
    let r = app
        .post(
            &format!("/v1/invoices/{id}/pay"),
            &t.key,
            json!({"paid_out_of_band": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "paid");
    assert_eq!(r.body["paid_at"], "2026-05-01T01:00:00Z");
    let r = app
        .post(
            &format!("/v1/invoices/{id}/pay"),
            &t.key,
            json!({"paid_out_of_band": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app
        .post(&format!("/v1/invoices/{id}/void"), &t.key, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // The first invoice is open: void it.
    let first = all[0]["id"].as_str().unwrap();
    let r = app
        .post(&format!("/v1/invoices/{first}/void"), &t.key, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "void");
    assert_eq!(
        r.body["number"], "INV-000001",
        "a void invoice keeps its number"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_pdf_parses_back_with_its_number_lines_and_totals() {
    let app = spawn_app().await;
    let t = billing_tenant(&app, "2026-04-01T00:00:00Z").await;
    app.put(
        "/v1/customers/acme",
        &t.key,
        json!({"name": "Acme Corp", "email": "billing@acme.test", "net_days": 30}),
    )
    .await;
    let r = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "acme", "plan": "pro"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let all = app.invoices(&t, "acme").await;
    let inv = all.last().unwrap();
    assert_eq!(inv["due_date"], "2026-05-01T00:00:00Z", "net 30");
    let id = inv["id"].as_str().unwrap();
    let resp = app
        .client
        .get(format!("{}/v1/invoices/{id}/pdf", app.base))
        .bearer_auth(&t.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/pdf");
    let bytes = resp.bytes().await.unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    let doc = lopdf::Document::load_mem(&bytes).expect("a valid PDF");
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    assert_eq!(pages.len(), 1);
    let text = doc.extract_text(&pages).unwrap();
    let number = inv["number"].as_str().unwrap();
    for needle in [
        number,
        "acme",
        "Acme Corp",
        "billing@acme.test",
        "Pro (monthly)",
        "30.00",
        "2026-05-01",
        inv["total"].as_str().unwrap(),
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text:?}");
    }
    let r = app.get("/v1/invoices/in_nope/pdf", &t.key).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_due_runners_create_each_invoice_once() {
    let app = Arc::new(spawn_app().await);
    let t = billing_tenant(&app, "2026-01-15T00:00:00Z").await;
    for i in 0..10 {
        subscribe(&app, &t, &format!("c{i}"), json!({"plan": "pro"})).await;
    }
    // Start invoices: 10.
    let numbering = |app: Arc<TestApp>, tenant: tollgate::ids::TenantId| async move {
        tollgate::testing::stored::invoice_numbering(&app.db, &tenant)
            .await
            .unwrap()
    };
    let before = numbering(app.clone(), t.tid()).await;
    assert_eq!(before.invoices, 10);
    // Two runners at once over the same due work (three months for ten customers).
    let until = chrono::DateTime::parse_from_rfc3339("2026-04-15T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let run = |db: sqlx::PgPool, tenant: tollgate::ids::TenantId| async move {
        tollgate::testing::run_due_for_tenant(&db, &tenant, until)
            .await
            .unwrap()
    };
    let (a, b) = tokio::join!(
        tokio::spawn(run(app.db.clone(), t.tid())),
        tokio::spawn(run(app.db.clone(), t.tid()))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.renewals + b.renewals, 30, "{a:?} {b:?}");
    assert_eq!(a.invoices_finalized + b.invoices_finalized, 30);
    let after = numbering(app.clone(), t.tid()).await;
    assert_eq!(after.invoices, 40);
    assert_eq!(
        (after.max_number, after.distinct_numbers),
        (Some(40), 40),
        "gapless and unique"
    );
    assert_eq!(after.periods_invoiced_twice, 0, "no period invoiced twice");
    // Two concurrent advances over HTTP then find nothing left twice.
    let (r1, r2) = tokio::join!(
        app.post(
            "/v1/test_clock/advance",
            &t.key,
            json!({"to": "2026-05-15T12:00:00Z"})
        ),
        app.post(
            "/v1/test_clock/advance",
            &t.key,
            json!({"to": "2026-05-15T12:00:00Z"})
        )
    );
    assert_eq!((r1.status, r2.status), (StatusCode::OK, StatusCode::OK));
    let renewed = r1.body["processed"]["renewals"].as_u64().unwrap()
        + r2.body["processed"]["renewals"].as_u64().unwrap();
    assert_eq!(renewed, 10);
    let last = numbering(app.clone(), t.tid()).await;
    assert_eq!(last.invoices, 50);
    assert_eq!((last.max_number, last.distinct_numbers), (Some(50), 50));
    assert_eq!(last.periods_invoiced_twice, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_renews_on_real_time_and_leaves_frozen_test_clocks_alone() {
    let app = spawn_app().await;
    // A frozen test tenant whose subscription is due by real time but not by its own clock.
    let frozen = billing_tenant(&app, "2026-01-01T00:00:00Z").await;
    subscribe(&app, &frozen, "f1", json!({"plan": "pro"})).await;
    // A live tenant on real time, whose subscription's period ended yesterday.
    let live = app.tenant("live").await;
    app.post(
        "/v1/features",
        &live.key,
        json!({"key": "mins", "name": "Minutes", "type": "metered"}),
    )
    .await;
    app.post(
        "/v1/plans",
        &live.key,
        json!({"key": "pro", "name": "Pro",
               "prices": [{"interval": "month", "amount": "30.00", "currency": "usd"}],
               "entitlements": [{"feature": "mins", "limit": 100}]}),
    )
    .await;
    let sub = subscribe(&app, &live, "l1", json!({"plan": "pro"})).await;
    // Its first period began a month and a day ago (so it has ended).
    let start = chrono::Utc::now() - chrono::Months::new(1) - chrono::Duration::days(1);
    let moved = tollgate::testing::stored::set_period(
        &app.db,
        &live.tid(),
        &sub["id"].as_str().unwrap().parse().unwrap(),
        start,
        start + chrono::Months::new(1),
    )
    .await
    .unwrap();
    assert_eq!(moved, 1);
    let done = tollgate::testing::run_due(&app.db).await.unwrap();
    assert_eq!(done.renewals, 1, "{done:?}");
    assert_eq!(done.invoices_finalized, 1, "its grace period is over too");
    let again = tollgate::testing::run_due(&app.db).await.unwrap();
    assert_eq!(again.total(), 0);
    let s = app
        .get(
            &format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap()),
            &live.key,
        )
        .await;
    let end: chrono::DateTime<chrono::Utc> = s.body["current_period_end"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(end > chrono::Utc::now() + chrono::Duration::days(25));
    assert_eq!(app.invoices(&live, "l1").await.len(), 2);
    assert_eq!(app.invoices(&frozen, "f1").await.len(), 1, "untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_overrides_the_default_timing_of_a_change() {
    let app = spawn_app().await;
    let t = billing_tenant(&app, "2026-11-01T00:00:00Z").await;
    let sub = subscribe(&app, &t, "u1", json!({"plan": "max"})).await;
    let id = sub["id"].as_str().unwrap().to_string();
    advance(&app, &t, "2026-11-16T00:00:00Z").await;
    // A downgrade now: credit for half of Max, charge for half of Pro.
    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/change"),
            &t.key,
            json!({"plan": "pro", "when": "now"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["plan"], "pro");
    let inv = app.invoices(&t, "u1").await.pop().unwrap();
    assert_eq!(
        amounts(&inv),
        vec![
            ("proration".into(), "-49.50".into()),
            ("proration".into(), "15.00".into())
        ]
    );
    assert_eq!(inv["total"], "-34.50");
    assert_eq!(inv["amount_due"], "0.00");
    assert_eq!(inv["status"], "paid", "nothing to collect");
    // An upgrade at period end: scheduled, nothing invoiced now.
    let before = app.invoices(&t, "u1").await.len();
    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/change"),
            &t.key,
            json!({"plan": "max", "when": "period_end"}),
        )
        .await;
    assert_eq!(r.body["plan"], "pro");
    assert_eq!(r.body["pending_change"]["plan"], "max");
    assert_eq!(app.invoices(&t, "u1").await.len(), before);
    // Unknown plan, bad version, bad timing: clear 4xx, nothing changed.
    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/change"),
            &t.key,
            json!({"plan": "nope"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "plan_not_found")
    );
    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/change"),
            &t.key,
            json!({"plan": "max", "version": 7}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_version")
    );
    let r = app
        .post(
            &format!("/v1/subscriptions/{id}/change"),
            &t.key,
            json!({"plan": "max", "when": "tomorrow"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_field")
    );
    let r = app
        .post(
            "/v1/subscriptions/sub_nope/change",
            &t.key,
            json!({"plan": "max"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let s = app.get(&format!("/v1/subscriptions/{id}"), &t.key).await;
    assert_eq!(s.body["pending_change"]["plan"], "max");
}
