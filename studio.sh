#!/usr/bin/env bash
# Sets up (first run only) and launches ACE Music Studio.
# Usage: ./studio.sh [app.py options], e.g. ./studio.sh --model tiny   (offline test model)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${ACE_STUDIO_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.requirements.cksum"
wanted=$(cksum < requirements.txt)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # TORCH_SPEC picks the torch build first (e.g. a CPU-only one); by default pip chooses.
  if [ -n "${TORCH_SPEC:-}" ]; then
    "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
  fi
  "$VENV/bin/python" -m pip install --quiet -r requirements.txt
  echo "$wanted" > "$stamp"
fi

exec "$VENV/bin/python" app.py "$@"
