//! Audio helpers: read a WAV file as 48 kHz mono, and encode it to the 20 ms Opus frames
//! that a Discord client sends (48 kHz stereo).

use std::path::Path;

use rubato::{FftFixedInOut, Resampler};

use crate::error::{Error, Result};

/// Discord's RTP clock and Opus sample rate.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// The Opus frame Discord clients send to mean "silence" (also sent five times after speech).
pub const SILENCE_FRAME: [u8; 3] = [0xF8, 0xFF, 0xFE];

/// Reads a WAV file (any rate, 8/16/24/32-bit integer or 32-bit float, any channel count),
/// mixes it down to mono and resamples it to 48 kHz, as `f32` in `[-1, 1]`.
pub fn load_wav_mono_48k(path: &Path) -> Result<Vec<f32>> {
    let wav_err = |reason: String| Error::Wav {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = hound::WavReader::open(path).map_err(|e| wav_err(e.to_string()))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(wav_err("zero channels or zero sample rate".into()));
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(|e| wav_err(e.to_string()))?,
        hound::SampleFormat::Int => {
            if !(1..=32).contains(&spec.bits_per_sample) {
                return Err(wav_err(format!(
                    "unsupported {} bits",
                    spec.bits_per_sample
                )));
            }
            let scale = (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 / scale))
                .collect::<Result<_, _>>()
                .map_err(|e| wav_err(e.to_string()))?
        }
    };
    let channels = usize::from(spec.channels);
    let mono: Vec<f32> = interleaved
        .chunks(channels)
        .map(|c| c.iter().sum::<f32>() / channels as f32)
        .collect();
    resample_to_48k(&mono, spec.sample_rate)
}

/// Resamples mono audio from `rate` to 48 kHz (band-limited FFT resampler, delay compensated).
pub fn resample_to_48k(mono: &[f32], rate: u32) -> Result<Vec<f32>> {
    if rate == SAMPLE_RATE {
        return Ok(mono.to_vec());
    }
    if rate == 0 {
        return Err(Error::Audio("sample rate 0".into()));
    }
    let mut rs = FftFixedInOut::<f32>::new(rate as usize, SAMPLE_RATE as usize, 1024, 1)
        .map_err(|e| Error::Audio(e.to_string()))?;
    let delay = rs.output_delay();
    let want = (mono.len() as u64 * u64::from(SAMPLE_RATE)).div_ceil(u64::from(rate)) as usize;
    let mut out = Vec::with_capacity(want + delay + 4096);
    let mut pos = 0;
    // Feed the signal and then zeros until the delayed tail has come out.
    while out.len() < want + delay {
        let n = rs.input_frames_next();
        let mut chunk = vec![0.0f32; n];
        if pos < mono.len() {
            let take = n.min(mono.len() - pos);
            chunk[..take].copy_from_slice(&mono[pos..pos + take]);
        }
        pos += n;
        let res = rs
            .process(&[chunk], None)
            .map_err(|e| Error::Audio(e.to_string()))?;
        out.extend_from_slice(&res[0]);
    }
    Ok(out[delay..delay + want].to_vec())
}

/// Encodes 48 kHz mono audio into 20 ms Opus frames of 48 kHz stereo (both channels equal),
/// as a Discord client does. The last frame is padded with zeros.
pub fn encode_opus_frames(mono_48k: &[f32], bitrate: i32) -> Result<Vec<Vec<u8>>> {
    let aerr = |e: opus2::Error| Error::Audio(e.to_string());
    let mut enc = opus2::Encoder::new(
        SAMPLE_RATE,
        opus2::Channels::Stereo,
        opus2::Application::Audio,
    )
    .map_err(aerr)?;
    enc.set_bitrate(opus2::Bitrate::Bits(bitrate))
        .map_err(aerr)?;
    let mut frames = Vec::with_capacity(mono_48k.len() / FRAME_SAMPLES + 1);
    let mut pcm = vec![0i16; FRAME_SAMPLES * 2];
    let mut buf = vec![0u8; 4000];
    for chunk in mono_48k.chunks(FRAME_SAMPLES) {
        pcm.fill(0);
        for (i, s) in chunk.iter().enumerate() {
            let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
            pcm[2 * i] = v;
            pcm[2 * i + 1] = v;
        }
        let n = enc.encode(&pcm, &mut buf).map_err(aerr)?;
        frames.push(buf[..n].to_vec());
    }
    Ok(frames)
}

/// Decodes Opus frames (48 kHz stereo) back to 48 kHz mono with a fresh decoder, the way a
/// receiver that joins at the first frame would. Useful as the "what Opus allows" reference.
pub fn decode_opus_frames(frames: &[Vec<u8>]) -> Result<Vec<f32>> {
    let aerr = |e: opus2::Error| Error::Audio(e.to_string());
    let mut dec = opus2::Decoder::new(SAMPLE_RATE, opus2::Channels::Stereo).map_err(aerr)?;
    let mut out = Vec::with_capacity(frames.len() * FRAME_SAMPLES);
    let mut pcm = vec![0i16; 5760 * 2];
    for f in frames {
        let n = dec.decode(f, &mut pcm, false).map_err(aerr)?;
        out.extend(
            pcm[..2 * n]
                .chunks(2)
                .map(|c| (f32::from(c[0]) + f32::from(c[1])) / 65534.0),
        );
    }
    Ok(out)
}

/// How closely `decoded` reproduces `reference`, after finding the best alignment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// Lag (in samples) of `decoded` relative to `reference` at the best alignment.
    pub lag: i64,
    /// Normalised cross-correlation at that lag (1.0 = identical shape).
    pub correlation: f64,
    /// Signal-to-noise ratio in dB of `decoded` against `reference` after best gain.
    pub snr_db: f64,
}

/// Compares two 48 kHz mono signals, searching lags in `-max_lag..=max_lag`.
/// Returns `None` when either signal is silent or too short.
pub fn similarity(reference: &[f32], decoded: &[f32], max_lag: usize) -> Option<Similarity> {
    let max_lag = max_lag as i64;
    let mut best: Option<(i64, f64)> = None;
    for lag in -max_lag..=max_lag {
        let c = corr_at(reference, decoded, lag)?;
        if best.is_none_or(|(_, b)| c > b) {
            best = Some((lag, c));
        }
    }
    let (lag, correlation) = best?;
    // SNR with the least-squares gain at the best lag.
    let (rr, rd, dd) = energies(reference, decoded, lag);
    if rr <= 0.0 || dd <= 0.0 {
        return None;
    }
    let g = rd / dd;
    let mut noise = 0.0f64;
    for_overlap(reference, decoded, lag, |r, d| {
        let e = r - g * d;
        noise += e * e;
    });
    let snr_db = 10.0 * (rr / noise.max(1e-20)).log10();
    Some(Similarity {
        lag,
        correlation,
        snr_db,
    })
}

fn for_overlap(reference: &[f32], decoded: &[f32], lag: i64, mut f: impl FnMut(f64, f64)) {
    // decoded[i + lag] is compared with reference[i].
    for (i, r) in reference.iter().enumerate() {
        let j = i as i64 + lag;
        if j < 0 {
            continue;
        }
        let Some(d) = decoded.get(j as usize) else {
            break;
        };
        f(f64::from(*r), f64::from(*d));
    }
}

/// Sums of r², r·d and d² over the overlap at `lag`.
fn energies(reference: &[f32], decoded: &[f32], lag: i64) -> (f64, f64, f64) {
    let (mut rr, mut rd, mut dd) = (0.0f64, 0.0f64, 0.0f64);
    for_overlap(reference, decoded, lag, |r, d| {
        rr += r * r;
        rd += r * d;
        dd += d * d;
    });
    (rr, rd, dd)
}

fn corr_at(reference: &[f32], decoded: &[f32], lag: i64) -> Option<f64> {
    let (rr, rd, dd) = energies(reference, decoded, lag);
    if rr <= 0.0 || dd <= 0.0 {
        return None;
    }
    Some(rd / (rr.sqrt() * dd.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, secs: f32, hz: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| 0.3 * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn resample_keeps_length_and_shape() {
        let src = tone(16_000, 0.5, 440.0);
        let out = resample_to_48k(&src, 16_000).expect("resample");
        assert_eq!(out.len(), src.len() * 3);
        let want = tone(48_000, 0.5, 440.0);
        let s = similarity(&want, &out, 48).expect("similar");
        assert!(s.correlation > 0.99, "{s:?}");
        assert!(s.lag.abs() <= 2, "{s:?}");
    }

    #[test]
    fn opus_round_trip_frames_and_quality() {
        let src = tone(48_000, 1.0, 300.0);
        let frames = encode_opus_frames(&src, 64_000).expect("encode");
        assert_eq!(frames.len(), 50);
        assert!(frames.iter().all(|f| !f.is_empty() && f.len() < 1275));
        let dec = decode_opus_frames(&frames).expect("decode");
        assert_eq!(dec.len(), 50 * FRAME_SAMPLES);
        let s = similarity(&src, &dec, 960).expect("similar");
        assert!(s.correlation > 0.95, "{s:?}");
    }

    #[test]
    fn missing_wav_is_an_error_not_a_panic() {
        let err = load_wav_mono_48k(Path::new("/nonexistent/x.wav")).unwrap_err();
        assert!(matches!(err, Error::Wav { .. }));
    }
}
