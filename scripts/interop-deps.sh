#!/usr/bin/env bash
# Installs the independent peers of tests/interop.rs: Python `websockets`
# (into the venv at ${KOSOKU_VENV:-.venv}, shared with scripts/conformance.sh)
# and Node `ws` (into tests/interop/node_modules). Idempotent; needs python3
# (with venv) and node/npm.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${KOSOKU_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
"$venv/bin/python" -c 'import websockets, sys; print("python websockets", websockets.__version__, "in", sys.prefix)'

cd tests/interop
if [ -f package-lock.json ]; then
  npm ci --silent --no-audit --no-fund
else
  npm install --silent --no-audit --no-fund
fi
node -e 'console.log("node ws", require("ws/package.json").version, "on node", process.version)'
