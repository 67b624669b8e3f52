#!/usr/bin/env bash
# The GPU check of bench/README.md, for one CUDA GPU with torch >= 2.11 (no Jupyter needed):
#   bench/gpu_check.sh            # on the GPU machine, from the repository root (a few minutes)
#   bench/gpu_check.sh --dry-run  # the same code on the CPU at toy sizes (seconds)
# Prints a table and one JSON line; a real run also writes bench/gpu.json (and $OUT/gpu.json when
# OUT is set).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
case " $* " in
  *" --dry-run "*) PYTHONPATH=. "$PYTHON" -m simlab.bench gpu --json "$@" ;;
  *) PYTHONPATH=. "$PYTHON" -m simlab.bench gpu --json --save "$@"
     if [ -n "${OUT:-}" ]; then cp bench/gpu.json "$OUT/gpu.json"; fi ;;
esac
