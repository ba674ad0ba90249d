//! Sessions recorded in raw mode: each user's archival Opus track (`tracks/<user_id>.opus`) is
//! decoded and segmented after the fact, with utterance times on the session clock.
//!
//! Tracks are decoded straight to 16 kHz mono (libopus decodes at any Opus rate): Whisper and
//! the voice detector work at 16 kHz, so decoding at 48 kHz stereo would only add a resampling
//! step and six times the utterance audio on disk. Measured figures are in `docs/pipeline.md`.

use std::path::Path;

use nina_segment::{SampleFormat, Samples, Segmenter, StreamFormat};
use nina_store::{OpusTrack, Processing, Session, SessionDir, TRACK_RATE, TrackRecord};
use serde_json::json;

use crate::decode::audio_err;
use crate::pipeline::{
    STEP_SEGMENT, digest, remove_unclaimed_outputs, remove_unnamed_audio, segmenter_options,
};
use crate::{Pipeline, PipelineError, Progress, SessionWriter};

/// The rate archival tracks are decoded at for segmentation and transcription.
pub const SEGMENT_RATE: u32 = 16_000;

/// Decodes one track's packets in order, at `rate` and `channels`, each packet where the track
/// places it on the session clock.
pub struct TrackDecoder {
    decoder: opus2::Decoder,
    rate: u32,
    channels: u16,
    buf: Vec<f32>,
}

impl std::fmt::Debug for TrackDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackDecoder")
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl TrackDecoder {
    /// A decoder giving `rate` (8, 12, 16, 24 or 48 kHz) with 1 or 2 channels.
    pub fn new(path: &Path, rate: u32, channels: u16) -> Result<Self, PipelineError> {
        let ch = match channels {
            1 => opus2::Channels::Mono,
            2 => opus2::Channels::Stereo,
            n => return Err(PipelineError::Config(format!("{n} channels"))),
        };
        let decoder = opus2::Decoder::new(rate, ch).map_err(|e| audio_err(path, e))?;
        Ok(Self {
            decoder,
            rate,
            channels,
            buf: vec![0.0; 5760 * usize::from(channels) * rate as usize / 48_000 + 16],
        })
    }

    /// Frames of output one packet of `samples` (48 kHz) gives.
    pub fn frames_of(&self, samples: u32) -> usize {
        (u64::from(samples) * u64::from(self.rate) / u64::from(TRACK_RATE)) as usize
    }

    /// Decodes one packet of `samples` (48 kHz) into interleaved samples. A packet libopus
    /// refuses becomes silence of the same length (the reader already checked its TOC).
    pub fn decode(&mut self, packet: &[u8], samples: u32) -> &[f32] {
        let frames = self.frames_of(samples);
        let ch = usize::from(self.channels);
        match self.decoder.decode_float(packet, &mut self.buf, false) {
            Ok(n) if n == frames => {}
            r => {
                tracing::warn!(?r, frames, "undecodable Opus packet: silence instead");
                self.buf[..frames * ch].fill(0.0);
            }
        }
        &self.buf[..frames * ch]
    }
}

/// Reads a session's track, what is whole of it if it is torn (with a warning).
pub fn read_track(dir: &SessionDir, t: &TrackRecord) -> Result<OpusTrack, PipelineError> {
    let path = dir.file(&t.file)?;
    let track = nina_store::read_opus_track(&path).map_err(|e| audio_err(&path, e))?;
    if let Some(d) = &track.damage {
        tracing::warn!(
            path = %path.display(),
            "track damaged ({d}); using the {:.1} s that are whole",
            track.samples() as f64 / f64::from(TRACK_RATE)
        );
    }
    Ok(track)
}

/// Whether the session's segmentation (if any) was made from its tracks.
fn segmented_from_tracks(s: &Session) -> bool {
    s.processing_of(STEP_SEGMENT)
        .is_some_and(|p| p.options.get("source").and_then(|v| v.as_str()) == Some("tracks"))
}

impl Pipeline {
    /// The segmentation key of `session`'s tracks: detector, its model, the options, the decoded
    /// format and each track's file, length and sha256.
    fn tracks_key(
        &self,
        dir: &SessionDir,
        session: &Session,
        detector: &str,
        vad_sha: Option<&str>,
        options: &serde_json::Value,
    ) -> Result<String, PipelineError> {
        let mut parts = vec![
            STEP_SEGMENT.to_string(),
            detector.to_string(),
            vad_sha.unwrap_or("").to_string(),
            options.to_string(),
        ];
        for t in &session.tracks {
            let path = dir.file(&t.file)?;
            let sha = nina_fs::sha256_file(&path).map_err(|e| audio_err(&path, e.source))?;
            parts.push(format!("{}|{sha}", t.file));
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        Ok(digest(&refs))
    }

    /// Segments a session recorded in raw mode (archival tracks, no decoding): each user's track
    /// is decoded to 16 kHz mono and cut into utterances filed under that user, with start times
    /// on the session clock (a track starts at the session start).
    ///
    /// Runs when the session has tracks and no segmentation, or when its segmentation was made
    /// from the tracks with other settings, or with `force`; otherwise returns the session as it
    /// is (a session segmented live is left alone without `force`). Crash-safe like
    /// [`Pipeline::segment_file`]: the session's lock, utterance names tagged with the step's
    /// key, `session.json` as the commit point, the old audio removed after it. A torn track is
    /// segmented as far as it is whole, with a warning.
    pub fn segment_tracks(
        &self,
        dir: &SessionDir,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Session, PipelineError> {
        let (lock, session) = dir.open()?;
        if session.tracks.is_empty() {
            return Err(PipelineError::Config(format!(
                "{} has no archival tracks to segment",
                dir.root().display()
            )));
        }
        let (detector, vad_sha) = self.detector()?;
        let name = detector.name();
        drop(detector);
        let mut options = segmenter_options(&self.config().segmenter);
        options["source"] = json!("tracks");
        options["decode_rate"] = json!(SEGMENT_RATE);
        let key = self.tracks_key(dir, &session, name, vad_sha, &options)?;
        let current = session.processing_of(STEP_SEGMENT).map(|p| p.key.as_str());
        if !force && current == Some(key.as_str()) {
            for t in &session.tracks {
                remove_unnamed_audio(dir, &session, t.user_id)?;
            }
            remove_unclaimed_outputs(dir, &session)?;
            return Ok(session);
        }
        if !force && !session.is_raw() && !segmented_from_tracks(&session) {
            tracing::info!(dir = %dir.root().display(), "segmented live; tracks left alone");
            return Ok(session);
        }
        let mut skeleton = session.clone();
        skeleton.utterances.clear();
        skeleton.processing.clear();
        let mut writer = SessionWriter::new(dir.clone(), skeleton, lock).tagged(&key[..8]);
        let mut longest = 0.0f64;
        for t in &session.tracks {
            longest = longest.max(self.segment_track(dir, t, &mut writer, progress)?);
        }
        let (mut out, _lock) = writer.into_parts();
        if out.ended_at_ms.is_none() {
            out.ended_at_ms = Some(out.started_at_ms + (longest * 1000.0).round() as i64);
        }
        out.processing = vec![Processing {
            step: STEP_SEGMENT.into(),
            name: name.into(),
            sha256: vad_sha.map(str::to_owned),
            options,
            key,
            failed: vec![],
        }];
        dir.save(&out)?; // the commit point
        for t in &session.tracks {
            remove_unnamed_audio(dir, &out, t.user_id)?;
        }
        remove_unclaimed_outputs(dir, &out)?;
        self.clear_transcription_work(dir)?;
        tracing::info!(
            dir = %dir.root().display(),
            tracks = session.tracks.len(),
            utterances = out.utterances.len(),
            "segmented tracks"
        );
        Ok(out)
    }

    /// Decodes one track through its own segmenter into `writer`; returns its length in seconds.
    fn segment_track(
        &self,
        dir: &SessionDir,
        t: &TrackRecord,
        writer: &mut SessionWriter,
        progress: &dyn Progress,
    ) -> Result<f64, PipelineError> {
        let path = dir.file(&t.file)?;
        let track = read_track(dir, t)?;
        let format = StreamFormat {
            sample_rate: SEGMENT_RATE,
            channels: 1,
            format: SampleFormat::F32,
        };
        let (detector, _) = self.detector()?;
        let mut seg = Segmenter::new(self.config().segmenter.clone(), format, detector)
            .map_err(|e| audio_err(&path, e))?;
        let mut dec = TrackDecoder::new(&path, SEGMENT_RATE, 1)?;
        // About a second per push: fewer calls, same result.
        let mut chunk: Vec<f32> = Vec::with_capacity(SEGMENT_RATE as usize + 2000);
        let mut chunk_at = 0.0;
        let rate = f64::from(TRACK_RATE);
        for p in &track.packets {
            if chunk.is_empty() {
                chunk_at = p.start as f64 / rate;
            }
            chunk.extend_from_slice(dec.decode(&p.data, p.samples));
            if chunk.len() >= SEGMENT_RATE as usize {
                for u in seg.push(Samples::F32(&chunk), chunk_at)? {
                    writer.utterance(t.user_id, &u)?;
                }
                chunk.clear();
                progress.decoded(p.start as f64 / rate);
            }
        }
        if !chunk.is_empty() {
            for u in seg.push(Samples::F32(&chunk), chunk_at)? {
                writer.utterance(t.user_id, &u)?;
            }
        }
        for u in seg.finish()? {
            writer.utterance(t.user_id, &u)?;
        }
        let seconds = track.samples() as f64 / rate;
        progress.decoded(seconds);
        Ok(seconds)
    }
}

#[cfg(test)]
pub(crate) mod tests;
