#!/usr/bin/env bash
# The GPU check: planner tokens/s, DiT step/MFU/VAE decode at the XL and 2B shapes, and the whole
# 180 s song with and without Think, on full-size random weights (nothing downloaded; under
# 8 minutes on an H100). Pass --smoke for the scaled-down CPU run that the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m tools.gpu_check "$@"
