#!/usr/bin/env bash
# Builds every policy plugin (plugins/*) and every test-only plugin
# (tests/plugins/*) to wasm32-wasip2, then installs each one as
#   target/plugins/<dir>.wasm        (plugins/<dir>)
#   target/test-plugins/<dir>.wasm   (tests/plugins/<dir>)
# An installed file is replaced by rename, and only when it changed, so a
# running Vigil's watcher never sees a half-written plugin.
#
# Cargo builds in its own target dir (target/plugin-build) so that this
# script can run while another cargo holds target/'s lock (the tests call it
# from inside `cargo test`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${VIGIL_PLUGIN_TARGET_DIR:-target/plugin-build}"
cargo=${CARGO:-cargo}

packages=()
for dir in plugins/*/ tests/plugins/*/; do
  [ -f "$dir/Cargo.toml" ] && packages+=(-p "$(basename "$dir")")
done
"$cargo" build --quiet --profile plugin --target wasm32-wasip2 "${packages[@]}"

install_plugin() { # <package dir> <destination folder>
  local name lib built dest
  name=$(basename "$1")
  lib=${name//-/_}
  built="$CARGO_TARGET_DIR/wasm32-wasip2/plugin/$lib.wasm"
  dest="$2/$name.wasm"
  mkdir -p "$2"
  if ! cmp -s "$built" "$dest"; then
    cp "$built" "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
    echo "build-plugins: installed $dest ($(wc -c <"$dest") bytes)" >&2
  fi
}
for dir in plugins/*/; do
  [ -f "$dir/Cargo.toml" ] && install_plugin "$dir" target/plugins
done
for dir in tests/plugins/*/; do
  [ -f "$dir/Cargo.toml" ] && install_plugin "$dir" target/test-plugins
done
