//! `reprocess serve`: the operators' web page over a data directory (nina-web), with erasure
//! through `reprocess forget`'s code; and `reprocess peaks`: waveform peaks for sessions that
//! lack them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use nina_store::{Store, StoreError};

use crate::UsageError;

/// Erasure for the web page: `reprocess forget`.
struct Erase;

impl nina_web::Forget for Erase {
    fn forget(&self, data: &Path, user: u64, guild: Option<u64>) -> Result<String, String> {
        match crate::erase::forget(data, user, guild) {
            Ok(()) => Ok(format!(
                "user {user} erased from every session{}, voiceprint file and the index",
                guild.map(|g| format!(" of guild {g}")).unwrap_or_default()
            )),
            Err(e) => Err(format!("{e:#}")),
        }
    }
}

/// `reprocess serve DATA --listen ADDR [--token-file FILE]`.
pub fn serve(data: &Path, listen: SocketAddr, token_file: Option<&Path>) -> anyhow::Result<()> {
    if !data.is_dir() {
        return Err(UsageError(format!("{} is not a directory", data.display())).into());
    }
    let token = match token_file {
        Some(f) => Some(
            nina_web::read_token(f)
                .with_context(|| format!("reading the token file {}", f.display()))?,
        ),
        None => None,
    };
    // The index first: the pages read it.
    let mut index = nina_index::Index::open(data)
        .with_context(|| format!("opening the index of {}", data.display()))?;
    let r = index.sync(&mut |_, _| {}).context("updating the index")?;
    drop(index);
    eprintln!(
        "index: {} session(s) indexed, {} unchanged, {} removed",
        r.indexed, r.unchanged, r.removed
    );
    let config = nina_web::WebConfig {
        data: data.to_path_buf(),
        listen,
        token: token.clone(),
    };
    let web = nina_web::Web::new(config)
        .map_err(|e| UsageError(e.to_string()))?
        .with_forget(Arc::new(Erase));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let bound = web.bind().await?;
        let addr = bound.local_addr();
        if token.is_some() {
            eprintln!(
                "serving {} on http://{addr}/ (open /login?token=… first)",
                data.display()
            );
        } else {
            eprintln!("serving {} on http://{addr}/", data.display());
        }
        bound
            .serve(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })
    .context("serving")?;
    Ok(())
}

/// `reprocess peaks DATA`: writes `peaks/<user>.dat` for every user of every session that
/// lacks them (from the utterance WAVs). Sessions in use are left for a later run (exit 7).
pub fn peaks(data: &Path) -> anyhow::Result<()> {
    if !data.is_dir() {
        return Err(UsageError(format!("{} is not a directory", data.display())).into());
    }
    let (mut sessions, mut users, mut busy) = (0, 0, 0);
    for dir in Store::new(data).sessions().context("listing sessions")? {
        let s = dir
            .load()
            .with_context(|| format!("reading {}", dir.root().display()))?;
        if nina_store::peaks::missing(&dir, &s).is_empty() {
            continue;
        }
        let (_lock, s) = match dir.open() {
            Ok(x) => x,
            Err(StoreError::Locked(_)) => {
                eprintln!("in use, not changed: {}", dir.root().display());
                busy += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let written = nina_store::peaks::write_missing(&dir, &s)
            .with_context(|| format!("peaks of {}", dir.root().display()))?;
        if !written.is_empty() {
            println!(
                "{}: peaks of {} user(s)",
                dir.root().display(),
                written.len()
            );
            sessions += 1;
            users += written.len();
        }
    }
    eprintln!("peaks written for {users} user(s) in {sessions} session(s)");
    if busy > 0 {
        return Err(crate::Busy(busy).into());
    }
    Ok(())
}
