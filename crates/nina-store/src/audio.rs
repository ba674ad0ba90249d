//! Utterance audio as WAV files: written whole through [`nina_fs::write_with`] (a crash never
//! leaves a part), read back with a bound on what a lying header can make us allocate.

use std::io::BufWriter;
use std::path::Path;

use crate::StoreError;

/// How samples are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavEncoding {
    /// 16-bit integer PCM (lossless for samples that came from `i16`).
    I16,
    /// 32-bit float PCM.
    F32,
}

/// A WAV file read back: interleaved samples in `[-1, 1]` and their format.
#[derive(Debug, Clone, PartialEq)]
pub struct WavAudio {
    /// Interleaved samples.
    pub samples: Vec<f32>,
    /// Frames per second.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u16,
    /// How they were stored.
    pub encoding: WavEncoding,
}

/// `[-1, 1]` to 16-bit, exact for values that came from [`i16_to_f32`].
pub fn f32_to_i16(s: f32) -> i16 {
    (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// 16-bit to `[-1, 1]`.
pub fn i16_to_f32(s: i16) -> f32 {
    f32::from(s) / 32768.0
}

fn hound_err(path: &Path, e: hound::Error) -> StoreError {
    match e {
        hound::Error::IoError(e) => StoreError::io(path, e),
        other => StoreError::Invalid {
            path: path.to_path_buf(),
            field: "(audio)".into(),
            reason: other.to_string(),
        },
    }
}

/// Writes interleaved samples (`[-1, 1]`) as a WAV file at `path`, atomically.
pub fn write_wav(
    path: &Path,
    samples: &[f32],
    sample_rate: u32,
    channels: u16,
    encoding: WavEncoding,
) -> Result<(), StoreError> {
    let spec = hound::WavSpec {
        channels,
        sample_rate,
        bits_per_sample: match encoding {
            WavEncoding::I16 => 16,
            WavEncoding::F32 => 32,
        },
        sample_format: match encoding {
            WavEncoding::I16 => hound::SampleFormat::Int,
            WavEncoding::F32 => hound::SampleFormat::Float,
        },
    };
    nina_fs::write_with(path, |file| {
        let mut w =
            hound::WavWriter::new(BufWriter::new(file), spec).map_err(|e| hound_err(path, e))?;
        for &s in samples {
            match encoding {
                WavEncoding::I16 => w.write_sample(f32_to_i16(s)),
                WavEncoding::F32 => w.write_sample(s),
            }
            .map_err(|e| hound_err(path, e))?;
        }
        w.finalize().map_err(|e| hound_err(path, e))
    })
}

/// Reads a WAV file written by [`write_wav`] (16-bit integer or 32-bit float PCM). At most
/// `max_samples` samples are read, so a lying header cannot exhaust memory.
pub fn read_wav(path: &Path, max_samples: usize) -> Result<WavAudio, StoreError> {
    let bad = |reason: String| StoreError::Invalid {
        path: path.to_path_buf(),
        field: "(audio)".into(),
        reason,
    };
    let r = hound::WavReader::open(path).map_err(|e| hound_err(path, e))?;
    let spec = r.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(bad(format!(
            "header has {} channels at {} Hz",
            spec.channels, spec.sample_rate
        )));
    }
    let (encoding, samples) = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => (
            WavEncoding::I16,
            r.into_samples::<i16>()
                .take(max_samples)
                .map(|s| s.map(i16_to_f32))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| hound_err(path, e))?,
        ),
        (hound::SampleFormat::Float, 32) => (
            WavEncoding::F32,
            r.into_samples::<f32>()
                .take(max_samples)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| hound_err(path, e))?,
        ),
        (f, b) => return Err(bad(format!("unsupported WAV sample format {f:?} {b}-bit"))),
    };
    Ok(WavAudio {
        samples,
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        encoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn round_trip_is_lossless_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/u.wav");
        let samples: Vec<f32> = (-300i16..300).map(|v| i16_to_f32(v * 100)).collect();
        write_wav(&p, &samples, 48_000, 2, WavEncoding::I16).unwrap();
        let back = read_wav(&p, usize::MAX).unwrap();
        assert_eq!(back.samples, samples);
        assert_eq!((back.sample_rate, back.channels), (48_000, 2));
        write_wav(&p, &[0.25, -0.5], 16_000, 1, WavEncoding::F32).unwrap();
        let back = read_wav(&p, usize::MAX).unwrap();
        assert_eq!(back.samples, vec![0.25, -0.5]);
        assert_eq!(back.encoding, WavEncoding::F32);
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        assert_eq!(read_wav(&p, 1).unwrap().samples.len(), 1, "bounded read");
    }

    #[test]
    fn garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.wav");
        fs::write(&p, b"RIFF\xff\xff\xff\xffWAVEjunk").unwrap();
        assert!(matches!(
            read_wav(&p, 1000),
            Err(StoreError::Invalid { .. } | StoreError::Io { .. })
        ));
        fs::write(&p, b"").unwrap();
        assert!(read_wav(&p, 1000).is_err());
    }
}
