#!/usr/bin/env bash
# Runs ruff, mypy and the test suite on the CPU, in its own virtual environment.
# Usage: ./test.sh [pytest arguments]
# By default the fast suite runs (-m "not slow": no load, soak, benchmark or heavy browser tests);
# ACE_STUDIO_ALL=1 ./test.sh (what .ci/run does) or your own -m runs them too.
# torch goes in first, from TORCH_SPEC (default torch==2.13.0), so that nothing else picks a build.
# That pin is the CPU build only where a CPU wheel is pre-provided (the project's CI machines);
# on an ordinary Linux machine PyPI's torch==2.13.0 is the multi-GB CUDA build, so name the CPU
# index there. TORCH_SPEC is split into words, so it can carry pip options:
#   TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" ./test.sh
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
wanted=$( (echo "$TORCH_SPEC"; cat requirements.txt requirements-dev.txt) | cksum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  read -r -a torch_args <<<"$TORCH_SPEC"
  "$VENV/bin/python" -m pip install --quiet "${torch_args[@]}"
  "$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi

"$VENV/bin/ruff" format --check .
"$VENV/bin/ruff" check .
"$VENV/bin/python" -m mypy  # the files listed in pyproject.toml's [tool.mypy]
if [ "${ACE_STUDIO_BENCH:-0}" = 1 ]; then
  # The benchmark's CPU smoke run: prints stage timings on the tiny model (no assertions).
  "$VENV/bin/python" -m tools.bench --model tiny --json "${TMPDIR:-/tmp}/ace-studio-bench.json"
  # Finishing speed, and the reliability figures at full size (20 clients, 200 runs).
  "$VENV/bin/python" -m tools.bench_finishing
  # Tokens per second of the tiny planner and lyrics writer, on transformers and mlx.
  "$VENV/bin/python" -m tools.bench_lm --seconds 30 --json "${TMPDIR:-/tmp}/ace-studio-bench-lm.json"
  "$VENV/bin/python" -m tools.reliability load --clients 20
  "$VENV/bin/python" -m tools.reliability load --clients 40 --queue 8
  "$VENV/bin/python" -m tools.reliability soak --runs 200
  # Resident memory per mode (each in its own process): the README's per-mode figures.
  "$VENV/bin/python" -m tools.reliability soak --runs 12 --seconds 10 --mode generate cover extend edit flow_edit vary
fi
marker=(-m "not slow")
if [ "${ACE_STUDIO_ALL:-0}" = 1 ]; then
  marker=()
else
  for arg in "$@"; do
    case "$arg" in -m | -m*) marker=() ;; esac
  done
fi
exec "$VENV/bin/python" -m pytest "${marker[@]}" "$@"
