//! Utterance audio as WAV files, written so that a crash or `kill -9` never leaves a corrupt file
//! behind: samples go to a hidden temporary name beside the target (`.<name>.<pid>.tmp`), the
//! header is finalised, the file is synced, renamed into place and the directory synced.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::Path;

use crate::{SampleFormat, SegmentError};

/// Suffix of temporary files; anything ending in it is a leftover of an interrupted write.
pub const TEMP_SUFFIX: &str = ".tmp";

fn io(path: &Path, e: impl Into<IoCause>) -> SegmentError {
    SegmentError::Io {
        path: path.to_path_buf(),
        source: e.into().0,
    }
}

/// An I/O error from std or from hound.
struct IoCause(std::io::Error);

impl From<std::io::Error> for IoCause {
    fn from(e: std::io::Error) -> Self {
        Self(e)
    }
}

impl From<hound::Error> for IoCause {
    fn from(e: hound::Error) -> Self {
        match e {
            hound::Error::IoError(e) => Self(e),
            other => Self(std::io::Error::other(other.to_string())),
        }
    }
}

/// The temporary name used while writing `path`.
pub fn temp_path(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}{TEMP_SUFFIX}", std::process::id()))
}

/// Writes interleaved samples (`[-1, 1]`) as a WAV file at `path`, atomically. `format` is the
/// source's: `I16` is stored as 16-bit PCM (losslessly, for samples that came from `i16`), `F32`
/// as 32-bit float.
pub fn write_atomic(
    path: &Path,
    samples: &[f32],
    sample_rate: u32,
    channels: u16,
    format: SampleFormat,
) -> Result<(), SegmentError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tmp = temp_path(path);
    let spec = hound::WavSpec {
        channels,
        sample_rate,
        bits_per_sample: match format {
            SampleFormat::I16 => 16,
            SampleFormat::F32 => 32,
        },
        sample_format: match format {
            SampleFormat::I16 => hound::SampleFormat::Int,
            SampleFormat::F32 => hound::SampleFormat::Float,
        },
    };
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        let mut w = hound::WavWriter::new(BufWriter::new(file), spec).map_err(|e| io(&tmp, e))?;
        for &s in samples {
            match format {
                SampleFormat::I16 => w.write_sample(f32_to_i16(s)),
                SampleFormat::F32 => w.write_sample(s),
            }
            .map_err(|e| io(&tmp, e))?;
        }
        w.finalize().map_err(|e| io(&tmp, e))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| io(path, e))?;
        sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Syncs a directory so a rename in it survives a power loss (best effort).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// `[-1, 1]` to 16-bit, exact for values that came from [`i16_to_f32`].
pub fn f32_to_i16(s: f32) -> i16 {
    (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// 16-bit to `[-1, 1]`.
pub fn i16_to_f32(s: i16) -> f32 {
    f32::from(s) / 32768.0
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
    /// 16-bit integer or 32-bit float.
    pub format: SampleFormat,
}

/// Reads a WAV file written by [`write_atomic`] (16-bit integer or 32-bit float PCM).
/// At most `max_samples` samples are read, so a lying header cannot exhaust memory.
pub fn read(path: &Path, max_samples: usize) -> Result<WavAudio, SegmentError> {
    let bad = |e: hound::Error| SegmentError::Audio(format!("{}: {e}", path.display()));
    let r = hound::WavReader::open(path).map_err(bad)?;
    let spec = r.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(SegmentError::Audio(format!(
            "{}: header has {} channels at {} Hz",
            path.display(),
            spec.channels,
            spec.sample_rate
        )));
    }
    let (format, samples) = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => (
            SampleFormat::I16,
            r.into_samples::<i16>()
                .take(max_samples)
                .map(|s| s.map(i16_to_f32))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?,
        ),
        (hound::SampleFormat::Float, 32) => (
            SampleFormat::F32,
            r.into_samples::<f32>()
                .take(max_samples)
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?,
        ),
        (f, b) => {
            return Err(SegmentError::Audio(format!(
                "{}: unsupported WAV sample format {f:?} {b}-bit",
                path.display()
            )));
        }
    };
    Ok(WavAudio {
        samples,
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_lossless_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/u.wav");
        let samples: Vec<f32> = (-300i16..300).map(|v| i16_to_f32(v * 100)).collect();
        write_atomic(&p, &samples, 48_000, 2, SampleFormat::I16).unwrap();
        let back = read(&p, usize::MAX).unwrap();
        assert_eq!(back.samples, samples);
        assert_eq!((back.sample_rate, back.channels), (48_000, 2));
        write_atomic(&p, &[0.25, -0.5], 16_000, 1, SampleFormat::F32).unwrap();
        let back = read(&p, usize::MAX).unwrap();
        assert_eq!(back.samples, vec![0.25, -0.5]);
        assert_eq!(back.format, SampleFormat::F32);
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.wav");
        fs::write(&p, b"RIFF\xff\xff\xff\xffWAVEjunk").unwrap();
        assert!(read(&p, 1000).is_err());
        fs::write(&p, b"").unwrap();
        assert!(read(&p, 1000).is_err());
    }
}
