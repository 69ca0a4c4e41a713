//! The README's walkthrough runs as written, in order: its shell snippets (from "Walkthrough"
//! up to "Stripe, webhooks and alerts") are taken from the README itself and run with bash
//! against the real app. `curl` is wrapped with `--fail-with-body`, so any answer of 400 or more
//! stops the script and fails the test. Then the JavaScript of "From JavaScript" runs with Node
//! against the same tenant, importing `@tollgate/client` from `clients/typescript` as an
//! installed package.

use std::path::Path;

use crate::helpers::{spawn_app, ADMIN_TOKEN};

/// The code blocks of language `lang` between two headings of the README, joined in order.
fn snippets(readme: &str, from: &str, to: &str, lang: &str) -> String {
    let fence = format!("```{lang}");
    let start = readme.find(from).expect("the README has the walkthrough");
    let end = readme[start..].find(to).map_or(readme.len(), |i| start + i);
    let mut script = String::new();
    let mut inside = false;
    for line in readme[start..end].lines() {
        match (inside, line.trim_start()) {
            (false, l) if l == fence => inside = true,
            (true, "```") => inside = false,
            (true, _) => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    script
}

/// Runs `command` in `dir`: its standard output, once it has exited with success (else the
/// test fails with both outputs).
async fn succeeds(what: &str, mut command: tokio::process::Command, dir: &Path) -> String {
    let out = command.current_dir(dir).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_as_written() {
    for tool in ["bash", "curl", "jq", "date", "node"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "{tool} is needed (.ci/run installs it)"
        );
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let walkthrough = snippets(
        &readme,
        "## Walkthrough",
        "## Stripe, webhooks and alerts",
        "sh",
    );
    assert!(
        walkthrough.contains("/v1/test_clock/advance"),
        "{walkthrough}"
    );
    let script = format!(
        "set -euo pipefail\ncurl() {{ command curl --fail-with-body \"$@\"; }}\n{walkthrough}\n\
         printf %s \"$KEY\" > tenant_key\n"
    );

    let app = spawn_app().await;
    let dir =
        std::env::temp_dir().join(format!("tollgate-readme-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut bash = tokio::process::Command::new("bash");
    bash.arg("-c")
        .arg(&script)
        .env("B", &app.base)
        .env("ADMIN", ADMIN_TOKEN);
    let stdout = succeeds("the walkthrough", bash, &dir).await;

    // What the README says the snippets answer.
    for expected in [
        r#""allowed":true"#,
        r#""id":"msg_42""#,
        r#""duplicate":false,"used":1,"remaining":24,"limit":25,"warning_level":"safe""#,
        r#""pending_change":{"plan":"starter""#,
        r#""frozen":true"#,
        r#""scheduled_changes":1"#,
        r#""paid_out_of_band":true"#,
        r#""status":"void""#,
        r#""cancel_at_period_end":false"#,
        r#""member_id":"ann""#,
        r#""type":"manual""#,
        r#""credit_balance":"1.00""#,
    ] {
        assert!(stdout.contains(expected), "no {expected} in:\n{stdout}");
    }
    let pdf = std::fs::read(dir.join("inv.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF"), "inv.pdf is a PDF");

    // "From JavaScript": the module, with @tollgate/client installed as `npm install
    // path/to/clients/typescript` installs it (a link into node_modules).
    let js = snippets(
        &readme,
        "## From JavaScript",
        "## Stripe, webhooks and alerts",
        "js",
    );
    assert!(js.contains("@tollgate/client"), "{js}");
    let modules = dir.join("node_modules/@tollgate");
    std::fs::create_dir_all(&modules).unwrap();
    std::os::unix::fs::symlink(
        concat!(env!("CARGO_MANIFEST_DIR"), "/clients/typescript"),
        modules.join("client"),
    )
    .unwrap();
    std::fs::write(dir.join("readme.mjs"), &js).unwrap();
    let key = std::fs::read_to_string(dir.join("tenant_key")).unwrap();
    let mut node = tokio::process::Command::new("node");
    node.arg("readme.mjs")
        .env("TOLLGATE_URL", &app.base)
        .env("TOLLGATE_API_KEY", key.trim());
    let stdout = succeeds("the JavaScript", node, &dir).await;
    for expected in [
        "allowed with ",
        "suggestions: ",
        "refused: 404 feature_not_found",
    ] {
        assert!(stdout.contains(expected), "no {expected} in:\n{stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
