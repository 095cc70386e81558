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
# WebRTC tests: headless Chromium driven by Playwright (playwright-core from npm, below).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# The tests stop processes with kill(1) and wrap peers in timeout(1).
command -v kill >/dev/null 2>&1 || need+=(procps)
command -v timeout >/dev/null 2>&1 || need+=(coreutils)
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

# playwright-core drives Debian's chromium (never `playwright install`: no browser downloads).
browser_dir="$(dirname "$0")/../crates/server/tests/browser"
if [ ! -d "$browser_dir/node_modules/playwright-core" ]; then
  (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "test dependencies ready: $(ffmpeg -version | head -n1)"
