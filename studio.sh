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
wanted=$( (echo "${TORCH_SPEC:-}"; cat requirements.txt) | cksum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # TORCH_SPEC picks the torch build first (e.g. a CPU-only one); by default pip chooses.
  # It is split into words, so it can carry pip options such as --index-url.
  if [ -n "${TORCH_SPEC:-}" ]; then
    read -r -a torch_args <<<"$TORCH_SPEC"
    "$VENV/bin/python" -m pip install --quiet "${torch_args[@]}"
  fi
  "$VENV/bin/python" -m pip install --quiet -r requirements.txt
  echo "$wanted" > "$stamp"
fi

exec "$VENV/bin/python" app.py "$@"
