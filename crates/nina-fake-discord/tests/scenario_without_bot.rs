//! The control surface and scenarios, with no bot connected: audio is paced and "unheard".

mod common;

use nina_fake_discord::FakeDiscord;
use nina_fake_discord::scenario::Scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_runs_and_reports_unheard_speech_and_ssrc_change() {
    let wav = common::librivox("sense_and_sensibility_01_austen_64kb-0880.wav");
    let fake = FakeDiscord::builder()
        .speed(10.0)
        .start()
        .await
        .expect("fake starts");
    let control = fake.control();
    let text = format!(
        r#"{{"users": ["alice", "bob"], "steps": [
            {{"join": {{"user": "alice", "channel": 0}}}},
            {{"speak": {{"user": "alice", "wav": {wav:?}, "wait": true}}}},
            {{"type": {{"user": "bob", "content": "hello"}}}},
            {{"slash": {{"user": "bob", "name": "record"}}}},
            {{"rejoin": {{"user": "alice"}}}},
            {{"faults": {{"loss": 0.5, "seed": 1}}}},
            {{"speed": 20.0}},
            {{"sleep_ms": 10}}
        ]}}"#,
        wav = wav.display().to_string()
    );
    let scenario = Scenario::from_json(&text).expect("scenario parses");
    let reports = scenario
        .run(&control, fake.config())
        .await
        .expect("scenario runs");
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    // 2.99 s of speech is 150 frames of 20 ms; nobody listened, so all are unheard.
    assert_eq!(r.frames, 150);
    assert_eq!(r.unheard, 150);
    assert_eq!(r.sent, 0);
    assert_eq!(r.silence_frames, 5);
    let snap = control.snapshot();
    assert_eq!(snap.users.len(), 2);
    let alice = snap.users.iter().find(|u| u.1 == "alice").expect("alice");
    assert_eq!(alice.2, Some(fake.config().voice_channels[0].0));
    assert_ne!(alice.3, r.ssrc, "rejoin gives a new SSRC");
    assert!(Scenario::from_json("{\"steps\": [{\"no_such_step\": 1}]}").is_err());
    assert!(control.kick_bot().is_err(), "the bot is not in voice");
}
