//! Where models are looked for.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::{ModelError, ModelSpec, SETUP_COMMAND, fetch_command, verify};

/// Why a directory is in a [`ModelDir`]'s search list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Given by the caller (`--models DIR`).
    Explicit,
    /// `$NINA_MODELS`.
    Env,
    /// The per-user directory, `${XDG_DATA_HOME:-$HOME/.local/share}/nina/models`, which
    /// `scripts/setup.sh` fills.
    User,
    /// `./models` in the working directory (looked in when it exists).
    WorkingDir,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Explicit => "given",
            Self::Env => "$NINA_MODELS",
            Self::User => "per-user",
            Self::WorkingDir => "./models",
        })
    }
}

/// One directory of a [`ModelDir`]'s search list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The directory.
    pub dir: PathBuf,
    /// Why it is looked in.
    pub origin: Origin,
}

/// Where Nina's models are: an ordered list of directories, looked in one after the other.
///
/// - [`ModelDir::new`]: exactly the directory given (`--models DIR`);
/// - [`ModelDir::discover`]: `$NINA_MODELS` when set (and then only it), otherwise the per-user
///   directory ([`ModelDir::user_dir`]) and then `./models` if it exists.
///
/// The first directory is the [`root`](ModelDir::root), where set-up puts what it fetches. A
/// model is taken from the first directory that holds its file; a missing model's error lists
/// every directory looked in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDir {
    /// Never empty.
    places: Vec<Place>,
}

impl ModelDir {
    /// Environment variable naming the models directory.
    pub const ENV: &'static str = "NINA_MODELS";

    /// Exactly the directory `root` (nothing else is looked in).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            places: vec![Place {
                dir: root.into(),
                origin: Origin::Explicit,
            }],
        }
    }

    /// `dir` when given (`--models`), otherwise [`ModelDir::discover`].
    pub fn from_option(dir: Option<impl Into<PathBuf>>) -> Self {
        dir.map_or_else(Self::discover, Self::new)
    }

    /// The search list from the environment: `$NINA_MODELS` if set, otherwise the per-user
    /// directory and then `./models` if it exists.
    pub fn discover() -> Self {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Self::discover_with(|k| std::env::var_os(k), &cwd)
    }

    /// Same as [`ModelDir::discover`] (kept for callers of the earlier API).
    pub fn from_env() -> Self {
        Self::discover()
    }

    /// [`ModelDir::discover`] with the environment given as a function, from `cwd`.
    pub(crate) fn discover_with(var: impl Fn(&str) -> Option<OsString>, cwd: &Path) -> Self {
        if let Some(dir) = var(Self::ENV).filter(|v| !v.is_empty()) {
            return Self {
                places: vec![Place {
                    dir: cwd.join(dir),
                    origin: Origin::Env,
                }],
            };
        }
        let mut places = Vec::new();
        if let Some(dir) = user_dir_with(&var) {
            places.push(Place {
                dir,
                origin: Origin::User,
            });
        }
        let local = cwd.join("models");
        let same_as_user = |p: &Path| {
            places.iter().any(|u: &Place| {
                u.dir == p
                    || matches!(
                        (u.dir.canonicalize(), p.canonicalize()),
                        (Ok(a), Ok(b)) if a == b
                    )
            })
        };
        if (local.is_dir() && !same_as_user(&local)) || places.is_empty() {
            places.push(Place {
                dir: local,
                origin: Origin::WorkingDir,
            });
        }
        Self { places }
    }

    /// The per-user models directory, `${XDG_DATA_HOME:-$HOME/.local/share}/nina/models` (a
    /// relative `XDG_DATA_HOME` is ignored, as the XDG specification says). `None` without a home.
    pub fn user_dir() -> Option<PathBuf> {
        user_dir_with(|k| std::env::var_os(k))
    }

    /// The directory set-up writes to, and the first one looked in.
    pub fn root(&self) -> &Path {
        // `places` is never empty; the fallback only satisfies the type.
        self.places.first().map_or(Path::new("models"), |p| &p.dir)
    }

    /// Every directory looked in, in order.
    pub fn places(&self) -> &[Place] {
        &self.places
    }

    /// Where set-up puts a pinned model: under [`ModelDir::root`] (whether or not it is there).
    pub fn path_of(&self, spec: &ModelSpec) -> PathBuf {
        self.root().join(spec.file)
    }

    /// The first place holding `spec`'s file, if any (the file is not checked).
    pub fn find(&self, spec: &ModelSpec) -> Option<PathBuf> {
        self.places
            .iter()
            .map(|p| p.dir.join(spec.file))
            .find(|p| p.exists())
    }

    /// The error for a model found nowhere: every place looked in, and the command that fixes it.
    pub fn missing(&self, spec: &ModelSpec) -> ModelError {
        let fetch = fetch_command(self.root(), spec.id);
        let fix = match self.places.first().map(|p| p.origin) {
            Some(Origin::User | Origin::WorkingDir) => {
                format!("run {SETUP_COMMAND} in the Nina repository (or `{fetch}`)")
            }
            _ => format!("run `{fetch}` in the Nina repository"),
        };
        ModelError::Missing {
            path: self.path_of(spec),
            looked_in: self.places.iter().map(|p| p.dir.clone()).collect(),
            fix,
        }
    }

    /// The path of a pinned model, checked: present, of the pinned size and with the pinned
    /// sha256. The digest is taken from the file's stamp when the file is unchanged since it was
    /// last verified ([`verify::check_file`]), so this is cheap on every start; a changed or
    /// unstamped file is hashed once and refused on a mismatch.
    pub fn require(&self, spec: &ModelSpec) -> Result<PathBuf, ModelError> {
        let path = self.find(spec).ok_or_else(|| self.missing(spec))?;
        verify::check_file(&path, spec.sha256, Some(spec.bytes))?;
        Ok(path)
    }

    /// Like [`ModelDir::require`], but always hashes the whole file (and re-stamps it).
    pub fn verify(&self, spec: &ModelSpec) -> Result<PathBuf, ModelError> {
        let path = self.find(spec).ok_or_else(|| self.missing(spec))?;
        verify::check_size(&path, Some(spec.bytes))?;
        verify::verify_sha256(&path, spec.sha256)?;
        Ok(path)
    }
}

fn user_dir_with(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let data = var("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            var("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".local/share"))
        })?;
    Some(data.join("nina/models"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn lookup_order_is_env_then_user_then_working_dir() {
        let t = tempfile::tempdir().unwrap();
        let (home, cwd, xdg) = (
            t.path().join("home"),
            t.path().join("work"),
            t.path().join("xdg"),
        );
        std::fs::create_dir_all(&cwd).unwrap();

        // $NINA_MODELS wins, and is the only place.
        let m = ModelDir::discover_with(
            env(&[("NINA_MODELS", Path::new("m")), ("HOME", &home)]),
            &cwd,
        );
        assert_eq!(m.places().len(), 1);
        assert_eq!(m.root(), cwd.join("m"));
        assert_eq!(m.places()[0].origin, Origin::Env);

        // Per-user: XDG_DATA_HOME, else HOME/.local/share; ./models only when it exists.
        let m = ModelDir::discover_with(env(&[("HOME", &home)]), &cwd);
        assert_eq!(m.root(), home.join(".local/share/nina/models"));
        assert_eq!(m.places().len(), 1);
        std::fs::create_dir(cwd.join("models")).unwrap();
        let m = ModelDir::discover_with(env(&[("HOME", &home), ("XDG_DATA_HOME", &xdg)]), &cwd);
        let dirs: Vec<_> = m
            .places()
            .iter()
            .map(|p| (p.dir.clone(), p.origin))
            .collect();
        assert_eq!(
            dirs,
            [
                (xdg.join("nina/models"), Origin::User),
                (cwd.join("models"), Origin::WorkingDir)
            ]
        );
        // A relative XDG_DATA_HOME is ignored.
        let m = ModelDir::discover_with(
            env(&[("HOME", &home), ("XDG_DATA_HOME", Path::new("rel"))]),
            &cwd,
        );
        assert_eq!(m.root(), home.join(".local/share/nina/models"));
        // No home at all: ./models.
        let m = ModelDir::discover_with(env(&[]), &cwd);
        assert_eq!(m.root(), cwd.join("models"));
    }

    #[test]
    fn a_repository_link_to_the_user_dir_is_looked_in_once() {
        let t = tempfile::tempdir().unwrap();
        let (home, cwd) = (t.path().join("home"), t.path().join("repo"));
        let user = home.join(".local/share/nina/models");
        std::fs::create_dir_all(&user).unwrap();
        std::fs::create_dir_all(&cwd).unwrap();
        std::os::unix::fs::symlink(&user, cwd.join("models")).unwrap();
        let m = ModelDir::discover_with(env(&[("HOME", &home)]), &cwd);
        assert_eq!(m.places().len(), 1, "{m:?}");
    }

    #[test]
    fn models_are_found_in_the_first_place_holding_them_and_missing_ones_list_every_place() {
        let t = tempfile::tempdir().unwrap();
        let (home, cwd) = (t.path().join("home"), t.path().join("work"));
        std::fs::create_dir_all(cwd.join("models")).unwrap();
        let m = ModelDir::discover_with(env(&[("HOME", &home)]), &cwd);
        let spec = &catalog::SILERO_VAD;
        let err = m.require(spec).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ModelError::Missing { .. }), "{text}");
        assert!(
            text.contains(&home.join(".local/share/nina/models").display().to_string()),
            "{text}"
        );
        assert!(
            text.contains(&cwd.join("models").display().to_string()),
            "{text}"
        );
        assert!(text.contains("silero_vad.onnx"), "{text}");
        assert!(text.contains(SETUP_COMMAND), "{text}");
        assert!(
            text.contains("cargo run -p nina-model-setup -- --models"),
            "{text}"
        );

        std::fs::write(cwd.join("models").join(spec.file), b"x").unwrap();
        assert_eq!(m.find(spec), Some(cwd.join("models").join(spec.file)));
        // Found, but damaged: refused, not skipped over.
        assert!(matches!(m.require(spec), Err(ModelError::Invalid { .. })));
    }

    #[test]
    fn an_explicit_dir_is_the_only_place_and_its_fix_names_it() {
        let t = tempfile::tempdir().unwrap();
        let m = ModelDir::new(t.path());
        let text = m.require(&catalog::WHISPER_BASE).unwrap_err().to_string();
        assert!(
            text.contains(&format!(
                "--models {} fetch whisper-base",
                t.path().display()
            )),
            "{text}"
        );
        assert_eq!(ModelDir::from_option(Some(t.path())), m);
    }
}
