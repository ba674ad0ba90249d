//! The pages in a real browser (Debian's chromium through chromedriver): click-to-seek, search
//! and follow, cross-site POST refused, the live view, and a screenshot of each page
//! (`target/web-screenshots/`, copied into docs/web/).

mod browser;
mod common;

use std::time::Duration;

use browser::Browser;
use common::*;

/// One browser at a time: the machine has two cores.
static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_page_click_on_a_line_seeks_the_audio() {
    let _one = ONE.lock().await;
    let (_t, data) = data_dir(0);
    let srv = Server::start(&data).await;
    let b = Browser::start().await;
    b.client.goto(&srv.url("/s/demo")).await.unwrap();
    b.wait_for(".wave[data-ready] canvas, .wave[data-ready] div")
        .await;
    b.until("return document.querySelectorAll('.wave[data-ready]').length === 2")
        .await;
    assert_eq!(
        b.js("return document.getElementById('player').currentTime")
            .await,
        serde_json::json!(0)
    );
    b.wait_for("#line3").await.click().await.unwrap();
    // Line 3 starts at 12.5 s; it may play on a little.
    b.until(
        "const t = document.getElementById('player').currentTime; return t >= 12.4 && t < 14.5",
    )
    .await;
    b.until("return document.getElementById('line3').classList.contains('current')")
        .await;
    // The audio itself is loaded (not only a start position remembered).
    b.until("const a = document.getElementById('player'); return a.readyState >= 1 && Math.abs(a.duration - 20) < 0.1")
        .await;
    b.screenshot("session").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_a_phrase_and_follow_the_link_to_the_moment() {
    let _one = ONE.lock().await;
    let (_t, data) = data_dir(5);
    let srv = Server::start(&data).await;
    let b = Browser::start().await;
    b.client.goto(&srv.url("/search")).await.unwrap();
    b.wait_for("#q")
        .await
        .send_keys("\"budget is ready\"")
        .await
        .unwrap();
    b.wait_for("form button").await.click().await.unwrap();
    let hit = b.wait_for("a.hit").await;
    let marks = b
        .js("return [...document.querySelectorAll('#hits mark')].map(m => m.textContent).join(' ')")
        .await;
    assert_eq!(marks, serde_json::json!("budget is ready"));
    b.screenshot("search").await;
    hit.click().await.unwrap();
    b.until("return location.pathname === '/s/demo' && location.hash === '#t=12.50'")
        .await;
    b.until(
        "const t = document.getElementById('player').currentTime; return t >= 12.4 && t < 14.5",
    )
    .await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_post_is_refused_and_the_same_site_form_works() {
    let _one = ONE.lock().await;
    let (_t, data) = data_dir(0);
    let srv = Server::start(&data).await;
    // Another origin (another port) with a form that posts to the server by itself.
    let target = srv.url("/forget");
    let evil = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move {
            axum::response::Html(format!(
                "<form id=f method=post action='{target}'><input name=user value=8><input name=confirm value=8></form><script>document.getElementById('f').submit()</script>"
            ))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, evil).await });
    let b = Browser::start().await;
    b.client
        .goto(&format!("http://{evil_addr}/"))
        .await
        .unwrap();
    b.until(&format!(
        "return location.href === '{}' && document.readyState === 'complete'",
        srv.url("/forget")
    ))
    .await;
    let body = b.js("return document.body.innerText").await;
    assert!(
        body.as_str()
            .unwrap_or("")
            .contains("Refused: a cross-site request"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        srv.forget.0.lock().unwrap().is_empty(),
        "the cross-site POST reached erasure"
    );
    assert!(!data.join(nina_web::audit::AUDIT_FILE).exists());
    // The page's own form, with its confirmation step.
    b.client.goto(&srv.url("/forget?user=8")).await.unwrap();
    b.wait_for("#confirm input[name=confirm]")
        .await
        .send_keys("8")
        .await
        .unwrap();
    b.screenshot("forget").await;
    b.wait_for("#confirm button").await.click().await.unwrap();
    let done = b.wait_for("#done").await.text().await.unwrap();
    assert!(done.contains("user 8 forgotten"), "{done}");
    assert_eq!(*srv.forget.0.lock().unwrap(), vec![(8, None)]);
    assert!(data.join(nina_web::audit::AUDIT_FILE).exists());
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_page_shows_who_speaks_and_finished_utterances() {
    let _one = ONE.lock().await;
    let (_t, data) = data_dir(0);
    let srv = Server::start(&data).await;
    let hub = srv.hub.clone();
    hub.set_health(nina_web::Health {
        connected: true,
        dave: "ok".into(),
        backlog: 0,
        detail: String::new(),
    });
    let b = Browser::start().await;
    b.client.goto(&srv.url("/live")).await.unwrap();
    b.wait_for("#health .health").await;
    hub.set_channels(vec![nina_web::Channel {
        guild_id: GUILD,
        guild_name: Some("Test guild".into()),
        channel_id: CHANNEL,
        channel_name: Some("General".into()),
        session_id: "live-demo".into(),
        members: vec![
            nina_web::Member {
                user_id: ANN,
                name: "Ann".into(),
            },
            nina_web::Member {
                user_id: BOB,
                name: "Bob".into(),
            },
        ],
    }]);
    b.wait_for(".member[data-user='8']").await;
    hub.speaking(BOB, 0.7);
    b.wait_for(".member.speaking[data-user='8']").await;
    hub.utterance(nina_web::Utterance {
        channel_id: CHANNEL,
        user_id: ANN,
        speaker: "Ann".into(),
        start: 3.0,
        end: 4.5,
        text: "can everyone hear me".into(),
    });
    let u = b.wait_for("#utterances .utt").await.text().await.unwrap();
    assert!(u.contains("can everyone hear me"), "{u}");
    b.screenshot("live").await;
    hub.speaking(BOB, 0.0);
    b.until("return document.querySelector('.member.speaking') === null")
        .await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_page_lists_and_filters() {
    let _one = ONE.lock().await;
    let (_t, data) = data_dir(12);
    let srv = Server::start(&data).await;
    let b = Browser::start().await;
    b.client.goto(&srv.url("/sessions")).await.unwrap();
    let n = b
        .js("return document.querySelectorAll('#sessions tbody tr').length")
        .await;
    assert_eq!(n, serde_json::json!(13));
    b.screenshot("sessions").await;
    // A filter on the user id, through htmx.
    b.wait_for("input[name=user]")
        .await
        .send_keys("9")
        .await
        .unwrap();
    b.wait_for("#filters button").await.click().await.unwrap();
    b.until("return document.querySelectorAll('#sessions tbody tr').length === 0 && location.search.includes('user=9')")
        .await;
    b.close().await;
}
