//! [`Transcriber`] over whisper.cpp (through whisper-rs).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once, OnceLock};

use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use crate::guard::{doubled, rms_dbfs, syllable_nuclei};
use crate::{
    Decoding, DropReason, DroppedSegment, Repair, SAMPLE_RATE, Segment, TranscribeError,
    TranscribeOptions, Transcriber, Transcript, Word, validate_audio,
};

/// Shortest input handed to whisper.cpp; shorter audio is padded with silence.
const MIN_SAMPLES: usize = SAMPLE_RATE as usize;
/// Encoder positions per second of audio (1,500 for 30 s).
const AUDIO_CTX_PER_SECOND: f64 = 50.0;
/// Upper bound on the speaking rate, in tokens per second.
const MAX_TOKENS_PER_SECOND: f64 = 16.0;

/// A ggml Whisper model, loaded once and shared by every worker.
#[derive(Clone)]
pub struct WhisperModel {
    ctx: Arc<WhisperContext>,
    path: PathBuf,
    name: String,
    multilingual: bool,
    sha256: Arc<OnceLock<String>>,
}

impl std::fmt::Debug for WhisperModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperModel")
            .field("path", &self.path)
            .field("name", &self.name)
            .finish()
    }
}

static LOG_HOOKS: Once = Once::new();

/// The CPU features whisper.cpp was built with and found, as it reports them
/// (`CPU : ... AVX2 = 1 | ...`). It lists `LLAMAFILE = 1` when whisper.cpp was built with
/// `GGML_LLAMAFILE=ON` in the environment, as this workspace's `.cargo/config.toml` sets it
/// (faster matrix kernels, see docs/transcribe.md).
pub fn engine_features() -> &'static str {
    whisper_rs::print_system_info()
}

impl WhisperModel {
    /// Loads a ggml Whisper file. The file is checked first (complete, really a ggml Whisper
    /// model), so a missing, truncated or foreign file gives an error naming it.
    pub fn load(path: &Path) -> Result<Self, TranscribeError> {
        if !path.is_file() {
            return Err(nina_models::ModelError::Missing {
                path: path.to_path_buf(),
                looked_in: Vec::new(),
                fix: format!(
                    "run {} or give the path of a ggml Whisper model",
                    nina_models::SETUP_COMMAND
                ),
            }
            .into());
        }
        let hparams = nina_models::inspect_ggml(path)?;
        LOG_HOOKS.call_once(|| {
            whisper_rs::install_logging_hooks();
            tracing::debug!(features = engine_features(), "whisper.cpp");
        });
        let path_str = path.to_str().ok_or_else(|| {
            TranscribeError::Options(format!("model path {} is not UTF-8", path.display()))
        })?;
        let ctx = WhisperContext::new_with_params(path_str, WhisperContextParameters::default())
            .map_err(|e| nina_models::ModelError::Invalid {
                path: path.to_path_buf(),
                reason: format!("whisper.cpp could not load it ({e:?})"),
            })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            multilingual: ctx.is_multilingual(),
            ctx: Arc::new(ctx),
            path: path.to_path_buf(),
            name: format!(
                "whisper-{}{} ({stem})",
                hparams.size_name(),
                if hparams.is_multilingual() { "" } else { ".en" }
            ),
            sha256: Arc::new(OnceLock::new()),
        })
    }

    /// A transcriber with its own decoding state, sharing this model's weights.
    pub fn transcriber(&self) -> Result<WhisperTranscriber, TranscribeError> {
        Ok(WhisperTranscriber {
            model: self.clone(),
            state: self.new_state()?,
        })
    }

    /// A new decoding state (key/value caches and compute buffers) over these weights.
    fn new_state(&self) -> Result<WhisperState, TranscribeError> {
        self.ctx
            .create_state()
            .map_err(|e| TranscribeError::Engine(format!("creating a state: {e:?}")))
    }

    /// Human-readable model name, e.g. `whisper-base (ggml-base)`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the model knows languages other than English.
    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    /// sha256 of the model file (on first use: from the file's verified stamp when it is
    /// unchanged since, otherwise hashed).
    pub fn sha256(&self) -> Result<String, TranscribeError> {
        if let Some(s) = self.sha256.get() {
            return Ok(s.clone());
        }
        let s = nina_models::sha256_cached(&self.path)?;
        Ok(self.sha256.get_or_init(|| s).clone())
    }
}

/// A worker's handle on a [`WhisperModel`]: shares the weights, owns the decoding state.
pub struct WhisperTranscriber {
    model: WhisperModel,
    state: WhisperState,
}

impl WhisperTranscriber {
    /// The model this transcriber runs.
    pub fn model(&self) -> &WhisperModel {
        &self.model
    }

    /// The most probable language of `audio`, among `candidates` when there are any (the
    /// probability is then relative to the candidates: they sum to 1), encoded on `window`
    /// positions (0: the full 30 s).
    fn detect_among(
        &mut self,
        audio: &[f32],
        window: i32,
        threads: usize,
        candidates: &[&str],
    ) -> Result<(String, f32), TranscribeError> {
        let engine = |what: &str, e: whisper_rs::WhisperError| {
            TranscribeError::Engine(format!("{what}: {e:?}"))
        };
        self.set_window(audio, window, threads)?;
        let (id, probs) = self
            .state
            .lang_detect(0, threads)
            .map_err(|e| engine("language detection", e))?;
        let prob = |id: i32| {
            usize::try_from(id)
                .ok()
                .and_then(|i| probs.get(i))
                .copied()
                .unwrap_or(0.0)
        };
        if candidates.is_empty() {
            let lang = whisper_rs::get_lang_str(id).unwrap_or("en").to_string();
            return Ok((lang, prob(id)));
        }
        let scored: Vec<(&str, f32)> = candidates
            .iter()
            .map(|c| (*c, whisper_rs::get_lang_id(c).map_or(0.0, prob)))
            .collect();
        let total: f32 = scored.iter().map(|(_, p)| p).sum();
        let (best, p) = scored
            .iter()
            .copied()
            .fold(scored[0], |a, b| if b.1 > a.1 { b } else { a });
        let p = if total > 0.0 { p / total } else { 0.0 };
        Ok((best.to_string(), p))
    }

    /// The language of `audio` (16 kHz mono) and its probability, as [`Transcriber::transcribe`]
    /// decides it under `options.language`: one code is taken as given (probability 1), several
    /// are detected among (the probability is relative to them), none are detected among all
    /// Whisper's languages. English-only models always answer English. Detection encodes the
    /// window the first decode would: shrunk to the audio with `short_audio_context`, else the
    /// full 30 s of Whisper's reference implementation, which is slower and was right more often
    /// (docs/measurements.md).
    pub fn detect_language(
        &mut self,
        audio: &[f32],
        options: &TranscribeOptions,
    ) -> Result<(String, f32), TranscribeError> {
        validate_audio(audio)?;
        check_options(options)?;
        let (input, _) = padded(audio, options);
        self.language_of(&input, options)
    }

    /// [`Self::detect_language`] on input already padded.
    fn language_of(
        &mut self,
        input: &[f32],
        options: &TranscribeOptions,
    ) -> Result<(String, f32), TranscribeError> {
        let codes = language_codes(options.language.as_deref());
        match (codes.as_slice(), self.model.multilingual) {
            ([one], _) => Ok(((*one).to_string(), 1.0)),
            (_, false) => Ok(("en".to_string(), 1.0)),
            (candidates, true) => {
                let seconds = input.len() as f64 / f64::from(SAMPLE_RATE);
                let window = if shrinks(options, seconds) {
                    short_audio_ctx(seconds)
                } else {
                    0
                };
                self.detect_among(input, window, usize::from(options.threads), candidates)
            }
        }
    }

    /// Starts a new decoding state, so that a transcript depends only on its audio and options.
    ///
    /// whisper.cpp's beam search draws each beam's candidate tokens from the token distribution
    /// with a random generator, and the first decoder's generator is seeded only when its state
    /// is created: on a reused state, the same utterance decoded the same way gave a different
    /// text after each earlier utterance (docs/transcribe.md#reproducible). A new state costs
    /// 20-50 ms here, against about a second for decoding a few seconds of speech.
    fn reseed(&mut self) -> Result<(), TranscribeError> {
        self.state = self.model.new_state()?;
        Ok(())
    }

    /// Computes the mel spectrogram of `audio` and sets the encoder window (`audio_ctx`, 0 for
    /// the full 30 s) that the next encode of this state uses.
    ///
    /// whisper.cpp keeps the window of the last decode in the state, and its language detection
    /// encodes with whatever window that was: the previous utterance's, shrunk to another length.
    /// The window can only be set through a full decode, so this runs one over the first 100 ms
    /// (`duration_ms` 100), which sets it and stops before encoding anything.
    fn set_window(
        &mut self,
        audio: &[f32],
        audio_ctx: i32,
        threads: usize,
    ) -> Result<(), TranscribeError> {
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(i32::try_from(threads).unwrap_or(1));
        params.set_language(Some("en"));
        params.set_duration_ms(100);
        params.set_audio_ctx(audio_ctx);
        params.set_no_context(true);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        self.state
            .full(params, audio)
            .map_err(|e| TranscribeError::Engine(format!("mel: {e:?}")))
    }
}

/// `audio` as whisper.cpp gets it, and the samples of silence put before it: short utterances
/// get silence on both sides (Whisper was trained on speech inside longer windows), and the
/// input is at least MIN_SAMPLES long.
fn padded<'a>(audio: &'a [f32], options: &TranscribeOptions) -> (Cow<'a, [f32]>, usize) {
    let seconds = audio.len() as f64 / f64::from(SAMPLE_RATE);
    let pad = if seconds + 2.0 * f64::from(options.edge_padding) < 29.0 {
        (f64::from(options.edge_padding.max(0.0)) * f64::from(SAMPLE_RATE)) as usize
    } else {
        0
    };
    if pad == 0 && audio.len() >= MIN_SAMPLES {
        return (Cow::Borrowed(audio), 0);
    }
    let mut v = vec![0.0; pad];
    v.extend_from_slice(audio);
    v.resize((pad * 2 + audio.len()).max(MIN_SAMPLES), 0.0);
    (Cow::Owned(v), pad)
}

/// The language codes of `TranscribeOptions::language`: one forces it, several (comma-separated)
/// restrict detection to them, none detects among all.
pub(crate) fn language_codes(language: Option<&str>) -> Vec<&str> {
    language
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// Checks options before any model is loaded: threads, temperatures, beam sizes and that the
/// language code is one Whisper knows.
pub fn check_options(o: &TranscribeOptions) -> Result<(), TranscribeError> {
    if o.threads == 0 {
        return Err(TranscribeError::Options(
            "threads must be at least 1".into(),
        ));
    }
    if !(0.0..=1.0).contains(&o.temperature) || !(0.0..=1.0).contains(&o.temperature_increment) {
        return Err(TranscribeError::Options(
            "temperatures must lie in [0, 1]".into(),
        ));
    }
    if o.voiced_margin
        .is_some_and(|m| !(m >= 0.1 && m.is_finite()))
    {
        return Err(TranscribeError::Options(
            "voiced_margin must be at least 0.1 s (or none, to decode the input whole)".into(),
        ));
    }
    if let Some(l) = language_codes(o.language.as_deref())
        .into_iter()
        .find(|l| whisper_rs::get_lang_id(l).is_none())
    {
        return Err(TranscribeError::Options(format!(
            "unknown language code `{l}`"
        )));
    }
    match o.decoding {
        Decoding::Greedy { best_of: 0 } | Decoding::Beam { beam_size: 0 } => Err(
            TranscribeError::Options("best_of and beam_size must be at least 1".into()),
        ),
        _ => Ok(()),
    }
}

impl Transcriber for WhisperTranscriber {
    fn model_name(&self) -> &str {
        self.model.name()
    }

    fn transcribe(
        &mut self,
        audio: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Transcript, TranscribeError> {
        validate_audio(audio)?;
        check_options(options)?;
        let seconds = audio.len() as f64 / f64::from(SAMPLE_RATE);
        let level = rms_dbfs(audio);
        if level < options.guards.silence_floor_dbfs {
            return Ok(Transcript {
                dropped: vec![DroppedSegment {
                    segment: Segment {
                        start: 0.0,
                        end: seconds,
                        text: String::new(),
                        avg_logprob: 0.0,
                        no_speech_prob: 1.0,
                        ..Segment::default()
                    },
                    reason: DropReason::Silence { rms_dbfs: level },
                }],
                ..Transcript::default()
            });
        }
        self.reseed()?;
        let nuclei = syllable_nuclei(audio);
        // Decode the voiced part, its times moved back onto the input's clock at the end.
        let (from, to) = voiced_span(&nuclei, audio.len(), options.voiced_margin);
        let (audio, lead) = (&audio[from..to], from as f64 / f64::from(SAMPLE_RATE));
        let seconds = audio.len() as f64 / f64::from(SAMPLE_RATE);
        let nuclei: Vec<f64> = nuclei.iter().map(|t| t - lead).collect();
        let (input, pad) = padded(audio, options);
        let input = &input[..];
        let offset = pad as f64 / f64::from(SAMPLE_RATE);
        let (language, language_probability) = self.language_of(input, options)?;

        let utterance = Utterance {
            input,
            offset,
            seconds,
            language: &language,
        };
        let (segments, mut dropped) = self.decode_guarded(&utterance, options, &nuclei)?;
        let segments = if options.guards.drop_unvoiced && nuclei.is_empty() {
            let reason = DropReason::Unvoiced;
            tracing::debug!(guard = reason.name(), segments = segments.len(), "dropped");
            dropped.extend(segments.into_iter().map(|segment| DroppedSegment {
                segment,
                reason: reason.clone(),
            }));
            Vec::new()
        } else {
            segments
        };
        Ok(Transcript {
            language: Some(language),
            language_probability: Some(language_probability),
            segments,
            dropped,
        }
        .shifted(lead))
    }
}

/// The samples `from..to` of an input of `len` samples to decode: from `margin` seconds before
/// its first syllable nucleus to `margin` seconds after its last; all of it without nuclei or
/// margin.
fn voiced_span(nuclei: &[f64], len: usize, margin: Option<f32>) -> (usize, usize) {
    let (Some(margin), Some(first), Some(last)) = (margin, nuclei.first(), nuclei.last()) else {
        return (0, len);
    };
    let at = |t: f64| ((t.max(0.0) * f64::from(SAMPLE_RATE)) as usize).min(len);
    let margin = f64::from(margin.max(0.0));
    (at(first - margin), at(last + margin))
}

/// What every decode of one utterance shares.
#[derive(Clone, Copy)]
struct Utterance<'a> {
    /// The audio as whisper.cpp gets it (padded).
    input: &'a [f32],
    /// Seconds of silence put before the audio.
    offset: f64,
    /// Length of the audio itself, in seconds.
    seconds: f64,
    /// Language code decoded in.
    language: &'a str,
}

/// One decode of the retry ladder.
#[derive(Debug, Clone, PartialEq)]
struct Attempt {
    /// Shrink the encoder window to the audio (when the options allow it).
    short_context: bool,
    temperature: f32,
    decoding: Decoding,
}

/// Whether the first decode of `input_seconds` of (padded) input shrinks the encoder window.
fn shrinks(options: &TranscribeOptions, input_seconds: f64) -> bool {
    options.short_audio_context && input_seconds < 29.0
}

/// The decodes tried, in order, while a guard that a retry may fix keeps firing: as asked; with
/// the full 30 s audio window (when it was shrunk); then at the next temperature with the other
/// search (beam instead of greedy, or greedy instead of beam).
fn ladder(options: &TranscribeOptions, input_seconds: f64) -> Vec<Attempt> {
    let first = Attempt {
        short_context: shrinks(options, input_seconds),
        temperature: options.temperature,
        decoding: options.decoding,
    };
    let mut out = vec![first.clone()];
    if first.short_context {
        out.push(Attempt {
            short_context: false,
            ..first.clone()
        });
    }
    out.push(Attempt {
        short_context: false,
        temperature: (options.temperature + options.temperature_increment.max(0.2)).min(1.0),
        decoding: match options.decoding {
            Decoding::Beam { beam_size } => Decoding::Greedy { best_of: beam_size },
            Decoding::Greedy { best_of } => Decoding::Beam {
                beam_size: best_of.max(2),
            },
        },
    });
    out
}

/// A decoded segment before the guards, with how many of its words are timed at or past the
/// end of the audio.
#[derive(Debug, Clone, Default)]
struct Raw {
    segment: Segment,
    past_end: usize,
}

/// The segments of `raw` the guards keep, those they drop, and the first reason a retry may
/// fix (a partly misplaced segment counts, though it is kept).
fn guarded(
    raw: &[Raw],
    seconds: f64,
    options: &TranscribeOptions,
    nuclei: &[f64],
) -> (Vec<Segment>, Vec<DroppedSegment>, Option<DropReason>) {
    let (mut kept, mut dropped, mut fired) = (Vec::new(), Vec::new(), None);
    for r in raw {
        let segment = r.segment.clone();
        // Words timed past the end are not a fault on their own: Whisper's token times are
        // rough near the end of the audio (trimming them lost real words, "young man").
        let reason = options
            .guards
            .check_in_context(&segment, seconds, &kept)
            .or_else(|| doubled(&segment, nuclei));
        match reason {
            Some(reason) => {
                if fired.is_none() && reason.retry_may_fix() {
                    fired = Some(reason.clone());
                }
                dropped.push(DroppedSegment { segment, reason });
            }
            None => kept.push(segment),
        }
    }
    (kept, dropped, fired)
}

/// `raw` repaired in place: words timed past the end cut, a loop cut to its first occurrence,
/// a segment repeating the one before dropped (the first is kept); what still fails a guard is
/// dropped.
fn repaired(
    raw: Vec<Raw>,
    seconds: f64,
    options: &TranscribeOptions,
    retried: u8,
    nuclei: &[f64],
) -> (Vec<Segment>, Vec<DroppedSegment>) {
    let (mut kept, mut dropped) = (Vec::new(), Vec::<DroppedSegment>::new());
    for r in raw {
        let mut segment = r.segment;
        let mut repair: Option<Repair> = None;
        let mut reason = options.guards.check_in_context(&segment, seconds, &kept);
        // A loop that persists: words timed past the end of the audio go with its repeats.
        if let Some(DropReason::Repetition { .. }) = reason
            && r.past_end > 0
            && segment.words.iter().any(|w| w.start < seconds)
        {
            segment.words.retain(|w| w.start < seconds);
            segment.text = segment.words.iter().map(|w| w.text.as_str()).collect();
            repair = Some(Repair {
                guard: DropReason::PastEnd.name().to_string(),
                retried,
                trimmed: true,
            });
            reason = options.guards.check_in_context(&segment, seconds, &kept);
        }
        if let Some(DropReason::Repetition { .. }) = reason
            && let Some(cut) = crate::guard::deloop(&segment)
        {
            let again = options.guards.check_in_context(&cut, seconds, &kept);
            if again.is_none() {
                segment = cut;
                repair = Some(Repair {
                    guard: reason.as_ref().map_or("", DropReason::name).to_string(),
                    retried,
                    trimmed: true,
                });
            }
            reason = again;
        }
        // A phrase said back to back where the audio holds one: its first copy.
        if reason.is_none()
            && let Some(why) = doubled(&segment, nuclei)
            && let Some(cut) = crate::guard::deloop(&segment)
        {
            segment = cut;
            repair = Some(Repair {
                guard: why.name().to_string(),
                retried,
                trimmed: true,
            });
            reason = options.guards.check_in_context(&segment, seconds, &kept);
        }
        match reason {
            Some(reason) => {
                tracing::debug!(?reason, "dropped a segment");
                dropped.push(DroppedSegment { segment, reason });
            }
            None => {
                segment.repair = repair;
                kept.push(segment);
            }
        }
    }
    (kept, dropped)
}

impl WhisperTranscriber {
    /// Decodes `input` along the retry ladder until no guard that a retry may fix fires, else
    /// repairs the first decode in place: the kept segments and the dropped ones.
    fn decode_guarded(
        &mut self,
        utterance: &Utterance<'_>,
        options: &TranscribeOptions,
        nuclei: &[f64],
    ) -> Result<(Vec<Segment>, Vec<DroppedSegment>), TranscribeError> {
        let seconds = utterance.seconds;
        let attempts = ladder(
            options,
            utterance.input.len() as f64 / f64::from(SAMPLE_RATE),
        );
        let mut first: Option<(Vec<Raw>, DropReason)> = None;
        for (k, attempt) in attempts.iter().enumerate() {
            let raw = self.decode(utterance, options, attempt)?;
            let (mut segments, dropped, fired) = guarded(&raw, seconds, options, nuclei);
            match fired {
                None => {
                    if let Some((_, reason)) = &first {
                        tracing::debug!(guard = reason.name(), retried = k, "repaired by a retry");
                        for s in &mut segments {
                            s.repair = Some(Repair {
                                guard: reason.name().to_string(),
                                retried: u8::try_from(k).unwrap_or(u8::MAX),
                                trimmed: false,
                            });
                        }
                    }
                    return Ok((segments, dropped));
                }
                Some(reason) => {
                    if first.is_none() {
                        first = Some((raw, reason));
                    }
                }
            }
        }
        // Every decode tripped a guard: repair the first in place.
        let raw = first.map(|f| f.0).unwrap_or_default();
        let retried = u8::try_from(attempts.len() - 1).unwrap_or(u8::MAX);
        Ok(repaired(raw, seconds, options, retried, nuclei))
    }

    /// Decodes `utterance` once, as `attempt` says.
    fn decode(
        &mut self,
        utterance: &Utterance<'_>,
        options: &TranscribeOptions,
        attempt: &Attempt,
    ) -> Result<Vec<Raw>, TranscribeError> {
        let Utterance {
            input,
            offset,
            seconds,
            language,
        } = *utterance;
        let strategy = match attempt.decoding {
            Decoding::Greedy { best_of } => SamplingStrategy::Greedy {
                best_of: i32::from(best_of),
            },
            Decoding::Beam { beam_size } => SamplingStrategy::BeamSearch {
                beam_size: i32::from(beam_size),
                patience: -1.0,
            },
        };
        let mut params = FullParams::new(strategy);
        params.set_n_threads(i32::from(options.threads));
        params.set_language(Some(language));
        params.set_translate(options.translate);
        params.set_no_context(true);
        params.set_token_timestamps(options.word_timestamps);
        params.set_temperature(attempt.temperature);
        params.set_temperature_inc(options.temperature_increment);
        params.set_no_speech_thold(options.guards.no_speech_threshold);
        params.set_logprob_thold(options.guards.logprob_threshold);
        params.set_suppress_blank(true);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        if let Some(prompt) = &options.initial_prompt {
            params.set_initial_prompt(prompt);
        }
        let input_seconds = input.len() as f64 / f64::from(SAMPLE_RATE);
        // No one says more than ~16 tokens a second: a cap bounds decoding loops (and their cost).
        params.set_max_tokens(max_tokens(input_seconds));
        if attempt.short_context {
            params.set_audio_ctx(short_audio_ctx(input_seconds));
        }
        self.state
            .full(params, input)
            .map_err(|e| TranscribeError::Engine(format!("decoding: {e:?}")))?;

        let eot = self.model.ctx.token_eot();
        let mut out = Vec::new();
        let mut last_start = 0.0f64;
        for i in 0..self.state.full_n_segments() {
            let Some(seg) = self.state.get_segment(i) else {
                continue;
            };
            let start = (seg.start_timestamp() as f64 / 100.0 - offset).clamp(last_start, seconds);
            let end = (seg.end_timestamp() as f64 / 100.0 - offset).clamp(start, seconds);
            last_start = start;
            let text = seg
                .to_str_lossy()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let mut logprob_sum = 0.0f32;
            let mut text_tokens = 0usize;
            let mut words: Vec<(Word, usize)> = Vec::new();
            let mut past_end = Vec::new();
            for j in 0..seg.n_tokens() {
                let Some(tok) = seg.get_token(j) else {
                    continue;
                };
                let data = tok.token_data();
                if data.id >= eot {
                    continue;
                }
                logprob_sum += data.plog;
                text_tokens += 1;
                if !options.word_timestamps {
                    continue;
                }
                let piece = tok
                    .to_str_lossy()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let raw_t0 = data.t0 as f64 / 100.0 - offset;
                let (t0, t1) = (
                    raw_t0.clamp(start, end),
                    (data.t1 as f64 / 100.0 - offset).clamp(start, end),
                );
                let starts_word = piece.starts_with(' ') || words.is_empty();
                let joins_punct =
                    piece.chars().all(|c| c.is_ascii_punctuation()) && !words.is_empty();
                if starts_word && !joins_punct {
                    // A word whose first token is timed in the padding after the audio.
                    past_end.push(raw_t0 >= seconds);
                    words.push((
                        Word {
                            start: t0,
                            end: t1.max(t0),
                            text: piece,
                            probability: data.p,
                        },
                        1,
                    ));
                } else if let Some((w, n)) = words.last_mut() {
                    w.text.push_str(&piece);
                    w.end = w.end.max(t1);
                    w.probability += data.p;
                    *n += 1;
                }
            }
            // Words timed past the end keep a start at the end, so they can be told apart.
            let words: Vec<Word> = words
                .into_iter()
                .zip(&past_end)
                .map(|((mut w, n), &late)| {
                    w.probability /= n as f32;
                    if late {
                        w.start = seconds;
                    }
                    w
                })
                .collect();
            let segment = Segment {
                start,
                end,
                text,
                avg_logprob: if text_tokens > 0 {
                    logprob_sum / text_tokens as f32
                } else {
                    0.0
                },
                no_speech_prob: seg.no_speech_probability(),
                words,
                repair: None,
            };
            if segment.text.trim().is_empty() {
                continue;
            }
            out.push(Raw {
                segment,
                past_end: past_end.iter().filter(|l| **l).count(),
            });
        }
        Ok(out)
    }
}

/// Most tokens a segment of `seconds` of audio may produce.
pub(crate) fn max_tokens(seconds: f64) -> i32 {
    (seconds.min(30.0) * MAX_TOKENS_PER_SECOND).ceil() as i32 + 32
}

/// Encoder positions for `seconds` of audio: the audio plus a second of margin, rounded up to a
/// multiple of 64, within whisper's 1,500.
pub(crate) fn short_audio_ctx(seconds: f64) -> i32 {
    let n = ((seconds + 1.0) * AUDIO_CTX_PER_SECOND).ceil() as i32;
    (((n + 63) / 64) * 64).min(1500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_has_the_kernels_the_build_asked_for() {
        // The workspace's .cargo/config.toml asks for llamafile's kernels (docs/transcribe.md);
        // Cargo does not rebuild whisper.cpp when that setting changes, so a stale build shows.
        let features = engine_features();
        assert!(features.contains("CPU : "), "{features}");
        let asked = option_env!("GGML_LLAMAFILE").is_some_and(|v| v.eq_ignore_ascii_case("on"));
        assert_eq!(
            features.contains("LLAMAFILE = 1"),
            asked,
            "GGML_LLAMAFILE={:?} at build time, whisper.cpp reports {features}: run \
             `cargo clean -p whisper-rs-sys` and build again",
            option_env!("GGML_LLAMAFILE")
        );
    }

    #[test]
    fn audio_ctx_shrinks_for_short_audio() {
        assert_eq!(short_audio_ctx(1.0), 128);
        assert_eq!(short_audio_ctx(10.0), 576);
        assert_eq!(short_audio_ctx(40.0), 1500);
        assert_eq!(max_tokens(1.0), 48);
        assert_eq!(max_tokens(120.0), 512);
    }

    #[test]
    fn options_are_checked() {
        let mut o = TranscribeOptions::default();
        assert!(check_options(&o).is_ok());
        o.threads = 0;
        assert!(check_options(&o).is_err());
        o = TranscribeOptions {
            language: Some("klingon".into()),
            ..TranscribeOptions::default()
        };
        assert!(check_options(&o).is_err());
        o.language = Some("pt, en".into());
        assert!(check_options(&o).is_ok());
        o.language = Some("pt,klingon".into());
        assert!(check_options(&o).is_err());
        assert_eq!(language_codes(Some(" pt, en ,")), ["pt", "en"]);
        assert!(language_codes(None).is_empty());
        o = TranscribeOptions {
            decoding: Decoding::Beam { beam_size: 0 },
            ..TranscribeOptions::default()
        };
        assert!(check_options(&o).is_err());
        for bad in [-0.5, 0.0, f32::NAN, f32::INFINITY] {
            o = TranscribeOptions {
                voiced_margin: Some(bad),
                ..TranscribeOptions::default()
            };
            assert!(check_options(&o).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_unvoiced_edges_are_cut_to_the_margin() {
        let sr = f64::from(SAMPLE_RATE);
        let len = (30.0 * sr) as usize;
        let at = |t: f64| (t * sr) as usize;
        // A lead-in of 6.8 s and a tail of 5 s: a second of each is kept.
        assert_eq!(
            voiced_span(&[6.8, 9.0, 25.0], len, Some(1.0)),
            (at(5.8), at(26.0))
        );
        // Edges shorter than the margin stay whole.
        assert_eq!(voiced_span(&[0.4, 29.5], len, Some(1.0)), (0, len));
        // Nothing voiced, or no margin: the whole input.
        assert_eq!(voiced_span(&[], len, Some(1.0)), (0, len));
        assert_eq!(voiced_span(&[6.8], len, None), (0, len));
    }
}
