//! Runs the fake Discord standalone, prints how to point a bot at it, and plays a scenario.
//!
//! `cargo run -p nina-fake-discord --example fake-discord -- --scenario scenario.json`

use std::path::PathBuf;

use clap::Parser;
use nina_fake_discord::scenario::Scenario;
use nina_fake_discord::{FakeDiscord, GuildSpec};

/// A Discord on loopback for testing voice bots.
#[derive(Parser)]
struct Args {
    /// JSON scenario to play once the fake is up (see the `scenario` module docs).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Bot token the bot must present.
    #[arg(long, default_value = "fake-bot-token")]
    token: String,
    /// Guilds the bot is in besides the first one (ids from `GuildSpec::numbered`).
    #[arg(long, default_value_t = 0)]
    extra_guilds: u64,
    /// Exit when the scenario is over instead of serving until Ctrl-C.
    #[arg(long)]
    exit_after_scenario: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut builder = FakeDiscord::builder().token(args.token);
    for n in 1..=args.extra_guilds {
        builder = builder.extra_guild(GuildSpec::numbered(n));
    }
    let fake = builder.start().await?;
    let cfg = fake.config();
    println!(
        "gateway (twilight-gateway proxy_url): {}",
        fake.gateway_url()
    );
    println!(
        "REST (twilight-http proxy, use_http=true): {}",
        fake.http_proxy()
    );
    println!("voice endpoint (TLS): {}", fake.voice_endpoint());
    println!(
        "run the bot with: SSL_CERT_FILE={}",
        fake.ca_cert_path().display()
    );
    println!("bot user {}", cfg.bot_user_id);
    for g in cfg.guilds() {
        println!(
            "guild {} {:?} text {:?} voice {:?}",
            g.id, g.name, g.text_channels, g.voice_channels
        );
    }
    if let Some(path) = args.scenario {
        let scenario = Scenario::from_json(&std::fs::read_to_string(&path)?)?;
        let reports = scenario.run(&fake.control(), cfg).await?;
        for r in reports {
            println!("{}", serde_json::to_string(&r)?);
        }
        if args.exit_after_scenario {
            return Ok(());
        }
    }
    tokio::signal::ctrl_c().await?;
    fake.shutdown().await;
    Ok(())
}
