//! Governance (SPEC §12): the audit log, erasure and retention.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::fakes::{FakeStripe, Receiver};
use crate::helpers::{spawn_app, Resp, Tenant, TestApp, ADMIN_TOKEN};
use crate::stripe::{drain_stripe, drain_webhooks};
use tollgate::testing::stored;

/// The tenant's whole audit log, newest first.
async fn audit_log(app: &TestApp, t: &Tenant, query: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/audit_log?limit=100&{query}"), &t.key)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["has_more"], false);
    r.body["data"].as_array().unwrap().clone()
}

fn actions(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

fn request_id(r: &Resp) -> String {
    r.headers["x-request-id"].to_str().unwrap().to_string()
}

fn ok(r: &Resp, status: StatusCode) {
    assert_eq!(r.status, status, "{:?}", r.body);
}

#[tokio::test]
async fn every_change_is_logged_with_its_actor_action_resource_and_before_and_after() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;
    let key_id = app.get("/v1/api_keys", &t.key).await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let me = key_id.as_str();

    let f = app
        .post(
            "/v1/features",
            &t.key,
            json!({"key": "calls", "name": "Calls", "type": "metered"}),
        )
        .await;
    ok(&f, StatusCode::CREATED);
    let plan = |amount: &str| {
        json!({"key": "pro", "name": "Pro",
               "prices": [{"interval": "month", "amount": amount, "currency": "usd"}],
               "entitlements": [{"feature": "calls", "limit": 100, "reset": "month"}]})
    };
    ok(
        &app.post("/v1/plans", &t.key, plan("30.00")).await,
        StatusCode::CREATED,
    );
    ok(
        &app.put("/v1/plans/pro", &t.key, plan("35.00")).await,
        StatusCode::OK,
    );
    let patched = app
        .patch(
            "/v1/tenant",
            &t.key,
            json!({"invoice_grace_minutes": 0, "stripe": {"secret_key": "sk_test_not_logged"}}),
        )
        .await;
    ok(&patched, StatusCode::OK);
    let created = app
        .put(
            "/v1/customers/acme",
            &t.key,
            json!({"email": "billing@acme.test"}),
        )
        .await;
    ok(&created, StatusCode::CREATED);
    // The second identical PUT changes nothing, and logs nothing.
    for _ in 0..2 {
        ok(
            &app.put("/v1/customers/acme", &t.key, json!({"name": "Acme"}))
                .await,
            StatusCode::OK,
        );
    }
    let member = "/v1/customers/acme/members/ann";
    ok(
        &app.put(member, &t.key, json!({"role": "owner"})).await,
        StatusCode::CREATED,
    );
    ok(
        &app.put(member, &t.key, json!({"role": "admin"})).await,
        StatusCode::OK,
    );
    ok(&app.delete(member, &t.key).await, StatusCode::OK);
    let sub = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "acme", "plan": "pro"}),
        )
        .await;
    ok(&sub, StatusCode::CREATED);
    let sub_id = sub.body["id"].as_str().unwrap().to_string();
    let invoice_id = app.invoices(&t, "acme").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(
        &app.post(
            &format!("/v1/invoices/{invoice_id}/pay"),
            &t.key,
            json!({"paid_out_of_band": true}),
        )
        .await,
        StatusCode::OK,
    );
    ok(
        &app.post(
            &format!("/v1/subscriptions/{sub_id}/cancel"),
            &t.key,
            json!({}),
        )
        .await,
        StatusCode::OK,
    );
    ok(
        &app.post(
            &format!("/v1/subscriptions/{sub_id}/reactivate"),
            &t.key,
            json!({}),
        )
        .await,
        StatusCode::OK,
    );
    ok(
        &app.post(
            "/v1/customers/acme/credits",
            &t.key,
            json!({"amount": "5.00", "description": "Goodwill"}),
        )
        .await,
        StatusCode::CREATED,
    );
    let endpoint = app
        .post(
            "/v1/webhook_endpoints",
            &t.key,
            json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]}),
        )
        .await;
    ok(&endpoint, StatusCode::CREATED);
    let endpoint_id = endpoint.body["id"].as_str().unwrap().to_string();
    let secret = endpoint.body["secret"].as_str().unwrap().to_string();
    ok(
        &app.delete(&format!("/v1/webhook_endpoints/{endpoint_id}"), &t.key)
            .await,
        StatusCode::NO_CONTENT,
    );
    let minted = app
        .request(
            reqwest::Method::POST,
            &format!("/admin/v1/tenants/{}/api_keys", t.id),
            Some(ADMIN_TOKEN),
            Some(json!({})),
            &[],
        )
        .await;
    ok(&minted, StatusCode::CREATED);
    let second_key = minted.body["id"].as_str().unwrap().to_string();
    ok(
        &app.delete(&format!("/v1/api_keys/{second_key}"), &t.key)
            .await,
        StatusCode::OK,
    );
    let advance = app
        .post(
            "/v1/test_clock/advance",
            &t.key,
            json!({"to": "2027-02-01T00:00:00Z"}),
        )
        .await;
    ok(&advance, StatusCode::OK);
    let advance_request = request_id(&advance);

    let log = audit_log(&app, &t, "").await;
    // Newest first; the renewal's entries are the worker's, at the period end, before the
    // advance's own entry at its end.
    assert_eq!(
        actions(&log),
        [
            "test_clock.advanced",
            "invoice.finalized",
            "invoice.created",
            "subscription.renewed",
            "api_key.revoked",
            "api_key.created",
            "webhook_endpoint.deleted",
            "webhook_endpoint.created",
            "customer.credited",
            "subscription.reactivated",
            "subscription.canceled",
            "invoice.paid",
            "invoice.finalized",
            "invoice.created",
            "subscription.created",
            "member.removed",
            "member.updated",
            "member.added",
            "customer.updated",
            "customer.created",
            "tenant.updated",
            "plan.version_created",
            "plan.created",
            "feature.created",
            "api_key.created",
        ]
    );
    let by =
        |action: &str| -> Vec<&Value> { log.iter().filter(|e| e["action"] == action).collect() };
    // Who: the key, the operator, the worker (with the advance's request id).
    let advanced = by("test_clock.advanced")[0];
    assert_eq!(advanced["actor"], me);
    assert_eq!(advanced["resource"], format!("test_clock/{}", t.id));
    assert_eq!(advanced["request_id"], advance_request.as_str());
    assert_eq!(advanced["before"]["now"], "2027-01-01T00:00:00Z");
    assert_eq!(advanced["after"]["now"], "2027-02-01T00:00:00Z");
    assert_eq!(advanced["created_at"], "2027-02-01T00:00:00Z");
    for e in &log[1..4] {
        assert_eq!(e["actor"], "worker", "{e}");
        assert_eq!(e["request_id"], advance_request.as_str(), "{e}");
        assert_eq!(e["created_at"], "2027-02-01T00:00:00Z", "{e}");
    }
    let renewed = by("subscription.renewed")[0];
    assert_eq!(renewed["resource"], format!("subscription/{sub_id}"));
    assert_eq!(
        renewed["before"]["current_period_start"],
        "2027-01-01T00:00:00Z"
    );
    assert_eq!(
        renewed["after"]["current_period_start"],
        "2027-02-01T00:00:00Z"
    );
    let keys = by("api_key.created");
    assert_eq!(keys[0]["actor"], "admin");
    assert_eq!(keys[0]["resource"], format!("api_key/{second_key}"));
    assert_eq!(keys[1]["actor"], "admin");
    assert_eq!(keys[1]["resource"], format!("api_key/{key_id}"));
    let revoked = by("api_key.revoked")[0];
    assert_eq!(revoked["actor"], me);
    assert!(revoked["after"]["revoked_at"].is_string());
    for e in &log[4..] {
        if e["action"] != "api_key.created" {
            assert_eq!(e["actor"], me, "{e}");
        }
        assert!(e["request_id"].is_string(), "{e}");
    }
    // What: before and after, as the API shows them.
    let tenant = by("tenant.updated")[0];
    assert_eq!(tenant["before"]["invoice_grace_minutes"], 60);
    assert_eq!(tenant["after"]["invoice_grace_minutes"], 0);
    assert_eq!(tenant["before"]["stripe"]["secret_key_set"], false);
    assert_eq!(tenant["after"]["stripe"]["secret_key_set"], true);
    let version = by("plan.version_created")[0];
    assert_eq!(version["resource"], "plan/pro");
    assert_eq!(version["before"]["version"], 1);
    assert_eq!(version["after"]["version"], 2);
    assert_eq!(by("plan.created")[0]["after"]["version"], 1);
    assert_eq!(by("feature.created")[0]["after"]["key"], "calls");
    let updated = by("customer.updated")[0];
    assert_eq!(updated["resource"], "customer/acme");
    assert_eq!(updated["before"]["name"], Value::Null);
    assert_eq!(updated["after"]["name"], "Acme");
    assert_eq!(updated["after"]["email"], "billing@acme.test");
    assert_eq!(by("customer.created")[0]["before"], Value::Null);
    let member_updated = by("member.updated")[0];
    assert_eq!(member_updated["resource"], "member/acme/ann");
    assert_eq!(member_updated["before"]["role"], "owner");
    assert_eq!(member_updated["after"]["role"], "admin");
    let removed = by("member.removed")[0];
    assert_eq!(removed["before"]["role"], "admin");
    assert_eq!(removed["after"], Value::Null);
    let canceled = by("subscription.canceled")[0];
    assert_eq!(canceled["before"]["cancel_at_period_end"], false);
    assert_eq!(canceled["after"]["cancel_at_period_end"], true);
    assert_eq!(
        by("subscription.reactivated")[0]["after"]["cancel_at_period_end"],
        false
    );
    let paid = by("invoice.paid")[0];
    assert_eq!(paid["resource"], format!("invoice/{invoice_id}"));
    assert_eq!(paid["before"]["status"], "open");
    assert_eq!(paid["after"]["status"], "paid");
    assert_eq!(paid["after"]["total"], "35.00");
    assert_eq!(by("customer.credited")[0]["after"]["amount"], "5.00");
    let hook = by("webhook_endpoint.created")[0];
    assert_eq!(hook["after"]["url"], "http://127.0.0.1:9/hook");
    assert_eq!(hook["after"]["secret"], Value::Null);
    // Times are the tenant's clock.
    assert_eq!(
        by("customer.created")[0]["created_at"],
        "2027-01-01T00:00:00Z"
    );
    // No secret is ever logged.
    let text = serde_json::to_string(&log).unwrap();
    for secret in [t.key.as_str(), secret.as_str(), "sk_test_not_logged"] {
        assert!(!text.contains(secret), "{secret} is in the audit log");
    }

    // Filters: by resource, actor and action, each exact.
    let acme = audit_log(&app, &t, "resource=customer/acme").await;
    assert_eq!(
        actions(&acme),
        ["customer.credited", "customer.updated", "customer.created"]
    );
    let worker = audit_log(&app, &t, "actor=worker").await;
    assert_eq!(worker.len(), 3);
    let admin = audit_log(&app, &t, "actor=admin&action=api_key.created").await;
    assert_eq!(admin.len(), 2);
    let renewed_only = audit_log(&app, &t, "action=subscription.renewed").await;
    assert_eq!(renewed_only.len(), 1);
    // Cursor pages: newest first, each entry once.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = after
            .as_ref()
            .map(|a| format!("&starting_after={a}"))
            .unwrap_or_default();
        let page = app.get(&format!("/v1/audit_log?limit=7{q}"), &t.key).await;
        ok(&page, StatusCode::OK);
        let data = page.body["data"].as_array().unwrap();
        seen.extend(data.iter().map(|e| e["id"].as_str().unwrap().to_string()));
        after = data.last().map(|e| e["id"].as_str().unwrap().to_string());
        if page.body["has_more"] == false {
            break;
        }
    }
    let all: Vec<String> = log
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, all);
    // A cursor of no entry of the tenant's, and bad filters.
    let missing = app
        .get(
            &format!("/v1/audit_log?starting_after=aud_{}", "0".repeat(32)),
            &t.key,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "audit_entry_not_found");
    let bad = app.get("/v1/audit_log?limit=0", &t.key).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let unknown = app.get("/v1/audit_log?who=me", &t.key).await;
    assert_eq!(unknown.code(), "unknown_field");

    // Another tenant sees none of it, and its cursor is a 404 here.
    let other = app.tenant("test").await;
    let theirs = audit_log(&app, &other, "").await;
    assert_eq!(actions(&theirs), ["api_key.created"]);
    let foreign = app
        .get(
            &format!(
                "/v1/audit_log?starting_after={}",
                log[0]["id"].as_str().unwrap()
            ),
            &other.key,
        )
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_failed_change_leaves_no_entry_and_the_database_refuses_to_rewrite_the_log() {
    let app = spawn_app().await;
    let t = app.tenant_with_plan(json!({"limit": 10})).await;
    app.customer(&t, "acme").await;
    let before = stored::row_counts(&app.db, Some(&t.tid())).await.unwrap();
    // Each fails part-way or at validation: nothing of it is written, its entry neither.
    let failures = [
        app.patch(
            "/v1/tenant",
            &t.key,
            json!({"default_plan": "p", "stripe": {"api_base": "ftp://nope"}}),
        )
        .await,
        app.post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "acme", "plan": "p"}),
        )
        .await,
        app.put(
            "/v1/customers/acme/members/ann",
            &t.key,
            json!({"role": "emperor"}),
        )
        .await,
        app.delete("/v1/customers/nobody", &t.key).await,
    ];
    let codes: Vec<&str> = failures.iter().map(|r| r.code()).collect();
    assert_eq!(
        codes,
        [
            "invalid_url",
            "subscription_exists",
            "invalid_role",
            "customer_not_found"
        ]
    );
    let after = stored::row_counts(&app.db, Some(&t.tid())).await.unwrap();
    assert_eq!(before, after);

    // UPDATE, DELETE and TRUNCATE are refused by the table itself, even for the superuser
    // the tests connect as.
    assert!(after.audit_log >= 4);
    for how in ["update", "delete", "truncate"] {
        let err = stored::tamper_with_audit_log(&app.db, &t.tid(), how)
            .await
            .expect_err(how);
        let db_err = err.as_database_error().expect("a database error");
        assert_eq!(db_err.code().as_deref(), Some("42501"), "{how}: {db_err}");
        assert!(db_err.message().contains("append-only"), "{db_err}");
    }
    let unchanged = stored::row_counts(&app.db, Some(&t.tid())).await.unwrap();
    assert_eq!(unchanged.audit_log, after.audit_log);
    let log = audit_log(&app, &t, "").await;
    assert!(log.iter().all(|e| e["actor"] != "someone else"));
}

/// `pg_dump` of the test database, data only, as text.
fn dump(app: &TestApp) -> String {
    let pg_dump = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|versions| {
            versions
                .flatten()
                .map(|v| v.path().join("bin/pg_dump"))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| "pg_dump".into());
    let out = std::process::Command::new(pg_dump)
        .args(["--data-only", "--dbname", &app.db_url])
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn erasure_removes_personal_data_everywhere_and_keeps_the_accounting() {
    let app = spawn_app().await;
    let stripe = FakeStripe::start().await;
    let receiver = Receiver::start().await;
    let t = app.tenant("test").await;
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;
    for (path, body) in [
        (
            "/v1/features",
            json!({"key": "calls", "name": "Calls", "type": "metered"}),
        ),
        (
            "/v1/plans",
            json!({"key": "pro", "name": "Pro",
                   "prices": [{"interval": "month", "amount": "30.00", "currency": "usd"}],
                   "entitlements": [{"feature": "calls", "limit": 100, "reset": "month"}]}),
        ),
        (
            "/v1/webhook_endpoints",
            json!({"url": receiver.url, "events": ["*"]}),
        ),
    ] {
        ok(&app.post(path, &t.key, body).await, StatusCode::CREATED);
    }
    ok(
        &app.patch(
            "/v1/tenant",
            &t.key,
            json!({"stripe": {"secret_key": "sk_test_x", "api_base": stripe.base}}),
        )
        .await,
        StatusCode::OK,
    );
    let email = "jane.doe@private.example";
    let member_email = "ann.member@private.example";
    ok(
        &app.put(
            "/v1/customers/jane",
            &t.key,
            json!({"email": email, "name": "Jane Privatename",
                   "metadata": {"phone": "+44 7700 900123"}}),
        )
        .await,
        StatusCode::CREATED,
    );
    ok(
        &app.put(
            "/v1/customers/jane/members/ann",
            &t.key,
            json!({"role": "owner", "email": member_email, "name": "Ann Membername"}),
        )
        .await,
        StatusCode::CREATED,
    );
    let sub = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "jane", "plan": "pro"}),
        )
        .await;
    ok(&sub, StatusCode::CREATED);
    let usage = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "jane", "feature": "calls", "quantity": 7, "id": "ev-1"}),
        )
        .await;
    ok(&usage, StatusCode::OK);
    // Stripe learns of the customer; webhooks carry its data out.
    drain_stripe(&app, 1).await;
    drain_webhooks(&app).await;
    assert_eq!(receiver.of_type("customer.created").len(), 1);
    let before = dump(&app);
    assert!(before.contains(email) && before.contains(member_email));
    assert!(before.contains("Jane Privatename") && before.contains("+44 7700 900123"));

    app.set_clock(&t, "2027-01-16T00:00:00Z").await;
    let erased = app.delete("/v1/customers/jane", &t.key).await;
    ok(&erased, StatusCode::OK);
    assert_eq!(erased.body["id"], "jane");
    assert_eq!(erased.body["email"], Value::Null);
    assert_eq!(erased.body["name"], Value::Null);
    assert_eq!(erased.body["metadata"], json!({}));

    // Gone from every table and every stored copy.
    let after = dump(&app);
    for personal in [
        email,
        member_email,
        "Jane Privatename",
        "Ann Membername",
        "+44 7700 900123",
    ] {
        assert!(!after.contains(personal), "{personal} is still stored");
    }
    // The customer's own reads are 404, the list leaves it out, a new PUT is refused.
    for path in [
        "/v1/customers/jane",
        "/v1/customers/jane/subscription",
        "/v1/customers/jane/members",
        "/v1/customers/jane/export",
    ] {
        let r = app.get(path, &t.key).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.code(), "customer_not_found", "{path}");
    }
    let list = app.get("/v1/customers", &t.key).await;
    assert_eq!(list.body["data"], json!([]));
    let again = app
        .put("/v1/customers/jane", &t.key, json!({"email": email}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "customer_erased");
    let twice = app.delete("/v1/customers/jane", &t.key).await;
    assert_eq!(twice.status, StatusCode::NOT_FOUND);
    // Usage is refused for it now.
    let late = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "jane", "feature": "calls", "quantity": 1}),
        )
        .await;
    assert_eq!(late.status, StatusCode::NOT_FOUND);

    // The subscription ended now, with no fall-back; the invoices stay and still answer.
    let sub_id = sub.body["id"].as_str().unwrap();
    let ended = app
        .get(&format!("/v1/subscriptions/{sub_id}"), &t.key)
        .await;
    assert_eq!(ended.body["status"], "canceled");
    assert_eq!(ended.body["ended_at"], "2027-01-16T00:00:00Z");
    let first = stored::subscription_history(&app.db, &t.tid(), "jane")
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|h| h.event.as_str()).collect::<Vec<_>>(),
        ["created", "ended"]
    );
    let counts = stored::row_counts(&app.db, Some(&t.tid())).await.unwrap();
    assert_eq!(counts.subscriptions, 1);
    assert_eq!(counts.usage_events, 1);
    // The first invoice; the final one would bill overage, and 7 of 100 calls has none.
    assert_eq!(counts.invoices, 1);
    assert_eq!(
        stored::raw_event_ids(&app.db, &t.tid()).await.unwrap(),
        ["ev-1"]
    );
    let counted = stored::counter_values(&app.db, &t.tid()).await.unwrap();
    assert_eq!(
        counted.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        ["7"]
    );

    // The audit log keeps the facts and the actor, with the personal fields erased.
    let log = audit_log(&app, &t, "resource=customer/jane").await;
    assert_eq!(actions(&log), ["customer.erased", "customer.created"]);
    assert_eq!(log[1]["after"]["email"], "[erased]");
    assert_eq!(log[1]["after"]["name"], "[erased]");
    assert_eq!(log[1]["after"]["metadata"], "[erased]");
    assert_eq!(log[1]["after"]["net_days"], 0);
    assert_eq!(log[0]["before"]["email"], "[erased]");
    let member = audit_log(&app, &t, "resource=member/jane/ann").await;
    assert_eq!(member[0]["after"]["email"], "[erased]");
    assert_eq!(member[0]["after"]["role"], "owner");
    let canceled = audit_log(&app, &t, "action=subscription.canceled").await;
    assert_eq!(canceled[0]["after"]["status"], "canceled");

    // Stripe's customer is cleared through the outbox.
    drain_stripe(&app, 1).await;
    let st = stripe.lock();
    let update = st
        .seen
        .iter()
        .find(|s| s.path == "/v1/customers/cus_1")
        .expect("the Stripe customer is updated");
    assert_eq!(update.form.get("email").map(String::as_str), Some(""));
    assert_eq!(update.form.get("name").map(String::as_str), Some(""));
}

#[tokio::test]
async fn erasure_is_per_tenant() {
    let app = spawn_app().await;
    let a = app.tenant("test").await;
    let b = app.tenant("test").await;
    app.customer(&a, "shared-id").await;
    app.customer(&b, "shared-id").await;
    let r = app.delete("/v1/customers/shared-id", &a.key).await;
    assert_eq!(r.status, StatusCode::OK);
    // B's customer of the same id is untouched; A's is gone.
    assert_eq!(
        app.get("/v1/customers/shared-id", &b.key).await.status,
        StatusCode::OK
    );
    // B cannot erase (or export) A's customers: they are 404 to it, and stay.
    app.customer(&a, "only-a").await;
    for r in [
        app.delete("/v1/customers/only-a", &b.key).await,
        app.get("/v1/customers/only-a/export", &b.key).await,
    ] {
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.code(), "customer_not_found");
    }
    assert_eq!(
        app.get("/v1/customers/only-a", &a.key).await.status,
        StatusCode::OK
    );
    let b_log = audit_log(&app, &b, "").await;
    assert_eq!(actions(&b_log), ["customer.created", "api_key.created"]);
}

#[tokio::test]
async fn retention_purges_raw_events_past_the_plan_and_keeps_totals_and_duplicates() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    app.apply_toml(&t, "config/examples/003_transcription.toml")
        .await;
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;
    // Free (30 days), Pro (a year) and Business (for ever).
    app.customer(&t, "free-coach").await;
    for (customer, plan) in [("pro-coach", "pro"), ("biz-coach", "business")] {
        app.customer(&t, customer).await;
        let sub = app
            .get(&format!("/v1/customers/{customer}/subscription"), &t.key)
            .await;
        let id = sub.body["id"].as_str().unwrap();
        ok(
            &app.post(
                &format!("/v1/subscriptions/{id}/change"),
                &t.key,
                json!({"plan": plan}),
            )
            .await,
            StatusCode::OK,
        );
    }
    let record = |customer: &'static str, id: String, at: &'static str| {
        let app = &app;
        let key = t.key.clone();
        async move {
            let r = app
                .post(
                    "/v1/usage",
                    &key,
                    json!({"customer": customer, "feature": "sessions", "quantity": 1,
                           "id": id, "timestamp": at}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            r
        }
    };
    app.set_clock(&t, "2027-01-01T12:00:00Z").await;
    for customer in ["free-coach", "pro-coach", "biz-coach"] {
        record(customer, format!("{customer}-jan"), "2027-01-01T10:00:00Z").await;
    }
    app.advance_clock(&t, "2027-01-25T12:00:00Z").await;
    for customer in ["free-coach", "pro-coach", "biz-coach"] {
        record(customer, format!("{customer}-late"), "2027-01-25T10:00:00Z").await;
    }
    // Nothing is old enough yet.
    let at_start = stored::raw_event_ids(&app.db, &t.tid()).await.unwrap();
    assert_eq!(at_start.len(), 6);
    let counters_before = stored::counter_values(&app.db, &t.tid()).await.unwrap();

    // 2027-02-05: the free customer's first event is past 30 days, its later one (11 days)
    // is not; Pro and Business keep everything.
    let advanced = app.advance_clock(&t, "2027-02-05T00:00:00Z").await;
    assert_eq!(advanced["processed"]["usage_events_purged"], 1);
    let kept = stored::raw_event_ids(&app.db, &t.tid()).await.unwrap();
    assert_eq!(
        kept,
        [
            "biz-coach-jan",
            "biz-coach-late",
            "free-coach-late",
            "pro-coach-jan",
            "pro-coach-late"
        ]
    );
    // The period totals stay (the counters are untouched), and the purged id is still a
    // duplicate that counts nothing again.
    let totals = stored::counter_values(&app.db, &t.tid()).await.unwrap();
    let resent = record(
        "free-coach",
        "free-coach-jan".to_string(),
        "2027-01-01T10:00:00Z",
    )
    .await;
    assert_eq!(resent.body["duplicate"], true);
    assert_eq!(
        stored::counter_values(&app.db, &t.tid()).await.unwrap(),
        totals
    );
    assert_eq!(totals, counters_before);
    assert_eq!(
        stored::row_counts(&app.db, Some(&t.tid()))
            .await
            .unwrap()
            .usage_events_purged,
        1
    );

    // 2028-01-10: Free's later event is past 30 days and Pro's first one past a year (its
    // later one is 350 days old); Business keeps everything.
    let later = app.advance_clock(&t, "2028-01-10T00:00:00Z").await;
    assert_eq!(later["processed"]["usage_events_purged"], 2);
    let kept = stored::raw_event_ids(&app.db, &t.tid()).await.unwrap();
    assert_eq!(kept, ["biz-coach-jan", "biz-coach-late", "pro-coach-late"]);
}

#[tokio::test]
async fn the_subscription_lifecycle_is_logged_verb_by_verb() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;
    ok(
        &app.post(
            "/v1/features",
            &t.key,
            json!({"key": "calls", "name": "Calls", "type": "metered"}),
        )
        .await,
        StatusCode::CREATED,
    );
    for (key, amount) in [("basic", "10.00"), ("pro", "30.00")] {
        let plan = json!({"key": key, "name": key, "trial_days": 14,
            "prices": [{"interval": "month", "amount": amount, "currency": "usd"}],
            "entitlements": [{"feature": "calls", "limit": 100, "reset": "month"}]});
        ok(
            &app.post("/v1/plans", &t.key, plan).await,
            StatusCode::CREATED,
        );
    }
    app.customer(&t, "acme").await;
    let sub = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "acme", "plan": "basic"}),
        )
        .await;
    ok(&sub, StatusCode::CREATED);
    assert_eq!(sub.body["status"], "trialing");
    let id = sub.body["id"].as_str().unwrap().to_string();
    let change = |plan: &'static str| {
        let (app, key, id) = (&app, t.key.clone(), id.clone());
        async move {
            let r = app
                .post(
                    &format!("/v1/subscriptions/{id}/change"),
                    &key,
                    json!({"plan": plan}),
                )
                .await;
            ok(&r, StatusCode::OK);
        }
    };
    change("pro").await; // during the trial: now
    app.advance_clock(&t, "2027-01-15T00:00:00Z").await; // the trial ends
    change("basic").await; // a downgrade: at period end
    app.advance_clock(&t, "2027-02-15T00:00:00Z").await; // it applies
    ok(
        &app.post(&format!("/v1/subscriptions/{id}/cancel"), &t.key, json!({}))
            .await,
        StatusCode::OK,
    );
    app.advance_clock(&t, "2027-03-15T00:00:00Z").await; // it ends

    let log = audit_log(&app, &t, &format!("resource=subscription/{id}")).await;
    let seen: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                if e["actor"] == "worker" {
                    "worker"
                } else {
                    "key"
                },
                e["created_at"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("subscription.ended", "worker", "2027-03-15T00:00:00Z"),
            ("subscription.canceled", "key", "2027-02-15T00:00:00Z"),
            ("subscription.changed", "worker", "2027-02-15T00:00:00Z"),
            (
                "subscription.change_scheduled",
                "key",
                "2027-01-15T00:00:00Z"
            ),
            ("subscription.trial_ended", "worker", "2027-01-15T00:00:00Z"),
            ("subscription.changed", "key", "2027-01-01T00:00:00Z"),
            ("subscription.created", "key", "2027-01-01T00:00:00Z"),
        ]
    );
    assert_eq!(log[1]["after"]["cancel_at_period_end"], true);
    assert_eq!(log[2]["before"]["plan"], "pro");
    assert_eq!(log[2]["after"]["plan"], "basic");
    assert_eq!(log[4]["before"]["status"], "trialing");
    assert_eq!(log[4]["after"]["status"], "active");
    assert_eq!(log[5]["before"]["plan"], "basic");
    assert_eq!(log[5]["after"]["plan"], "pro");

    // An open invoice voided, and one credited: both logged with the invoice before and after.
    let invoices = app.invoices(&t, "acme").await;
    let open: Vec<&Value> = invoices.iter().filter(|i| i["status"] == "open").collect();
    assert!(open.len() >= 2, "{invoices:?}");
    let (first, second) = (
        open[0]["id"].as_str().unwrap(),
        open[1]["id"].as_str().unwrap(),
    );
    ok(
        &app.post(&format!("/v1/invoices/{first}/void"), &t.key, json!({}))
            .await,
        StatusCode::OK,
    );
    ok(
        &app.post(
            &format!("/v1/invoices/{second}/credit_notes"),
            &t.key,
            json!({"amount": "1.00", "reason": "order_change"}),
        )
        .await,
        StatusCode::CREATED,
    );
    let voided = audit_log(&app, &t, &format!("resource=invoice/{first}")).await;
    assert_eq!(voided[0]["action"], "invoice.voided");
    assert_eq!(voided[0]["before"]["status"], "open");
    assert_eq!(voided[0]["after"]["status"], "void");
    let credited = audit_log(&app, &t, &format!("resource=invoice/{second}")).await;
    assert_eq!(credited[0]["action"], "invoice.credit_note_created");
    assert_eq!(credited[0]["before"]["credit_notes_total"], "0.00");
    assert_eq!(
        credited[0]["after"]["invoice"]["credit_notes_total"],
        "1.00"
    );
    assert_eq!(credited[0]["after"]["credit_note"]["amount"], "1.00");
}

#[tokio::test]
async fn workers_purging_at_once_purge_each_event_exactly_once() {
    let app = spawn_app().await;
    // A real-time tenant: the worker's own purge, not an advance.
    let t = app.tenant("test").await;
    app.apply_toml(&t, "config/examples/003_transcription.toml")
        .await;
    let now = chrono::Utc::now();
    let mut customers = Vec::new();
    for c in 0..6 {
        let customer = format!("coach-{c}");
        app.customer(&t, &customer).await;
        customers.push(customer);
    }
    // 40 days old (past Free's 30) and 2 days old, for each customer.
    let mut old = 0;
    for customer in &customers {
        for (i, days) in [40, 40, 40, 2].into_iter().enumerate() {
            let at = (now - chrono::Duration::days(days)).to_rfc3339();
            let r = app
                .post(
                    "/v1/usage",
                    &t.key,
                    json!({"customer": customer, "feature": "sessions", "quantity": 1,
                           "id": format!("{customer}-{i}"), "timestamp": at}),
                )
                .await;
            ok(&r, StatusCode::OK);
            old += usize::from(days == 40);
        }
    }
    let runs = (0..4).map(|_| tollgate::testing::purge_usage(&app.db));
    let purged: u64 = futures::future::join_all(runs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    assert_eq!(purged, old as u64);
    let kept = stored::raw_event_ids(&app.db, &t.tid()).await.unwrap();
    let expected: Vec<String> = customers.iter().map(|c| format!("{c}-3")).collect();
    assert_eq!(kept, expected);
    let counts = stored::row_counts(&app.db, Some(&t.tid())).await.unwrap();
    assert_eq!(counts.usage_events_purged, old as i64);
    // Nothing is left to purge.
    assert_eq!(tollgate::testing::purge_usage(&app.db).await.unwrap(), 0);
}
