//! The REST subset a recording bot calls, served as plain HTTP/1.1 for twilight-http's proxy mode.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::payloads;
use crate::state::{RecordedRequest, Shared, State, accept_until_shutdown, redact};

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let each = shared.clone();
    accept_until_shutdown(listener, &shared, "REST", move |stream| {
        let shared = each.clone();
        async move {
            if let Err(e) = connection(stream, shared).await {
                debug!("REST connection ended: {e}");
            }
        }
    })
    .await;
}

const MAX_REQUEST: usize = 8 << 20;

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut sd = shared.shutdown_rx();
    loop {
        // Parse a complete request from the buffer, reading more as needed.
        let parsed = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let method = req.method.unwrap_or("").to_string();
                    let path = req.path.unwrap_or("").to_string();
                    let mut content_len = 0usize;
                    let mut auth = None;
                    let mut close = false;
                    for h in req.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            content_len = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|s| s.trim().parse().ok())
                                .unwrap_or(0);
                        } else if h.name.eq_ignore_ascii_case("authorization") {
                            auth = Some(String::from_utf8_lossy(h.value).to_string());
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    if head_len + content_len > MAX_REQUEST {
                        return Ok(());
                    }
                    if buf.len() >= head_len + content_len {
                        let body = buf[head_len..head_len + content_len].to_vec();
                        buf.drain(..head_len + content_len);
                        break Some((method, path, auth, body, close));
                    }
                }
                Ok(httparse::Status::Partial) => {
                    if buf.len() > MAX_REQUEST {
                        return Ok(());
                    }
                }
                Err(_) => {
                    stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
                    return Ok(());
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::select! {
                _ = sd.wait_for(|v| *v) => return Ok(()),
                n = stream.read(&mut chunk) => n?,
            };
            if n == 0 {
                break None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let Some((method, path, auth, body, close)) = parsed else {
            return Ok(());
        };
        let (status, resp) = respond(&shared, &method, &path, auth.as_deref(), &body);
        let reason = match status {
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            _ => "Status",
        };
        let body = resp.map(|v| v.to_string()).unwrap_or_default();
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.flush().await?;
        if close {
            return Ok(());
        }
    }
}

fn not_found() -> (u16, Option<Value>) {
    (404, Some(json!({"message": "404: Not Found", "code": 0})))
}

fn unknown_guild() -> (u16, Option<Value>) {
    (
        404,
        Some(json!({"message": "Unknown Guild", "code": 10004})),
    )
}

/// Routes one request and records it.
fn respond(
    shared: &Shared,
    method: &str,
    raw_path: &str,
    auth: Option<&str>,
    body: &[u8],
) -> (u16, Option<Value>) {
    let path_only = raw_path.split('?').next().unwrap_or("");
    let path = path_only
        .strip_prefix("/api/v10")
        .or_else(|| path_only.strip_prefix("/api"))
        .unwrap_or(path_only)
        .to_string();
    let body_json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let cfg = &shared.cfg;
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Interaction callbacks and webhook calls authenticate with the interaction token instead.
    let token_routes = matches!(segs.first(), Some(&"interactions") | Some(&"webhooks"));
    let authed = auth
        .map(|a| a.strip_prefix("Bot ").unwrap_or(a))
        .is_some_and(|t| t == cfg.token);
    let (status, resp) = if !authed && !token_routes {
        warn!(method, path, "REST request without the right bot token");
        (
            401,
            Some(json!({"message": "401: Unauthorized", "code": 0})),
        )
    } else {
        shared.update(|st| route(shared, st, method, &segs, &body_json))
    };
    info!(method, path, status, "REST request");
    shared.update(|st| {
        st.rest_log.push(RecordedRequest {
            method: method.to_string(),
            path,
            body: redact(body_json),
            status,
        })
    });
    (status, resp)
}

fn route(
    shared: &Shared,
    st: &mut State,
    method: &str,
    segs: &[&str],
    body: &Value,
) -> (u16, Option<Value>) {
    let cfg = &shared.cfg;
    let app = cfg.application_id.to_string();
    // A guild the bot is in, from a path segment.
    let known = |g: &str| g.parse::<u64>().ok().and_then(|g| shared.guild(g));
    let assign_ids = |st: &mut State, cmds: &Value, guild_id: Option<&str>| -> Vec<Value> {
        cmds.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut c| {
                let id = st.snowflake();
                if let Some(o) = c.as_object_mut() {
                    // Discord omits what was not set; clients may send explicit nulls.
                    o.retain(|_, v| !v.is_null());
                    o.insert("id".into(), json!(id.to_string()));
                    o.insert("application_id".into(), json!(app));
                    o.insert("version".into(), json!(id.to_string()));
                    o.entry("type").or_insert(json!(1));
                    o.entry("description").or_insert(json!(""));
                    o.insert("default_member_permissions".into(), json!(null));
                    o.insert("nsfw".into(), json!(false));
                    if let Some(g) = guild_id {
                        o.insert("guild_id".into(), json!(g));
                    }
                }
                c
            })
            .collect()
    };
    match (method, segs) {
        ("GET", ["gateway"]) => (200, Some(json!({"url": shared.gateway_url}))),
        ("GET", ["gateway", "bot"]) => (
            200,
            Some(json!({
                "url": shared.gateway_url,
                "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1},
            })),
        ),
        ("GET", ["users", "@me"]) => (200, Some(payloads::current_user(cfg))),
        ("GET", ["users", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            if id == cfg.bot_user_id {
                return (200, Some(payloads::user(id, &cfg.bot_name, true)));
            }
            match st.users.get(&id) {
                Some(u) => (200, Some(payloads::user(u.id, &u.name, false))),
                None => not_found(),
            }
        }
        ("GET", ["applications", "@me"]) | ("GET", ["oauth2", "applications", "@me"]) => {
            (200, Some(payloads::application(cfg)))
        }
        ("GET", ["applications", a, "commands"]) if *a == app => {
            (200, Some(Value::Array(st.commands.clone())))
        }
        ("PUT", ["applications", a, "commands"]) if *a == app => {
            st.commands = assign_ids(st, body, None);
            (200, Some(Value::Array(st.commands.clone())))
        }
        ("POST", ["applications", a, "commands"]) if *a == app => {
            let c = assign_ids(st, &json!([body]), None).remove(0);
            st.commands.push(c.clone());
            (201, Some(c))
        }
        ("GET", ["applications", a, "guilds", g, "commands"]) if *a == app => match known(g) {
            Some(g) => (
                200,
                Some(Value::Array(
                    st.guild_commands.get(&g.id).cloned().unwrap_or_default(),
                )),
            ),
            None => unknown_guild(),
        },
        ("PUT", ["applications", a, "guilds", g, "commands"]) if *a == app => match known(g) {
            Some(g) => {
                let cmds = assign_ids(st, body, Some(&g.id.to_string()));
                st.guild_commands.insert(g.id, cmds.clone());
                (200, Some(Value::Array(cmds)))
            }
            None => unknown_guild(),
        },
        ("POST", ["applications", a, "guilds", g, "commands"]) if *a == app => match known(g) {
            Some(g) => {
                let c = assign_ids(st, &json!([body]), Some(&g.id.to_string())).remove(0);
                st.guild_commands.entry(g.id).or_default().push(c.clone());
                (201, Some(c))
            }
            None => unknown_guild(),
        },
        ("POST", ["interactions", id, token, "callback"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            match st.interactions.get(&id) {
                Some(i) if i.token == *token => (204, None),
                _ => (
                    404,
                    Some(json!({"message": "Unknown interaction", "code": 10062})),
                ),
            }
        }
        ("GET" | "PATCH", ["webhooks", a, token, "messages", "@original"])
        | ("POST", ["webhooks", a, token])
            if *a == app && st.interactions.values().any(|i| i.token == *token) =>
        {
            // The answer lives where the command was run.
            let channel = st
                .interactions
                .values()
                .find(|i| i.token == *token)
                .map_or(0, |i| i.channel_id);
            let guild = shared
                .guild_of_channel(channel)
                .unwrap_or_else(|| shared.first_guild())
                .id;
            let id = st.snowflake();
            let content = body["content"].as_str().unwrap_or("");
            let author = payloads::user(cfg.bot_user_id, &cfg.bot_name, true);
            let m = payloads::message(guild, id, channel, &author, true, content);
            (200, Some(m))
        }
        ("POST", ["channels", ch, "messages"]) => {
            let Some((ch, guild)) = ch
                .parse::<u64>()
                .ok()
                .and_then(|c| shared.guild_of_channel(c).map(|g| (c, g.id)))
            else {
                return (
                    404,
                    Some(json!({"message": "Unknown Channel", "code": 10003})),
                );
            };
            let id = st.snowflake();
            let content = body["content"].as_str().unwrap_or("");
            let author = payloads::user(cfg.bot_user_id, &cfg.bot_name, true);
            let m = payloads::message(guild, id, ch, &author, true, content);
            st.bot_messages.push(m.clone());
            st.dispatch_all("MESSAGE_CREATE", &m);
            (200, Some(m))
        }
        ("GET", ["channels", ch]) => match ch
            .parse::<u64>()
            .ok()
            .and_then(|c| payloads::channel(&shared.guilds, c))
        {
            Some(c) => (200, Some(c)),
            None => (
                404,
                Some(json!({"message": "Unknown Channel", "code": 10003})),
            ),
        },
        ("GET", ["guilds", g]) => match known(g) {
            Some(g) => (200, Some(payloads::guild_base(g))),
            None => unknown_guild(),
        },
        ("GET", ["guilds", g, "channels"]) => match known(g) {
            Some(g) => (200, Some(Value::Array(payloads::channels(g)))),
            None => unknown_guild(),
        },
        ("PATCH", ["guilds", g, "members", "@me"]) => {
            let Some(g) = known(g) else {
                return unknown_guild();
            };
            // `nick`: a string sets it, null or "" resets it; absent leaves it as it is.
            if let Some(n) = body.get("nick") {
                let nick = n.as_str().filter(|n| !n.is_empty()).map(str::to_string);
                st.nicks.insert(g.id, nick);
            }
            let nick = st.nicks.get(&g.id).cloned().flatten();
            let (member, update) = payloads::bot_member(cfg, g.id, nick.as_deref());
            st.dispatch_all("GUILD_MEMBER_UPDATE", &update);
            (200, Some(member))
        }
        ("GET", ["guilds", g, "members", id]) if known(g).is_some() => {
            let id: u64 = id.parse().unwrap_or(0);
            if id == cfg.bot_user_id {
                return (200, Some(payloads::member(id, &cfg.bot_name, true)));
            }
            match st.users.get(&id) {
                Some(u) => (200, Some(payloads::member(u.id, &u.name, false))),
                None => (
                    404,
                    Some(json!({"message": "Unknown Member", "code": 10007})),
                ),
            }
        }
        _ => not_found(),
    }
}
