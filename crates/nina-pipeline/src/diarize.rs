//! The diarization step: who speaks when within each user's stream of a stored session (a
//! file's session has one stream holding everyone). Each utterance is split into speech regions
//! by the voice-activity detector, its windows embedded with CAM++ and saved under `.work/` at
//! once, so an interrupted run resumes without embedding again; then the windows of each stream
//! are clustered and re-segmented ([`nina_diarize::Diarizer`]). Writes `diarization.rttm` and
//! `diarization.json` (speakers, turns, overlaps, and the speaker of every transcript segment,
//! and of every word where a segment straddles a turn change).

use std::collections::BTreeMap;

use nina_diarize::{
    DiarizeConfig, Diarizer, EmbeddedRegion, OnnxEmbedder, output, regions_from_probabilities,
};
use nina_models::catalog;
use nina_segment::vad::{FRAME, probabilities};
use nina_store::{Processing, Session, SessionDir, TRANSCRIPT_JSON};
use nina_transcribe::TranscriptDocument;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::pipeline::{digest, work_name};
use crate::{Pipeline, PipelineError, Progress};

/// Name of the diarization step in `session.json`.
pub const STEP_DIARIZE: &str = "diarize";
/// Speaker turns, RTTM.
pub const DIARIZATION_RTTM: &str = "diarization.rttm";
/// Speakers, turns, overlaps and the speaker of each transcript segment (and word).
pub const DIARIZATION_JSON: &str = "diarization.json";
const WORK_PREFIX: &str = "diarize-";

/// What [`Pipeline::diarize_session`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum DiarizeOutcome {
    /// Diarized.
    Done {
        /// Speakers found, over all streams.
        speakers: usize,
        /// Utterances whose embeddings an interrupted run had saved.
        resumed: usize,
        /// Seconds of utterance audio.
        audio_seconds: f64,
    },
    /// Already done with the same settings, utterances and transcript.
    Skipped,
}

/// One embedded region as saved under `.work/`.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    start: f64,
    end: f64,
    windows: Vec<(f64, f64, Vec<f32>)>,
}

impl Pipeline {
    /// Diarizes every user stream of the session in `dir` with `cfg`, on `threads` CPU threads.
    /// Skipped when done with the same settings, utterances and transcript, unless `force`.
    pub fn diarize_session(
        &self,
        dir: &SessionDir,
        cfg: &DiarizeConfig,
        threads: usize,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<DiarizeOutcome, PipelineError> {
        cfg.validate()?;
        let (_lock, mut session) = dir.open()?;
        let models = &self.config().models;
        let (mut vad, vad_sha) = self.detector()?;
        let mut utterances = String::new();
        for u in &session.utterances {
            utterances.push_str(&format!("{}|{}|{}|{};", u.file, u.start, u.end, u.user_id));
        }
        // Embeddings depend on the model, the VAD, the windows and the utterances; the result
        // on the clustering settings and the transcript too.
        let embed_key = digest(&[
            STEP_DIARIZE,
            catalog::CAMPPLUS.sha256,
            vad_sha.unwrap_or(vad.name()),
            &format!("{}|{}|{}", cfg.window, cfg.step, cfg.min_region),
            &utterances,
        ]);
        let transcript = std::fs::read(dir.root().join(TRANSCRIPT_JSON)).ok();
        let transcript_sha = transcript
            .as_deref()
            .map_or_else(String::new, nina_fs::sha256_bytes);
        let key = digest(&[&embed_key, &format!("{cfg:?}"), &transcript_sha]);
        let done = session
            .processing_of(STEP_DIARIZE)
            .is_some_and(|p| p.key == key);
        if done && !force && dir.root().join(DIARIZATION_RTTM).is_file() {
            return Ok(DiarizeOutcome::Skipped);
        }
        let work = format!("{WORK_PREFIX}{embed_key}");
        if force {
            dir.clear_work(&work)?;
        }
        let mut embedder = OnnxEmbedder::from_models(models, threads.max(1))?;
        let audio_seconds = session.audio_seconds();
        let saved: Vec<Option<Vec<Saved>>> = session
            .utterances
            .iter()
            .map(|u| dir.get_work::<Vec<Saved>>(&work, &work_name(u)))
            .collect();
        let resumed = saved.iter().filter(|s| s.is_some()).count();
        progress.transcription_started(
            dir.root(),
            session.utterances.len(),
            resumed,
            audio_seconds,
        );
        // Streams in user order, utterances in time order within each.
        let mut users: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, u) in session.utterances.iter().enumerate() {
            users.entry(u.user_id).or_default().push(i);
        }
        let mut saved = saved;
        let mut results = Vec::new();
        for (&user, idx) in &users {
            let mut d = Diarizer::new(&mut embedder, cfg.clone())?;
            for &i in idx {
                let u = &session.utterances[i];
                let regions = match saved[i].take() {
                    Some(s) => s,
                    None => {
                        let audio = self.utterance_audio(dir, u)?;
                        vad.reset();
                        let p = probabilities(vad.as_mut(), &audio)?;
                        let th = self.config().segmenter.threshold;
                        let mut r = regions_from_probabilities(
                            &p,
                            FRAME as f64 / 16_000.0,
                            th,
                            0.1,
                            0.1,
                            0.05,
                        );
                        if r.is_empty() {
                            r.push((0.0, audio.len() as f64 / 16_000.0));
                        }
                        let pieces: Vec<(f64, &[f32])> = r
                            .iter()
                            .map(|&(s, e)| {
                                let a = ((s * 16_000.0) as usize).min(audio.len());
                                let b = ((e * 16_000.0) as usize).min(audio.len());
                                (u.start + a as f64 / 16_000.0, &audio[a..b])
                            })
                            .collect();
                        let embedded: Vec<Saved> = d
                            .embed_regions(&pieces)?
                            .into_iter()
                            .map(|e| Saved {
                                start: e.start,
                                end: e.end,
                                windows: e.windows,
                            })
                            .collect();
                        dir.put_work(&work, &work_name(u), &embedded)?;
                        embedded
                    }
                };
                for s in regions {
                    d.add(EmbeddedRegion {
                        start: s.start,
                        end: s.end,
                        windows: s.windows,
                    })?;
                }
                progress.utterance_done(u.end - u.start);
            }
            results.push((user, d.finish()?));
        }
        let speakers = write_outputs(dir, &session, &results, transcript.as_deref())?;
        session.set_processing(Processing {
            step: STEP_DIARIZE.into(),
            name: embedder.config().name.clone(),
            sha256: Some(catalog::CAMPPLUS.sha256.to_string()),
            options: json!({
                "window": cfg.window,
                "step": cfg.step,
                "threshold": cfg.cluster.threshold,
                "speakers": cfg.cluster.speakers,
                "min_speakers": cfg.cluster.min_speakers,
                "max_speakers": cfg.cluster.max_speakers,
                "vad": vad.name(),
            }),
            key,
            failed: Vec::new(),
        });
        dir.save(&session)?;
        dir.clear_work(&work)?;
        Ok(DiarizeOutcome::Done {
            speakers,
            resumed,
            audio_seconds,
        })
    }
}

/// A speaker's name in the outputs: `SPEAKER_00` in a one-stream session, else prefixed with
/// the user id (`u123_SPEAKER_00`).
fn name(single: bool, user: u64, speaker: usize) -> String {
    if single {
        output::speaker_label(speaker)
    } else {
        format!("u{user}_{}", output::speaker_label(speaker))
    }
}

/// Writes `diarization.rttm` and `diarization.json`; returns the number of speakers.
fn write_outputs(
    dir: &SessionDir,
    session: &Session,
    results: &[(u64, nina_diarize::Diarization)],
    transcript: Option<&[u8]>,
) -> Result<usize, PipelineError> {
    let single = results.len() <= 1;
    let mut rttm = String::new();
    let mut speakers = Vec::new();
    let mut turns = Vec::new();
    let mut overlaps = Vec::new();
    for (user, d) in results {
        for line in output::rttm(&session.id, d, false).lines() {
            // Rename the speaker field (8th) to the session-wide name.
            let mut f: Vec<String> = line.split(' ').map(str::to_string).collect();
            if let Some(sp) = f.get_mut(7) {
                let i = sp
                    .strip_prefix("SPEAKER_")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                *sp = name(single, *user, i);
            }
            rttm.push_str(&f.join(" "));
            rttm.push('\n');
        }
        for s in 0..d.speakers {
            let secs: f64 = d
                .turns
                .iter()
                .filter(|t| t.speaker == s)
                .map(|t| t.end - t.start)
                .sum();
            speakers
                .push(json!({"name": name(single, *user, s), "user_id": user, "seconds": secs}));
        }
        for t in &d.turns {
            turns.push(
                json!({"start": t.start, "end": t.end, "speaker": name(single, *user, t.speaker)}),
            );
        }
        for o in &d.overlaps {
            overlaps.push(json!({
                "start": o.start, "end": o.end,
                "speakers": [name(single, *user, o.main), name(single, *user, o.second)],
            }));
        }
    }
    // The speaker of each transcript segment, and of its words when they differ.
    let mut segments = Vec::new();
    if let Some(doc) = transcript.and_then(|t| serde_json::from_slice::<TranscriptDocument>(t).ok())
    {
        let user_of: BTreeMap<String, u64> = results
            .iter()
            .map(|(u, _)| (session.speaker_label(*u), *u))
            .collect();
        for (i, s) in doc.segments.iter().enumerate() {
            let Some((user, d)) = user_of
                .get(&s.speaker)
                .and_then(|u| results.iter().find(|r| r.0 == *u))
            else {
                continue;
            };
            let seg = &s.segment;
            let who = output::speaker_of(&d.turns, seg.start, seg.end);
            let words: Vec<_> = seg
                .words
                .iter()
                .map(|w| {
                    let sp = output::speaker_of(&d.turns, w.start, w.end).or(who);
                    json!({"start": w.start, "end": w.end, "text": w.text,
                           "speaker": sp.map(|x| name(single, *user, x))})
                })
                .collect();
            let straddles = words
                .iter()
                .any(|w| w["speaker"] != json!(who.map(|x| name(single, *user, x))));
            let mut entry = json!({
                "index": i, "start": seg.start, "end": seg.end, "stream": s.speaker,
                "speaker": who.map(|x| name(single, *user, x)), "text": seg.text,
            });
            if straddles {
                entry["words"] = json!(words);
            }
            segments.push(entry);
        }
    }
    let doc = json!({
        "schema": "nina.diarization/1",
        "speakers": speakers,
        "turns": turns,
        "overlaps": overlaps,
        "segments": segments,
    });
    dir.write(DIARIZATION_RTTM, rttm.as_bytes())?;
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    dir.write(DIARIZATION_JSON, text.as_bytes())?;
    Ok(speakers.len())
}
