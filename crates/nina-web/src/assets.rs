//! Static files embedded in the binary: the vendored scripts (pinned by sha256, with their
//! licences) and our own module and style sheet. Served by name from a closed list, never from
//! the disk.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its name under `/assets/`.
    pub name: &'static str,
    /// Media type.
    pub content_type: &'static str,
    /// Bytes.
    pub bytes: &'static [u8],
    /// Whether the name carries a version (cached for a year) or not (revalidated).
    pub versioned: bool,
}

macro_rules! asset {
    ($name:literal, $path:literal, $ct:literal, $v:literal) => {
        Asset {
            name: $name,
            content_type: $ct,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $path)),
            versioned: $v,
        }
    };
}

/// Every embedded file.
pub const ASSETS: &[Asset] = &[
    asset!(
        "htmx-2.0.11.min.js",
        "vendor/htmx-2.0.11.min.js",
        "text/javascript; charset=utf-8",
        true
    ),
    asset!(
        "htmx-ext-sse-2.2.4.min.js",
        "vendor/htmx-ext-sse-2.2.4.min.js",
        "text/javascript; charset=utf-8",
        true
    ),
    asset!(
        "wavesurfer-7.12.12.esm.js",
        "vendor/wavesurfer-7.12.12.esm.js",
        "text/javascript; charset=utf-8",
        true
    ),
    asset!(
        "nina.js",
        "nina.js",
        "text/javascript; charset=utf-8",
        false
    ),
    asset!("style.css", "style.css", "text/css; charset=utf-8", false),
    asset!(
        "LICENSES.txt",
        "vendor/LICENSES.txt",
        "text/plain; charset=utf-8",
        false
    ),
];

/// The file named `name`, if embedded.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The response for `/assets/{name}`.
pub fn serve(name: &str) -> Response {
    let Some(a) = find(name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let cache = if a.versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut r = a.bytes.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// Each vendored script matches the checksum pinned in `assets/vendor/SHA256SUMS`, and each
    /// has its licence beside it.
    #[test]
    fn vendored_files_match_their_checksums() {
        let sums = include_str!("../assets/vendor/SHA256SUMS");
        let mut checked = 0;
        for line in sums.lines().filter(|l| !l.trim().is_empty()) {
            let (hex, file) = line.split_once("  ").expect("sha256sum format");
            let a = ASSETS
                .iter()
                .find(|a| a.name == file)
                .unwrap_or_else(|| panic!("{file} is pinned but not embedded"));
            let got: String = Sha256::digest(a.bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got, hex, "{file} does not match its pinned sha256");
            checked += 1;
        }
        assert_eq!(checked, ASSETS.iter().filter(|a| a.versioned).count());
        let licences = find("LICENSES.txt").unwrap().bytes;
        let licences = std::str::from_utf8(licences).unwrap();
        for needle in ["htmx", "Alexander Petros", "katspaugh"] {
            assert!(licences.contains(needle), "licence of {needle} missing");
        }
    }

    #[test]
    fn unknown_names_are_not_found() {
        for bad in [
            "../Cargo.toml",
            "vendor/SHA256SUMS",
            "",
            "nina.js/",
            "NINA.JS",
        ] {
            assert!(find(bad).is_none(), "{bad}");
        }
        assert_eq!(serve("nope").status(), StatusCode::NOT_FOUND);
        assert_eq!(serve("nina.js").status(), StatusCode::OK);
    }
}
