//! A minimal bot on `nina-capture` alone: joins a voice channel and writes one WAV per person
//! (16 kHz mono, on the session clock, so the files line up: silence where someone was quiet)
//! until Ctrl-C or SIGTERM.
//!
//! ```text
//! DISCORD_TOKEN=... cargo run -p nina-capture --example record_wavs -- GUILD_ID CHANNEL_ID OUT_DIR
//! ```
//!
//! `NINA_GATEWAY_URL` and `NINA_API` point it at a stand-in Discord instead of the real one.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nina_capture::{
    CaptureEvent, Decode, Discord, DiscordConfig, Endpoints, Token, UserId, VoiceConfig,
};

type Wav = hound::WavWriter<BufWriter<File>>;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [guild, channel, out] = args.as_slice() else {
        anyhow::bail!("usage: record_wavs GUILD_ID CHANNEL_ID OUT_DIR (token in DISCORD_TOKEN)");
    };
    let (guild, channel): (u64, u64) = (guild.parse()?, channel.parse()?);
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out)?;
    let token = std::env::var("DISCORD_TOKEN").context("set DISCORD_TOKEN")?;
    let (discord, _gateway_events) = Discord::connect(DiscordConfig {
        token: Token::new(&token),
        message_content: false,
        endpoints: Endpoints {
            gateway: std::env::var("NINA_GATEWAY_URL").ok(),
            api: std::env::var("NINA_API").ok(),
        },
        voice: VoiceConfig {
            decode: Decode::Mono16k,
            ..VoiceConfig::default()
        },
    })
    .await?;
    let mut rec = discord.record(guild, channel).await?;
    println!("recording");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    // Per person: the file and the next frame it expects.
    let mut wavs: HashMap<UserId, (Wav, u64)> = HashMap::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let ev = tokio::select! {
            ev = rec.next() => ev,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        match ev {
            Some(CaptureEvent::Audio(f)) => {
                let Some(pcm) = f.pcm else { continue };
                let (w, next) = match wavs.entry(f.user) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let path = out.join(format!("{}.wav", f.user.0));
                        e.insert((hound::WavWriter::create(path, spec)?, 0))
                    }
                };
                // Quiet frames are absent from the stream: fill them with silence.
                while *next < f.frame {
                    for _ in 0..320 {
                        w.write_sample(0i16)?;
                    }
                    *next += 1;
                }
                for s in pcm {
                    w.write_sample(s)?;
                }
                *next = f.frame + 1;
            }
            Some(CaptureEvent::Joined { member, .. }) => {
                println!("joined: {} {:?}", member.user.0, member.name);
            }
            Some(CaptureEvent::Left { user, .. }) => println!("left: {}", user.0),
            Some(other) => println!("{other:?}"),
            None => break,
        }
    }
    for (user, (w, _)) in wavs {
        w.finalize()?;
        println!("wrote {}.wav", user.0);
    }
    discord.stop(guild).await?;
    Ok(())
}
