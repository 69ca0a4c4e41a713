//! Organisations: members of a customer, and the seat history their adds and removes write.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_updated_listed_and_removed() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    app.customer(&t, "org_acme").await;
    let path = |m: &str| format!("/v1/customers/org_acme/members/{m}");

    let added = app
        .put(
            &path("user_1"),
            &t.key,
            json!({"role": "owner", "email": "ann@acme.test", "name": "Ann"}),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{:?}", added.body);
    assert_eq!(added.body["member_id"], "user_1");
    assert_eq!(added.body["customer"], "org_acme");
    assert_eq!(added.body["role"], "owner");
    assert_eq!(added.body["email"], "ann@acme.test");
    assert_eq!(added.body["name"], "Ann");
    let created_at = added.body["created_at"].clone();

    // A second PUT updates: the role, and the fields given (the others are kept, as for a
    // customer); 200, same member, same creation time.
    let updated = app
        .put(
            &path("user_1"),
            &t.key,
            json!({"role": "admin", "name": "Ann B"}),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.body["role"], "admin");
    assert_eq!(updated.body["name"], "Ann B");
    assert_eq!(updated.body["email"], "ann@acme.test");
    assert_eq!(updated.body["created_at"], created_at);

    for m in ["user_3", "user_2"] {
        let r = app.put(&path(m), &t.key, json!({"role": "member"})).await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    // Listed in id order, a page at a time.
    let page = app
        .get("/v1/customers/org_acme/members?limit=2", &t.key)
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let ids: Vec<&str> = page.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["member_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["user_1", "user_2"]);
    assert_eq!(page.body["has_more"], true);
    let rest = app
        .get(
            "/v1/customers/org_acme/members?limit=2&starting_after=user_2",
            &t.key,
        )
        .await;
    assert_eq!(rest.body["data"][0]["member_id"], "user_3");
    assert_eq!(rest.body["has_more"], false);

    // Removal answers the removed member; a second removal is a 404.
    let removed = app.delete(&path("user_2"), &t.key).await;
    assert_eq!(removed.status, StatusCode::OK, "{:?}", removed.body);
    assert_eq!(removed.body["member_id"], "user_2");
    assert_eq!(removed.body["role"], "member");
    let again = app.delete(&path("user_2"), &t.key).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.code(), "member_not_found");

    // The seat history: three adds and one remove, each with the count after it; the role
    // change is not a seat change.
    let history = tollgate::testing::stored::seat_history(&app.db, &t.tid(), "org_acme")
        .await
        .unwrap();
    let steps: Vec<(&str, i32, i32)> = history
        .iter()
        .map(|c| (c.member_id.as_str(), c.delta, c.seats))
        .collect();
    assert_eq!(
        steps,
        [
            ("user_1", 1, 1),
            ("user_3", 1, 2),
            ("user_2", 1, 3),
            ("user_2", -1, 2)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_input_is_checked_and_scoped_to_its_customer_and_tenant() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    app.customer(&t, "org_a").await;
    app.customer(&t, "org_b").await;

    let bad_role = app
        .put(
            "/v1/customers/org_a/members/u1",
            &t.key,
            json!({"role": "boss"}),
        )
        .await;
    assert_eq!(bad_role.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_role.code(), "invalid_role");
    assert_eq!(bad_role.body["error"]["param"], "role");
    let no_role = app
        .put("/v1/customers/org_a/members/u1", &t.key, json!({}))
        .await;
    assert_eq!(no_role.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_role.code(), "missing_field");
    let bad_email = app
        .put(
            "/v1/customers/org_a/members/u1",
            &t.key,
            json!({"role": "member", "email": "nope"}),
        )
        .await;
    assert_eq!(bad_email.code(), "invalid_email");
    let bad_id = app
        .put(
            "/v1/customers/org_a/members/a%20b",
            &t.key,
            json!({"role": "member"}),
        )
        .await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_id.code(), "invalid_member_id");
    let no_customer = app
        .put(
            "/v1/customers/nobody/members/u1",
            &t.key,
            json!({"role": "member"}),
        )
        .await;
    assert_eq!(no_customer.status, StatusCode::NOT_FOUND);
    assert_eq!(no_customer.code(), "customer_not_found");
    let r = app.get("/v1/customers/nobody/members", &t.key).await;
    assert_eq!(r.code(), "customer_not_found");
    // Nothing was written by any of them.
    let history = tollgate::testing::stored::seat_history(&app.db, &t.tid(), "org_a")
        .await
        .unwrap();
    assert!(history.is_empty(), "{history:?}");

    // One person in two organisations: two members, independent.
    for org in ["org_a", "org_b"] {
        let r = app
            .put(
                &format!("/v1/customers/{org}/members/u1"),
                &t.key,
                json!({"role": if org == "org_a" { "owner" } else { "viewer" }}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let removed = app.delete("/v1/customers/org_a/members/u1", &t.key).await;
    assert_eq!(removed.body["role"], "owner");
    let b = app.get("/v1/customers/org_b/members", &t.key).await;
    assert_eq!(b.body["data"][0]["role"], "viewer");

    // Another tenant sees none of it, even with the same customer id of its own.
    let other = app.tenant("test").await;
    for (path, method) in [
        ("/v1/customers/org_b/members", "get"),
        ("/v1/customers/org_b/members/u1", "delete"),
        ("/v1/customers/org_b/members/u1", "put"),
    ] {
        let r = match method {
            "get" => app.get(path, &other.key).await,
            "delete" => app.delete(path, &other.key).await,
            _ => app.put(path, &other.key, json!({"role": "owner"})).await,
        };
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(r.code(), "customer_not_found", "{method} {path}");
    }
    let b = app.get("/v1/customers/org_b/members", &t.key).await;
    assert_eq!(b.body["data"].as_array().unwrap().len(), 1, "untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_and_removes_keep_an_exact_seat_history() {
    let app = Arc::new(spawn_app().await);
    let t = Arc::new(app.tenant("test").await);
    app.customer(&t, "org").await;
    // 30 members added at once, then 10 of them removed at once while 10 more are added.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (app, t) = (app.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            app.put(
                &format!("/v1/customers/org/members/m{i:02}"),
                &t.key,
                json!({"role": "member"}),
            )
            .await
            .status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::CREATED);
    }
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (app, t) = (app.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            if i < 10 {
                app.delete(&format!("/v1/customers/org/members/m{i:02}"), &t.key)
                    .await
                    .status
            } else {
                app.put(
                    &format!("/v1/customers/org/members/n{i:02}"),
                    &t.key,
                    json!({"role": "viewer"}),
                )
                .await
                .status
            }
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let want = if i < 10 {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        assert_eq!(task.await.unwrap(), want);
    }
    let history = tollgate::testing::stored::seat_history(&app.db, &t.tid(), "org")
        .await
        .unwrap();
    assert_eq!(history.len(), 50);
    // Each entry's count is the previous one plus its change: no two changes saw the same count.
    let mut seats = 0;
    for c in &history {
        seats += c.delta;
        assert_eq!(c.seats, seats, "{c:?}");
    }
    assert_eq!(seats, 30);
    let listed = app.get("/v1/customers/org/members?limit=100", &t.key).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 30);
}
