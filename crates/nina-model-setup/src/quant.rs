//! ggml's block quantisations of weight matrices, as its reference quantiser computes them
//! (`quantize_row_q8_0_ref`, `quantize_row_q5_1_ref`): rows are cut into blocks of 32 values,
//! each stored with its own scale, so a file made here loads in whisper.cpp like one made by its
//! `quantize` tool.

use half::f16;

/// Values per block of every kind here.
pub const BLOCK: usize = 32;

/// Appends the q8_0 blocks of `x` (whose length is a multiple of [`BLOCK`]) to `out`: per block,
/// the scale `max |x| / 127` as f16, then 32 signed bytes `round(x / scale)`.
pub fn q8_0(x: &[f32], out: &mut Vec<u8>) {
    for block in x.chunks_exact(BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
    }
}

/// Appends the q5_1 blocks of `x` to `out`: per block, the step `(max - min) / 31` and `min` as
/// f16, 32 high bits in a little-endian u32, then 16 bytes of low nibbles (value `j` in the low
/// nibble of byte `j`, value `j + 16` in its high nibble).
pub fn q5_1(x: &[f32], out: &mut Vec<u8>) {
    for block in x.chunks_exact(BLOCK) {
        let (min, max) = block
            .iter()
            .fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
        let q = |v: f32| ((v - min) * id + 0.5) as u8;
        let mut qh = 0u32;
        let mut qs = [0u8; BLOCK / 2];
        for j in 0..BLOCK / 2 {
            let (a, b) = (q(block[j]), q(block[j + BLOCK / 2]));
            qs[j] = (a & 0x0f) | ((b & 0x0f) << 4);
            qh |= u32::from((a & 0x10) >> 4) << j;
            qh |= u32::from((b & 0x10) >> 4) << (j + BLOCK / 2);
        }
        out.extend_from_slice(&qh.to_le_bytes());
        out.extend_from_slice(&qs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dequant_q8_0(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(2 + BLOCK)
            .flat_map(|c| {
                let d = f16::from_le_bytes([c[0], c[1]]).to_f32();
                c[2..].iter().map(move |&q| f32::from(q as i8) * d)
            })
            .collect()
    }

    fn dequant_q5_1(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(24)
            .flat_map(|c| {
                let d = f16::from_le_bytes([c[0], c[1]]).to_f32();
                let m = f16::from_le_bytes([c[2], c[3]]).to_f32();
                let qh = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
                let qs = &c[8..24];
                (0..BLOCK)
                    .map(|j| {
                        let (nib, bit) = if j < 16 {
                            (qs[j] & 0x0f, (qh >> j) & 1)
                        } else {
                            (qs[j - 16] >> 4, (qh >> j) & 1)
                        };
                        f32::from(nib | ((bit as u8) << 4)) * d + m
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn a_known_block_quantises_as_ggml_does() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        let mut b = Vec::new();
        q8_0(&x, &mut b);
        assert_eq!(b.len(), 34);
        assert_eq!(
            f16::from_le_bytes([b[0], b[1]]),
            f16::from_f32(16.0 / 127.0)
        );
        assert_eq!(b[2] as i8, -127);
        assert_eq!(b[2 + 16] as i8, 0);
        let mut b = Vec::new();
        q5_1(&x, &mut b);
        assert_eq!(b.len(), 24);
        assert_eq!(f16::from_le_bytes([b[2], b[3]]).to_f32(), -16.0);
        // -16 -> 0, 15 -> 31: the first value is all zeros, the last has every bit set.
        assert_eq!(b[8] & 0x0f, 0);
        assert_eq!(b[8 + 15] >> 4, 0x0f);
        assert_eq!(u32::from_le_bytes([b[4], b[5], b[6], b[7]]) >> 31, 1);
        // A block of zeros has scale 0 and decodes to zeros.
        let mut z = Vec::new();
        q8_0(&[0.0; 32], &mut z);
        assert!(dequant_q8_0(&z).iter().all(|&v| v == 0.0));
    }

    proptest! {
        #[test]
        fn blocks_decode_within_half_a_step(x in proptest::collection::vec(-4.0f32..4.0, 32..=96)) {
            let x = &x[..x.len() / BLOCK * BLOCK];
            let (mut a, mut b) = (Vec::new(), Vec::new());
            q8_0(x, &mut a);
            q5_1(x, &mut b);
            prop_assert_eq!(a.len(), x.len() / BLOCK * 34);
            prop_assert_eq!(b.len(), x.len() / BLOCK * 24);
            for (blk, (ya, yb)) in x.chunks(BLOCK).zip(
                dequant_q8_0(&a).chunks(BLOCK).zip(dequant_q5_1(&b).chunks(BLOCK)),
            ) {
                let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
                let (lo, hi) = blk.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                // Half a step plus the f16 rounding of the scale (and of the minimum).
                let tol_a = amax / 127.0 * 0.5 + amax * 2e-3 + 1e-6;
                let tol_b = (hi - lo) / 31.0 * 0.5 + (hi - lo + lo.abs()) * 2e-3 + 1e-6;
                for ((v, p), q) in blk.iter().zip(ya).zip(yb) {
                    prop_assert!((v - p).abs() <= tol_a, "q8_0 {} -> {}", v, p);
                    prop_assert!((v - q).abs() <= tol_b, "q5_1 {} -> {}", v, q);
                }
            }
        }
    }
}
