#!/usr/bin/env bash
# Builds {{name}}.wasm, a Vigil {{role}} policy, from app.js with
# componentize-js {{componentize_js}}, the version Vigil was tested with. The
# tool is installed once, with npm, under ${VIGIL_TOOLS:-~/.cache/vigil}.
# Usage: ./build.sh [OUT.wasm]   (default: {{name}}.wasm beside this script)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m -- "${1:-$here/{{name}}.wasm}")
version={{componentize_js}}
tool="${VIGIL_TOOLS:-$HOME/.cache/vigil}/componentize-js-$version"
if [ ! -x "$tool/node_modules/.bin/componentize-js" ]; then
  echo "build: installing componentize-js $version into $tool" >&2
  mkdir -p "$tool"
  npm install --prefix "$tool" --save-exact --no-audit --no-fund --loglevel=error \
    "@bytecodealliance/componentize-js@$version"
fi
cd "$here"
mkdir -p "$(dirname "$out")"
# A policy has no network: leave out the HTTP client and fetch handler
# (Vigil gives policies no wasi:http to import).
"$tool/node_modules/.bin/componentize-js" app.js --wit wit --world-name {{world}} \
  --disable http fetch-event -o "$out.tmp" >/dev/null
mv -f "$out.tmp" "$out"
echo "build: $out ($(wc -c <"$out") bytes)" >&2
