//! `collector`: Nina's Discord bot. It joins voice channels, records every participant on their
//! own track, segments and transcribes as they speak, and stores sessions for `reprocess`.
//!
//! ```text
//! collector --config collector.toml          # run the bot (token from DISCORD_TOKEN)
//! collector --config collector.toml --check-config
//! collector --demo                           # a simulated call on a fake Discord, no account
//! ```

mod bot;
mod config;
mod dave;
mod demo;
mod index;
mod optout;
mod recover;
mod session;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use crate::config::Config;

/// Nina's Discord voice collector.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML; see collector.example.toml). Without it, the defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Check the configuration and the token's presence, print a summary, do not connect.
    #[arg(long)]
    check_config: bool,
    /// Record a simulated call: a fake Discord with three people speaking, no account needed.
    #[arg(long)]
    demo: bool,
    /// With --demo: keep the fake call going this many seconds at most.
    #[arg(long, default_value_t = 60)]
    demo_seconds: u64,
    /// With --demo: the Whisper model.
    #[arg(long, default_value = nina_models::catalog::DEFAULT_WHISPER.id)]
    demo_model: String,
}

fn load(cli: &Cli) -> Result<Config> {
    let mut cfg = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default_values(),
    };
    if let Some(d) = &cli.data {
        cfg.data_dir = d.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

fn init_logs(cfg: Option<&Config>) -> Result<()> {
    use tracing_subscriber::prelude::*;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "info,songbird=warn,davey=error,twilight_gateway=warn,twilight_http=warn,ort=warn,whisper_rs=warn".into())
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter());
    let file = match cfg.and_then(|c| c.log_file.clone()) {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot open log_file {}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(f))
                    .with_filter(filter()),
            )
        }
        None => None,
    };
    // DAVE is observed through songbird's and davey's records, whatever the filters above
    // (davey warns once per packet it cannot decrypt: counted, not printed).
    tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .with(nina_capture::dave::layer())
        .init();
    Ok(())
}

fn check(cfg: &Config) -> Result<()> {
    println!("configuration is valid");
    println!("  data_dir: {}", cfg.data_dir.display());
    match cfg.token() {
        Ok((_, from)) => println!("  token: set (from {from})"),
        Err(e) => println!("  token: missing ({e})"),
    }
    println!(
        "  decode: {}, transcribe: {} ({})",
        cfg.capture.decode, cfg.transcribe.enabled, cfg.transcribe.model
    );
    println!(
        "  channels: {} ({})",
        cfg.channels.len(),
        if cfg.follow {
            "follow"
        } else {
            "join at start"
        }
    );
    println!(
        "  commands: slash {}, prefix {}",
        cfg.commands.slash,
        cfg.commands.prefix.as_deref().unwrap_or("off")
    );
    let endpoints = cfg.endpoints();
    if endpoints.gateway.is_some() || endpoints.api.is_some() {
        println!("  discord: overridden endpoints (a stand-in)");
    }
    cfg.token().map(|_| ())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = (|| -> Result<()> {
        if cli.demo {
            init_logs(None)?;
            return demo::run(&cli.data, cli.demo_seconds, &cli.demo_model);
        }
        let cfg = load(&cli)?;
        if cli.check_config {
            return check(&cfg);
        }
        init_logs(Some(&cfg))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(bot::run(cfg))
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}
