//! The hosted customer portal (SPEC §9), clicked through in a real headless Chromium.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::browser::Browser;
use crate::helpers::{spawn_app, Tenant, TestApp};

/// A test tenant at 2027-01-01 with `calls` (10 a month) on `free` (the default) and `pro`
/// ($31/month, 100 calls), branded, and `customer` on `free`.
async fn tenant(app: &TestApp, customer: Value) -> Tenant {
    let t = app.tenant("test").await;
    app.set_clock(&t, "2027-01-01T00:00:00Z").await;
    for (path, body) in [
        (
            "/v1/features",
            json!({"key": "calls", "name": "API calls", "type": "metered"}),
        ),
        (
            "/v1/features",
            json!({"key": "sso", "name": "Single sign-on", "type": "boolean"}),
        ),
        (
            "/v1/plans",
            json!({"key": "free", "name": "Free", "default": true,
                   "entitlements": [{"feature": "calls", "limit": 10, "reset": "month"}]}),
        ),
        (
            "/v1/plans",
            json!({"key": "pro", "name": "Pro",
                   "prices": [{"interval": "month", "amount": "31.00", "currency": "usd"}],
                   "entitlements": [{"feature": "calls", "limit": 100, "reset": "month"},
                                    {"feature": "sso"}]}),
        ),
    ] {
        let r = app.post(path, &t.key, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let r = app
        .patch(
            "/v1/tenant",
            &t.key,
            json!({"portal": {"name": "Acme Billing", "accent_color": "#0E7490"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let id = customer["id"].as_str().unwrap();
    let mut body = customer.clone();
    body.as_object_mut().unwrap().remove("id");
    let r = app.put(&format!("/v1/customers/{id}"), &t.key, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    t
}

async fn portal_url(app: &TestApp, t: &Tenant, customer: &str) -> String {
    let r = app
        .post(
            "/v1/customer_sessions",
            &t.key,
            json!({"customer": customer}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    format!(
        "{}/portal?session={}",
        app.base,
        r.body["token"].as_str().unwrap()
    )
}

async fn use_calls(app: &TestApp, t: &Tenant, customer: &str, n: u32) {
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": customer, "feature": "calls", "quantity": n}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_near_its_limit_upgrades_cancels_and_reactivates_by_clicking() {
    let app = spawn_app().await;
    let t = tenant(&app, json!({"id": "ann", "name": "Ann Example"})).await;
    use_calls(&app, &t, "ann", 9).await;
    app.set_clock(&t, "2027-01-17T00:00:00Z").await;
    let url = portal_url(&app, &t, "ann").await;
    let b = Browser::start().await;

    // The token is traded for a cookie and leaves the URL.
    b.goto(&url).await;
    assert_eq!(b.url().await, format!("{}/portal", app.base));
    assert_eq!(b.text("header h1").await, "Acme Billing");
    // The bar: 9 of 10, in the warning colour.
    let bar = ".meter[data-feature=\"calls\"]";
    assert_eq!(
        b.attr(bar, "data-warning-level").await.as_deref(),
        Some("warning")
    );
    assert_eq!(b.text(&format!("{bar} .meter-numbers")).await, "9 / 10");
    assert_eq!(
        b.attr(&format!("{bar} progress"), "value").await.as_deref(),
        Some("9")
    );
    assert_eq!(
        b.style(&format!("{bar} progress"), "accent-color").await,
        "rgb(217, 119, 6)"
    );
    assert!(b
        .text(&format!("{bar} .resets"))
        .await
        .contains("2027-02-01"));
    assert_eq!(b.count("[data-plan]").await, 2);
    assert!(b
        .attr("[data-plan=\"free\"]", "data-current")
        .await
        .is_some());
    assert!(b
        .text("[data-plan=\"pro\"] .changes")
        .await
        .contains("Single sign-on: no → yes"));
    // Upgrading on the 17th charges 31.00 × 15/31 days = 15.00 now: the same figure on the
    // card, on the confirmation page and on the invoice.
    assert_eq!(
        b.text("[data-plan=\"pro\"] [data-effect]").await,
        "15.00 USD now"
    );
    b.screenshot("docs/portal.png").await;
    b.click_to(
        "[data-plan=\"pro\"] a[data-action=\"upgrade\"]",
        &format!("{}/portal/change?plan=pro", app.base),
    )
    .await;
    assert_eq!(b.text("[data-amount-now]").await, "15.00 USD");
    let changed = format!("{}/portal?notice=changed", app.base);
    b.click_to("button[name=\"confirm\"]", &changed).await;
    assert_eq!(
        b.attr("[data-current-plan]", "data-current-plan")
            .await
            .as_deref(),
        Some("pro")
    );
    assert!(b
        .attr("[data-plan=\"pro\"]", "data-current")
        .await
        .is_some());
    assert_eq!(b.text("[data-invoice] [data-total]").await, "15.00 USD");
    assert_eq!(b.text(&format!("{bar} .meter-numbers")).await, "9 / 100");
    assert_eq!(
        b.attr(bar, "data-warning-level").await.as_deref(),
        Some("safe")
    );
    let sub = app.get("/v1/customers/ann/subscription", &t.key).await;
    assert_eq!(sub.body["plan"], "pro");
    let invoices = app.invoices(&t, "ann").await;
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0]["total"], "15.00");

    // Cancel at period end, then keep the plan.
    b.click_to(
        "button[name=\"cancel\"]",
        &format!("{}/portal?notice=canceled", app.base),
    )
    .await;
    assert!(b.text(".next").await.starts_with("Cancels on 2027-02-01"));
    let sub = app.get("/v1/customers/ann/subscription", &t.key).await;
    assert_eq!(sub.body["cancel_at_period_end"], true);
    b.click_to(
        "button[name=\"reactivate\"]",
        &format!("{}/portal?notice=reactivated", app.base),
    )
    .await;
    assert!(b.text(".next").await.starts_with("Renews on 2027-02-01"));
    let sub = app.get("/v1/customers/ann/subscription", &t.key).await;
    assert_eq!(sub.body["cancel_at_period_end"], false);

    // The invoice's PDF link answers a PDF to this browser's cookie.
    let href = b
        .attr("[data-invoice] a", "href")
        .await
        .expect("a PDF link");
    let cookies = b.client.get_all_cookies().await.unwrap();
    let cookie = cookies
        .iter()
        .find(|c| c.name() == "tg_portal")
        .expect("the portal cookie");
    assert!(cookie.http_only().unwrap_or(false));
    let pdf = reqwest::Client::new()
        .get(format!(
            "{}{}",
            app.base,
            href.trim_start_matches(&app.base)
        ))
        .header("cookie", format!("tg_portal={}", cookie.value()))
        .send()
        .await
        .unwrap();
    assert_eq!(pdf.status(), StatusCode::OK);
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    assert!(pdf.bytes().await.unwrap().starts_with(b"%PDF"));

    // What the portal did is the session's in the audit log.
    let log = app
        .get("/v1/audit_log?action=subscription.changed", &t.key)
        .await;
    assert!(log.body["data"][0]["actor"]
        .as_str()
        .unwrap()
        .starts_with("session:csn_"));
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_customer_never_sees_another_and_a_forged_form_changes_nothing() {
    let app = spawn_app().await;
    let t = tenant(&app, json!({"id": "ann", "name": "Ann"})).await;
    app.put("/v1/customers/bob", &t.key, json!({"name": "Bob"}))
        .await;
    let bob_sub = app.get("/v1/customers/bob/subscription", &t.key).await;
    let r = app
        .post(
            &format!(
                "/v1/subscriptions/{}/change",
                bob_sub.body["id"].as_str().unwrap()
            ),
            &t.key,
            json!({"plan": "pro"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let bob_invoice = app.invoices(&t, "bob").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = Browser::start().await;
    b.goto(&portal_url(&app, &t, "ann").await).await;
    assert_eq!(b.text("[data-customer]").await, "Ann");
    assert_eq!(b.count("[data-invoice]").await, 0);

    // URL tampering: Bob's invoice through Ann's session is not found.
    b.goto(&format!("{}/portal/invoices/{bob_invoice}/pdf", app.base))
        .await;
    assert_eq!(
        b.attr("[data-error]", "data-error").await.as_deref(),
        Some("invoice_not_found")
    );
    // A tampered CSRF token: 403, and nothing changes.
    b.goto(&format!("{}/portal", app.base)).await;
    b.client
        .execute(
            "document.querySelector('form[action=\"/portal/cancel\"] input[name=csrf]').value = 'forged';",
            vec![],
        )
        .await
        .unwrap();
    b.click_to(
        "button[name=\"cancel\"]",
        &format!("{}/portal/cancel", app.base),
    )
    .await;
    assert_eq!(
        b.attr("[data-error]", "data-error").await.as_deref(),
        Some("invalid_csrf_token")
    );
    let sub = app.get("/v1/customers/ann/subscription", &t.key).await;
    assert_eq!(sub.body["cancel_at_period_end"], false);
    // A forged cookie is no session at all.
    b.goto(&format!("{}/portal", app.base)).await;
    b.client.delete_cookie("tg_portal").await.unwrap();
    let forged = format!("cs_{}_{}", "0".repeat(32), "x".repeat(40));
    b.client
        .execute(
            "document.cookie = 'tg_portal=' + arguments[0] + '; path=/portal';",
            vec![json!(forged)],
        )
        .await
        .unwrap();
    b.goto(&format!("{}/portal", app.base)).await;
    assert_eq!(
        b.attr("[data-error]", "data-error").await.as_deref(),
        Some("session_expired")
    );
    assert!(!b.client.source().await.unwrap().contains("Bob"));
    b.close().await;

    // Without a browser: the headers every page carries.
    let page = reqwest::get(format!("{}/portal", app.base)).await.unwrap();
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(page.headers()["x-frame-options"], "DENY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_text_is_shown_as_text_never_run() {
    let app = spawn_app().await;
    let evil = "<script>alert(1)</script>";
    let t = tenant(&app, json!({"id": "mallory", "name": evil})).await;
    let b = Browser::start().await;
    b.goto(&portal_url(&app, &t, "mallory").await).await;
    assert_eq!(b.text("[data-customer]").await, evil);
    // No alert was raised, and no script element exists on the page.
    assert!(b.client.get_alert_text().await.is_err());
    assert_eq!(b.count("script").await, 0);
    b.close().await;
}
