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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_steps_name_a_guild_and_bad_guild_sets_are_refused() {
    use nina_fake_discord::{Config, Error, GuildSpec};

    let fake = FakeDiscord::builder()
        .extra_guild(GuildSpec::numbered(1))
        .start()
        .await
        .expect("fake starts");
    let control = fake.control();
    let cfg = fake.config().clone();
    let scenario = Scenario::from_json(
        r#"{"users": ["alice", "bob"], "steps": [
            {"join": {"user": "alice", "channel": 1, "guild": 1}},
            {"join": {"user": "bob", "channel": 0}},
            {"type": {"user": "bob", "content": "hi", "guild": 1}},
            {"slash": {"user": "bob", "name": "record", "guild": 1}}
        ]}"#,
    )
    .expect("scenario parses");
    scenario.run(&control, &cfg).await.expect("scenario runs");
    let snap = control.snapshot();
    let chan = |name: &str| snap.users.iter().find(|u| u.1 == name).and_then(|u| u.2);
    assert_eq!(chan("alice"), Some(cfg.extra_guilds[0].voice_channels[1].0));
    assert_eq!(chan("bob"), Some(cfg.voice_channels[0].0));
    assert_eq!(snap.guilds.len(), 2);
    let bad = Scenario::from_json(
        r#"{"users": ["a"], "steps": [{"join": {"user": "a", "channel": 0, "guild": 5}}]}"#,
    )
    .expect("parses");
    assert!(matches!(
        bad.run(&control, &cfg).await,
        Err(Error::Scenario(_))
    ));
    // A channel of an unknown guild, and a kick where the bot is not.
    assert!(matches!(
        control.join_voice(snap.users[0].0, 42),
        Err(Error::UnknownChannel(42))
    ));
    assert!(control.kick_bot_in(cfg.extra_guilds[0].id).is_err());
    assert!(matches!(
        control
            .wait_for_voice_ready_in(7, std::time::Duration::from_millis(10))
            .await,
        Err(Error::UnknownGuild(7))
    ));

    // Channel ids shared by two guilds are refused at start.
    let mut dup = Config::default();
    dup.extra_guilds
        .push(GuildSpec::new(5, "copy").voice_channel(dup.voice_channels[0].0, "same"));
    assert!(matches!(
        FakeDiscord::builder().config(dup).start().await,
        Err(Error::Config(_))
    ));
}
