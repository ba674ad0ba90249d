//! `reprocess`: Nina's offline pipeline. Audio files into sessions, stored sessions through new
//! models; the data directory's search index, dataset export, erasure and retention. A thin
//! shell over `nina-pipeline` and `nina-index`: arguments, progress bars and exit codes.

mod data;
mod erase;
mod web;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use nina_pipeline::{
    ErrorKind, Outcome, Pipeline, PipelineConfig, PipelineError, Progress, VadChoice,
    file_session_dir,
};
use nina_store::{SessionDir, Store};
use nina_transcribe::Decoding;

/// Exit codes a script can act on.
mod exit {
    pub const OTHER: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const AUDIO: u8 = 3;
    pub const MODELS: u8 = 4;
    pub const SESSION: u8 = 5;
    pub const DISK_FULL: u8 = 6;
    pub const BUSY: u8 = 7;
    pub const FAILED_UTTERANCES: u8 = 8;
}

/// The run finished, but some utterances could not be transcribed (recorded in their
/// sessions' `session.json`; a rerun retries only those).
#[derive(Debug, thiserror::Error)]
#[error(
    "{failed} utterance(s) in {sessions} session(s) could not be transcribed (see above); run again to retry only those"
)]
struct FailedUtterances {
    failed: usize,
    sessions: usize,
}

#[derive(Parser, Debug)]
#[command(
    name = "reprocess",
    args_override_self = true,
    version,
    about = "Nina's offline pipeline: audio files into sessions, stored sessions through new models",
    after_help = "Exit codes: 0 done, 1 other failure, 2 bad usage (an option out of range, a destination \
                  that is not a Nina session), 3 unreadable or unsupported audio, 4 missing or damaged \
                  models (run scripts/setup.sh), 5 damaged session.json, 6 disk full, 7 session in use by \
                  another process, 8 finished but some utterances failed (a rerun retries only those)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Decode an audio file (WAV, FLAC, Ogg/Vorbis, MP3, ...), segment, transcribe and store it.
    File {
        /// The audio file.
        audio: PathBuf,
        /// The session directory to write.
        #[arg(long, required_unless_present = "data", conflicts_with = "data")]
        out: Option<PathBuf>,
        /// A data directory: the session goes to `<data>/0/0/<date>/file-<hash>/`.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Re-run transcription over stored sessions.
    Session {
        /// Session directories (each holding a session.json).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Re-run transcription over every session of a data directory.
    All {
        /// The data directory.
        data: PathBuf,
    },
    /// Render every user's archival track into one time-aligned WAV (48 kHz mono, 16-bit),
    /// each voice brought to the same level.
    Mix {
        /// The session directory.
        session: PathBuf,
        /// The WAV to write (default: SESSION/mix.wav).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List or delete the voiceprints of a guild (`<data>/<guild>/voiceprints.json`): what
    /// diarized speakers are named by. `forget` is how an operator deletes a user's print on
    /// request (the bot's `/record optout` deletes it too).
    Voiceprints {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The guild (server) id.
        #[arg(long)]
        guild: u64,
        #[command(subcommand)]
        action: VoiceprintAction,
    },
    /// Score a diarization against a reference: diarization error rate (missed speech, false
    /// alarm, speaker confusion) with the optimal speaker mapping, at collars 0 and 0.25 s
    /// (seconds removed on each side of every reference boundary, as NIST md-eval's `-c`).
    Score {
        /// Reference RTTM.
        #[arg(long = "ref")]
        reference: PathBuf,
        /// Hypothesis RTTM.
        #[arg(long)]
        hyp: PathBuf,
        /// Collars to score at, in seconds (repeatable).
        #[arg(long = "collar", default_values_t = [0.0, 0.25])]
        collars: Vec<f64>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Build or update the search index of a data directory (`DATA/index.sqlite`): sessions,
    /// utterances, transcript segments and words, speakers, languages, models. Once it exists,
    /// `reprocess` and the collector keep it up to date as they write sessions.
    Index {
        /// The data directory.
        data: PathBuf,
        /// Drop every row and index every session again (default: only what changed).
        #[arg(long)]
        rebuild: bool,
    },
    /// Search the transcripts of a data directory: words (all must occur), "a phrase",
    /// prefix*, -excluded, OR; case and accents do not matter. Best matches first.
    Search {
        /// The data directory.
        data: PathBuf,
        /// What to look for.
        query: String,
        #[command(flatten)]
        filters: data::FilterArgs,
        /// Most results shown.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON (schema nina.search/1) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Export utterances as a speech dataset: 16 kHz mono WAV per utterance, a NeMo/Lhotse
    /// manifest (manifest.jsonl) and a Hugging Face audiofolder (metadata.csv/.jsonl), with
    /// the models that produced the text (export.json, README.md). Resumable.
    Export {
        /// The data directory.
        data: PathBuf,
        #[command(flatten)]
        filters: data::FilterArgs,
        #[command(flatten)]
        args: data::ExportArgs,
    },
    /// Erase a user: their utterance audio and archival tracks, transcript segments,
    /// diarized speakers, voiceprints and index rows, in every session (of one guild with
    /// --guild); prints what it removed. Other sessions are not touched.
    Forget {
        /// The data directory.
        data: PathBuf,
        /// The Discord user id.
        #[arg(long)]
        user: u64,
        /// Only in this guild.
        #[arg(long)]
        guild: Option<u64>,
    },
    /// Serve the operators' web page over a data directory: sessions (list, filters), each
    /// session's lanes, playback and synced transcript, downloads, search, and erasure of a
    /// user (with confirmation, in DATA/audit.jsonl). Updates the index first.
    Serve {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// Address to listen on; anything but loopback needs --token-file.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// A file holding the access token (16-256 of A-Z a-z 0-9 _ - . ~); the browser
        /// opens /login?token=… once.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Compute waveform peaks (`DATA/…/peaks/<user>.dat`, min/max per 10 ms) for sessions that
    /// lack them; the collector writes them while recording.
    Peaks {
        /// The data directory.
        data: PathBuf,
    },
    /// Delete audio older than the retention rules of DATA/retention.json allow (per guild),
    /// keeping transcripts where the rule says so.
    Prune {
        /// The data directory.
        data: PathBuf,
        /// Only print what would go.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
enum VoiceprintAction {
    /// One line per print: user, model, seconds of speech, embeddings.
    List,
    /// Delete every print of a user.
    Forget {
        /// The Discord user id.
        user: u64,
    },
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Vad {
    Auto,
    Silero,
    Energy,
}

#[derive(Args, Debug)]
struct Opts {
    /// Models directory (the only place looked in when given). Default: `$NINA_MODELS`, else
    /// the per-user directory that scripts/setup.sh fills, then `./models`.
    #[arg(long, global = true)]
    models: Option<PathBuf>,
    /// Whisper model: `whisper-base-q8_0`, `whisper-base` (f16), `whisper-base-q5_1`,
    /// `whisper-tiny-en`, a ggml file, or an https URL.
    #[arg(long, global = true, default_value = nina_models::catalog::DEFAULT_WHISPER.id)]
    whisper: String,
    /// sha256 of a Whisper model given by URL (required with a URL).
    #[arg(long, global = true)]
    whisper_sha256: Option<String>,
    /// Voice activity detector (auto: Silero when its model is present).
    #[arg(long, global = true, value_enum, default_value = "auto")]
    vad: Vad,
    /// Language code (`en`, `de`, ...) to force one, or several (`pt,en`) to detect among them;
    /// detected among all when absent. With `search` and `export`: only segments in this language.
    #[arg(long, global = true)]
    language: Option<String>,
    /// Names and jargon that condition the decoder.
    #[arg(long, global = true)]
    prompt: Option<String>,
    /// Beam search with this many beams instead of greedy decoding (about twice the decoding
    /// time; whisper.cpp samples each beam's candidates, see docs/transcribe.md).
    #[arg(long, global = true, value_parser = clap::value_parser!(u8).range(1..=8))]
    beam: Option<u8>,
    /// Translate to English.
    #[arg(long, global = true)]
    translate: bool,
    /// Always give Whisper a full 30 s window (slower; more accurate with tiny models on short
    /// utterances, and language detection is right more often; see docs/measurements.md).
    #[arg(long, global = true)]
    full_window: bool,
    /// Transcription workers running at once.
    #[arg(long, global = true, default_value_t = 1)]
    jobs: usize,
    /// CPU threads per worker (default: the cores divided among the workers).
    #[arg(long, global = true)]
    threads: Option<u16>,
    /// Longest utterance in seconds; longer speech is cut at its quietest point.
    #[arg(long, global = true, default_value_t = 30.0)]
    max_utterance: f64,
    /// Redo work already done with the same model and options.
    #[arg(long, global = true)]
    force: bool,
    /// Diarize too: who speaks when within each stream (CAM++ speaker embeddings, clustered),
    /// written to the session's diarization.rttm and diarization.json (the speaker of every
    /// transcript segment, and of every word where a segment straddles a turn change).
    #[arg(long, global = true)]
    diarize: bool,
    /// With --diarize: exactly this many speakers per stream.
    #[arg(long, global = true, requires = "diarize", conflicts_with_all = ["min_speakers", "max_speakers"])]
    speakers: Option<usize>,
    /// With --diarize: at least this many speakers per stream.
    #[arg(long, global = true, requires = "diarize")]
    min_speakers: Option<usize>,
    /// With --diarize: at most this many speakers per stream.
    #[arg(long, global = true, requires = "diarize")]
    max_speakers: Option<usize>,
    /// With --diarize: cosine similarity under which two clusters of speech are different
    /// speakers (average linkage; default calibrated, see docs/diarize.md). Higher finds more.
    #[arg(long, global = true, requires = "diarize")]
    diarize_threshold: Option<f32>,
    /// With --diarize: neither name speakers after the guild's voiceprints nor enrol clean
    /// user streams into them. By default a stored session uses its guild's
    /// (`<data>/<guild>/voiceprints.json`, the data directory being four levels above it).
    #[arg(
        long,
        global = true,
        requires = "diarize",
        conflicts_with = "voiceprints_of"
    )]
    no_voiceprints: bool,
    /// With --diarize: name speakers after the voiceprints of this guild (for `file --data`,
    /// whose sessions belong to no guild; needs a data directory).
    #[arg(long, global = true, requires = "diarize", value_name = "GUILD")]
    voiceprints_of: Option<u64>,
    /// With --diarize: cosine similarity a speaker needs to a voiceprint to take its name
    /// (default calibrated, see docs/diarize.md).
    #[arg(long, global = true, requires = "diarize")]
    identify_threshold: Option<f32>,
}

/// What `--diarize` asked for.
#[derive(Debug)]
struct DiarizeRun {
    cfg: nina_diarize::DiarizeConfig,
    threads: usize,
    voiceprints: bool,
    voiceprints_of: Option<u64>,
    threshold: f32,
}

impl DiarizeRun {
    /// The voiceprints to use for the session in `dir` (`data`: its data directory when known):
    /// the guild's prints and opt-outs, or `None` when there is no guild or they are off.
    fn prints(
        &self,
        dir: &Path,
        data: Option<&Path>,
    ) -> Result<Option<(nina_store::VoicePrints, std::collections::BTreeSet<u64>)>, PipelineError>
    {
        if !self.voiceprints {
            return Ok(None);
        }
        let session = SessionDir::new(dir).load()?;
        let guild = self.voiceprints_of.unwrap_or(session.guild.id);
        // `<data>/<guild>/<channel>/<date>/<id>`: the data directory is four levels up.
        let derived;
        let data = match data {
            Some(d) => d,
            None => {
                let up: Vec<&Path> = dir.ancestors().take(5).collect();
                let named = |i: usize, n: String| {
                    up.get(i)
                        .and_then(|p| p.file_name())
                        .is_some_and(|f| f.to_string_lossy() == n)
                };
                if up.len() < 5
                    || !named(3, session.guild.id.to_string())
                    || !named(2, session.channel.id.to_string())
                {
                    return Ok(None);
                }
                derived = up[4].to_path_buf();
                &derived
            }
        };
        if guild == 0 {
            return Ok(None);
        }
        let prints = nina_store::VoicePrints::load(data, guild)?;
        let out = nina_store::opted_out(data, guild)?;
        Ok(Some((prints, out)))
    }

    /// Diarizes the session in `dir` with its voiceprints.
    fn run(
        &self,
        pipeline: &Pipeline,
        dir: &SessionDir,
        data: Option<&Path>,
        force: bool,
        progress: &dyn nina_pipeline::Progress,
    ) -> Result<nina_pipeline::DiarizeOutcome, PipelineError> {
        let mut loaded = self.prints(dir.root(), data)?;
        let mut voices = loaded.as_mut().map(|(prints, out)| nina_pipeline::Voices {
            prints,
            enrol: true,
            opted_out: std::mem::take(out),
            threshold: self.threshold,
        });
        pipeline.diarize_session(
            dir,
            &self.cfg,
            self.threads,
            force,
            voices.as_mut(),
            progress,
        )
    }
}

impl Opts {
    /// The diarization settings, checked (a bad value is a usage error, exit 2); `None`
    /// without `--diarize`.
    fn diarize_config(&self) -> anyhow::Result<Option<nina_diarize::DiarizeConfig>> {
        if !self.diarize {
            return Ok(None);
        }
        let mut c = nina_diarize::DiarizeConfig::default();
        c.cluster.speakers = self.speakers;
        if let Some(m) = self.min_speakers {
            c.cluster.min_speakers = m;
        }
        if let Some(m) = self.max_speakers {
            c.cluster.max_speakers = m;
        }
        if let Some(t) = self.diarize_threshold {
            c.cluster.threshold = t;
        }
        c.validate().map_err(|e| UsageError(e.to_string()))?;
        Ok(Some(c))
    }

    fn diarize_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        self.threads.map_or(cores, usize::from)
    }

    fn config(&self) -> PipelineConfig {
        let mut cfg = PipelineConfig {
            models: nina_models::ModelDir::from_option(self.models.as_ref()),
            whisper: self.whisper.clone(),
            vad: match self.vad {
                Vad::Auto => VadChoice::Auto,
                Vad::Silero => VadChoice::Silero,
                Vad::Energy => VadChoice::Energy,
            },
            workers: self.jobs,
            ..PipelineConfig::default()
        };
        cfg.segmenter.max_utterance = self.max_utterance;
        let t = &mut cfg.transcribe;
        t.language = self.language.clone();
        t.initial_prompt = self.prompt.clone();
        t.translate = self.translate;
        t.short_audio_context = !self.full_window;
        if let Some(beam_size) = self.beam {
            t.decoding = Decoding::Beam { beam_size };
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        t.threads = self
            .threads
            .unwrap_or_else(|| u16::try_from((cores / self.jobs.max(1)).max(1)).unwrap_or(1));
        cfg
    }
}

/// Progress bars: sessions, and hours of audio transcribed.
struct Bars {
    sessions: ProgressBar,
    audio: ProgressBar,
    decode: ProgressBar,
}

impl Bars {
    fn new(sessions: usize, audio_seconds: f64) -> Self {
        let multi = MultiProgress::new();
        let style = |t: &str| {
            ProgressStyle::with_template(t).unwrap_or_else(|_| ProgressStyle::default_bar())
        };
        let s = multi.add(ProgressBar::new(sessions as u64));
        s.set_style(style("sessions {bar:30} {pos}/{len} {wide_msg}"));
        let a = multi.add(ProgressBar::new((audio_seconds * 1000.0) as u64));
        a.set_style(style("audio    {bar:30} {msg} ({eta} left)"));
        let d = multi.add(ProgressBar::new_spinner());
        d.set_style(style("decoding {spinner} {msg}"));
        Self {
            sessions: s,
            audio: a,
            decode: d,
        }
    }

    fn hours(ms: u64) -> String {
        format!("{:.2} h", ms as f64 / 3_600_000.0)
    }

    fn refresh(&self) {
        self.audio.set_message(format!(
            "{} / {}",
            Self::hours(self.audio.position()),
            Self::hours(self.audio.length().unwrap_or(0))
        ));
    }
}

impl Progress for Bars {
    fn decoded(&self, seconds: f64) {
        self.decode.set_message(format!("{seconds:.0} s of audio"));
        self.decode.tick();
    }

    fn transcription_started(&self, session: &Path, _n: usize, _done: usize, audio_seconds: f64) {
        self.decode.finish_and_clear();
        self.sessions.set_message(session.display().to_string());
        // `file` does not know the audio length before segmenting.
        if self.audio.length() == Some(0) {
            self.audio.set_length((audio_seconds * 1000.0) as u64);
        }
        self.refresh();
    }

    fn utterance_done(&self, seconds: f64) {
        self.audio.inc((seconds * 1000.0) as u64);
        self.refresh();
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<FailedUtterances>().is_some() {
        return exit::FAILED_UTTERANCES;
    }
    if e.downcast_ref::<Busy>().is_some() {
        return exit::BUSY;
    }
    if let Some(i) = e.downcast_ref::<nina_index::IndexError>() {
        return match i {
            _ if i.is_busy() => exit::BUSY,
            nina_index::IndexError::Store(s) => store_code(s),
            nina_index::IndexError::Query(_) | nina_index::IndexError::Missing(_) => exit::USAGE,
            _ => exit::OTHER,
        };
    }
    if let Some(s) = e.downcast_ref::<nina_store::StoreError>() {
        return store_code(s);
    }
    if e.downcast_ref::<UsageError>().is_some()
        || e.downcast_ref::<nina_eval::rttm::RttmError>().is_some()
    {
        return exit::USAGE;
    }
    match e.downcast_ref::<nina_models::ModelError>() {
        Some(nina_models::ModelError::ChecksumRequired { .. }) => return exit::USAGE,
        Some(_) => return exit::MODELS,
        None => {}
    }
    match e.downcast_ref::<PipelineError>().map(PipelineError::kind) {
        Some(ErrorKind::Audio) => exit::AUDIO,
        Some(ErrorKind::Models) => exit::MODELS,
        Some(ErrorKind::Session) => exit::SESSION,
        Some(ErrorKind::DiskFull) => exit::DISK_FULL,
        Some(ErrorKind::Busy) => exit::BUSY,
        Some(ErrorKind::Usage) => exit::USAGE,
        Some(ErrorKind::Other) | None => exit::OTHER,
    }
}

/// The exit code of a store error (as `PipelineError::kind` sorts them).
fn store_code(e: &nina_store::StoreError) -> u8 {
    use nina_store::StoreError as S;
    match e {
        _ if e.is_disk_full() => exit::DISK_FULL,
        S::Invalid { .. } | S::NewerVersion { .. } | S::NotASession(_) => exit::SESSION,
        S::Locked(_) => exit::BUSY,
        S::NotOurs(_) => exit::USAGE,
        _ => exit::OTHER,
    }
}

fn report(o: &Outcome, dir: &Path) {
    match o {
        Outcome::Skipped => eprintln!(
            "{}: already transcribed with this model and options (--force redoes it)",
            dir.display()
        ),
        Outcome::Done {
            utterances,
            resumed,
            audio_seconds,
            failed,
            guards,
        } => {
            eprintln!(
                "{}: {utterances} utterances, {audio_seconds:.1} s of speech{}{}{}",
                dir.display(),
                if *resumed > 0 {
                    format!(" ({resumed} resumed from an earlier run)")
                } else {
                    String::new()
                },
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(", {} FAILED", failed.len())
                },
                if guards.is_empty() {
                    String::new()
                } else {
                    format!("; guards: {guards}")
                }
            );
            for f in failed {
                eprintln!("  failed: {}: {}", f.file, f.reason);
            }
        }
    }
}

fn failed_of(o: &Outcome) -> usize {
    match o {
        Outcome::Done { failed, .. } => failed.len(),
        Outcome::Skipped => 0,
    }
}

fn report_diarize(o: &nina_pipeline::DiarizeOutcome, dir: &Path) {
    match o {
        nina_pipeline::DiarizeOutcome::Skipped => eprintln!(
            "{}: already diarized with these settings (--force redoes it)",
            dir.display()
        ),
        nina_pipeline::DiarizeOutcome::Done {
            speakers,
            resumed,
            enrolled,
            identified,
            ..
        } => eprintln!(
            "{}: {speakers} speaker(s) diarized into {}{}{}",
            dir.display(),
            nina_pipeline::DIARIZATION_RTTM,
            if *identified > 0 || *enrolled > 0 {
                format!(", {identified} named after voiceprints, {enrolled} user(s) enrolled")
            } else {
                String::new()
            },
            if *resumed > 0 {
                format!(" ({resumed} utterances' embeddings resumed)")
            } else {
                String::new()
            }
        ),
    }
}

/// Transcribes `dirs` one after another, going on past failures; returns the first.
fn run_sessions(
    pipeline: &Pipeline,
    dirs: Vec<SessionDir>,
    force: bool,
    diarize: Option<&DiarizeRun>,
    data: Option<&Path>,
) -> anyhow::Result<()> {
    let total: f64 = dirs
        .iter()
        .filter_map(|d| d.load().ok())
        .map(|s| s.utterances.iter().map(|u| u.end - u.start).sum::<f64>())
        .sum();
    let bars = Bars::new(dirs.len(), total);
    bars.decode.finish_and_clear();
    let mut first_error = None;
    let (mut failed, mut failed_sessions) = (0, 0);
    for dir in &dirs {
        // A session whose audio the retention rules removed keeps its transcripts as they are.
        if dir
            .load()
            .is_ok_and(|s| s.processing_of(data::STEP_RETENTION).is_some())
        {
            bars.sessions.suspend(|| {
                eprintln!(
                    "{}: audio removed by `reprocess prune`; transcripts kept as they are",
                    dir.root().display()
                )
            });
            bars.sessions.inc(1);
            continue;
        }
        // A session recorded in raw mode (archival tracks only) is segmented first.
        let has_tracks = dir.load().is_ok_and(|s| !s.tracks.is_empty());
        let segmented = if has_tracks {
            pipeline.segment_tracks(dir, force, &bars).map(|_| ())
        } else {
            Ok(())
        };
        let result = segmented
            .and_then(|()| pipeline.transcribe_session(dir, force, &bars))
            .and_then(|o| {
                bars.sessions.suspend(|| report(&o, dir.root()));
                if let Some(run) = diarize {
                    let d = run.run(pipeline, dir, data, force, &bars)?;
                    bars.sessions.suspend(|| report_diarize(&d, dir.root()));
                }
                Ok(o)
            });
        if result.is_ok() {
            data::update_index(data, dir);
        }
        match result {
            Ok(o) => {
                failed += failed_of(&o);
                failed_sessions += usize::from(failed_of(&o) > 0);
            }
            Err(e) => {
                let e = anyhow::Error::new(e).context(format!("session {}", dir.root().display()));
                bars.sessions.suspend(|| eprintln!("error: {e:#}"));
                first_error.get_or_insert(e);
            }
        }
        bars.sessions.inc(1);
    }
    bars.sessions.finish_and_clear();
    bars.audio.finish_and_clear();
    match first_error {
        Some(e) if dirs.len() > 1 => Err(e.context("some sessions failed (see above)")),
        Some(e) => Err(e),
        None if failed > 0 => Err(FailedUtterances {
            failed,
            sessions: failed_sessions,
        }
        .into()),
        None => Ok(()),
    }
}

/// The pipeline for `opts`: every option checked before any model loads (exit 2), and a
/// Whisper model given by URL downloaded (with its checksum) into the models directory.
fn pipeline(opts: &Opts) -> anyhow::Result<Pipeline> {
    let mut cfg = opts.config();
    cfg.validate().context("invalid option")?;
    let is_url = cfg.whisper.starts_with("https://") || cfg.whisper.starts_with("http://");
    if is_url {
        let path = nina_model_setup::resolve_or_download_whisper(
            &cfg.models,
            &cfg.whisper,
            opts.whisper_sha256.as_deref(),
        )?;
        cfg.whisper = path.to_string_lossy().into_owned();
    }
    Pipeline::new(cfg).context("configuration")
}

/// `reprocess score`: no models needed.
fn score(reference: &Path, hyp: &Path, collars: &[f64], json: bool) -> anyhow::Result<()> {
    let read = |p: &Path| -> anyhow::Result<Vec<nina_eval::testdata::Turn>> {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        nina_eval::rttm::parse(&text).with_context(|| format!("parsing {}", p.display()))
    };
    let (r, h) = (read(reference)?, read(hyp)?);
    if let Some(bad) = collars.iter().find(|c| !c.is_finite() || **c < 0.0) {
        return Err(UsageError(format!("--collar {bad}: give seconds >= 0")).into());
    }
    let scores: Vec<nina_eval::der::Der> = collars
        .iter()
        .map(|c| nina_eval::der::der(&r, &h, *c))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&scores)?);
        return Ok(());
    }
    println!("| collar (s) | DER | missed | false alarm | confusion | scored speech (s) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for d in &scores {
        let pct = |x: f64| {
            if d.total > 0.0 {
                100.0 * x / d.total
            } else {
                0.0
            }
        };
        println!(
            "| {:.2} | {:.2}% | {:.2}% | {:.2}% | {:.2}% | {:.1} |",
            d.collar,
            100.0 * d.der,
            pct(d.missed),
            pct(d.false_alarm),
            pct(d.confusion),
            d.total
        );
    }
    if let Some(d) = scores.first() {
        let pairs: Vec<String> = d.mapping.iter().map(|(r, h)| format!("{r}={h}")).collect();
        println!("mapping: {}", pairs.join(" "));
    }
    Ok(())
}

/// `reprocess voiceprints`: no models needed.
fn voiceprints(data: &Path, guild: u64, action: VoiceprintAction) -> anyhow::Result<()> {
    let mut prints = nina_store::VoicePrints::load(data, guild)
        .with_context(|| format!("voiceprints of guild {guild}"))?;
    match action {
        VoiceprintAction::List => {
            for p in prints.all() {
                println!(
                    "{}\t{}\t{:.1} s\t{} embeddings",
                    p.user_id, p.model, p.seconds, p.count
                );
            }
        }
        VoiceprintAction::Forget { user } => {
            let n = prints.forget(user);
            prints.save().context("saving the voiceprints")?;
            eprintln!("deleted {n} voiceprint(s) of user {user} in guild {guild}");
        }
    }
    Ok(())
}

/// Sessions were left alone because another process held them (exit 7).
#[derive(Debug, thiserror::Error)]
#[error(
    "{0} session(s) were in use by another process and were left as they are; run again when they are free"
)]
struct Busy(usize);

/// A bad command-line value found after parsing (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn run(cli: Cli) -> anyhow::Result<()> {
    let command = match cli.command {
        Command::Score {
            reference,
            hyp,
            collars,
            json,
        } => return score(&reference, &hyp, &collars, json),
        Command::Voiceprints {
            data,
            guild,
            action,
        } => return voiceprints(&data, guild, action),
        Command::Index { data, rebuild } => return data::index(&data, rebuild),
        Command::Search {
            data,
            query,
            filters,
            limit,
            json,
        } => {
            let language = cli.opts.language.as_deref();
            return data::search(&data, &query, &filters, language, limit, json);
        }
        Command::Export {
            data,
            filters,
            args,
        } => return data::export(&data, &filters, cli.opts.language.as_deref(), &args),
        Command::Forget { data, user, guild } => return erase::forget(&data, user, guild),
        Command::Prune { data, dry_run } => return data::prune(&data, dry_run),
        Command::Serve {
            data,
            listen,
            token_file,
        } => return web::serve(&data, listen, token_file.as_deref()),
        Command::Peaks { data } => return web::peaks(&data),
        other => other,
    };
    let diarize = cli.opts.diarize_config()?.map(|cfg| DiarizeRun {
        cfg,
        threads: cli.opts.diarize_threads(),
        voiceprints: !cli.opts.no_voiceprints,
        voiceprints_of: cli.opts.voiceprints_of,
        threshold: cli
            .opts
            .identify_threshold
            .unwrap_or(nina_diarize::IDENTIFY_THRESHOLD),
    });
    if let Some(t) = cli.opts.identify_threshold
        && !(t.is_finite() && (-1.0..=1.0).contains(&t))
    {
        return Err(UsageError(format!("--identify-threshold {t}: must be in [-1, 1]")).into());
    }
    if cli.opts.voiceprints_of.is_some()
        && let Command::File { data: None, .. } = &command
    {
        return Err(UsageError(
            "--voiceprints-of needs --data: voiceprints live in <data>/<guild>/".into(),
        )
        .into());
    }
    let pipeline = pipeline(&cli.opts)?;
    let force = cli.opts.force;
    match command {
        Command::File { audio, out, data } => {
            let dest = match (out, data.as_ref()) {
                (Some(out), _) => SessionDir::new(out),
                (None, Some(data)) => file_session_dir(&Store::new(data), &audio)?,
                (None, None) => anyhow::bail!("give --out <SESSION_DIR> or --data <DATA_DIR>"),
            };
            let bars = Bars::new(1, 0.0);
            let session = pipeline
                .segment_file(&audio, &dest, force, &bars)
                .with_context(|| format!("segmenting {}", audio.display()))?;
            bars.decode.finish_and_clear();
            let outcome = pipeline
                .transcribe_session(&dest, force, &bars)
                .with_context(|| format!("transcribing {}", dest.root().display()))?;
            bars.sessions.inc(1);
            bars.sessions.finish_and_clear();
            bars.audio.finish_and_clear();
            report(&outcome, dest.root());
            if let Some(run) = &diarize {
                let bars = Bars::new(1, 0.0);
                bars.decode.finish_and_clear();
                let d = run
                    .run(&pipeline, &dest, data.as_deref(), force, &bars)
                    .with_context(|| format!("diarizing {}", dest.root().display()))?;
                bars.sessions.finish_and_clear();
                bars.audio.finish_and_clear();
                report_diarize(&d, dest.root());
            }
            data::update_index(data.as_deref(), &dest);
            println!("{}", dest.root().display());
            tracing::debug!(utterances = session.utterances.len(), "file done");
            match failed_of(&outcome) {
                0 => Ok(()),
                failed => Err(FailedUtterances {
                    failed,
                    sessions: 1,
                }
                .into()),
            }
        }
        Command::Session { dirs } => run_sessions(
            &pipeline,
            dirs.into_iter().map(SessionDir::new).collect(),
            force,
            diarize.as_ref(),
            None,
        ),
        Command::Mix { session, out } => {
            let dir = SessionDir::new(&session);
            let out = out.unwrap_or_else(|| session.join(nina_pipeline::mix::MIX_FILE));
            let r = nina_pipeline::mix::mix_session(&dir, &out, &Default::default())
                .with_context(|| format!("mixing {}", session.display()))?;
            for t in &r.tracks {
                eprintln!(
                    "user {}: {:.1} s, speech at {}, gain {:+.1} dB{}",
                    t.user_id,
                    t.seconds,
                    t.active_dbfs
                        .map_or_else(|| "(none heard)".to_string(), |d| format!("{d:.1} dBFS")),
                    t.gain_db,
                    t.damage.as_ref().map_or_else(String::new, |d| format!(
                        " (damaged, used as far as whole: {d})"
                    ))
                );
            }
            println!("{}", r.path.display());
            Ok(())
        }
        Command::Score { .. }
        | Command::Voiceprints { .. }
        | Command::Index { .. }
        | Command::Search { .. }
        | Command::Export { .. }
        | Command::Forget { .. }
        | Command::Serve { .. }
        | Command::Peaks { .. }
        | Command::Prune { .. } => Ok(()),
        Command::All { data } => {
            let dirs = Store::new(&data)
                .sessions()
                .with_context(|| format!("listing sessions under {}", data.display()))?;
            if dirs.is_empty() {
                eprintln!("no sessions under {}", data.display());
                return Ok(());
            }
            run_sessions(&pipeline, dirs, force, diarize.as_ref(), Some(&data))
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NINA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = exit_code(&e);
            if code == exit::MODELS {
                eprintln!("hint: run scripts/setup.sh to fetch and verify the models");
            }
            ExitCode::from(code)
        }
    }
}
