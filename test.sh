#!/usr/bin/env bash
# Runs the whole test suite (ruff + pytest) on the CPU, in its own virtual environment.
# Usage: ./test.sh [pytest arguments]
# The CPU build of torch goes in first so that nothing pulls a multi-GB CUDA build;
# override with TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0") if your platform needs it.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${ACE_STUDIO_TEST_VENV:-.venv-test}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when the requirements change.
stamp="$VENV/.requirements.cksum"
wanted=$(cat requirements.txt requirements-dev.txt | cksum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
  "$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi

"$VENV/bin/ruff" format --check .
"$VENV/bin/ruff" check .
if [ "${ACE_STUDIO_BENCH:-0}" = 1 ]; then
  # The benchmark's CPU smoke run: prints stage timings on the tiny model (no assertions).
  "$VENV/bin/python" bench.py --model tiny --json "${TMPDIR:-/tmp}/ace-studio-bench.json"
  # Finishing speed, and the reliability figures at full size (20 clients, 200 runs).
  "$VENV/bin/python" bench_finishing.py
  # Tokens per second of the tiny planner and lyrics writer, on transformers and mlx.
  "$VENV/bin/python" bench_lm.py --seconds 30 --json "${TMPDIR:-/tmp}/ace-studio-bench-lm.json"
  "$VENV/bin/python" reliability.py load --clients 20
  "$VENV/bin/python" reliability.py load --clients 40 --queue 8
  "$VENV/bin/python" reliability.py soak --runs 200
fi
exec "$VENV/bin/python" -m pytest "$@"
