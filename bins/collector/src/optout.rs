//! Who asked not to be recorded, per guild, persisted in `<data_dir>/optout.json`. Opting out
//! also deletes the user's voiceprints in that guild (`<data_dir>/<guild>/voiceprints.json`);
//! nothing is enrolled for them afterwards, since their audio is dropped as it arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::RwLock;

use anyhow::{Context, Result};

/// The opt-out list.
#[derive(Debug)]
pub struct OptOut {
    path: PathBuf,
    users: RwLock<BTreeMap<u64, BTreeSet<u64>>>,
}

impl OptOut {
    /// Loads the list (empty when the file does not exist).
    pub fn load(path: PathBuf) -> Result<Self> {
        let users = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("{} is damaged", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Self {
            path,
            users: RwLock::new(users),
        })
    }

    /// Whether `user` opted out in `guild`.
    pub fn contains(&self, guild: u64, user: u64) -> bool {
        self.users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&guild)
            .is_some_and(|s| s.contains(&user))
    }

    /// Opts `user` out (`out`) or back in, and saves the list before returning. Opting out
    /// deletes the user's voiceprints in `guild` too.
    pub fn set(&self, guild: u64, user: u64, out: bool) -> Result<()> {
        if out && let Some(data) = self.path.parent() {
            let mut prints = nina_store::VoicePrints::load(data, guild)
                .context("cannot read the voiceprints")?;
            if prints.forget(user) > 0 {
                prints.save().context("cannot delete the voiceprint")?;
                tracing::info!(guild, user, "voiceprint deleted on opt-out");
            }
        }
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        let set = users.entry(guild).or_default();
        if out {
            set.insert(user);
        } else {
            set.remove(&user);
        }
        let json = serde_json::to_vec_pretty(&*users)?;
        nina_fs::write(&self.path, &json)
            .with_context(|| format!("cannot save {}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_outs_persist_per_guild() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("optout.json");
        let o = OptOut::load(p.clone()).unwrap();
        o.set(1, 7, true).unwrap();
        assert!(o.contains(1, 7) && !o.contains(2, 7));
        let o = OptOut::load(p.clone()).unwrap();
        assert!(o.contains(1, 7));
        o.set(1, 7, false).unwrap();
        assert!(!OptOut::load(p).unwrap().contains(1, 7));
    }

    #[test]
    fn opting_out_deletes_the_voiceprint_in_that_guild_only() {
        let d = tempfile::tempdir().unwrap();
        for guild in [1, 2] {
            let mut v = nina_store::VoicePrints::load(d.path(), guild).unwrap();
            v.enrol(7, "campplus", &[1.0, 0.0], 2.0, 0).unwrap();
            v.enrol(8, "campplus", &[0.0, 1.0], 2.0, 0).unwrap();
            v.save().unwrap();
        }
        let o = OptOut::load(d.path().join("optout.json")).unwrap();
        o.set(1, 7, true).unwrap();
        let g1 = nina_store::VoicePrints::load(d.path(), 1).unwrap();
        assert!(g1.get(7, "campplus").is_none() && g1.get(8, "campplus").is_some());
        let g2 = nina_store::VoicePrints::load(d.path(), 2).unwrap();
        assert!(g2.get(7, "campplus").is_some());
    }
}
