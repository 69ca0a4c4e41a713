//! The `tollgate` binary itself: the embedded default, the missing-binaries message, and the
//! operator commands.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::helpers::{fresh_database, until_listening};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn missing_postgres_binaries_is_one_clear_line_and_a_failure() {
    let empty = tempdir("nopg");
    // `migrate` rather than `serve`, so a regression fails fast instead of serving forever.
    let out = Command::new(BIN)
        .arg("migrate")
        .env_remove("DATABASE_URL")
        .env("TOLLGATE_PG_BIN_DIR", empty.path())
        .env("TOLLGATE_DATA_DIR", empty.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("apt-get install -y postgresql"),
        "{stderr}"
    );
}

/// A directory of its own under the temporary folder, removed when dropped (passed or failed).
fn tempdir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tollgate-{tag}-"))
        .tempdir()
        .unwrap()
}

/// Starts `tollgate serve` on the embedded default and waits for its "listening" line.
fn start_embedded(data_dir: &std::path::Path, port: u16) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(BIN)
        .env_remove("DATABASE_URL")
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .env("TOLLGATE_DATA_DIR", data_dir)
        .env("TOLLGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("TOLLGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = until_listening(&mut child);
    (child, lines)
}

fn sigterm_and_wait(mut child: std::process::Child) -> std::process::ExitStatus {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc_kill(child.id() as i32, 15) };
    child.wait().unwrap()
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_starts_keeps_its_data_and_stops_cleanly() {
    let dir = tempdir("embedded");
    let data = dir.path();
    let port = free_port();
    let (child, lines) = start_embedded(data, port);
    let token_line = lines.iter().find(|l| l.starts_with("Admin token")).unwrap();
    let token = token_line.rsplit(' ').next().unwrap().to_string();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let t: serde_json::Value = client
        .post(format!("{base}/admin/v1/tenants"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "kept"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = t["api_key"].as_str().unwrap().to_string();
    // The embedded default made its secrets key once, kept beside the data, readable by its
    // owner only; a webhook endpoint's secret is stored sealed under it.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Secrets key: generated into")),
        "{lines:?}"
    );
    let key_file = data.join("secrets_key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let stored_key = std::fs::read_to_string(&key_file).unwrap();
    let endpoint = client
        .post(format!("{base}/v1/webhook_endpoints"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(endpoint.status(), 201);
    let status = sigterm_and_wait(child);
    assert!(status.success(), "{status:?}");
    assert!(
        !data.join("pg/postmaster.pid").exists(),
        "the database was stopped"
    );

    // Again: same data, the token is not printed a second time.
    let (child, lines) = start_embedded(data, port);
    assert!(
        !lines.iter().any(|l| l.contains(&token)),
        "the token is printed only once"
    );
    // The same key, which opens the stored secret (a start with one that did not would stop).
    assert!(
        !lines.iter().any(|l| l.starts_with("Secrets key")),
        "{lines:?}"
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), stored_key);
    let tenant = client
        .get(format!("{base}/v1/tenant"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(tenant.status(), 200, "data kept across restarts");
    assert!(sigterm_and_wait(child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_create_and_plans_apply_commands() {
    let url = fresh_database().await;
    let out = Command::new(BIN)
        .args(["tenant", "create", "--name", "Cli Co", "--mode", "live"])
        .env("DATABASE_URL", &url)
        .env("TOLLGATE_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(t["api_key"].as_str().unwrap().starts_with("tg_live_"));
    let id = t["id"].as_str().unwrap();
    let apply = || {
        Command::new(BIN)
            .args([
                "plans",
                "apply",
                "--tenant",
                id,
                "config/examples/001_interview_practice.toml",
            ])
            .env("DATABASE_URL", &url)
            .env("TOLLGATE_LOG", "warn")
            .output()
            .unwrap()
    };
    let first = apply();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = String::from_utf8_lossy(&first.stdout);
    assert!(text.contains("features created: 5"), "{text}");
    assert!(text.contains("plan starter: version 1 written"), "{text}");
    let second = apply();
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(text.contains("features created: 0"), "{text}");
    assert!(
        text.contains("plan premium: unchanged (version 1)"),
        "{text}"
    );
    // Both commands are the CLI's doing in the audit log; the unchanged second apply logs
    // nothing.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let query = tollgate::audit::Query {
        resource: None,
        actor: None,
        action: None,
        starting_after: None,
        limit: 100,
    };
    let log = tollgate::audit::list(&pool, &id.parse().unwrap(), &query)
        .await
        .unwrap();
    assert!(log.iter().all(|e| e.actor == "cli"), "{log:?}");
    let count = |action: &str| log.iter().filter(|e| e.action == action).count();
    assert_eq!(count("api_key.created"), 1);
    assert_eq!(count("feature.created"), 5);
    assert_eq!(count("plan.version_created"), 0);
    assert!(count("plan.created") >= 2);
    assert_eq!(
        log.len(),
        1 + 5 + count("plan.created") + count("tenant.updated")
    );
    let bad = Command::new(BIN)
        .args([
            "plans",
            "apply",
            "--tenant",
            "ten_nope",
            "config/examples/001_interview_practice.toml",
        ])
        .env("DATABASE_URL", &url)
        .env("TOLLGATE_LOG", "warn")
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_asks_readyz_and_fails_when_nothing_answers() {
    let app = crate::helpers::spawn_app().await;
    let ok = Command::new(BIN)
        .args(["healthcheck", "--url", &app.base])
        .env("TOLLGATE_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "ready");

    // Nothing listens on a port just freed: the check fails (a container is then unhealthy).
    let port = free_port();
    let down = Command::new(BIN)
        .args(["healthcheck", "--url", &format!("http://127.0.0.1:{port}")])
        .env("TOLLGATE_LOG", "warn")
        .output()
        .unwrap();
    assert!(!down.status.success());
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("/readyz"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_without_migrate_waits_for_the_schema_instead_of_applying_it() {
    let url = crate::helpers::empty_database().await;
    let mut child = Command::new(BIN)
        .args(["worker", "--no-migrate"])
        .env("DATABASE_URL", &url)
        .env("TOLLGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the worker's log on a thread; lines arrive on a channel.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no log line with {needle:?}: {e}"),
            }
        }
    };
    wait_for("waiting for the database migrations");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let migrated = tollgate::testing::stored::is_migrated(&pool).await.unwrap();
    assert!(!migrated, "the worker did not migrate the database itself");
    // Another process (here, the test) applies them: the worker goes to work.
    tollgate::MIGRATOR.run(&pool).await.unwrap();
    wait_for("worker started");
    assert!(sigterm_and_wait(child).success());
}
