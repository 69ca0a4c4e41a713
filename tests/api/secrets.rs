//! Secrets at rest (SPEC §3): the Stripe secret key, the Stripe webhook secret and the
//! endpoints' signing secrets are stored sealed under `TOLLGATE_SECRETS_KEY`, bound to their
//! row; a start checks them, seals those found in clear, and refuses a missing or wrong key;
//! `tollgate secrets rotate` re-seals them under a new key.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tollgate::config::{ExposeSecret, Secret};
use tollgate::secrets::{Secrets, SecretsKey};

use crate::fakes::{FakeStripe, Receiver};
use crate::helpers::{
    fresh_database, on_citus, spawn_app, spawn_app_keyed, test_secrets, until_listening, Tenant,
    TestApp,
};
use crate::stripe::{
    billing_tenant, connect, drain_stripe, drain_webhooks, hook_endpoint, only_invoice,
    post_stripe, sign, stripe_event, subscribe_pro, WHSEC,
};
use crate::webhooks::verify;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

fn new_key() -> Secret {
    SecretsKey::generate()
}

fn keyed(key: &Secret) -> Secrets {
    Secrets::new(SecretsKey::parse(key).unwrap())
}

fn random(n: usize) -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// Every row of every table as text, as a backup holds it: `pg_dump --data-only` on one
/// server; on Citus, whose coordinator's dump holds no shard, each table read whole.
async fn dump(app: &TestApp) -> String {
    if !on_citus() {
        let bin = tollgate::embedded_pg::find_bin_dir()
            .expect("PostgreSQL binaries")
            .join("pg_dump");
        let out = Command::new(bin)
            .args(["--data-only", "--no-owner", "--dbname", &app.db_url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return String::from_utf8(out.stdout).unwrap();
    }
    let mut conn = PgConnection::connect(&app.db_url).await.unwrap();
    sqlx::query("SET citus.multi_task_query_log_level TO 'off'")
        .execute(&mut conn)
        .await
        .unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let mut text = String::new();
    for t in tables {
        let rows: String = sqlx::query_scalar(&format!(
            "SELECT coalesce(string_agg(x::text, E'\\n'), '') FROM {t} x"
        ))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        text.push_str(&rows);
        text.push('\n');
    }
    text
}

/// Runs the binary to its exit (at most a minute: a process that should have refused to
/// start and serves instead fails the test rather than hanging it).
fn run_to_exit(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("{cmd:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `tollgate worker` on `db_url` with `key` (none: unset), expected to refuse to start: its
/// one line on stderr.
fn refused_start(db_url: &str, key: Option<&str>) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["worker", "--no-migrate"])
        .env("DATABASE_URL", db_url)
        .env("TOLLGATE_LOG", "error")
        .env_remove("TOLLGATE_SECRETS_KEY");
    if let Some(k) = key {
        cmd.env("TOLLGATE_SECRETS_KEY", k);
    }
    let out = run_to_exit(&mut cmd);
    assert!(!out.status.success(), "the worker started");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0].to_string()
}

/// `tollgate serve --no-worker` on `db_url` with `key` (none: unset) starts and listens;
/// stopped again.
fn starts(db_url: &str, key: Option<&str>) {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--no-worker"])
        .env("DATABASE_URL", db_url)
        .env("TOLLGATE_LISTEN", "127.0.0.1:0")
        .env("TOLLGATE_LOG", "warn")
        .env_remove("TOLLGATE_SECRETS_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(k) = key {
        cmd.env("TOLLGATE_SECRETS_KEY", k);
    }
    let mut child = cmd.spawn().unwrap();
    until_listening(&mut child);
    child.kill().ok();
    child.wait().ok();
}

/// The tenant's three stored secrets, as stored.
async fn stored(app: &TestApp, t: &Tenant) -> Vec<String> {
    let mut conn = PgConnection::connect(&app.db_url).await.unwrap();
    let (sk, whs): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT stripe_secret_key, stripe_webhook_secret FROM tenants WHERE tenant_id = $1",
    )
    .bind(&t.id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let endpoints: Vec<String> =
        sqlx::query_scalar("SELECT secret FROM webhook_endpoints WHERE tenant_id = $1")
            .bind(&t.id)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    sk.into_iter().chain(whs).chain(endpoints).collect()
}

/// An event Tollgate receives and does not act on, signed with `secret` now.
async fn harmless_event(app: &TestApp, t: &Tenant, secret: &str) -> crate::helpers::Resp {
    let now = chrono::Utc::now().timestamp();
    let payload = stripe_event(
        &format!("evt_{}", random(12)),
        "charge.succeeded",
        now,
        json!({"id": "ch_1", "object": "charge"}),
    );
    post_stripe(app, t, &payload, Some(&sign(&payload, secret, now))).await
}

#[tokio::test]
async fn a_dump_of_the_database_holds_no_secret_in_clear() {
    let app = spawn_app().await;
    let t = app.tenant("test").await;
    let secret_key = format!("sk_test_{}", random(32));
    let webhook_secret = format!("whsec_{}", random(32));
    let r = app
        .patch(
            "/v1/tenant",
            &t.key,
            json!({"stripe": {"secret_key": secret_key, "webhook_secret": webhook_secret,
                              "api_base": "http://127.0.0.1:9"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["stripe"]["secret_key_set"], true);
    assert!(!r.body.to_string().contains(&secret_key));
    // Created with Idempotency-Keys: the answers the cache keeps for a replay hold the
    // endpoint's secret, a session token and an API key.
    let idem = |k: &'static str| [("Idempotency-Key", k)];
    let e = app
        .request(
            Method::POST,
            "/v1/webhook_endpoints",
            Some(&t.key),
            Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]})),
            &idem("endpoint-1"),
        )
        .await;
    assert_eq!(e.status, StatusCode::CREATED, "{:?}", e.body);
    let endpoint_secret = e.body["secret"].as_str().unwrap().to_string();
    let endpoint_key = endpoint_secret.strip_prefix("whsec_").unwrap().to_string();
    app.customer(&t, "c1").await;
    let session = app
        .request(
            Method::POST,
            "/v1/customer_sessions",
            Some(&t.key),
            Some(json!({"customer": "c1"})),
            &idem("session-1"),
        )
        .await;
    assert_eq!(session.status, StatusCode::CREATED, "{:?}", session.body);
    let token = session.body["token"].as_str().unwrap().to_string();
    let minted = app
        .request(
            Method::POST,
            &format!("/admin/v1/tenants/{}/api_keys", t.id),
            Some(crate::helpers::ADMIN_TOKEN),
            None,
            &idem("key-1"),
        )
        .await;
    assert_eq!(minted.status, StatusCode::CREATED, "{:?}", minted.body);
    let api_key = minted.body["api_key"].as_str().unwrap().to_string();

    let dump = dump(&app).await;
    for (what, clear) in [
        ("the Stripe secret key", &secret_key),
        ("the Stripe webhook secret", &webhook_secret),
        ("the endpoint's signing secret", &endpoint_secret),
        ("the endpoint's signing key", &endpoint_key),
        ("a customer session's token", &token),
        ("an API key", &api_key),
    ] {
        assert!(!dump.contains(clear.as_str()), "{what} is in the dump");
    }
    // The dump does hold the three, sealed (so the test reads the rows it means to), and the
    // three kept answers (bytea, so pg_dump shows them in hex).
    let key_id = test_secrets().key_id().unwrap().to_string();
    let sealed = dump.matches(&format!("tgenc:v1:{key_id}:")).count();
    assert!(sealed >= 3, "{sealed} sealed values in the dump");
    assert_eq!(stored(&app, &t).await.len(), 3);
    let mut conn = PgConnection::connect(&app.db_url).await.unwrap();
    sqlx::query("SET citus.multi_task_query_log_level TO 'off'")
        .execute(&mut conn)
        .await
        .unwrap();
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM idempotency_keys WHERE position('tgenc:'::bytea IN response_body) = 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(kept, 3, "three answers kept sealed");

    // A replay opens them: the same answers again.
    for (path, key, body, idem_key, first) in [
        (
            "/v1/webhook_endpoints".to_string(),
            t.key.as_str(),
            Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]})),
            "endpoint-1",
            &e.body,
        ),
        (
            "/v1/customer_sessions".to_string(),
            t.key.as_str(),
            Some(json!({"customer": "c1"})),
            "session-1",
            &session.body,
        ),
        (
            format!("/admin/v1/tenants/{}/api_keys", t.id),
            crate::helpers::ADMIN_TOKEN,
            None,
            "key-1",
            &minted.body,
        ),
    ] {
        let again = app
            .request(Method::POST, &path, Some(key), body, &idem(idem_key))
            .await;
        assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
        assert_eq!(&again.body, first);
        assert_eq!(again.headers["idempotent-replayed"], "true");
    }

    // The settings answer says only whether they are set.
    let got = app.get("/v1/tenant", &t.key).await;
    assert_eq!(got.body["stripe"]["webhook_secret_set"], true);
    assert!(!got.body.to_string().contains("whsec_"));
}

#[tokio::test]
async fn a_sealed_secret_moved_to_another_row_does_not_open() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (a, b) = (app.tenant("test").await, app.tenant("test").await);
    for (t, whsec) in [(&a, "whsec_tenant_a"), (&b, "whsec_tenant_b")] {
        let r = app
            .patch(
                "/v1/tenant",
                &t.key,
                json!({"stripe": {"webhook_secret": whsec}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let ea = hook_endpoint(&app, &a, &receiver, json!(["customer.created"])).await;
    let eb = hook_endpoint(&app, &b, &receiver, json!(["customer.created"])).await;
    let r = harmless_event(&app, &b, "whsec_tenant_b").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // Tenant a's sealed values copied into tenant b's rows, as someone with write access to
    // the database (or a bad restore) might.
    let mut conn = PgConnection::connect(&app.db_url).await.unwrap();
    let (whs_a,): (String,) =
        sqlx::query_as("SELECT stripe_webhook_secret FROM tenants WHERE tenant_id = $1")
            .bind(&a.id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let (hook_a,): (String,) = sqlx::query_as(
        "SELECT secret FROM webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2",
    )
    .bind(&a.id)
    .bind(ea["id"].as_str().unwrap())
    .fetch_one(&mut conn)
    .await
    .unwrap();
    sqlx::query("UPDATE tenants SET stripe_webhook_secret = $2 WHERE tenant_id = $1")
        .bind(&b.id)
        .bind(&whs_a)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE webhook_endpoints SET secret = $3 WHERE tenant_id = $1 AND endpoint_id = $2",
    )
    .bind(&b.id)
    .bind(eb["id"].as_str().unwrap())
    .bind(&hook_a)
    .execute(&mut conn)
    .await
    .unwrap();

    // Neither a's secret nor b's verifies b's Stripe webhooks now: the value does not open.
    for whsec in ["whsec_tenant_a", "whsec_tenant_b"] {
        let r = harmless_event(&app, &b, whsec).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        assert_eq!(r.code(), "secrets_unreadable");
    }
    // a's own still work.
    let r = harmless_event(&app, &a, "whsec_tenant_a").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // b's deliveries are not signed with a's secret: they fail and wait.
    app.customer(&b, "c1").await;
    let http = reqwest::Client::new();
    let cfg = tollgate::testing::fast_webhook_delivery();
    tollgate::testing::deliver_webhooks(&app.state, &http, &cfg, 32)
        .await
        .unwrap();
    assert!(receiver.got().is_empty(), "nothing was delivered");
    let log = app
        .get(
            &format!(
                "/v1/webhook_endpoints/{}/deliveries",
                eb["id"].as_str().unwrap()
            ),
            &b.key,
        )
        .await;
    let d = &log.body["data"][0];
    assert_eq!(d["status"], "pending", "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot be opened"),
        "{d}"
    );

    // And a start with this key refuses the database: two of its secrets do not open.
    let refused = tollgate::secrets::store::prepare(&app.db, &test_secrets())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("does not open 2 of the 4 stored secrets"),
        "{refused}"
    );
}

#[tokio::test]
async fn rotation_re_seals_everything_and_stripe_and_webhooks_work_under_the_new_key() {
    let db_url = fresh_database().await;
    let (k1, k2) = (new_key(), new_key());
    let old = spawn_app_keyed(&db_url, None, keyed(&k1)).await;
    let fake = FakeStripe::start().await;
    let receiver = Receiver::start().await;
    let t = billing_tenant(&old, "2026-03-01T00:00:00Z").await;
    connect(&old, &t, Some(&fake)).await;
    let e = hook_endpoint(&old, &t, &receiver, json!(["customer.created"])).await;
    let endpoint_secret = e["secret"].as_str().unwrap().to_string();
    let before = stored(&old, &t).await;
    assert_eq!(before.len(), 3);
    // An answer kept sealed for a replay (it holds a session token) is re-sealed too.
    old.customer(&t, "kept").await;
    let idem = [("Idempotency-Key", "session-kept")];
    let session = old
        .request(
            Method::POST,
            "/v1/customer_sessions",
            Some(&t.key),
            Some(json!({"customer": "kept"})),
            &idem,
        )
        .await;
    assert_eq!(session.status, StatusCode::CREATED, "{:?}", session.body);

    let out = run_to_exit(
        Command::new(BIN)
            .args(["secrets", "rotate", "--new-key", k2.expose_secret()])
            .env("DATABASE_URL", &db_url)
            .env("TOLLGATE_SECRETS_KEY", k1.expose_secret())
            .env("TOLLGATE_LOG", "error"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let k2_id = keyed(&k2).key_id().unwrap().to_string();
    assert!(
        stdout.contains(&format!("4 secrets re-sealed under key {k2_id}")),
        "{stdout}"
    );
    let after = stored(&old, &t).await;
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(b, a);
        assert!(a.starts_with(&format!("tgenc:v1:{k2_id}:")), "{a}");
    }

    // The old key opens nothing now: a start with it is refused; one with the new key serves.
    let line = refused_start(&db_url, Some(k1.expose_secret()));
    assert!(
        line.contains("does not open 4 of the 4 stored secrets"),
        "{line}"
    );
    starts(&db_url, Some(k2.expose_secret()));
    // A process still running with the old key cannot verify Stripe's webhooks: 503, which
    // Stripe retries, until it is restarted.
    let r = harmless_event(&old, &t, WHSEC).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);

    // Under the new key, end to end: the kept answer, the Stripe sync, Stripe's webhooks,
    // signed deliveries.
    let new = spawn_app_keyed(&db_url, None, keyed(&k2)).await;
    let again = new
        .request(
            Method::POST,
            "/v1/customer_sessions",
            Some(&t.key),
            Some(json!({"customer": "kept"})),
            &idem,
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert_eq!(again.body["token"], session.body["token"]);
    subscribe_pro(&new, &t, "acme").await;
    drain_stripe(&new, 1).await;
    {
        let st = fake.lock();
        assert!(!st.seen.is_empty(), "the outbox was sent");
        for seen in &st.seen {
            assert_eq!(
                seen.authorization.as_deref(),
                Some("Bearer sk_test_fake"),
                "{}",
                seen.path
            );
        }
        assert_eq!(st.customers.len(), 2, "acme and kept");
    }
    // The start invoice was collected through the fake Stripe with the opened key.
    assert_eq!(only_invoice(&new, &t, "acme").await["status"], "paid");
    let r = harmless_event(&new, &t, WHSEC).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = harmless_event(&new, &t, "whsec_not_it").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    drain_webhooks(&new).await;
    let got = receiver.got();
    let created: Vec<_> = got
        .iter()
        .filter(|d| d.json()["type"] == "customer.created")
        .collect();
    assert_eq!(created.len(), 2, "kept and acme");
    for d in created {
        assert!(
            verify(&endpoint_secret, d),
            "signed with the endpoint's secret"
        );
    }
}

#[tokio::test]
async fn a_missing_or_wrong_key_stops_a_start_and_without_one_nothing_is_stored() {
    // No secret stored yet: a process without a key serves, and storing one is refused with
    // nothing written.
    let db_url = fresh_database().await;
    starts(&db_url, None);
    let keyless = spawn_app_keyed(&db_url, None, Secrets::none()).await;
    let t = keyless.tenant("test").await;
    let r = keyless
        .patch(
            "/v1/tenant",
            &t.key,
            json!({"default_plan": null,
                   "stripe": {"secret_key": "sk_test_x", "api_base": "http://127.0.0.1:9"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "secrets_key_missing");
    assert_eq!(r.error_type(), "conflict");
    let r = keyless
        .patch(
            "/v1/tenant",
            &t.key,
            json!({"stripe": {"webhook_secret": "whsec_x"}}),
        )
        .await;
    assert_eq!(r.code(), "secrets_key_missing");
    let r = keyless
        .post(
            "/v1/webhook_endpoints",
            &t.key,
            json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.code(), "secrets_key_missing");
    let tenant = keyless.get("/v1/tenant", &t.key).await;
    assert_eq!(
        tenant.body["stripe"],
        json!({"secret_key_set": false, "webhook_secret_set": false, "api_base": null})
    );
    let endpoints = keyless.get("/v1/webhook_endpoints", &t.key).await;
    assert_eq!(endpoints.body["data"], json!([]));
    assert!(stored(&keyless, &t).await.is_empty());
    let audit = keyless.get("/v1/audit_log?limit=100", &t.key).await;
    let actions: Vec<&str> = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        !actions
            .iter()
            .any(|a| a.starts_with("tenant.updated") || a.starts_with("webhook_endpoint")),
        "{actions:?}"
    );
    // An answer that holds a secret (here a new API key) is kept for a replay only sealed:
    // without a key the replay is refused, and the work is not done twice.
    let idem = [("Idempotency-Key", "tenant-1")];
    let body = json!({"name": "Keyless"});
    let first = keyless
        .request(
            Method::POST,
            "/admin/v1/tenants",
            Some(crate::helpers::ADMIN_TOKEN),
            Some(body.clone()),
            &idem,
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let again = keyless
        .request(
            Method::POST,
            "/admin/v1/tenants",
            Some(crate::helpers::ADMIN_TOKEN),
            Some(body),
            &idem,
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    assert_eq!(again.code(), "idempotent_replay_unavailable");
    let first_key = first.body["api_key"].as_str().unwrap();
    assert!(!dump(&keyless).await.contains(first_key));
    // Settings without a secret are stored as ever.
    let r = keyless
        .patch(
            "/v1/tenant",
            &t.key,
            json!({"stripe": {"api_base": "http://127.0.0.1:9"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // A secret stored (by a process with a key): now a start needs that key.
    let key = new_key();
    let app = spawn_app_keyed(&db_url, None, keyed(&key)).await;
    let r = app
        .patch(
            "/v1/tenant",
            &t.key,
            json!({"stripe": {"webhook_secret": "whsec_x"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let line = refused_start(&db_url, None);
    assert!(line.contains("holds 1 stored secrets"), "{line}");
    assert!(line.contains("TOLLGATE_SECRETS_KEY is not set"), "{line}");
    let line = refused_start(&db_url, Some(new_key().expose_secret()));
    assert!(
        line.contains("does not open 1 of the 1 stored secrets"),
        "{line}"
    );
    let line = refused_start(&db_url, Some("bm90IDMyIGJ5dGVz"));
    assert!(line.contains("TOLLGATE_SECRETS_KEY"), "{line}");
    assert!(line.contains("32 bytes in base64"), "{line}");
    starts(&db_url, Some(key.expose_secret()));
}

#[tokio::test]
async fn secrets_stored_in_clear_are_sealed_on_the_first_start_with_a_key() {
    // A database as today's schema left it: the three secrets stored as they were given.
    let db_url = fresh_database().await;
    let setup = spawn_app_keyed(&db_url, None, Secrets::none()).await;
    let fake = FakeStripe::start().await;
    let receiver = Receiver::start().await;
    let t = billing_tenant(&setup, "2026-03-01T00:00:00Z").await;
    let endpoint_secret = tollgate::webhooks::new_secret();
    let mut conn = PgConnection::connect(&db_url).await.unwrap();
    sqlx::query(
        "UPDATE tenants SET stripe_secret_key = 'sk_test_clear', stripe_webhook_secret = $2,
                            stripe_api_base = $3
         WHERE tenant_id = $1",
    )
    .bind(&t.id)
    .bind(WHSEC)
    .bind(&fake.base)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO webhook_endpoints (tenant_id, endpoint_id, url, events, secret)
         VALUES ($1, 'we_0190c7a0e2f97b5a9c3e0d1f2a3b4c5d', $2, '{customer.created}', $3)",
    )
    .bind(&t.id)
    .bind(&receiver.url)
    .bind(&endpoint_secret)
    .execute(&mut conn)
    .await
    .unwrap();

    let line = refused_start(&db_url, None);
    assert!(line.contains("3 secrets stored in clear"), "{line}");
    let key = new_key();
    starts(&db_url, Some(key.expose_secret()));
    let key_id = keyed(&key).key_id().unwrap().to_string();
    let now_stored = stored(&setup, &t).await;
    assert_eq!(now_stored.len(), 3);
    for value in &now_stored {
        assert!(value.starts_with(&format!("tgenc:v1:{key_id}:")), "{value}");
    }

    // They work as before, under the key.
    let app = spawn_app_keyed(&db_url, None, keyed(&key)).await;
    let r = harmless_event(&app, &t, WHSEC).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    app.customer(&t, "c1").await;
    drain_webhooks(&app).await;
    let got = receiver.got();
    assert_eq!(got.len(), 1);
    assert!(verify(&endpoint_secret, &got[0]));
    subscribe_pro(&app, &t, "acme").await;
    drain_stripe(&app, 1).await;
    let st = fake.lock();
    assert!(!st.seen.is_empty());
    assert!(st
        .seen
        .iter()
        .all(|s| s.authorization.as_deref() == Some("Bearer sk_test_clear")));
}
