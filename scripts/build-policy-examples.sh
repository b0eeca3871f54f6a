#!/usr/bin/env bash
# Builds the example policies in other languages (examples/policies/<lang>/<name>/,
# and the test-only ones in tests/policies/<lang>/<name>/) into
# target/policy-examples/<lang>/<name>.wasm with the same build script
# `vigil policy new` writes (host/src/cli/scaffold/build-<lang>.sh, rendered
# with the pins of scripts/policy-tools.env), so the examples also test it.
# A component is rebuilt only when its source, the template, the WIT or a
# pin changed (componentize runs take seconds each). The tools are
# installed under ${VIGIL_TOOLS:-~/.cache/vigil} when missing.
# Usage: scripts/build-policy-examples.sh [python|js ...]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=policy-tools.env
source scripts/policy-tools.env
out=target/policy-examples
languages=("$@")
[ ${#languages[@]} -gt 0 ] || languages=(python js)

world_of() {
  case "$1" in
    activity) echo keepalive ;;
    heartbeat) echo watchdog ;;
    restore-default) echo restore ;;
    hog) echo keepalive ;;
    *) echo "build-policy-examples: which world does example $1 implement? (add it here)" >&2; exit 1 ;;
  esac
}

for lang in "${languages[@]}"; do
  case "$lang" in
    python) source_file=app.py ;;
    js) source_file=app.js ;;
    *) echo "build-policy-examples: unknown language $lang (python or js)" >&2; exit 1 ;;
  esac
  template=host/src/cli/scaffold/build-$lang.sh
  for dir in examples/policies/"$lang"/*/ tests/policies/"$lang"/*/; do
    [ -f "$dir/$source_file" ] || continue
    name=$(basename "$dir")
    world=$(world_of "$name")
    wasm="$out/$lang/$name.wasm"
    stamp="$out/$lang/$name.sha256"
    sum=$(cat "$dir/$source_file" "$template" wit/policy.wit scripts/policy-tools.env | sha256sum | cut -d' ' -f1)
    if [ -f "$wasm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
      continue
    fi
    # A scaffold of the example, as `vigil policy new` lays one out.
    work="$out/build/$lang/$name"
    rm -rf "$work"
    mkdir -p "$work"
    cp "$dir/$source_file" "$work/"
    ln -s "$PWD/wit" "$work/wit"
    sed -e "s/{{name}}/$name/g" -e "s/{{role}}/$world/g" -e "s/{{world}}/$world/g" \
      -e "s/{{componentize_py}}/$COMPONENTIZE_PY_VERSION/g" \
      -e "s/{{componentize_js}}/$COMPONENTIZE_JS_VERSION/g" "$template" >"$work/build.sh"
    chmod +x "$work/build.sh"
    started=$(date +%s%N)
    "$work/build.sh" "$wasm"
    echo "build-policy-examples: $lang/$name in $((($(date +%s%N) - started) / 1000000)) ms" >&2
    echo "$sum" >"$stamp"
  done
done
