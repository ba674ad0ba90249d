//! The live web page during a fake-Discord call, in Debian's chromium: the collector (run as a
//! process, `[web] listen`) shows who is speaking and the utterance once transcribed.

#[path = "../../../crates/nina-web/tests/browser/mod.rs"]
mod browser;
mod common;

use std::time::Duration;

use common::start_bot;
use nina_fake_discord::FakeDiscord;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_page_shows_the_speaker_and_the_finished_utterance_of_a_fake_call() {
    let clips = nina_eval::testdata::flite("slt").expect("run scripts/setup.sh");
    let data = tempfile::tempdir().unwrap();
    let fake = FakeDiscord::start().await.unwrap();
    let fc = fake.config().clone();
    let (voice, _) = fc.voice_channels[0].clone();
    let control = fake.control();
    let ann = control.add_user("Ann");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bot = start_bot(
        &fake,
        data.path(),
        ann,
        &format!(
            "[web]\nlisten = \"127.0.0.1:{port}\"\n[[channels]]\nguild = {}\nchannel = {voice}",
            fc.guild_id
        ),
        true,
    )
    .await;
    control
        .wait_for_voice_ready(Duration::from_secs(30))
        .await
        .unwrap();
    control.join_voice(ann, voice).unwrap();
    let b = browser::Browser::start().await;
    b.client
        .goto(&format!("http://127.0.0.1:{port}/live"))
        .await
        .unwrap();
    b.wait_for(&format!(".member[data-user='{ann}']")).await;
    let speech = control.speak_wav(ann, &clips[0].path).await.unwrap();
    b.wait_for(&format!(".member.speaking[data-user='{ann}']"))
        .await;
    speech.finished(Duration::from_secs(60)).await.unwrap();
    // The utterance ends after a pause, then Whisper (tiny) transcribes it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let text = loop {
        let t = b
            .js("const u = document.querySelector('#utterances .utt'); return u ? u.textContent : ''")
            .await;
        let t = t.as_str().unwrap_or("").to_string();
        if !t.is_empty() {
            break t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no utterance on the live page"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(text.contains("Ann"), "{text}");
    // Some word of what was said (Whisper tiny may miss a few).
    let said = clips[0].text.to_lowercase();
    let heard = text.to_lowercase();
    assert!(
        said.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 3)
            .any(|w| heard.contains(w)),
        "{text} vs {said}"
    );
    b.until(&format!(
        "return document.querySelector(\".member.speaking[data-user='{ann}']\") === null"
    ))
    .await;
    b.screenshot("live-fake-call").await;
    b.close().await;
    let _ = bot.sigterm().await;
    // The recording wrote Ann's waveform peaks as it went: 10 ms a pair over the whole session,
    // loud for about as long as she spoke.
    let sessions = nina_store::Store::new(data.path()).sessions().unwrap();
    let root = sessions[0].root();
    let bytes = std::fs::read(root.join(nina_store::peaks::peaks_file(ann)))
        .expect("peaks written while recording");
    let peaks = nina_store::peaks::Peaks::from_bytes(&bytes).unwrap();
    let session = sessions[0].load().unwrap();
    let seconds = (session.ended_at_ms.unwrap() - session.started_at_ms) as f64 / 1000.0;
    assert!(
        (peaks.duration() - seconds).abs() < 0.5,
        "{} s of peaks for {seconds} s",
        peaks.duration()
    );
    let loud = peaks
        .pairs
        .iter()
        .filter(|(lo, hi)| i16::from(*hi) - i16::from(*lo) > 10)
        .count() as f64
        / 100.0;
    let wav = nina_store::read_wav(&clips[0].path, 48_000 * 60).unwrap();
    let played = wav.samples.len() as f64 / f64::from(wav.channels) / f64::from(wav.sample_rate);
    assert!(
        loud > played * 0.3 && loud <= played + 0.5,
        "{loud} s loud in the peaks, {played} s played"
    );
}
