//! Transcribe a 16 kHz mono WAV file with Nina's library crates, printing SRT.
//!
//! ```sh
//! scripts/setup.sh
//! cargo run -p nina-transcribe --example transcribe_wav -- testdata/librivox/sense_and_sensibility_01_austen_64kb-0870.wav
//! ```
//! The model is `whisper-base` from `models/` unless `NINA_WHISPER` names another id or ggml file.

use nina_models::{ModelDir, resolve_whisper};
use nina_transcribe::{
    ModelInfo, SpeakerSegment, TranscribeOptions, Transcriber, TranscriptDocument, WhisperModel,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wav = std::env::args()
        .nth(1)
        .ok_or("usage: transcribe_wav FILE.wav")?;
    let choice = std::env::var("NINA_WHISPER").unwrap_or_else(|_| "whisper-base".into());
    let model = WhisperModel::load(&resolve_whisper(&ModelDir::from_env(), &choice)?)?;

    let mut reader = hound::WavReader::open(&wav)?;
    let spec = reader.spec();
    if spec.sample_rate != 16_000
        || spec.channels != 1
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(format!("{wav}: expected 16 kHz mono integer PCM, got {spec:?}").into());
    }
    let scale = f32::from(1u16 << (spec.bits_per_sample - 1).min(15));
    let audio: Vec<f32> = reader
        .samples::<i32>()
        .map(|s| s.map(|v| v as f32 / scale))
        .collect::<Result<_, _>>()?;

    let options = TranscribeOptions::default();
    let transcript = model.transcriber()?.transcribe(&audio, &options)?;
    let doc = TranscriptDocument::new(
        ModelInfo {
            name: model.name().to_string(),
            sha256: model.sha256()?,
        },
        &options,
        transcript
            .segments
            .into_iter()
            .map(|segment| SpeakerSegment {
                speaker: "speaker".into(),
                language: transcript.language.clone(),
                segment,
            })
            .collect(),
        vec![],
    );
    print!("{}", doc.to_srt());
    Ok(())
}
