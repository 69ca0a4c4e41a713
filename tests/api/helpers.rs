//! Test harness: one throwaway PostgreSQL cluster per test process (unless `DATABASE_URL` names
//! a server), a migrated template database, and per test a fresh database cloned from it and
//! the real app served in-process on port 0.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;
use tollgate::config::Secret;
use tollgate::embedded_pg::EmbeddedPg;
use tollgate::secrets::{Secrets, SecretsKey};
use tollgate::AppState;

use crate::cluster::{self, Cluster};

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The secrets key of every app the tests start (unless a test gives its own): one for the
/// test process, made at random, as an operator's would be.
pub fn secrets_key() -> &'static Secret {
    static KEY: OnceLock<Secret> = OnceLock::new();
    KEY.get_or_init(tollgate::secrets::SecretsKey::generate)
}

/// [`secrets_key`], parsed.
pub fn test_secrets() -> Secrets {
    Secrets::new(SecretsKey::parse(secrets_key()).unwrap())
}

/// Where the tests' databases live.
enum Server {
    /// One PostgreSQL: `(server url without a database, maintenance database)`.
    Single(String, String),
    /// A local Citus cluster (`TOLLGATE_TEST_CITUS=1`): a coordinator and two workers.
    Citus(Cluster),
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if !url.is_empty() {
                let (base, db) = url.rsplit_once('/').expect("DATABASE_URL has a database");
                let db = db.split('?').next().unwrap_or("postgres").to_string();
                return Server::Single(base.to_string(), db);
            }
        }
        let dir = std::env::temp_dir().join(format!("tollgate-test-pg-{}", std::process::id()));
        if cluster::enabled() {
            let c = Cluster::start(&dir, 2);
            let pids: Vec<_> = std::iter::once(&c.coordinator)
                .chain(&c.workers)
                .map(|pg| pg.pgdata().join("postmaster.pid"))
                .collect();
            watch(&pids, &dir);
            return Server::Citus(c);
        }
        let _ = std::fs::remove_dir_all(&dir);
        let mut pg = EmbeddedPg::start(&dir).expect("starting a throwaway PostgreSQL for tests");
        pg.disown();
        watch(&[pg.pgdata().join("postmaster.pid")], &dir);
        Server::Single(
            format!("postgres://postgres@127.0.0.1:{}", pg.port()),
            "postgres".to_string(),
        )
    })
}

/// A watchdog stops the servers whose pid files are given and removes `dir` when this process
/// exits, however it exits: it waits for EOF on a pipe that only this process holds open.
fn watch(pid_files: &[std::path::PathBuf], dir: &std::path::Path) {
    let kills: String = pid_files
        .iter()
        .map(|f| format!("kill -QUIT $(head -n1 '{}') 2>/dev/null; ", f.display()))
        .collect();
    let script = format!("cat >/dev/null; {kills}sleep 1; rm -rf '{}'", dir.display());
    // Leaked on purpose: the watchdog must outlive every test, and its stdin (owned by the
    // leaked Child) stays open until this process exits.
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("starting the test cluster watchdog");
    let child: &'static mut std::process::Child = Box::leak(Box::new(child));
    if let Some(stdin) = child.stdin.as_mut() {
        stdin.flush().ok();
    }
}

/// Whether this suite runs on Citus.
pub fn on_citus() -> bool {
    matches!(server(), Server::Citus(_))
}

use std::os::unix::process::CommandExt;

async fn create_database(base: &str, maint: &str, sql: &str) {
    let mut conn = PgConnection::connect(&format!("{base}/{maint}"))
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
}

/// The migrated template database of this process.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("tg_tpl_{}", uuid::Uuid::new_v4().simple());
            let url = new_database(&name).await;
            let mut tpl = PgConnection::connect(&url).await.unwrap();
            tollgate::MIGRATOR.run(&mut tpl).await.unwrap();
            tpl.close().await.unwrap();
            if let Server::Citus(c) = server() {
                c.seal_template(&name).await;
            }
            name
        })
        .await
}

/// A fresh, migrated database for one test.
pub async fn fresh_database() -> String {
    let tpl = template().await;
    let name = format!("tg_test_{}", uuid::Uuid::new_v4().simple());
    match server() {
        Server::Single(base, maint) => {
            create_database(
                base,
                maint,
                &format!("CREATE DATABASE {name} TEMPLATE {tpl}"),
            )
            .await;
            format!("{base}/{name}")
        }
        Server::Citus(c) => {
            c.clone_database(tpl, &name).await;
            c.url(&name)
        }
    }
}

/// A fresh database with nothing in it (not migrated; on Citus, prepared as an operator
/// prepares one: the extension on every node, the workers registered).
pub async fn empty_database() -> String {
    new_database(&format!("tg_empty_{}", uuid::Uuid::new_v4().simple())).await
}

/// A new empty database called `name` (see [`empty_database`]): its URL.
async fn new_database(name: &str) -> String {
    match server() {
        Server::Single(base, maint) => {
            create_database(base, maint, &format!("CREATE DATABASE {name}")).await;
            format!("{base}/{name}")
        }
        Server::Citus(c) => {
            c.create_database(name).await;
            c.url(name)
        }
    }
}

pub struct TestApp {
    pub state: AppState,
    pub base: String,
    pub db: PgPool,
    pub db_url: String,
    pub client: reqwest::Client,
}

pub struct Tenant {
    pub id: String,
    pub key: String,
}

impl Tenant {
    /// The id, typed, for the test support API.
    pub fn tid(&self) -> tollgate::ids::TenantId {
        self.id.parse().unwrap()
    }
}

pub async fn spawn_app() -> TestApp {
    let db_url = fresh_database().await;
    spawn_app_on(&db_url).await
}

/// Another app process on the same database (for multi-process tests).
pub async fn spawn_app_on(db_url: &str) -> TestApp {
    spawn_app_with(db_url, None).await
}

/// An app on `db_url` with `usage_workers` usage statements in flight at most.
pub async fn spawn_app_with(db_url: &str, usage_workers: Option<usize>) -> TestApp {
    spawn_app_keyed(db_url, usage_workers, test_secrets()).await
}

/// An app on `db_url` holding `secrets` (as `tollgate serve` would with its
/// `TOLLGATE_SECRETS_KEY`, or with none).
pub async fn spawn_app_keyed(
    db_url: &str,
    usage_workers: Option<usize>,
    secrets: Secrets,
) -> TestApp {
    // The app's warnings and errors (a 500's cause among them) go to the test's captured
    // output, shown when it fails (`RUST_LOG` for more).
    static LOGS: OnceLock<()> = OnceLock::new();
    LOGS.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
    // As `tollgate serve` connects (on Citus, its connections' options differ).
    let db = tollgate::connect(db_url, 20).await.unwrap();
    let state = AppState::build(
        db.clone(),
        (Some(Secret::from(ADMIN_TOKEN)), secrets),
        std::time::Duration::from_secs(30),
        None,
        usage_workers,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tollgate::serve(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    TestApp {
        state,
        base: format!("http://{addr}"),
        db,
        db_url: db_url.to_string(),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    /// The error code of an error response.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn error_type(&self) -> &str {
        self.body["error"]["type"].as_str().unwrap_or("")
    }
}

impl TestApp {
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.request(Method::GET, path, Some(key), None, &[]).await
    }
    pub async fn post(&self, path: &str, key: &str, body: Value) -> Resp {
        self.request(Method::POST, path, Some(key), Some(body), &[])
            .await
    }
    pub async fn put(&self, path: &str, key: &str, body: Value) -> Resp {
        self.request(Method::PUT, path, Some(key), Some(body), &[])
            .await
    }
    pub async fn patch(&self, path: &str, key: &str, body: Value) -> Resp {
        self.request(Method::PATCH, path, Some(key), Some(body), &[])
            .await
    }
    pub async fn delete(&self, path: &str, key: &str) -> Resp {
        self.request(Method::DELETE, path, Some(key), None, &[])
            .await
    }

    pub async fn tenant(&self, mode: &str) -> Tenant {
        let r = self
            .request(
                Method::POST,
                "/admin/v1/tenants",
                Some(ADMIN_TOKEN),
                Some(json!({"name": "Test tenant", "mode": mode})),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        Tenant {
            id: r.body["id"].as_str().unwrap().to_string(),
            key: r.body["api_key"].as_str().unwrap().to_string(),
        }
    }

    /// A tenant with one metered feature `f` and a default plan `p` granting it.
    pub async fn tenant_with_plan(&self, entitlement: Value) -> Tenant {
        let t = self.tenant("test").await;
        let f = self
            .post(
                "/v1/features",
                &t.key,
                json!({"key": "f", "name": "F", "type": "metered"}),
            )
            .await;
        assert_eq!(f.status, StatusCode::CREATED, "{:?}", f.body);
        let mut ent = entitlement;
        ent["feature"] = json!("f");
        let p = self
            .post(
                "/v1/plans",
                &t.key,
                json!({"key": "p", "name": "P", "default": true, "entitlements": [ent]}),
            )
            .await;
        assert_eq!(p.status, StatusCode::CREATED, "{:?}", p.body);
        t
    }

    /// A new API key of tenant `tenant_id`, minted by the admin API: (the key, its id).
    pub async fn mint_key(&self, tenant_id: &str) -> (String, String) {
        let minted = self
            .request(
                Method::POST,
                &format!("/admin/v1/tenants/{tenant_id}/api_keys"),
                Some(ADMIN_TOKEN),
                None,
                &[],
            )
            .await;
        (
            minted.body["api_key"].as_str().unwrap().to_string(),
            minted.body["id"].as_str().unwrap().to_string(),
        )
    }

    pub async fn customer(&self, t: &Tenant, id: &str) {
        let r = self
            .put(&format!("/v1/customers/{id}"), &t.key, json!({}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }

    /// Applies a TOML plan file to a tenant, as `tollgate plans apply` does.
    pub async fn apply_toml(
        &self,
        t: &Tenant,
        path: &str,
    ) -> tollgate::catalog::toml::ApplySummary {
        let text = std::fs::read_to_string(path).unwrap();
        let file = tollgate::catalog::toml::parse(&text).unwrap();
        tollgate::catalog::toml::apply(&self.db, &tollgate::audit::Origin::cli(), &t.tid(), file)
            .await
            .unwrap()
    }

    /// Advances a test tenant's clock to `to` (running what falls due); the answer.
    pub async fn advance_clock(&self, t: &Tenant, to: &str) -> Value {
        let r = self
            .post("/v1/test_clock/advance", &t.key, json!({"to": to}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body
    }

    /// A customer's invoices, oldest first.
    pub async fn invoices(&self, t: &Tenant, customer: &str) -> Vec<Value> {
        let r = self
            .get(
                &format!("/v1/customers/{customer}/invoices?limit=100"),
                &t.key,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let mut v = r.body["data"].as_array().unwrap().clone();
        v.reverse();
        v
    }

    /// Freezes a test tenant's clock at `at`, which may lie in the past (the API only moves a
    /// clock forward, so tests that start at a fixed date set it through the test support).
    pub async fn set_clock(&self, t: &Tenant, at: &str) {
        let at = chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&chrono::Utc);
        tollgate::testing::set_test_clock(&self.db, &t.tid(), at)
            .await
            .unwrap();
    }
}

/// A JSON number as an exact decimal string, for comparing quantities.
pub fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => panic!("not a number: {other:?}"),
    }
}

/// Reads a spawned `tollgate serve`'s stdout up to its "Tollgate listening on" line and
/// returns the lines read (the last one that line); panics if the process ends first.
pub fn until_listening(child: &mut std::process::Child) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let done = line.starts_with("Tollgate listening on");
        lines.push(line);
        if done {
            return lines;
        }
    }
    panic!("the server did not start: {lines:?}");
}
