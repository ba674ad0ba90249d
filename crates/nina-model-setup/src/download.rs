//! Models given by URL (for users with internet): downloaded once with a progress bar, identified
//! by their sha256, and refused before they are renamed into place when they do not match it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use nina_models::verify::{check_file, write_verified};
use nina_models::{ModelDir, ModelError, resolve_whisper};

/// Directory under the models root holding downloads, one directory per sha256.
pub const DOWNLOADS: &str = "downloads";

/// Whether `choice` is a URL (rather than a pinned id or a path).
pub fn is_url(choice: &str) -> bool {
    choice.starts_with("https://") || choice.starts_with("http://")
}

fn check_digest(url: &str, sha256: &str) -> Result<String, ModelError> {
    if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha256.to_ascii_lowercase())
    } else {
        Err(ModelError::Fetch {
            what: format!("download of {url}"),
            reason: format!("`{sha256}` is not a sha256 (64 hexadecimal digits)"),
        })
    }
}

/// Where the file at `url` with digest `sha256` is kept: `<root>/downloads/<sha256>/<name>`,
/// `<name>` being the URL's last path segment (made safe), so files of the same name with other
/// contents, or a pinned model's name, never collide with it.
pub fn download_path(models: &ModelDir, url: &str, sha256: &str) -> Result<PathBuf, ModelError> {
    let sha = check_digest(url, sha256)?;
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let name: String = path
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    let name = name.trim_start_matches('.');
    let name = if name.is_empty() { "model.bin" } else { name };
    Ok(models.root().join(DOWNLOADS).join(sha).join(name))
}

/// Resolves a user's choice of Whisper model: a pinned id or a path ([`resolve_whisper`]), or an
/// `http(s)://` URL, which needs `sha256` ([`ModelError::ChecksumRequired`] without it). A URL's
/// file is downloaded once into [`download_path`] and verified before it is renamed into place; a
/// later call finds it there (checked against its stamp, or hashed) without the network.
pub fn resolve_or_download_whisper(
    models: &ModelDir,
    choice: &str,
    sha256: Option<&str>,
) -> Result<PathBuf, ModelError> {
    if !is_url(choice) {
        return resolve_whisper(models, choice);
    }
    let sha256 = sha256.ok_or_else(|| ModelError::ChecksumRequired {
        url: choice.to_string(),
    })?;
    let dest = download_path(models, choice, sha256)?;
    if dest.is_file() {
        match check_file(&dest, sha256, None) {
            Ok(_) => {
                tracing::info!("using {} downloaded earlier", dest.display());
                return Ok(dest);
            }
            Err(e) => tracing::warn!("{e}; downloading it again"),
        }
    }
    if let Some(dir) = dest.parent() {
        nina_fs::remove_temp_files(dir)?;
    }
    fetch_url(choice, &dest, sha256)?;
    tracing::info!("downloaded {} (sha256 {sha256})", dest.display());
    Ok(dest)
}

/// Downloads `url` to `dest`, showing progress on stderr. The bytes are hashed as they are
/// written, and a download whose sha256 is not `sha256` is refused before it is renamed into
/// place (nothing is left at `dest`; an older file there is untouched).
pub fn fetch_url(url: &str, dest: &Path, sha256: &str) -> Result<(), ModelError> {
    let fetch_err = |reason: String| ModelError::Fetch {
        what: format!("download of {url}"),
        reason,
    };
    if !is_url(url) {
        return Err(fetch_err("only http(s) URLs are supported".into()));
    }
    let sha256 = check_digest(url, sha256)?;
    let response = ureq::get(url)
        .call()
        .map_err(|e| fetch_err(e.to_string()))?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = total.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let mut reader = response.into_body().into_reader();
    let written = write_verified(dest, Some(&sha256), |file| {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| fetch_err(e.to_string()))?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .map_err(|e| ModelError::io(dest, e))?;
            bar.inc(n as u64);
        }
        Ok(())
    });
    bar.finish_and_clear();
    written.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    /// Serves `body` on loopback to every request for `/<name>`; returns the URL and a count of
    /// the requests.
    fn serve(name: &str, body: &'static [u8]) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(body);
            }
        });
        (format!("http://{addr}/{name}"), hits)
    }

    #[test]
    fn download_verifies_checksum_before_the_rename() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("m.bin");
        fetch_url(&serve("m.bin", b"abc").0, &dest, ABC).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");

        let bad = dir.path().join("bad.bin");
        std::fs::write(&bad, b"old").unwrap();
        let err = fetch_url(&serve("m.bin", b"abd").0, &bad, ABC).unwrap_err();
        assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
        assert_eq!(std::fs::read(&bad).unwrap(), b"old");
        assert_eq!(nina_fs::remove_temp_files(dir.path()).unwrap(), 0);
    }

    #[test]
    fn non_http_urls_and_malformed_digests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(fetch_url("file:///etc/passwd", &dir.path().join("x"), ABC).is_err());
        let models = ModelDir::new(dir.path());
        for bad in ["", "abc", "../../../etc", &"g".repeat(64)] {
            assert!(
                download_path(&models, "https://example.invalid/m.bin", bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_url_needs_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let models = ModelDir::new(dir.path());
        let (url, hits) = serve("ggml-tiny.bin", b"abc");
        let err = resolve_or_download_whisper(&models, &url, None).unwrap_err();
        assert!(matches!(err, ModelError::ChecksumRequired { .. }), "{err}");
        assert!(err.to_string().contains("--whisper-sha256"), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing fetched");
    }

    #[test]
    fn downloads_are_kept_by_checksum_not_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let models = ModelDir::new(dir.path());
        // A file under a pinned model's name is not what a URL ending in that name resolves to.
        let pinned = dir.path().join("ggml-base.bin");
        std::fs::write(&pinned, b"a pinned model").unwrap();
        let (url, hits) = serve("ggml-base.bin", b"abc");
        let got = resolve_or_download_whisper(&models, &url, Some(ABC)).unwrap();
        assert_eq!(
            got,
            dir.path().join("downloads").join(ABC).join("ggml-base.bin")
        );
        assert_eq!(got, download_path(&models, &url, ABC).unwrap());
        assert_eq!(std::fs::read(&got).unwrap(), b"abc");
        assert_eq!(std::fs::read(&pinned).unwrap(), b"a pinned model");
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // Again: found in place, no request.
        assert_eq!(
            resolve_or_download_whisper(&models, &url, Some(&ABC.to_uppercase())).unwrap(),
            got
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // Another checksum for the same URL is another file: downloaded, refused, nothing kept,
        // and the first download is untouched.
        let other = "0".repeat(64);
        let err = resolve_or_download_whisper(&models, &url, Some(&other)).unwrap_err();
        assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        assert!(!download_path(&models, &url, &other).unwrap().exists());
        assert_eq!(std::fs::read(&got).unwrap(), b"abc");

        // A damaged download in the cache is fetched again, not used.
        std::fs::write(&got, b"abX").unwrap();
        assert_eq!(
            resolve_or_download_whisper(&models, &url, Some(ABC)).unwrap(),
            got
        );
        assert_eq!(std::fs::read(&got).unwrap(), b"abc");
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }
}
