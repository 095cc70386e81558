#!/usr/bin/env bash
# The README's test command: installs the test dependencies (ffmpeg, ...) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
# Node.js 20 where the machine's is older (install-test-deps.sh fetched it): the browser tests'
# playwright-core needs it.
if [ -x target/node20/node_modules/node/bin/node ]; then
  export PATH="$PWD/target/node20/node_modules/node/bin:$PATH"
fi
# The dashboard's built files (embedded in the binary) must be the build of its sources.
bash scripts/build-dashboard.sh --check

export CI="${CI:-}"
# The API tests drive the load generators (RTMP viewers, WHEP viewers) as real clients; cargo
# only builds a package's binaries for its own integration tests, so build them here.
cargo build -p sluice-loadgen --bins
# Integration tests drive real ffmpeg/ffprobe against the real binary.
cargo nextest run --workspace --all-targets --profile ci "$@"
# Doc tests are not run by nextest.
cargo test --workspace --doc --quiet
