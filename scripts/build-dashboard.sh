#!/bin/sh
# Builds the web dashboard (crates/server/dashboard) into crates/server/dashboard/dist/
# (index.html, assets/app.js, assets/app.css), which the server embeds. Needs node >= 20.19
# and npm; installs the locked dependencies (npm ci) when node_modules is missing. Downloads
# nothing but npm packages (no browser).
set -eu
cd "$(dirname "$0")/../crates/server/dashboard"
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
npx --no-install vite build
ls -l dist dist/assets
