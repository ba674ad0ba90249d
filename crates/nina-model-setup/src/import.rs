//! Conversion of a CTranslate2 Whisper model (as shipped for faster-whisper) into the ggml file
//! format that whisper.cpp loads (the format is described in `nina_models::ggml`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use half::f16;
use nina_models::ModelError;
use nina_models::ggml::{GGML_MAGIC, GgmlWeights, WhisperHparams, mel_filters};
use nina_models::verify::write_verified;

use crate::ct2::{Ct2Dtype, Ct2Model, Ct2Variable};
use crate::quant;

const GGML_TYPE_F32: i32 = 0;
const GGML_TYPE_F16: i32 = 1;

/// How one tensor is written.
#[derive(Clone, Copy)]
enum Out {
    /// `f32`: biases, norms, positional embeddings.
    F32,
    /// `f16`: the convolutions.
    F16,
    /// A weight matrix, in the file's weight type.
    Weights(GgmlWeights),
}

/// What an import produced.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The ggml file written.
    pub output: PathBuf,
    /// Hyper-parameters read from the CTranslate2 model.
    pub hparams: WhisperHparams,
    /// Tokens written to the vocabulary section.
    pub vocab_tokens: usize,
    /// Tensors written.
    pub tensors: usize,
    /// Size of the output in bytes.
    pub bytes: u64,
    /// sha256 of the output, computed while it was written.
    pub sha256: String,
}

/// Converts the CTranslate2 Whisper model in `ct2_dir` (holding `model.bin`, or `model.bin.part1`,
/// `model.bin.part2`, ... to be joined, and `tokenizer.json`) into a ggml file at `output`.
///
/// The output is hashed while it is written to a temporary name. With `expected_sha256`, an
/// output with another digest is refused ([`ModelError::Checksum`]) before it is renamed into
/// place, and one that matches is stamped as verified; an interrupted import never leaves a
/// truncated model behind.
///
/// `weights` says how the weight matrices are stored: `f16` as in the source, or quantised
/// (q8_0, q5_1) as whisper.cpp's own quantiser would write them.
pub fn import_ct2_whisper(
    ct2_dir: &Path,
    output: &Path,
    weights: GgmlWeights,
    expected_sha256: Option<&str>,
) -> Result<ImportReport, ModelError> {
    let model_bytes = read_model_bin(ct2_dir)?;
    let tokenizer = ct2_dir.join("tokenizer.json");
    let tokenizer_text =
        fs::read_to_string(&tokenizer).map_err(|e| ModelError::io(&tokenizer, e))?;
    let vocab = vocabulary_from_tokenizer_json(&tokenizer_text)
        .map_err(|reason| ModelError::invalid(&tokenizer, reason))?;

    let bin_path = ct2_dir.join("model.bin");
    let model =
        Ct2Model::parse(&model_bytes).map_err(|e| ModelError::invalid(&bin_path, e.to_string()))?;
    if model.spec != "WhisperSpec" {
        return Err(ModelError::invalid(
            &bin_path,
            format!("spec is `{}`, not a Whisper model", model.spec),
        ));
    }
    let mut report = None;
    let mut bytes = 0;
    let sha256 = write_verified(output, expected_sha256, |file| {
        let mut w = BufWriter::with_capacity(1 << 20, &mut *file);
        let r = write_ggml(&model, &vocab, weights, &mut w).map_err(|reason| match reason {
            WriteError::Io(e) => ModelError::io(output, e),
            WriteError::Model(reason) => ModelError::invalid(&bin_path, reason),
        })?;
        w.flush().map_err(|e| ModelError::io(output, e))?;
        drop(w);
        bytes = file.bytes();
        report = Some(r);
        Ok(())
    })?;
    let (hparams, tensors) =
        report.ok_or_else(|| ModelError::invalid(output, "import wrote nothing".into()))?;
    Ok(ImportReport {
        output: output.to_path_buf(),
        hparams,
        vocab_tokens: vocab.len(),
        tensors,
        bytes,
        sha256,
    })
}

fn read_model_bin(dir: &Path) -> Result<Vec<u8>, ModelError> {
    let whole = dir.join("model.bin");
    if whole.exists() {
        return fs::read(&whole).map_err(|e| ModelError::io(&whole, e));
    }
    let mut out = Vec::new();
    for i in 1.. {
        let part = dir.join(format!("model.bin.part{i}"));
        if !part.exists() {
            break;
        }
        let bytes = fs::read(&part).map_err(|e| ModelError::io(&part, e))?;
        out.extend_from_slice(&bytes);
    }
    if out.is_empty() {
        return Err(ModelError::Missing {
            path: whole,
            looked_in: Vec::new(),
            fix: "a CTranslate2 Whisper directory holds model.bin (or model.bin.part1, part2, ...)"
                .into(),
        });
    }
    Ok(out)
}

enum WriteError {
    Io(std::io::Error),
    Model(String),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

fn need<'m, 'a>(model: &'m Ct2Model<'a>, name: &str) -> Result<&'m Ct2Variable<'a>, WriteError> {
    model
        .get(name)
        .ok_or_else(|| WriteError::Model(format!("variable `{name}` is missing")))
}

fn dim(var: &Ct2Variable<'_>, i: usize, name: &str) -> Result<usize, WriteError> {
    var.dims.get(i).copied().ok_or_else(|| {
        WriteError::Model(format!(
            "variable `{name}` has rank {} (< {})",
            var.dims.len(),
            i + 1
        ))
    })
}

fn count_layers(model: &Ct2Model<'_>, prefix: &str) -> usize {
    (0..)
        .take_while(|i| {
            let p = format!("{prefix}/layer_{i}/");
            model
                .variables
                .range(p.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&p))
        })
        .count()
}

fn hparams(model: &Ct2Model<'_>) -> Result<WhisperHparams, WriteError> {
    let heads = |name: &str| -> Result<usize, WriteError> {
        need(model, name)?
            .scalar_int()
            .and_then(|v| usize::try_from(v).ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| WriteError::Model(format!("`{name}` is not a positive integer")))
    };
    let emb = need(model, "decoder/embeddings/weight")?;
    let epos = need(model, "encoder/position_encodings/encodings")?;
    let dpos = need(model, "decoder/position_encodings/encodings")?;
    let conv1 = need(model, "encoder/conv1/weight")?;
    Ok(WhisperHparams {
        n_vocab: dim(emb, 0, "decoder/embeddings/weight")?,
        n_audio_ctx: dim(epos, 0, "encoder/position_encodings/encodings")?,
        n_audio_state: dim(epos, 1, "encoder/position_encodings/encodings")?,
        n_audio_head: heads("encoder/num_heads")?,
        n_audio_layer: count_layers(model, "encoder"),
        n_text_ctx: dim(dpos, 0, "decoder/position_encodings/encodings")?,
        n_text_state: dim(dpos, 1, "decoder/position_encodings/encodings")?,
        n_text_head: heads("decoder/num_heads")?,
        n_text_layer: count_layers(model, "decoder"),
        n_mels: dim(conv1, 1, "encoder/conv1/weight")?,
    })
}

/// Writes one tensor record. `dims` are outermost first; ggml wants them innermost first.
fn put_tensor<W: Write>(
    w: &mut W,
    name: &str,
    dims: &[usize],
    src_dtype: Ct2Dtype,
    src: &[u8],
    out: Out,
) -> Result<(), WriteError> {
    let ttype = match out {
        Out::F32 => GGML_TYPE_F32,
        Out::F16 => GGML_TYPE_F16,
        Out::Weights(w) => w.tensor_type(),
    };
    w.write_all(&(dims.len() as i32).to_le_bytes())?;
    w.write_all(&(name.len() as i32).to_le_bytes())?;
    w.write_all(&ttype.to_le_bytes())?;
    for d in dims.iter().rev() {
        let d =
            i32::try_from(*d).map_err(|_| WriteError::Model(format!("`{name}` is too large")))?;
        w.write_all(&d.to_le_bytes())?;
    }
    w.write_all(name.as_bytes())?;
    let f32_out = matches!(out, Out::F32);
    if let Out::Weights(kind @ (GgmlWeights::Q8_0 | GgmlWeights::Q5_1)) = out {
        let values = to_f32(name, src_dtype, src)?;
        if dims.last().is_none_or(|&n| n % quant::BLOCK != 0) {
            return Err(WriteError::Model(format!(
                "`{name}` has rows of {dims:?}, not a multiple of {} values: cannot be quantised",
                quant::BLOCK
            )));
        }
        let mut bytes = Vec::with_capacity(values.len());
        match kind {
            GgmlWeights::Q8_0 => quant::q8_0(&values, &mut bytes),
            _ => quant::q5_1(&values, &mut bytes),
        }
        w.write_all(&bytes)?;
        return Ok(());
    }
    match (src_dtype, f32_out) {
        (Ct2Dtype::F16, false) | (Ct2Dtype::F32, true) => w.write_all(src)?,
        (Ct2Dtype::F16, true) => {
            let mut out = Vec::with_capacity(src.len() * 2);
            for c in src.chunks_exact(2) {
                out.extend_from_slice(&f16::from_le_bytes([c[0], c[1]]).to_f32().to_le_bytes());
            }
            w.write_all(&out)?;
        }
        (Ct2Dtype::F32, false) => {
            let mut out = Vec::with_capacity(src.len() / 2);
            for c in src.chunks_exact(4) {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                out.extend_from_slice(&f16::from_f32(v).to_le_bytes());
            }
            w.write_all(&out)?;
        }
        (other, _) => {
            return Err(WriteError::Model(format!(
                "`{name}` is stored as {other:?}; only float16 and float32 CTranslate2 models can be imported \
                 (convert with --quantization float16)"
            )));
        }
    }
    Ok(())
}

/// The values of a float16 or float32 variable.
fn to_f32(name: &str, dtype: Ct2Dtype, src: &[u8]) -> Result<Vec<f32>, WriteError> {
    match dtype {
        Ct2Dtype::F16 => Ok(src
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        Ct2Dtype::F32 => Ok(src
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        other => Err(WriteError::Model(format!(
            "`{name}` is stored as {other:?}; only float16 and float32 CTranslate2 models can be imported"
        ))),
    }
}

struct Emitter<'m, 'a, W> {
    model: &'m Ct2Model<'a>,
    w: W,
    weights: GgmlWeights,
    count: usize,
}

impl<W: Write> Emitter<'_, '_, W> {
    /// Copies a whole variable, as f32 when it is 1-D, else as `out`.
    fn copy(&mut self, src: &str, dst: &str, out: Out) -> Result<(), WriteError> {
        let v = need(self.model, src)?;
        let out = if v.dims.len() == 1 { Out::F32 } else { out };
        put_tensor(&mut self.w, dst, &v.dims, v.dtype, v.data, out)?;
        self.count += 1;
        Ok(())
    }

    /// Writes rows `[part * rows, (part + 1) * rows)` of a fused variable of `parts` equal blocks.
    fn split(&mut self, src: &str, parts: usize, part: usize, dst: &str) -> Result<(), WriteError> {
        let v = need(self.model, src)?;
        let total = dim(v, 0, src)?;
        if total % parts != 0 {
            return Err(WriteError::Model(format!(
                "`{src}` has {total} rows, not divisible into {parts}"
            )));
        }
        let rows = total / parts;
        let row_bytes = v.data.len() / total.max(1);
        let data = &v.data[part * rows * row_bytes..(part + 1) * rows * row_bytes];
        let mut dims = v.dims.clone();
        dims[0] = rows;
        let out = if dims.len() == 1 {
            Out::F32
        } else {
            Out::Weights(self.weights)
        };
        put_tensor(&mut self.w, dst, &dims, v.dtype, data, out)?;
        self.count += 1;
        Ok(())
    }

    fn layer_norm(&mut self, src: &str, dst: &str) -> Result<(), WriteError> {
        self.copy(&format!("{src}/gamma"), &format!("{dst}.weight"), Out::F32)?;
        self.copy(&format!("{src}/beta"), &format!("{dst}.bias"), Out::F32)
    }

    fn linear(&mut self, src: &str, dst: &str) -> Result<(), WriteError> {
        let weights = Out::Weights(self.weights);
        self.copy(&format!("{src}/weight"), &format!("{dst}.weight"), weights)?;
        self.copy(&format!("{src}/bias"), &format!("{dst}.bias"), Out::F32)
    }

    /// Conv bias: PyTorch shape `[n_state, 1]`, stored f32.
    fn conv_bias(&mut self, src: &str, dst: &str) -> Result<(), WriteError> {
        let v = need(self.model, src)?;
        let n = dim(v, 0, src)?;
        put_tensor(&mut self.w, dst, &[n, 1], v.dtype, v.data, Out::F32)?;
        self.count += 1;
        Ok(())
    }

    fn ffn(&mut self, src: &str, dst: &str) -> Result<(), WriteError> {
        self.layer_norm(&format!("{src}/ffn/layer_norm"), &format!("{dst}.mlp_ln"))?;
        self.linear(&format!("{src}/ffn/linear_0"), &format!("{dst}.mlp.0"))?;
        self.linear(&format!("{src}/ffn/linear_1"), &format!("{dst}.mlp.2"))
    }

    /// Self-attention: CTranslate2 fuses q, k, v into `linear_0`; Whisper has no key bias.
    fn self_attention(&mut self, src: &str, dst: &str) -> Result<(), WriteError> {
        let s = format!("{src}/self_attention");
        self.layer_norm(&format!("{s}/layer_norm"), &format!("{dst}.attn_ln"))?;
        let (w, b) = (format!("{s}/linear_0/weight"), format!("{s}/linear_0/bias"));
        self.split(&w, 3, 0, &format!("{dst}.attn.query.weight"))?;
        self.split(&b, 3, 0, &format!("{dst}.attn.query.bias"))?;
        self.split(&w, 3, 1, &format!("{dst}.attn.key.weight"))?;
        self.split(&w, 3, 2, &format!("{dst}.attn.value.weight"))?;
        self.split(&b, 3, 2, &format!("{dst}.attn.value.bias"))?;
        self.linear(&format!("{s}/linear_1"), &format!("{dst}.attn.out"))
    }

    /// Cross-attention: query in `linear_0`, k and v fused in `linear_1`, output in `linear_2`.
    fn cross_attention(&mut self, src: &str, dst: &str) -> Result<(), WriteError> {
        let s = format!("{src}/attention");
        self.layer_norm(&format!("{s}/layer_norm"), &format!("{dst}.cross_attn_ln"))?;
        self.linear(&format!("{s}/linear_0"), &format!("{dst}.cross_attn.query"))?;
        let (w, b) = (format!("{s}/linear_1/weight"), format!("{s}/linear_1/bias"));
        self.split(&w, 2, 0, &format!("{dst}.cross_attn.key.weight"))?;
        self.split(&w, 2, 1, &format!("{dst}.cross_attn.value.weight"))?;
        self.split(&b, 2, 1, &format!("{dst}.cross_attn.value.bias"))?;
        self.linear(&format!("{s}/linear_2"), &format!("{dst}.cross_attn.out"))
    }
}

fn write_ggml<W: Write>(
    model: &Ct2Model<'_>,
    vocab: &[Vec<u8>],
    weights: GgmlWeights,
    mut w: W,
) -> Result<(WhisperHparams, usize), WriteError> {
    let hp = hparams(model)?;
    w.write_all(&GGML_MAGIC.to_le_bytes())?;
    let header = [
        hp.n_vocab,
        hp.n_audio_ctx,
        hp.n_audio_state,
        hp.n_audio_head,
        hp.n_audio_layer,
        hp.n_text_ctx,
        hp.n_text_state,
        hp.n_text_head,
        hp.n_text_layer,
        hp.n_mels,
    ];
    for v in header {
        w.write_all(&(v as i32).to_le_bytes())?;
    }
    w.write_all(&weights.ftype().to_le_bytes())?;

    let filters = mel_filters(hp.n_mels, 400, 16_000.0);
    w.write_all(&(hp.n_mels as i32).to_le_bytes())?;
    w.write_all(&201i32.to_le_bytes())?;
    for f in &filters {
        w.write_all(&f.to_le_bytes())?;
    }

    w.write_all(&(vocab.len() as i32).to_le_bytes())?;
    for token in vocab {
        w.write_all(&(token.len() as u32).to_le_bytes())?;
        w.write_all(token)?;
    }

    let mut e = Emitter {
        model,
        w: &mut w,
        weights,
        count: 0,
    };
    e.copy(
        "encoder/position_encodings/encodings",
        "encoder.positional_embedding",
        Out::F32,
    )?;
    e.copy("encoder/conv1/weight", "encoder.conv1.weight", Out::F16)?;
    e.conv_bias("encoder/conv1/bias", "encoder.conv1.bias")?;
    e.copy("encoder/conv2/weight", "encoder.conv2.weight", Out::F16)?;
    e.conv_bias("encoder/conv2/bias", "encoder.conv2.bias")?;
    e.layer_norm("encoder/layer_norm", "encoder.ln_post")?;
    for i in 0..hp.n_audio_layer {
        let (src, dst) = (format!("encoder/layer_{i}"), format!("encoder.blocks.{i}"));
        e.self_attention(&src, &dst)?;
        e.ffn(&src, &dst)?;
    }
    e.copy(
        "decoder/position_encodings/encodings",
        "decoder.positional_embedding",
        Out::F32,
    )?;
    e.copy(
        "decoder/embeddings/weight",
        "decoder.token_embedding.weight",
        Out::Weights(weights),
    )?;
    e.layer_norm("decoder/layer_norm", "decoder.ln")?;
    for i in 0..hp.n_text_layer {
        let (src, dst) = (format!("decoder/layer_{i}"), format!("decoder.blocks.{i}"));
        e.self_attention(&src, &dst)?;
        e.cross_attention(&src, &dst)?;
        e.ffn(&src, &dst)?;
    }
    Ok((hp, e.count))
}

/// GPT-2's byte-level alphabet: the character that stands for each byte value.
fn byte_alphabet() -> BTreeMap<char, u8> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut map = BTreeMap::new();
    let mut extra = 0u32;
    for b in 0u32..256 {
        let c = if printable(b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        if let Some(ch) = char::from_u32(c) {
            map.insert(ch, b as u8);
        }
    }
    map
}

/// Reads `model.vocab` from a Hugging Face `tokenizer.json` and returns the tokens ordered by id,
/// decoded from GPT-2's byte-level alphabet back to raw bytes.
pub fn vocabulary_from_tokenizer_json(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let vocab = json
        .get("model")
        .and_then(|m| m.get("vocab"))
        .and_then(|v| v.as_object())
        .ok_or("no `model.vocab` object")?;
    let alphabet = byte_alphabet();
    let mut by_id: Vec<Option<Vec<u8>>> = vec![None; vocab.len()];
    for (token, id) in vocab {
        let id = id
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < by_id.len())
            .ok_or_else(|| format!("token `{token}` has id {id}, outside 0..{}", by_id.len()))?;
        let bytes = token
            .chars()
            .map(|c| alphabet.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| {
                format!("token `{token}` has a character outside the byte-level alphabet")
            })?;
        if by_id[id].replace(bytes).is_some() {
            return Err(format!("id {id} is used twice"));
        }
    }
    by_id
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| format!("no token has id {i}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_tokens_decode_to_bytes() {
        let json = r#"{"model":{"vocab":{"!":0,"Ġthe":1,"Ċ":2,"<|endoftext|>":3}}}"#;
        let v = vocabulary_from_tokenizer_json(json).unwrap();
        assert_eq!(v[0], b"!");
        assert_eq!(v[1], b" the");
        assert_eq!(v[2], b"\n");
        assert_eq!(v[3], b"<|endoftext|>");
    }

    #[test]
    fn bad_vocabularies_are_errors() {
        assert!(vocabulary_from_tokenizer_json("{}").is_err());
        assert!(vocabulary_from_tokenizer_json(r#"{"model":{"vocab":{"a":0,"b":0}}}"#).is_err());
        assert!(vocabulary_from_tokenizer_json(r#"{"model":{"vocab":{"a":5}}}"#).is_err());
        assert!(vocabulary_from_tokenizer_json(r#"{"model":{"vocab":{"\u0001":0}}}"#).is_err());
    }

    /// The variables of a one-layer CTranslate2 Whisper model of width `n`, f16 values from
    /// `f16s(count)`: (name, dims, dtype, bytes).
    fn synthetic_vars(
        n: usize,
        f16s: impl Fn(usize) -> Vec<u8>,
    ) -> Vec<(String, Vec<u32>, u8, Vec<u8>)> {
        let mut vars: Vec<(String, Vec<u32>, u8, Vec<u8>)> = vec![
            (
                "encoder/num_heads".into(),
                vec![],
                2,
                1i16.to_le_bytes().to_vec(),
            ),
            (
                "decoder/num_heads".into(),
                vec![],
                2,
                1i16.to_le_bytes().to_vec(),
            ),
            (
                "decoder/embeddings/weight".into(),
                vec![3, n as u32],
                4,
                f16s(3 * n),
            ),
            (
                "encoder/position_encodings/encodings".into(),
                vec![4, n as u32],
                4,
                f16s(4 * n),
            ),
            (
                "decoder/position_encodings/encodings".into(),
                vec![5, n as u32],
                4,
                f16s(5 * n),
            ),
            (
                "encoder/conv1/weight".into(),
                vec![n as u32, 80, 3],
                4,
                f16s(n * 80 * 3),
            ),
            ("encoder/conv1/bias".into(), vec![n as u32], 4, f16s(n)),
            (
                "encoder/conv2/weight".into(),
                vec![n as u32, n as u32, 3],
                4,
                f16s(n * n * 3),
            ),
            ("encoder/conv2/bias".into(), vec![n as u32], 4, f16s(n)),
        ];
        for p in ["encoder/layer_norm", "decoder/layer_norm"] {
            vars.push((format!("{p}/gamma"), vec![n as u32], 4, f16s(n)));
            vars.push((format!("{p}/beta"), vec![n as u32], 4, f16s(n)));
        }
        for side in ["encoder", "decoder"] {
            let l = format!("{side}/layer_0");
            let mut norms = vec!["self_attention/layer_norm", "ffn/layer_norm"];
            let mut lins = vec![
                ("self_attention/linear_0", 3 * n, n),
                ("self_attention/linear_1", n, n),
                ("ffn/linear_0", 4 * n, n),
                ("ffn/linear_1", n, 4 * n),
            ];
            if side == "decoder" {
                norms.push("attention/layer_norm");
                lins.extend([
                    ("attention/linear_0", n, n),
                    ("attention/linear_1", 2 * n, n),
                    ("attention/linear_2", n, n),
                ]);
            }
            for p in norms {
                vars.push((format!("{l}/{p}/gamma"), vec![n as u32], 4, f16s(n)));
                vars.push((format!("{l}/{p}/beta"), vec![n as u32], 4, f16s(n)));
            }
            for (name, rows, cols) in lins {
                let w = (rows as u32, cols as u32);
                vars.push((
                    format!("{l}/{name}/weight"),
                    vec![w.0, w.1],
                    4,
                    f16s(rows * cols),
                ));
                vars.push((format!("{l}/{name}/bias"), vec![rows as u32], 4, f16s(rows)));
            }
        }
        vars
    }

    #[test]
    fn tiny_synthetic_model_converts() {
        use crate::ct2::tests::write_model;
        use nina_models::inspect_ggml;
        let n = 2usize;
        let f16s = |count: usize| vec![0u8; count * 2];
        let vars = synthetic_vars(n, f16s);
        let refs: Vec<(&str, Vec<u32>, u8, Vec<u8>)> = vars
            .iter()
            .map(|(a, b, c, d)| (a.as_str(), b.clone(), *c, d.clone()))
            .collect();
        let bin = write_model(&refs, &[]);
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("model.bin.part1"), &bin[..100]).unwrap();
        fs::write(dir.path().join("model.bin.part2"), &bin[100..]).unwrap();
        fs::write(
            dir.path().join("tokenizer.json"),
            r#"{"model":{"vocab":{"a":0,"b":1}}}"#,
        )
        .unwrap();
        let out = dir.path().join("ggml.bin");
        let r = import_ct2_whisper(dir.path(), &out, GgmlWeights::F16, None).unwrap();
        assert_eq!(r.hparams.n_audio_layer, 1);
        assert_eq!(r.hparams.n_text_layer, 1);
        assert_eq!(r.hparams.n_mels, 80);
        assert_eq!(r.vocab_tokens, 2);
        // encoder: pos, conv x4, ln_post x2, layer (attn_ln 2 + q w/b + k + v w/b + out 2 + mlp 6) = 15
        // decoder: pos, tok, ln x2, layer (15 + cross 2 + q 2 + k + v 2 + out 2 = 24)
        assert_eq!(r.tensors, 7 + 15 + 4 + 24);
        let bytes = fs::read(&out).unwrap();
        assert_eq!(&bytes[..4], &GGML_MAGIC.to_le_bytes());
        assert_eq!(r.bytes, bytes.len() as u64);
        assert_eq!(r.sha256, nina_fs::sha256_bytes(&bytes));

        // With a pin: an output with another digest is refused before it is renamed into place
        // (an existing file stays as it was); the right one is stamped as verified.
        let pinned = dir.path().join("pinned.bin");
        fs::write(&pinned, b"older").unwrap();
        let err = import_ct2_whisper(dir.path(), &pinned, GgmlWeights::F16, Some(&"0".repeat(64)))
            .unwrap_err();
        assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
        assert_eq!(fs::read(&pinned).unwrap(), b"older");
        let again =
            import_ct2_whisper(dir.path(), &pinned, GgmlWeights::F16, Some(&r.sha256)).unwrap();
        assert_eq!(again.sha256, r.sha256);
        assert!(nina_models::verify::stamp_path(&pinned).is_file());
        assert_eq!(nina_fs::remove_temp_files(dir.path()).unwrap(), 0);
        assert_eq!(inspect_ggml(&out).unwrap(), r.hparams);
        // Truncation anywhere in the tensors, or a foreign file, is detected before whisper.cpp sees it.
        let cut = dir.path().join("cut.bin");
        fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
        assert!(
            inspect_ggml(&cut)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        fs::write(&cut, b"RIFF....WAVEfmt ").unwrap();
        assert!(
            inspect_ggml(&cut)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );

        // A missing variable is an error naming it, and leaves no output behind.
        let cut: Vec<_> = refs
            .iter()
            .filter(|v| v.0 != "decoder/num_heads")
            .cloned()
            .collect();
        fs::remove_file(dir.path().join("model.bin.part2")).unwrap();
        fs::write(dir.path().join("model.bin.part1"), write_model(&cut, &[])).unwrap();
        let out2 = dir.path().join("other.bin");
        let err = import_ct2_whisper(dir.path(), &out2, GgmlWeights::F16, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("decoder/num_heads"), "{err}");
        assert!(!out2.exists());

        // Rows too short for 32-value blocks cannot be quantised: an error, and no output.
        fs::write(dir.path().join("model.bin.part1"), &bin).unwrap();
        for w in [GgmlWeights::Q8_0, GgmlWeights::Q5_1] {
            let err = import_ct2_whisper(dir.path(), &out2, w, None)
                .unwrap_err()
                .to_string();
            assert!(err.contains("cannot be quantised"), "{err}");
            assert!(!out2.exists());
        }
    }

    #[test]
    fn quantised_imports_give_whisper_cpp_its_types_and_sizes() {
        use crate::ct2::tests::write_model;
        use nina_models::inspect_ggml;
        let n = 64usize;
        let f16s = |count: usize| {
            (0..count)
                .flat_map(|i| f16::from_f32((i % 7) as f32 / 7.0 - 0.5).to_le_bytes())
                .collect::<Vec<u8>>()
        };
        let vars = synthetic_vars(n, f16s);
        let refs: Vec<(&str, Vec<u32>, u8, Vec<u8>)> = vars
            .iter()
            .map(|(a, b, c, d)| (a.as_str(), b.clone(), *c, d.clone()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("model.bin"), write_model(&refs, &[])).unwrap();
        fs::write(
            dir.path().join("tokenizer.json"),
            r#"{"model":{"vocab":{"a":0,"b":1}}}"#,
        )
        .unwrap();
        // Per tensor: (name, ggml type, data bytes), read back from the file.
        let tensors = |path: &Path| {
            let b = fs::read(path).unwrap();
            let i32_at = |o: usize| i32::from_le_bytes(b[o..o + 4].try_into().unwrap());
            assert_eq!(
                (i32_at(48), i32_at(52)),
                (80, 201),
                "the filter bank after the header"
            );
            let mut o = 4 * 12 + 4 + 4 + 80 * 201 * 4;
            let tokens = i32_at(o);
            o += 4;
            for _ in 0..tokens {
                o += 4 + i32_at(o) as usize;
            }
            let mut out = Vec::new();
            while o < b.len() {
                let (dims, len, ttype) = (i32_at(o), i32_at(o + 4), i32_at(o + 8));
                let count: i32 = (0..dims).map(|d| i32_at(o + 12 + 4 * d as usize)).product();
                let at = o + 12 + 4 * dims as usize;
                let name = String::from_utf8(b[at..at + len as usize].to_vec()).unwrap();
                let size = match ttype {
                    0 => count as usize * 4,
                    1 => count as usize * 2,
                    7 => count as usize / 32 * 24,
                    8 => count as usize / 32 * 34,
                    t => panic!("type {t}"),
                };
                out.push((name, ttype, size));
                o = at + len as usize + size;
            }
            assert_eq!(o, b.len());
            (i32_at(44), out)
        };
        let f16_out = dir.path().join("f16.bin");
        import_ct2_whisper(dir.path(), &f16_out, GgmlWeights::F16, None).unwrap();
        let (ftype, base) = tensors(&f16_out);
        assert_eq!(ftype, 1);
        for w in [GgmlWeights::Q8_0, GgmlWeights::Q5_1] {
            let out = dir.path().join(format!("{}.bin", w.name()));
            let r = import_ct2_whisper(dir.path(), &out, w, None).unwrap();
            assert_eq!(inspect_ggml(&out).unwrap(), r.hparams);
            let (ftype, quantised) = tensors(&out);
            assert_eq!(ftype, w.ftype());
            assert_eq!(quantised.len(), base.len());
            for ((name, t0, _), (name1, t1, _)) in base.iter().zip(&quantised) {
                assert_eq!(name, name1);
                // Exactly the f16 matrices are quantised, except the convolutions (whisper.cpp
                // wants those in f16 in every file).
                let expect = if *t0 == 1 && !name.contains("conv") {
                    w.tensor_type()
                } else {
                    *t0
                };
                assert_eq!(*t1, expect, "{name}");
            }
            assert!(r.bytes < fs::metadata(&f16_out).unwrap().len());
        }
    }
}
