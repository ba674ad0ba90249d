//! Decoding any audio file symphonia reads (WAV, FLAC, Ogg/Vorbis, MP3, ...) packet by packet,
//! so a long recording is never held in memory whole.

use std::fs::File;
use std::path::Path;

use nina_segment::{SampleFormat, StreamFormat};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::PipelineError;

/// Consecutive undecodable packets tolerated before the file is declared damaged.
const MAX_BAD_PACKETS: usize = 32;

/// An [`PipelineError::Audio`] about `path`.
pub(crate) fn audio_err(path: &Path, reason: impl std::fmt::Display) -> PipelineError {
    PipelineError::Audio {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Decodes `path`, calling `sink` with interleaved `f32` samples and the position (seconds) of
/// their first frame. Returns the stream's format and its duration in seconds.
///
/// Unreadable, unsupported, empty or damaged files give [`PipelineError::Audio`]; a panic inside
/// symphonia's demuxer or decoder is caught and reported the same way. Only those calls are
/// guarded: a panic in `sink` (the segmenter, the writer) is a bug of ours and propagates.
pub fn decode_file(
    path: &Path,
    mut sink: impl FnMut(&[f32], f64, StreamFormat) -> Result<(), PipelineError>,
) -> Result<(StreamFormat, f64), PipelineError> {
    let file = File::open(path).map_err(|e| audio_err(path, e))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        return Err(audio_err(path, "the file is empty"));
    }
    decode_inner(path, file, &mut sink)
}

/// Runs one call into symphonia, turning a panic on malformed data into an audio error.
fn guarded<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, PipelineError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| audio_err(path, "the decoder failed on malformed data"))
}

/// Receives decoded samples: interleaved `f32`, the position of their first frame, the format.
type Sink<'a> = dyn FnMut(&[f32], f64, StreamFormat) -> Result<(), PipelineError> + 'a;

fn decode_inner(
    path: &Path,
    file: File,
    sink: &mut Sink<'_>,
) -> Result<(StreamFormat, f64), PipelineError> {
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let probed = guarded(path, || {
        symphonia::default::get_probe().format(
            &hint,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
    })?
    .map_err(|e| audio_err(path, format!("unsupported or unrecognised format ({e})")))?;
    let mut reader = probed.format;
    let track = reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| audio_err(path, "no audio track"))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let mut decoder = guarded(path, || {
        symphonia::default::get_codecs().make(&params, &DecoderOptions::default())
    })?
    .map_err(|e| audio_err(path, format!("unsupported codec ({e})")))?;
    let lossy_or_16 = params.bits_per_sample.is_none_or(|b| b <= 16);
    let sample_format = if lossy_or_16 {
        SampleFormat::I16
    } else {
        SampleFormat::F32
    };
    let mut format: Option<StreamFormat> = None;
    let mut frames: u64 = 0;
    let mut bad = 0usize;
    let mut buf: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match guarded(path, || reader.next_packet())? {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => {
                if frames > 0 {
                    tracing::warn!(path = %path.display(), "stopping at damaged data: {e}");
                    break;
                }
                return Err(audio_err(path, e));
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match guarded(path, || decoder.decode(&packet))? {
            Ok(d) => d,
            Err(SymError::DecodeError(e)) => {
                bad += 1;
                tracing::debug!("skipping an undecodable packet: {e}");
                if bad > MAX_BAD_PACKETS {
                    return Err(audio_err(path, format!("too many damaged packets ({e})")));
                }
                continue;
            }
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(audio_err(path, e)),
        };
        bad = 0;
        let spec = *decoded.spec();
        let channels = u16::try_from(spec.channels.count()).unwrap_or(0);
        let this = StreamFormat {
            sample_rate: spec.rate,
            channels,
            format: sample_format,
        };
        match format {
            None => format = Some(this),
            Some(f) if f != this => {
                return Err(audio_err(
                    path,
                    format!("the format changes mid-stream ({f:?} then {this:?})"),
                ));
            }
            _ => {}
        }
        if decoded.frames() == 0 {
            continue;
        }
        let needed = decoded.capacity() as u64;
        if buf
            .as_ref()
            .is_none_or(|b| b.capacity() < decoded.capacity() * spec.channels.count())
        {
            buf = Some(SampleBuffer::new(needed, spec));
        }
        let Some(b) = buf.as_mut() else { continue };
        b.copy_interleaved_ref(decoded);
        let at = frames as f64 / f64::from(spec.rate.max(1));
        sink(b.samples(), at, this)?;
        frames += (b.samples().len() / usize::from(channels.max(1))) as u64;
    }
    let format = format.ok_or_else(|| audio_err(path, "no audio could be decoded"))?;
    if frames == 0 {
        return Err(audio_err(path, "no audio could be decoded"));
    }
    Ok((format, frames as f64 / f64::from(format.sample_rate.max(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(path: &Path, rate: u32, channels: u16, n: usize) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..n * usize::from(channels) {
            w.write_sample(((i % 200) as i16 - 100) * 100).unwrap();
        }
        w.finalize().unwrap();
    }

    #[test]
    fn decodes_wav_in_pieces_with_positions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        wav(&p, 44_100, 2, 44_100 * 3 / 2);
        let mut total = 0usize;
        let mut last_at = -1.0;
        let (fmt, secs) = decode_file(&p, |s, at, f| {
            assert_eq!((f.sample_rate, f.channels), (44_100, 2));
            assert!((at - total as f64 / 2.0 / 44_100.0).abs() < 1e-9 && at > last_at);
            last_at = at;
            total += s.len();
            Ok(())
        })
        .unwrap();
        assert_eq!(fmt.format, SampleFormat::I16);
        assert_eq!(total, 44_100 * 3);
        assert!((secs - 1.5).abs() < 1e-9);
    }

    #[test]
    fn hostile_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.wav");
        std::fs::write(&p, b"").unwrap();
        let e = decode_file(&p, |_, _, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        std::fs::write(&p, b"hello, this is not audio at all").unwrap();
        assert!(matches!(
            decode_file(&p, |_, _, _| Ok(())),
            Err(PipelineError::Audio { .. })
        ));
        assert!(decode_file(&dir.path().join("missing.wav"), |_, _, _| Ok(())).is_err());
    }

    #[test]
    #[should_panic(expected = "a bug in the sink")]
    fn a_panic_in_the_sink_is_not_malformed_audio() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        wav(&p, 16_000, 1, 4000);
        let _ = decode_file(&p, |_, _, _| panic!("a bug in the sink"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever the damage, decoding returns: samples that are finite, positions that only
        /// grow and stay within the file, and a format that holds; or an audio error.
        #[test]
        fn mutated_wavs_decode_or_are_audio_errors(pos in 0usize..64, byte in proptest::num::u8::ANY, cut in 0usize..3000) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("m.wav");
            wav(&p, 16_000, 1, 1000);
            let mut bytes = std::fs::read(&p).unwrap();
            bytes[pos] = byte;
            let n = bytes.len();
            bytes.truncate(n - cut.min(n));
            std::fs::write(&p, &bytes).unwrap();
            let mut total = 0usize;
            let mut last = -1.0f64;
            let r = decode_file(&p, |s, at, _| {
                assert!(s.iter().all(|v| v.is_finite()), "non-finite sample");
                assert!(at > last, "positions went back");
                last = at;
                total += s.len();
                Ok(())
            });
            match r {
                Ok((f, secs)) => {
                    proptest::prop_assert!(total > 0 && secs > 0.0);
                    proptest::prop_assert!(f.channels > 0 && f.sample_rate > 0);
                }
                Err(e) => proptest::prop_assert!(matches!(e, PipelineError::Audio { .. }), "{e}"),
            }
        }
    }
}
