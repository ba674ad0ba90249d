//! Voice gateway over TLS (the version the client asks for with `?v=`; songbird 0.6 asks for 4).

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_websockets::{CloseCode, Limits, Message, ServerBuilder, WebSocketStream};
use tracing::{debug, info, warn};

use crate::config::CryptoMode;
use crate::gateway::{id_of, query_pairs};
use crate::state::{
    RecordedCommand, Shared, VoiceConn, VoiceOut, accept_until_shutdown, redact, shutdown_signal,
};

pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    udp_port: u16,
) {
    let each = shared.clone();
    accept_until_shutdown(listener, &shared, "voice", move |stream| {
        let (shared, acceptor) = (each.clone(), acceptor.clone());
        async move {
            match acceptor.accept(stream).await {
                Ok(tls) => {
                    if let Err(e) = connection(tls, shared, udp_port).await {
                        debug!("voice connection ended: {e}");
                    }
                }
                Err(e) => {
                    warn!("voice TLS handshake failed (does the bot trust the fake CA?): {e}")
                }
            }
        }
    })
    .await;
}

type Ws = WebSocketStream<TlsStream<TcpStream>>;

async fn close(ws: &mut Ws, code: u16) {
    let code = CloseCode::try_from(code).unwrap_or(CloseCode::NORMAL_CLOSURE);
    let _ = ws.send(Message::close(Some(code), "")).await;
    let _ = ws.close().await;
}

async fn connection(
    tls: TlsStream<TcpStream>,
    shared: Arc<Shared>,
    udp_port: u16,
) -> Result<(), tokio_websockets::Error> {
    let (req, mut ws) = ServerBuilder::new()
        .limits(Limits::default().max_payload_len(Some(1 << 20)))
        .accept(tls)
        .await?;
    let version: u8 = query_pairs(req.uri().query())
        .iter()
        .find(|(k, _)| k == "v")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(4);
    let (tx, mut rx) = mpsc::unbounded_channel::<VoiceOut>();
    let conn_id = shared.update(|st| st.conn_id());
    info!(conn_id, version, "voice gateway connection");
    let interval = shared.cfg.voice_heartbeat_interval.as_millis() as f64;
    let mut hello = json!({"op": 8, "d": {"heartbeat_interval": interval}});
    if version >= 8 {
        hello["d"]["v"] = version.into();
    }
    ws.send(Message::text(hello.to_string())).await?;
    let shutdown = shutdown_signal(shared.shutdown_rx());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => { close(&mut ws, 1001).await; break; }
            out = rx.recv() => match out {
                Some(VoiceOut::Text(t)) => ws.send(Message::text(t)).await?,
                Some(VoiceOut::Binary(b)) => ws.send(Message::binary(b)).await?,
                Some(VoiceOut::Close(code)) => { close(&mut ws, code).await; break; }
                None => break,
            },
            msg = ws.next() => {
                let Some(msg) = msg else { break };
                let msg = msg?;
                if msg.is_close() { break; }
                if msg.is_binary() {
                    // DAVE binary opcodes (26 key package, 28 commit and welcome).
                    let data: Vec<u8> = msg.as_payload().to_vec();
                    shared.update(|st| {
                        st.voice_log.push(RecordedCommand { op: u64::from(data.first().copied().unwrap_or(0)), d: Value::Null });
                        if let Some(channel) = st.voice_by_ws(conn_id).map(|v| v.channel_id) {
                            let now = tokio::time::Instant::now();
                            let out = st.dave.bot_binary(channel, &data, now);
                            st.dave_deliver(out.into_iter().map(|m| (channel, m)).collect());
                            st.dave_pump(now);
                        }
                    });
                    continue;
                }
                let Some(text) = msg.as_text() else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text) else {
                    close(&mut ws, 4002).await;
                    break;
                };
                match handle(&shared, &v, conn_id, version, &tx, udp_port) {
                    Ok(replies) => {
                        for r in replies { ws.send(Message::text(r)).await?; }
                    }
                    Err(code) => { close(&mut ws, code).await; break; }
                }
            }
        }
    }
    shared.update(|st| {
        if let Some(v) = st.voice_by_ws(conn_id) {
            v.ws = None;
        }
    });
    Ok(())
}

/// Handles one voice payload: `Ok(replies)` or `Err(close code)`.
fn handle(
    shared: &Shared,
    v: &Value,
    conn_id: u64,
    version: u8,
    tx: &mpsc::UnboundedSender<VoiceOut>,
    udp_port: u16,
) -> Result<Vec<String>, u16> {
    let op = v["op"].as_u64().unwrap_or(u64::MAX);
    let d = &v["d"];
    let cfg = &shared.cfg;
    shared.update(|st| {
        st.voice_log.push(RecordedCommand {
            op,
            d: redact(d.clone()),
        });
        let seq = |conn: &mut VoiceConn| {
            conn.seq += 1;
            conn.seq
        };
        let msg = |conn: Option<&mut VoiceConn>, op: u8, d: Value| {
            let mut m = json!({"op": op, "d": d});
            if version >= 8
                && let Some(c) = conn
            {
                m["seq"] = seq(c).into();
            }
            m.to_string()
        };
        match op {
            0 => {
                // The voice server serves one guild per connection: `server_id` is its id.
                let guild = id_of(&d["server_id"]).unwrap_or(0);
                let Some(bv) = st.bot_voice.get(&guild) else {
                    warn!(guild, "voice Identify while the bot is not in a voice channel of that guild");
                    return Err(4006);
                };
                let ok = id_of(&d["user_id"]) == Some(cfg.bot_user_id)
                    && d["session_id"].as_str() == Some(bv.session_id.as_str())
                    && d["token"].as_str() == Some(bv.token.as_str());
                if !ok {
                    warn!("voice Identify does not match the voice state/server update; closing 4004");
                    return Err(4004);
                }
                let (session_id, token, channel_id) = (bv.session_id.clone(), bv.token.clone(), bv.channel_id);
                let ssrc = st.ssrc();
                if let Some(old) = st.voice.remove(&guild) {
                    st.dave.bot_gone(old.channel_id);
                    if let Some((_, otx)) = old.ws {
                        let _ = otx.send(VoiceOut::Close(4006));
                    }
                }
                let mut conn = VoiceConn {
                    session_id,
                    token,
                    channel_id,
                    ssrc,
                    version,
                    seq: 0,
                    mode: None,
                    key: None,
                    peer: None,
                    nonce: 0,
                    ws: Some((conn_id, tx.clone())),
                    backlog: Vec::new(),
                };
                let modes: Vec<&str> = cfg.crypto_modes.iter().map(|m| m.as_str()).collect();
                let ready = msg(
                    Some(&mut conn),
                    2,
                    json!({"ssrc": ssrc, "ip": "127.0.0.1", "port": udp_port, "modes": modes, "heartbeat_interval": 1, "experiments": []}),
                );
                st.voice.insert(guild, conn);
                st.stats.voice_identifies += 1;
                info!(guild, ssrc, "voice identified");
                Ok(vec![ready])
            }
            1 => {
                let Some(conn) = st.voice_by_ws(conn_id) else {
                    return Err(4003);
                };
                let mode_name = d["data"]["mode"].as_str().unwrap_or("");
                let Some(mode) = CryptoMode::from_name(mode_name).filter(|m| cfg.crypto_modes.contains(m)) else {
                    warn!(mode_name, "unknown encryption mode; closing 4016");
                    return Err(4016);
                };
                let addr = d["data"]["address"].as_str().and_then(|a| a.parse().ok());
                let port = d["data"]["port"].as_u64().and_then(|p| u16::try_from(p).ok());
                let (Some(addr), Some(port)) = (addr, port) else {
                    return Err(4002);
                };
                let key: [u8; 32] = rand::random();
                conn.mode = Some(mode);
                conn.key = Some(key);
                conn.peer = Some(SocketAddr::new(addr, port));
                conn.nonce = 0;
                let channel = conn.channel_id;
                let dave_version = st.dave.version_for(channel);
                let Some(conn) = st.voice_by_ws(conn_id) else {
                    return Err(4003);
                };
                let desc = msg(
                    Some(conn),
                    4,
                    json!({
                        "mode": mode.as_str(),
                        "secret_key": key.to_vec(),
                        "dave_protocol_version": dave_version,
                        "audio_codec": "opus",
                        "video_codec": "H264",
                        "media_session_id": "fake-media-session",
                    }),
                );
                let present: Vec<String> = st
                    .users
                    .values()
                    .filter(|u| u.voice_channel == Some(channel))
                    .map(|u| u.id.to_string())
                    .collect();
                let mut out = vec![desc];
                if !present.is_empty()
                    && let Some(conn) = st.voice_by_ws(conn_id)
                {
                    out.push(msg(Some(conn), 11, json!({"user_ids": present})));
                }
                if dave_version != 0 {
                    // The external sender goes after Session Description, which makes the
                    // bot's DAVE session; it answers with its key package (op 26).
                    let es = st.dave.external_sender_frame();
                    let _ = tx.send(VoiceOut::Binary(es));
                }
                info!(mode = mode.as_str(), dave_version, "voice session description sent");
                Ok(out)
            }
            3 => {
                st.stats.voice_heartbeats += 1;
                let ack = if d.is_object() {
                    json!({"t": d["t"].clone()})
                } else {
                    d.clone()
                };
                Ok(vec![json!({"op": 6, "d": ack}).to_string()])
            }
            7 => {
                let guild = id_of(&d["server_id"]).unwrap_or(0);
                let ok = st.voice.get(&guild).is_some_and(|c| {
                    d["session_id"].as_str() == Some(c.session_id.as_str())
                        && d["token"].as_str() == Some(c.token.as_str())
                });
                let Some(conn) = st.voice.get_mut(&guild).filter(|_| ok) else {
                    warn!("voice Resume for an unknown session; closing 4006");
                    return Err(4006);
                };
                if let Some((_, old)) = conn.ws.replace((conn_id, tx.clone())) {
                    let _ = old.send(VoiceOut::Close(4006));
                }
                conn.version = version;
                st.stats.voice_resumes += 1;
                info!(guild, "voice resumed");
                // DAVE messages that waited for the socket follow Resumed (op 9).
                let backlog = std::mem::take(&mut conn.backlog);
                for out in backlog {
                    let _ = tx.send(out);
                }
                Ok(vec![json!({"op": 9, "d": null}).to_string()])
            }
            23 | 31 => {
                let tid = d["transition_id"].as_u64().and_then(|t| u16::try_from(t).ok()).unwrap_or(0);
                if let Some(channel) = st.voice_by_ws(conn_id).map(|v| v.channel_id) {
                    if op == 23 {
                        st.dave.bot_ready(channel, tid);
                    } else {
                        st.dave.bot_invalid(channel, tid);
                    }
                    st.dave_pump(tokio::time::Instant::now());
                }
                Ok(vec![])
            }
            _ => Ok(vec![]),
        }
    })
}
