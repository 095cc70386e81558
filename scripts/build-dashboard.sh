#!/bin/sh
# Builds the web dashboard (crates/server/dashboard) into crates/server/dashboard/dist/
# (index.html, assets/app.js, assets/app.css), which the server embeds. Needs node >= 18
# and npm; installs the locked dependencies (npm ci) when they are missing or stale. Downloads
# nothing but npm packages (no browser).
#
#   scripts/build-dashboard.sh           build into dist/ (commit the result)
#   scripts/build-dashboard.sh --check   build elsewhere and fail if dist/ differs (the tests
#                                        run this: the committed files are the sources' build)
set -eu
cd "$(dirname "$0")/../crates/server/dashboard"
# Installed from the lock file when missing or installed from another lock (a checkout that
# changed the dependencies).
if ! cmp -s package-lock.json node_modules/.sluice-lock 2>/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.sluice-lock
fi
if [ "${1:-}" = "--check" ]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
  npx --no-install vite build --logLevel error --outDir "$out" --emptyOutDir
  if ! diff -r "$out" dist >/dev/null; then
    echo "crates/server/dashboard/dist is not the build of its sources: run scripts/build-dashboard.sh and commit dist/" >&2
    diff -rq "$out" dist >&2 || true
    exit 1
  fi
  echo "dashboard: dist/ is the build of its sources"
  exit 0
fi
npx --no-install vite build
ls -l dist dist/assets
