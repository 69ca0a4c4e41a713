//! A real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them). Each test gets its own chromedriver and
//! browser profile, on loopback only.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// Where Debian puts them; `CHROMIUM` and `CHROMEDRIVER` override.
fn binary(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile_dir::TempDir,
}

/// chromedriver and the browser it started go with the test (a `Child` is not killed when
/// dropped: each test's driver outlived the test process, and its browser the profile): the
/// driver's whole process group gets SIGTERM, which lets Chromium tidy its temporary files.
impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            // SAFETY: a signal to the process group this Browser started.
            unsafe { kill_group(-pid, 15) };
        }
        let _ = self.driver.wait();
    }
}

extern "C" {
    #[link_name = "kill"]
    fn kill_group(pid: i32, sig: i32) -> i32;
}

/// A throwaway directory (the browser profile), removed on drop.
mod tempfile_dir {
    pub struct TempDir(pub std::path::PathBuf);

    impl TempDir {
        pub fn new() -> TempDir {
            let dir = std::env::temp_dir().join(format!("tg-chromium-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Browser {
    /// Starts chromedriver on a free port (reading its own "started" line rather than
    /// waiting) and a headless Chromium session.
    pub async fn start() -> Browser {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver_bin = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
        let mut driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            // Its own process group, so that dropping the Browser ends the browser too.
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{driver_bin} could not start ({e}): install chromium and chromium-driver")
            });
        let stdout = driver.stdout.take().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                if line
                    .map(|l| l.contains("started successfully"))
                    .unwrap_or(false)
                {
                    // Keep draining so chromedriver never blocks on a full pipe.
                    std::thread::spawn(move || for _ in lines {});
                    return true;
                }
            }
            false
        })
        .await
        .unwrap();
        assert!(ready, "chromedriver did not start");
        let profile = tempfile_dir::TempDir::new();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": binary("CHROMIUM", "/usr/bin/chromium"),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
                    format!("--user-data-dir={}", profile.0.display()),
                ],
            }),
        );
        // chromedriver is plain HTTP on loopback: no TLS in the way.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .attr(name)
            .await
            .unwrap()
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Clicks what navigates, and waits until the browser has loaded the next page and it is
    /// at `url`, so nothing is read from the page being left. The page in hand is marked
    /// first: a form that posts back to its own address (a refused sign-in) lands on the same
    /// URL, so the address alone would not say the next page is there.
    pub async fn click_to(&self, css: &str, url: &str) {
        self.client
            .execute("window.__tollgateLeaving = true;", vec![])
            .await
            .unwrap();
        self.click(css).await;
        let url = reqwest::Url::parse(url).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            // Null while the old page is still there or the new one is loading; a script may
            // also fail outright mid-navigation, which is the same answer.
            let at = self
                .client
                .execute(
                    "return (!window.__tollgateLeaving && document.readyState === 'complete') \
                     ? location.href : null;",
                    vec![],
                )
                .await
                .ok()
                .and_then(|v| v.as_str().and_then(|h| reqwest::Url::parse(h).ok()));
            if at.as_ref() == Some(&url) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never reached {url} (at {at:?})"
            );
        }
    }

    /// The text of the first element matching `css`, once there is one (by WebDriver's own
    /// polling: for what a page's script writes when its requests are answered).
    pub async fn text_when(&self, css: &str) -> String {
        self.client
            .wait()
            .at_most(std::time::Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// A computed style property of the first element matching `css`.
    pub async fn style(&self, css: &str, property: &str) -> String {
        let v = self
            .client
            .execute(
                "return getComputedStyle(document.querySelector(arguments[0]))\
                 .getPropertyValue(arguments[1]);",
                vec![json!(css), json!(property)],
            )
            .await
            .unwrap();
        v.as_str().unwrap_or_default().trim().to_string()
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// Takes a screenshot; writes it to `path` (the README's pictures in `docs/`) only when
    /// `TOLLGATE_SCREENSHOTS` is set, so an ordinary test run leaves the tree clean.
    pub async fn screenshot(&self, path: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if std::env::var_os("TOLLGATE_SCREENSHOTS").is_some() {
            std::fs::write(path, png).unwrap();
        }
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
