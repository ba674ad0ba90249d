//! The ggml Whisper file format, read side: [`inspect_ggml`] checks a file completely before
//! whisper.cpp sees it, and [`mel_filters`] is the filter bank the format (and the speaker
//! embedder) uses. Writing ggml files (the CTranslate2 importer) is `nina-model-setup`'s job.
//!
//! The ggml file is: magic, 11 `i32` hyper-parameters (ending with the weight type), the mel
//! filter bank (`n_mel`, `n_fft`, then `n_mel * n_fft` `f32`), the vocabulary (count, then each
//! token as `u32` length + raw bytes), then tensors (`i32` rank, `i32` name length, `i32` type,
//! dims innermost first, name, data). whisper.cpp adds the special tokens itself.

use std::fs;
use std::path::Path;

use crate::ModelError;

/// The magic number a ggml file starts with (`ggml`, little-endian `u32`).
pub const GGML_MAGIC: u32 = 0x6767_6d6c;

/// Whisper hyper-parameters, as the ggml header stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhisperHparams {
    /// Vocabulary size including special tokens (51,865 multilingual, 51,864 English-only).
    pub n_vocab: usize,
    /// Encoder positions (1,500).
    pub n_audio_ctx: usize,
    /// Encoder width.
    pub n_audio_state: usize,
    /// Encoder attention heads.
    pub n_audio_head: usize,
    /// Encoder layers.
    pub n_audio_layer: usize,
    /// Decoder positions (448).
    pub n_text_ctx: usize,
    /// Decoder width.
    pub n_text_state: usize,
    /// Decoder attention heads.
    pub n_text_head: usize,
    /// Decoder layers.
    pub n_text_layer: usize,
    /// Mel bands (80, or 128 for large-v3).
    pub n_mels: usize,
}

impl WhisperHparams {
    /// Whether the model is multilingual (whisper.cpp's own test).
    pub fn is_multilingual(&self) -> bool {
        self.n_vocab >= 51_865
    }

    /// The conventional model size name (tiny, base, small, medium, large).
    pub fn size_name(&self) -> &'static str {
        match self.n_audio_layer {
            4 => "tiny",
            6 => "base",
            12 => "small",
            24 => "medium",
            32 => "large",
            _ => "custom",
        }
    }
}

/// How the weight matrices of a ggml Whisper file are stored (its `ftype`). Biases, norms and
/// positional embeddings are always `f32`, the convolutions `f16`, as whisper.cpp expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GgmlWeights {
    /// Half precision (what OpenAI's weights convert to without loss).
    #[default]
    F16,
    /// 8-bit blocks of 32 with an `f16` scale (34 bytes per block).
    Q8_0,
    /// 5-bit blocks of 32 with an `f16` scale and minimum (24 bytes per block).
    Q5_1,
}

impl GgmlWeights {
    /// Every kind, in order of size.
    pub const ALL: [GgmlWeights; 3] = [Self::F16, Self::Q8_0, Self::Q5_1];

    /// The ggml tensor type of a weight matrix.
    pub fn tensor_type(self) -> i32 {
        match self {
            Self::F16 => 1,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
        }
    }

    /// The header's `ftype`: ggml's file type, plus 1000 x the quantisation version (2) for the
    /// quantised kinds, as whisper.cpp's own quantiser writes it.
    pub fn ftype(self) -> i32 {
        match self {
            Self::F16 => 1,
            Self::Q8_0 => 2_007,
            Self::Q5_1 => 2_009,
        }
    }

    /// Its name: `f16`, `q8_0`, `q5_1`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
            Self::Q5_1 => "q5_1",
        }
    }

    /// The kind named `name` ([`GgmlWeights::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// Checks that `path` is a complete ggml Whisper file (magic, plausible hyper-parameters, and every
/// tensor record within the file) without loading it, so whisper.cpp is never handed a truncated or
/// foreign file. Returns the hyper-parameters.
pub fn inspect_ggml(path: &Path) -> Result<WhisperHparams, ModelError> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |reason: String| ModelError::invalid(path, reason);
    let mut f = fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let len = f.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let read_i32 = |f: &mut fs::File, what: &str| -> Result<i32, ModelError> {
        let mut b = [0u8; 4];
        f.read_exact(&mut b)
            .map_err(|_| bad(format!("file ends inside {what}")))?;
        Ok(i32::from_le_bytes(b))
    };
    if read_i32(&mut f, "the magic")? as u32 != GGML_MAGIC {
        return Err(bad("bad magic: not a ggml file".into()));
    }
    let mut h = [0i32; 11];
    for v in h.iter_mut() {
        *v = read_i32(&mut f, "the header")?;
    }
    let ok = h[..10].iter().all(|&v| v > 0 && v < 1 << 20);
    if !ok {
        return Err(bad(format!("implausible hyper-parameters {h:?}")));
    }
    let hp = WhisperHparams {
        n_vocab: h[0] as usize,
        n_audio_ctx: h[1] as usize,
        n_audio_state: h[2] as usize,
        n_audio_head: h[3] as usize,
        n_audio_layer: h[4] as usize,
        n_text_ctx: h[5] as usize,
        n_text_state: h[6] as usize,
        n_text_head: h[7] as usize,
        n_text_layer: h[8] as usize,
        n_mels: h[9] as usize,
    };
    let n_mel = read_i32(&mut f, "the filter bank")?;
    let n_fft = read_i32(&mut f, "the filter bank")?;
    if !(0..=512).contains(&n_mel) || !(0..=4096).contains(&n_fft) {
        return Err(bad("implausible filter bank size".into()));
    }
    f.seek(SeekFrom::Current(i64::from(n_mel) * i64::from(n_fft) * 4))
        .map_err(|e| ModelError::io(path, e))?;
    let n_tokens = read_i32(&mut f, "the vocabulary")?;
    if !(0..=1 << 20).contains(&n_tokens) {
        return Err(bad("implausible vocabulary size".into()));
    }
    for _ in 0..n_tokens {
        let l = read_i32(&mut f, "the vocabulary")?;
        if !(0..=4096).contains(&l) {
            return Err(bad("implausible token length".into()));
        }
        f.seek(SeekFrom::Current(i64::from(l)))
            .map_err(|e| ModelError::io(path, e))?;
    }
    let mut tensors = 0usize;
    loop {
        let pos = f.stream_position().map_err(|e| ModelError::io(path, e))?;
        if pos == len {
            break;
        }
        let n_dims = read_i32(&mut f, "a tensor header")?;
        let name_len = read_i32(&mut f, "a tensor header")?;
        let ttype = read_i32(&mut f, "a tensor header")?;
        if !(1..=4).contains(&n_dims) || !(1..=512).contains(&name_len) {
            return Err(bad(format!("corrupt tensor header at byte {pos}")));
        }
        let mut n: i64 = 1;
        for _ in 0..n_dims {
            let d = read_i32(&mut f, "a tensor header")?;
            if d <= 0 {
                return Err(bad(format!("corrupt tensor shape at byte {pos}")));
            }
            n = n.saturating_mul(i64::from(d));
        }
        // (block size, bytes per block) of the types whisper.cpp files use.
        let (block, bytes) = match ttype {
            0 => (1, 4),
            1 => (1, 2),
            2 => (32, 18),
            3 => (32, 20),
            6 => (32, 22),
            7 => (32, 24),
            8 => (32, 34),
            _ => break, // a type we cannot size: whisper.cpp will check the rest
        };
        let size = n / block * bytes;
        let end = f.stream_position().map_err(|e| ModelError::io(path, e))?
            + name_len as u64
            + size as u64;
        if end > len {
            return Err(bad(format!(
                "truncated: tensor at byte {pos} runs past the end ({len} bytes)"
            )));
        }
        f.seek(SeekFrom::Start(end))
            .map_err(|e| ModelError::io(path, e))?;
        tensors += 1;
    }
    if tensors == 0 {
        return Err(bad("no tensors".into()));
    }
    Ok(hp)
}

/// Whisper's mel filter bank: `n_mels` x (`n_fft / 2 + 1`), Slaney mel scale and area
/// normalisation (as librosa computes it for Whisper), row-major.
pub fn mel_filters(n_mels: usize, n_fft: usize, sample_rate: f64) -> Vec<f32> {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    let hz_to_mel = |hz: f64| {
        if hz >= MIN_LOG_HZ {
            min_log_mel + (hz / MIN_LOG_HZ).ln() / logstep
        } else {
            hz / F_SP
        }
    };
    let mel_to_hz = |mel: f64| {
        if mel >= min_log_mel {
            MIN_LOG_HZ * (logstep * (mel - min_log_mel)).exp()
        } else {
            F_SP * mel
        }
    };
    let n_bins = n_fft / 2 + 1;
    let fmax = sample_rate / 2.0;
    let fft_freqs: Vec<f64> = (0..n_bins)
        .map(|i| fmax * i as f64 / (n_bins - 1) as f64)
        .collect();
    let (mel_lo, mel_hi) = (hz_to_mel(0.0), hz_to_mel(fmax));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(mel_lo + (mel_hi - mel_lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut out = vec![0f32; n_mels * n_bins];
    for m in 0..n_mels {
        let (lo, mid, hi) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
        let enorm = 2.0 / (hi - lo);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - lo) / (mid - lo);
            let upper = (hi - f) / (hi - mid);
            out[m * n_bins + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn inspect_never_panics_on_hostile_files(
            header in proptest::collection::vec(any::<i32>(), 0..40),
            tail in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("m.bin");
            let mut bytes = GGML_MAGIC.to_le_bytes().to_vec();
            for v in &header {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            bytes.extend_from_slice(&tail);
            fs::write(&p, &bytes).unwrap();
            let _ = inspect_ggml(&p);
        }
    }

    #[test]
    fn mel_filters_match_whisper_shape_and_normalisation() {
        let f = mel_filters(80, 400, 16_000.0);
        assert_eq!(f.len(), 80 * 201);
        // Every band has some weight; DC and Nyquist carry none in the first/last band edges.
        for m in 0..80 {
            let row = &f[m * 201..(m + 1) * 201];
            assert!(row.iter().any(|&v| v > 0.0), "band {m} is empty");
            assert!(row.iter().all(|&v| v >= 0.0));
        }
        // Known value of librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)[0, 1] (0.02486259).
        assert!((f[1] - 0.024_862_6).abs() < 1e-5, "got {}", f[1]);
    }
}
