//! The server over HTTP, without a browser: pages, files with ranges, downloads, search, the
//! erasure form, cross-site refusal, access control and hostile paths, the live stream.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use common::*;

fn router(
    data: &std::path::Path,
    token: Option<&str>,
) -> (axum::Router, std::sync::Arc<FakeForget>) {
    let forget = std::sync::Arc::new(FakeForget::default());
    let mut cfg = nina_web::WebConfig::loopback(data, 0);
    cfg.token = token.map(str::to_string);
    let r = nina_web::Web::new(cfg)
        .unwrap()
        .with_forget(forget.clone())
        .router()
        .unwrap();
    (r, forget)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, "127.0.0.1:1")
        .body(Body::empty())
        .unwrap()
}

async fn send(
    r: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = r.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

async fn text(r: &axum::Router, uri: &str) -> (StatusCode, String) {
    let (s, _, b) = send(r, get(uri)).await;
    (s, String::from_utf8_lossy(&b).into_owned())
}

#[tokio::test]
async fn sessions_are_listed_filtered_and_paged() {
    let (_t, data) = data_dir(60);
    let (r, _) = router(&data, None);
    let (s, body) = text(&r, "/sessions").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("61 session(s)"), "{body}");
    assert!(body.contains("href=\"/s/demo\""));
    assert!(body.contains("page 1 of 2"));
    assert!(body.contains("Ann, Bob"));
    let (_, body) = text(&r, "/sessions?page=2").await;
    assert!(body.contains("old-00059") && !body.contains("/s/demo\""));
    let (_, body) = text(&r, "/sessions?date=2025-11-25&guild=111&user=8").await;
    assert!(body.contains("href=\"/s/demo\""));
    let (_, body) = text(&r, "/sessions?guild=999").await;
    assert!(body.contains("0 session(s)"));
    let (_, body) = text(&r, "/sessions?user=9").await;
    assert!(body.contains("0 session(s)"));
    assert_eq!(
        text(&r, "/sessions?guild=x").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        text(&r, "/sessions?date=2025-13-01").await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn session_page_has_lanes_transcript_and_downloads() {
    let (_t, data) = data_dir(0);
    let (r, _) = router(&data, None);
    let (s, body) = text(&r, "/s/demo").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("Test guild / General"));
    assert!(body.contains("data-peaks=\"/s/demo/peaks/7\""));
    assert!(body.contains("data-peaks=\"/s/demo/peaks/8\""));
    assert!(body.contains("id=\"line1\" data-start=\"4\""));
    assert!(body.contains("the quick brown fox jumps"));
    assert!(body.contains("src=\"/s/demo/audio/mix\""));
    assert!(body.contains("/s/demo/tracks.zip"));
    assert!(body.contains("/s/demo/transcript/json"));
    assert!(
        !body.contains("/s/demo/transcript/vtt"),
        "absent files are not offered"
    );
}

#[tokio::test]
async fn audio_is_served_in_ranges_and_never_compressed() {
    let (_t, data) = data_dir(0);
    let (r, _) = router(&data, None);
    let req = Request::get("/s/demo/audio/mix")
        .header(header::HOST, "127.0.0.1")
        .header(header::RANGE, "bytes=100-199")
        .header(header::ACCEPT_ENCODING, "gzip, br")
        .body(Body::empty())
        .unwrap();
    let (s, h, b) = send(&r, req).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(b.len(), 100);
    assert!(
        h[header::CONTENT_RANGE]
            .to_str()
            .unwrap()
            .starts_with("bytes 100-199/")
    );
    assert_eq!(h[header::CONTENT_TYPE], "audio/wav");
    assert!(h.get(header::CONTENT_ENCODING).is_none());
    let (s, h, b) = send(&r, get("/s/demo/audio/mix")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::ACCEPT_RANGES], "bytes");
    assert_eq!(&b[..4], b"RIFF");
    assert_eq!(
        text(&r, "/s/demo/audio/user/7").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn peaks_are_computed_or_read() {
    let (_t, data) = data_dir(0);
    let (r, _) = router(&data, None);
    let (s, _, b) = send(&r, get("/s/demo/peaks/8")).await;
    assert_eq!(s, StatusCode::OK);
    let p = nina_web::Peaks::from_bytes(&b).unwrap();
    assert_eq!(p.pairs.len(), (DEMO_SECONDS * 100.0) as usize);
    // Bob speaks from 4 s to 6.5 s: loud there, silent before.
    assert_eq!(p.pairs[100], (0, 0));
    assert!(p.pairs[525].1 > 40, "{:?}", p.pairs[525]);
    // Stored peaks win.
    let dir = nina_store::Store::new(&data).sessions().unwrap().remove(0);
    let stored = nina_web::Peaks {
        sample_rate: 100,
        samples_per_pixel: 1,
        pairs: vec![(1, 2)],
    };
    dir.write("peaks/8.dat", &stored.to_bytes()).unwrap();
    let (_, _, b) = send(&r, get("/s/demo/peaks/8")).await;
    assert_eq!(nina_web::Peaks::from_bytes(&b).unwrap(), stored);
    assert_eq!(text(&r, "/s/demo/peaks/9").await.0, StatusCode::NOT_FOUND);
    assert_eq!(text(&r, "/s/demo/peaks/x").await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn tracks_zip_holds_one_flac_per_user() {
    use std::io::Read;
    let (_t, data) = data_dir(0);
    let (r, _) = router(&data, None);
    let (s, h, b) = send(&r, get("/s/demo/tracks.zip")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "application/zip");
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(b)).unwrap();
    let mut names: Vec<String> = z.file_names().map(str::to_string).collect();
    names.sort();
    assert_eq!(names, ["Ann-7.flac", "Bob-8.flac"]);
    let mut flac = Vec::new();
    z.by_name("Bob-8.flac")
        .unwrap()
        .read_to_end(&mut flac)
        .unwrap();
    assert_eq!(&flac[..4], b"fLaC");
    // STREAMINFO: 16 kHz, mono, 16-bit, 20 s of samples.
    let info = &flac[8..42];
    let rate =
        (u32::from(info[10]) << 12) | (u32::from(info[11]) << 4) | (u32::from(info[12]) >> 4);
    assert_eq!(rate, RATE);
    let total = (u64::from(info[13] & 0x0f) << 32)
        | u64::from(u32::from_be_bytes([info[14], info[15], info[16], info[17]]));
    assert_eq!(total, (DEMO_SECONDS * f64::from(RATE)) as u64);
    // Block sizes 4096 (the last block is not counted), frame sizes unknown (0).
    assert_eq!(&info[..10], [16, 0, 16, 0, 0, 0, 0, 0, 0, 0]);
    // The samples: Bob's utterances where they were said, silence elsewhere.
    let mut expected = vec![0i16; total as usize];
    for (_, start, end, _) in LINES.iter().filter(|l| l.0 == BOB) {
        let at = (start * f64::from(RATE)).round() as usize;
        for (k, v) in tone(end - start, 660.0).iter().enumerate() {
            expected[at + k] = nina_store::audio::f32_to_i16(*v);
        }
    }
    let got = decode_flac(flac);
    assert_eq!(got.len(), expected.len());
    // Within one step of 16-bit rounding (the WAV files hold the tone as 16-bit already); a
    // sample out of place would be thousands of steps off.
    let wrong = got
        .iter()
        .zip(&expected)
        .filter(|(a, b)| (i32::from(**a) - i32::from(**b)).abs() > 1)
        .count();
    assert_eq!(wrong, 0, "{wrong} samples differ");
}

/// The samples of a mono 16-bit FLAC file, decoded by symphonia.
fn decode_flac(bytes: Vec<u8>) -> Vec<i16> {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::errors::Error;
    let mss = symphonia::core::io::MediaSourceStream::new(
        Box::new(std::io::Cursor::new(bytes)),
        Default::default(),
    );
    let mut format = symphonia::default::get_probe()
        .format(
            symphonia::core::probe::Hint::new().with_extension("flac"),
            mss,
            &Default::default(),
            &Default::default(),
        )
        .unwrap()
        .format;
    let params = format.default_track().unwrap().codec_params.clone();
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &Default::default())
        .unwrap();
    let mut out = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("{e}"),
        };
        let decoded = decoder.decode(&packet).unwrap();
        let mut buf = SampleBuffer::<i16>::new(decoded.capacity() as u64, *decoded.spec());
        buf.copy_interleaved_ref(decoded);
        out.extend_from_slice(buf.samples());
    }
    out
}

#[tokio::test]
async fn search_highlights_and_links_to_the_moment() {
    let (_t, data) = data_dir(3);
    let (r, _) = router(&data, None);
    let (s, body) = text(&r, "/search?q=%22brown+fox%22").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("1 hit(s)"), "{body}");
    assert!(body.contains("href=\"/s/demo#t=4.00\""), "{body}");
    assert!(body.contains("<mark>brown fox</mark>"), "{body}");
    let (_, body) = text(&r, "/search?q=%3Cscript%3E").await;
    assert!(!body.contains("<script>"));
    let (_, body) = text(&r, "/search?q=older&user=8").await;
    assert!(body.contains("0 hit(s)"), "{body}");
}

#[tokio::test]
async fn hostile_session_ids_and_paths_are_refused() {
    let (_t, data) = data_dir(1);
    // Outside files that must never be served.
    std::fs::write(data.parent().unwrap().join("secret.wav"), b"RIFFsecret").unwrap();
    let (r, _) = router(&data, None);
    for uri in [
        "/s/..",
        "/s/%2e%2e",
        "/s/..%2F..%2Fsecret",
        "/s/demo%2F..%2F..",
        "/s/%2Fetc%2Fpasswd",
        "/s/demo/../../secret.wav",
        "/s/demo/audio/user/..%2F..%2Fsecret",
        "/s/demo/transcript/..%2Fsession.json",
        "/s/demo/transcript/json%00",
        "/s/nope",
        "/s/a.b/audio/mix",
        "/assets/..%2FCargo.toml",
        "/assets/../../Cargo.toml",
    ] {
        let (s, body) = text(&r, uri).await;
        assert!(
            matches!(s, StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST),
            "{uri}: {s}"
        );
        assert!(
            !body.contains("secret") && !body.contains("[package]"),
            "{uri}"
        );
    }
    // An index row pointing outside (a tampered index) and a symlinked session directory.
    let outside = data
        .parent()
        .unwrap()
        .join("outside/111/222/2025-11-25/evil");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("mix.wav"), b"RIFFsecret").unwrap();
    let index = nina_index::Index::open(&data).unwrap();
    let c = index.connection();
    for (id, path) in [
        ("old-00000", "../outside/111/222/2025-11-25/evil"),
        ("demo", "/etc"),
    ] {
        c.execute(
            "UPDATE sessions SET path = ?1 WHERE session_id = ?2",
            [path, id],
        )
        .unwrap();
    }
    assert_eq!(
        text(&r, "/s/old-00000/audio/mix").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(text(&r, "/s/demo/audio/mix").await.0, StatusCode::NOT_FOUND);
    std::os::unix::fs::symlink(&outside, data.join("111/222/2025-11-25/evil")).unwrap();
    c.execute(
        "UPDATE sessions SET path = '111/222/2025-11-25/evil' WHERE session_id = 'old-00000'",
        [],
    )
    .unwrap();
    assert_eq!(
        text(&r, "/s/old-00000/audio/mix").await.0,
        StatusCode::NOT_FOUND
    );
}

fn post_forget(body: &str, site: Option<&str>, origin: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/forget")
        .header(header::HOST, "127.0.0.1:1")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(s) = site {
        b = b.header("sec-fetch-site", s);
    }
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

#[tokio::test]
async fn forget_needs_confirmation_refuses_cross_site_and_is_audited() {
    let (_t, data) = data_dir(0);
    let (r, forget) = router(&data, None);
    let (s, body) = text(&r, "/forget?user=8").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("is in <b>1</b> indexed session(s)"), "{body}");
    assert!(body.contains("(Bob)"));
    // Cross-site, by Sec-Fetch-Site or by Origin.
    for (site, origin) in [
        (Some("cross-site"), None),
        (Some("same-site"), Some("http://127.0.0.1:2")),
        (None, Some("http://evil.example")),
    ] {
        let (s, _, _) = send(&r, post_forget("user=8&confirm=8", site, origin)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{site:?} {origin:?}");
    }
    assert!(forget.0.lock().unwrap().is_empty());
    assert!(!data.join(nina_web::audit::AUDIT_FILE).exists());
    // Unconfirmed.
    let (s, _, _) = send(
        &r,
        post_forget("user=8&confirm=7", Some("same-origin"), None),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(forget.0.lock().unwrap().is_empty());
    // Confirmed, same origin.
    let (s, _, b) = send(
        &r,
        post_forget(
            "user=8&guild=111&confirm=8",
            Some("same-origin"),
            Some("http://127.0.0.1:1"),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("user 8 forgotten"));
    assert_eq!(*forget.0.lock().unwrap(), vec![(8, Some(111))]);
    let audit = std::fs::read_to_string(data.join(nina_web::audit::AUDIT_FILE)).unwrap();
    let rec: serde_json::Value = serde_json::from_str(audit.trim()).unwrap();
    assert_eq!(rec["action"], "forget");
    assert_eq!(rec["user"], 8);
    assert_eq!(rec["guild"], 111);
    assert_eq!(rec["outcome"], "ok");
}

#[tokio::test]
async fn access_control() {
    let (_t, data) = data_dir(0);
    // Non-loopback without a token: refused at configuration.
    let cfg = nina_web::WebConfig {
        data: data.clone(),
        listen: "0.0.0.0:0".parse().unwrap(),
        token: None,
    };
    assert!(matches!(
        nina_web::Web::new(cfg),
        Err(nina_web::WebError::Auth(
            nina_web::auth::AuthError::NeedsToken(_)
        ))
    ));
    // Without a token, a foreign Host (DNS rebinding) is refused.
    let (r, _) = router(&data, None);
    let req = Request::get("/sessions")
        .header(header::HOST, "evil.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&r, req).await.0, StatusCode::FORBIDDEN);
    // With a token: nothing without the cookie, the login sets it.
    let token = "0123456789abcdef0123";
    let (r, _) = router(&data, Some(token));
    let any_host = |uri: &str, cookie: Option<&str>| {
        let mut b = Request::get(uri).header(header::HOST, "nina.example");
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        b.body(Body::empty()).unwrap()
    };
    assert_eq!(
        send(&r, any_host("/sessions", None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&r, any_host("/assets/nina.js", None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(
            &r,
            any_host("/sessions", Some("nina_token=0123456789abcdef0124"))
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&r, any_host("/login?token=wrong", None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, h, _) = send(&r, any_host(&format!("/login?token={token}"), None)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let cookie = h[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(
        send(&r, any_host("/sessions", Some(pair))).await.0,
        StatusCode::OK
    );
}

/// Reads the SSE stream until `until` appears in it (or 5 s pass).
async fn read_sse(addr: std::net::SocketAddr, extra: &str, until: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /live/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{extra}\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !got.contains(until) {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => break,
        }
    }
    got
}

#[tokio::test]
async fn live_stream_has_named_events_and_resumes() {
    let (_t, data) = data_dir(0);
    let srv = Server::start(&data).await;
    let hub = srv.hub.clone();
    hub.set_channels(vec![nina_web::Channel {
        guild_id: 1,
        guild_name: Some("G".into()),
        channel_id: 2,
        channel_name: Some("Voice".into()),
        session_id: "live-1".into(),
        members: vec![nina_web::Member {
            user_id: 7,
            name: "Ann".into(),
        }],
    }]);
    for i in 1..=3 {
        hub.utterance(nina_web::Utterance {
            channel_id: 2,
            user_id: 7,
            speaker: "Ann".into(),
            start: f64::from(i),
            end: f64::from(i) + 1.0,
            text: format!("line number {i}"),
        });
    }
    let all = read_sse(srv.addr, "", "line number 3").await;
    assert!(all.contains("event: members"), "{all}");
    assert!(all.contains("event: health"));
    assert!(all.contains("id: 1\n") && all.contains("id: 3\n"));
    // Resume after event 2: only 3 comes again.
    let again = read_sse(srv.addr, "Last-Event-ID: 2\r\n", "line number 3").await;
    assert!(
        again.contains("line number 3") && !again.contains("line number 1"),
        "{again}"
    );
    // Speaking shows within a few tenths of a second.
    let h = hub.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.speaking(7, 0.8);
    });
    let spoken = read_sse(srv.addr, "Last-Event-ID: 3\r\n", "member speaking").await;
    assert!(
        spoken.contains("member speaking\" data-user=\"7\""),
        "{spoken}"
    );
    let none = text(&router(&data, None).0, "/live/events").await;
    assert_eq!(none.0, StatusCode::SERVICE_UNAVAILABLE);
}
