"""Wall time of a notebook at its defaults (``python -m simlab.bench tour``): the README's tour time.

The notebook runs as ``simlab notebook`` runs it (papermill, a fresh kernel); the time of each cell
comes from papermill's own record in the executed notebook (``metadata.papermill.duration``), and
the total is the wall clock around the whole run, kernel start-up included.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def cell_times(executed: dict) -> list[dict]:
    """``[{"cell", "first_line", "seconds"}]`` of every code cell papermill ran, in order."""
    rows = []
    for k, cell in enumerate(executed["cells"]):
        duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if cell["cell_type"] != "code" or duration is None:
            continue
        source = "".join(cell["source"]).strip().splitlines()
        rows.append({"cell": k, "first_line": source[0][:80] if source else "", "seconds": round(duration, 1)})
    return rows


def bench_notebook(name: str, out, params=None) -> dict:
    from ..notebooks import defaults, run_notebook
    start = time.perf_counter()
    path = run_notebook(name, out, params=params, progress=False)
    total = time.perf_counter() - start
    cells = cell_times(json.loads(Path(path).read_text()))
    shown = {k: v for k, v in {**defaults(name), **(params or {})}.items() if k != "run_dir"}
    return {"notebook": name, "runner": f"simlab notebook {name} (run_notebook), at the parameters below", "parameters": shown,
            "total_s": round(total, 1), "cells_s": round(sum(c["seconds"] for c in cells), 1), "cells": cells}


def bench_tour(quick: bool = False, out="runs/bench_tour") -> dict:
    """00_tour at its defaults (quick: the tiny preset and a few steps, a smoke test)."""
    from .measure import hardware
    params = {"preset": "tiny", "steps": 6, "baseline_steps": 2, "probe_train": 200, "probe_test": 100} \
        if quick else None
    return {"hardware": hardware(), **bench_notebook("00_tour", out, params)}
