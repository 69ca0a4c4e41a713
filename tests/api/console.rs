//! The tenant console (SPEC §9), clicked through in a real headless Chromium.

use fantoccini::Locator;
use reqwest::StatusCode;
use serde_json::json;

use crate::browser::Browser;
use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_sign_in_search_customers_read_one_and_see_mrr_by_month() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    app.set_clock(&t, "2026-03-01T00:00:00Z").await;
    for (path, body) in [
        (
            "/v1/features",
            json!({"key": "calls", "name": "API calls", "type": "metered"}),
        ),
        (
            "/v1/plans",
            json!({"key": "free", "name": "Free", "default": true,
                   "entitlements": [{"feature": "calls", "limit": 10, "reset": "month"}]}),
        ),
        (
            "/v1/plans",
            json!({"key": "pro", "name": "Pro",
                   "prices": [{"interval": "month", "amount": "20.00", "currency": "usd"}],
                   "entitlements": [{"feature": "calls", "limit": 100, "reset": "month"}]}),
        ),
    ] {
        assert_eq!(
            app.post(path, &t.key, body).await.status,
            StatusCode::CREATED
        );
    }
    for i in 0..30 {
        let r = app
            .put(
                &format!("/v1/customers/c{i:02}"),
                &t.key,
                json!({"email": format!("person{i:02}@example.test"), "name": format!("Person {i:02}")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    // Five customers on Pro, then ten months on the clock.
    for i in 0..5 {
        let sub = app
            .get(&format!("/v1/customers/c{i:02}/subscription"), &t.key)
            .await;
        let id = sub.body["id"].as_str().unwrap();
        let r = app
            .post(
                &format!("/v1/subscriptions/{id}/change"),
                &t.key,
                json!({"plan": "pro"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    app.advance_clock(&t, "2027-01-15T00:00:00Z").await;
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "c00", "feature": "calls", "quantity": 96}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let b = Browser::start().await;
    // Signed out, the console sends you to its login page.
    b.goto(&format!("{}/console", app.base)).await;
    assert_eq!(b.url().await, format!("{}/console/login", app.base));
    // A wrong key is refused.
    let key_field = b
        .client
        .find(Locator::Css("input[name=\"api_key\"]"))
        .await
        .unwrap();
    key_field
        .send_keys("tg_test_not_a_key_at_all_xxxxxxxxxxxxxxxxx")
        .await
        .unwrap();
    b.click_to(
        "button[name=\"sign_in\"]",
        &format!("{}/console/login", app.base),
    )
    .await;
    assert_eq!(
        b.attr("[data-error]", "data-error").await.as_deref(),
        Some("invalid_api_key")
    );
    let key_field = b
        .client
        .find(Locator::Css("input[name=\"api_key\"]"))
        .await
        .unwrap();
    key_field.send_keys(&t.key).await.unwrap();
    b.click_to("button[name=\"sign_in\"]", &format!("{}/console", app.base))
        .await;

    // MRR: one point per month of GET /v1/analytics/mrr, and its last value.
    let mrr = app.get("/v1/analytics/mrr?months=12", &t.key).await;
    let months = mrr.body["data"].as_array().unwrap().len();
    assert_eq!(months, 12);
    assert_eq!(b.count("svg[data-chart=\"mrr\"]").await, 1);
    assert_eq!(b.count("svg[data-chart=\"mrr\"] circle").await, months);
    assert_eq!(b.count("tr[data-month]").await, months);
    assert_eq!(b.text("[data-mrr]").await, "100.00");
    assert_eq!(b.count("[data-plan]").await, 2);
    b.screenshot("docs/console.png").await;

    // Customers: 25 a page, then the rest.
    assert_eq!(b.count("tr[data-customer]").await, 25);
    let next = b.attr("a[data-next]", "href").await.unwrap();
    b.goto(&format!(
        "{}{}",
        app.base,
        next.trim_start_matches(&app.base)
    ))
    .await;
    assert_eq!(b.count("tr[data-customer]").await, 5);
    assert_eq!(b.count("a[data-next]").await, 0);
    // Search by email (and by id).
    b.goto(&format!("{}/console", app.base)).await;
    let q = b
        .client
        .find(Locator::Css("input[name=\"q\"]"))
        .await
        .unwrap();
    q.send_keys("PERSON07@").await.unwrap();
    b.click_to(
        "form.search button",
        &format!("{}/console?q=PERSON07%40", app.base),
    )
    .await;
    assert_eq!(b.count("tr[data-customer]").await, 1);
    assert_eq!(
        b.attr("tr[data-customer]", "data-customer")
            .await
            .as_deref(),
        Some("c07")
    );
    b.goto(&format!("{}/console?q=c0", app.base)).await;
    assert_eq!(b.count("tr[data-customer]").await, 10);

    // One customer: subscription, usage, invoices, alerts and audit entries.
    b.goto(&format!("{}/console?q=c00", app.base)).await;
    b.click_to(
        "tr[data-customer=\"c00\"] a",
        &format!("{}/console/customers/c00", app.base),
    )
    .await;
    assert!(b.text("[data-subscription]").await.contains("pro"));
    assert_eq!(
        b.attr(".meter[data-feature=\"calls\"]", "data-warning-level")
            .await
            .as_deref(),
        Some("critical")
    );
    let invoices = app.invoices(&t, "c00").await;
    assert_eq!(b.count("tr[data-invoice]").await, invoices.len());
    assert!(b.count("[data-alert]").await >= 2);
    assert!(b.text("#audit").await.contains("subscription.renewed"));

    // Sign out: the cookie no longer works.
    b.click_to(
        "button[name=\"logout\"]",
        &format!("{}/console/login", app.base),
    )
    .await;
    b.goto(&format!("{}/console", app.base)).await;
    assert_eq!(b.url().await, format!("{}/console/login", app.base));
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_docs_render_from_the_binary_without_the_internet() {
    let app = spawn_app().await;
    let b = Browser::start().await;
    b.goto(&format!("{}/docs", app.base)).await;
    // Swagger UI draws the operations from /openapi.json; everything it loads comes from
    // Tollgate itself (this machine has no internet, and the CSP allows only 'self').
    let first = b
        .client
        .wait()
        .at_most(std::time::Duration::from_secs(20))
        .for_element(Locator::Css(".opblock"))
        .await
        .expect("the operations are listed");
    assert!(!first.text().await.unwrap().is_empty());
    let spec = app.get("/openapi.json", "").await;
    let operations: usize = spec.body["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(b.count(".opblock").await, operations);
    let page = b.client.source().await.unwrap();
    assert!(page.contains("/v1/customers/{id}"));
    assert!(!page.contains("cdn."));
    b.close().await;
    let res = reqwest::get(format!("{}/docs/", app.base)).await.unwrap();
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
}
