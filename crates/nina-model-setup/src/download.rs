//! Downloading a user-chosen model file (for users with internet), with a checksum and progress.

use std::io::{Read, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::{ModelError, atomic_write, hex};

/// Downloads `url` to `dest`, showing progress on stderr. With `sha256`, the download is refused
/// (and nothing is left at `dest`) unless it matches. Returns the sha256 of what was written.
pub fn fetch_url(url: &str, dest: &Path, sha256: Option<&str>) -> Result<String, ModelError> {
    let fetch_err = |reason: String| ModelError::Fetch {
        what: format!("download of {url}"),
        reason,
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(fetch_err("only http(s) URLs are supported".into()));
    }
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
    let mut digest = String::new();
    atomic_write(dest, |file| {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| fetch_err(e.to_string()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(|e| ModelError::io(dest, e))?;
            bar.inc(n as u64);
        }
        digest = hex(&hasher.finalize());
        match sha256 {
            Some(expected) if !expected.eq_ignore_ascii_case(&digest) => {
                Err(ModelError::Checksum {
                    path: dest.to_path_buf(),
                    expected: expected.to_string(),
                    actual: digest.clone(),
                })
            }
            _ => Ok(()),
        }
    })?;
    bar.finish_and_clear();
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    /// Serves `body` once on loopback and returns the URL.
    fn serve_once(body: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
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
        format!("http://{addr}/model.bin")
    }

    #[test]
    fn download_verifies_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("m.bin");
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            fetch_url(&serve_once(b"abc"), &dest, Some(sha)).unwrap(),
            sha
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");

        let bad = dir.path().join("bad.bin");
        let err = fetch_url(&serve_once(b"abd"), &bad, Some(sha)).unwrap_err();
        assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
        assert!(!bad.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn non_http_urls_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(fetch_url("file:///etc/passwd", &dir.path().join("x"), None).is_err());
    }
}
