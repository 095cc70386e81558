#!/usr/bin/env bash
# Installs what building Sluice needs on a fresh Debian machine (libsrt for SRT; cmake and a C++
# compiler to build the bundled libopus and fdk-aac for WebRTC audio conversion). Idempotent.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# libsrt, the SRT reference implementation; the GnuTLS flavour is the one ffmpeg uses on Debian.
pkg-config --exists srt 2>/dev/null || need+=(libsrt-gnutls-dev)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v c++ >/dev/null 2>&1 || need+=(g++)

if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
