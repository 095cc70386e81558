#!/usr/bin/env bash
# Installs what the test suite and benchmarks need on a fresh Debian machine. Idempotent.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

bash "$(dirname "$0")/install-build-deps.sh"

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v rtmpdump >/dev/null 2>&1 || need+=(rtmpdump)
[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need+=(nginx-light libnginx-mod-rtmp)
command -v srt-live-transmit >/dev/null 2>&1 || need+=(srt-tools)
# The benchmark scripts (bench/) compute their ratios with bc.
command -v bc >/dev/null 2>&1 || need+=(bc)
# WebRTC tests: headless Chromium driven by Playwright (playwright-core from npm, below).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# The tests stop processes with kill(1) and wrap peers in timeout(1).
# `kill` is also a shell builtin: look for the programs (kill, pgrep) themselves.
{ [ -x /usr/bin/kill ] || [ -x /bin/kill ]; } && command -v pgrep >/dev/null 2>&1 || need+=(procps)
command -v timeout >/dev/null 2>&1 || need+=(coreutils)
# The API, push, pull and record tests talk to the API with curl.
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# GStreamer's webrtcbin (through python3-gi) as a second WHIP publisher; openssl makes its
# ECDSA DTLS certificate.
/usr/bin/python3 -c 'import gi; gi.require_version("GstWebRTC", "1.0")' >/dev/null 2>&1 \
  && gst-inspect-1.0 x264enc >/dev/null 2>&1 && gst-inspect-1.0 nicesrc >/dev/null 2>&1 \
  || need+=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
            gstreamer1.0-plugins-ugly gstreamer1.0-nice python3-gi gir1.2-gstreamer-1.0
            gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# nft blocks UDP inside a test's network namespace to prove the ICE-TCP fallback.
command -v nft >/dev/null 2>&1 || need+=(nftables)
# Python test tools (below) live in a venv of the project's: python3 with its venv module.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3 python3-venv)
# Metrics tests: Debian's Prometheus server scrapes /metrics (its service is not started:
# policy-rc.d below; the tests run their own on a free port).
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)

if [ "${#need[@]}" -gt 0 ]; then
  # Keep packaged services (nginx) from starting during install.
  if [ ! -f /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# playwright-core needs Node.js 20 or later; Debian 12's own nodejs is 18. Where the machine's
# node is older, the official Node.js 20 binary comes from the npm registry (the `node` package)
# into target/node20; scripts/test.sh puts it first on PATH.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
node20="$(dirname "$0")/../target/node20"
if [ "$node_major" -lt 20 ] && [ ! -x "$node20/node_modules/node/bin/node" ]; then
  npm install --prefix "$node20" --no-audit --no-fund --loglevel=error node@20
fi

# playwright-core drives Debian's chromium (never `playwright install`: no browser downloads).
browser_dir="$(dirname "$0")/../crates/server/tests/browser"
if [ ! -d "$browser_dir/node_modules/playwright-core" ]; then
  (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
# hls.js for the recording playback test (a VOD playlist played and sought in Chromium), axe-core
# for the dashboard's accessibility check.
web_dir="$(dirname "$0")/../crates/server/tests/web"
if [ ! -d "$web_dir/node_modules/hls.js" ] || [ ! -d "$web_dir/node_modules/axe-core" ]; then
  (cd "$web_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

# Python test tools (schemathesis against the OpenAPI document, and other PyPI packages) go in a
# virtual environment of the project's, so no system Python is touched:
# target/test-venv/bin/<tool>. Tests find them there.
venv="$(dirname "$0")/../target/test-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py_need=()
"$venv/bin/python" -c 'import schemathesis' >/dev/null 2>&1 || py_need+=("schemathesis==4.32.5")
# The metrics tests parse /metrics with prometheus_client's parsers (Prometheus text and OpenMetrics).
"$venv/bin/python" -c 'import prometheus_client' >/dev/null 2>&1 || py_need+=("prometheus_client==0.26.0")
if [ "${#py_need[@]}" -gt 0 ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${py_need[@]}"
fi

echo "test dependencies ready: $(ffmpeg -version | head -n1)"
