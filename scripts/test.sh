#!/usr/bin/env bash
# The whole test suite: unit tests, property tests and the integration tests that run the real
# models on real speech. Run scripts/setup.sh first; tests whose models or speech are missing fail
# and name that command.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace --locked --no-fail-fast "$@"
