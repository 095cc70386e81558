#!/usr/bin/env bash
# Refreshes the player libraries vendored in crates/server/assets from npm (so that a fresh
# clone builds without npm): hls.js's minified build and its licence.
#
#   scripts/refresh-vendored.sh [HLSJS_VERSION]     default: the version in assets/VERSIONS
#
# Then rebuild; the files are built into the binary (include_bytes!) and served under /~sluice/.
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS=crates/server/assets
HLSJS=${1:-$(awk '$1 == "hls.js" {print $2}' "$ASSETS/VERSIONS")}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "hls.js@$HLSJS" >/dev/null && tar xzf "hls.js-$HLSJS.tgz")
cp "$TMP/package/dist/hls.min.js" "$ASSETS/hls.min.js"
cp "$TMP/package/LICENSE" "$ASSETS/hls.js-LICENSE.txt"
sed -i "s/^hls.js .*/hls.js $HLSJS/" "$ASSETS/VERSIONS"
echo "hls.js $HLSJS vendored in $ASSETS"
