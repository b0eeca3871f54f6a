#!/usr/bin/env bash
# Installs what Vigil needs to build and run on a Debian machine with Rust,
# skipping whatever is already present. Usage: scripts/install-deps.sh [run|test]
#   run:  the wasm32-wasip2 target and Debian's chromium
#   test: the same, plus moto's S3 server (PyPI) for the object-storage tests,
#         and componentize-py (PyPI) and componentize-js (npm) at the versions
#         of scripts/policy-tools.env, for the policies in Python and JavaScript
set -euo pipefail
what=${1:-run}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "install-deps: need root to run: $*" >&2; exit 1
  fi
}

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "install-deps: adding the wasm32-wasip2 target" >&2
  rustup target add wasm32-wasip2
fi

apt_missing=()
command -v chromium >/dev/null || apt_missing+=(chromium)
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${apt_missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}"
fi

# moto's S3 server for the object-storage tests. Installed into its own
# virtualenv (Debian's python refuses system-wide pip installs); the tests
# and scripts/with-s3.sh look for it on PATH first, then there.
if [ "$what" = test ]; then
  tools="${VIGIL_TOOLS:-$HOME/.cache/vigil}"
  if ! command -v moto_server >/dev/null && [ ! -x "$tools/moto/bin/moto_server" ]; then
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
      echo "install-deps: apt-get install python3-venv" >&2
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv
    fi
    echo "install-deps: moto[server] into $tools/moto" >&2
    python3 -m venv "$tools/moto"
    "$tools/moto/bin/pip" install --quiet 'moto[server]'
  fi
fi

# The component tooling for policies in Python and JavaScript, where the
# examples' and scaffolds' build scripts look for it (each installs it too
# when missing; installing here keeps downloads out of the test run).
if [ "$what" = test ]; then
  tools="${VIGIL_TOOLS:-$HOME/.cache/vigil}"
  # shellcheck source=policy-tools.env
  source "$(dirname "$0")/policy-tools.env"
  py="$tools/componentize-py-$COMPONENTIZE_PY_VERSION"
  if [ ! -x "$py/bin/componentize-py" ]; then
    echo "install-deps: componentize-py $COMPONENTIZE_PY_VERSION into $py" >&2
    rm -rf "$py"
    python3 -m venv "$py"
    "$py/bin/pip" install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION"
  fi
  js="$tools/componentize-js-$COMPONENTIZE_JS_VERSION"
  if [ ! -x "$js/node_modules/.bin/componentize-js" ]; then
    if ! command -v npm >/dev/null; then
      echo "install-deps: apt-get install nodejs npm" >&2
      as_root apt-get update -qq
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
    fi
    echo "install-deps: componentize-js $COMPONENTIZE_JS_VERSION into $js" >&2
    mkdir -p "$js"
    npm install --prefix "$js" --save-exact --no-audit --no-fund --loglevel=error \
      "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION"
  fi
fi
