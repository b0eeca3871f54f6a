#!/usr/bin/env bash
# Builds {{name}}.wasm, a Vigil {{role}} policy, from app.py with
# componentize-py {{componentize_py}}, the version Vigil was tested with. The
# tool is installed once, into a virtualenv under ${VIGIL_TOOLS:-~/.cache/vigil}.
# Usage: ./build.sh [OUT.wasm]   (default: {{name}}.wasm beside this script)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m -- "${1:-$here/{{name}}.wasm}")
version={{componentize_py}}
tool="${VIGIL_TOOLS:-$HOME/.cache/vigil}/componentize-py-$version"
if [ ! -x "$tool/bin/componentize-py" ]; then
  echo "build: installing componentize-py $version into $tool" >&2
  python3 -m venv "$tool"
  "$tool/bin/pip" install --quiet "componentize-py==$version"
fi
cd "$here"
mkdir -p "$(dirname "$out")"
"$tool/bin/componentize-py" --wit-path wit --world {{world}} componentize app -o "$out.tmp" >/dev/null
mv -f "$out.tmp" "$out"
echo "build: $out ($(wc -c <"$out") bytes)" >&2
