//! Reading a PyTorch checkpoint (`torch.save` of a state dict, zip format) without PyTorch.
//!
//! The zip holds `<root>/data.pkl`, a pickle of `{name: _rebuild_tensor_v2(storage, offset,
//! size, stride, requires_grad, hooks)}` whose storages are persistent ids
//! `('storage', torch.FloatStorage, key, location, numel)`, and each storage's raw little-endian
//! bytes in `<root>/data/<key>`. [`read_state_dict`] resolves these into dense float tensors;
//! integer tensors (BatchNorm's `num_batches_tracked`) are listed as skipped.

use std::collections::BTreeMap;
use std::io::{Read, Seek};

use half::{bf16, f16};

use crate::pickle::{self, Id, Pickle, PickleError, Value};

/// The largest `data.pkl` read (a state dict's pickle is a few hundred kilobytes).
const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// The most elements one tensor may have.
const MAX_ELEMENTS: usize = 1 << 30;

/// A dense float tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements (converted to f32 from the stored type).
    pub data: Vec<f32>,
}

/// The float tensors of a checkpoint, by name.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    /// Float tensors.
    pub tensors: BTreeMap<String, Tensor>,
    /// Names of tensors not loaded because they are not floats.
    pub skipped: Vec<String>,
}

/// Why a checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TorchError {
    /// The file is not a readable zip, or lacks a member.
    #[error("checkpoint zip: {0}")]
    Zip(String),
    /// `data.pkl` could not be unpickled.
    #[error("checkpoint pickle: {0}")]
    Pickle(#[from] PickleError),
    /// The pickle is not a state dict of tensors as torch writes them.
    #[error("checkpoint layout: {0}")]
    Format(String),
}

fn format(reason: impl Into<String>) -> TorchError {
    TorchError::Format(reason.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    F64,
    F16,
    BF16,
}

impl Dtype {
    fn of_storage(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F64 => 8,
            Self::F16 | Self::BF16 => 2,
        }
    }

    fn read(self, b: &[u8]) -> f32 {
        match self {
            Self::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Self::F64 => {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }
            Self::F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
            Self::BF16 => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        }
    }
}

/// What a tensor entry of the pickle says.
struct TensorRef {
    dtype: Option<Dtype>,
    key: String,
    numel: usize,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn usize_of(p: &Pickle, id: Id, what: &str) -> Result<usize, TorchError> {
    p.int(id)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format(format!("{what} is not a non-negative integer")))
}

fn usizes(p: &Pickle, id: Id, what: &str) -> Result<Vec<usize>, TorchError> {
    p.items(id)
        .ok_or_else(|| format(format!("{what} is not a tuple")))?
        .iter()
        .map(|&i| usize_of(p, i, what))
        .collect()
}

fn tensor_ref(p: &Pickle, name: &str, id: Id) -> Result<TensorRef, TorchError> {
    let bad = |what: &str| format(format!("`{name}`: {what}"));
    let Value::Call { func, args } = p.get(id) else {
        return Err(bad("not a tensor"));
    };
    if p.global(*func) != Some(("torch._utils", "_rebuild_tensor_v2")) {
        return Err(bad("not built by torch._utils._rebuild_tensor_v2"));
    }
    let args = p
        .items(*args)
        .ok_or_else(|| bad("arguments are not a tuple"))?;
    if args.len() < 4 {
        return Err(bad("too few arguments"));
    }
    let Value::PersistentId(pid) = p.get(args[0]) else {
        return Err(bad("storage is not a persistent id"));
    };
    let pid = p
        .items(*pid)
        .filter(|v| v.len() >= 5)
        .ok_or_else(|| bad("storage id is not a 5-tuple"))?;
    if p.str(pid[0]) != Some("storage") {
        return Err(bad("persistent id is not a storage"));
    }
    let (module, storage) = p
        .global(pid[1])
        .ok_or_else(|| bad("storage type is not a global"))?;
    if module != "torch" {
        return Err(bad("storage type is not torch's"));
    }
    let key = p
        .str(pid[2])
        .ok_or_else(|| bad("storage key is not a string"))?;
    if key.is_empty() || key.contains(['/', '\\']) || key.contains("..") {
        return Err(bad("storage key is not a plain name"));
    }
    Ok(TensorRef {
        dtype: Dtype::of_storage(storage),
        key: key.to_string(),
        numel: usize_of(p, pid[4], "storage size")?,
        offset: usize_of(p, args[1], "storage offset")?,
        shape: usizes(p, args[2], "size")?,
        stride: usizes(p, args[3], "stride")?,
    })
}

/// Copies the elements of `t` out of its storage bytes, following its strides.
fn materialise(
    name: &str,
    t: &TensorRef,
    dtype: Dtype,
    bytes: &[u8],
) -> Result<Tensor, TorchError> {
    let bad = |what: &str| format(format!("`{name}`: {what}"));
    if t.stride.len() != t.shape.len() {
        return Err(bad("size and stride differ in rank"));
    }
    let count = t
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| bad("too many elements"))?;
    let available = (bytes.len() / dtype.size()).min(t.numel);
    // The furthest element addressed must lie inside the storage.
    if count > 0 {
        let last = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |a, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
            })
            .ok_or_else(|| bad("strides overflow"))?;
        if last >= available {
            return Err(bad("reaches past the end of its storage"));
        }
    }
    let mut data = Vec::with_capacity(count);
    let mut index = vec![0usize; t.shape.len()];
    for _ in 0..count {
        let at = index
            .iter()
            .zip(&t.stride)
            .fold(t.offset, |a, (&i, &s)| a + i * s);
        let b = at * dtype.size();
        data.push(dtype.read(&bytes[b..b + dtype.size()]));
        for k in (0..index.len()).rev() {
            index[k] += 1;
            if index[k] < t.shape[k] {
                break;
            }
            index[k] = 0;
        }
    }
    Ok(Tensor {
        shape: t.shape.clone(),
        data,
    })
}

fn read_member<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, TorchError> {
    let entry = zip
        .by_name(name)
        .map_err(|e| TorchError::Zip(format!("{name}: {e}")))?;
    if entry.size() > limit {
        return Err(TorchError::Zip(format!(
            "{name} is {} bytes, more than the {limit} expected",
            entry.size()
        )));
    }
    let mut out = Vec::with_capacity(entry.size() as usize);
    entry
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| TorchError::Zip(format!("{name}: {e}")))?;
    Ok(out)
}

/// Reads every float tensor of the checkpoint in `reader`.
pub fn read_state_dict<R: Read + Seek>(reader: R) -> Result<StateDict, TorchError> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| TorchError::Zip(e.to_string()))?;
    let pkl = zip
        .file_names()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .min()
        .ok_or_else(|| TorchError::Zip("no <root>/data.pkl member".into()))?;
    let root = pkl.trim_end_matches("data.pkl").to_string();
    if zip.index_for_name(&format!("{root}byteorder")).is_some() {
        let order = read_member(&mut zip, &format!("{root}byteorder"), 16)?;
        if order.trim_ascii() != b"little" {
            return Err(format("only little-endian checkpoints are read"));
        }
    }
    let bytes = read_member(&mut zip, &pkl, MAX_PICKLE_BYTES)?;
    let p = pickle::parse(&bytes)?;
    let Value::Dict(items) = p.get(p.root) else {
        return Err(format("the pickle is not a dict"));
    };
    let mut out = StateDict::default();
    let mut storages: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for &(k, v) in items {
        let name = p
            .str(k)
            .ok_or_else(|| format("a key is not a string"))?
            .to_string();
        let t = tensor_ref(&p, &name, v)?;
        let Some(dtype) = t.dtype else {
            tracing::debug!("skipping `{name}`: not a float tensor");
            out.skipped.push(name);
            continue;
        };
        if !storages.contains_key(&t.key) {
            let limit = (t.numel.min(MAX_ELEMENTS) * dtype.size()) as u64;
            let data = read_member(&mut zip, &format!("{root}data/{}", t.key), limit)?;
            storages.insert(t.key.clone(), data);
        }
        let tensor = materialise(&name, &t, dtype, &storages[&t.key])?;
        if out.tensors.insert(name.clone(), tensor).is_some() {
            return Err(format(format!("`{name}` appears twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    /// A checkpoint zip holding one 2x3 float tensor `a.weight` (values 0..6) stored with
    /// `stride` over a storage of 8 floats from offset `offset`.
    pub(crate) fn checkpoint(pkl: &[u8], storage: &[f32]) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", opts).unwrap();
        zip.write_all(pkl).unwrap();
        zip.start_file("archive/byteorder", opts).unwrap();
        zip.write_all(b"little").unwrap();
        zip.start_file("archive/data/0", opts).unwrap();
        for v in storage {
            zip.write_all(&v.to_le_bytes()).unwrap();
        }
        zip.start_file("archive/version", opts).unwrap();
        zip.write_all(b"3\n").unwrap();
        zip.finish().unwrap();
        buf.into_inner()
    }

    #[test]
    fn reads_contiguous_and_strided_tensors() {
        let storage: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let pkl = crate::pickle::tests::torch_like_pickle("a.weight", "0", &[2, 3], &[3, 1]);
        let sd = read_state_dict(Cursor::new(checkpoint(&pkl, &storage))).unwrap();
        let t = &sd.tensors["a.weight"];
        assert_eq!(t.shape, [2, 3]);
        assert_eq!(t.data, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        // The transpose of a 2x3 matrix: shape (3, 2), stride (1, 3).
        let pkl = crate::pickle::tests::torch_like_pickle("t", "0", &[3, 2], &[1, 3]);
        let sd = read_state_dict(Cursor::new(checkpoint(&pkl, &storage))).unwrap();
        assert_eq!(sd.tensors["t"].data, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn bad_checkpoints_are_errors() {
        let storage = [0f32; 5];
        // Six elements claimed, five stored.
        let pkl = crate::pickle::tests::torch_like_pickle("a", "0", &[2, 3], &[3, 1]);
        let err = read_state_dict(Cursor::new(checkpoint(&pkl, &storage))).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
        // A storage key that would leave the archive directory.
        let pkl = crate::pickle::tests::torch_like_pickle("a", "../x", &[1], &[1]);
        let err = read_state_dict(Cursor::new(checkpoint(&pkl, &storage))).unwrap_err();
        assert!(err.to_string().contains("plain name"), "{err}");
        // A missing storage member.
        let pkl = crate::pickle::tests::torch_like_pickle("a", "9", &[1], &[1]);
        assert!(matches!(
            read_state_dict(Cursor::new(checkpoint(&pkl, &storage))),
            Err(TorchError::Zip(_))
        ));
        assert!(matches!(
            read_state_dict(Cursor::new(b"not a zip".to_vec())),
            Err(TorchError::Zip(_))
        ));
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// A valid zip around a damaged pickle reaches every check of the tensor resolution.
        #[test]
        fn damaged_pickles_in_a_checkpoint_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            shape in proptest::collection::vec(0u8..5, 0..4),
            stride in proptest::collection::vec(0u8..9, 0..4),
        ) {
            let mut pkl = crate::pickle::tests::torch_like_pickle("w", "0", &shape, &stride);
            for (at, b) in flips {
                let i = at.index(pkl.len());
                pkl[i] = b;
            }
            let _ = read_state_dict(Cursor::new(checkpoint(&pkl, &[1.0; 7])));
        }

        /// Any shape and stride over a small storage: a tensor within bounds, or an error.
        #[test]
        fn any_shape_and_stride_is_bounded(
            shape in proptest::collection::vec(0u8..6, 0..4),
            stride in proptest::collection::vec(0u8..9, 0..4),
        ) {
            let pkl = crate::pickle::tests::torch_like_pickle("w", "0", &shape, &stride);
            let storage: Vec<f32> = (0..7).map(|i| i as f32).collect();
            if let Ok(sd) = read_state_dict(Cursor::new(checkpoint(&pkl, &storage))) {
                let t = &sd.tensors["w"];
                prop_assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
            }
        }

        /// Damaged zip bytes: an error or a state dict, never a panic.
        #[test]
        fn damaged_checkpoints_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let pkl = crate::pickle::tests::torch_like_pickle("w", "0", &[2, 3], &[3, 1]);
            let mut zip = checkpoint(&pkl, &[1.0; 6]);
            for (at, b) in flips {
                let i = at.index(zip.len());
                zip[i] = b;
            }
            let _ = read_state_dict(Cursor::new(zip));
        }
    }
}
