//! Acceptance: one `collector` process, run against `nina-fake-discord` with the bot in two
//! guilds, records a voice channel in each at the same time. One person speaks in each guild at
//! once; each guild gets its own session (under its own guild/channel/date directory) holding
//! that guild's speaker only. Transcription (tiny.en) is on, with live captions going to a text
//! channel of the first guild: only that guild's talk may show up there.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::start_bot;
use nina_fake_discord::{FakeDiscord, GuildSpec};
use nina_store::Store;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_guilds_recorded_at_once_give_two_sessions_each_with_its_own_speaker() {
    let clips = nina_eval::testdata::librivox().expect("run scripts/setup.sh");
    let data = tempfile::tempdir().unwrap();
    let fake = FakeDiscord::builder()
        .extra_guild(GuildSpec::numbered(1))
        .start()
        .await
        .unwrap();
    let fc = fake.config().clone();
    let second = fc.extra_guilds[0].clone();
    // (guild, guild name, voice channel, text channel) of each guild.
    let guilds = [
        (
            fc.guild_id,
            fc.guild_name.clone(),
            fc.voice_channels[0].0,
            fc.text_channels[0].0,
        ),
        (
            second.id,
            second.name.clone(),
            second.voice_channels[0].0,
            second.text_channels[0].0,
        ),
    ];
    let control = fake.control();
    let ann = control.add_user("Ann");
    let ben = control.add_user("Ben");
    let speakers = [ann, ben];
    let captions = guilds[0].3;
    let channels: String = guilds
        .iter()
        .map(|(g, _, v, _)| format!("[[channels]]\nguild = {g}\nchannel = {v}\n"))
        .collect();
    let extra = format!("captions_channel = {captions}\n{channels}");
    let bot = start_bot(&fake, data.path(), ann, &extra, true).await;
    for (g, _, v, _) in &guilds {
        let c = control.wait_for_voice_ready_in(*g, MINUTE).await.unwrap();
        assert_eq!(c, *v, "the bot joined the configured channel of guild {g}");
    }
    assert_eq!(control.snapshot().stats.voice_identifies, 2);
    // Ann in guild 1's channel, Ben in guild 2's; they speak at the same time.
    for (u, (_, _, v, _)) in speakers.iter().zip(&guilds) {
        control.join_voice(*u, *v).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut handles = Vec::new();
    for (i, u) in speakers.iter().enumerate() {
        handles.push(control.speak_wav(*u, &clips[i].path).await.unwrap());
    }
    let mut reports = Vec::new();
    for h in handles {
        reports.push(h.finished(MINUTE).await.unwrap());
    }
    for r in &reports {
        assert_eq!(r.unheard, 0, "the bot listened in both channels");
        assert!(r.sent > 100, "{r:?}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // `/record status` in each guild answers about that guild's recording.
    let mut asked = Vec::new();
    for (u, (_, _, _, t)) in speakers.iter().zip(&guilds) {
        let i = control
            .slash_command(*u, *t, "record", json!([{"type": 1, "name": "status"}]))
            .unwrap();
        asked.push(i.id);
    }
    for (id, (_, _, v, _)) in asked.iter().zip(&guilds) {
        let prefix = format!("/interactions/{id}/");
        let cb = control
            .wait_for_rest(MINUTE, |r| {
                r.path.starts_with(&prefix) && r.path.ends_with("/callback")
            })
            .await
            .unwrap();
        let reply = cb.body["data"]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            reply.starts_with(&format!("Recording <#{v}> ")),
            "status in the guild of channel {v}: {reply}"
        );
    }
    let (stdout, stderr) = bot.sigterm().await;
    eprintln!(
        "--- collector stdout\n{}\n--- collector stderr\n{stderr}",
        stdout.join("\n")
    );
    // Two sessions, one per guild, each under <guild>/<channel>/<date>/.
    let dirs = Store::new(data.path()).sessions().unwrap();
    assert_eq!(dirs.len(), 2, "one session per guild: {dirs:?}");
    let mut seen = BTreeSet::new();
    for dir in &dirs {
        let s = dir.load().unwrap();
        s.validate().unwrap();
        let i = guilds
            .iter()
            .position(|(g, ..)| *g == s.guild.id)
            .unwrap_or_else(|| panic!("session of an unknown guild {}", s.guild.id));
        assert!(seen.insert(i), "two sessions for guild {}", s.guild.id);
        let (g, name, v, _) = &guilds[i];
        let (user, report, other) = (speakers[i], &reports[i], speakers[1 - i]);
        assert_eq!(s.channel.id, *v);
        assert_eq!(s.guild.name.as_deref(), Some(name.as_str()));
        let rel = dir.root().strip_prefix(data.path()).unwrap();
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        assert_eq!(parts.len(), 4, "{rel:?}");
        assert_eq!(parts[0], g.to_string());
        assert_eq!(parts[1], v.to_string());
        assert_eq!(parts[3], s.id);
        eprintln!(
            "guild {g}: {} utterances, tracks {:?}, participants {:?}",
            s.utterances.len(),
            s.tracks.iter().map(|t| t.user_id).collect::<Vec<_>>(),
            s.participants.iter().map(|p| p.user_id).collect::<Vec<_>>()
        );
        // Only this guild's speaker, and some of their speech.
        assert!(!s.utterances.is_empty(), "guild {g}: no utterance");
        assert!(
            s.utterances.iter().all(|u| u.user_id == user),
            "guild {g}: utterances of {:?}, expected only {user}",
            s.utterances.iter().map(|u| u.user_id).collect::<Vec<_>>()
        );
        let spoken: f64 = s.utterances.iter().map(|u| u.end - u.start).sum();
        let clip = f64::from(report.frames) * 0.020;
        assert!(
            spoken >= 0.5 * clip,
            "guild {g}: {spoken:.2} s of utterances for a {clip:.2} s clip"
        );
        assert!(s.participants.iter().all(|p| p.user_id != other));
        for u in &s.utterances {
            assert!(dir.root().join(&u.file).is_file(), "{}", u.file);
        }
        // One Ogg Opus track, the speaker's, holding every packet sent in this guild.
        assert_eq!(
            s.tracks.iter().map(|t| t.user_id).collect::<Vec<_>>(),
            vec![user],
            "guild {g}: tracks"
        );
        let track = dir.root().join(&s.tracks[0].file);
        assert_eq!(s.tracks[0].file, nina_store::track_file(user));
        let info = std::process::Command::new("opusinfo")
            .arg(&track)
            .output()
            .expect("opusinfo missing: run scripts/setup.sh");
        assert!(
            info.status.success(),
            "opusinfo rejects {}",
            track.display()
        );
        let t = nina_store::read_opus_track(&track).unwrap();
        let voiced = t
            .packets
            .iter()
            .filter(|p| p.data != nina_store::OPUS_SILENCE)
            .count();
        assert_eq!(voiced as u32, report.sent, "guild {g}: voiced packets");
        // Nothing of the other speaker anywhere in this session's directory.
        for f in common::all_files(dir.root()) {
            assert!(
                !f.display().to_string().contains(&other.to_string()),
                "{} in guild {g}'s session",
                f.display()
            );
        }
    }
    assert_eq!(seen.len(), 2);
    // Captions: Ann's talk in the first guild's channel, nothing of Ben's (the other guild).
    let captioned: Vec<(u64, String)> = control
        .bot_messages()
        .iter()
        .filter_map(|m| {
            let text = m["content"].as_str()?.to_string();
            let channel = m["channel_id"].as_str()?.parse().ok()?;
            text.starts_with('[').then_some((channel, text))
        })
        .collect();
    eprintln!("captions {captioned:#?}");
    assert!(
        captioned
            .iter()
            .any(|(c, t)| *c == captions && t.contains("] Ann: ")),
        "Ann's captions"
    );
    assert!(
        captioned
            .iter()
            .all(|(c, t)| *c == captions && !t.contains("] Ben: ")),
        "the other guild's talk was posted"
    );
    fake.shutdown().await;
}
