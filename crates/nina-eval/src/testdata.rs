//! The reference speech that `scripts/setup.sh` places in `testdata/` (never shipped).
//!
//! Every accessor fails with a message naming the set-up command when a file is missing, so a
//! test without its data fails loudly instead of passing by skipping.

use std::fmt;
use std::path::{Path, PathBuf};

/// A test file is missing or unreadable.
#[derive(Debug)]
pub struct TestDataError(String);

impl fmt::Display for TestDataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (fetch the test data with: scripts/setup.sh)", self.0)
    }
}

impl std::error::Error for TestDataError {}

type Result<T> = std::result::Result<T, TestDataError>;

/// The workspace root: `$NINA_ROOT`, else the nearest ancestor of the current directory holding `scripts/setup.sh`.
pub fn workspace_root() -> PathBuf {
    if let Some(r) = std::env::var_os("NINA_ROOT") {
        return PathBuf::from(r);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors()
        .find(|p| p.join("scripts/setup.sh").is_file())
        .map_or(cwd.clone(), Path::to_path_buf)
}

/// The models directory of the workspace (`$NINA_MODELS` wins).
pub fn models_dir() -> PathBuf {
    std::env::var_os("NINA_MODELS").map_or_else(|| workspace_root().join("models"), PathBuf::from)
}

/// Path of `relative` under `testdata/`, which must exist.
pub fn require(relative: &str) -> Result<PathBuf> {
    let p = workspace_root().join("testdata").join(relative);
    if p.exists() {
        Ok(p)
    } else {
        Err(TestDataError(format!(
            "test data {} is missing",
            p.display()
        )))
    }
}

/// 16 kHz mono audio with its reference text.
#[derive(Debug, Clone)]
pub struct Clip {
    /// Identifier (file stem).
    pub id: String,
    /// The WAV file.
    pub path: PathBuf,
    /// Reference transcript.
    pub text: String,
}

/// Parses Sphinx `transcription` lines: `<s> words </s> (id)`.
fn sphinx_clips(dir: &str, transcript: &str) -> Result<Vec<Clip>> {
    let d = require(dir)?;
    let t = require(&format!("{dir}/{transcript}"))?;
    let text =
        std::fs::read_to_string(&t).map_err(|e| TestDataError(format!("{}: {e}", t.display())))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (words, id) = line
            .rsplit_once('(')
            .ok_or_else(|| TestDataError(format!("bad transcription line `{line}`")))?;
        let id = id.trim_end().trim_end_matches(')').to_string();
        let words = words.replace("<s>", "").replace("</s>", "");
        let path = d.join(format!("{id}.wav"));
        if !path.is_file() {
            return Err(TestDataError(format!(
                "test data {} is missing",
                path.display()
            )));
        }
        out.push(Clip {
            id,
            path,
            text: words.split_whitespace().collect::<Vec<_>>().join(" "),
        });
    }
    Ok(out)
}

/// Five LibriVox read-speech clips (one male reader, 3 to 7 s).
pub fn librivox() -> Result<Vec<Clip>> {
    sphinx_clips("librivox", "transcription")
}

/// Five short "cards" utterances ("ten of clubs").
pub fn cards() -> Result<Vec<Clip>> {
    sphinx_clips("cards", "cards.transcription")
}

/// Synthesized sentences of one flite voice (`slt`, `rms`, `awb`, `kal16`).
pub fn flite(voice: &str) -> Result<Vec<Clip>> {
    tsv_clips("flite", voice)
}

/// Short replies ("Yes.", "No.", "Okay.", "Bye bye.", "Thank you.") of one flite voice.
pub fn replies(voice: &str) -> Result<Vec<Clip>> {
    tsv_clips("replies", voice)
}

/// Two sentences in the language `code` (`pt`, `es`, `de`, `fr`, `en`) spoken by espeak-ng
/// (Portuguese is Brazilian): language detection tests.
pub fn espeak(code: &str) -> Result<Vec<Clip>> {
    tsv_clips("espeak", code)
}

/// The clips of `voice` listed in `<dir>/transcription.tsv` (`<voice>-<n>\t<text>` lines).
fn tsv_clips(dir: &str, voice: &str) -> Result<Vec<Clip>> {
    let t = require(&format!("{dir}/transcription.tsv"))?;
    let text =
        std::fs::read_to_string(&t).map_err(|e| TestDataError(format!("{}: {e}", t.display())))?;
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(id, _)| id.rsplit_once('-').is_some_and(|(v, _)| v == voice))
        .map(|(id, words)| {
            Ok(Clip {
                id: id.to_string(),
                path: require(&format!("{dir}/{id}.wav"))?,
                text: words.to_string(),
            })
        })
        .collect()
}

/// One speaker turn of an RTTM or STM file.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// Speaker label.
    pub speaker: String,
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Words (STM only).
    pub text: String,
}

/// The pyannote sample: a 30 s two-speaker phone call.
pub fn pyannote_wav() -> Result<PathBuf> {
    require("pyannote/sample.wav")
}

/// Speaker turns of the pyannote sample (`sample.rttm`).
pub fn pyannote_rttm() -> Result<Vec<Turn>> {
    let p = require("pyannote/sample.rttm")?;
    let text =
        std::fs::read_to_string(&p).map_err(|e| TestDataError(format!("{}: {e}", p.display())))?;
    crate::rttm::parse(&text).map_err(|e| TestDataError(format!("{}: {e}", p.display())))
}

/// Transcript of the pyannote sample (`sample.stm`), turn by turn.
pub fn pyannote_stm() -> Result<Vec<Turn>> {
    let p = require("pyannote/sample.stm")?;
    let text =
        std::fs::read_to_string(&p).map_err(|e| TestDataError(format!("{}: {e}", p.display())))?;
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(";;"))
        .map(|l| {
            let f: Vec<&str> = l.splitn(6, ' ').collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
            match (f.get(2), num(3), num(4)) {
                (Some(spk), Some(s), Some(e)) => Ok(Turn {
                    speaker: spk.to_string(),
                    start: s,
                    end: e,
                    text: f.get(5).unwrap_or(&"").to_string(),
                }),
                _ => Err(TestDataError(format!("bad STM line `{l}`"))),
            }
        })
        .collect()
}

/// The whole transcript of the pyannote sample: its turns' texts joined by spaces.
pub fn pyannote_text() -> Result<String> {
    Ok(pyannote_stm()?
        .into_iter()
        .map(|t| t.text)
        .collect::<Vec<_>>()
        .join(" "))
}

/// Reads a 16 kHz mono 16-bit WAV into `f32` samples in `[-1, 1]`.
pub fn read_wav_16k_mono(path: &Path) -> Result<Vec<f32>> {
    let err = |e: hound::Error| TestDataError(format!("{}: {e}", path.display()));
    let mut r = hound::WavReader::open(path).map_err(err)?;
    let spec = r.spec();
    if spec.sample_rate != 16_000 || spec.channels != 1 || spec.bits_per_sample != 16 {
        return Err(TestDataError(format!(
            "{} is not 16 kHz mono 16-bit: {spec:?}",
            path.display()
        )));
    }
    r.samples::<i16>()
        .map(|s| s.map(|v| f32::from(v) / 32768.0).map_err(err))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_data_names_the_setup_command() {
        let e = require("no/such/file.wav").unwrap_err().to_string();
        assert!(e.contains("scripts/setup.sh"), "{e}");
    }
}
