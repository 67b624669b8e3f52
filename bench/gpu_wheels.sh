#!/usr/bin/env bash
# Wheels for the notebook part of the GPU check (bench/gpu_check.sh), fetched here, where PyPI is
# reachable, for the GPU machine, where nothing is: Python 3.12, x86-64 Linux, with torch, timm,
# scikit-learn, matplotlib and tensorboard installed but no papermill, ipykernel or Jupyter.
#   bench/gpu_wheels.sh        # from the repository root; writes .whl/ (git-ignored, about 20 MB)
# gpu_check.sh installs .whl/*.whl into /tmp/site (no index, no dependency resolution) when .whl/
# exists, so the folder must travel with the working tree to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
rm -rf .whl
mkdir -p .whl
# binary wheels only, resolved for the GPU machine's interpreter and platform, dependencies included
"$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any \
  -d .whl papermill ipykernel \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)  # notes about index paths some machines lack
# what the GPU image already has (torch, timm, scikit-learn, matplotlib and theirs): installing a
# second copy ahead of it on PYTHONPATH could shadow a version its other packages were built against
for name in numpy matplotlib contourpy kiwisolver fonttools cycler pyparsing pillow scipy torch \
            triton nvidia_ setuptools; do
  rm -f .whl/"${name}"*.whl .whl/"${name^}"*.whl
done
ls .whl/*.whl >/dev/null
echo "$(ls .whl/*.whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/:"
ls .whl | sed 's/^/  /'
