//! The five seeds' pricing tables, applied from config/examples/, with the limit behaviour
//! this part of Tollgate covers.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{num, spawn_app, Tenant, TestApp};

pub async fn seeded(file: &str) -> (TestApp, Tenant) {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    let path = format!("config/examples/{file}");
    let first = app.apply_toml(&t, &path).await;
    assert!(first.features_created > 0);
    assert!(!first.plans_written.is_empty());
    // Applying again is a no-op.
    let again = app.apply_toml(&t, &path).await;
    assert_eq!(again.features_created, 0);
    assert!(again.plans_written.is_empty(), "{:?}", again.plans_written);
    assert!(
        again.addons_written.is_empty(),
        "{:?}",
        again.addons_written
    );
    assert!(
        again.coupons_created.is_empty(),
        "{:?}",
        again.coupons_created
    );
    assert_eq!(again.addons_unchanged.len(), first.addons_written.len());
    assert_eq!(again.coupons_unchanged, first.coupons_created);
    (app, t)
}

async fn usage(
    app: &TestApp,
    t: &Tenant,
    customer: &str,
    feature: &str,
    q: serde_json::Value,
) -> crate::helpers::Resp {
    app.post(
        "/v1/usage",
        &t.key,
        json!({"customer": customer, "feature": feature, "quantity": q}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_ai_coaching() {
    let (app, t) = seeded("000_ai_coaching.toml").await;
    app.set_clock(&t, "2026-01-10T09:00:00Z").await;
    app.customer(&t, "free_user").await;
    // Free: 15 minutes, once, never reset.
    assert_eq!(
        usage(&app, &t, "free_user", "ai_voice_minutes", json!(10))
            .await
            .status,
        StatusCode::OK
    );
    let r = usage(&app, &t, "free_user", "ai_voice_minutes", json!(5.5)).await;
    assert_eq!(r.code(), "limit_exceeded");
    app.set_clock(&t, "2026-06-10T09:00:00Z").await;
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "free_user", "feature": "ai_voice_minutes", "quantity": 5}),
        )
        .await;
    assert_eq!(c.body["allowed"], true);
    assert_eq!(
        num(&c.body["used"]),
        "10",
        "months later the one-time allowance has not reset"
    );
    assert!(c.body["resets_at"].is_null());
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "free_user", "feature": "module.growth"}),
        )
        .await;
    assert_eq!(c.body["reason"], "not_in_plan");
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "free_user", "feature": "modules", "quantity": 3}),
        )
        .await;
    assert_eq!(c.body["allowed"], false);

    // Lifestyle: 120 minutes, $0.10/min over, capped at $20 -> at most 320 minutes.
    app.customer(&t, "life").await;
    let s = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "life", "plan": "lifestyle"}),
        )
        .await;
    assert_eq!(
        s.code(),
        "subscription_exists",
        "on the default Free plan already"
    );
    let ended = tollgate::testing::stored::force_canceled(&app.db, &t.tid(), "life")
        .await
        .unwrap();
    assert_eq!(ended, 1);
    let s = app
        .post(
            "/v1/subscriptions",
            &t.key,
            json!({"customer": "life", "plan": "lifestyle"}),
        )
        .await;
    assert_eq!(s.status, StatusCode::CREATED, "{:?}", s.body);
    assert_eq!(
        usage(&app, &t, "life", "ai_voice_minutes", json!(90))
            .await
            .body["warning_level"],
        "safe"
    );
    assert_eq!(
        usage(&app, &t, "life", "ai_voice_minutes", json!(10))
            .await
            .body["warning_level"],
        "warning"
    );
    let r = usage(&app, &t, "life", "ai_voice_minutes", json!(20)).await;
    assert_eq!(r.body["warning_level"], "exceeded");
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "life", "feature": "ai_voice_minutes", "quantity": 50}),
        )
        .await;
    assert_eq!(c.body["overage"]["would_bill"], "5.00");
    assert_eq!(
        usage(&app, &t, "life", "ai_voice_minutes", json!(200))
            .await
            .status,
        StatusCode::OK
    );
    let r = usage(&app, &t, "life", "ai_voice_minutes", json!(1)).await;
    assert_eq!(r.code(), "spend_cap_reached");
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "life", "feature": "human_calls"}),
        )
        .await;
    assert_eq!(
        c.body["reason"], "limit_exceeded",
        "no human calls on Lifestyle"
    );
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "life", "feature": "module.lifestyle"}),
        )
        .await;
    assert_eq!(c.body["allowed"], true);

    // Mastery: unlimited minutes, 4 human calls then $20 each.
    let plan = app.get("/v1/plans/mastery", &t.key).await;
    let minutes = plan.body["entitlements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["feature"] == "ai_voice_minutes")
        .unwrap()
        .clone();
    assert_eq!(minutes["unlimited"], true);
    let calls = plan.body["entitlements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["feature"] == "human_calls")
        .unwrap()
        .clone();
    assert_eq!(calls["overage"]["unit_amount"], "20.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_001_interview_practice_daily_and_monthly_resets() {
    let (app, t) = seeded("001_interview_practice.toml").await;
    app.set_clock(&t, "2026-03-31T22:00:00Z").await;
    app.customer(&t, "clerk_1").await;
    let sub = app.get("/v1/customers/clerk_1/subscription", &t.key).await;
    assert_eq!(sub.body["plan"], "starter", "new users start on Starter");
    for _ in 0..3 {
        assert_eq!(
            usage(&app, &t, "clerk_1", "interviews", json!(1))
                .await
                .status,
            StatusCode::OK
        );
    }
    let r = usage(&app, &t, "clerk_1", "interviews", json!(1)).await;
    assert_eq!(r.code(), "limit_exceeded");
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "clerk_1", "feature": "interviews"}),
        )
        .await;
    assert_eq!(c.body["resets_at"], "2026-04-01T00:00:00Z");
    assert_eq!(
        usage(&app, &t, "clerk_1", "minutes", json!(290))
            .await
            .status,
        StatusCode::OK
    );
    // The next day: interviews reset (and a new month: so do minutes).
    app.set_clock(&t, "2026-04-01T00:00:01Z").await;
    let r = usage(&app, &t, "clerk_1", "interviews", json!(1)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(num(&r.body["used"]), "1");
    assert_eq!(num(&r.body["remaining"]), "2");
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "clerk_1", "feature": "minutes", "quantity": 300}),
        )
        .await;
    assert_eq!(c.body["allowed"], true);
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "clerk_1", "feature": "video_reviews"}),
        )
        .await;
    assert_eq!(c.body["reason"], "not_in_plan");
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "clerk_1", "feature": "advanced_analytics"}),
        )
        .await;
    assert_eq!(c.body["allowed"], false);
    // Premium's -1 is unlimited.
    let p = app.get("/v1/plans/premium", &t.key).await;
    let interviews = p.body["entitlements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["feature"] == "interviews")
        .unwrap()
        .clone();
    assert!(interviews["limit"].is_null());
    assert_eq!(interviews["unlimited"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_storage_is_a_level_and_annual_prices_exist() {
    let (app, t) = seeded("002_life_twin.toml").await;
    app.customer(&t, "org_1").await;
    assert_eq!(
        usage(&app, &t, "org_1", "storage_gb", json!(4.5))
            .await
            .status,
        StatusCode::OK
    );
    let r = usage(&app, &t, "org_1", "storage_gb", json!(3)).await;
    assert_eq!(num(&r.body["used"]), "4.5", "a level, not a sum");
    let r = usage(&app, &t, "org_1", "storage_gb", json!(5.1)).await;
    assert_eq!(r.code(), "limit_exceeded", "Free storage is a hard 5 GB");
    let c = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "org_1", "feature": "ai_twin"}),
        )
        .await;
    assert_eq!(c.body["allowed"], false);
    let standard = app.get("/v1/plans/standard", &t.key).await;
    let prices = standard.body["prices"].as_array().unwrap();
    assert_eq!(prices.len(), 2);
    assert!(prices
        .iter()
        .any(|p| p["interval"] == "year" && p["amount"] == "499.90"));
    let ent = app.get("/v1/plans/enterprise", &t.key).await;
    let prices = ent.body["prices"].as_array().unwrap();
    assert!(prices
        .iter()
        .any(|p| p["interval"] == "year" && p["per_seat"] == true && p["tiers_mode"] == "volume"));
    assert!(prices
        .iter()
        .any(|p| p["interval"] == "year" && p["per_seat"] == false && p["amount"] == "10000.00"));
    let r = app
        .put("/v1/customers/org_2", &t.key, json!({"net_days": 30}))
        .await;
    assert_eq!(r.body["net_days"], 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_003_file_sizes_formats_and_free_retries() {
    let (app, t) = seeded("003_transcription.toml").await;
    app.customer(&t, "coach").await;
    let check = |feature: &'static str, q: serde_json::Value| {
        let app = &app;
        let key = t.key.clone();
        async move {
            app.post(
                "/v1/check",
                &key,
                json!({"customer": "coach", "feature": feature, "quantity": q}),
            )
            .await
        }
    };
    assert_eq!(
        check("max_file_size_mb", json!(50)).await.body["allowed"],
        true
    );
    let c = check("max_file_size_mb", json!(51)).await;
    assert_eq!(c.body["allowed"], false);
    assert_eq!(c.body["reason"], "limit_exceeded");
    assert_eq!(check("export.txt", json!(1)).await.body["allowed"], true);
    assert_eq!(
        check("export.srt", json!(1)).await.body["reason"],
        "not_in_plan"
    );
    assert_eq!(
        num(&check("concurrent_processing", json!(1)).await.body["limit"]),
        "1"
    );
    for _ in 0..10 {
        assert_eq!(
            usage(&app, &t, "coach", "sessions", json!(1)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        usage(&app, &t, "coach", "sessions", json!(1)).await.code(),
        "limit_exceeded"
    );
    // A failed transcription's free retry is recorded, but not counted.
    let r = app
        .post(
            "/v1/usage",
            &t.key,
            json!({"customer": "coach", "feature": "sessions", "billable": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(num(&r.body["used"]), "10");
    let pro = app.get("/v1/plans/pro", &t.key).await;
    assert_eq!(pro.body["retention_days"], 365);
    // Concurrent processing: one slot on Free.
    let first = app
        .post(
            "/v1/leases",
            &t.key,
            json!({"customer": "coach", "feature": "concurrent_processing"}),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second = app
        .post(
            "/v1/leases",
            &t.key,
            json!({"customer": "coach", "feature": "concurrent_processing"}),
        )
        .await;
    assert_eq!(
        (second.status, second.code()),
        (StatusCode::PAYMENT_REQUIRED, "limit_exceeded")
    );
    let id = first.body["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/v1/leases/{id}"), &t.key).await.status,
        StatusCode::OK
    );
    let third = app
        .post(
            "/v1/leases",
            &t.key,
            json!({"customer": "coach", "feature": "concurrent_processing"}),
        )
        .await;
    assert_eq!(third.status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_004_free_plan_refuses_the_sixth_suggestion() {
    let (app, t) = seeded("004_slack_assistant.toml").await;
    app.customer(&t, "U123@acme").await;
    let levels = ["safe", "safe", "safe", "warning", "exceeded"];
    for level in levels {
        let r = usage(&app, &t, "U123@acme", "suggestions", json!(1)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["warning_level"], level);
    }
    let r = usage(&app, &t, "U123@acme", "suggestions", json!(1)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYMENT_REQUIRED, "limit_exceeded")
    );
    let f = app.get("/v1/features/suggestions", &t.key).await;
    assert_eq!(f.body["stripe_meter_event_name"], "suggestions");
    let starter = app.get("/v1/plans/starter", &t.key).await;
    assert_eq!(
        starter.body["entitlements"][0]["overage"]["unit_amount"],
        "0.35"
    );
    let h = app
        .get("/v1/customers/U123@acme/usage/history?months=6", &t.key)
        .await;
    assert_eq!(num(&h.body["data"][0]["used"]), "5");
    // An organisation's summary: totals per member, the average, the top 10.
    app.customer(&t, "org_acme").await;
    for (member, n) in [("alice", 3), ("bob", 1), ("carol", 1)] {
        for _ in 0..n {
            let r = app
                .post(
                    "/v1/usage",
                    &t.key,
                    json!({"customer": "org_acme", "feature": "suggestions", "member": member}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        }
    }
    let m = app
        .get("/v1/customers/org_acme/usage/members", &t.key)
        .await;
    assert_eq!(m.status, StatusCode::OK, "{:?}", m.body);
    let s = &m.body["data"][0];
    assert_eq!(s["members"], 3);
    assert_eq!(num(&s["total"]), "5");
    assert_eq!(num(&s["average_per_member"]), "1.6667");
    assert_eq!(s["top"][0]["member"], "alice");
    assert_eq!(num(&s["top"][0]["used"]), "3");
}
