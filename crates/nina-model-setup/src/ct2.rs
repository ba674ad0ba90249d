//! Reader for CTranslate2 `model.bin` files (binary version 6).
//!
//! Layout: `u32` version, length-prefixed spec name, `u32` revision, `u32` variable count, then
//! per variable a length-prefixed name, `u8` rank, `rank` x `u32` dims, `u8` dtype, `u32` byte
//! count and the bytes; then `u32` alias count and (alias, target) name pairs. Strings are a `u16`
//! length (including a trailing NUL) followed by the bytes. Everything is little-endian.
//!
//! The reader treats the file as untrusted: every length is checked against what is left of the
//! input, so a truncated or hostile file yields [`Ct2Error`], never a panic or a huge allocation.

use std::collections::BTreeMap;

/// Element types CTranslate2 stores (the order of its `DataType` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Dtype {
    /// 32-bit float.
    F32,
    /// 8-bit integer.
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

impl Ct2Dtype {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One named tensor of a CTranslate2 model, borrowing its bytes from the file.
#[derive(Debug, Clone)]
pub struct Ct2Variable<'a> {
    /// Dimensions, outermost first (row-major, as in PyTorch).
    pub dims: Vec<usize>,
    /// Element type.
    pub dtype: Ct2Dtype,
    /// Raw little-endian element bytes.
    pub data: &'a [u8],
}

impl Ct2Variable<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads a scalar integer variable (such as `encoder/num_heads`).
    pub fn scalar_int(&self) -> Option<i64> {
        match (self.dtype, self.data) {
            (Ct2Dtype::I8, [a]) => Some(i64::from(*a as i8)),
            (Ct2Dtype::I16, [a, b]) => Some(i64::from(i16::from_le_bytes([*a, *b]))),
            (Ct2Dtype::I32, [a, b, c, d]) => Some(i64::from(i32::from_le_bytes([*a, *b, *c, *d]))),
            _ => None,
        }
    }
}

/// A parsed CTranslate2 model file.
#[derive(Debug)]
pub struct Ct2Model<'a> {
    /// Binary format version (6 for current CTranslate2).
    pub version: u32,
    /// Model specification name, e.g. `WhisperSpec`.
    pub spec: String,
    /// Specification revision.
    pub revision: u32,
    /// Variables by name.
    pub variables: BTreeMap<String, Ct2Variable<'a>>,
    /// Aliases: alias name -> target variable name.
    pub aliases: BTreeMap<String, String>,
}

/// Why a CTranslate2 model file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Ct2Error {
    /// The file ends before a field it announces.
    #[error("truncated CTranslate2 model: {what} at byte {offset} runs past the end of the file")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the field.
        offset: usize,
    },
    /// The binary version is one this reader does not understand.
    #[error("unsupported CTranslate2 binary version {0} (expected 5 or 6)")]
    Version(u32),
    /// A dtype id outside CTranslate2's enum.
    #[error("variable `{name}` has unknown dtype id {id}")]
    Dtype {
        /// Variable name.
        name: String,
        /// The id found.
        id: u8,
    },
    /// Byte count does not match dims x element size.
    #[error("variable `{name}` claims {bytes} bytes but its shape {dims:?} needs {expected}")]
    Size {
        /// Variable name.
        name: String,
        /// Shape.
        dims: Vec<usize>,
        /// Bytes announced.
        bytes: usize,
        /// Bytes the shape needs.
        expected: usize,
    },
    /// A name that is not UTF-8.
    #[error("a name at byte {0} is not valid UTF-8")]
    Name(usize),
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Ct2Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Ct2Error::Truncated {
                what,
                offset: self.pos,
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Ct2Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Ct2Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Ct2Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &'static str) -> Result<String, Ct2Error> {
        let start = self.pos;
        let len = usize::from(self.u16(what)?);
        let bytes = self.take(len, what)?;
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        String::from_utf8(bytes.to_vec()).map_err(|_| Ct2Error::Name(start))
    }
}

impl<'a> Ct2Model<'a> {
    /// Parses a whole `model.bin` held in memory.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Ct2Error> {
        let mut c = Cursor { buf, pos: 0 };
        let version = c.u32("version")?;
        if !(5..=6).contains(&version) {
            return Err(Ct2Error::Version(version));
        }
        let spec = c.string("spec name")?;
        let revision = c.u32("revision")?;
        let count = c.u32("variable count")?;
        let mut variables = BTreeMap::new();
        for _ in 0..count {
            let name = c.string("variable name")?;
            let rank = c.u8("rank")?;
            let mut dims = Vec::with_capacity(usize::from(rank));
            for _ in 0..rank {
                dims.push(c.u32("dimension")? as usize);
            }
            let id = c.u8("dtype")?;
            let dtype = Ct2Dtype::from_id(id).ok_or_else(|| Ct2Error::Dtype {
                name: name.clone(),
                id,
            })?;
            let bytes = c.u32("byte count")? as usize;
            let expected = dims
                .iter()
                .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
                .unwrap_or(usize::MAX);
            if expected != bytes {
                return Err(Ct2Error::Size {
                    name,
                    dims,
                    bytes,
                    expected,
                });
            }
            let data = c.take(bytes, "variable data")?;
            variables.insert(name, Ct2Variable { dims, dtype, data });
        }
        let mut aliases = BTreeMap::new();
        if c.pos < buf.len() {
            let n = c.u32("alias count")?;
            for _ in 0..n {
                let alias = c.string("alias name")?;
                let target = c.string("alias target")?;
                aliases.insert(alias, target);
            }
        }
        Ok(Self {
            version,
            spec,
            revision,
            variables,
            aliases,
        })
    }

    /// Looks a variable up by name, following aliases.
    pub fn get(&self, name: &str) -> Option<&Ct2Variable<'a>> {
        self.variables.get(name).or_else(|| {
            self.aliases
                .get(name)
                .and_then(|target| self.variables.get(target))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    /// Serialises variables the way CTranslate2 does (used to build test files).
    pub(crate) fn write_model(
        vars: &[(&str, Vec<u32>, u8, Vec<u8>)],
        aliases: &[(&str, &str)],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&6u32.to_le_bytes());
        put_str(&mut out, "WhisperSpec");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
        for (name, dims, dtype, data) in vars {
            put_str(&mut out, name);
            out.push(dims.len() as u8);
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.push(*dtype);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
        for (a, t) in aliases {
            put_str(&mut out, a);
            put_str(&mut out, t);
        }
        out
    }

    #[test]
    fn round_trip_with_alias() {
        let bytes = write_model(
            &[
                ("encoder/num_heads", vec![], 2, 8i16.to_le_bytes().to_vec()),
                (
                    "decoder/embeddings/weight",
                    vec![2, 1],
                    4,
                    vec![0, 60, 0, 64],
                ),
            ],
            &[("decoder/projection/weight", "decoder/embeddings/weight")],
        );
        let m = Ct2Model::parse(&bytes).unwrap();
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.revision, 3);
        assert_eq!(m.get("encoder/num_heads").unwrap().scalar_int(), Some(8));
        let p = m.get("decoder/projection/weight").unwrap();
        assert_eq!(p.dims, vec![2, 1]);
        assert_eq!(p.dtype, Ct2Dtype::F16);
    }

    #[test]
    fn size_mismatch_and_truncation_are_errors() {
        let mut bytes = write_model(&[("x", vec![4], 0, vec![0; 12])], &[]);
        assert!(matches!(
            Ct2Model::parse(&bytes),
            Err(Ct2Error::Size { .. })
        ));
        bytes = write_model(&[("x", vec![3], 0, vec![0; 12])], &[]);
        bytes.truncate(30);
        assert!(matches!(
            Ct2Model::parse(&bytes),
            Err(Ct2Error::Truncated { .. })
        ));
        assert_eq!(
            Ct2Model::parse(&[7, 0, 0, 0]).unwrap_err(),
            Ct2Error::Version(7)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Ct2Model::parse(&bytes);
        }

        #[test]
        fn corrupted_valid_file_never_panics(pos in 0usize..120, val in any::<u8>(), cut in 0usize..140) {
            let mut bytes = write_model(
                &[("a/b", vec![2, 3], 0, vec![1; 24]), ("n", vec![], 2, vec![4, 0])],
                &[("c", "a/b")],
            );
            if pos < bytes.len() { bytes[pos] = val; }
            bytes.truncate(cut.min(bytes.len()));
            let _ = Ct2Model::parse(&bytes);
        }
    }
}
