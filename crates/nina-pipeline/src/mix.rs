//! One time-aligned file of a whole call: every user's archival track decoded, brought to a
//! common speech level and summed, in chunks (never a whole track of PCM in memory).
//!
//! Levels: each user's *active-speech RMS* (the RMS over the 20 ms frames within 30 dB of the
//! track's loudest frames and above -60 dBFS) is brought to [`MixOptions::target_dbfs`], with
//! the gain bounded by [`MixOptions::max_gain_db`]. A limiter with instant attack and a 50 ms
//! release keeps the sum within -0.5 dBFS, so the mix never clips.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use nina_store::{OpusTrack, SessionDir, TRACK_RATE};

use crate::PipelineError;
use crate::decode::audio_err;
use crate::tracks::{TrackDecoder, read_track};

/// Default output name, in the session directory.
pub const MIX_FILE: &str = "mix.wav";
/// Frames of one analysis frame (20 ms at 48 kHz).
const FRAME: usize = 960;
/// Frames mixed per chunk (one second).
const CHUNK: usize = TRACK_RATE as usize;
/// Peak ceiling of the mix, linear (-0.5 dBFS).
const CEILING: f32 = 0.944;

/// How to mix.
#[derive(Debug, Clone)]
pub struct MixOptions {
    /// Active-speech RMS every user is brought to, in dBFS.
    pub target_dbfs: f64,
    /// Largest gain applied to a quiet user, in dB (and the largest cut).
    pub max_gain_db: f64,
}

impl Default for MixOptions {
    fn default() -> Self {
        Self {
            target_dbfs: -20.0,
            max_gain_db: 30.0,
        }
    }
}

/// One user's part of a mix.
#[derive(Debug, Clone, PartialEq)]
pub struct MixedTrack {
    /// The user.
    pub user_id: u64,
    /// Their active-speech RMS before the gain, dBFS (`None`: no speech heard).
    pub active_dbfs: Option<f64>,
    /// The gain applied, dB.
    pub gain_db: f64,
    /// Seconds of the track used (less than recorded if it was torn).
    pub seconds: f64,
    /// Why the track was not used whole, if it was not.
    pub damage: Option<String>,
}

/// What [`mix_session`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct MixReport {
    /// The file written.
    pub path: PathBuf,
    /// Its length, seconds.
    pub seconds: f64,
    /// Each user's track.
    pub tracks: Vec<MixedTrack>,
    /// Fraction of samples the limiter turned down (0 when the sum never came near clipping).
    pub limited: f64,
}

fn dbfs(rms: f64) -> f64 {
    20.0 * rms.max(1e-10).log10()
}

/// A track decoded on demand at 48 kHz mono, in session-clock order; silence past its end.
struct Source {
    track: OpusTrack,
    dec: TrackDecoder,
    next: usize,
    pending: Vec<f32>,
    gain: f32,
}

impl Source {
    fn new(path: &Path, track: OpusTrack) -> Result<Self, PipelineError> {
        Ok(Self {
            track,
            dec: TrackDecoder::new(path, TRACK_RATE, 1)?,
            next: 0,
            pending: Vec::new(),
            gain: 1.0,
        })
    }

    /// Adds the next `out.len()` samples, times the gain, into `out`.
    fn add_into(&mut self, out: &mut [f32]) {
        while self.pending.len() < out.len() && self.next < self.track.packets.len() {
            let p = &self.track.packets[self.next];
            let pcm = self.dec.decode(&p.data, p.samples);
            self.pending.extend_from_slice(pcm);
            self.next += 1;
        }
        let n = self.pending.len().min(out.len());
        for (o, s) in out.iter_mut().zip(self.pending.drain(..n)) {
            *o += s * self.gain;
        }
    }
}

/// The active-speech RMS of a track (decoded once, frame by frame), or `None` if silent.
fn active_rms(path: &Path, track: &OpusTrack) -> Result<Option<f64>, PipelineError> {
    let mut dec = TrackDecoder::new(path, TRACK_RATE, 1)?;
    let mut energies: Vec<f64> = Vec::with_capacity(track.packets.len());
    let mut frame: Vec<f32> = Vec::with_capacity(FRAME * 2);
    for p in &track.packets {
        frame.extend_from_slice(dec.decode(&p.data, p.samples));
        while frame.len() >= FRAME {
            let e = frame[..FRAME]
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                / FRAME as f64;
            energies.push(e);
            frame.drain(..FRAME);
        }
    }
    let loudest = energies.iter().copied().fold(0.0, f64::max);
    let floor = (loudest * 1e-3).max(1e-6); // 30 dB below the loudest, and -60 dBFS
    let active: Vec<f64> = energies.into_iter().filter(|&e| e > floor).collect();
    if active.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        (active.iter().sum::<f64>() / active.len() as f64).sqrt(),
    ))
}

/// Mixes every track of the session in `dir` into `out` (48 kHz mono 16-bit WAV, written
/// atomically), each user brought to the same speech level. Takes the session's lock. A torn
/// or damaged track is used as far as it is whole (with a warning); a missing one is left out
/// with a warning; a session with no track to mix is an error.
pub fn mix_session(
    dir: &SessionDir,
    out: &Path,
    opts: &MixOptions,
) -> Result<MixReport, PipelineError> {
    let (_lock, session) = dir.open()?;
    let mut sources = Vec::new();
    let mut report = Vec::new();
    for t in &session.tracks {
        let path = dir.file(&t.file)?;
        let track = match read_track(dir, t) {
            Ok(track) => track,
            Err(e) if !path.exists() => {
                tracing::warn!("left out of the mix: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let rms = active_rms(&path, &track)?;
        let gain_db = rms.map_or(0.0, |r| {
            (opts.target_dbfs - dbfs(r)).clamp(-opts.max_gain_db, opts.max_gain_db)
        });
        report.push(MixedTrack {
            user_id: t.user_id,
            active_dbfs: rms.map(dbfs),
            gain_db,
            seconds: track.samples() as f64 / f64::from(TRACK_RATE),
            damage: track.damage.clone(),
        });
        let mut s = Source::new(&path, track)?;
        s.gain = 10f64.powf(gain_db / 20.0) as f32;
        sources.push(s);
    }
    if sources.is_empty() {
        return Err(audio_err(
            dir.root(),
            "the session has no archival track to mix",
        ));
    }
    let total = sources.iter().map(|s| s.track.samples()).max().unwrap_or(0);
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: TRACK_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut limited = 0u64;
    nina_fs::write_with(out, |file| -> Result<(), PipelineError> {
        let wav_err = |e: hound::Error| audio_err(out, e);
        let mut w = hound::WavWriter::new(BufWriter::new(file), spec).map_err(wav_err)?;
        let mut buf = vec![0.0f32; CHUNK];
        let mut env = 1.0f32; // the limiter's gain
        let release = (-1.0 / (0.050 * TRACK_RATE as f32)).exp();
        let mut done = 0u64;
        while done < total {
            let n = usize::try_from((total - done).min(CHUNK as u64)).unwrap_or(CHUNK);
            let chunk = &mut buf[..n];
            chunk.fill(0.0);
            for s in &mut sources {
                s.add_into(chunk);
            }
            for x in chunk.iter() {
                let peak = x.abs();
                // Release towards 1, attack at once: |x * env| never exceeds the ceiling.
                env = 1.0 - (1.0 - env) * release;
                if peak * env > CEILING {
                    env = CEILING / peak;
                    limited += 1;
                }
                let v = (x * env * 32767.0).round().clamp(-32768.0, 32767.0) as i16;
                w.write_sample(v).map_err(wav_err)?;
            }
            done += n as u64;
        }
        w.finalize().map_err(wav_err)?;
        Ok(())
    })?;
    let seconds = total as f64 / f64::from(TRACK_RATE);
    tracing::info!(path = %out.display(), seconds, tracks = report.len(), "mixed");
    Ok(MixReport {
        path: out.to_path_buf(),
        seconds,
        tracks: report,
        limited: if total == 0 {
            0.0
        } else {
            limited as f64 / total as f64
        },
    })
}

#[cfg(test)]
mod tests;
