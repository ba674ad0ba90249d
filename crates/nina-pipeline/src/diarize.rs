//! The diarization step: who speaks when within each user's stream of a stored session (a
//! file's session has one stream holding everyone). Each utterance is split into speech regions
//! by the voice-activity detector, its windows embedded with CAM++ and saved under `.work/` at
//! once, so an interrupted run resumes without embedding again; then the windows of each stream
//! are clustered and re-segmented ([`nina_diarize::Diarizer`]). Writes `diarization.rttm` and
//! `diarization.json` (speakers, turns, overlaps, and the speaker of every transcript segment,
//! and of every word where a segment straddles a turn change), and rewrites
//! `transcript.{srt,vtt,txt}` with the diarized speakers (`transcript.json` stays as transcribed).
//!
//! With [`Voices`], the guild's voiceprints come in: a live user's stream whose speech is one
//! clean voice (one speaker holding at least [`ENROL_SHARE`] of it, for at least
//! [`ENROL_MIN_SECONDS`]) enrols its owner, unless they opted out; then every speaker of every
//! stream is named after the nearest print when their similarity clears the threshold
//! ([`nina_diarize::identify`]), else `unknown_N`.

use std::collections::{BTreeMap, BTreeSet};

use nina_diarize::identify::{Match, dominant, identify};
use nina_diarize::{
    DiarizeConfig, Diarizer, EmbeddedRegion, OnnxEmbedder, output, regions_from_probabilities,
};
use nina_models::catalog;
use nina_segment::vad::{FRAME, VoiceDetector, probabilities};
use nina_store::{
    Processing, Session, SessionDir, TRANSCRIPT_JSON, TRANSCRIPT_SRT, TRANSCRIPT_TXT,
    TRANSCRIPT_VTT, UtteranceRecord, VoicePrints,
};
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

/// Share of a stream's speech one speaker must hold for the stream to enrol its owner.
pub const ENROL_SHARE: f64 = 0.9;
/// Seconds of speech a stream's one voice must have to enrol its owner.
pub const ENROL_MIN_SECONDS: f64 = 3.0;

/// The guild's voiceprints, for [`Pipeline::diarize_session`] to name speakers after and to
/// enrol clean streams into.
#[derive(Debug)]
pub struct Voices<'a> {
    /// The guild's prints; saved by the call when it enrols.
    pub prints: &'a mut VoicePrints,
    /// Whether clean single-voice user streams enrol their owner.
    pub enrol: bool,
    /// Users never enrolled nor named (they opted out).
    pub opted_out: BTreeSet<u64>,
    /// Cosine similarity a speaker needs to a print to take its name
    /// ([`nina_diarize::IDENTIFY_THRESHOLD`] by default).
    pub threshold: f32,
}

impl<'a> Voices<'a> {
    /// `prints` with enrolment on, the default threshold and nobody opted out.
    pub fn new(prints: &'a mut VoicePrints) -> Self {
        Self {
            prints,
            enrol: true,
            opted_out: BTreeSet::new(),
            threshold: nina_diarize::IDENTIFY_THRESHOLD,
        }
    }
}

/// The model name voiceprints of the default embedder are filed under: its catalogue id and the
/// start of its digest, so prints of another build of the model are never compared.
pub fn print_model() -> String {
    format!(
        "{}@{}",
        catalog::CAMPPLUS.id,
        &catalog::CAMPPLUS.sha256[..12]
    )
}

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
        /// Users whose print this session's clean streams enrolled.
        enrolled: usize,
        /// Speakers named after a print.
        identified: usize,
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
    /// Diarizes every user stream of the session in `dir` with `cfg`, on `threads` CPU threads;
    /// with `voices`, enrols clean streams and names speakers after voiceprints (see the module
    /// documentation). Skipped when done with the same settings, utterances, transcript and
    /// prints, unless `force`.
    pub fn diarize_session(
        &self,
        dir: &SessionDir,
        cfg: &DiarizeConfig,
        threads: usize,
        force: bool,
        mut voices: Option<&mut Voices<'_>>,
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
        let key = digest(&[
            &embed_key,
            &format!("{cfg:?}"),
            &transcript_sha,
            &voices_key(voices.as_deref()),
        ]);
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
                        let embedded: Vec<Saved> = self
                            .embed_utterance(dir, u, vad.as_mut(), &mut d)?
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
        let (names, enrolled) = match voices.as_deref_mut() {
            Some(v) => name_speakers(&session, &results, v)?,
            None => {
                let single = results.len() <= 1;
                let names = results
                    .iter()
                    .map(|(user, d)| {
                        (0..d.speakers)
                            .map(|s| (name(single, *user, s), None))
                            .collect()
                    })
                    .collect();
                (names, 0)
            }
        };
        let identified = names.iter().flatten().filter(|n| n.1.is_some()).count();
        let speakers = write_outputs(dir, &session, &results, &names, transcript.as_deref())?;
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
                "voiceprints": voices.as_deref().map(|v| json!({
                    "model": print_model(), "threshold": v.threshold, "enrol": v.enrol,
                    "enrolled": enrolled, "identified": identified,
                })),
            }),
            // With prints, the key of the prints as they are now (after enrolment), so a run
            // right after this one finds nothing changed.
            key: digest(&[
                &embed_key,
                &format!("{cfg:?}"),
                &transcript_sha,
                &voices_key(voices.as_deref()),
            ]),
            failed: Vec::new(),
        });
        dir.save(&session)?;
        dir.clear_work(&work)?;
        Ok(DiarizeOutcome::Done {
            speakers,
            resumed,
            audio_seconds,
            enrolled,
            identified,
        })
    }

    /// The speech regions of utterance `u` (by the voice-activity detector; the whole
    /// utterance when it finds none), embedded by `d`'s embedder, in session time.
    fn embed_utterance(
        &self,
        dir: &SessionDir,
        u: &UtteranceRecord,
        vad: &mut dyn VoiceDetector,
        d: &mut Diarizer<'_>,
    ) -> Result<Vec<EmbeddedRegion>, PipelineError> {
        let audio = self.utterance_audio(dir, u)?;
        vad.reset();
        let p = probabilities(vad, &audio)?;
        let th = self.config().segmenter.threshold;
        let mut r = regions_from_probabilities(&p, FRAME as f64 / 16_000.0, th, 0.1, 0.1, 0.05);
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
        Ok(d.embed_regions(&pieces)?)
    }

    /// Enrols the owners of the session's clean user streams into `voices.prints` (saved when
    /// it changes), diarizing at most `max_seconds` of each stream's utterances (its first):
    /// what the collector does when a live session ends, at a bounded cost. A stream enrols
    /// its owner when one voice holds at least [`ENROL_SHARE`] of that speech, for at least
    /// [`ENROL_MIN_SECONDS`]; opted-out users and streams of no user (id 0) never do, and a
    /// session enrols a user once however often it runs. Returns the users enrolled.
    pub fn enrol_session(
        &self,
        dir: &SessionDir,
        voices: &mut Voices<'_>,
        max_seconds: f64,
        threads: usize,
    ) -> Result<Vec<u64>, PipelineError> {
        let session = dir.load()?;
        let (mut vad, _) = self.detector()?;
        let mut embedder = OnnxEmbedder::from_models(&self.config().models, threads.max(1))?;
        let cfg = DiarizeConfig::default();
        let model = print_model();
        let mut users: BTreeMap<u64, Vec<&UtteranceRecord>> = BTreeMap::new();
        for u in &session.utterances {
            if u.user_id != 0 && !voices.opted_out.contains(&u.user_id) {
                users.entry(u.user_id).or_default().push(u);
            }
        }
        let now = unix_ms();
        let mut enrolled = Vec::new();
        for (user, utts) in users {
            if voices
                .prints
                .get(user, &model)
                .is_some_and(|p| p.sources.contains(&session.id))
            {
                continue;
            }
            let mut d = Diarizer::new(&mut embedder, cfg.clone())?;
            let mut taken = 0.0;
            for u in utts {
                if taken >= max_seconds {
                    break;
                }
                taken += u.end - u.start;
                for r in self.embed_utterance(dir, u, vad.as_mut(), &mut d)? {
                    d.add(r)?;
                }
            }
            let result = d.finish()?;
            if enrol_stream(voices.prints, user, &result, &model, &session.id, now) {
                enrolled.push(user);
            }
        }
        if !enrolled.is_empty() {
            voices.prints.save()?;
            tracing::debug!(users = enrolled.len(), "voiceprints enrolled");
        }
        Ok(enrolled)
    }
}

/// Now, Unix milliseconds.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What the prints bring to the result: their model's prints (user, seconds, count), the
/// threshold, enrolment and the opted-out users.
fn voices_key(voices: Option<&Voices<'_>>) -> String {
    let Some(v) = voices else {
        return String::new();
    };
    let model = print_model();
    let mut k = format!("{}|{}|{:?}|", v.threshold, v.enrol, v.opted_out);
    // Seconds rounded: a JSON round trip may change the last bit of an f64.
    for p in v.prints.of_model(&model) {
        k.push_str(&format!("{}:{:.3}:{};", p.user_id, p.seconds, p.count));
    }
    k
}

/// A speaker's name and the print it matched, per stream and speaker.
type Names = Vec<Vec<(String, Option<Match>)>>;

/// Enrols the clean streams' owners (saving the prints), then names every speaker: after the
/// nearest print, else `unknown_N` (numbered across the session). Returns the names and how
/// many users were enrolled.
fn name_speakers(
    session: &Session,
    results: &[(u64, nina_diarize::Diarization)],
    v: &mut Voices<'_>,
) -> Result<(Names, usize), PipelineError> {
    let model = print_model();
    let mut enrolled = 0;
    if v.enrol {
        let now = unix_ms();
        for (user, d) in results {
            // User 0 is a file's one stream: no Discord user owns it.
            if *user != 0
                && !v.opted_out.contains(user)
                && enrol_stream(v.prints, *user, d, &model, &session.id, now)
            {
                enrolled += 1;
            }
        }
        if enrolled > 0 {
            v.prints.save()?;
            tracing::info!(enrolled, "voiceprints enrolled");
        }
    }
    let prints: Vec<(u64, Vec<f32>)> = v
        .prints
        .of_model(&model)
        .filter(|p| !v.opted_out.contains(&p.user_id))
        .map(|p| (p.user_id, p.embedding()))
        .collect();
    let mut unknown = 0;
    let names = results
        .iter()
        .map(|(_, d)| {
            identify(&d.centroids, &prints, v.threshold)
                .into_iter()
                .map(|m| match m {
                    Some(m) => (rttm_safe(&session.speaker_label(m.user)), Some(m)),
                    None => {
                        unknown += 1;
                        (format!("unknown_{unknown}"), None)
                    }
                })
                .collect()
        })
        .collect();
    Ok((names, enrolled))
}

/// Enrols `user` from the diarization `d` of their own stream when it is one clean voice (one
/// speaker with [`ENROL_SHARE`] of the speech, at least [`ENROL_MIN_SECONDS`]) and `source`
/// (a session id) is not enrolled yet; returns whether it was.
fn enrol_stream(
    prints: &mut VoicePrints,
    user: u64,
    d: &nina_diarize::Diarization,
    model: &str,
    source: &str,
    now: i64,
) -> bool {
    let secs = speaker_seconds(d);
    let Some(dom) = dominant(&secs, ENROL_SHARE) else {
        tracing::debug!(user, "stream holds several voices: not enrolled");
        return false;
    };
    if secs[dom] < ENROL_MIN_SECONDS {
        return false;
    }
    match prints.enrol_from(user, model, &d.centroids[dom], secs[dom], now, source) {
        Ok(enrolled) => enrolled,
        Err(e) => {
            tracing::warn!(user, "voiceprint not enrolled: {e}");
            false
        }
    }
}

/// Seconds of speech of each speaker of `d`.
fn speaker_seconds(d: &nina_diarize::Diarization) -> Vec<f64> {
    let mut secs = vec![0.0; d.speakers];
    for t in &d.turns {
        if let Some(s) = secs.get_mut(t.speaker) {
            *s += t.end - t.start;
        }
    }
    secs
}

/// A name usable as an RTTM field (no whitespace).
fn rttm_safe(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join("_")
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
    names: &Names,
    transcript: Option<&[u8]>,
) -> Result<usize, PipelineError> {
    let name_of = |r: usize, s: usize| -> String {
        names
            .get(r)
            .and_then(|n| n.get(s))
            .map_or_else(|| output::speaker_label(s), |n| n.0.clone())
    };
    let mut rttm = String::new();
    let mut speakers = Vec::new();
    let mut turns = Vec::new();
    let mut overlaps = Vec::new();
    for (r, (user, d)) in results.iter().enumerate() {
        for line in output::rttm(&session.id, d, false).lines() {
            // Rename the speaker field (8th) to the session-wide name.
            let mut f: Vec<String> = line.split(' ').map(str::to_string).collect();
            if let Some(sp) = f.get_mut(7) {
                let i = sp
                    .strip_prefix("SPEAKER_")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                *sp = name_of(r, i);
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
            let identity = names.get(r).and_then(|n| n.get(s)).and_then(|n| n.1).map(
                |m| json!({"user_id": m.user, "similarity": (f64::from(m.similarity) * 1000.0).round() / 1000.0}),
            );
            speakers.push(json!({
                "name": name_of(r, s), "user_id": user, "seconds": secs, "identity": identity,
            }));
        }
        for t in &d.turns {
            turns.push(json!({"start": t.start, "end": t.end, "speaker": name_of(r, t.speaker)}));
        }
        for o in &d.overlaps {
            overlaps.push(json!({
                "start": o.start, "end": o.end,
                "speakers": [name_of(r, o.main), name_of(r, o.second)],
            }));
        }
    }
    // The speaker of each transcript segment, and of its words when they differ.
    let mut segments = Vec::new();
    if let Some(mut doc) =
        transcript.and_then(|t| serde_json::from_slice::<TranscriptDocument>(t).ok())
    {
        let user_of: BTreeMap<String, u64> = results
            .iter()
            .map(|(u, _)| (session.speaker_label(*u), *u))
            .collect();
        let mut relabel = Vec::new();
        for (i, s) in doc.segments.iter().enumerate() {
            let Some((r, (_, d))) = user_of
                .get(&s.speaker)
                .and_then(|u| results.iter().enumerate().find(|r| r.1.0 == *u))
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
                           "speaker": sp.map(|x| name_of(r, x))})
                })
                .collect();
            let straddles = words
                .iter()
                .any(|w| w["speaker"] != json!(who.map(|x| name_of(r, x))));
            let mut entry = json!({
                "index": i, "start": seg.start, "end": seg.end, "stream": s.speaker,
                "speaker": who.map(|x| name_of(r, x)), "text": seg.text,
            });
            if straddles {
                entry["words"] = json!(words);
            }
            segments.push(entry);
            relabel.push((i, r, who));
        }
        // The readable transcripts name the diarized speaker of each segment: a speaker named
        // after a voiceprint always; in a stream with several speakers, their diarized name;
        // a stream of one unnamed voice keeps its stream's label (the Discord user).
        // `transcript.json` stays as transcribed (the diarization's key rests on it).
        for (i, r, who) in relabel {
            let Some(x) = who else { continue };
            let (n, m) = names
                .get(r)
                .and_then(|n| n.get(x))
                .cloned()
                .unwrap_or_else(|| (output::speaker_label(x), None));
            if m.is_some() || results[r].1.speakers > 1 {
                doc.segments[i].speaker = n;
            }
        }
        dir.write(TRANSCRIPT_SRT, doc.to_srt().as_bytes())?;
        dir.write(TRANSCRIPT_VTT, doc.to_vtt().as_bytes())?;
        dir.write(TRANSCRIPT_TXT, doc.to_text().as_bytes())?;
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
