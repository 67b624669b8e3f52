#!/usr/bin/env bash
# The GPU check of bench/README.md, for one CUDA GPU with torch >= 2.11 (about six minutes on an H200):
#   bench/gpu_wheels.sh           # first, where PyPI is reachable: papermill + ipykernel wheels into .whl/
#   bench/gpu_check.sh            # on the GPU machine, from the repository root, with .whl/ beside it
#   bench/gpu_check.sh --dry-run  # the same code on the CPU at toy sizes (about a minute on 2 cores)
# Prints a table and one JSON line; a real run also writes bench/gpu.json (and, when OUT is set,
# $OUT/gpu.json with the executed notebook and the probe's JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null && ! "$PYTHON" -c "import papermill, ipykernel" 2>/dev/null; then
  # the GPU image has no Jupyter and reaches no index: the wheels gpu_wheels.sh fetched, installed
  # beside it (no index, no resolution), and a kernel of this interpreter registered for papermill.
  # Where they do not fit the interpreter, the check runs on and reports the notebook as skipped.
  SITE=/tmp/simlab-site
  rm -rf "$SITE"
  if "$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-index --no-deps \
       --target "$SITE" .whl/*.whl; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    export JUPYTER_PATH=/tmp/simlab-jupyter/share/jupyter JUPYTER_RUNTIME_DIR=/tmp/simlab-jupyter/runtime
    export IPYTHONDIR=/tmp/simlab-jupyter/ipython
    "$PYTHON" -m ipykernel install --prefix /tmp/simlab-jupyter --name python3 >/dev/null \
      || echo "gpu check: could not register a kernel; papermill will look for its own" >&2
  else
    echo "gpu check: the wheels in .whl/ do not install here (they are for CPython 3.12, x86-64 Linux)" >&2
  fi
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
case " $* " in
  *" --dry-run "*) "$PYTHON" -m simlab.bench gpu --json "$@" ;;
  *) "$PYTHON" -m simlab.bench gpu --json --save "$@"
     if [ -n "${OUT:-}" ]; then
       cp bench/gpu.json "$OUT/gpu.json"
       cp runs/gpu_check/pretrain/02_pretrain.ipynb runs/gpu_check/probe.json "$OUT/" 2>/dev/null || true
     fi ;;
esac
