//! The main gateway and REST API driven by real twilight-gateway and twilight-http.

use std::collections::HashMap;
use std::time::Duration;

use nina_fake_discord::FakeDiscord;
use twilight_gateway::{
    ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt as _,
};
use twilight_model::application::interaction::InteractionData;
use twilight_model::gateway::payload::outgoing::UpdateVoiceState;
use twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};
use twilight_model::id::Id;

/// Next event matching `pred`, within `secs` seconds (other events are skipped).
async fn next_matching(
    shard: &mut Shard,
    secs: u64,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    let fut = async {
        while let Some(item) = shard.next_event(EventTypeFlags::all()).await {
            if let Ok(ev) = item
                && pred(&ev)
            {
                return Some(ev);
            }
        }
        None
    };
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(Some(ev)) => ev,
        _ => panic!("no {what} event within {secs} s"),
    }
}

/// A shard pointed at the fake (the test enables twilight's `zlib` feature, so it asks for zlib-stream).
fn shard_for(fake: &FakeDiscord) -> Shard {
    let cfg = ConfigBuilder::new(
        fake.config().token.clone(),
        Intents::GUILDS
            | Intents::GUILD_VOICE_STATES
            | Intents::GUILD_MESSAGES
            | Intents::MESSAGE_CONTENT,
    )
    .proxy_url(fake.gateway_url())
    .build();
    Shard::with_config(ShardId::ONE, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilight_bot_sees_guild_voice_messages_and_commands_and_survives_drops() {
    let fake = FakeDiscord::start().await.expect("fake starts");
    let control = fake.control();
    let cfg = fake.config().clone();
    let (text, voice) = (cfg.text_channels[0].0, cfg.voice_channels[0].0);
    let alice = control.add_user("alice");
    let bob = control.add_user("bob");
    control.join_voice(alice, voice).expect("alice joins voice");

    // Identify -> Ready -> GUILD_CREATE with channels, members and voice states (zlib-stream on).
    let mut shard = shard_for(&fake);
    let ready = next_matching(&mut shard, 20, "Ready", |e| matches!(e, Event::Ready(_))).await;
    let Event::Ready(ready) = ready else {
        unreachable!()
    };
    assert_eq!(ready.user.id.get(), cfg.bot_user_id);
    assert_eq!(ready.resume_gateway_url, fake.gateway_url());
    let guild = next_matching(&mut shard, 10, "GuildCreate", |e| {
        matches!(e, Event::GuildCreate(_))
    })
    .await;
    let Event::GuildCreate(guild) = guild else {
        unreachable!()
    };
    let twilight_model::gateway::payload::incoming::GuildCreate::Available(guild) = *guild else {
        panic!("guild must be available")
    };
    assert_eq!(guild.id.get(), cfg.guild_id);
    assert_eq!(guild.channels.len(), 3);
    assert_eq!(guild.members.len(), 3, "bot, alice and bob");
    assert_eq!(guild.voice_states.len(), 1);
    assert_eq!(guild.voice_states[0].user_id.get(), alice);
    assert_eq!(
        guild.voice_states[0].channel_id.map(|c| c.get()),
        Some(voice)
    );

    // op 4 -> VOICE_STATE_UPDATE (bot) + VOICE_SERVER_UPDATE with a loopback endpoint.
    shard.command(&UpdateVoiceState::new(
        Id::new(cfg.guild_id),
        Some(Id::new(voice)),
        false,
        false,
    ));
    let vsu = next_matching(
        &mut shard,
        10,
        "bot VoiceStateUpdate",
        |e| matches!(e, Event::VoiceStateUpdate(v) if v.user_id.get() == cfg.bot_user_id),
    )
    .await;
    let Event::VoiceStateUpdate(vsu) = vsu else {
        unreachable!()
    };
    assert_eq!(vsu.channel_id.map(|c| c.get()), Some(voice));
    let server = next_matching(&mut shard, 10, "VoiceServerUpdate", |e| {
        matches!(e, Event::VoiceServerUpdate(_))
    })
    .await;
    let Event::VoiceServerUpdate(server) = server else {
        unreachable!()
    };
    assert_eq!(
        server.endpoint.as_deref(),
        Some(fake.voice_endpoint().as_str())
    );
    assert!(
        server
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("127.0.0.1:"))
    );
    assert_eq!(control.snapshot().bot_voice_channel, Some(voice));
    let op4 = control
        .gateway_commands()
        .into_iter()
        .find(|c| c.op == 4)
        .expect("op 4 recorded");
    assert_eq!(op4.d["channel_id"], voice.to_string());

    // Users moving are announced.
    control
        .move_user(alice, cfg.voice_channels[1].0)
        .expect("move");
    let moved = next_matching(
        &mut shard,
        10,
        "alice moved",
        |e| matches!(e, Event::VoiceStateUpdate(v) if v.user_id.get() == alice),
    )
    .await;
    let Event::VoiceStateUpdate(moved) = moved else {
        unreachable!()
    };
    assert_eq!(
        moved.channel_id.map(|c| c.get()),
        Some(cfg.voice_channels[1].0)
    );

    // A user types a command.
    control
        .type_message(bob, text, "!record start")
        .expect("message");
    let msg = next_matching(&mut shard, 10, "MessageCreate", |e| {
        matches!(e, Event::MessageCreate(_))
    })
    .await;
    let Event::MessageCreate(msg) = msg else {
        unreachable!()
    };
    assert_eq!(msg.content, "!record start");
    assert_eq!(msg.author.id.get(), bob);
    assert_eq!(msg.channel_id.get(), text);

    // REST through twilight-http's proxy mode.
    let http = twilight_http::Client::builder()
        .token(cfg.token.clone())
        .proxy(fake.http_proxy(), true)
        .timeout(Duration::from_secs(10))
        .build();
    let app = http
        .current_user_application()
        .await
        .expect("app")
        .model()
        .await
        .expect("app model");
    assert_eq!(app.id.get(), cfg.application_id);
    let info = http
        .gateway()
        .authed()
        .await
        .expect("gateway/bot")
        .model()
        .await
        .expect("model");
    assert_eq!(info.url, fake.gateway_url());
    let cmd = http
        .interaction(app.id)
        .create_guild_command(Id::new(cfg.guild_id))
        .chat_input("record", "Start recording this channel")
        .await
        .expect("register command")
        .model()
        .await
        .expect("command model");
    assert_eq!(cmd.name, "record");
    assert!(cmd.id.is_some());
    assert_eq!(control.registered_commands().len(), 1);
    let sent = http
        .create_message(Id::new(text))
        .content("recording started")
        .await
        .expect("create message");
    let sent = sent.model().await.expect("message model");
    assert_eq!(sent.content, "recording started");
    assert_eq!(control.bot_messages().len(), 1);
    assert_eq!(control.bot_messages()[0]["content"], "recording started");

    // A slash command, answered through the interaction callback.
    let inter = control
        .slash_command(
            bob,
            text,
            "record",
            serde_json::json!([{"name": "title", "type": 3, "value": "standup"}]),
        )
        .expect("slash command");
    let ev = next_matching(&mut shard, 10, "InteractionCreate", |e| {
        matches!(e, Event::InteractionCreate(_))
    })
    .await;
    let Event::InteractionCreate(i) = ev else {
        unreachable!()
    };
    assert_eq!(i.id.get(), inter.id);
    assert_eq!(i.author_id().map(|a| a.get()), Some(bob));
    let Some(InteractionData::ApplicationCommand(data)) = &i.data else {
        panic!("command data")
    };
    assert_eq!(data.name, "record");
    assert_eq!(Some(data.id), cmd.id, "the registered command's id");
    http.interaction(app.id)
        .create_response(
            i.id,
            &i.token,
            &InteractionResponse {
                kind: InteractionResponseType::ChannelMessageWithSource,
                data: Some(InteractionResponseData {
                    content: Some("Recording standup".into()),
                    ..Default::default()
                }),
            },
        )
        .await
        .expect("interaction response");
    let cb = control
        .wait_for_rest(Duration::from_secs(5), |r| r.path.ends_with("/callback"))
        .await
        .expect("callback recorded");
    assert_eq!(cb.status, 204);
    assert_eq!(cb.body["type"], 4);
    assert_eq!(cb.body["data"]["content"], "Recording standup");

    // A wrong token is refused and recorded.
    let bad = twilight_http::Client::builder()
        .token("wrong".into())
        .proxy(fake.http_proxy(), true)
        .build();
    assert!(
        bad.create_message(Id::new(text))
            .content("x")
            .await
            .is_err()
    );
    assert!(control.rest_requests().iter().any(|r| r.status == 401));

    // Connection dropped -> twilight resumes against resume_gateway_url and gets missed events.
    assert_eq!(control.drop_gateway(), 1);
    control
        .type_message(alice, text, "said while the bot was away")
        .expect("message");
    let missed = next_matching(&mut shard, 20, "replayed MessageCreate", |e| {
        matches!(e, Event::MessageCreate(_))
    })
    .await;
    let Event::MessageCreate(missed) = missed else {
        unreachable!()
    };
    assert_eq!(missed.content, "said while the bot was away");
    next_matching(&mut shard, 10, "Resumed after the drop", |e| {
        matches!(e, Event::Resumed)
    })
    .await;
    let stats = control.snapshot().stats;
    assert_eq!(stats.resumes, 1);
    assert_eq!(
        stats.identifies, 1,
        "a drop must be resumed, not re-identified"
    );

    // op 7 Reconnect -> another resume.
    assert_eq!(control.send_reconnect(), 1);
    // The shard only acts while it is polled: wait for its Resumed event.
    next_matching(&mut shard, 20, "Resumed after op 7", |e| {
        matches!(e, Event::Resumed)
    })
    .await;
    assert_eq!(control.snapshot().stats.resumes, 2);

    // op 9 Invalid Session (not resumable) -> a fresh Identify and Ready.
    control.invalidate_session(false);
    next_matching(&mut shard, 30, "second Ready", |e| {
        matches!(e, Event::Ready(_))
    })
    .await;
    assert_eq!(control.snapshot().stats.identifies, 2);

    // Kicked from voice -> VOICE_STATE_UPDATE with no channel.
    control.kick_bot().expect("kick");
    let kicked = next_matching(
        &mut shard,
        10,
        "bot kicked",
        |e| matches!(e, Event::VoiceStateUpdate(v) if v.user_id.get() == cfg.bot_user_id),
    )
    .await;
    let Event::VoiceStateUpdate(kicked) = kicked else {
        unreachable!()
    };
    assert!(kicked.channel_id.is_none());
    // Tokens never appear in the records.
    let ident = control
        .gateway_commands()
        .into_iter()
        .find(|c| c.op == 2)
        .expect("identify recorded");
    assert_eq!(ident.d["token"], "<redacted>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_in_two_guilds_sees_each_guild_and_acts_in_each_apart() {
    use nina_fake_discord::GuildSpec;
    use twilight_model::gateway::payload::incoming::GuildCreate;

    let fake = FakeDiscord::builder()
        .extra_guild(GuildSpec::numbered(1))
        .start()
        .await
        .expect("fake starts");
    let control = fake.control();
    let cfg = fake.config().clone();
    let g2 = cfg.extra_guilds[0].clone();
    let (g1, v1, t1) = (
        cfg.guild_id,
        cfg.voice_channels[0].0,
        cfg.text_channels[0].0,
    );
    let (v2, t2) = (g2.voice_channels[0].0, g2.text_channels[0].0);
    let alice = control.add_user("alice");
    let bob = control.add_user("bob");
    control
        .join_voice(alice, v1)
        .expect("alice joins in guild 1");
    control.join_voice(bob, v2).expect("bob joins in guild 2");

    // Ready lists both guilds; each gets its GUILD_CREATE with its own channels and voice states.
    let mut shard = shard_for(&fake);
    let Event::Ready(ready) =
        next_matching(&mut shard, 20, "Ready", |e| matches!(e, Event::Ready(_))).await
    else {
        unreachable!()
    };
    let mut listed: Vec<u64> = ready.guilds.iter().map(|g| g.id.get()).collect();
    listed.sort_unstable();
    assert_eq!(listed, vec![g1, g2.id]);
    let mut seen = HashMap::new();
    while seen.len() < 2 {
        let Event::GuildCreate(gc) = next_matching(&mut shard, 10, "GuildCreate", |e| {
            matches!(e, Event::GuildCreate(_))
        })
        .await
        else {
            unreachable!()
        };
        let GuildCreate::Available(g) = *gc else {
            panic!("guild must be available")
        };
        seen.insert(g.id.get(), g);
    }
    let (first, second) = (&seen[&g1], &seen[&g2.id]);
    assert_eq!(first.name, cfg.guild_name);
    assert_eq!(second.name, g2.name);
    assert_eq!(second.channels.len(), 3);
    assert!(second.channels.iter().all(|c| g2.has_channel(c.id.get())));
    assert_eq!(
        second.members.len(),
        3,
        "every user is a member of every guild"
    );
    let states = |g: &twilight_model::guild::Guild| -> Vec<(u64, Option<u64>)> {
        g.voice_states
            .iter()
            .map(|v| (v.user_id.get(), v.channel_id.map(|c| c.get())))
            .collect()
    };
    assert_eq!(states(first), vec![(alice, Some(v1))]);
    assert_eq!(states(second), vec![(bob, Some(v2))]);

    // op 4 in each guild -> that guild's VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE.
    for (g, v) in [(g1, v1), (g2.id, v2)] {
        shard.command(&UpdateVoiceState::new(
            Id::new(g),
            Some(Id::new(v)),
            false,
            false,
        ));
        let Event::VoiceStateUpdate(vsu) = next_matching(
            &mut shard,
            10,
            "bot VoiceStateUpdate",
            |e| matches!(e, Event::VoiceStateUpdate(v) if v.user_id.get() == cfg.bot_user_id),
        )
        .await
        else {
            unreachable!()
        };
        assert_eq!(vsu.guild_id.map(|x| x.get()), Some(g));
        assert_eq!(vsu.channel_id.map(|c| c.get()), Some(v));
        let Event::VoiceServerUpdate(server) =
            next_matching(&mut shard, 10, "VoiceServerUpdate", |e| {
                matches!(e, Event::VoiceServerUpdate(_))
            })
            .await
        else {
            unreachable!()
        };
        assert_eq!(server.guild_id.get(), g);
    }
    let snap = control.snapshot();
    assert_eq!(snap.bot_voice_channel, Some(v1), "the first guild's");
    let chans: Vec<(u64, Option<u64>)> = snap
        .guilds
        .iter()
        .map(|g| (g.guild_id, g.channel))
        .collect();
    assert_eq!(chans, vec![(g1, Some(v1)), (g2.id, Some(v2))]);
    // An op 4 naming a channel of the other guild is ignored.
    shard.command(&UpdateVoiceState::new(
        Id::new(g2.id),
        Some(Id::new(cfg.voice_channels[1].0)),
        false,
        false,
    ));

    // A user moving from guild 2 to guild 1: guild 2 sees them leave, guild 1 sees them come.
    control
        .move_user(bob, cfg.voice_channels[1].0)
        .expect("move across guilds");
    let mut got = Vec::new();
    while got.len() < 2 {
        let Event::VoiceStateUpdate(v) = next_matching(
            &mut shard,
            10,
            "bob's voice states",
            |e| matches!(e, Event::VoiceStateUpdate(v) if v.user_id.get() == bob),
        )
        .await
        else {
            unreachable!()
        };
        got.push((v.guild_id.map(|g| g.get()), v.channel_id.map(|c| c.get())));
    }
    assert_eq!(
        got,
        vec![
            (Some(g2.id), None),
            (Some(g1), Some(cfg.voice_channels[1].0))
        ]
    );
    assert_eq!(
        control.snapshot().guilds[1].channel,
        Some(v2),
        "the ignored op 4 did not move the bot"
    );

    // Messages and slash commands carry the guild of their channel.
    control.type_message(alice, t2, "!join").expect("message");
    let Event::MessageCreate(msg) = next_matching(&mut shard, 10, "MessageCreate", |e| {
        matches!(e, Event::MessageCreate(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(msg.guild_id.map(|g| g.get()), Some(g2.id));
    let inter = control
        .slash_command(alice, t2, "record", serde_json::json!([]))
        .expect("slash");
    let Event::InteractionCreate(i) = next_matching(&mut shard, 10, "InteractionCreate", |e| {
        matches!(e, Event::InteractionCreate(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(i.id.get(), inter.id);
    assert_eq!(i.guild_id.map(|g| g.get()), Some(g2.id));
    assert_eq!(i.channel.as_ref().map(|c| c.id.get()), Some(t2));

    // REST per guild: commands, guild, members, nickname, messages.
    let http = twilight_http::Client::builder()
        .token(cfg.token.clone())
        .proxy(fake.http_proxy(), true)
        .timeout(Duration::from_secs(10))
        .build();
    let app = Id::new(cfg.application_id);
    for (g, name) in [(g1, "one"), (g2.id, "two")] {
        http.interaction(app)
            .create_guild_command(Id::new(g))
            .chat_input(name, "per guild")
            .await
            .expect("register guild command");
    }
    let names = |g: u64| -> Vec<String> {
        control
            .registered_guild_commands(g)
            .iter()
            .map(|c| c["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(names(g1), vec!["one"]);
    assert_eq!(names(g2.id), vec!["two"]);
    let listed = http
        .interaction(app)
        .guild_commands(Id::new(g2.id))
        .await
        .expect("list")
        .models()
        .await
        .expect("models");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].guild_id.map(|g| g.get()), Some(g2.id));
    let guild = http
        .guild(Id::new(g2.id))
        .await
        .expect("GET guild")
        .model()
        .await
        .expect("guild model");
    assert_eq!(guild.name, g2.name);
    let member = http
        .guild_member(Id::new(g2.id), Id::new(bob))
        .await
        .expect("GET member")
        .model()
        .await
        .expect("member model");
    assert_eq!(member.user.id.get(), bob);
    http.update_current_member(Id::new(g2.id))
        .nick(Some("recording"))
        .await
        .expect("nickname");
    assert_eq!(control.bot_nick(g2.id).as_deref(), Some("recording"));
    assert_eq!(control.bot_nick(g1), None);
    let Event::MemberUpdate(up) = next_matching(&mut shard, 10, "MemberUpdate", |e| {
        matches!(e, Event::MemberUpdate(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(up.guild_id.get(), g2.id);
    assert_eq!(up.nick.as_deref(), Some("recording"));
    http.update_current_member(Id::new(g2.id))
        .nick(None)
        .await
        .expect("nickname reset");
    assert_eq!(control.bot_nick(g2.id), None);
    let sent = http
        .create_message(Id::new(t2))
        .content("in guild two")
        .await
        .expect("create message")
        .model()
        .await
        .expect("message model");
    assert_eq!(sent.guild_id.map(|g| g.get()), Some(g2.id));
    let _ = t1;

    // Kicked from one guild's voice only.
    control.kick_bot_in(g2.id).expect("kick in guild 2");
    let Event::VoiceStateUpdate(kicked) = next_matching(
        &mut shard,
        10,
        "bot kicked",
        |e| matches!(e, Event::VoiceStateUpdate(v) if v.user_id.get() == cfg.bot_user_id),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(kicked.guild_id.map(|g| g.get()), Some(g2.id));
    assert!(kicked.channel_id.is_none());
    assert_eq!(control.snapshot().bot_voice_channel, Some(v1));
    assert!(control.kick_bot_in(g2.id).is_err());
}
