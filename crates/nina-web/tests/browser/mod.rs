//! Driving Debian's `chromium` through `chromedriver` (WebDriver, fantoccini): shared by the
//! browser tests and the benchmark. A missing browser is a failure naming the setup step,
//! never a skip.
#![allow(dead_code, missing_docs)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const SETUP: &str = "scripts/setup.sh (or: apt-get install -y chromium chromium-driver)";

/// A chromedriver process and one browser session; both end when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    pub async fn start() -> Self {
        for exe in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(exe).exists(),
                "{exe} is missing: the browser tests need Debian's chromium and chromium-driver; install them with {SETUP}"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER} ({e}); install with {SETUP}"));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--autoplay-policy=no-user-gesture-required", "--window-size=1280,860",
                         "--disable-gpu", "--mute-audio", "--disable-background-timer-throttling",
                         "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"]
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(15);
        let client = loop {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("chromedriver did not answer: {e}; install with {SETUP}"),
            }
        };
        Self { client, driver }
    }

    /// Runs `js` (a function body) and returns its value.
    pub async fn js(&self, js: &str) -> serde_json::Value {
        self.client.execute(js, vec![]).await.unwrap()
    }

    /// Waits until `js` returns true (10 s at most).
    pub async fn until(&self, js: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.js(js).await == json!(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {js}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for an element.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    /// Saves a screenshot as `target/web-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// `$CARGO_TARGET_DIR/web-screenshots`, else the workspace's `target/web-screenshots`.
pub fn screenshots_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("web-screenshots")
}
