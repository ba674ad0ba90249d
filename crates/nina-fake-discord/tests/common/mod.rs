//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A LibriVox speech file from `testdata/librivox/`; fails (never skips) when it is missing.
pub fn librivox(name: &str) -> PathBuf {
    let p = workspace_root().join("testdata/librivox").join(name);
    assert!(
        p.is_file(),
        "missing test speech {}: run `scripts/setup.sh` (it installs pocketsphinx-testdata and copies \
         test/data/librivox/*.wav into testdata/librivox/)",
        p.display()
    );
    p
}

/// Three speech files of different lengths, one per fake user.
pub fn three_speeches() -> [PathBuf; 3] {
    [
        librivox("sense_and_sensibility_01_austen_64kb-0880.wav"),
        librivox("sense_and_sensibility_01_austen_64kb-0930.wav"),
        librivox("sense_and_sensibility_01_austen_64kb-0890.wav"),
    ]
}
