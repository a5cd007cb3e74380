//! A real browser: Debian's headless Chromium driven over WebDriver
//! (chromedriver from the `chromium-driver` package). It signs in through the
//! token link, watches `/events` receive an event live over SSE, and requests
//! a checkpoint with the button on `/audit` (a real form POST, with the
//! browser's own Origin header and the page's CSRF token).
//!
//! Missing chromium or chromedriver fails the test, naming the packages and
//! `scripts/ensure-deps.sh browser`: never a silent skip.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use crate::common::{Env, TOKEN};

const MISSING: &str = "the browser test needs Debian's chromium and chromedriver: run `scripts/ensure-deps.sh browser` (apt-get install chromium chromium-driver)";

/// How long anything the browser should show may take.
const WAIT: Duration = Duration::from_secs(20);

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path).chain([
            PathBuf::from("/usr/bin"),
            PathBuf::from("/usr/lib/chromium"),
        ]) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A chromedriver process on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let bin =
            find(&["chromedriver"]).unwrap_or_else(|| panic!("chromedriver not found. {MISSING}"));
        let port = amai_testkit::free_port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver: {e}. {MISSING}"));
        Driver { child, port }
    }

    async fn ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not listen on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let chromium = find(&["chromium", "chromium-browser"])
        .unwrap_or_else(|| panic!("chromium not found. {MISSING}"));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_string(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-proxy-server",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    // chromedriver speaks plain HTTP on loopback: no TLS connector.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap_or_else(|e| {
            panic!("cannot open a chromium session through chromedriver: {e}. {MISSING}")
        })
}

/// Polls `check` until it returns `Some` (bounded by [`WAIT`]).
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the browser never showed {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_browser_signs_in_sees_events_live_and_requests_a_checkpoint() {
    let driver = Driver::start();
    let env = Env::start().await;
    driver.ready().await;
    let profile = tempfile::tempdir().expect("profile dir");
    let b = browser(&driver, profile.path()).await;

    // Sign in through the token link: the browser lands on the overview.
    b.goto(&env.url(&format!("/login?token={TOKEN}")))
        .await
        .expect("goto login");
    assert_eq!(b.current_url().await.expect("url").path(), "/");
    let h1 = b.find(Locator::Css("main h1")).await.expect("h1");
    assert_eq!(h1.text().await.expect("text"), "Overview");

    // The live view of AMAI_AGENTS, subscribed from "new".
    b.goto(&env.url("/events?stream=AMAI_AGENTS"))
        .await
        .expect("goto events");
    eventually("the live view connected", || async {
        let table = b.find(Locator::Css("#live-events")).await.ok()?;
        (table.attr("data-state").await.ok()?? == "live").then_some(())
    })
    .await;

    // An agent acts (through the SDK); the browser shows it without a reload.
    let agent = env.agent("browser-agent", BTreeMap::new()).await;
    agent
        .append_action("note.written", "{\"text\":\"hello <b>browser</b>\"}")
        .await
        .expect("action");
    let row_text = eventually("the agent's action in the live table", || async {
        for row in b
            .find_all(Locator::Css("#live-events tbody tr"))
            .await
            .ok()?
        {
            let text = row.text().await.ok()?;
            if text.contains("note.written") {
                let class = row.attr("class").await.ok()??;
                return Some((text, class));
            }
        }
        None
    })
    .await;
    assert!(row_text.0.contains(agent.id()), "{}", row_text.0);
    assert!(
        row_text.0.contains("hello <b>browser</b>"),
        "shown as text: {}",
        row_text.0
    );
    assert_eq!(row_text.1, "verified");
    // The payload's markup stayed text: no <b> element was created.
    assert!(b.find(Locator::Css("#live-events tbody b")).await.is_err());

    // The audit page's button requests a checkpoint of AMAI_AGENTS.
    b.goto(&env.url("/audit")).await.expect("goto audit");
    let button = b
        .find(Locator::Css("tr[data-stream='AMAI_AGENTS'] button"))
        .await
        .expect("request checkpoint button");
    button.click().await.expect("click");
    let flash = eventually("the checkpoint result", || async {
        let p = b.find(Locator::Css("p.flash")).await.ok()?;
        p.text().await.ok()
    })
    .await;
    assert!(
        flash.contains("checkpoint of AMAI_AGENTS requested"),
        "{flash}"
    );
    let size = b
        .find(Locator::Css(
            "tr[data-stream='AMAI_AGENTS'] .checkpoint-size",
        ))
        .await
        .expect("size cell")
        .text()
        .await
        .expect("text");
    assert_ne!(size.trim(), "0", "the status shows the new checkpoint");
    assert!(env
        .audit_event_types()
        .await
        .iter()
        .any(|t| t == "audit.checkpointed"));

    b.close().await.expect("close browser");
    env.stop().await;
}
