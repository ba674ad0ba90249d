//! Voiceprints: per guild, an enrolment embedding for each Discord user, accumulated from
//! clean single-voice speech of their own stream, with how much speech it rests on. Kept in
//! `<data>/<guild>/voiceprints.json`, written atomically. An embedding belongs to the model
//! that made it: a user has one print per embedder model, and prints of different models are
//! never compared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// File name of a guild's voiceprints, under `<data>/<guild>/`.
pub const VOICEPRINTS_JSON: &str = "voiceprints.json";
/// File name of the opt-out list, under `<data>/`: a JSON object from guild id to the user ids
/// who asked not to be recorded there (written by the collector's `/record optout`).
pub const OPTOUT_JSON: &str = "optout.json";
/// Format version of the file.
const VERSION: u32 = 1;

/// One user's print for one embedder model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoicePrint {
    /// Discord user id.
    pub user_id: u64,
    /// Embedder model that made the embeddings (catalogue id, e.g. `campplus`).
    pub model: String,
    /// Sum of the unit-length embeddings enrolled, each weighted by its seconds of speech.
    pub sum: Vec<f32>,
    /// Seconds of speech enrolled.
    pub seconds: f64,
    /// Embeddings enrolled.
    pub count: u32,
    /// When it last changed (Unix ms).
    pub updated_ms: i64,
    /// Where the enrolled speech came from (session ids), so a session re-run enrols once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

impl VoicePrint {
    /// The print as one unit-length embedding (zeros if nothing was enrolled).
    pub fn embedding(&self) -> Vec<f32> {
        unit(&self.sum)
    }
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 && n.is_finite() {
        v.iter().map(|x| x / n).collect()
    } else {
        vec![0.0; v.len()]
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    prints: Vec<VoicePrint>,
}

/// Why an enrolment was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnrolError {
    /// The embedding is empty, holds a non-finite value or is all zeros.
    #[error("unusable embedding (empty, zero or not finite)")]
    BadEmbedding,
    /// Its size differs from the user's print of the same model.
    #[error("embedding of {got} values; the print has {want}")]
    WrongSize {
        /// Size of the print.
        want: usize,
        /// Size given.
        got: usize,
    },
    /// Seconds not finite or not above 0.
    #[error("seconds of speech must be above 0")]
    BadSeconds,
}

/// The users of `guild` who opted out, from `<data>/optout.json` (none when it does not exist):
/// they are never enrolled nor named.
pub fn opted_out(data: &Path, guild: u64) -> Result<std::collections::BTreeSet<u64>, StoreError> {
    let path = data.join(OPTOUT_JSON);
    match std::fs::read(&path) {
        Ok(b) => {
            let mut all: BTreeMap<u64, std::collections::BTreeSet<u64>> =
                serde_json::from_slice(&b).map_err(|e| StoreError::Invalid {
                    path: path.clone(),
                    field: format!("line {} column {}", e.line(), e.column()),
                    reason: e.to_string(),
                })?;
            Ok(all.remove(&guild).unwrap_or_default())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// A guild's voiceprints, loaded from and saved to its file.
#[derive(Debug)]
pub struct VoicePrints {
    path: PathBuf,
    /// By `(user, model)`.
    prints: BTreeMap<(u64, String), VoicePrint>,
}

impl VoicePrints {
    /// The file of `guild` under data directory `data`.
    pub fn path(data: &Path, guild: u64) -> PathBuf {
        data.join(guild.to_string()).join(VOICEPRINTS_JSON)
    }

    /// Loads `guild`'s prints (none when the file does not exist).
    pub fn load(data: &Path, guild: u64) -> Result<Self, StoreError> {
        let path = Self::path(data, guild);
        let prints = match std::fs::read(&path) {
            Ok(b) => {
                let f: File = serde_json::from_slice(&b).map_err(|e| StoreError::Invalid {
                    path: path.clone(),
                    field: format!("line {} column {}", e.line(), e.column()),
                    reason: e.to_string(),
                })?;
                if f.version > VERSION {
                    return Err(StoreError::NewerVersion {
                        path,
                        found: u64::from(f.version),
                    });
                }
                f.prints
                    .into_iter()
                    .map(|p| ((p.user_id, p.model.clone()), p))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        Ok(Self { path, prints })
    }

    /// Writes the prints (atomically); removes the file when none are left.
    pub fn save(&self) -> Result<(), StoreError> {
        if self.prints.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(StoreError::io(&self.path, e))
                }
                _ => Ok(()),
            };
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        }
        let f = File {
            version: VERSION,
            prints: self.prints.values().cloned().collect(),
        };
        let json = serde_json::to_vec_pretty(&f).map_err(|e| StoreError::Invalid {
            path: self.path.clone(),
            field: String::new(),
            reason: e.to_string(),
        })?;
        nina_fs::write(&self.path, &json)?;
        Ok(())
    }

    /// Adds `seconds` of `user`'s speech, embedded by `model`, to their print.
    pub fn enrol(
        &mut self,
        user: u64,
        model: &str,
        embedding: &[f32],
        seconds: f64,
        now_ms: i64,
    ) -> Result<&VoicePrint, EnrolError> {
        self.add(user, model, embedding, seconds, now_ms, None)
    }

    /// Like [`Self::enrol`], with speech from `source` (a session id): returns `Ok(false)` and
    /// changes nothing when the print already holds speech from `source`.
    pub fn enrol_from(
        &mut self,
        user: u64,
        model: &str,
        embedding: &[f32],
        seconds: f64,
        now_ms: i64,
        source: &str,
    ) -> Result<bool, EnrolError> {
        if self
            .get(user, model)
            .is_some_and(|p| p.sources.iter().any(|s| s == source))
        {
            return Ok(false);
        }
        self.add(user, model, embedding, seconds, now_ms, Some(source))?;
        Ok(true)
    }

    fn add(
        &mut self,
        user: u64,
        model: &str,
        embedding: &[f32],
        seconds: f64,
        now_ms: i64,
        source: Option<&str>,
    ) -> Result<&VoicePrint, EnrolError> {
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(EnrolError::BadSeconds);
        }
        if embedding.is_empty() || embedding.iter().any(|x| !x.is_finite()) {
            return Err(EnrolError::BadEmbedding);
        }
        let e = unit(embedding);
        if e.iter().all(|x| *x == 0.0) {
            return Err(EnrolError::BadEmbedding);
        }
        let p = self
            .prints
            .entry((user, model.to_string()))
            .or_insert_with(|| VoicePrint {
                user_id: user,
                model: model.to_string(),
                sum: vec![0.0; e.len()],
                seconds: 0.0,
                count: 0,
                updated_ms: now_ms,
                sources: Vec::new(),
            });
        if p.sum.len() != e.len() {
            return Err(EnrolError::WrongSize {
                want: p.sum.len(),
                got: e.len(),
            });
        }
        let w = seconds as f32;
        for (s, x) in p.sum.iter_mut().zip(&e) {
            *s += w * x;
        }
        p.seconds += seconds;
        p.count += 1;
        p.updated_ms = now_ms;
        if let Some(src) = source {
            p.sources.push(src.to_string());
        }
        Ok(p)
    }

    /// `user`'s print made by `model`.
    pub fn get(&self, user: u64, model: &str) -> Option<&VoicePrint> {
        self.prints.get(&(user, model.to_string()))
    }

    /// Every print made by `model`.
    pub fn of_model<'a>(&'a self, model: &'a str) -> impl Iterator<Item = &'a VoicePrint> + 'a {
        self.prints.values().filter(move |p| p.model == model)
    }

    /// Every print.
    pub fn all(&self) -> impl Iterator<Item = &VoicePrint> {
        self.prints.values()
    }

    /// Forgets every print of `user`; returns how many there were. Call [`Self::save`] after.
    pub fn forget(&mut self, user: u64) -> usize {
        let before = self.prints.len();
        self.prints.retain(|(u, _), _| *u != user);
        before - self.prints.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_accumulate_by_seconds_persist_and_are_forgotten() {
        let d = tempfile::tempdir().unwrap();
        let mut v = VoicePrints::load(d.path(), 5).unwrap();
        assert_eq!(v.all().count(), 0);
        v.enrol(7, "campplus", &[2.0, 0.0], 3.0, 1).unwrap();
        v.enrol(7, "campplus", &[0.0, 5.0], 1.0, 2).unwrap();
        v.enrol(8, "campplus", &[1.0, 1.0], 1.0, 2).unwrap();
        v.enrol(7, "dvector", &[1.0, 0.0, 0.0], 1.0, 2).unwrap();
        let p = v.get(7, "campplus").unwrap();
        assert_eq!((p.seconds, p.count), (4.0, 2));
        // Weighted by seconds: 3 parts x, 1 part y.
        let e = p.embedding();
        assert!((e[0] / e[1] - 3.0).abs() < 1e-5, "{e:?}");
        v.save().unwrap();
        let again = VoicePrints::load(d.path(), 5).unwrap();
        assert_eq!(again.get(7, "campplus"), v.get(7, "campplus"));
        assert_eq!(again.of_model("campplus").count(), 2);
        // Another guild is apart.
        assert_eq!(VoicePrints::load(d.path(), 6).unwrap().all().count(), 0);
        // Forgetting takes every model's print of the user.
        let mut v = again;
        assert_eq!(v.forget(7), 2);
        assert_eq!(v.forget(7), 0);
        v.save().unwrap();
        let left = VoicePrints::load(d.path(), 5).unwrap();
        assert!(left.get(7, "campplus").is_none() && left.get(8, "campplus").is_some());
        let mut left = left;
        left.forget(8);
        left.save().unwrap();
        assert!(
            !VoicePrints::path(d.path(), 5).exists(),
            "no file once empty"
        );
    }

    #[test]
    fn the_opt_out_list_is_read_per_guild() {
        let d = tempfile::tempdir().unwrap();
        assert!(opted_out(d.path(), 1).unwrap().is_empty());
        std::fs::write(d.path().join(OPTOUT_JSON), br#"{"1": [7, 8], "2": [9]}"#).unwrap();
        assert_eq!(
            opted_out(d.path(), 1)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            [7, 8]
        );
        assert!(opted_out(d.path(), 3).unwrap().is_empty());
        std::fs::write(d.path().join(OPTOUT_JSON), b"[").unwrap();
        assert!(opted_out(d.path(), 1).is_err());
    }

    #[test]
    fn a_source_is_enrolled_once() {
        let d = tempfile::tempdir().unwrap();
        let mut v = VoicePrints::load(d.path(), 1).unwrap();
        assert!(v.enrol_from(7, "m", &[1.0, 0.0], 2.0, 0, "s1").unwrap());
        assert!(!v.enrol_from(7, "m", &[0.0, 1.0], 2.0, 0, "s1").unwrap());
        assert!(v.enrol_from(7, "m", &[0.0, 1.0], 2.0, 0, "s2").unwrap());
        // Another model's print of the same user takes the same source.
        assert!(v.enrol_from(7, "other", &[1.0], 2.0, 0, "s1").unwrap());
        let p = v.get(7, "m").unwrap();
        assert_eq!((p.seconds, p.count, p.sources.len()), (4.0, 2, 2));
        v.save().unwrap();
        let again = VoicePrints::load(d.path(), 1).unwrap();
        assert_eq!(again.get(7, "m").unwrap().sources, ["s1", "s2"]);
    }

    #[test]
    fn bad_enrolments_and_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut v = VoicePrints::load(d.path(), 1).unwrap();
        assert_eq!(
            v.enrol(1, "m", &[], 1.0, 0).unwrap_err(),
            EnrolError::BadEmbedding
        );
        assert_eq!(
            v.enrol(1, "m", &[0.0, 0.0], 1.0, 0).unwrap_err(),
            EnrolError::BadEmbedding
        );
        assert_eq!(
            v.enrol(1, "m", &[f32::NAN, 1.0], 1.0, 0).unwrap_err(),
            EnrolError::BadEmbedding
        );
        assert_eq!(
            v.enrol(1, "m", &[1.0], f64::NAN, 0).unwrap_err(),
            EnrolError::BadSeconds
        );
        v.enrol(1, "m", &[1.0, 0.0], 1.0, 0).unwrap();
        assert!(matches!(
            v.enrol(1, "m", &[1.0, 0.0, 0.0], 1.0, 0),
            Err(EnrolError::WrongSize { want: 2, got: 3 })
        ));
        let path = VoicePrints::path(d.path(), 2);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(matches!(
            VoicePrints::load(d.path(), 2),
            Err(StoreError::Invalid { .. })
        ));
        std::fs::write(&path, br#"{"version": 99, "prints": []}"#).unwrap();
        assert!(matches!(
            VoicePrints::load(d.path(), 2),
            Err(StoreError::NewerVersion { .. })
        ));
    }
}
