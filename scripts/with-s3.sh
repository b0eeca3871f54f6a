#!/usr/bin/env bash
# Runs a command next to ONE moto S3 server on 127.0.0.1 (a free port),
# exported as VIGIL_TEST_S3_ENDPOINT, and stops the server afterwards.
# Usage: scripts/with-s3.sh cargo test --workspace
# Tests create their own bucket each; the server keeps everything in memory.
set -euo pipefail

moto=$(command -v moto_server || true)
if [ -z "$moto" ] && [ -x "${VIGIL_TOOLS:-$HOME/.cache/vigil}/moto/bin/moto_server" ]; then
  moto="${VIGIL_TOOLS:-$HOME/.cache/vigil}/moto/bin/moto_server"
fi
if [ -z "$moto" ]; then
  echo "with-s3: moto_server not found; run scripts/install-deps.sh test" >&2
  exit 1
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$moto" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT

ready=
for _ in $(seq 1 300); do
  if python3 -c "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=1)" 2>/dev/null; then
    ready=1
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "with-s3: moto_server exited:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "with-s3: moto_server did not answer on port $port within 60 s" >&2
  exit 1
fi

export VIGIL_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
echo "with-s3: moto S3 server at $VIGIL_TEST_S3_ENDPOINT" >&2
"$@"
