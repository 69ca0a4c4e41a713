//! A local Citus cluster for the tests (SPEC §14): a coordinator and worker nodes, each a
//! throwaway PostgreSQL with the `citus` extension preloaded, on this machine. The suite runs
//! on one when `TOLLGATE_TEST_CITUS=1` (README, "Run it, test it"); the node-failure and
//! rebalancing tests start their own.
//!
//! A database on a Citus cluster exists once per node, with the extension created in each and
//! the workers registered in the coordinator's copy. The suite migrates one such database as
//! the template, then clones it on every node for each test (`CREATE DATABASE … TEMPLATE` on
//! each node, from that node's copy): the clones hold the same shards and the same metadata,
//! so they form a cluster database of their own at once, without distributing anything again.

use std::path::{Path, PathBuf};

use sqlx::{Connection, PgConnection};
use tollgate::embedded_pg::EmbeddedPg;

/// The server settings of every node: Citus preloaded, logical decoding for shard moves,
/// prepared transactions for Citus's two-phase commits, room for a maintenance daemon per
/// test database, and no fsync (a throwaway cluster).
const SETTINGS: &[(&str, &str)] = &[
    ("shared_preload_libraries", "citus"),
    ("wal_level", "logical"),
    ("max_connections", "1000"),
    ("max_prepared_transactions", "200"),
    ("max_worker_processes", "600"),
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("synchronous_commit", "off"),
];

pub struct Cluster {
    pub coordinator: EmbeddedPg,
    pub workers: Vec<EmbeddedPg>,
    pub dir: PathBuf,
}

/// Whether the suite runs on Citus (`TOLLGATE_TEST_CITUS=1`).
pub fn enabled() -> bool {
    std::env::var("TOLLGATE_TEST_CITUS").is_ok_and(|v| v == "1")
}

impl Cluster {
    /// Starts a coordinator and `workers` worker nodes under `dir` (blocking).
    pub fn start(dir: &Path, workers: usize) -> Cluster {
        let _ = std::fs::remove_dir_all(dir);
        let node = |name: &str| {
            EmbeddedPg::start_with(&dir.join(name), SETTINGS)
                .unwrap_or_else(|e| panic!("starting the Citus node {name}: {e:#}"))
        };
        Cluster {
            coordinator: node("coordinator"),
            workers: (1..=workers).map(|i| node(&format!("worker{i}"))).collect(),
            dir: dir.to_path_buf(),
        }
    }

    /// One more worker node (started, not yet in any database's metadata).
    pub fn add_worker(&mut self) -> &EmbeddedPg {
        let name = format!("worker{}", self.workers.len() + 1);
        let pg = EmbeddedPg::start_with(&self.dir.join(&name), SETTINGS)
            .unwrap_or_else(|e| panic!("starting the Citus node {name}: {e:#}"));
        self.workers.push(pg);
        self.workers.last().unwrap()
    }

    fn nodes(&self) -> impl Iterator<Item = &EmbeddedPg> {
        std::iter::once(&self.coordinator).chain(&self.workers)
    }

    /// The coordinator's URL for `database`.
    pub fn url(&self, database: &str) -> String {
        self.coordinator.url(database)
    }

    /// A new, empty cluster database, as an operator prepares one: created on every node,
    /// the extension in each, the workers registered on the coordinator.
    pub async fn create_database(&self, name: &str) {
        for pg in self.nodes() {
            let mut c = connect(&pg.url("postgres")).await;
            exec(&mut c, &format!("CREATE DATABASE {name}")).await;
            let mut db = connect(&pg.url(name)).await;
            exec(&mut db, "CREATE EXTENSION citus").await;
        }
        let mut coord = connect(&self.coordinator.url(name)).await;
        exec(
            &mut coord,
            &format!(
                "SELECT citus_set_coordinator_host('127.0.0.1', {})",
                self.coordinator.port()
            ),
        )
        .await;
        for w in &self.workers {
            exec(
                &mut coord,
                &format!("SELECT citus_add_node('127.0.0.1', {})", w.port()),
            )
            .await;
        }
    }

    /// Makes `name` a template on every node: no connections to it from now on (its
    /// maintenance daemons are ended, and none reconnects), so it can be cloned.
    pub async fn seal_template(&self, name: &str) {
        for pg in self.nodes() {
            let mut c = connect(&pg.url("postgres")).await;
            exec(
                &mut c,
                &format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"),
            )
            .await;
            // The maintenance daemon (a background worker) holds a connection; it is ended,
            // and the loop waits until nothing is connected any more.
            for _ in 0..200 {
                let left: i64 = sqlx::query_scalar(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(name)
                .fetch_one(&mut c)
                .await
                .unwrap();
                if left == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }

    /// `name`, a copy of the sealed template `template`, on every node (workers first). In
    /// it, every statement that runs on more than one shard fails
    /// (`citus.multi_task_query_log_level`), but for those Tollgate runs across tenants on
    /// purpose, which say so (`db::spanning_tenants`): so a test fails if any request, or any
    /// other work for one tenant, runs anywhere but on its tenant's node.
    pub async fn clone_database(&self, template: &str, name: &str) {
        for pg in self
            .workers
            .iter()
            .chain(std::iter::once(&self.coordinator))
        {
            let mut c = connect(&pg.url("postgres")).await;
            exec(
                &mut c,
                &format!("CREATE DATABASE {name} TEMPLATE {template}"),
            )
            .await;
            exec(
                &mut c,
                &format!("ALTER DATABASE {name} SET citus.multi_task_query_log_level = 'error'"),
            )
            .await;
        }
    }

    /// A new database on the cluster, migrated as `tollgate migrate` does: its URL.
    pub async fn migrated_database(&self, name: &str) -> String {
        self.create_database(name).await;
        let url = self.url(name);
        let mut conn = PgConnection::connect(&url).await.unwrap();
        tollgate::MIGRATOR.run(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        url
    }

    /// The port of the worker node that holds the tenant's shards in `database`.
    pub async fn node_of(&self, database: &str, tenant: &str) -> u16 {
        let mut conn = connect(&self.url(database)).await;
        let port: i32 = sqlx::query_scalar(
            "SELECT nodeport FROM citus_shards
             WHERE table_name = 'tenants'::regclass
               AND shardid = get_shard_id_for_distribution_column('tenants', $1)",
        )
        .bind(tenant)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        u16::try_from(port).unwrap()
    }

    /// Adds the last started worker (see [`Cluster::add_worker`]) to `database`: the database
    /// and the extension on it, then `citus_add_node` on the coordinator.
    pub async fn join(&self, database: &str) {
        let node = self.workers.last().unwrap();
        let mut c = connect(&node.url("postgres")).await;
        exec(&mut c, &format!("CREATE DATABASE {database}")).await;
        let mut db = connect(&node.url(database)).await;
        exec(&mut db, "CREATE EXTENSION citus").await;
        let mut coord = connect(&self.url(database)).await;
        exec(
            &mut coord,
            &format!("SELECT citus_add_node('127.0.0.1', {})", node.port()),
        )
        .await;
    }

    /// Runs `sql` on the coordinator's `database` (an operator's command).
    pub async fn run(&self, database: &str, sql: &str) {
        let mut coord = connect(&self.url(database)).await;
        exec(&mut coord, sql).await;
    }

    /// How many shards of `database` the node on `port` holds.
    pub async fn shards_on(&self, database: &str, port: u16) -> i64 {
        let mut conn = connect(&self.url(database)).await;
        sqlx::query_scalar("SELECT count(*) FROM citus_shards WHERE nodeport = $1")
            .bind(i32::from(port))
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }
}

/// A cluster a test starts for itself is stopped and removed when it goes.
impl Drop for Cluster {
    fn drop(&mut self) {
        for pg in self.nodes() {
            pg.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn connect(url: &str) -> PgConnection {
    // The nodes serve TLS with Citus's self-signed certificate; the harness itself does not
    // need it.
    let url = format!("{url}?sslmode=disable");
    PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}
