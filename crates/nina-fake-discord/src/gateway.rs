//! Main gateway (API v10, JSON, optional `zlib-stream` transport compression).

use std::sync::Arc;

use flate2::{Compress, Compression, FlushCompress};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_websockets::{CloseCode, Limits, Message, ServerBuilder, WebSocketStream};
use tracing::{debug, info, warn};

use crate::payloads;
use crate::state::{
    BotVoice, GwOut, GwSession, RecordedCommand, Shared, State, accept_until_shutdown, redact,
    shutdown_signal,
};

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let each = shared.clone();
    accept_until_shutdown(listener, &shared, "gateway", move |stream| {
        let shared = each.clone();
        async move {
            if let Err(e) = connection(stream, shared).await {
                debug!("gateway connection ended: {e}");
            }
        }
    })
    .await;
}

/// Splits `a=b&c=d` into pairs.
pub(crate) fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

struct Conn {
    ws: WebSocketStream<TcpStream>,
    zlib: Option<Compress>,
}

impl Conn {
    async fn send(&mut self, text: String) -> Result<(), tokio_websockets::Error> {
        match &mut self.zlib {
            None => self.ws.send(Message::text(text)).await,
            Some(z) => {
                let bytes = zlib_sync(z, text.as_bytes());
                self.ws.send(Message::binary(bytes)).await
            }
        }
    }

    async fn close(&mut self, code: u16) {
        let code = CloseCode::try_from(code).unwrap_or(CloseCode::NORMAL_CLOSURE);
        let _ = self.ws.send(Message::close(Some(code), "")).await;
        let _ = self.ws.close().await;
    }
}

/// Compresses one message onto a shared zlib stream, ending with a sync flush (`00 00 ff ff`).
fn zlib_sync(z: &mut Compress, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + 128);
    let start = z.total_in();
    loop {
        let consumed = (z.total_in() - start) as usize;
        if z.compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
            .is_err()
        {
            break;
        }
        let consumed = (z.total_in() - start) as usize;
        // Room left in `out` means the flush completed.
        if consumed == input.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    out
}

async fn connection(stream: TcpStream, shared: Arc<Shared>) -> Result<(), tokio_websockets::Error> {
    let (req, ws) = ServerBuilder::new()
        .limits(Limits::default().max_payload_len(Some(1 << 20)))
        .accept(stream)
        .await?;
    let q = query_pairs(req.uri().query());
    let get = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let mut conn = Conn { ws, zlib: None };
    if get("encoding").is_some_and(|e| e != "json") {
        conn.close(4002).await;
        return Ok(());
    }
    match get("compress") {
        None => {}
        Some("zlib-stream") => conn.zlib = Some(Compress::new(Compression::default(), true)),
        Some(other) => {
            warn!("unsupported gateway compression {other:?}; closing with 4000");
            conn.close(4000).await;
            return Ok(());
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<GwOut>();
    let conn_id = shared.update(|st| {
        st.stats.gateway_connections += 1;
        st.conn_id()
    });
    info!(conn_id, "main gateway connection");
    let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": shared.cfg.heartbeat_interval.as_millis() as u64}});
    conn.send(hello.to_string()).await?;
    let sd = shared.shutdown_rx();
    let shutdown = shutdown_signal(sd);
    tokio::pin!(shutdown);
    let mut session: Option<String> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => { conn.close(1001).await; break; }
            out = rx.recv() => match out {
                Some(GwOut::Text(t)) => conn.send(t).await?,
                Some(GwOut::Close(code)) => { conn.close(code).await; break; }
                Some(GwOut::Drop) | None => break,
            },
            msg = conn.ws.next() => {
                let Some(msg) = msg else { break };
                let msg = msg?;
                if msg.is_close() { break; }
                let Some(text) = msg.as_text() else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text) else {
                    conn.close(4002).await;
                    break;
                };
                let replies = handle(&shared, &v, conn_id, &tx, &mut session);
                let mut stop = false;
                for r in replies {
                    match r {
                        GwOut::Text(t) => conn.send(t).await?,
                        GwOut::Close(c) => { conn.close(c).await; stop = true; break; }
                        GwOut::Drop => { stop = true; break; }
                    }
                }
                if stop { break; }
            }
        }
    }
    // Detach from the session; it stays resumable.
    shared.update(|st| {
        if let Some(sid) = &session
            && let Some(s) = st.sessions.get_mut(sid)
            && s.conn.as_ref().is_some_and(|(id, _)| *id == conn_id)
        {
            s.conn = None;
        }
    });
    Ok(())
}

fn strip_bot(token: &str) -> &str {
    token.strip_prefix("Bot ").unwrap_or(token)
}

/// Handles one client payload; returns direct replies for this connection.
fn handle(
    shared: &Shared,
    v: &Value,
    conn_id: u64,
    tx: &mpsc::UnboundedSender<GwOut>,
    session: &mut Option<String>,
) -> Vec<GwOut> {
    let op = v["op"].as_u64().unwrap_or(u64::MAX);
    let d = &v["d"];
    let cfg = &shared.cfg;
    shared.update(|st| {
        st.gateway_log.push(RecordedCommand {
            op,
            d: redact(d.clone()),
        });
        match op {
            1 => {
                st.stats.heartbeats += 1;
                vec![GwOut::Text(
                    json!({"op": 11, "s": null, "t": null, "d": null}).to_string(),
                )]
            }
            2 => {
                if strip_bot(d["token"].as_str().unwrap_or("")) != cfg.token {
                    warn!("Identify with a wrong token; closing with 4004");
                    return vec![GwOut::Close(4004)];
                }
                if session.is_some() {
                    return vec![GwOut::Close(4005)];
                }
                let sid = st.hex(16);
                let mut s = GwSession {
                    seq: 0,
                    history: Default::default(),
                    conn: Some((conn_id, tx.clone())),
                    resumable: true,
                };
                s.dispatch(
                    "READY",
                    &payloads::ready(
                        cfg,
                        &shared.guilds,
                        &sid,
                        &shared.gateway_url,
                        d.get("shard"),
                    ),
                );
                for g in &shared.guilds {
                    let guild = payloads::guild_create(cfg, g, st);
                    s.dispatch("GUILD_CREATE", &guild);
                }
                st.sessions.insert(sid.clone(), s);
                st.stats.identifies += 1;
                info!(
                    guilds = shared.guilds.len(),
                    "bot identified; session ready"
                );
                *session = Some(sid);
                vec![]
            }
            6 => {
                let sid = d["session_id"].as_str().unwrap_or("").to_string();
                let from = d["seq"].as_u64().unwrap_or(0);
                let ok_token = strip_bot(d["token"].as_str().unwrap_or("")) == cfg.token;
                match st.sessions.get_mut(&sid) {
                    Some(s) if ok_token && s.resumable => {
                        s.conn = Some((conn_id, tx.clone()));
                        let mut out: Vec<GwOut> = s
                            .history
                            .iter()
                            .filter(|(n, _)| *n > from)
                            .map(|(_, t)| GwOut::Text(t.clone()))
                            .collect();
                        s.seq += 1;
                        let resumed =
                            json!({"op": 0, "s": s.seq, "t": "RESUMED", "d": null}).to_string();
                        s.history.push_back((s.seq, resumed.clone()));
                        out.push(GwOut::Text(resumed));
                        st.stats.resumes += 1;
                        info!("bot resumed its gateway session");
                        *session = Some(sid);
                        out
                    }
                    _ => vec![GwOut::Text(
                        json!({"op": 9, "s": null, "t": null, "d": false}).to_string(),
                    )],
                }
            }
            4 => {
                voice_state_update(shared, st, d);
                vec![]
            }
            8 => {
                // `guild_id` is one id or (for several guilds) an array of ids.
                let asked: Vec<u64> = match &d["guild_id"] {
                    Value::Array(a) => a.iter().filter_map(id_of).collect(),
                    v => id_of(v).into_iter().collect(),
                };
                let mut members = vec![payloads::member(cfg.bot_user_id, &cfg.bot_name, true)];
                members.extend(
                    st.users
                        .values()
                        .map(|u| payloads::member(u.id, &u.name, false)),
                );
                for g in asked {
                    if shared.guild(g).is_none() {
                        warn!(guild = g, "op 8 for an unknown guild ignored");
                        continue;
                    }
                    let chunk = json!({
                        "guild_id": g.to_string(),
                        "members": members,
                        "chunk_index": 0,
                        "chunk_count": 1,
                        "nonce": d.get("nonce").cloned().unwrap_or(Value::Null),
                    });
                    if let Some(s) = session.as_ref().and_then(|sid| st.sessions.get_mut(sid)) {
                        s.dispatch("GUILD_MEMBERS_CHUNK", &chunk);
                    }
                }
                vec![]
            }
            _ => vec![],
        }
    })
}

/// A snowflake sent as a string or a number.
pub(crate) fn id_of(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The bot's op 4: join, move or leave a voice channel of one guild.
fn voice_state_update(shared: &Shared, st: &mut State, d: &Value) {
    let cfg = &shared.cfg;
    let Some(guild) = id_of(&d["guild_id"]).and_then(|g| shared.guild(g)) else {
        warn!("op 4 for an unknown guild ignored");
        return;
    };
    let gid = guild.id;
    let channel = d["channel_id"].as_str().and_then(|c| c.parse::<u64>().ok());
    match channel {
        Some(c) if guild.has_voice_channel(c) => {
            let already = st.bot_voice.get(&gid).is_some_and(|b| b.channel_id == c)
                && st.voice.contains_key(&gid);
            if already {
                let bv = st
                    .bot_voice
                    .get(&gid)
                    .map(|b| b.session_id.clone())
                    .unwrap_or_default();
                let vs =
                    payloads::voice_state(gid, cfg.bot_user_id, &cfg.bot_name, true, Some(c), &bv);
                st.dispatch_all("VOICE_STATE_UPDATE", &vs);
                return;
            }
            let session_id = st.hex(16);
            let token = st.hex(8);
            st.bot_voice.insert(
                gid,
                BotVoice {
                    channel_id: c,
                    session_id: session_id.clone(),
                    token: token.clone(),
                },
            );
            if let Some(v) = st.voice.get_mut(&gid) {
                // Moving: the existing voice connection follows the bot.
                v.channel_id = c;
            }
            let vs = payloads::voice_state(
                gid,
                cfg.bot_user_id,
                &cfg.bot_name,
                true,
                Some(c),
                &session_id,
            );
            st.dispatch_all("VOICE_STATE_UPDATE", &vs);
            let server = json!({
                "token": token,
                "guild_id": gid.to_string(),
                "endpoint": shared.voice_endpoint,
            });
            st.dispatch_all("VOICE_SERVER_UPDATE", &server);
            info!(guild = gid, channel = c, "bot joins voice");
        }
        Some(c) => warn!(
            guild = gid,
            channel = c,
            "op 4 for a voice channel not in that guild ignored"
        ),
        None => bot_leave_voice(shared, st, gid, None),
    }
}

/// Takes the bot out of voice in `guild`: VOICE_STATE_UPDATE with no channel, that guild's
/// voice socket closed with `close`.
pub(crate) fn bot_leave_voice(shared: &Shared, st: &mut State, guild: u64, close: Option<u16>) {
    let cfg = &shared.cfg;
    let sid = st
        .bot_voice
        .remove(&guild)
        .map(|b| b.session_id)
        .unwrap_or_default();
    let vs = payloads::voice_state(guild, cfg.bot_user_id, &cfg.bot_name, true, None, &sid);
    st.dispatch_all("VOICE_STATE_UPDATE", &vs);
    if let Some(v) = st.voice.remove(&guild) {
        st.dave.bot_gone(v.channel_id);
        if let Some((_, tx)) = v.ws {
            let _ = tx.send(crate::state::VoiceOut::Close(close.unwrap_or(4014)));
        }
        st.dave_pump(tokio::time::Instant::now());
    }
    info!(guild, "bot left voice");
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    #[test]
    fn zlib_stream_messages_decode_in_sequence() {
        let mut c = Compress::new(Compression::default(), true);
        let mut d = Decompress::new(true);
        for i in 0..20 {
            let msg = format!("{{\"op\":0,\"s\":{i},\"d\":\"{}\"}}", "x".repeat(i * 100));
            let z = zlib_sync(&mut c, msg.as_bytes());
            assert!(z.ends_with(&[0, 0, 0xff, 0xff]));
            let mut out = Vec::with_capacity(msg.len() + 100);
            d.decompress_vec(&z, &mut out, FlushDecompress::Sync)
                .expect("inflate");
            assert_eq!(String::from_utf8(out).expect("utf8"), msg);
        }
    }

    #[test]
    fn query_parsing() {
        let q = query_pairs(Some("v=10&encoding=json&compress=zlib-stream"));
        assert_eq!(q.len(), 3);
        assert_eq!(q[2], ("compress".to_string(), "zlib-stream".to_string()));
        assert!(query_pairs(None).is_empty());
    }
}
