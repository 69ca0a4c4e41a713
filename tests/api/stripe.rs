//! Dunning and Stripe: the Stripe outbox against a fake Stripe that fails on demand, Stripe
//! webhooks in, and dunning walked with a test clock.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tollgate::testing::{self, DeliveryConfig, SyncConfig};

use crate::fakes::{FakeStripe, Receiver};
use crate::helpers::{spawn_app, Tenant, TestApp};

pub const WHSEC: &str = "whsec_test_5ecret";

fn sync_cfg() -> SyncConfig {
    SyncConfig {
        timeout: Duration::from_millis(300),
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        max_attempts: 100,
        batch: 8,
    }
}

/// Sends the outbox until nothing of the tenant is pending, with `workers` workers at once.
pub async fn drain_stripe(app: &TestApp, workers: usize) {
    let cfg = sync_cfg();
    for _ in 0..10_000 {
        let runs = (0..workers).map(|_| testing::send_stripe_outbox(&app.state, &cfg));
        for r in futures::future::join_all(runs).await {
            r.unwrap();
        }
        let pending = testing::pending_stripe_rows(&app.db).await.unwrap();
        if pending == 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the outbox never drained");
}

/// Delivers webhooks until none is pending.
pub async fn drain_webhooks(app: &TestApp) {
    let cfg = DeliveryConfig {
        timeout: Duration::from_secs(5),
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        give_up_after: Duration::from_secs(3600),
    };
    let http = reqwest::Client::new();
    for _ in 0..10_000 {
        testing::deliver_webhooks(&app.state, &http, &cfg, 32)
            .await
            .unwrap();
        let pending = testing::pending_deliveries(&app.db).await.unwrap();
        if pending == 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("webhook deliveries never drained");
}

pub async fn connect(app: &TestApp, t: &Tenant, fake: Option<&FakeStripe>) {
    let stripe = match fake {
        Some(f) => {
            json!({"secret_key": "sk_test_fake", "webhook_secret": WHSEC, "api_base": f.base})
        }
        None => json!({"webhook_secret": WHSEC}),
    };
    let r = app
        .patch("/v1/tenant", &t.key, json!({"stripe": stripe}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

pub async fn hook_endpoint(app: &TestApp, t: &Tenant, receiver: &Receiver, events: Value) -> Value {
    let r = app
        .post(
            "/v1/webhook_endpoints",
            &t.key,
            json!({"url": receiver.url, "events": events}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body
}

/// A test tenant (clock frozen at `at`) with plans `free` (10 calls) and `pro` ($30/month,
/// 100 calls); `calls` is reported to the Stripe meter `api_calls`.
pub async fn billing_tenant(app: &TestApp, at: &str) -> Tenant {
    let t = app.tenant("test").await;
    let f = app
        .post(
            "/v1/features",
            &t.key,
            json!({"key": "calls", "name": "Calls", "type": "metered",
                   "stripe_meter_event_name": "api_calls"}),
        )
        .await;
    assert_eq!(f.status, StatusCode::CREATED, "{:?}", f.body);
    for plan in [
        json!({"key": "free", "name": "Free", "entitlements": [{"feature": "calls", "limit": 10}]}),
        json!({"key": "pro", "name": "Pro",
               "prices": [{"interval": "month", "amount": "30.00", "currency": "usd"}],
               "entitlements": [{"feature": "calls", "limit": 1000}]}),
    ] {
        let r = app.post("/v1/plans", &t.key, plan).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    app.set_clock(&t, at).await;
    t
}

pub async fn subscribe_pro(app: &TestApp, t: &Tenant, customer: &str) -> Value {
    app.customer(t, customer).await;
    let r = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": customer, "plan": "pro"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body
}

pub async fn only_invoice(app: &TestApp, t: &Tenant, customer: &str) -> Value {
    let r = app
        .get(&format!("/v1/customers/{customer}/invoices"), &t.key)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{data:?}");
    data[0].clone()
}

#[tokio::test]
async fn meter_events_reach_stripe_exactly_once_through_failures_with_two_workers() {
    let app = spawn_app().await;
    let fake = FakeStripe::start().await;
    let t = billing_tenant(&app, "2026-03-01T00:00:00Z").await;
    connect(&app, &t, Some(&fake)).await;
    subscribe_pro(&app, &t, "acme").await;
    // Only meter events and the customer here: the $30 invoice is paid out of band first.
    let inv = only_invoice(&app, &t, "acme").await;
    let paid = app
        .post(
            &format!("/v1/invoices/{}/pay", inv["id"].as_str().unwrap()),
            &t.key,
            json!({"paid_out_of_band": true}),
        )
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{:?}", paid.body);
    tollgate::testing::stored::drop_outbox_rows(&app.db, &t.tid(), &["invoice", "invoice_payment"])
        .await
        .unwrap();
    fake.lock().fail_percent = 30;

    let sends = (0..60).map(|i| {
        app.post(
            "/v1/usage",
            &t.key,
            json!({"customer": "acme", "feature": "calls", "id": format!("ev-{i}"), "quantity": 2}),
        )
    });
    for r in futures::future::join_all(sends).await {
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    // Repeats and a free retry add nothing to report.
    for i in 0..10 {
        let r = app
            .post(
                "/v1/usage",
                &t.key,
                json!({"customer": "acme", "feature": "calls", "id": format!("ev-{i}"), "quantity": 2}),
            )
            .await;
        assert_eq!(r.body["duplicate"], true);
    }
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "acme", "feature": "calls", "id": "free-1", "billable": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    drain_stripe(&app, 2).await;

    {
        let st = fake.lock();
        assert!(
            st.injected_failures >= 10,
            "failures injected: {}",
            st.injected_failures
        );
        assert!(
            st.seen.iter().any(|s| s.replayed),
            "a request answered late was retried with its key and replayed"
        );
        let expected: HashSet<String> = (0..60).map(|i| format!("ev-{i}")).collect();
        let reported: HashSet<String> = st.meter_events.keys().cloned().collect();
        assert_eq!(reported, expected);
        assert_eq!(
            st.duplicate_identifiers, 0,
            "no event was sent twice as new"
        );
        assert_eq!(
            st.customers,
            vec!["cus_1".to_string()],
            "one Stripe customer"
        );
        // Every meter request for one identifier carried the same idempotency key and value.
        let mut keys: HashMap<String, HashSet<String>> = HashMap::new();
        for s in st
            .seen
            .iter()
            .filter(|s| s.path == "/v1/billing/meter_events")
        {
            assert_eq!(s.form["payload[stripe_customer_id]"], "cus_1");
            assert_eq!(s.form["payload[value]"], "2");
            assert_eq!(s.form["event_name"], "api_calls");
            keys.entry(s.form["identifier"].clone())
                .or_default()
                .insert(s.idempotency_key.clone().unwrap());
        }
        assert!(keys.values().all(|k| k.len() == 1), "{keys:?}");
    }

    let events = tollgate::testing::stored::usage_events(&app.db, &t.tid())
        .await
        .unwrap();
    let unreported: Vec<_> = events
        .iter()
        .filter(|e| e.billable && e.stripe_reported_at.is_none())
        .collect();
    assert_eq!(
        unreported,
        Vec::<&tollgate::testing::stored::StoredEvent>::new()
    );
    let free_reported = events
        .iter()
        .find(|e| e.event_id == "free-1")
        .expect("the free event is stored")
        .stripe_reported_at;
    assert_eq!(
        free_reported, None,
        "a free retry is not billed by Stripe either"
    );

    let sync = app.get("/v1/stripe/sync", &t.key).await;
    assert_eq!(sync.status, StatusCode::OK);
    assert_eq!(sync.body["connected"], true);
    assert_eq!(
        sync.body["counts"],
        json!({"pending": 0, "failed": 0, "sent": 61})
    );
}

#[tokio::test]
async fn finalized_invoices_are_sent_with_their_lines_and_collected() {
    let app = spawn_app().await;
    let fake = FakeStripe::start().await;
    let receiver = Receiver::start().await;
    let t = billing_tenant(&app, "2026-03-01T00:00:00Z").await;
    connect(&app, &t, Some(&fake)).await;
    hook_endpoint(
        &app,
        &t,
        &receiver,
        json!(["invoice.finalized", "invoice.paid"]),
    )
    .await;
    fake.lock().fail_percent = 30;
    subscribe_pro(&app, &t, "acme").await;
    let inv = only_invoice(&app, &t, "acme").await;
    assert_eq!(inv["status"], "open");

    drain_stripe(&app, 2).await;

    {
        let st = fake.lock();
        assert_eq!(st.invoice_order.len(), 1, "one Stripe invoice");
        let sinv = &st.invoices[&st.invoice_order[0]];
        assert_eq!(sinv.customer, "cus_1");
        assert_eq!(sinv.items, vec![3000], "the $30.00 line, in cents");
        assert_eq!(sinv.status, "paid");
        assert_eq!(sinv.attempt_count, 1);
        let created = st
            .seen
            .iter()
            .find(|s| s.path == "/v1/invoices" && !s.replayed)
            .unwrap();
        assert_eq!(
            created.form["metadata[tollgate_invoice_id]"],
            inv["id"].as_str().unwrap()
        );
        assert_eq!(created.form["auto_advance"], "false");
    }

    let after = only_invoice(&app, &t, "acme").await;
    assert_eq!(after["status"], "paid");
    assert_eq!(after["paid_out_of_band"], false);

    drain_webhooks(&app).await;
    let finalized = receiver.of_type("invoice.finalized");
    let paid = receiver.of_type("invoice.paid");
    assert_eq!(finalized.len(), 1);
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0]["data"]["id"], inv["id"]);
    assert_eq!(paid[0]["data"]["status"], "paid");
}

/// A Stripe event, signed at `t` (seconds) with `secret`.
pub fn stripe_event(id: &str, kind: &str, created: i64, object: Value) -> String {
    json!({"id": id, "object": "event", "type": kind, "created": created,
           "livemode": false, "pending_webhooks": 1, "api_version": "2026-09-30.endive",
           "data": {"object": object}})
    .to_string()
}

pub fn sign(payload: &str, secret: &str, t: i64) -> String {
    stripe_webhook::Webhook::generate_test_header(payload, secret, Some(t))
}

pub async fn post_stripe(
    app: &TestApp,
    t: &Tenant,
    payload: &str,
    signature: Option<&str>,
) -> crate::helpers::Resp {
    let mut req = app
        .client
        .post(format!("{}/v1/stripe/webhooks/{}", app.base, t.id))
        .header("content-type", "application/json")
        .body(payload.to_string());
    if let Some(s) = signature {
        req = req.header("stripe-signature", s);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    crate::helpers::Resp {
        status,
        body,
        headers,
    }
}

#[tokio::test]
async fn stripe_webhook_signatures_are_verified_before_anything_is_applied() {
    let app = spawn_app().await;
    let t = billing_tenant(&app, "2026-03-01T00:00:00Z").await;
    connect(&app, &t, None).await;
    subscribe_pro(&app, &t, "acme").await;
    let inv = only_invoice(&app, &t, "acme").await;
    let id = inv["id"].as_str().unwrap();
    let now = chrono::Utc::now().timestamp();
    let payload = stripe_event(
        "evt_1",
        "invoice.paid",
        now,
        json!({"id": "in_x", "object": "invoice", "metadata": {"tollgate_invoice_id": id}}),
    );

    let missing = post_stripe(&app, &t, &payload, None).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.body["error"]["code"], "invalid_signature");
    let tampered = payload.replace("invoice.paid", "invoice.paid ");
    let r = post_stripe(&app, &t, &tampered, Some(&sign(&payload, WHSEC, now))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["code"], "invalid_signature");
    let r = post_stripe(&app, &t, &payload, Some(&sign(&payload, WHSEC, now - 301))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "older than 5 minutes");
    let r = post_stripe(
        &app,
        &t,
        &payload,
        Some(&sign(&payload, "whsec_other", now)),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "another secret");
    let r = post_stripe(&app, &t, &payload, Some("t=1,v1=zz")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "garbage");

    let stored = tollgate::testing::stored::row_counts(&app.db, Some(&t.tid()))
        .await
        .unwrap()
        .stripe_events;
    assert_eq!(stored, 0, "nothing was recorded");
    assert_eq!(only_invoice(&app, &t, "acme").await["status"], "open");

    // Made by Stripe's scheme, within the tolerance.
    let r = post_stripe(&app, &t, &payload, Some(&sign(&payload, WHSEC, now - 200))).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["outcome"], "applied");
    let after = only_invoice(&app, &t, "acme").await;
    assert_eq!(after["status"], "paid");
    assert_eq!(after["paid_out_of_band"], false);
}

#[tokio::test]
async fn the_same_stripe_event_five_times_is_applied_once() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let t = billing_tenant(&app, "2026-03-01T00:00:00Z").await;
    connect(&app, &t, None).await;
    hook_endpoint(&app, &t, &receiver, json!(["invoice.payment_failed"])).await;
    let sub = subscribe_pro(&app, &t, "acme").await;
    let inv = only_invoice(&app, &t, "acme").await;
    let now = chrono::Utc::now().timestamp();
    let payload = stripe_event(
        "evt_fail_1",
        "invoice.payment_failed",
        now,
        json!({"id": "in_x", "object": "invoice", "attempt_count": 1,
               "metadata": {"tollgate_invoice_id": inv["id"]}}),
    );
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let r = post_stripe(&app, &t, &payload, Some(&sign(&payload, WHSEC, now))).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        outcomes.push(r.body["outcome"].as_str().unwrap().to_string());
    }
    assert_eq!(
        outcomes,
        [
            "applied",
            "duplicate",
            "duplicate",
            "duplicate",
            "duplicate"
        ]
    );
    let collection = tollgate::testing::stored::collection(&app.db, &t.tid())
        .await
        .unwrap();
    assert_eq!(collection.len(), 1);
    let (attempts, next) = (
        collection[0].payment_attempts,
        collection[0].next_payment_attempt,
    );
    assert_eq!(attempts, 1);
    assert_eq!(
        next.unwrap().to_rfc3339(),
        "2026-03-02T00:00:00+00:00",
        "first retry a day later"
    );
    let s = app
        .get(
            &format!("/v1/subscriptions/{}", sub["id"].as_str().unwrap()),
            &t.key,
        )
        .await;
    assert_eq!(s.body["status"], "past_due");

    // A different event for the same attempt (the worker's own report of it) is not counted
    // again either.
    let again = stripe_event(
        "evt_fail_1b",
        "invoice.payment_failed",
        now,
        json!({"id": "in_x", "object": "invoice", "attempt_count": 1,
               "metadata": {"tollgate_invoice_id": inv["id"]}}),
    );
    let r = post_stripe(&app, &t, &again, Some(&sign(&again, WHSEC, now))).await;
    assert_eq!(r.body["outcome"], "ignored");

    // The audit log names the Stripe event as the actor, once.
    let log = app
        .get("/v1/audit_log?action=subscription.past_due", &t.key)
        .await;
    let entries = log.body["data"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{:?}", log.body);
    assert_eq!(entries[0]["actor"], "stripe:evt_fail_1");
    assert_eq!(entries[0]["before"]["status"], "active");
    assert_eq!(entries[0]["after"]["status"], "past_due");

    drain_webhooks(&app).await;
    assert_eq!(receiver.of_type("invoice.payment_failed").len(), 1);
}

#[tokio::test]
async fn subscription_events_out_of_order_leave_the_newest_state() {
    let app = spawn_app().await;
    let t = billing_tenant(&app, "2026-03-01T00:00:00Z").await;
    connect(&app, &t, None).await;
    let sub = subscribe_pro(&app, &t, "acme").await;
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let r = app
        .patch("/v1/tenant", &t.key, json!({"default_plan": "free"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let base = chrono::Utc::now().timestamp();
    let event = |id: &str, kind: &str, created: i64, status: &str| {
        stripe_event(
            id,
            kind,
            created,
            json!({"id": "sub_stripe_1", "object": "subscription", "status": status,
                   "metadata": {"tollgate_subscription_id": sub_id}}),
        )
    };
    let send = |p: String| {
        let app = &app;
        let t = &t;
        async move {
            let r = post_stripe(app, t, &p, Some(&sign(&p, WHSEC, base))).await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            r.body["outcome"].as_str().unwrap().to_string()
        }
    };
    let status = || async {
        app.get(&format!("/v1/subscriptions/{sub_id}"), &t.key)
            .await
            .body["status"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // The newer event arrives first.
    assert_eq!(
        send(event(
            "evt_b",
            "customer.subscription.updated",
            base + 20,
            "past_due"
        ))
        .await,
        "applied"
    );
    assert_eq!(status().await, "past_due");
    assert_eq!(
        send(event(
            "evt_a",
            "customer.subscription.updated",
            base + 10,
            "active"
        ))
        .await,
        "stale"
    );
    assert_eq!(
        status().await,
        "past_due",
        "the older event did not overwrite"
    );
    assert_eq!(
        send(event(
            "evt_c",
            "customer.subscription.updated",
            base + 30,
            "active"
        ))
        .await,
        "applied"
    );
    assert_eq!(status().await, "active");
    assert_eq!(
        send(event(
            "evt_d",
            "customer.subscription.deleted",
            base + 40,
            "canceled"
        ))
        .await,
        "applied"
    );
    assert_eq!(status().await, "canceled");
    let now_on = app.get("/v1/customers/acme/subscription", &t.key).await;
    assert_eq!(now_on.body["plan"], "free", "fell back to the default plan");
    // A late update for the ended subscription changes nothing.
    assert_eq!(
        send(event(
            "evt_e",
            "customer.subscription.updated",
            base + 35,
            "active"
        ))
        .await,
        "stale"
    );
    assert_eq!(status().await, "canceled");
}

async fn dunning_state(app: &TestApp, t: &Tenant) -> (String, i32, Option<String>) {
    let collection = tollgate::testing::stored::collection(&app.db, &t.tid())
        .await
        .unwrap();
    let first = collection
        .into_iter()
        .find(|c| c.billing_reason == "subscription_create")
        .expect("the first invoice");
    (
        first.status,
        first.payment_attempts,
        first.next_payment_attempt.map(|n| n.to_rfc3339()),
    )
}

#[tokio::test]
async fn a_failed_payment_walks_the_dunning_schedule_and_ends_on_the_default_plan() {
    let app = spawn_app().await;
    let fake = FakeStripe::start().await;
    let receiver = Receiver::start().await;
    let t = billing_tenant(&app, "2026-03-01T00:00:00Z").await;
    connect(&app, &t, Some(&fake)).await;
    hook_endpoint(&app, &t, &receiver, json!(["*"])).await;
    fake.lock().decline = true;
    let sub = subscribe_pro(&app, &t, "acme").await;
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let r = app
        .patch("/v1/tenant", &t.key, json!({"default_plan": "free"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // The invoice reaches Stripe; the first charge is declined.
    drain_stripe(&app, 1).await;
    assert_eq!(
        dunning_state(&app, &t).await,
        ("open".into(), 1, Some("2026-03-02T00:00:00+00:00".into()))
    );
    let s = app
        .get(&format!("/v1/subscriptions/{sub_id}"), &t.key)
        .await;
    assert_eq!(s.body["status"], "past_due");

    // Retries 1, 3 and 5 days after the first failure, each declined.
    let schedule = [
        ("2026-03-02T00:00:00Z", 2, Some("2026-03-04T00:00:00+00:00")),
        ("2026-03-04T00:00:00Z", 3, Some("2026-03-06T00:00:00+00:00")),
    ];
    for (to, attempts, next) in schedule {
        let done = app.advance_clock(&t, to).await;
        assert_eq!(done["processed"]["payment_retries"], 1, "{done:?}");
        drain_stripe(&app, 1).await;
        assert_eq!(
            dunning_state(&app, &t).await,
            ("open".into(), attempts, next.map(String::from))
        );
    }
    // Not due before its time.
    let early = app.advance_clock(&t, "2026-03-05T23:59:59Z").await;
    assert_eq!(early["processed"]["payment_retries"], 0);
    let done = app.advance_clock(&t, "2026-03-06T00:00:00Z").await;
    assert_eq!(done["processed"]["payment_retries"], 1);
    drain_stripe(&app, 1).await;
    assert_eq!(
        dunning_state(&app, &t).await,
        ("uncollectible".into(), 4, None)
    );

    let s = app
        .get(&format!("/v1/subscriptions/{sub_id}"), &t.key)
        .await;
    assert_eq!(s.body["status"], "canceled");
    assert_eq!(s.body["ended_at"], "2026-03-06T00:00:00Z");
    let now_on = app.get("/v1/customers/acme/subscription", &t.key).await;
    assert_eq!(now_on.body["plan"], "free", "fell back to the default plan");
    {
        let st = fake.lock();
        let sinv = &st.invoices[&st.invoice_order[0]];
        assert_eq!(
            sinv.attempt_count, 4,
            "one charge and three retries, each once"
        );
        let pays = st.seen.iter().filter(|s| s.path.ends_with("/pay")).count();
        assert_eq!(pays, 4);
    }

    drain_webhooks(&app).await;
    let failed = receiver.of_type("invoice.payment_failed");
    assert_eq!(failed.len(), 4);
    let past_due: Vec<Value> = receiver
        .of_type("subscription.updated")
        .into_iter()
        .filter(|e| e["data"]["status"] == "past_due")
        .collect();
    assert_eq!(past_due.len(), 1);
    let canceled = receiver.of_type("subscription.canceled");
    assert_eq!(canceled.len(), 1);
    assert_eq!(canceled[0]["data"]["id"], sub_id.as_str());
    assert_eq!(canceled[0]["timestamp"], "2026-03-06T00:00:00.000000Z");
    let created: Vec<Value> = receiver.of_type("subscription.created");
    assert!(created.iter().any(|e| e["data"]["plan"] == "free"));

    // Dunning in the audit log: the worker (which applies Stripe's answers) put the
    // subscription past due, made the invoice uncollectible and ended the subscription.
    let log = app
        .get(
            &format!("/v1/audit_log?resource=subscription/{sub_id}"),
            &t.key,
        )
        .await;
    let entries: Vec<(&str, &str)> = log.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        entries[..2],
        [
            ("subscription.ended", "worker"),
            ("subscription.past_due", "worker")
        ]
    );
    let uncollectible = app
        .get("/v1/audit_log?action=invoice.uncollectible", &t.key)
        .await;
    let e = &uncollectible.body["data"][0];
    assert_eq!(e["actor"], "worker");
    assert_eq!(e["before"]["status"], "open");
    assert_eq!(e["after"]["status"], "uncollectible");
    assert_eq!(e["created_at"], "2026-03-06T00:00:00Z");
}

#[tokio::test]
async fn rows_that_keep_failing_are_parked_with_their_last_error() {
    let app = spawn_app().await;
    let fake = FakeStripe::start().await;
    let t = billing_tenant(&app, "2026-03-01T00:00:00Z").await;
    connect(&app, &t, Some(&fake)).await;
    fake.lock().fail_percent = 100;
    app.customer(&t, "acme").await;
    let cfg = SyncConfig {
        max_attempts: 3,
        ..sync_cfg()
    };
    for _ in 0..1000 {
        testing::send_stripe_outbox(&app.state, &cfg).await.unwrap();
        let sync = app.get("/v1/stripe/sync", &t.key).await;
        if sync.body["counts"]["pending"] == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let sync = app.get("/v1/stripe/sync", &t.key).await;
    assert_eq!(
        sync.body["counts"],
        json!({"pending": 0, "failed": 1, "sent": 0})
    );
    let failed = &sync.body["failed"][0];
    assert_eq!(failed["kind"], "customer");
    assert_eq!(failed["resource_id"], "acme");
    assert_eq!(failed["attempts"], 3);
    let error = failed["last_error"].as_str().unwrap();
    assert!(
        error.contains("HTTP 500") || error.contains("HTTP 429") || error.contains("timed out"),
        "{error}"
    );
    assert_eq!(fake.lock().seen.len(), 3, "three attempts, then parked");
}

#[tokio::test]
async fn the_dunning_schedule_is_the_tenants_and_is_validated() {
    let app = spawn_app().await;
    let t = billing_tenant(&app, "2026-03-01T00:00:00Z").await;
    let r = app.get("/v1/tenant", &t.key).await;
    assert_eq!(r.body["dunning_retry_days"], json!([1, 3, 5]));
    for bad in [json!([3, 1]), json!([0]), json!([1, 1]), json!([61])] {
        let r = app
            .patch("/v1/tenant", &t.key, json!({"dunning_retry_days": bad}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.body["error"]["code"], "invalid_dunning_schedule");
    }
    let r = app
        .patch("/v1/tenant", &t.key, json!({"dunning_retry_days": [2]}))
        .await;
    assert_eq!(r.body["dunning_retry_days"], json!([2]));
    // Not connected to Stripe: a retry that cannot be sent fails at once, on schedule.
    connect(&app, &t, None).await;
    subscribe_pro(&app, &t, "acme").await;
    let inv = only_invoice(&app, &t, "acme").await;
    let now = chrono::Utc::now().timestamp();
    let payload = stripe_event(
        "evt_f",
        "invoice.payment_failed",
        now,
        json!({"id": "in_x", "object": "invoice", "attempt_count": 1,
               "metadata": {"tollgate_invoice_id": inv["id"]}}),
    );
    let r = post_stripe(&app, &t, &payload, Some(&sign(&payload, WHSEC, now))).await;
    assert_eq!(r.body["outcome"], "applied");
    assert_eq!(
        dunning_state(&app, &t).await,
        ("open".into(), 1, Some("2026-03-03T00:00:00+00:00".into()))
    );
    let done = app.advance_clock(&t, "2026-03-03T00:00:00Z").await;
    assert_eq!(done["processed"]["payment_retries"], 1);
    assert_eq!(
        dunning_state(&app, &t).await,
        ("uncollectible".into(), 2, None)
    );
    let s = app.get("/v1/customers/acme/subscription", &t.key).await;
    assert_eq!(
        s.status,
        StatusCode::NOT_FOUND,
        "canceled, and no default plan: {:?}",
        s.body
    );
}

/// Seed 004: starter's 25 suggestions, then 5 over at $0.35. Every suggestion is reported to
/// the Stripe meter once, and Tollgate's renewal invoice leaves the overage to Stripe.
#[tokio::test]
async fn seed_004_meters_each_suggestion_once_and_never_bills_its_overage_twice() {
    let (app, t) = crate::seeds::seeded("004_slack_assistant.toml").await;
    let fake = FakeStripe::start().await;
    connect(&app, &t, Some(&fake)).await;
    app.set_clock(&t, "2026-05-01T00:00:00Z").await;
    app.customer(&t, "U123@acme").await;
    let live = app
        .get("/v1/customers/U123@acme/subscription", &t.key)
        .await;
    let change = app
        .post(
            &format!(
                "/v1/subscriptions/{}/change",
                live.body["id"].as_str().unwrap()
            ),
            &t.key,
            json!({"plan": "starter"}),
        )
        .await;
    assert_eq!(change.status, StatusCode::OK, "{:?}", change.body);
    fake.lock().fail_percent = 20;
    for i in 0..30 {
        let r = app
            .post(
                "/v1/usage",
                &t.key,
                json!({"customer": "U123@acme", "feature": "suggestions", "id": format!("s-{i}")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{i}: {:?}", r.body);
    }
    let check = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "U123@acme", "feature": "suggestions"}),
        )
        .await;
    assert_eq!(
        check.body["overage"]["billed_so_far"], "1.75",
        "5 over at $0.35"
    );
    app.advance_clock(&t, "2026-06-01T02:00:00Z").await;
    drain_stripe(&app, 2).await;

    {
        let st = fake.lock();
        assert_eq!(st.meter_events.len(), 30);
        assert!((0..30).all(|i| st.meter_events.contains_key(&format!("s-{i}"))));
        assert_eq!(st.duplicate_identifiers, 0);
    }
    let invoices = app.get("/v1/customers/U123@acme/invoices", &t.key).await;
    let renewal = invoices.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["billing_reason"] == "subscription_cycle")
        .cloned()
        .unwrap();
    let kinds: Vec<&str> = renewal["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["subscription"],
        "no overage line: Stripe bills metered usage"
    );
    assert_eq!(renewal["total"], "9.00");
}

#[tokio::test]
async fn voiding_an_invoice_voids_it_in_stripe_and_stops_dunning() {
    let app = spawn_app().await;
    let fake = FakeStripe::start().await;
    let t = billing_tenant(&app, "2026-03-01T00:00:00Z").await;
    connect(&app, &t, Some(&fake)).await;
    fake.lock().decline = true;
    subscribe_pro(&app, &t, "acme").await;
    drain_stripe(&app, 1).await;
    assert_eq!(
        dunning_state(&app, &t).await.1,
        1,
        "the first charge failed"
    );
    let inv = only_invoice(&app, &t, "acme").await;
    let r = app
        .post(
            &format!("/v1/invoices/{}/void", inv["id"].as_str().unwrap()),
            &t.key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    drain_stripe(&app, 1).await;
    {
        let st = fake.lock();
        assert_eq!(st.invoices[&st.invoice_order[0]].status, "void");
    }
    let done = app.advance_clock(&t, "2026-03-10T00:00:00Z").await;
    assert_eq!(
        done["processed"]["payment_retries"], 0,
        "no retries for a void invoice"
    );
}

#[tokio::test]
async fn seat_lines_go_to_stripe_with_quantity_and_unit_and_credit_as_a_negative_item() {
    let app = spawn_app().await;
    let fake = FakeStripe::start().await;
    let t = billing_tenant(&app, "2026-03-01T00:00:00Z").await;
    connect(&app, &t, Some(&fake)).await;
    let r = app
        .post(
            "/v1/plans",
            &t.key,
            json!({"key": "team", "name": "Team", "prices": [
                {"interval": "month", "amount": "10.00", "currency": "usd"},
                {"interval": "month", "currency": "usd", "per_seat": true, "amount": "12.50"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    app.customer(&t, "org").await;
    for m in ["a", "b", "c"] {
        let r = app
            .put(
                &format!("/v1/customers/org/members/{m}"),
                &t.key,
                json!({"role": "member"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = app
        .post(
            "/v1/customers/org/credits",
            &t.key,
            json!({"amount": "5.00", "description": "Welcome"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "org", "plan": "team"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let inv = only_invoice(&app, &t, "org").await;
    // 10.00 + 3 × 12.50 = 47.50, less 5.00 of credit: 42.50 due.
    assert_eq!(inv["total"], "47.50");
    assert_eq!(inv["credit_applied"], "5.00");
    assert_eq!(inv["amount_due"], "42.50");

    drain_stripe(&app, 1).await;
    let st = fake.lock();
    let sinv = &st.invoices[&st.invoice_order[0]];
    assert_eq!(sinv.items, vec![1000, 3750, -500]);
    assert_eq!(
        sinv.item_units,
        vec![
            Some((1, "1000".to_string())),
            Some((3, "1250".to_string())),
            None
        ],
        "the seat line as 3 × 12.50; the credit as an amount"
    );
}

#[tokio::test]
async fn credit_notes_reach_stripe_lowering_an_open_invoice_or_out_of_band_on_a_paid_one() {
    let app = spawn_app().await;
    let fake = FakeStripe::start().await;
    let t = billing_tenant(&app, "2026-03-01T00:00:00Z").await;
    connect(&app, &t, Some(&fake)).await;
    // Net 30, so Stripe does not collect at once and the invoice stays open.
    let r = app
        .put("/v1/customers/acme", &t.key, json!({"net_days": 30}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "acme", "plan": "pro"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let inv = only_invoice(&app, &t, "acme").await;
    let id = inv["id"].as_str().unwrap();
    // Credited before the invoice reached Stripe: the note waits for it.
    let r = app
        .post(
            &format!("/v1/invoices/{id}/credit_notes"),
            &t.key,
            json!({"amount": "5.00", "reason": "product_unsatisfactory"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    drain_stripe(&app, 2).await;
    {
        let st = fake.lock();
        let sinv = &st.invoices[&st.invoice_order[0]];
        assert_eq!(sinv.status, "open");
        assert_eq!(sinv.credit_notes, vec![(500, None)], "lowers what it asks");
    }
    // Paid, then credited: out of band in Stripe (the credit is Tollgate's balance).
    let r = app
        .post(
            &format!("/v1/invoices/{id}/pay"),
            &t.key,
            json!({"paid_out_of_band": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .post(
            &format!("/v1/invoices/{id}/credit_notes"),
            &t.key,
            json!({"amount": "10.00", "reason": "other"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    drain_stripe(&app, 1).await;
    let st = fake.lock();
    let sinv = &st.invoices[&st.invoice_order[0]];
    assert_eq!(sinv.credit_notes, vec![(500, None), (1000, Some(1000))]);
}
