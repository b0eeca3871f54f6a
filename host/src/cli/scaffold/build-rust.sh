#!/usr/bin/env bash
# Builds {{name}}.wasm, a Vigil {{role}} policy, from src/lib.rs: cargo for
# wasm32-wasip2 with wit-bindgen {{wit_bindgen}} (see Cargo.toml), sized for
# policies (opt-level "s", LTO, stripped; a 64 KiB stack: .cargo/config.toml).
# Usage: ./build.sh [OUT.wasm]   (default: {{name}}.wasm beside this script)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m -- "${1:-$here/{{name}}.wasm}")
cd "$here"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "build: adding the wasm32-wasip2 target" >&2
  rustup target add wasm32-wasip2
fi
cargo build --quiet --release --target wasm32-wasip2
target=$(realpath -m -- "${CARGO_TARGET_DIR:-target}")
mkdir -p "$(dirname "$out")"
cp "$target/wasm32-wasip2/release/{{crate}}.wasm" "$out.tmp"
mv -f "$out.tmp" "$out"
echo "build: $out ($(wc -c <"$out") bytes)" >&2
