# The README's two commands: `make demo` and `make test`. Both create the
# virtual environment on first use and reuse it afterwards.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.simlab-installed
# Hide pip's notes about index locations some machines configure but lack.
PIPFILTER := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: demo test bench system-deps venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing simlab and its dependencies into $(VENV) (first run: a few minutes)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 | $(PIPFILTER)
	$(PY) -c "import simlab, torch, torchvision"
	$(PY) -m ipykernel install --sys-prefix --name simlab --display-name "Python (simlab)" >/dev/null
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m simlab demo --out runs/demo

test: $(STAMP) system-deps
	$(PY) -m pytest

system-deps:
	@scripts/system-deps.sh

bench: $(STAMP)
	$(PY) -m simlab.bench views --save
	$(PY) -m simlab.bench dataset --save
	$(PY) -m simlab.bench train --save
	$(PY) -m simlab.bench levers --save
	$(PY) -m simlab.bench probes --save
	$(PY) -m simlab.bench scaling --save

clean:
	rm -rf runs .pytest_cache
