"""The run registry: every run folder under some paths, as records a table, a CSV or a DataFrame can hold.

A run folder is any folder with a ``config.json`` written by ``simlab pretrain`` (DESIGN.md "run
folder"). For each one the registry reads, without loading a model:

- the preset it is closest to (the one whose config differs in the fewest fields; runs record
  their full config, not the preset's name) and the fields that differ from it;
- how far it got (the newest checkpoint's step, the last metrics record) and its status:
  ``complete`` (``COMPLETE`` written), ``failed`` (``FAILED`` written, with its reason),
  ``interrupted`` (checkpoints but neither marker) or ``empty``;
- the last metrics record (loss, k-NN, variance shares ...);
- probe results found beside it: any ``*.json`` in the folder holding probe numbers (``simlab probe
  --out RUN/probe.json``, the claim harness's ``claim_probe_STEP.json``).

``simlab runs`` prints them; ``simlab compare`` overlays their curves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional, Sequence

PROBE_KEYS = ("linear", "knn", "few_shot_5", "fg_bg_miou", "class_miou")
METRIC_KEYS = ("loss", "knn", "target_var_position", "encoder_rankme")


def find_runs(paths: Iterable, depth: int = 4) -> list[Path]:
    """Run folders at or below each path (a run folder, or a folder of them), sorted, no duplicates."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such folder")
        if (p / "config.json").is_file():
            found.add(p)
            continue
        frontier = [p]
        for _ in range(depth):
            frontier = [c for f in frontier for c in sorted(f.iterdir()) if c.is_dir() and c.name != "checkpoints"]
            found.update(c for c in frontier if (c / "config.json").is_file())
            frontier = [c for c in frontier if not (c / "config.json").is_file()]
    return sorted(found)


def nearest_preset(defining: dict) -> tuple[str, dict]:
    """(name, {field: (preset value, run value)}) of the preset whose run-defining fields differ from
    ``defining`` (a :meth:`Config.defining_dict`) in the fewest places."""
    from .presets import PRESETS
    best = None
    for name, make in PRESETS.items():
        ref = make().defining_dict()
        diff = {k: (ref.get(k), v) for k, v in defining.items() if ref.get(k) != v}
        if best is None or len(diff) < len(best[1]):
            best = (name, diff)
    return best


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: the records before it still count
            continue
    return out


def _probes(run: Path) -> dict:
    """{file name: probe numbers} for every JSON in the folder that holds probe results."""
    found = {}
    for path in sorted(run.glob("*.json")):
        if path.name == "config.json":
            continue
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if isinstance(data, dict) and any(k in data for k in PROBE_KEYS):
            found[path.name] = {k: data[k] for k in PROBE_KEYS if isinstance(data.get(k), (int, float))}
    return found


def run_record(run) -> dict:
    """One run folder as a flat, JSON-ready record (see the module's docstring)."""
    from .checkpoint import list_checkpoints
    from .config import Config
    run = Path(run)
    cfg = Config.from_dict(json.loads((run / "config.json").read_text()))
    preset, diff = nearest_preset(cfg.defining_dict())
    records = _metrics(run)
    checkpoints = list_checkpoints(run)
    step = max([int(c.stem.split("_")[-1]) for c in checkpoints], default=0)
    if (run / "COMPLETE").exists():
        status = "complete"
    elif (run / "FAILED").exists():
        status = "failed: " + (run / "FAILED").read_text().strip().splitlines()[0]
    else:
        status = "interrupted" if checkpoints or records else "empty"
    last = records[-1] if records else {}
    spe = last["step"] / last["epoch"] if last.get("epoch") else None
    total = cfg.train.steps or (round(cfg.train.epochs * spe) if spe else None)
    record = {"run": str(run), "preset": preset, "changed": {k: v[1] for k, v in diff.items()},
              "objective": cfg.train.objective, "seed": cfg.seed, "status": status,
              "step": max(step, last.get("step", 0)), "total_steps": total}
    record.update({k: last[k] for k in METRIC_KEYS if k in last})
    for name, numbers in _probes(run).items():
        record.update({f"{Path(name).stem}.{k}": v for k, v in numbers.items()})
    return record


def list_runs(paths: Sequence = ("runs",)) -> list[dict]:
    """Records of every run folder at or below ``paths`` (pandas-free; see :func:`as_dataframe`)."""
    return [run_record(r) for r in find_runs(paths)]


def as_dataframe(records: list[dict]):
    """The records as a pandas DataFrame (pandas is optional: an ImportError says how to get it)."""
    try:
        import pandas as pd
    except ImportError as e:
        raise ImportError("as_dataframe needs pandas (pip install pandas); list_runs returns plain records") from e
    return pd.DataFrame([{**r, "changed": _changed_text(r["changed"])} for r in records])


def _changed_text(changed: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(changed.items())) or "-"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def columns(records: list[dict]) -> list[str]:
    """The columns a table of these records shows: the fixed ones, then every metric or probe present."""
    fixed = ["run", "preset", "changed", "objective", "seed", "status", "step", "total_steps"]
    extra = sorted({k for r in records for k in r} - set(fixed))
    return fixed + extra


def text_table(records: list[dict]) -> str:
    """Aligned plain-text table, one run per line."""
    cols = columns(records)
    rows = [[_changed_text(r[c]) if c == "changed" else _fmt(r.get(c)) for c in cols] for r in records]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(x.ljust(w) for x, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows])


def csv_text(records: list[dict]) -> str:
    import csv
    import io
    cols = columns(records)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(cols)
    for r in records:
        writer.writerow([_changed_text(r[c]) if c == "changed" else r.get(c, "") for c in cols])
    return buf.getvalue()


def curves(run) -> list[dict]:
    """A run's metrics records (for :func:`simlab.viz.plot_compare`)."""
    return _metrics(Path(run))


def final_probes(records: list[dict], keys: Optional[Sequence[str]] = None) -> str:
    """A markdown table of each run's probe numbers (the newest probe file's, per key)."""
    keys = keys or PROBE_KEYS
    head = "| run | " + " | ".join(keys) + " |"
    lines = [head, "|" + " --- |" * (len(keys) + 1)]
    for r in records:
        cells = []
        for k in keys:
            vals = [v for name, v in r.items() if name.endswith(f".{k}")]
            cells.append(f"{vals[-1]:.4f}" if vals else "–")
        lines.append(f"| {r['run']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
