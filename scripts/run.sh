#!/usr/bin/env bash
# Builds Sluice (installing its build dependencies first) and runs it; arguments go to sluice,
# e.g. `bash scripts/run.sh --config sluice.toml`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-build-deps.sh
exec cargo run --release -- "$@"
