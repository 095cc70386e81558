#!/usr/bin/env bash
# Refreshes the player libraries vendored in crates/server/assets from npm (so that a fresh
# clone builds without npm): hls.js's minified build and dash.js's (the modern UMD build, which
# defines the global `dashjs` when loaded with a plain <script>), each with its licence.
#
#   scripts/refresh-vendored.sh [HLSJS_VERSION] [DASHJS_VERSION]
#
# Each version defaults to the one in assets/VERSIONS (pass "" to keep hls.js's and change only
# dash.js's). Then rebuild; the files are built into the binary (include_bytes!) and served
# under /~sluice/.
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS=crates/server/assets
HLSJS=${1:-$(awk '$1 == "hls.js" {print $2}' "$ASSETS/VERSIONS")}
DASHJS=${2:-$(awk '$1 == "dash.js" {print $2}' "$ASSETS/VERSIONS")}
if [ -z "$HLSJS" ] || [ -z "$DASHJS" ]; then
    echo "no hls.js or dash.js version given or in $ASSETS/VERSIONS" >&2
    exit 1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# hls.js
mkdir "$TMP/hls"
(cd "$TMP/hls" && npm pack --silent "hls.js@$HLSJS" >/dev/null && tar xzf "hls.js-$HLSJS.tgz")
cp "$TMP/hls/package/dist/hls.min.js" "$ASSETS/hls.min.js"
cp "$TMP/hls/package/LICENSE" "$ASSETS/hls.js-LICENSE.txt"

# dash.js: v5 ships dist/modern/umd/dash.all.min.js, v4 dist/dash.all.min.js.
mkdir "$TMP/dash"
(cd "$TMP/dash" && npm pack --silent "dashjs@$DASHJS" >/dev/null && tar xzf "dashjs-$DASHJS.tgz")
DASHDIST=
for d in dist/modern/umd dist; do
    if [ -f "$TMP/dash/package/$d/dash.all.min.js" ]; then DASHDIST=$d; break; fi
done
if [ -z "$DASHDIST" ]; then
    echo "dashjs@$DASHJS has no dash.all.min.js" >&2
    exit 1
fi
cp "$TMP/dash/package/$DASHDIST/dash.all.min.js" "$ASSETS/dash.all.min.js"
{
    cat "$TMP/dash/package/"LICENSE*
    if [ -f "$TMP/dash/package/$DASHDIST/dash.all.min.js.LICENSE.txt" ]; then
        printf '\n\n--- Third-party notices bundled in %s/dash.all.min.js (dash.all.min.js.LICENSE.txt) ---\n\n' "$DASHDIST"
        cat "$TMP/dash/package/$DASHDIST/dash.all.min.js.LICENSE.txt"
    fi
} >"$ASSETS/dashjs-LICENSE.txt"

# VERSIONS: one "NAME VERSION" line each (split on whitespace for the assets' ETag).
{
    awk '$1 != "hls.js" && $1 != "dash.js"' "$ASSETS/VERSIONS"
    echo "hls.js $HLSJS"
    echo "dash.js $DASHJS"
} >"$TMP/VERSIONS"
cp "$TMP/VERSIONS" "$ASSETS/VERSIONS"
echo "hls.js $HLSJS and dash.js $DASHJS vendored in $ASSETS"
