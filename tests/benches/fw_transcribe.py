"""The faster-whisper side of `cargo bench -p nina-tests --bench models` (not named after the
module: Python would import this file in its place).

Usage: python fw_transcribe.py MODEL_DIR COMPUTE_TYPE THREADS AUDIO
Prints the transcript of AUDIO (beam 5, Silero VAD filter, English) on stdout.
"""
import sys

from faster_whisper import WhisperModel

model_dir, compute, threads, audio = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
model = WhisperModel(model_dir, device="cpu", compute_type=compute, cpu_threads=threads)
segments, _ = model.transcribe(audio, beam_size=5, vad_filter=True, language="en")
print(" ".join(s.text.strip() for s in segments))
