//! Usage ingestion at volume (issue 13): concurrent `POST /v1/usage` events gathered into one
//! statement and one commit, set-based `POST /v1/usage/batch`, a hot counter, a batch whose
//! transaction fails, and a kill -9 of the server under load.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use crate::helpers::{
    fresh_database, num, spawn_app, spawn_app_with, until_listening, Tenant, TestApp, ADMIN_TOKEN,
};

/// Waits (bounded) until `done` holds, polling without sleeping.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
    }
}

/// Holds a lock on one customer row, as invoice finalization does, so a usage statement
/// naming that customer waits inside PostgreSQL.
async fn lock_customer(app: &TestApp, tenant: &str, customer: &str) -> PgConnection {
    let mut conn = PgConnection::connect(&app.db_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("SELECT 1 FROM customers WHERE tenant_id = $1 AND customer_id = $2 FOR UPDATE")
        .bind(tenant)
        .bind(customer)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn
}

/// The backends of the usage statements waiting for a lock now. On Citus the statement runs
/// on the tenant's worker node: its waits show in Citus's view of the whole cluster's lock
/// waits, by the global process id of the coordinator's backend the statement came from
/// (which `pg_terminate_backend` also takes). That view spans every database of the cluster,
/// so the waits are narrowed to this test's database through `citus_stat_activity`: tests
/// running beside this one wait on locks of their own (and must not be terminated by it).
async fn usage_backends_waiting(app: &TestApp) -> Vec<i64> {
    let sql = if crate::helpers::on_citus() {
        "SELECT DISTINCT w.waiting_gpid FROM citus_lock_waits w
         WHERE w.blocked_statement LIKE '%tollgate_record_usage_batch%'
           AND EXISTS (SELECT 1 FROM citus_stat_activity a
                       WHERE a.global_pid = w.waiting_gpid AND a.datname = current_database())"
    } else {
        "SELECT pid::bigint FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'
           AND query LIKE '%tollgate_record_usage_batch%'"
    };
    let mut conn = app.db.acquire().await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    // (On Citus a question to every node.)
    sqlx::query("SET LOCAL citus.multi_task_query_log_level TO 'off'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let pids = sqlx::query_scalar(sql).fetch_all(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    pids
}

/// The backend of a usage statement waiting for a lock, once there is one.
async fn waiting_usage_backend(app: &TestApp) -> i64 {
    let mut pids = Vec::new();
    until("a usage statement waiting for a lock", async || {
        pids = usage_backends_waiting(app).await;
        !pids.is_empty()
    })
    .await;
    pids[0]
}

/// A usage event for `customer` (tenant `tenant_id`, key `key`) whose statement is held
/// waiting on that customer's row lock: the lock (dropped to release it), the request, and
/// the backend running its statement.
async fn blocked_usage(
    app: &Arc<TestApp>,
    tenant_id: &str,
    key: &str,
    customer: &str,
    id: &str,
) -> (PgConnection, tokio::task::JoinHandle<Value>, i64) {
    let lock = lock_customer(app, tenant_id, customer).await;
    let request = post_usage(
        app,
        key,
        json!({"customer": customer, "feature": "f", "id": id}),
    );
    let pid = waiting_usage_backend(app).await;
    (lock, request, pid)
}

fn post_usage(app: &Arc<TestApp>, key: &str, body: Value) -> tokio::task::JoinHandle<Value> {
    let (app, key) = (app.clone(), key.to_string());
    tokio::spawn(async move {
        let r = app.post("/v1/usage", &key, body).await;
        json!({"status": r.status.as_u16(), "body": r.body})
    })
}

/// Sends one event and waits until it is queued for the usage batcher, so events queue in
/// a known order.
async fn queue_usage(
    app: &Arc<TestApp>,
    key: &str,
    body: Value,
    queued: usize,
) -> tokio::task::JoinHandle<Value> {
    let handle = post_usage(app, key, body);
    until("the event to queue", async || {
        tollgate::testing::queued_usage(&app.state) >= queued
    })
    .await;
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_waiting_together_are_one_statement_each_with_its_own_answer() {
    let db_url = fresh_database().await;
    // One usage statement in flight, so the events below queue behind the first.
    let app = Arc::new(spawn_app_with(&db_url, Some(1)).await);
    let a = app
        .tenant_with_plan(json!({"limit": 10, "reset": "month"}))
        .await;
    let b = app.tenant_with_plan(json!({"limit": null})).await;
    for c in ["blocker", "u1", "u2"] {
        app.customer(&a, c).await;
    }
    app.customer(&b, "v1").await;
    let (statements_before, events_before) = tollgate::testing::usage_batch_stats(&app.state);

    // A key shaped like tenant a's, but not one: only the resolve statement can tell.
    let mut forged = a.key.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'x' { 'y' } else { 'x' });
    let forged = Tenant {
        id: a.id.clone(),
        key: forged,
    };

    let (lock, blocked, _) = blocked_usage(&app, &a.id, &a.key, "blocker", "blk").await;
    // Queued in this order: two tenants, three customers, one counter past its limit, an id
    // twice, the same id in another tenant, and two events resolved in the same statement as
    // the others that fail alone: a forged key and an unknown customer.
    let sent = [
        (
            &a,
            json!({"customer": "u1", "feature": "f", "quantity": 4, "id": "e1"}),
        ),
        (
            &a,
            json!({"customer": "u1", "feature": "f", "quantity": 4, "id": "e2"}),
        ),
        (
            &forged,
            json!({"customer": "u1", "feature": "f", "quantity": 1, "id": "e8"}),
        ),
        (
            &a,
            json!({"customer": "u1", "feature": "f", "quantity": 4, "id": "e3"}),
        ),
        (
            &a,
            json!({"customer": "u1", "feature": "f", "quantity": 1, "id": "e4"}),
        ),
        (
            &a,
            json!({"customer": "u1", "feature": "f", "quantity": 2, "id": "e5"}),
        ),
        (
            &a,
            json!({"customer": "u1", "feature": "f", "quantity": 4, "id": "e1"}),
        ),
        (
            &a,
            json!({"customer": "u2", "feature": "f", "quantity": 3, "id": "e6"}),
        ),
        (
            &a,
            json!({"customer": "nobody", "feature": "f", "quantity": 1, "id": "e9"}),
        ),
        (
            &b,
            json!({"customer": "v1", "feature": "f", "quantity": 7, "id": "e1"}),
        ),
        (
            &b,
            json!({"customer": "v1", "feature": "f", "quantity": 0.5, "id": "e7"}),
        ),
    ];
    let mut handles = Vec::new();
    for (i, (t, body)) in sent.into_iter().enumerate() {
        handles.push(queue_usage(&app, &t.key, body, i + 1).await);
    }
    drop(lock);

    let blocked = blocked.await.unwrap();
    assert_eq!(blocked["status"], 200, "{blocked}");
    assert_eq!(num(&blocked["body"]["used"]), "1");
    let mut answers = Vec::new();
    for h in handles {
        answers.push(h.await.unwrap());
    }
    let summary: Vec<(u64, String, String)> = answers
        .iter()
        .map(|r| {
            let body = &r["body"];
            let what = if r["status"] == 200 {
                format!("dup={}", body["duplicate"])
            } else {
                body["error"]["code"].as_str().unwrap().to_string()
            };
            let used = if r["status"] == 200 {
                num(&body["used"])
            } else {
                String::new()
            };
            (r["status"].as_u64().unwrap(), what, used)
        })
        .collect();
    let expect = |status: u64, what: &str, used: &str| (status, what.to_string(), used.to_string());
    assert_eq!(
        summary,
        [
            expect(200, "dup=false", "4"),
            expect(200, "dup=false", "8"),
            expect(401, "unauthenticated", ""),
            expect(402, "limit_exceeded", ""),
            expect(200, "dup=false", "9"),
            expect(402, "limit_exceeded", ""),
            // The second e1 of the batch: a duplicate of the first, with its quantity.
            expect(200, "dup=true", "9"),
            expect(200, "dup=false", "3"),
            expect(404, "customer_not_found", ""),
            expect(200, "dup=false", "7"),
            expect(200, "dup=false", "7.5"),
        ]
    );
    assert_eq!(num(&answers[0]["body"]["remaining"]), "6");
    assert_eq!(num(&answers[6]["body"]["quantity"]), "4");
    assert_eq!(answers[4]["body"]["warning_level"], "warning");

    let (statements, events) = tollgate::testing::usage_batch_stats(&app.state);
    assert_eq!(events - events_before, 12);
    assert_eq!(
        statements - statements_before,
        2,
        "the blocked event's statement, then one for the eleven queued behind it"
    );
    let ids = tollgate::testing::stored::raw_event_ids(&app.db, &a.tid())
        .await
        .unwrap();
    assert_eq!(
        ids,
        ["blk", "e1", "e2", "e4", "e6"],
        "refused events leave no row"
    );
    let ids = tollgate::testing::stored::raw_event_ids(&app.db, &b.tid())
        .await
        .unwrap();
    assert_eq!(ids, ["e1", "e7"]);
    let alerts = app.get("/v1/customers/u1/alerts", &a.key).await;
    let levels: Vec<&str> = alerts.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["warning"], "9 of 10: warning, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_events_wait_for_the_statement_in_flight_and_a_large_batch_runs_beside_it() {
    let db_url = fresh_database().await;
    // Two usage statements may be in flight.
    let app = Arc::new(spawn_app_with(&db_url, Some(2)).await);
    let t = app.tenant_with_plan(json!({"limit": null})).await;
    for c in ["blocker", "u1", "u2", "u3", "u4", "u5", "big"] {
        app.customer(&t, c).await;
    }
    let (statements_before, _) = tollgate::testing::usage_batch_stats(&app.state);
    let in_statements = |n: u64| {
        let (statements, _) = tollgate::testing::usage_batch_stats(&app.state);
        assert_eq!(statements - statements_before, n);
    };

    // 1. One statement in flight (waiting on a lock); five single events behind it are not a
    // second statement beside it: they wait, and then go together.
    let (lock, blocked, _) = blocked_usage(&app, &t.id, &t.key, "blocker", "blk1").await;
    let mut singles = Vec::new();
    for i in 1..=5 {
        let body = json!({"customer": format!("u{i}"), "feature": "f", "id": format!("s{i}")});
        singles.push(queue_usage(&app, &t.key, body, i).await);
    }
    in_statements(1);
    drop(lock);
    assert_eq!(blocked.await.unwrap()["status"], 200);
    for s in singles {
        let r = s.await.unwrap();
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(num(&r["body"]["used"]), "1");
    }
    in_statements(2);

    // 2. A batch of 100 events is enough for a statement of its own beside the one in flight:
    // it is answered while that one still waits.
    let (lock, blocked, _) = blocked_usage(&app, &t.id, &t.key, "blocker", "blk2").await;
    let events: Vec<Value> = (0..100)
        .map(|i| json!({"customer": "big", "feature": "f", "id": format!("b{i}")}))
        .collect();
    let r = app
        .post("/v1/usage/batch", &t.key, json!({"events": events}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 100);
    assert!(
        results.iter().all(|x| x["status"] == "recorded"),
        "{results:?}"
    );
    in_statements(4);
    drop(lock);
    let blocked = blocked.await.unwrap();
    assert_eq!(blocked["status"], 200);
    assert_eq!(num(&blocked["body"]["used"]), "2");
    let big = app.get("/v1/customers/big/usage", &t.key).await;
    assert_eq!(num(&big.body["data"][0]["used"]), "100", "{:?}", big.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_bodies_in_flight_are_bounded_and_a_waiting_batch_goes_once_there_is_room() {
    let app = Arc::new(spawn_app().await);
    let t = app.tenant_with_plan(json!({"limit": null})).await;
    app.customer(&t, "c").await;
    let batch = |prefix: &str, n: usize| {
        let events: Vec<Value> = (0..n)
            .map(|i| json!({"customer": "c", "feature": "f", "id": format!("{prefix}{i}")}))
            .collect();
        json!({"events": events})
    };
    // All but 8 KiB of the allowance is taken: a small batch (under 8 KiB) still goes at once.
    let all = u32::try_from(tollgate::http::usage::record::BATCH_KIB_IN_FLIGHT).unwrap();
    let held = tollgate::testing::hold_batch_room(&app.state, all - 8).unwrap();
    let r = app.post("/v1/usage/batch", &t.key, batch("s", 10)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(tollgate::testing::batches_waiting_for_room(&app.state), 0);

    // A larger one (1000 events: about 60 KiB) waits for room, unread and unrecorded...
    let (_, events_before) = tollgate::testing::usage_batch_stats(&app.state);
    let big = {
        let (app, key, body) = (app.clone(), t.key.clone(), batch("b", 1000));
        tokio::spawn(async move { app.post("/v1/usage/batch", &key, body).await })
    };
    until("the batch to wait for room", async || {
        tollgate::testing::batches_waiting_for_room(&app.state) == 1
    })
    .await;
    let (_, events) = tollgate::testing::usage_batch_stats(&app.state);
    assert_eq!(events, events_before);
    // ...and goes, whole, once the room is given back.
    drop(held);
    let r = big.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|x| x["status"] == "recorded"));
    assert_eq!(tollgate::testing::batches_waiting_for_room(&app.state), 0);

    // More large batches at once than the allowance holds: all recorded, each event once.
    let mut sent = Vec::new();
    for k in 0..24 {
        let (app, key, body) = (app.clone(), t.key.clone(), batch(&format!("m{k}-"), 1000));
        sent.push(tokio::spawn(async move {
            app.post("/v1/usage/batch", &key, body).await
        }));
    }
    for s in sent {
        let r = s.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let usage = app.get("/v1/customers/c/usage", &t.key).await;
    assert_eq!(
        num(&usage.body["data"][0]["used"]),
        "25010",
        "{:?}",
        usage.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_carried_to_the_next_statement_is_run_by_whichever_worker_is_free() {
    let db_url = fresh_database().await;
    let app = Arc::new(spawn_app_with(&db_url, Some(2)).await);
    let t = app.tenant_with_plan(json!({"limit": null})).await;
    for c in ["k1", "k2", "k3", "x", "y"] {
        app.customer(&t, c).await;
    }
    // 1000 events each: two fill a statement (2000), a third is carried to the next.
    let post_batch = |customer: &str| {
        let events: Vec<Value> = (0..1000)
            .map(|i| json!({"customer": customer, "feature": "f", "id": format!("{customer}-{i}")}))
            .collect();
        let (app, key) = (app.clone(), t.key.clone());
        tokio::spawn(async move {
            app.post("/v1/usage/batch", &key, json!({"events": events}))
                .await
        })
    };
    let waiting = async |n: usize| {
        until("usage statements waiting on locks", async || {
            usage_backends_waiting(&app).await.len() == n
        })
        .await
    };
    let (k1, k2, k3) = (
        lock_customer(&app, &t.id, "k1").await,
        lock_customer(&app, &t.id, "k2").await,
        lock_customer(&app, &t.id, "k3").await,
    );
    // Both workers busy, each with a statement waiting on a lock.
    let r1 = post_batch("k1");
    waiting(1).await;
    let r2 = post_batch("k2");
    waiting(2).await;
    // Three batches queue behind them.
    let r3 = post_batch("k3");
    until("k3 to queue", async || {
        tollgate::testing::queued_usage(&app.state) == 1
    })
    .await;
    let r4 = post_batch("x");
    until("x to queue", async || {
        tollgate::testing::queued_usage(&app.state) == 2
    })
    .await;
    let r5 = post_batch("y");
    until("y to queue", async || {
        tollgate::testing::queued_usage(&app.state) == 3
    })
    .await;
    // The first worker is freed: it takes k3 and x (2000 events) and waits on k3's lock; y is
    // carried to the next statement.
    drop(k1);
    assert_eq!(r1.await.unwrap().status, StatusCode::OK);
    until("k3 and x to be taken", async || {
        tollgate::testing::queued_usage(&app.state) == 0
    })
    .await;
    waiting(2).await;
    // The second worker is freed: it runs y, while k3 is still locked.
    drop(k2);
    assert_eq!(r2.await.unwrap().status, StatusCode::OK);
    let r = r5.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        usage_backends_waiting(&app).await.len(),
        1,
        "k3 and x still wait"
    );
    drop(k3);
    for r in [r3, r4] {
        let r = r.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert!(r.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] == "recorded"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_transaction_fails_answers_503_to_exactly_its_own_requests() {
    let db_url = fresh_database().await;
    let app = Arc::new(spawn_app_with(&db_url, Some(1)).await);
    let a = app.tenant_with_plan(json!({"limit": null})).await;
    let b = app.tenant_with_plan(json!({"limit": null})).await;
    app.customer(&a, "blocker").await;
    app.customer(&a, "u1").await;
    app.customer(&b, "v1").await;

    let (lock, first, pid) = blocked_usage(&app, &a.id, &a.key, "blocker", "a1").await;
    // Two more queue behind it; they will share the next statement.
    let second = queue_usage(
        &app,
        &a.key,
        json!({"customer": "blocker", "feature": "f", "id": "b1"}),
        1,
    )
    .await;
    let third = queue_usage(
        &app,
        &b.key,
        json!({"customer": "v1", "feature": "f", "id": "c1", "quantity": 5}),
        2,
    )
    .await;
    // The database drops the first statement's connection (as a restart would).
    let terminate = |pid: i64| {
        let app = app.clone();
        async move {
            // On Citus a global process id, of a backend on a worker node.
            let sql = if crate::helpers::on_citus() {
                "SELECT pg_terminate_backend($1::bigint)"
            } else {
                "SELECT pg_terminate_backend($1::int)"
            };
            let done: bool = sqlx::query_scalar(sql)
                .bind(pid)
                .fetch_one(&app.db)
                .await
                .unwrap();
            assert!(done);
        }
    };
    terminate(pid).await;
    let first = first.await.unwrap();
    assert_eq!(first["status"], 503, "{first}");
    assert_eq!(first["body"]["error"]["type"], "unavailable");
    // The next statement takes both queued events and waits for the lock too; it fails as
    // well, and both of its events get a 503, nobody else's answer.
    let pid = waiting_usage_backend(&app).await;
    terminate(pid).await;
    // (On Citus too: the process ended is the statement's own on the coordinator, which
    // Citus names the transaction by.)
    for r in [second.await.unwrap(), third.await.unwrap()] {
        assert_eq!(r["status"], 503, "{r}");
        assert_eq!(r["body"]["error"]["type"], "unavailable");
    }
    // Nothing of either failed batch was written.
    for t in [&a, &b] {
        let ids = tollgate::testing::stored::raw_event_ids(&app.db, &t.tid())
            .await
            .unwrap();
        assert!(ids.is_empty(), "{ids:?}");
        let counters = tollgate::testing::stored::counter_values(&app.db, &t.tid())
            .await
            .unwrap();
        assert!(counters.is_empty(), "{counters:?}");
    }
    // Other events are recorded meanwhile (the lock is still held).
    let other = app
        .post(
            "/v1/usage",
            &a.key,
            json!({"customer": "u1", "feature": "f", "id": "d1"}),
        )
        .await;
    assert_eq!(other.status, StatusCode::OK, "{:?}", other.body);
    drop(lock);
    // Retried by their ids, each is counted once.
    for (t, body) in [
        (
            &a,
            json!({"customer": "blocker", "feature": "f", "id": "a1"}),
        ),
        (
            &a,
            json!({"customer": "blocker", "feature": "f", "id": "b1"}),
        ),
        (
            &b,
            json!({"customer": "v1", "feature": "f", "id": "c1", "quantity": 5}),
        ),
    ] {
        let r = app.post("/v1/usage", &t.key, body.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["duplicate"], false);
        let again = app.post("/v1/usage", &t.key, body).await;
        assert_eq!(again.body["duplicate"], true);
    }
    let check = app
        .post(
            "/v1/check",
            &a.key,
            json!({"customer": "blocker", "feature": "f"}),
        )
        .await;
    assert_eq!(num(&check.body["used"]), "2");
    let check = app
        .post(
            "/v1/check",
            &b.key,
            json!({"customer": "v1", "feature": "f"}),
        )
        .await;
    assert_eq!(num(&check.body["used"]), "5");
}

/// A batch's answers as (status, the counter after the event or the error code), in order.
fn outcomes(results: &[Value]) -> Vec<(String, String)> {
    results
        .iter()
        .map(|x| {
            let used = &x["result"]["used"];
            let detail = if used.is_null() {
                x["error"]["code"].as_str().unwrap_or("").to_string()
            } else {
                num(used)
            };
            (x["status"].as_str().unwrap().to_string(), detail)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_applies_in_arrival_order_counts_an_id_once_and_coalesces_its_counters() {
    let app = spawn_app().await;
    let t = app
        .tenant_with_plan(json!({"limit": 10, "reset": "month"}))
        .await;
    app.customer(&t, "u1").await;
    app.customer(&t, "u2").await;
    let r = app
        .post(
            "/v1/usage/batch",
            &t.key,
            json!({"events": [
                {"customer": "u1", "feature": "f", "id": "a", "quantity": 4},
                {"customer": "u2", "feature": "f", "id": "x", "quantity": 1},
                {"customer": "u1", "feature": "f", "id": "b", "quantity": 4},
                {"customer": "u1", "feature": "f", "id": "c", "quantity": 4},
                {"customer": "u2", "feature": "f", "id": "y", "quantity": 2},
                {"customer": "u1", "feature": "f", "id": "d", "quantity": 1},
                {"customer": "u1", "feature": "f", "id": "a", "quantity": 4},
                {"customer": "u1", "feature": "f", "id": "e", "quantity": 2},
                {"customer": "u1", "feature": "f", "id": "e2", "quantity": 1, "enforce": false},
                {"customer": "u2", "feature": "f", "id": "z", "quantity": 3, "billable": false}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let results = r.body["results"].as_array().unwrap();
    let got = outcomes(results);
    let e = |s: &str, u: &str| (s.to_string(), u.to_string());
    assert_eq!(
        got,
        [
            e("recorded", "4"),
            e("recorded", "1"),
            e("recorded", "8"),
            e("refused", "limit_exceeded"),
            e("recorded", "3"),
            e("recorded", "9"),
            e("duplicate", "10"),
            e("refused", "limit_exceeded"),
            // enforce: false goes past the limit.
            e("recorded", "10"),
            // Not billable: kept, counted nowhere; the counter as it stands.
            e("recorded", "3"),
        ]
    );
    let ids = tollgate::testing::stored::raw_event_ids(&app.db, &t.tid())
        .await
        .unwrap();
    assert_eq!(ids, ["a", "b", "d", "e2", "x", "y", "z"]);
    let usage = app.get("/v1/customers/u1/usage", &t.key).await;
    assert_eq!(
        num(&usage.body["data"][0]["used"]),
        "10",
        "{:?}",
        usage.body
    );
    // u2's two events fit: one upsert for both (the counter saw each event in turn).
    let check = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u2", "feature": "f"}),
        )
        .await;
    assert_eq!(num(&check.body["used"]), "3");
    // Crossing several levels in one coalesced upsert stores each level once.
    let r = app
        .post(
            "/v1/usage/batch",
            &t.key,
            json!({"events": [
                {"customer": "u2", "feature": "f", "id": "w1", "quantity": 3},
                {"customer": "u2", "feature": "f", "id": "w2", "quantity": 4}
            ]}),
        )
        .await;
    assert_eq!(r.body["results"][1]["status"], "recorded", "{:?}", r.body);
    let alerts = app.get("/v1/customers/u2/alerts", &t.key).await;
    let mut levels: Vec<&str> = alerts.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["level"].as_str().unwrap())
        .collect();
    levels.sort_unstable();
    assert_eq!(levels, ["critical", "exceeded", "warning"]);
    // A retry of the whole batch: every event a duplicate or refused again, nothing counted.
    let again = app
        .post(
            "/v1/usage/batch",
            &t.key,
            json!({"events": [
                {"customer": "u2", "feature": "f", "id": "w1", "quantity": 3},
                {"customer": "u2", "feature": "f", "id": "w2", "quantity": 4}
            ]}),
        )
        .await;
    for x in again.body["results"].as_array().unwrap() {
        assert_eq!(x["status"], "duplicate");
        assert_eq!(num(&x["result"]["used"]), "10");
    }
}

/// The common case (every event new) is one insert and nothing more; anything else takes the
/// slower path that works out why each event was not inserted. Both in one batch here: a
/// repeat answers as its first occurrence did, even when that one was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_id_answers_as_its_first_occurrence_did_refused_or_recorded() {
    let app = spawn_app().await;
    let t = app
        .tenant_with_plan(json!({"limit": 100, "reset": "month"}))
        .await;
    let g = app
        .post(
            "/v1/features",
            &t.key,
            json!({"key": "g", "name": "G", "type": "metered"}),
        )
        .await;
    assert_eq!(g.status, StatusCode::CREATED, "{:?}", g.body);
    app.customer(&t, "u1").await;
    let events = json!({"events": [
        {"customer": "u1", "feature": "g", "id": "r", "quantity": 1},
        {"customer": "u1", "feature": "f", "id": "r", "quantity": 1},
        {"customer": "u1", "feature": "f", "id": "s", "quantity": 2},
        {"customer": "u1", "feature": "f", "id": "s", "quantity": 2},
        {"customer": "u1", "feature": "f", "id": "t", "quantity": 3}
    ]});
    let r = app.post("/v1/usage/batch", &t.key, events.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let got = outcomes(r.body["results"].as_array().unwrap());
    let statuses: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        statuses,
        ["refused", "refused", "recorded", "duplicate", "recorded"],
        "{got:?}"
    );
    assert_eq!(got[0].1, "not_in_plan", "{got:?}");
    assert_eq!(got[2].1, "2", "{got:?}");
    assert_eq!(got[3].1, "5", "the counter after the batch: {got:?}");
    assert_eq!(got[4].1, "5", "{got:?}");
    let ids = tollgate::testing::stored::raw_event_ids(&app.db, &t.tid())
        .await
        .unwrap();
    assert_eq!(ids, ["s", "t"]);
    // All new: the common case, every event recorded with its running total.
    let r = app
        .post(
            "/v1/usage/batch",
            &t.key,
            json!({"events": [
                {"customer": "u1", "feature": "f", "id": "n1", "quantity": 1},
                {"customer": "u1", "feature": "f", "id": "n2", "quantity": 4}
            ]}),
        )
        .await;
    let used: Vec<String> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| num(&x["result"]["used"]))
        .collect();
    assert_eq!(used, ["6", "10"], "{:?}", r.body);
    // The same batch again: nothing new, nothing counted.
    let again = app.post("/v1/usage/batch", &t.key, events).await;
    let statuses: Vec<&str> = again.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["refused", "refused", "duplicate", "duplicate", "duplicate"]
    );
    let check = app
        .post(
            "/v1/check",
            &t.key,
            json!({"customer": "u1", "feature": "f"}),
        )
        .await;
    assert_eq!(num(&check.body["used"]), "10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_writers_on_one_counter_with_a_limit_of_1000_record_exactly_1000() {
    let app = Arc::new(spawn_app().await);
    let t = app
        .tenant_with_plan(json!({"limit": 1000, "reset": "month"}))
        .await;
    app.customer(&t, "hot").await;
    let mut handles = Vec::new();
    for w in 0..64 {
        let (app, key) = (app.clone(), t.key.clone());
        handles.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0, 0);
            for i in 0..20 {
                let r = app
                    .post(
                        "/v1/usage",
                        &key,
                        json!({"customer": "hot", "feature": "f", "id": format!("w{w}-{i}")}),
                    )
                    .await;
                match r.status {
                    StatusCode::OK => ok += 1,
                    StatusCode::PAYMENT_REQUIRED => refused += 1,
                    other => panic!("{other}: {:?}", r.body),
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for h in handles {
        let (o, r) = h.await.unwrap();
        ok += o;
        refused += r;
    }
    assert_eq!((ok, refused), (1000, 280));
    let counters = tollgate::testing::stored::counter_values(&app.db, &t.tid())
        .await
        .unwrap();
    assert_eq!(counters.len(), 1);
    assert_eq!(counters[0].to_string(), "1000");
    let ids = tollgate::testing::stored::raw_event_ids(&app.db, &t.tid())
        .await
        .unwrap();
    assert_eq!(ids.len(), 1000);
    let (statements, events) = tollgate::testing::usage_batch_stats(&app.state);
    assert!(
        statements < events,
        "concurrent events share statements ({statements} for {events})"
    );
}

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// `tollgate serve` on `db_url`, once it says it is listening.
fn start_server(db_url: &str, port: u16) -> std::process::Child {
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", db_url)
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TOLLGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("TOLLGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    until_listening(&mut child);
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_under_load_every_acknowledged_event_is_there_and_retries_count_once() {
    let db_url = fresh_database().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = tokio::task::spawn_blocking({
        let db_url = db_url.clone();
        move || start_server(&db_url, port)
    })
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let tenant: Value = client
        .post(format!("{base}/admin/v1/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "durable", "mode": "test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = tenant["api_key"].as_str().unwrap().to_string();
    let tid: tollgate::ids::TenantId = tenant["id"].as_str().unwrap().parse().unwrap();
    let setup = [
        (
            "/v1/features",
            json!({"key": "f", "name": "F", "type": "metered"}),
        ),
        (
            "/v1/plans",
            json!({"key": "p", "name": "P", "default": true,
                   "entitlements": [{"feature": "f", "limit": null}]}),
        ),
    ];
    for (path, body) in setup {
        let r = client
            .post(format!("{base}{path}"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    for c in 0..4 {
        let r = client
            .put(format!("{base}/v1/customers/c{c}"))
            .bearer_auth(&key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    // 32 writers until the server dies under them.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let sent = Arc::new(Mutex::new(BTreeSet::new()));
    let mut writers = Vec::new();
    for w in 0..32 {
        let (client, base, key) = (client.clone(), base.clone(), key.clone());
        let (acked, sent) = (acked.clone(), sent.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("w{w:02}-{i:05}");
                sent.lock().unwrap().insert(id.clone());
                let r = client
                    .post(format!("{base}/v1/usage"))
                    .bearer_auth(&key)
                    .json(&json!({"customer": format!("c{}", w % 4), "feature": "f", "id": id}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::OK => {
                        acked.lock().unwrap().insert(id);
                    }
                    // The server is gone.
                    _ => return,
                }
            }
        }));
    }
    until("500 acknowledged events", async || {
        acked.lock().unwrap().len() >= 500
    })
    .await;
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();

    // Every acknowledged event is stored; the counters hold exactly the stored events. (A
    // statement the server had sent runs to its end, and commits, after the server died: wait
    // for those before reading.)
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    until("the dead server's statements to end", async || {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND state <> 'idle'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        running == 0
    })
    .await;
    let stored: BTreeSet<String> = tollgate::testing::stored::raw_event_ids(&pool, &tid)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(acked.is_subset(&stored), "an acknowledged event was lost");
    assert!(stored.is_subset(&sent));
    let counted: rust_decimal::Decimal = tollgate::testing::stored::counter_values(&pool, &tid)
        .await
        .unwrap()
        .into_iter()
        .sum();
    assert_eq!(counted, rust_decimal::Decimal::from(stored.len()));

    // After a restart, a retry of every id sent counts each once.
    let mut server = tokio::task::spawn_blocking({
        let db_url = db_url.clone();
        move || start_server(&db_url, port)
    })
    .await
    .unwrap();
    for (i, id) in sent.iter().enumerate() {
        let w: usize = id[1..3].parse().unwrap();
        let r = client
            .post(format!("{base}/v1/usage"))
            .bearer_auth(&key)
            .json(&json!({"customer": format!("c{}", w % 4), "feature": "f", "id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "retry {i}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["duplicate"], stored.contains(id), "{id}: {body}");
    }
    let counted: rust_decimal::Decimal = tollgate::testing::stored::counter_values(&pool, &tid)
        .await
        .unwrap()
        .into_iter()
        .sum();
    assert_eq!(counted, rust_decimal::Decimal::from(sent.len()));
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_concurrent_batches_than_connections_are_all_recorded_once() {
    // 40 batch requests at once against a pool of 20 connections: each holds none while its
    // events wait for the group commit, and every event is counted once.
    let app = Arc::new(spawn_app().await);
    let t = app.tenant_with_plan(json!({"limit": null})).await;
    for c in 0..10 {
        app.customer(&t, &format!("c{c}")).await;
    }
    let mut handles = Vec::new();
    for r in 0..40 {
        let (app, key) = (app.clone(), t.key.clone());
        handles.push(tokio::spawn(async move {
            let events: Vec<Value> = (0..50)
                .map(|i| json!({"customer": format!("c{}", i % 10), "feature": "f", "id": format!("r{r}-{i}")}))
                .collect();
            app.post("/v1/usage/batch", &key, json!({"events": events}))
                .await
        }));
    }
    for h in handles {
        let r = h.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        for x in r.body["results"].as_array().unwrap() {
            assert_eq!(x["status"], "recorded");
        }
    }
    let counters = tollgate::testing::stored::counter_values(&app.db, &t.tid())
        .await
        .unwrap();
    assert_eq!(counters.len(), 10);
    assert!(
        counters.iter().all(|c| c.to_string() == "200"),
        "{counters:?}"
    );
}
