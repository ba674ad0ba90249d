//! The web page measured in Debian's chromium (through chromedriver), printed as a table:
//!
//! - `/sessions` with 1,000 sessions in the index: DOMContentLoaded (navigation timing);
//! - live event latency, hub push to the page's handler (`Date.now()` minus the server's stamp,
//!   same machine), p50/p95 with 1 and 10 pages open;
//! - server memory (RSS of this process, which holds the server) with 0 and 10 pages open;
//! - seek latency in a 1-hour Ogg Opus track (`currentTime` set to `seeked`).
//!
//! `cargo bench -p nina-web --bench web`

#[path = "../tests/browser/mod.rs"]
mod browser;
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use browser::Browser;
use serde_json::Value;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let made = Instant::now();
    let (_t, data) = common::data_dir(999);
    let made = made.elapsed();
    // A 1-hour Ogg Opus track for user 7 (20 ms Opus frames).
    let track = data.join("111/222/2025-11-25/demo/tracks/7.opus");
    let mut w = nina_store::OpusTrackWriter::create(&track, 7, 1, &[]).unwrap();
    w.pad_to(48_000 * 3600).unwrap();
    w.finish(48_000 * 3600).unwrap();
    let track_mb = std::fs::metadata(&track).unwrap().len() as f64 / 1e6;
    let srv = common::Server::start(&data).await;
    let b = Browser::start().await;
    let rss0 = rss_kib();

    // /sessions with 1,000 sessions.
    let mut dcl = Vec::new();
    for _ in 0..7 {
        b.client.goto(&srv.url("/sessions")).await.unwrap();
        let v = b
            .js("const n = performance.getEntriesByType('navigation')[0]; return n.domContentLoadedEventEnd - n.startTime")
            .await;
        dcl.push(v.as_f64().unwrap());
    }
    let rows = b
        .js("return document.querySelectorAll('#sessions tbody tr').length")
        .await;
    let total = b
        .js("return document.querySelector('main p:nth-of-type(1)').textContent")
        .await;
    let dcl_first = dcl[0];
    let dcl_med = pct(&mut dcl[1..].to_vec(), 0.5);
    let dcl_max = pct(&mut dcl[1..].to_vec(), 1.0);

    // Seeking in the 1-hour track.
    b.client.goto(&srv.url("/s/demo")).await.unwrap();
    let seeks = b
        .client
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            const a = document.getElementById('player');
            a.src = '/s/demo/audio/user/7';
            const once = (ev) => new Promise((r) => a.addEventListener(ev, r, { once: true }));
            (async () => {
              await once('loadedmetadata');
              const out = [];
              for (const t of [1800, 600, 3000, 120, 3500, 2400, 900, 3300, 60, 1500]) {
                const t0 = performance.now();
                a.currentTime = t;
                await once('seeked');
                out.push(performance.now() - t0);
              }
              done({ duration: a.duration, out });
            })();"#,
            vec![],
        )
        .await
        .unwrap();
    let duration = seeks["duration"].as_f64().unwrap_or(f64::NAN);
    let mut seek = nums(&seeks["out"]);

    // Live latency, 1 then 10 pages; memory with 10 open.
    let mut one = live_latency_keep(&b, &srv, 1).await;
    close_others(&b).await;
    let w10 = {
        // Open 10 pages and measure RSS while they are connected.
        let mut lat = live_latency_keep(&b, &srv, 10).await;
        let rss10 = rss_kib();
        (pct(&mut lat, 0.5), pct(&mut lat, 0.95), lat.len(), rss10)
    };
    println!("\n## nina-web benchmark (cargo bench -p nina-web --bench web)\n");
    println!(
        "data: 1,000 sessions made in {:.1} s; a 1-hour Ogg Opus track of {track_mb:.1} MB\n",
        made.as_secs_f64()
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| /sessions, 1,000 sessions ({rows} rows shown, {}): DOMContentLoaded | first load {dcl_first:.0} ms; then median {dcl_med:.0} ms, max {dcl_max:.0} ms (6 loads) |",
        total.as_str().unwrap_or("").trim()
    );
    println!(
        "| live event latency, 1 page | p50 {:.0} ms, p95 {:.0} ms ({} events) |",
        pct(&mut one, 0.5),
        pct(&mut one, 0.95),
        one.len()
    );
    println!(
        "| live event latency, 10 pages | p50 {:.0} ms, p95 {:.0} ms ({} events) |",
        w10.0, w10.1, w10.2
    );
    println!(
        "| server RSS (this process), 0 pages / 10 pages open | {:.1} MB / {:.1} MB |",
        rss0 as f64 / 1024.0,
        w10.3 as f64 / 1024.0
    );
    println!(
        "| seek in a 1-hour Ogg Opus track (duration {duration:.0} s), 10 seeks | median {:.0} ms, max {:.0} ms |",
        pct(&mut seek, 0.5),
        pct(&mut seek, 1.0)
    );
    b.close().await;
}

/// Opens `pages` live pages (tabs), pushes 60 utterances 50 ms apart and returns each page's
/// latencies; the pages stay open.
async fn live_latency_keep(b: &Browser, srv: &common::Server, pages: usize) -> Vec<f64> {
    // Browsers open at most 6 HTTP/1.1 connections per origin and each page holds one for its
    // stream: half the pages use 127.0.0.1, the other half localhost.
    let url = |i: usize| {
        let host = if i.is_multiple_of(2) {
            "127.0.0.1"
        } else {
            "localhost"
        };
        format!("http://{host}:{}/live", srv.addr.port())
    };
    let first = b.client.window().await.unwrap();
    let mut tabs = vec![first.clone()];
    b.client.goto(&url(0)).await.unwrap();
    for i in 1..pages {
        let w = b.client.new_window(true).await.unwrap();
        b.client.switch_to_window(w.handle.clone()).await.unwrap();
        b.client.goto(&url(i)).await.unwrap();
        tabs.push(w.handle);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while srv.hub.pages() < pages as u64 {
        assert!(Instant::now() < deadline, "pages did not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..60 {
        srv.hub.utterance(nina_web::Utterance {
            channel_id: 1,
            user_id: 7,
            speaker: "Ann".into(),
            start: f64::from(i),
            end: f64::from(i) + 1.0,
            text: format!("utterance number {i} of the latency run"),
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut all = Vec::new();
    for t in &tabs {
        b.client.switch_to_window(t.clone()).await.unwrap();
        all.extend(nums(&b.js("return window.ninaLatency.slice(-60)").await));
    }
    b.client.switch_to_window(first).await.unwrap();
    all
}

/// Closes every tab but the current one's first.
async fn close_others(b: &Browser) {
    let all = b.client.windows().await.unwrap();
    for w in all.iter().skip(1) {
        b.client.switch_to_window(w.clone()).await.unwrap();
        b.client.close_window().await.unwrap();
    }
    b.client.switch_to_window(all[0].clone()).await.unwrap();
    b.client.goto("about:blank").await.unwrap();
}
