use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;

use tollgate::db::hot_pool::HotConn;

use crate::helpers::{num, spawn_app, spawn_app_on, Tenant, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_limit_holds_under_200_concurrent_calls_across_two_processes() {
    let app = spawn_app().await;
    // A second app process on the same database: the limit must hold across processes.
    let app2 = Arc::new(spawn_app_on(&app.db_url).await);
    let t = app
        .tenant_with_plan(json!({"limit": 100, "reset": "month"}))
        .await;
    app.customer(&t, "u1").await;
    let app = Arc::new(app);
    let key = Arc::new(t.key.clone());
    let mut handles = Vec::new();
    for i in 0..200 {
        let target = if i % 2 == 0 {
            app.clone()
        } else {
            app2.clone()
        };
        let key = key.clone();
        handles.push(tokio::spawn(async move {
            target
                .post("/v1/usage", &key, json!({"customer": "u1", "feature": "f"}))
                .await
                .status
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for h in handles {
        match h.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::PAYMENT_REQUIRED => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 100);
    assert_eq!(refused, 100);
    let check = app
        .post("/v1/check", &key, json!({"customer": "u1", "feature": "f"}))
        .await;
    assert_eq!(num(&check.body["used"]), "100");
    assert_eq!(check.body["allowed"], false);
    assert_eq!(check.body["reason"], "limit_exceeded");
    let events = tollgate::testing::stored::row_counts(&app.db, Some(&t.tid()))
        .await
        .unwrap()
        .usage_events;
    assert_eq!(events, 100, "refused events record nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_id_50_times_concurrently_counts_once() {
    let app = Arc::new(spawn_app().await);
    let t = app.tenant_with_plan(json!({"limit": null})).await;
    app.customer(&t, "u1").await;
    let key = Arc::new(t.key.clone());
    let mut handles = Vec::new();
    for _ in 0..50 {
        let app = app.clone();
        let key = key.clone();
        handles.push(tokio::spawn(async move {
            app.post(
                "/v1/usage",
                &key,
                json!({"customer": "u1", "feature": "f", "quantity": 2.5, "id": "evt-1"}),
            )
            .await
        }));
    }
    let mut fresh = 0;
    for h in handles {
        let r = h.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(num(&r.body["used"]), "2.5");
        if r.body["duplicate"] == false {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1);
    // Also through the Idempotency-Key header, and much later: still a duplicate.
    let again = app
        .request(
            reqwest::Method::POST,
            "/v1/usage",
            Some(&key),
            Some(json!({"customer": "u1", "feature": "f", "quantity": 2.5})),
            &[("Idempotency-Key", "evt-1")],
        )
        .await;
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.body["id"], "evt-1");
    let counters = tollgate::testing::stored::counter_values(&app.db, &t.tid())
        .await
        .unwrap();
    assert_eq!(counters.len(), 1, "{counters:?}");
    let used = counters[0];
    assert_eq!(used.to_string(), "2.5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overage_is_billed_in_packages_and_refused_past_the_cap() {
    let app = spawn_app().await;
    let t = app
        .tenant_with_plan(json!({"limit": 120, "reset": "billing_period",
            "overage": {"unit_amount": "0.10", "per_units": 1, "cap_amount": "20.00"}}))
        .await;
    app.customer(&t, "u1").await;
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "quantity": 100}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // The example check of the README.
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "f", "quantity": 30}),
        )
        .await;
    assert_eq!(c.body["allowed"], true);
    assert_eq!(num(&c.body["limit"]), "120");
    assert_eq!(num(&c.body["remaining"]), "20");
    assert_eq!(num(&c.body["percent_used"]), "83.33");
    assert_eq!(c.body["warning_level"], "warning");
    assert_eq!(c.body["overage"]["unit_amount"], "0.10");
    assert_eq!(c.body["overage"]["billed_so_far"], "0.00");
    assert_eq!(c.body["overage"]["would_bill"], "1.00");
    assert_eq!(c.body["overage"]["cap_amount"], "20.00");
    assert!(c.body["resets_at"].is_string());
    // Up to 320 minutes fit under the $20 cap; the 321st is refused whole.
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "quantity": 220}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(num(&r.body["used"]), "320");
    assert_eq!(r.body["warning_level"], "exceeded");
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "quantity": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(r.code(), "spend_cap_reached");
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "f"}),
        )
        .await;
    assert_eq!(c.body["reason"], "spend_cap_reached");
    assert_eq!(c.body["overage"]["billed_so_far"], "20.00");
    // Usage that already happened is still counted; the charge stays capped.
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "quantity": 30, "enforce": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(num(&r.body["used"]), "350");
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "f"}),
        )
        .await;
    assert_eq!(c.body["overage"]["billed_so_far"], "20.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_limit_refuses_whole_events_and_enforce_false_goes_past() {
    let app = spawn_app().await;
    let t = app
        .tenant_with_plan(json!({"limit": 10, "reset": "month"}))
        .await;
    app.customer(&t, "u1").await;
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "quantity": 8}),
        )
        .await;
    assert_eq!(num(&r.body["remaining"]), "2");
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "quantity": 3}),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(r.code(), "limit_exceeded");
    assert_eq!(r.error_type(), "limit_exceeded");
    // A single event larger than the whole limit is refused too (the insert path).
    let t2 = app.tenant_with_plan(json!({"limit": 5})).await;
    app.customer(&t2, "u1").await;
    let r = app
        .post(
            "/v1/usage",
            &t2.key,
            json!({"customer": "u1", "feature": "f", "quantity": 6}),
        )
        .await;
    assert_eq!(r.code(), "limit_exceeded");
    let n = tollgate::testing::stored::row_counts(&app.db, Some(&t2.tid()))
        .await
        .unwrap()
        .usage_counters;
    assert_eq!(n, 0, "nothing written for a refused first event");
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "quantity": 3, "enforce": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(num(&r.body["used"]), "11");
    assert_eq!(num(&r.body["remaining"]), "0");
    assert_eq!(r.body["warning_level"], "exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_billable_events_are_kept_but_not_counted() {
    let app = spawn_app().await;
    let t = app
        .tenant_with_plan(json!({"limit": 2, "reset": "month"}))
        .await;
    app.customer(&t, "u1").await;
    for _ in 0..2 {
        let r = app
            .post(
                "/v1/usage",
                &t.key,
                json!({"customer": "u1", "feature": "f"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // At the limit, a free retry is still recorded and counts nowhere.
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "billable": false, "id": "retry-1"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(num(&r.body["used"]), "2");
    let events = tollgate::testing::stored::usage_events(&app.db, &t.tid())
        .await
        .unwrap();
    let billable = events
        .iter()
        .find(|e| e.event_id == "retry-1")
        .expect("the event is stored")
        .billable;
    assert!(!billable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_count_in_their_own_period_and_future_ones_are_refused() {
    let app = spawn_app().await;
    let t = app
        .tenant_with_plan(json!({"limit": 100, "reset": "month"}))
        .await;
    app.set_clock(&t, "2026-03-15T12:00:00Z").await;
    app.customer(&t, "u1").await;
    let r = app.post("/v1/usage", &t.key,
        json!({"customer": "u1", "feature": "f", "quantity": 7, "timestamp": "2026-02-27T08:00:00Z"})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(num(&r.body["used"]), "7");
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "quantity": 1}),
        )
        .await;
    assert_eq!(
        num(&r.body["used"]),
        "1",
        "March counts separately from February"
    );
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "timestamp": "2026-03-15T12:04:59Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "timestamp": "2026-03-15T12:05:01Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "timestamp_in_future");
    let h = app
        .get("/v1/customers/u1/usage/history?months=6", &t.key)
        .await;
    let data = h.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["period_start"], "2026-03-01T00:00:00Z");
    assert_eq!(num(&data[0]["used"]), "2");
    assert_eq!(data[1]["period_start"], "2026-02-01T00:00:00Z");
    assert_eq!(num(&data[1]["used"]), "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_aggregation_keeps_the_highest_level() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    app.post(
        "/v1/features",
        &t.key,
        json!({"key": "storage_gb", "name": "Storage", "type": "metered", "aggregation": "max"}),
    )
    .await;
    let p = app
        .post(
            "/v1/plans",
            &t.key,
            json!({"key": "s", "name": "S", "default": true,
        "entitlements": [{"feature": "storage_gb", "limit": 50, "reset": "month",
                          "overage": {"unit_amount": "0.10"}}]}),
        )
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{:?}", p.body);
    app.customer(&t, "u1").await;
    for (level, expect) in [
        (json!(12), "12"),
        (json!(55.5), "55.5"),
        (json!(30), "55.5"),
    ] {
        let r = app
            .post(
                "/v1/usage",
                &t.key,
                json!({"customer": "u1", "feature": "storage_gb", "quantity": level}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(num(&r.body["used"]), expect);
    }
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "storage_gb", "quantity": 0}),
        )
        .await;
    // 5.5 GB over at $0.10 per started GB = 6 packages.
    assert_eq!(c.body["overage"]["billed_so_far"], "0.60");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warning_levels_follow_the_tenant_thresholds() {
    let app = spawn_app().await;
    let t = app
        .tenant_with_plan(json!({"limit": 100, "reset": "month"}))
        .await;
    let r = app
        .patch(
            "/v1/tenant",
            &t.key,
            json!({"warning_thresholds": {"warning": 0.5, "critical": 0.9}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(num(&r.body["warning_thresholds"]["warning"]), "0.5");
    app.customer(&t, "u1").await;
    let levels = [
        (49, "safe"),
        (1, "warning"),
        (40, "critical"),
        (10, "exceeded"),
    ];
    for (q, level) in levels {
        let r = app
            .post(
                "/v1/usage",
                &t.key,
                json!({"customer": "u1", "feature": "f", "quantity": q}),
            )
            .await;
        assert_eq!(r.body["warning_level"], level, "after +{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_reports_each_event() {
    let app = spawn_app().await;
    let t = app
        .tenant_with_plan(json!({"limit": 3, "reset": "month"}))
        .await;
    app.customer(&t, "u1").await;
    let r = app
        .post(
            "/v1/usage/batch",
            &t.key,
            json!({"events": [
                {"customer": "u1", "feature": "f", "id": "a", "quantity": 2},
                {"customer": "u1", "feature": "f", "id": "a", "quantity": 2},
                {"customer": "u1", "feature": "f", "id": "b", "quantity": 2},
                {"customer": "u1", "feature": "f", "quantity": -1},
                {"customer": "nobody", "feature": "f"},
                {"customer": "u1", "feature": "f", "extra": true}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let statuses: Vec<&str> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "recorded",
            "duplicate",
            "refused",
            "invalid",
            "invalid",
            "invalid"
        ]
    );
    let res = r.body["results"].as_array().unwrap();
    assert_eq!(res[2]["error"]["code"], "limit_exceeded");
    assert_eq!(res[3]["error"]["code"], "invalid_quantity");
    assert_eq!(res[4]["error"]["code"], "customer_not_found");
    assert_eq!(res[5]["error"]["code"], "unknown_field");
    let too_many: Vec<_> = (0..1001)
        .map(|_| json!({"customer": "u1", "feature": "f"}))
        .collect();
    let r = app
        .post("/v1/usage/batch", &t.key, json!({"events": too_many}))
        .await;
    assert_eq!(r.code(), "too_many_events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entitlements_and_current_usage_cover_every_feature() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    for (key, ty) in [
        ("mod.a", "boolean"),
        ("mins", "metered"),
        ("file_mb", "limit"),
        ("jobs", "concurrency"),
    ] {
        let r = app
            .post(
                "/v1/features",
                &t.key,
                json!({"key": key, "name": key, "type": ty}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let p = app
        .post(
            "/v1/plans",
            &t.key,
            json!({"key": "pro", "name": "Pro", "default": true,
        "prices": [{"interval": "month", "amount": "29", "currency": "usd"}],
        "entitlements": [
            {"feature": "mod.a", "enabled": true},
            {"feature": "mins", "limit": -1},
            {"feature": "file_mb", "limit": 200},
            {"feature": "jobs", "limit": 3}]}),
        )
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{:?}", p.body);
    assert_eq!(p.body["prices"][0]["amount"], "29.00");
    app.customer(&t, "u1").await;
    app.post(
        "/v1/usage",
        &t.key,
        json!({"customer": "u1", "feature": "mins", "quantity": 1000}),
    )
    .await;
    let e = app.get("/v1/customers/u1/entitlements", &t.key).await;
    let data = e.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 4);
    let by = |k: &str| data.iter().find(|x| x["feature"] == k).unwrap().clone();
    assert_eq!(by("mins")["unlimited"], true);
    assert!(by("mins")["limit"].is_null());
    assert!(by("mins")["percent_used"].is_null());
    assert_eq!(num(&by("mins")["used"]), "1000");
    assert_eq!(by("mod.a")["allowed"], true);
    assert!(by("mod.a")["resets_at"].is_null());
    assert_eq!(num(&by("file_mb")["limit"]), "200");
    assert_eq!(num(&by("jobs")["used"]), "0");
    // Limit features compare the requested value with the ceiling.
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "file_mb", "quantity": 201}),
        )
        .await;
    assert_eq!(c.body["allowed"], false);
    assert_eq!(c.body["reason"], "limit_exceeded");
    let u = app
        .get("/v1/customers/u1/usage?period=current", &t.key)
        .await;
    assert_eq!(u.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(num(&u.body["data"][0]["used"]), "1000");
    // A boolean or limit feature takes no usage.
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "file_mb"}),
        )
        .await;
    assert_eq!(r.code(), "feature_not_metered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_read_the_right_counter_when_reset_rules_changed() {
    // The hot path reads the newest counter with the plan in one query; when that counter
    // belongs to another reset scheme it must fall back to the exact period's counter.
    let app = spawn_app().await;
    let t = app
        .tenant_with_plan(json!({"limit": 100, "reset": "month"}))
        .await;
    app.set_clock(&t, "2026-05-10T08:00:00Z").await;
    app.customer(&t, "u1").await;
    app.post(
        "/v1/usage",
        &t.key,
        json!({"customer": "u1", "feature": "f", "quantity": 5}),
    )
    .await;
    let v2 = app
        .put(
            "/v1/plans/p",
            &t.key,
            json!({"name": "P", "entitlements": [{"feature": "f", "limit": 100, "reset": "day"}]}),
        )
        .await;
    assert_eq!(v2.body["version"], 2);
    let move_to = |version: i32| {
        let db = app.db.clone();
        let tenant = t.tid();
        async move {
            let moved = tollgate::testing::stored::force_plan_version(&db, &tenant, "u1", version)
                .await
                .unwrap();
            assert_eq!(moved, 1);
        }
    };
    move_to(2).await;
    app.set_clock(&t, "2026-05-15T08:00:00Z").await;
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "quantity": 2}),
        )
        .await;
    assert_eq!(num(&r.body["used"]), "2", "a day counter");
    move_to(1).await;
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "f"}),
        )
        .await;
    assert_eq!(
        num(&c.body["used"]),
        "5",
        "the month's counter, not the newer day counter"
    );
    // A new month with no usage yet reads zero.
    app.set_clock(&t, "2026-06-01T00:00:00Z").await;
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "f"}),
        )
        .await;
    assert_eq!(num(&c.body["used"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_event_is_a_duplicate_even_after_the_plan_changed() {
    let app = spawn_app().await;
    let t = app.tenant_with_plan(json!({"limit": 10})).await;
    app.customer(&t, "u1").await;
    let body = json!({"customer": "u1", "feature": "f", "quantity": 4, "id": "call-7"});
    let first = app.post("/v1/usage", &t.key, body.clone()).await;
    assert_eq!(first.status, StatusCode::OK);
    // The customer moves to a plan without the feature; the client retries the same event.
    let v2 = app
        .put(
            "/v1/plans/p",
            &t.key,
            json!({"name": "P", "entitlements": []}),
        )
        .await;
    assert_eq!(v2.body["version"], 2);
    let moved = tollgate::testing::stored::force_plan_version(&app.db, &t.tid(), "u1", 2)
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let retry = app.post("/v1/usage", &t.key, body).await;
    assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
    assert_eq!(retry.body["duplicate"], true);
    assert_eq!(num(&retry.body["used"]), "4");
    // A new event for the feature is refused.
    let new = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "u1", "feature": "f", "id": "call-8"}),
        )
        .await;
    assert_eq!(
        (new.status, new.code()),
        (StatusCode::PAYMENT_REQUIRED, "not_in_plan")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_slots_hold_under_contention_and_free_on_release_or_expiry() {
    let app = Arc::new(spawn_app().await);
    let t = app.tenant("test").await;
    app.set_clock(&t, "2026-02-01T10:00:00Z").await;
    app.post(
        "/v1/features",
        &t.key,
        json!({"key": "jobs", "name": "Jobs", "type": "concurrency"}),
    )
    .await;
    app.post(
        "/v1/features",
        &t.key,
        json!({"key": "mins", "name": "Mins", "type": "metered"}),
    )
    .await;
    let p = app
        .post(
            "/v1/plans",
            &t.key,
            json!({"key": "pro", "name": "Pro", "default": true,
        "entitlements": [{"feature": "jobs", "limit": 3}, {"feature": "mins", "limit": 10}]}),
        )
        .await;
    assert_eq!(p.status, StatusCode::CREATED);
    app.customer(&t, "u1").await;
    let key = Arc::new(t.key.clone());
    let mut handles = Vec::new();
    for _ in 0..20 {
        let (app, key) = (app.clone(), key.clone());
        handles.push(tokio::spawn(async move {
            app.post(
                "/v1/leases",
                &key,
                json!({"customer": "u1", "feature": "jobs", "ttl_seconds": 60}),
            )
            .await
        }));
    }
    let mut granted = Vec::new();
    for h in handles {
        let r = h.await.unwrap();
        match r.status {
            StatusCode::CREATED => granted.push(r.body["id"].as_str().unwrap().to_string()),
            StatusCode::PAYMENT_REQUIRED => assert_eq!(r.code(), "limit_exceeded"),
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    assert_eq!(granted.len(), 3);
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "jobs"}),
        )
        .await;
    assert_eq!(c.body["allowed"], false);
    assert_eq!(num(&c.body["used"]), "3");
    // Releasing frees a slot at once.
    let r = app
        .delete(&format!("/v1/leases/{}", granted[0]), &t.key)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let again = app
        .delete(&format!("/v1/leases/{}", granted[0]), &t.key)
        .await;
    assert_eq!(again.code(), "lease_not_found");
    let r = app
        .post(
            "/v1/leases",
            &t.key,
            json!({"customer": "u1", "feature": "jobs"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["expires_at"], "2026-02-01T10:05:00Z");
    // Expired leases free themselves.
    app.set_clock(&t, "2026-02-01T10:01:01Z").await;
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "jobs"}),
        )
        .await;
    assert_eq!(num(&c.body["used"]), "1");
    assert_eq!(c.body["allowed"], true);
    // Wrong kinds of feature.
    let r = app
        .post(
            "/v1/leases",
            &t.key,
            json!({"customer": "u1", "feature": "mins"}),
        )
        .await;
    assert_eq!(r.code(), "feature_not_concurrency");
    let r = app
        .post(
            "/v1/leases",
            &t.key,
            json!({"customer": "u1", "feature": "nope"}),
        )
        .await;
    assert_eq!(r.code(), "feature_not_found");
    let r = app
        .post(
            "/v1/leases",
            &t.key,
            json!({"customer": "u1", "feature": "jobs", "ttl_seconds": 0}),
        )
        .await;
    assert_eq!(r.code(), "invalid_ttl");
    let other = app.tenant("test").await;
    let r = app
        .delete(&format!("/v1/leases/{}", granted[1]), &other.key)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "another tenant's lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_pool_reuses_only_connections_whose_work_completed() {
    use tollgate::db::hot_pool::HotPool;
    let url = crate::helpers::fresh_database().await;
    let pool = HotPool::new(url.parse().unwrap(), 2);
    async fn pid(mut c: tollgate::db::hot_pool::HotConn<'_>, keep: bool) -> i32 {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        c.finish(keep);
        pid
    }
    let first = pid(pool.acquire().await.unwrap(), true).await;
    let again = pid(pool.acquire().await.unwrap(), false).await;
    assert_eq!(first, again, "a clean connection is reused");
    let fresh = pid(pool.acquire().await.unwrap(), true).await;
    assert_ne!(
        fresh, again,
        "a connection not marked clean is dropped, not reused"
    );
    // Two at once: the pool never hands out more than its size.
    let a = pool.acquire().await.unwrap();
    let _b = pool.acquire().await.unwrap();
    let third = tokio::time::timeout(std::time::Duration::from_millis(50), pool.acquire()).await;
    assert!(third.is_err(), "a third connection waits for a permit");
    drop(a);
    assert!(pool.acquire().await.is_ok());
}

/// Two tenants with a metered `f` limited to `limit` and customers `u0..u<n-1>`, each of whom
/// has used `step × (i + 1)` of it.
async fn two_tenants_with_usage(
    app: &TestApp,
    n: usize,
    (limit_a, step_a): (usize, usize),
    (limit_b, step_b): (usize, usize),
) -> (Tenant, Tenant) {
    let a = app
        .tenant_with_plan(json!({"limit": limit_a, "reset": "month"}))
        .await;
    let b = app
        .tenant_with_plan(json!({"limit": limit_b, "reset": "month"}))
        .await;
    for i in 0..n {
        let id = format!("u{i}");
        app.customer(&a, &id).await;
        app.customer(&b, &id).await;
        for (t, q) in [(&a, step_a * (i + 1)), (&b, step_b * (i + 1))] {
            let r = app
                .post(
                    "/v1/usage",
                    &t.key,
                    json!({"customer": id, "feature": "f", "quantity": q}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        }
    }
    (a, b)
}

/// A new key of `t`, already revoked.
async fn revoked_key(app: &TestApp, t: &Tenant) -> String {
    let (key, id) = app.mint_key(&t.id).await;
    let r = app.delete(&format!("/v1/api_keys/{id}"), &t.key).await;
    assert_eq!(r.status, StatusCode::OK);
    key
}

/// Holds every hot connection, so that checks sent meanwhile queue up together; given back
/// (`done`), they go to one statement.
async fn hold_hot_connections(app: &TestApp) -> Vec<HotConn<'_>> {
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(
            tollgate::testing::hold_hot_connection(&app.state)
                .await
                .unwrap(),
        );
    }
    held
}

/// Waits (bounded) until `n` checks are waiting: those the worker took before it found no
/// connection, and the rest in the channel (how many arrived together is up to timing).
async fn until_checks_queued(app: &TestApp, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tollgate::testing::queued_checks(&app.state) < n {
        assert!(std::time::Instant::now() < deadline, "checks never queued");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_sharing_statements_each_get_their_own_answer() {
    // Concurrent checks are resolved together (one statement for many); every answer must
    // still be the asking tenant's, customer's and key's own.
    let app = Arc::new(spawn_app().await);
    // Tenant a's customer u<i> has used i + 1 of 1000, tenant b's 2 (i + 1) of 500.
    let (a, b) = two_tenants_with_usage(&app, 10, (1000, 1), (500, 2)).await;
    // A second key of tenant a, revoked: refused even when batched with valid checks.
    let revoked_key = revoked_key(&app, &a).await;

    let mut handles = Vec::new();
    for round in 0..20 {
        for i in 0..10 {
            let app = app.clone();
            let (key, expect_used, expect_limit) = match round % 2 {
                0 => (a.key.clone(), i + 1, 1000),
                _ => (b.key.clone(), 2 * (i + 1), 500),
            };
            handles.push(tokio::spawn(async move {
                let r = app
                    .post(
                        "/v1/check",
                        &key,
                        json!({"customer": format!("u{i}"), "feature": "f", "quantity": i}),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
                assert_eq!(r.body["customer"], format!("u{i}"));
                assert_eq!(num(&r.body["used"]), expect_used.to_string());
                assert_eq!(num(&r.body["limit"]), expect_limit.to_string());
                assert_eq!(num(&r.body["requested"]), i.to_string());
            }));
        }
        let app2 = app.clone();
        let revoked = revoked_key.clone();
        handles.push(tokio::spawn(async move {
            let r = app2
                .post(
                    "/v1/check",
                    &revoked,
                    json!({"customer": "u1", "feature": "f"}),
                )
                .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
        }));
        let app3 = app.clone();
        let key = b.key.clone();
        handles.push(tokio::spawn(async move {
            let r = app3
                .post(
                    "/v1/check",
                    &key,
                    json!({"customer": "nobody", "feature": "f"}),
                )
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
            assert_eq!(r.body["error"]["code"], "customer_not_found");
            // NUL cannot be stored in PostgreSQL text: it matches nothing, and is no 500.
            let r = app3
                .post(
                    "/v1/check",
                    &key,
                    json!({"customer": "u\u{0}1", "feature": "f"}),
                )
                .await;
            assert!(r.status.is_client_error(), "{:?}", r.body);
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_waiting_together_are_resolved_in_one_statement() {
    let app = Arc::new(spawn_app().await);
    let t = app
        .tenant_with_plan(json!({"limit": 100, "reset": "month"}))
        .await;
    for i in 0..8 {
        app.customer(&t, &format!("u{i}")).await;
        let r = app
            .post(
                "/v1/usage",
                &t.key,
                json!({"customer": format!("u{i}"), "feature": "f", "quantity": i}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let (statements_before, lookups_before) = tollgate::testing::check_batch_stats(&app.state);
    let held = hold_hot_connections(&app).await;
    let mut handles = Vec::new();
    for i in 0..8 {
        let app = app.clone();
        let key = t.key.clone();
        handles.push(tokio::spawn(async move {
            app.post(
                "/v1/check",
                &key,
                json!({"customer": format!("u{i}"), "feature": "f"}),
            )
            .await
        }));
    }
    until_checks_queued(&app, 8).await;
    for c in held {
        c.done();
    }
    for (i, h) in handles.into_iter().enumerate() {
        let r = h.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(num(&r.body["used"]), i.to_string());
        assert_eq!(num(&r.body["remaining"]), (100 - i).to_string());
    }
    let (statements, lookups) = tollgate::testing::check_batch_stats(&app.state);
    assert_eq!(lookups - lookups_before, 8);
    assert_eq!(
        statements - statements_before,
        1,
        "8 waiting checks, one statement"
    );
}

/// One statement resolves each distinct caller of its checks once (tenant, key or session,
/// default plan) and every check against its own caller: two tenants, two keys of one tenant,
/// a revoked key and a customer session, all waiting together, each get their own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_of_different_callers_in_one_statement_each_get_their_own() {
    let app = Arc::new(spawn_app().await);
    // Tenant a's customer u<i> has used i + 1 of 100, tenant b's 10 (i + 1) of 50.
    let (a, b) = two_tenants_with_usage(&app, 4, (100, 1), (50, 10)).await;
    let (second_key, _) = app.mint_key(&a.id).await;
    let revoked_key = revoked_key(&app, &a).await;
    let session = app
        .post("/v1/customer_sessions", &a.key, json!({"customer": "u3"}))
        .await;
    assert_eq!(session.status, StatusCode::CREATED, "{:?}", session.body);
    let token = session.body["token"].as_str().unwrap().to_string();

    // (path, bearer, customer, expected status, used, limit)
    let cases = [
        ("/v1/check", a.key.clone(), "u0", StatusCode::OK, "1", "100"),
        ("/v1/check", b.key.clone(), "u0", StatusCode::OK, "10", "50"),
        (
            "/v1/check",
            second_key.clone(),
            "u1",
            StatusCode::OK,
            "2",
            "100",
        ),
        ("/v1/check", a.key.clone(), "u2", StatusCode::OK, "3", "100"),
        ("/v1/check", b.key.clone(), "u1", StatusCode::OK, "20", "50"),
        (
            "/v1/check",
            revoked_key,
            "u0",
            StatusCode::UNAUTHORIZED,
            "",
            "",
        ),
        ("/v1/me/check", token, "u3", StatusCode::OK, "4", "100"),
        ("/v1/check", second_key, "u3", StatusCode::OK, "4", "100"),
    ];
    let (statements_before, lookups_before) = tollgate::testing::check_batch_stats(&app.state);
    let held = hold_hot_connections(&app).await;
    let mut handles = Vec::new();
    for (path, bearer, customer, status, used, limit) in cases.clone() {
        let app = app.clone();
        handles.push(tokio::spawn(async move {
            // A session's customer is its own: `/v1/me/check` names none.
            let body = if path == "/v1/me/check" {
                json!({"feature": "f"})
            } else {
                json!({"customer": customer, "feature": "f"})
            };
            let r = app.post(path, &bearer, body).await;
            assert_eq!(r.status, status, "{path} {customer}: {:?}", r.body);
            if status == StatusCode::OK {
                assert_eq!(r.body["customer"], customer);
                assert_eq!(num(&r.body["used"]), used, "{path} {customer}");
                assert_eq!(num(&r.body["limit"]), limit, "{path} {customer}");
            }
        }));
    }
    until_checks_queued(&app, cases.len()).await;
    for c in held {
        c.done();
    }
    for h in handles {
        h.await.unwrap();
    }
    let (statements, lookups) = tollgate::testing::check_batch_stats(&app.state);
    assert_eq!(lookups - lookups_before, cases.len() as u64);
    assert_eq!(statements - statements_before, 1, "one statement for all");
}

/// A customer's next usage event is prepared on the resolve kept from its last one (no resolve
/// statement), but never once a row behind that resolve has changed, whichever Tollgate
/// process changed it: the recording statement finds the event stale and it is resolved
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_resolves_never_outlive_a_change() {
    let app = spawn_app().await;
    // Every change below is made through another process, which shares nothing with `app`
    // but the database.
    let other = spawn_app_on(&app.db_url).await;
    let t = app
        .tenant_with_plan(json!({"limit": 10, "reset": "month"}))
        .await;
    let q = other
        .post(
            "/v1/plans",
            &t.key,
            json!({"key": "q", "name": "Q",
                   "entitlements": [{"feature": "f", "limit": 50, "reset": "month"}]}),
        )
        .await;
    assert_eq!(q.status, StatusCode::CREATED, "{:?}", q.body);
    app.customer(&t, "u1").await;
    let event = json!({"customer": "u1", "feature": "f"});
    let stats = || tollgate::testing::usage_resolve_stats(&app.state);

    // The first event resolves its customer; the second reuses that.
    let r = app.post("/v1/usage", &t.key, event.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(num(&r.body["used"]), "1");
    let (kept, stale) = stats();
    let r = app.post("/v1/usage", &t.key, event.clone()).await;
    assert_eq!(
        (r.status, num(&r.body["used"])),
        (StatusCode::OK, "2".into())
    );
    assert_eq!(num(&r.body["limit"]), "10");
    assert_eq!(r.body["warning_level"], "safe");
    assert_eq!(stats(), (kept + 1, stale), "prepared on the kept resolve");

    // The tenant's thresholds change: 3 of 10 is now a warning.
    let r = other
        .patch(
            "/v1/tenant",
            &t.key,
            json!({"warning_thresholds": {"warning": 0.25, "critical": 0.9}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app.post("/v1/usage", &t.key, event.clone()).await;
    assert_eq!(
        (r.status, num(&r.body["used"])),
        (StatusCode::OK, "3".into())
    );
    assert_eq!(r.body["warning_level"], "warning");
    assert_eq!(
        stats(),
        (kept + 2, stale + 1),
        "found stale, resolved again"
    );

    // The customer's subscription moves to plan q (limit 50).
    let sub = other
        .get("/v1/customers/u1/subscription", &t.key)
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = other
        .post(
            &format!("/v1/subscriptions/{sub}/change"),
            &t.key,
            json!({"plan": "q", "when": "now"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app.post("/v1/usage", &t.key, event.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(num(&r.body["limit"]), "50");
    // Through a batch (its own kept resolve, under q's limit of 50), then again after the
    // subscription moves to q's next version, whose limit of 4 is passed already: refused.
    let batch = json!({"events": [event]});
    let r = app.post("/v1/usage/batch", &t.key, batch.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["results"][0]["status"], "recorded", "{:?}", r.body);
    let r = other
        .put(
            "/v1/plans/q",
            &t.key,
            json!({"name": "Q", "entitlements": [{"feature": "f", "limit": 4, "reset": "month"}]}),
        )
        .await;
    assert_eq!(r.body["version"], 2, "{:?}", r.body);
    let r = other
        .post(
            &format!("/v1/subscriptions/{sub}/change"),
            &t.key,
            json!({"plan": "q", "version": "latest", "when": "now"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app.post("/v1/usage/batch", &t.key, batch.clone()).await;
    assert_eq!(r.body["results"][0]["status"], "refused", "{:?}", r.body);

    // A second key, used once (kept), then revoked: refused from then on.
    let (second, second_id) = other.mint_key(&t.id).await;
    app.customer(&t, "u2").await;
    let u2 = json!({"customer": "u2", "feature": "f"});
    for _ in 0..2 {
        let r = app.post("/v1/usage", &second, u2.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let r = other
        .delete(&format!("/v1/api_keys/{second_id}"), &t.key)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.post("/v1/usage", &second, u2.clone()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);

    // The customer is erased: unknown from then on, singly and in a batch.
    let r = app.post("/v1/usage", &t.key, u2.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .post("/v1/usage/batch", &t.key, json!({"events": [u2]}))
        .await;
    assert_eq!(r.body["results"][0]["status"], "recorded", "{:?}", r.body);
    let r = other.delete("/v1/customers/u2", &t.key).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app.post("/v1/usage", &t.key, u2.clone()).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "customer_not_found")
    );
    let r = app
        .post("/v1/usage/batch", &t.key, json!({"events": [u2]}))
        .await;
    assert_eq!(r.body["results"][0]["status"], "invalid", "{:?}", r.body);
    assert_eq!(
        r.body["results"][0]["error"]["code"], "customer_not_found",
        "{:?}",
        r.body
    );

    // Nothing stale was written: the counters are the events acknowledged.
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "f"}),
        )
        .await;
    assert_eq!(num(&c.body["used"]), "5", "{:?}", c.body);
}
