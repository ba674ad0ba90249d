//! JSON bodies of the Discord objects the fake sends, shaped like API v10.

use serde_json::{Value, json};

use crate::config::{Config, GuildSpec};
use crate::state::{FakeUser, State};

/// Fixed ISO-8601 timestamp used for `joined_at` and message timestamps.
pub(crate) const TIMESTAMP: &str = "2024-01-01T00:00:00.000000+00:00";

/// All permissions except administrator-only bits, as a string bitfield.
const EVERYONE_PERMISSIONS: &str = "1071698660929";

pub(crate) fn user(id: u64, name: &str, bot: bool) -> Value {
    json!({
        "id": id.to_string(),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": null,
        "bot": bot,
        "public_flags": 0,
    })
}

pub(crate) fn member(id: u64, name: &str, bot: bool) -> Value {
    member_of(&user(id, name, bot))
}

/// A guild member around an already built user object.
fn member_of(user: &Value) -> Value {
    json!({
        "user": user,
        "nick": null,
        "avatar": null,
        "roles": [],
        "joined_at": TIMESTAMP,
        "premium_since": null,
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": false,
    })
}

/// The bot as a member of guild `guild_id` with nickname `nick`: the REST answer to a nickname
/// change (`member`) and its GUILD_MEMBER_UPDATE dispatch (`update`).
pub(crate) fn bot_member(cfg: &Config, guild_id: u64, nick: Option<&str>) -> (Value, Value) {
    let mut m = member(cfg.bot_user_id, &cfg.bot_name, true);
    m["nick"] = json!(nick);
    let mut update = m.clone();
    update["guild_id"] = json!(guild_id.to_string());
    update["communication_disabled_until"] = Value::Null;
    (m, update)
}

pub(crate) fn current_user(cfg: &Config) -> Value {
    json!({
        "id": cfg.bot_user_id.to_string(),
        "username": cfg.bot_name,
        "discriminator": "0",
        "global_name": null,
        "avatar": null,
        "bot": true,
        "verified": true,
        "mfa_enabled": false,
        "flags": 0,
        "public_flags": 0,
    })
}

pub(crate) fn application(cfg: &Config) -> Value {
    json!({
        "id": cfg.application_id.to_string(),
        "name": cfg.bot_name,
        "icon": null,
        "description": "A bot under test on nina-fake-discord",
        "bot_public": true,
        "bot_require_code_grant": false,
        "verify_key": "0000000000000000000000000000000000000000000000000000000000000000",
        "flags": 0,
        "owner": user(1_000_000_000_000_000_001, "owner", false),
        "team": null,
        "summary": "",
    })
}

pub(crate) fn voice_state(
    guild_id: u64,
    user_id: u64,
    name: &str,
    bot: bool,
    channel: Option<u64>,
    session_id: &str,
) -> Value {
    json!({
        "guild_id": guild_id.to_string(),
        "channel_id": channel.map(|c| c.to_string()),
        "user_id": user_id.to_string(),
        "member": member(user_id, name, bot),
        "session_id": session_id,
        "deaf": false,
        "mute": false,
        "self_deaf": false,
        "self_mute": false,
        "self_video": false,
        "self_stream": false,
        "suppress": false,
        "request_to_speak_timestamp": null,
    })
}

pub(crate) fn channels(g: &GuildSpec) -> Vec<Value> {
    let mut out = Vec::new();
    for (pos, (id, name)) in g.text_channels.iter().enumerate() {
        out.push(json!({
            "id": id.to_string(),
            "type": 0,
            "guild_id": g.id.to_string(),
            "name": name,
            "position": pos,
            "permission_overwrites": [],
            "topic": null,
            "nsfw": false,
            "last_message_id": null,
            "rate_limit_per_user": 0,
            "parent_id": null,
        }));
    }
    for (pos, (id, name)) in g.voice_channels.iter().enumerate() {
        out.push(json!({
            "id": id.to_string(),
            "type": 2,
            "guild_id": g.id.to_string(),
            "name": name,
            "position": pos,
            "permission_overwrites": [],
            "bitrate": 64000,
            "user_limit": 0,
            "parent_id": null,
            "rtc_region": null,
            "nsfw": false,
            "rate_limit_per_user": 0,
        }));
    }
    out
}

/// A channel of any of `guilds`.
pub(crate) fn channel(guilds: &[GuildSpec], id: u64) -> Option<Value> {
    let g = guilds.iter().find(|g| g.has_channel(id))?;
    channels(g)
        .into_iter()
        .find(|c| c["id"] == Value::String(id.to_string()))
}

fn role(guild_id: u64) -> Value {
    json!({
        "id": guild_id.to_string(),
        "name": "@everyone",
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": null, "tertiary_color": null},
        "hoist": false,
        "icon": null,
        "unicode_emoji": null,
        "position": 0,
        "permissions": EVERYONE_PERMISSIONS,
        "managed": false,
        "mentionable": false,
        "flags": 0,
    })
}

/// Guild `g` as sent in GUILD_CREATE (with members, channels and voice states in `g`).
pub(crate) fn guild_create(cfg: &Config, g: &GuildSpec, st: &State) -> Value {
    let mut members = vec![member(cfg.bot_user_id, &cfg.bot_name, true)];
    let mut voice_states = Vec::new();
    for u in st.users.values() {
        members.push(member(u.id, &u.name, false));
        if let Some(ch) = u.voice_channel.filter(|c| g.has_voice_channel(*c)) {
            voice_states.push(voice_state(
                g.id,
                u.id,
                &u.name,
                false,
                Some(ch),
                &u.session_id,
            ));
        }
    }
    if let Some(bv) = st.bot_voice.get(&g.id) {
        voice_states.push(voice_state(
            g.id,
            cfg.bot_user_id,
            &cfg.bot_name,
            true,
            Some(bv.channel_id),
            &bv.session_id,
        ));
    }
    let mut out = guild_base(g);
    let Some(obj) = out.as_object_mut() else {
        return out;
    };
    obj.insert("joined_at".into(), json!(TIMESTAMP));
    obj.insert("large".into(), json!(false));
    obj.insert("unavailable".into(), json!(false));
    obj.insert("member_count".into(), json!(members.len()));
    obj.insert("members".into(), Value::Array(members));
    obj.insert("voice_states".into(), Value::Array(voice_states));
    obj.insert("channels".into(), Value::Array(channels(g)));
    obj.insert("threads".into(), json!([]));
    obj.insert("presences".into(), json!([]));
    obj.insert("stage_instances".into(), json!([]));
    obj.insert("guild_scheduled_events".into(), json!([]));
    obj.insert("soundboard_sounds".into(), json!([]));
    out
}

/// The guild as returned by REST `GET /guilds/{id}`.
pub(crate) fn guild_base(g: &GuildSpec) -> Value {
    json!({
        "id": g.id.to_string(),
        "name": g.name,
        "icon": null,
        "splash": null,
        "discovery_splash": null,
        "owner_id": "1000000000000000001",
        "afk_channel_id": null,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [role(g.id)],
        "emojis": [],
        "features": [],
        "mfa_level": 0,
        "application_id": null,
        "system_channel_id": null,
        "system_channel_flags": 0,
        "rules_channel_id": null,
        "max_members": 500000,
        "max_video_channel_users": 25,
        "vanity_url_code": null,
        "description": null,
        "banner": null,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "public_updates_channel_id": null,
        "nsfw_level": 0,
        "premium_progress_bar_enabled": false,
        "safety_alerts_channel_id": null,
        "widget_enabled": false,
        "stickers": [],
    })
}

pub(crate) fn ready(
    cfg: &Config,
    guilds: &[GuildSpec],
    session_id: &str,
    resume_url: &str,
    shard: Option<&Value>,
) -> Value {
    let mut v = json!({
        "v": 10,
        "user": current_user(cfg),
        "guilds": guilds
            .iter()
            .map(|g| json!({ "id": g.id.to_string(), "unavailable": true }))
            .collect::<Vec<_>>(),
        "session_id": session_id,
        "resume_gateway_url": resume_url,
        "application": { "id": cfg.application_id.to_string(), "flags": 0 },
        "private_channels": [],
        "relationships": [],
        "user_settings": {},
        "presences": [],
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": ["local"],
    });
    if let Some(s) = shard {
        v["shard"] = s.clone();
    }
    v
}

pub(crate) fn message(
    guild_id: u64,
    id: u64,
    channel_id: u64,
    author: &Value,
    bot_author: bool,
    content: &str,
) -> Value {
    let mut m = json!({
        "id": id.to_string(),
        "channel_id": channel_id.to_string(),
        "guild_id": guild_id.to_string(),
        "author": author,
        "content": content,
        "timestamp": TIMESTAMP,
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": false,
        "type": 0,
        "flags": 0,
        "components": [],
    });
    if !bot_author {
        let mut mem = member_of(author);
        if let Some(o) = mem.as_object_mut() {
            o.remove("user");
        }
        m["member"] = mem;
    }
    m
}

/// An application command interaction (slash command) from `user` in `channel_id` of guild `g`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn interaction(
    cfg: &Config,
    g: &GuildSpec,
    id: u64,
    token: &str,
    u: &FakeUser,
    channel_id: u64,
    command_id: u64,
    name: &str,
    options: &Value,
) -> Value {
    let mut mem = member(u.id, &u.name, false);
    mem["permissions"] = json!(EVERYONE_PERMISSIONS);
    let channel = channel(std::slice::from_ref(g), channel_id)
        .unwrap_or_else(|| json!({"id": channel_id.to_string(), "type": 0}));
    json!({
        "id": id.to_string(),
        "application_id": cfg.application_id.to_string(),
        "type": 2,
        "data": {
            "id": command_id.to_string(),
            "name": name,
            "type": 1,
            "options": options,
            "guild_id": g.id.to_string(),
        },
        "guild_id": g.id.to_string(),
        "channel": channel,
        "channel_id": channel_id.to_string(),
        "member": mem,
        "token": token,
        "version": 1,
        "app_permissions": EVERYONE_PERMISSIONS,
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": { "0": g.id.to_string() },
        "context": 0,
    })
}

#[cfg(test)]
mod tests {
    //! Every payload must deserialize into twilight-model's types (what real bots use).
    use super::*;
    use crate::state::{FakeUser, RtpStream};

    fn state_with_user(cfg: &Config) -> (State, FakeUser) {
        let mut st = State::new(cfg);
        let u = FakeUser {
            id: 1_300_000_000_000_000_001,
            name: "alice".into(),
            voice_channel: Some(cfg.voice_channels[0].0),
            session_id: "abc".into(),
            ssrc: 42,
            rtp: RtpStream {
                seq: 0,
                ts: 0,
                held: None,
            },
            speaking: None,
            pending: Default::default(),
        };
        let u2 = FakeUser {
            id: u.id,
            name: u.name.clone(),
            voice_channel: u.voice_channel,
            session_id: u.session_id.clone(),
            ssrc: u.ssrc,
            rtp: RtpStream {
                seq: 0,
                ts: 0,
                held: None,
            },
            speaking: None,
            pending: Default::default(),
        };
        st.users.insert(u.id, u);
        (st, u2)
    }

    fn parse<T: serde::de::DeserializeOwned>(what: &str, v: &Value) -> T {
        match serde_json::from_value::<T>(v.clone()) {
            Ok(t) => t,
            Err(e) => panic!("{what} does not parse as twilight type: {e}\n{v:#}"),
        }
    }

    #[test]
    fn payloads_parse_as_twilight_models() {
        use twilight_model::gateway::payload::incoming as inc;
        let mut cfg = Config::default();
        cfg.extra_guilds.push(GuildSpec::numbered(1));
        let guilds = cfg.guilds();
        let (st, u) = state_with_user(&cfg);
        let ready: inc::Ready = parse(
            "READY",
            &ready(
                &cfg,
                &guilds,
                "sess",
                "ws://127.0.0.1:1",
                Some(&json!([0, 1])),
            ),
        );
        assert_eq!(ready.guilds.len(), 2);
        assert_eq!(ready.resume_gateway_url, "ws://127.0.0.1:1");
        assert_eq!(ready.user.id.get(), cfg.bot_user_id);
        let g: twilight_model::guild::Guild =
            parse("GUILD_CREATE", &guild_create(&cfg, &guilds[0], &st));
        assert_eq!(g.channels.len(), 3);
        assert_eq!(g.members.len(), 2);
        assert_eq!(g.voice_states.len(), 1);
        assert_eq!(g.voice_states[0].user_id.get(), u.id);
        let _: inc::GuildCreate = parse("GUILD_CREATE event", &guild_create(&cfg, &guilds[0], &st));
        // The second guild: its own channels, the same members, nobody in its voice channels.
        let g2: twilight_model::guild::Guild =
            parse("GUILD_CREATE 2", &guild_create(&cfg, &guilds[1], &st));
        assert_eq!(g2.id.get(), guilds[1].id);
        assert_eq!(g2.members.len(), 2);
        assert!(g2.voice_states.is_empty());
        assert!(
            g2.channels
                .iter()
                .all(|c| guilds[1].has_channel(c.id.get()))
        );
        let vs: twilight_model::voice::VoiceState = parse(
            "VOICE_STATE",
            &voice_state(cfg.guild_id, u.id, &u.name, false, None, "s"),
        );
        assert!(vs.channel_id.is_none());
        let author = user(u.id, &u.name, false);
        let m: twilight_model::channel::Message = parse(
            "MESSAGE",
            &message(
                cfg.guild_id,
                5,
                cfg.text_channels[0].0,
                &author,
                false,
                "!join",
            ),
        );
        assert_eq!(m.content, "!join");
        assert!(m.member.is_some());
        let i: twilight_model::application::interaction::Interaction = parse(
            "INTERACTION",
            &interaction(
                &cfg,
                &guilds[0],
                6,
                "tok",
                &u,
                cfg.text_channels[0].0,
                7,
                "record",
                &json!([{"name": "what", "type": 3, "value": "x"}]),
            ),
        );
        assert_eq!(i.token, "tok");
        assert_eq!(i.author_id().map(|a| a.get()), Some(u.id));
        let (m, update) = bot_member(&cfg, guilds[1].id, Some("rec"));
        let m: twilight_model::guild::Member = parse("MEMBER (nick)", &m);
        assert_eq!(m.nick.as_deref(), Some("rec"));
        let up: inc::MemberUpdate = parse("GUILD_MEMBER_UPDATE", &update);
        assert_eq!(up.guild_id.get(), guilds[1].id);
        let _: twilight_model::user::CurrentUser = parse("CURRENT_USER", &current_user(&cfg));
        let _: twilight_model::oauth::Application = parse("APPLICATION", &application(&cfg));
        for c in guilds.iter().flat_map(channels) {
            let _: twilight_model::channel::Channel = parse("CHANNEL", &c);
        }
        let _: twilight_model::guild::Guild = parse("GUILD (REST)", &{
            let mut g = guild_base(&guilds[1]);
            g["channels"] = json!([]);
            g
        });
    }
}
