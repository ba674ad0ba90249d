//! Acceptance: what happens to a recording when people and connections come and go, when the
//! collector is killed, and the commands that start and stop it. The `collector` binary runs as
//! a process against `nina-fake-discord`; transcription is off unless the check needs it.

mod common;

use std::time::Duration;

use common::{start_bot, the_session};
use nina_fake_discord::FakeDiscord;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

fn clip(i: usize) -> std::path::PathBuf {
    nina_eval::testdata::librivox().expect("run scripts/setup.sh")[i]
        .path
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_voice_close_and_gateway_reconnects_keep_one_session_with_gaps() {
    let data = tempfile::tempdir().unwrap();
    let fake = FakeDiscord::start().await.unwrap();
    let fc = fake.config().clone();
    let (voice, _) = fc.voice_channels[0].clone();
    let control = fake.control();
    let ann = control.add_user("Ann");
    let bot = start_bot(
        &fake,
        data.path(),
        ann,
        &format!("[[channels]]\nguild = {}\nchannel = {voice}", fc.guild_id),
        true,
    )
    .await;
    control.wait_for_voice_ready(MINUTE).await.unwrap();
    control.join_voice(ann, voice).unwrap();
    let speak = |i: usize| {
        let control = control.clone();
        async move {
            control
                .speak_wav(ann, &clip(i))
                .await
                .unwrap()
                .finished(MINUTE)
                .await
                .unwrap()
        }
    };
    let mut sent = vec![speak(0).await.sent];
    // Leaves and comes back with a new SSRC.
    control.leave_voice(ann).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    control.join_voice(ann, voice).unwrap();
    // ... and reconnects with a new SSRC.
    let new_ssrc = control.rejoin_voice(ann).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    sent.push(speak(1).await.sent);
    // The voice server crashes (4015): songbird resumes.
    control.close_voice(4015).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    sent.push(speak(2).await.sent);
    // Gateway op 7, then a non-resumable op 9.
    control.send_reconnect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    control.invalidate_session(false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    sent.push(speak(3).await.sent);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, stderr) = bot.sigterm().await;
    let (dir, s) = the_session(data.path());
    eprintln!("ssrc after rejoin {new_ssrc}; gaps {:?}", s.gaps);
    eprintln!("presence {:?}", s.participants);
    s.validate().unwrap();
    // One user, one track, all four speeches in it.
    assert_eq!(s.tracks.len(), 1, "{:?}", s.tracks);
    let t = nina_store::read_opus_track(&dir.root().join(&s.tracks[0].file)).unwrap();
    let voiced = t
        .packets
        .iter()
        .filter(|p| p.data != nina_store::OPUS_SILENCE)
        .count() as u32;
    let mut runs: Vec<(f64, f64, usize)> = Vec::new();
    for p in t
        .packets
        .iter()
        .filter(|p| p.data != nina_store::OPUS_SILENCE)
    {
        let at = p.start as f64 / 48_000.0;
        match runs.last_mut() {
            Some(r) if at - r.1 < 0.1 => {
                r.1 = at;
                r.2 += 1;
            }
            _ => runs.push((at, at, 1)),
        }
    }
    eprintln!("voiced runs (start s, end s, packets) {runs:?}");
    let total: u32 = sent.iter().sum();
    eprintln!("voiced packets {voiced} of {total} sent ({sent:?})");
    // songbird 0.6.1 forgets a user's SSRC up to 5 s after their Client Disconnect (op 13)
    // by user id, so when Ann comes back within those 5 s the mapping of her new SSRC can go
    // too; under DAVE her packets are then dropped (they cannot be decrypted without knowing
    // whose they are) until her next Speaking (op 5), i.e. her next burst. Speech 1 is that
    // burst: it may be lost whole, depending on where songbird's 5 s cleanup timer falls.
    let songbird_forgets_ssrc = sent[1];
    assert!(
        voiced + 10 + songbird_forgets_ssrc >= total,
        "{voiced} of {total} packets stored ({stderr})"
    );
    for i in [0, 2, 3] {
        assert!(
            runs.iter()
                .any(|r| r.2 as u32 + 5 >= sent[i] && r.2 as u32 <= sent[i]),
            "speech {i} ({} packets) stored whole: {runs:?}",
            sent[i]
        );
    }
    let mine = s.utterances.iter().filter(|u| u.user_id == ann).count();
    let speech_1_lost = voiced + 10 < total;
    assert!(mine >= 4 - usize::from(speech_1_lost), "{mine} utterances");
    let ann_p = s.participants.iter().find(|p| p.user_id == ann).unwrap();
    assert_eq!(ann_p.presence.len(), 2, "left and came back");
    assert!(
        s.gaps.iter().any(|g| g.reason.contains("voice connection")),
        "the voice reconnection recorded: {:?}",
        s.gaps
    );
    assert!(
        s.gaps.iter().any(|g| g.reason.contains("gateway")),
        "gateway gaps recorded: {:?}",
        s.gaps
    );
    // What Ann said across the voice resume and the rejoin is transcribed under her name
    // (speech 1 only when songbird kept her SSRC, see above).
    let clips = nina_eval::testdata::librivox().expect("run scripts/setup.sh");
    let transcript: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.root().join("transcript.json")).unwrap())
            .unwrap();
    let label = s.speaker_label(ann);
    let said: Vec<&str> = transcript["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|seg| seg["speaker"] == label.as_str())
        .filter_map(|seg| seg["text"].as_str())
        .collect();
    let spoken: Vec<&str> = (0..4)
        .filter(|i| *i != 1 || !speech_1_lost)
        .map(|i| clips[i].text.as_str())
        .collect();
    let e = nina_eval::word_errors(&spoken.join(" "), &said.join(" "));
    eprintln!(
        "WER {:.1}% over {} speeches",
        e.rate() * 100.0,
        spoken.len()
    );
    // tiny.en, as in the other plumbing tests (the 10 % target is whisper-base's).
    assert!(e.rate() <= 0.15, "WER {:.3}: {said:?}", e.rate());
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_leaves_a_valid_session() {
    let data = tempfile::tempdir().unwrap();
    let fake = FakeDiscord::start().await.unwrap();
    let fc = fake.config().clone();
    let (voice, _) = fc.voice_channels[0].clone();
    let control = fake.control();
    let ann = control.add_user("Ann");
    let channels = format!("[[channels]]\nguild = {}\nchannel = {voice}", fc.guild_id);
    let bot = start_bot(&fake, data.path(), ann, &channels, true).await;
    control.wait_for_voice_ready(MINUTE).await.unwrap();
    control.join_voice(ann, voice).unwrap();
    let first = control
        .speak_wav(ann, &clip(0))
        .await
        .unwrap()
        .finished(MINUTE)
        .await
        .unwrap();
    assert!(first.sent > 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Killed in the middle of the second utterance.
    let _second = control.speak_wav(ann, &clip(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    bot.kill9().await;
    // The next start finishes what the crash left.
    let mut bot = start_bot(&fake, data.path(), ann, "", true).await;
    let _ = &mut bot;
    let (_, stderr) = bot.sigterm().await;
    let (dir, s) = the_session(data.path());
    s.validate().unwrap();
    assert!(s.ended_at_ms.is_some(), "recovered and ended ({stderr})");
    // The first utterance is whole and transcribed; at most the one in progress is missing.
    let mine: Vec<_> = s.utterances.iter().filter(|u| u.user_id == ann).collect();
    assert!(!mine.is_empty(), "the finished utterance survived");
    assert!(mine[0].end - mine[0].start > 3.0);
    let info = std::process::Command::new("opusinfo")
        .arg(dir.root().join(nina_store::track_file(ann)))
        .output()
        .expect("opusinfo missing: run scripts/setup.sh");
    assert!(info.status.success(), "the repaired track is valid");
    let text = std::fs::read_to_string(dir.root().join("transcript.txt")).unwrap();
    assert!(
        text.to_lowercase().contains("dashwood"),
        "transcribed after recovery: {text}"
    );
    fake.shutdown().await;
}

/// Waits (up to a minute) until the bot has answered an interaction with `text`.
async fn wait_reply(control: &nina_fake_discord::Control, text: &str) {
    let deadline = std::time::Instant::now() + MINUTE;
    while !control
        .rest_requests()
        .iter()
        .any(|r| r.path.contains("/callback") && r.body.to_string().contains(text))
    {
        assert!(std::time::Instant::now() < deadline, "no reply `{text}`");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_start_stop_and_refuse() {
    let data = tempfile::tempdir().unwrap();
    let fake = FakeDiscord::start().await.unwrap();
    let fc = fake.config().clone();
    let (voice, _) = fc.voice_channels[0].clone();
    let (text, _) = fc.text_channels[0].clone();
    let control = fake.control();
    let ann = control.add_user("Ann");
    let ben = control.add_user("Ben");
    let log = data.path().join("collector.log");
    let mut bot = start_bot(
        &fake,
        data.path(),
        ann,
        &format!("log_file = {:?}", log.display().to_string()),
        false,
    )
    .await;
    let sub = |name: &str| json!([{"type": 1, "name": name}]);
    // Not in a voice channel yet (answered before she joins: the bot reads voice states as
    // they are when it handles the command).
    control
        .slash_command(ann, text, "record", sub("start"))
        .unwrap();
    wait_reply(&control, "Join a voice channel first").await;
    control.join_voice(ann, voice).unwrap();
    control.join_voice(ben, voice).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Ben may not; Ann may.
    control
        .slash_command(ben, text, "record", sub("start"))
        .unwrap();
    control
        .slash_command(ann, text, "record", sub("start"))
        .unwrap();
    control.wait_for_voice_ready(MINUTE).await.unwrap();
    control
        .slash_command(ben, text, "record", sub("status"))
        .unwrap();
    control
        .slash_command(ann, text, "record", sub("start"))
        .unwrap();
    control
        .slash_command(ann, text, "record", sub("stop"))
        .unwrap();
    bot.wait_line("NINA-SESSION-DONE", MINUTE).await;
    // The prefix commands.
    control.type_message(ben, text, "!join").unwrap();
    control.type_message(ann, text, "!join").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    control.type_message(ann, text, "!leave").unwrap();
    bot.wait_line("NINA-SESSION-DONE", MINUTE).await;
    control
        .slash_command(ben, text, "record", sub("optout"))
        .unwrap();
    control
        .slash_command(ben, text, "record", sub("optin"))
        .unwrap();
    // The last reply is out before the bot is stopped (a loaded machine can take a while).
    wait_reply(&control, "recorded again").await;
    let (stdout, stderr) = bot.sigterm().await;
    let replies: Vec<String> = control
        .rest_requests()
        .iter()
        .filter(|r| r.path.contains("/callback"))
        .map(|r| r.body.to_string())
        .collect();
    let said: Vec<String> = control
        .bot_messages()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .collect();
    eprintln!("replies {replies:#?}\nmessages {said:#?}");
    let expect = [
        "Join a voice channel first",
        "not allowed",
        "Recording <#",
        "Already recording this channel",
        "Stopping",
        "will not be recorded",
        "will be recorded again",
    ];
    for e in expect {
        assert!(replies.iter().any(|r| r.contains(e)), "no reply `{e}`");
    }
    assert!(
        replies
            .iter()
            .any(|r| r.contains("Recording <#") && r.contains(" s: ")),
        "status"
    );
    assert!(
        said.iter().any(|m| m.contains("not allowed")),
        "!join refused"
    );
    assert!(
        said.iter().filter(|m| m.contains("/record optout")).count() >= 2,
        "notices"
    );
    assert_eq!(
        nina_store::Store::new(data.path())
            .sessions()
            .unwrap()
            .len(),
        2,
        "one session per start"
    );
    // The commands were registered.
    assert!(
        control
            .registered_commands()
            .iter()
            .any(|c| c["name"] == "record")
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("session finished"),
        "the log file is written"
    );
    for out in [&stdout.join("\n"), &stderr, &logged] {
        assert!(!out.contains(&fc.token), "the token leaked");
    }
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_mode_joins_and_leaves_with_people_and_a_kick_is_respected() {
    let data = tempfile::tempdir().unwrap();
    let fake = FakeDiscord::start().await.unwrap();
    let fc = fake.config().clone();
    let (voice, _) = fc.voice_channels[0].clone();
    let control = fake.control();
    let ann = control.add_user("Ann");
    let mut bot = start_bot(
        &fake,
        data.path(),
        ann,
        &format!(
            "follow = true\n[[channels]]\nguild = {}\nchannel = {voice}",
            fc.guild_id
        ),
        false,
    )
    .await;
    // Nobody there: the bot waits.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        nina_store::Store::new(data.path())
            .sessions()
            .unwrap()
            .is_empty()
    );
    control.join_voice(ann, voice).unwrap();
    control.wait_for_voice_ready(MINUTE).await.unwrap();
    control
        .speak_wav(ann, &clip(4))
        .await
        .unwrap()
        .finished(MINUTE)
        .await
        .unwrap();
    control.leave_voice(ann).unwrap();
    bot.wait_line("NINA-SESSION-DONE", MINUTE).await;
    control.wait_for_bot_out_of_voice(MINUTE).await.unwrap();
    // Back, then a moderator kicks the bot: the session ends and the bot stays out.
    control.join_voice(ann, voice).unwrap();
    control.wait_for_voice_ready(MINUTE).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    control.kick_bot().unwrap();
    bot.wait_line("NINA-SESSION-DONE", MINUTE).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, stderr) = bot.sigterm().await;
    let dirs = nina_store::Store::new(data.path()).sessions().unwrap();
    assert_eq!(dirs.len(), 2, "two stays, two sessions ({stderr})");
    let first = dirs
        .iter()
        .map(|d| d.load().unwrap())
        .min_by_key(|s| s.started_at_ms)
        .unwrap();
    assert!(first.utterances.iter().any(|u| u.user_id == ann));
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_mode_keeps_only_tracks_and_reprocessing_finishes_them() {
    let data = tempfile::tempdir().unwrap();
    let fake = FakeDiscord::start().await.unwrap();
    let fc = fake.config().clone();
    let (voice, _) = fc.voice_channels[0].clone();
    let control = fake.control();
    let ann = control.add_user("Ann");
    let bot = start_bot(
        &fake,
        data.path(),
        ann,
        &format!(
            "[capture]\ndecode = false\n[[channels]]\nguild = {}\nchannel = {voice}",
            fc.guild_id
        ),
        true,
    )
    .await;
    control.wait_for_voice_ready(MINUTE).await.unwrap();
    control.join_voice(ann, voice).unwrap();
    let sent = control
        .speak_wav(ann, &clip(0))
        .await
        .unwrap()
        .finished(MINUTE)
        .await
        .unwrap()
        .sent;
    tokio::time::sleep(Duration::from_secs(1)).await;
    bot.sigterm().await;
    let (dir, s) = the_session(data.path());
    assert!(s.utterances.is_empty(), "nothing decoded live");
    assert!(s.recorder.as_ref().is_some_and(|r| !r.decode));
    assert!(s.is_raw());
    let t = nina_store::read_opus_track(&dir.root().join(nina_store::track_file(ann))).unwrap();
    let voiced = t
        .packets
        .iter()
        .filter(|p| p.data != nina_store::OPUS_SILENCE)
        .count() as u32;
    assert_eq!(voiced, sent);
    // What `reprocess session` does with it.
    let cfg = nina_pipeline::PipelineConfig {
        whisper: "whisper-tiny-en".into(),
        ..nina_pipeline::PipelineConfig::default()
    };
    let p = nina_pipeline::Pipeline::new(cfg).unwrap();
    p.segment_tracks(&dir, false, &nina_pipeline::NoProgress)
        .unwrap();
    p.transcribe_session(&dir, false, &nina_pipeline::NoProgress)
        .unwrap();
    let s = dir.load().unwrap();
    assert!(s.utterances.iter().all(|u| u.user_id == ann) && !s.utterances.is_empty());
    let text = std::fs::read_to_string(dir.root().join("transcript.txt")).unwrap();
    assert!(text.to_lowercase().contains("dashwood"), "{text}");
    fake.shutdown().await;
}
