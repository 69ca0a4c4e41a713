//! What only a Citus cluster has (SPEC §14): a worker node going down, and shards moving to a
//! new node while usage is recorded. Each test starts a cluster of its own (it stops nodes);
//! they run with the Citus suite (`TOLLGATE_TEST_CITUS=1`) and pass trivially without it,
//! since a plain PostgreSQL has no nodes to lose.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::cluster::{self, Cluster};
use crate::helpers::{num, spawn_app_on, Resp, Tenant, TestApp};

/// A cluster of a coordinator and `workers` workers for one test, or `None` off the Citus
/// suite.
async fn own_cluster(what: &str, workers: usize) -> Option<Cluster> {
    if !cluster::enabled() {
        eprintln!("skipped: needs the Citus suite (TOLLGATE_TEST_CITUS=1)");
        return None;
    }
    let dir = std::env::temp_dir().join(format!(
        "tollgate-citus-{what}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    Some(
        tokio::task::spawn_blocking(move || Cluster::start(&dir, workers))
            .await
            .unwrap(),
    )
}

/// Tenants with a metered feature `f` (no limit) on their default plan and a customer `u1`,
/// made until one lives on each worker node: (worker port, tenant), in the workers' order.
async fn tenant_on_each_worker(app: &TestApp, cluster: &Cluster, db: &str) -> Vec<Tenant> {
    let mut found: HashMap<u16, Tenant> = HashMap::new();
    for _ in 0..64 {
        if found.len() == cluster.workers.len() {
            break;
        }
        let t = app.tenant_with_plan(json!({"limit": null})).await;
        let port = cluster.node_of(db, &t.id).await;
        found.entry(port).or_insert(t);
    }
    cluster
        .workers
        .iter()
        .map(|w| {
            found
                .remove(&w.port())
                .expect("64 tenants and none on a worker")
        })
        .collect()
}

async fn record(app: &TestApp, t: &Tenant, id: &str) -> Resp {
    app.post(
        "/v1/usage",
        &t.key,
        json!({"customer": "u1", "feature": "f", "quantity": 1, "id": id}),
    )
    .await
}

async fn used(app: &TestApp, t: &Tenant) -> Resp {
    app.post(
        "/v1/check",
        &t.key,
        json!({"customer": "u1", "feature": "f"}),
    )
    .await
}

fn assert_unavailable(r: &Resp, what: &str) {
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {}",
        r.body
    );
    assert_eq!(r.error_type(), "unavailable", "{what}: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_node_down_is_503_for_its_tenants_alone_and_they_come_back() {
    let Some(mut cluster) = own_cluster("down", 2).await else {
        return;
    };
    let url = cluster.migrated_database("tollgate").await;
    let app = spawn_app_on(&url).await;
    let tenants = tenant_on_each_worker(&app, &cluster, "tollgate").await;
    let (up, down) = (&tenants[0], &tenants[1]);
    for t in &tenants {
        app.customer(t, "u1").await;
        for i in 0..3 {
            let r = record(&app, t, &format!("before-{i}")).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
    }

    // The second worker stops (`pg_ctl stop -m fast`).
    let node = cluster.workers.pop().unwrap();
    let node = tokio::task::spawn_blocking(move || {
        node.stop();
        node
    })
    .await
    .unwrap();

    // Its tenant: every kind of request is a 503 in the error shape, each within seconds.
    for attempt in 0..3 {
        for (what, r) in [
            ("check", {
                let t0 = Instant::now();
                (used(&app, down).await, t0.elapsed())
            }),
            ("usage", {
                let t0 = Instant::now();
                (record(&app, down, "during").await, t0.elapsed())
            }),
            ("read", {
                let t0 = Instant::now();
                (
                    app.get("/v1/customers/u1/entitlements", &down.key).await,
                    t0.elapsed(),
                )
            }),
            ("write", {
                let t0 = Instant::now();
                (
                    app.put("/v1/customers/u2", &down.key, json!({})).await,
                    t0.elapsed(),
                )
            }),
        ] {
            let (r, took) = r;
            assert_unavailable(
                &r,
                &format!("{what} #{attempt} for the tenant on the stopped node"),
            );
            assert!(took < Duration::from_secs(5), "{what} took {took:?}");
        }
        // The other tenant, meanwhile, as before: recorded and counted.
        let r = record(&app, up, &format!("during-{attempt}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(num(&r.body["used"]), (4 + attempt).to_string());
        let r = app.put("/v1/customers/u2", &up.key, json!({})).await;
        assert!(r.status.is_success(), "{}", r.body);
    }

    // Back on its port: the tenant is served again without a restart of Tollgate. (Polled:
    // nothing tells the test when the node accepts connections again.)
    let node = tokio::task::spawn_blocking(move || {
        let mut node = node;
        node.restart().unwrap();
        node
    })
    .await
    .unwrap();
    cluster.workers.push(node);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = used(&app, down).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_unavailable(&r, "check while the node comes back");
        assert!(
            Instant::now() < deadline,
            "not served 30 s after the node came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing acknowledged was lost, nothing refused was written, and the event refused while
    // the node was down is counted once when it is sent again.
    assert_eq!(num(&used(&app, down).await.body["used"]), "3");
    let r = record(&app, down, "during").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["duplicate"], false);
    assert_eq!(num(&r.body["used"]), "4");
    assert_eq!(num(&used(&app, up).await.body["used"]), "6");
}

/// What the load saw: every answer's status, the events acknowledged per tenant, and the
/// longest time one event took from its first attempt to its acknowledgement.
#[derive(Default)]
struct Seen {
    statuses: HashMap<u16, u64>,
    /// The ids acknowledged, by tenant.
    acked: HashMap<String, Vec<String>>,
    longest: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_moved_to_a_new_node_under_load_lose_nothing_and_count_nothing_twice() {
    let Some(cluster) = own_cluster("rebalance", 2).await else {
        return;
    };
    let url = cluster.migrated_database("tollgate").await;
    let app = Arc::new(spawn_app_on(&url).await);
    let mut tenants = Vec::new();
    for _ in 0..8 {
        let t = app.tenant_with_plan(json!({"limit": null})).await;
        app.customer(&t, "u1").await;
        tenants.push(Arc::new(t));
    }

    // Load: each writer sends events with ids of its own, and sends an event refused with a
    // 503 again, with the same id, until it is acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (app, tenants, stop, seen) = (app.clone(), tenants.clone(), stop.clone(), seen.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = &tenants[(n as usize + w) % tenants.len()];
                let id = format!("w{w}-{n}");
                let first = Instant::now();
                loop {
                    let r = record(&app, t, &id).await;
                    let mut seen = seen.lock().unwrap();
                    *seen.statuses.entry(r.status.as_u16()).or_default() += 1;
                    if r.status == StatusCode::OK {
                        assert_eq!(r.body["duplicate"], false, "{id}: {}", r.body);
                        seen.acked.entry(t.id.clone()).or_default().push(id.clone());
                        seen.longest = seen.longest.max(first.elapsed());
                        break;
                    }
                    assert_eq!(
                        r.status,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "{id}: {}",
                        r.body
                    );
                    assert!(
                        first.elapsed() < Duration::from_secs(60),
                        "{id} never recorded"
                    );
                }
                n += 1;
            }
        }));
    }

    // A third worker joins, and the shards are spread over all three while the load runs.
    let before = Instant::now();
    let cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        cluster.add_worker();
        cluster
    })
    .await
    .unwrap();
    let new_port = cluster.workers.last().unwrap().port();
    cluster.join("tollgate").await;
    cluster
        .run("tollgate", "SELECT citus_rebalance_start()")
        .await;
    cluster
        .run("tollgate", "SELECT citus_rebalance_wait()")
        .await;
    let took = before.elapsed();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let moved = cluster.shards_on("tollgate", new_port).await;
    assert!(moved > 0, "no shard moved to the new node");

    // Every acknowledged event is stored and counted once, and nothing else is.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    for t in &tenants {
        let mut acked = seen.acked.get(&t.id).cloned().unwrap_or_default();
        acked.sort();
        let mut stored = tollgate::testing::stored::raw_event_ids(&app.db, &t.tid())
            .await
            .unwrap();
        stored.sort();
        let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(id)).collect();
        let extra: Vec<&String> = stored.iter().filter(|id| !acked.contains(id)).collect();
        assert!(
            lost.is_empty() && extra.is_empty(),
            "tenant {}: acknowledged but not stored {lost:?}, stored but not acknowledged \
             {extra:?}",
            t.id
        );
        let r = used(&app, t).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            num(&r.body["used"]),
            acked.len().to_string(),
            "tenant {}",
            t.id
        );
    }
    let answers: u64 = seen.statuses.values().sum();
    let acked: usize = seen.acked.values().map(Vec::len).sum();
    assert!(acked > 0, "no event was recorded during the move");
    eprintln!(
        "rebalance: {moved} shards moved in {took:?}; {acked} events acknowledged of {answers} \
         answers {:?}; longest from an event's first attempt to its acknowledgement: {:?}",
        seen.statuses, seen.longest
    );
    drop(cluster);
}
