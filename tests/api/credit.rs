//! Credit: the balance a downgrade leaves, credit granted by hand, credit notes, and the
//! balance used by later invoices — always the sum of its transactions.

use std::str::FromStr;
use std::sync::Arc;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Tenant, TestApp};

async fn tenant(app: &TestApp) -> Tenant {
    let t = app.tenant("test").await;
    for plan in [
        json!({"key": "pro", "name": "Pro",
               "prices": [{"interval": "month", "amount": "30.00", "currency": "usd"}]}),
        json!({"key": "max", "name": "Max",
               "prices": [{"interval": "month", "amount": "99.00", "currency": "usd"}]}),
    ] {
        let r = app.post("/v1/plans", &t.key, plan).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;
    t
}

async fn subscribe(app: &TestApp, t: &Tenant, customer: &str, plan: &str) -> Value {
    app.customer(t, customer).await;
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

/// The customer's balance, checked to be the sum of its transactions; and the transactions
/// as `(type, amount)`, newest first.
async fn balance(app: &TestApp, t: &Tenant, customer: &str) -> (String, Vec<(String, String)>) {
    let c = app.get(&format!("/v1/customers/{customer}"), &t.key).await;
    let balance = c.body["credit_balance"].as_str().unwrap().to_string();
    let list = app
        .get(
            &format!("/v1/customers/{customer}/balance_transactions?limit=100"),
            &t.key,
        )
        .await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let rows: Vec<(String, String)> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap().to_string(),
                r["amount"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let sum: Decimal = rows
        .iter()
        .map(|(_, a)| Decimal::from_str(a).unwrap())
        .sum();
    assert_eq!(
        sum,
        Decimal::from_str(&balance).unwrap(),
        "the balance is the sum of its transactions"
    );
    (balance, rows)
}

fn pair(kind: &str, amount: &str) -> (String, String) {
    (kind.to_string(), amount.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_credit_is_kept_and_used_by_the_next_invoices() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    let sub = subscribe(&app, &t, "c1", "max").await;
    // Exactly half-way through January (15.5 of 31 days), down to Pro now:
    // credit -99.00 × ½ = -49.50, charge 30.00 × ½ = 15.00: total -34.50.
    app.advance_clock(&t, "2027-01-16T12:00:00Z").await;
    let r = app
        .post(
            &format!("/v1/subscriptions/{}/change", sub["id"].as_str().unwrap()),
            &t.key,
            json!({"plan": "pro", "when": "now"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let all = app.invoices(&t, "c1").await;
    let downgrade = &all[1];
    assert_eq!(downgrade["total"], "-34.50");
    assert_eq!(downgrade["amount_due"], "0.00");
    assert_eq!(downgrade["status"], "paid");
    assert_eq!(
        balance(&app, &t, "c1").await,
        ("34.50".to_string(), vec![pair("downgrade", "34.50")])
    );

    // February's renewal (30.00) uses 30.00 of it when it is finalized after the grace hour.
    app.advance_clock(&t, "2027-02-01T02:00:00Z").await;
    let all = app.invoices(&t, "c1").await;
    let renewal = &all[2];
    assert_eq!(renewal["total"], "30.00");
    assert_eq!(renewal["credit_applied"], "30.00");
    assert_eq!(renewal["amount_due"], "0.00");
    assert_eq!(renewal["status"], "paid");
    assert_eq!(
        balance(&app, &t, "c1").await,
        (
            "4.50".to_string(),
            vec![pair("applied", "-30.00"), pair("downgrade", "34.50")]
        )
    );
    // March: 4.50 left to use, 25.50 due.
    app.advance_clock(&t, "2027-03-01T02:00:00Z").await;
    let march = &app.invoices(&t, "c1").await[3];
    assert_eq!(march["credit_applied"], "4.50");
    assert_eq!(march["amount_due"], "25.50");
    assert_eq!(march["status"], "open");
    let (left, rows) = balance(&app, &t, "c1").await;
    assert_eq!(left, "0.00");
    assert_eq!(rows[0], pair("applied", "-4.50"));
    // Voiding it gives the credit back.
    let r = app
        .post(
            &format!("/v1/invoices/{}/void", march["id"].as_str().unwrap()),
            &t.key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let (left, rows) = balance(&app, &t, "c1").await;
    assert_eq!(left, "4.50");
    assert_eq!(rows[0], pair("applied", "4.50"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_granted_by_hand_is_checked_and_used() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    app.customer(&t, "c1").await;
    let r = app
        .post(
            "/v1/customers/c1/credits",
            &t.key,
            json!({"amount": "40.00", "description": "Goodwill"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["type"], "manual");
    assert_eq!(r.body["amount"], "40.00");
    assert_eq!(r.body["customer"], "c1");
    assert_eq!(r.body["description"], "Goodwill");
    assert!(r.body["id"].as_str().unwrap().starts_with("cbtxn_"));
    for (body, code) in [
        (json!({"amount": "0", "description": "x"}), "invalid_amount"),
        (
            json!({"amount": "-5.00", "description": "x"}),
            "invalid_amount",
        ),
        (
            json!({"amount": "1.001", "description": "x"}),
            "invalid_amount",
        ),
        (
            json!({"amount": "5.00", "description": " "}),
            "invalid_description",
        ),
        (json!({"amount": "5.00"}), "missing_field"),
    ] {
        let r = app.post("/v1/customers/c1/credits", &t.key, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
        assert_eq!(r.code(), code);
    }
    let r = app
        .post(
            "/v1/customers/nobody/credits",
            &t.key,
            json!({"amount": "5.00", "description": "x"}),
        )
        .await;
    assert_eq!(r.code(), "customer_not_found");
    // The start invoice (99.00) uses all 40.00 at once.
    let r = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "c1", "plan": "max"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let inv = &app.invoices(&t, "c1").await[0];
    assert_eq!(inv["credit_applied"], "40.00");
    assert_eq!(inv["amount_due"], "59.00");
    // The PDF shows it too.
    let resp = app
        .client
        .get(format!(
            "{}/v1/invoices/{}/pdf",
            app.base,
            inv["id"].as_str().unwrap()
        ))
        .bearer_auth(&t.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc = lopdf::Document::load_mem(&resp.bytes().await.unwrap()).unwrap();
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    let text = doc.extract_text(&pages).unwrap();
    for needle in ["Credit applied", "40.00", "Amount due", "59.00"] {
        assert!(text.contains(needle), "{needle:?} missing from {text:?}");
    }
    assert!(!text.contains("Credit notes"), "no zero rows: {text:?}");
    assert_eq!(
        balance(&app, &t, "c1").await,
        (
            "0.00".to_string(),
            vec![pair("applied", "-40.00"), pair("manual", "40.00")]
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_notes_lower_an_open_invoice_or_credit_a_paid_one() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    subscribe(&app, &t, "open", "max").await;
    let open = app.invoices(&t, "open").await[0].clone();
    let open_id = open["id"].as_str().unwrap();
    let note = |amount: &str| json!({"amount": amount, "reason": "order_change"});
    let path = format!("/v1/invoices/{open_id}/credit_notes");

    let r = app.post(&path, &t.key, note("9.00")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["amount"], "9.00");
    assert_eq!(r.body["invoice"], open_id);
    assert_eq!(r.body["reason"], "order_change");
    assert!(r.body["id"].as_str().unwrap().starts_with("cn_"));
    let inv = app.get(&format!("/v1/invoices/{open_id}"), &t.key).await;
    assert_eq!(inv.body["amount_due"], "90.00");
    assert_eq!(inv.body["credit_notes_total"], "9.00");
    let r = app.post(&path, &t.key, note("90.01")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "credit_note_too_large");
    let r = app
        .post(
            &path,
            &t.key,
            json!({"amount": "1.00", "reason": "because"}),
        )
        .await;
    assert_eq!(r.code(), "invalid_reason");
    // The rest of it settles the invoice; the balance is untouched.
    let r = app.post(&path, &t.key, note("90.00")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let inv = app.get(&format!("/v1/invoices/{open_id}"), &t.key).await;
    assert_eq!(inv.body["status"], "paid");
    assert_eq!(inv.body["amount_due"], "0.00");
    assert_eq!(inv.body["credit_notes_total"], "99.00");
    assert_eq!(balance(&app, &t, "open").await.0, "0.00");
    // Nothing was paid for it, so nothing more can be credited.
    let r = app.post(&path, &t.key, note("1.00")).await;
    assert_eq!(r.code(), "credit_note_too_large");

    // A paid invoice: notes add to the balance, up to what was paid.
    subscribe(&app, &t, "paid", "max").await;
    let paid_id = app.invoices(&t, "paid").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .post(
            &format!("/v1/invoices/{paid_id}/pay"),
            &t.key,
            json!({"paid_out_of_band": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let path = format!("/v1/invoices/{paid_id}/credit_notes");
    let r = app.post(&path, &t.key, note("20.00")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = app.post(&path, &t.key, note("79.01")).await;
    assert_eq!(r.code(), "credit_note_too_large");
    let r = app.post(&path, &t.key, note("79.00")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        balance(&app, &t, "paid").await,
        (
            "99.00".to_string(),
            vec![pair("credit_note", "79.00"), pair("credit_note", "20.00")]
        )
    );

    // A draft (the renewal during its grace hour) and a void invoice are not creditable.
    subscribe(&app, &t, "drafty", "pro").await;
    app.advance_clock(&t, "2027-02-01T00:00:00Z").await;
    let draft = app.invoices(&t, "drafty").await[1].clone();
    assert_eq!(draft["status"], "draft");
    let r = app
        .post(
            &format!(
                "/v1/invoices/{}/credit_notes",
                draft["id"].as_str().unwrap()
            ),
            &t.key,
            note("1.00"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "invoice_not_creditable");
    let r = app
        .post(
            &format!("/v1/invoices/{}/void", draft["id"].as_str().unwrap()),
            &t.key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .post(
            &format!(
                "/v1/invoices/{}/credit_notes",
                draft["id"].as_str().unwrap()
            ),
            &t.key,
            note("1.00"),
        )
        .await;
    assert_eq!(r.code(), "invoice_not_creditable");

    // Another tenant sees none of it.
    let other = app.tenant("test").await;
    let r = app
        .post(
            &format!("/v1/invoices/{paid_id}/credit_notes"),
            &other.key,
            note("1.00"),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.code(), "invoice_not_found");
    let r = app
        .get("/v1/customers/paid/balance_transactions", &other.key)
        .await;
    assert_eq!(r.code(), "customer_not_found");
    let r = app
        .post(
            "/v1/customers/paid/credits",
            &other.key,
            json!({"amount": "5.00", "description": "x"}),
        )
        .await;
    assert_eq!(r.code(), "customer_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_credit_notes_never_exceed_the_invoice() {
    let app = Arc::new(spawn_app().await);
    let t = Arc::new(tenant(&app).await);
    subscribe(&app, &t, "c1", "max").await;
    let id = app.invoices(&t, "c1").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // 50 notes of 5.00 at once on 99.00: 19 fit (95.00), 31 are refused.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (app, t, id) = (app.clone(), t.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let r = app
                .post(
                    &format!("/v1/invoices/{id}/credit_notes"),
                    &t.key,
                    json!({"amount": "5.00", "reason": "duplicate"}),
                )
                .await;
            (r.status, r.code().to_string())
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            (StatusCode::CREATED, _) => created += 1,
            (StatusCode::BAD_REQUEST, code) => assert_eq!(code, "credit_note_too_large"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(created, 19);
    let inv = app.get(&format!("/v1/invoices/{id}"), &t.key).await;
    assert_eq!(inv.body["credit_notes_total"], "95.00");
    assert_eq!(inv.body["amount_due"], "4.00");
    assert_eq!(inv.body["status"], "open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_credits_and_credit_notes_apply_once() {
    let app = spawn_app().await;
    let t = tenant(&app).await;
    subscribe(&app, &t, "c1", "max").await;
    let id = app.invoices(&t, "c1").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let send = |path: String, body: Value, key: &'static str| {
        let app = &app;
        let api_key = t.key.clone();
        async move {
            app.request(
                reqwest::Method::POST,
                &path,
                Some(&api_key),
                Some(body),
                &[("Idempotency-Key", key)],
            )
            .await
        }
    };
    let grant = json!({"amount": "7.00", "description": "Sorry"});
    let a = send("/v1/customers/c1/credits".into(), grant.clone(), "grant-1").await;
    let b = send("/v1/customers/c1/credits".into(), grant, "grant-1").await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body, b.body, "the retry answers the first response");
    let note = json!({"amount": "9.00", "reason": "duplicate"});
    let path = format!("/v1/invoices/{id}/credit_notes");
    let a = send(path.clone(), note.clone(), "note-1").await;
    let b = send(path, note, "note-1").await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body["id"], b.body["id"]);
    let inv = app.get(&format!("/v1/invoices/{id}"), &t.key).await;
    assert_eq!(inv.body["credit_notes_total"], "9.00");
    assert_eq!(inv.body["amount_due"], "90.00");
    assert_eq!(
        balance(&app, &t, "c1").await,
        ("7.00".to_string(), vec![pair("manual", "7.00")])
    );
}
