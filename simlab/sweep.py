"""Sweeps: the product of config values and seeds, each point a run folder, resumable and idempotent.

``simlab sweep --preset demo --grid neg_weight=0,0.02,0.1 --grid query_pos=relative,absolute
--seeds 0 1 2 --out runs/sweep`` (or ``--spec sweep.json``) trains every point of the grid, for every
seed, in its own folder ``OUT/<key>=<value>,...,seed=<s>``, each as ``simlab pretrain`` (or, with
``via="notebook"``, as ``02_pretrain`` through papermill, training in ``POINT/train``) in a child
process, one at a time or ``workers`` at once (the CPU threads split between them). A point whose run
folder holds ``COMPLETE`` (and, with ``probe``, its ``probe.json``) is skipped, an interrupted one
resumes, so rerunning the same command after a kill finishes the sweep and trains no step twice.
``OUT/sweep.json`` holds the spec and the results table, ``OUT/sweep.csv`` the same as CSV and
``OUT/sweep.png`` the metrics against the first grid key (mean ± std over seeds). With ``probe``, the
floor is probed too: a random-init encoder of the first point's architecture for every seed, on the
same probe sizes (``OUT/random_init,seed=S.json``, cached), summarised as ``random_init`` in
``sweep.json`` and as the last row of :func:`simlab.report.sweep_markdown`'s table.

A point's failure (non-finite loss, a crash) is recorded in the table and the other points go on.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .config import ConfigError


@dataclass
class SweepSpec:
    """What a sweep trains: a preset, a grid of ``--set`` values, seeds, and fixed overrides."""

    preset: str
    grid: dict[str, list[str]]                     # key -> values, each as ``--set key=value`` takes it
    seeds: list[int] = field(default_factory=lambda: [0])
    steps: Optional[int] = None                    # every point's length (None: the preset's)
    overrides: list[str] = field(default_factory=list)  # ``key=value`` for every point
    probe: bool = False                            # probe each finished point (RUN/probe.json)
    probe_train: int = 5000
    probe_test: int = 1000
    via: str = "cli"                               # cli: simlab pretrain | notebook: 02_pretrain by papermill

    def validate(self) -> "SweepSpec":
        """Every point's config is built and validated before anything trains; errors name the point."""
        from .presets import run_config
        if self.via not in ("cli", "notebook"):
            raise ConfigError(f"via: must be cli or notebook, got {self.via!r}")
        if not self.grid and not self.seeds:
            raise ConfigError("grid: a sweep needs at least one grid key or seed")
        for key, values in self.grid.items():
            if not values:
                raise ConfigError(f"grid: {key} has no values")
        for point in points(self):
            try:
                run_config(self.preset, [*self.overrides, *point.overrides], steps=self.steps, seed=point.seed)
            except ConfigError as e:
                raise ConfigError(f"sweep point {point.name}: {e}") from None
        return self

    @classmethod
    def from_file(cls, path) -> "SweepSpec":
        """A JSON (or, where PyYAML is installed, YAML) file with the fields of this class."""
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{path}: unknown sweep field(s) {', '.join(sorted(unknown))}")
        data["grid"] = {k: [str(v) for v in vs] for k, vs in data.get("grid", {}).items()}
        return cls(**data)


@dataclass
class Point:
    name: str             # the folder name: key=value,...,seed=S
    overrides: list[str]  # the grid's key=value pairs of this point
    seed: int


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``key=v1,v2`` (or ``key=v1|v2`` where a value holds commas, e.g. ``crop_scale=0.2,1|0.08,1``)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid {item}: expected key=value1,value2")
        key, raw = item.split("=", 1)
        grid[key.strip()] = [v.strip() for v in raw.split("|" if "|" in raw else ",")]
    return grid


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "=.,_+-" else "_" for c in text)


def points(spec: SweepSpec) -> list[Point]:
    """Every (grid combination, seed), in a fixed order: the grid's product, seeds innermost."""
    keys = list(spec.grid)
    out = []
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        assign = [f"{k}={v}" for k, v in zip(keys, values)]
        for seed in spec.seeds:
            out.append(Point(_safe(",".join([*assign, f"seed={seed}"])), assign, seed))
    return out


def run_dir_of(out: Path, point: Point, via: str) -> Path:
    """Where the point's training lives (a notebook point trains into its folder's ``train/``)."""
    return out / point.name / "train" if via == "notebook" else out / point.name


def _done(out: Path, point: Point, spec: SweepSpec) -> bool:
    run = run_dir_of(out, point, spec.via)
    return (run / "COMPLETE").exists() and (not spec.probe or (run / "probe.json").exists())


def _commands(spec: SweepSpec, out: Path, point: Point) -> list[list[str]]:
    """The child commands of one point: train (unless complete), then probe (if asked and missing)."""
    run = run_dir_of(out, point, spec.via)
    sets = [*spec.overrides, *point.overrides, "progress=false"]
    cmds = []
    if not (run / "COMPLETE").exists():
        if spec.via == "notebook":
            cmd = [sys.executable, "-m", "simlab", "notebook", "02_pretrain", "--out", str(out / point.name),
                   "--quiet", "-p", "preset", spec.preset, "-p", "seed", str(point.seed),
                   "-p", "overrides", repr(sets)]
            if spec.steps is not None:
                cmd += ["-p", "steps", str(spec.steps)]
        else:
            cmd = [sys.executable, "-m", "simlab", "pretrain", "--preset", spec.preset, "--out", str(run),
                   "--seed", str(point.seed)] + [a for s in sets for a in ("--set", s)]
            if spec.steps is not None:
                cmd += ["--steps", str(spec.steps)]
        cmds.append(cmd)
    if spec.probe and not (run / "probe.json").exists():
        cmds.append(_probe_command(spec, run, run / "probe.json"))
    return cmds


def _probe_command(spec: SweepSpec, run: Path, out: Path, *extra: str) -> list[str]:
    """``simlab probe`` of a run folder at the sweep's probe sizes, its JSON written to ``out``."""
    return [sys.executable, "-m", "simlab", "probe", "--checkpoint", str(run), *extra, "--out", str(out), "--json",
            "--train-size", str(spec.probe_train), "--test-size", str(spec.probe_test)]


class _Worker:
    """One point's commands, run one after another in child processes, output to ``POINT/sweep.log``."""

    def __init__(self, point: Point, cmds: list[list[str]], log_path: Path, threads: int):
        self.point, self.cmds, self.log_path = point, list(cmds), log_path
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.proc: Optional[subprocess.Popen] = None
        self.failed: Optional[str] = None
        self._next()

    def _next(self) -> None:
        cmd = self.cmds.pop(0)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write("$ " + " ".join(cmd) + "\n")
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)

    def poll(self) -> bool:
        """True once every command has ended (or one failed)."""
        rc = self.proc.poll()
        if rc is None:
            return False
        self._log.close()
        if rc != 0:
            tail = self.log_path.read_text().strip().splitlines()[-1:] or [""]
            self.failed = f"exit code {rc}: {tail[0][:200]}"
            return True
        if self.cmds:
            self._next()
            return False
        return True


def run_sweep(spec: SweepSpec, out, workers: int = 1, log: Callable[[str], None] = print) -> dict:
    """Train (and probe) every point not yet done, ``workers`` at a time; write and return the table."""
    spec.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / "sweep_spec.json"
    if spec_path.exists():
        old = json.loads(spec_path.read_text())
        if old != json.loads(json.dumps(asdict(spec))):
            diff = ", ".join(f"{k}: {old.get(k)!r} -> {v!r}" for k, v in asdict(spec).items() if old.get(k) != v)
            raise ConfigError(f"{out} holds another sweep ({diff}); use another --out, or the same settings")
    else:
        spec_path.write_text(json.dumps(asdict(spec), indent=2) + "\n")
    todo = [p for p in points(spec) if not _done(out, p, spec)]
    total = len(points(spec))
    log(f"sweep {out}: {total} points, {total - len(todo)} done, {len(todo)} to run, {workers} at a time")
    threads = max(1, (os.cpu_count() or 1) // workers)
    running: list[_Worker] = []
    failures: dict[str, str] = {}
    start = time.perf_counter()
    try:
        while todo or running:
            while todo and len(running) < workers:
                p = todo.pop(0)
                running.append(_Worker(p, _commands(spec, out, p), out / p.name / "sweep.log", threads))
                log(f"[{time.perf_counter() - start:6.0f} s] started {p.name}")
            time.sleep(0.5)
            for w in [w for w in running if w.poll()]:
                running.remove(w)
                if w.failed:
                    failures[w.point.name] = w.failed
                    log(f"[{time.perf_counter() - start:6.0f} s] FAILED {w.point.name}: {w.failed} "
                        f"(log: {w.log_path})")
                else:
                    log(f"[{time.perf_counter() - start:6.0f} s] done {w.point.name}")
    finally:  # a killed sweep leaves no orphan training behind (the points resume on the next run)
        for w in running:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.terminate()
    if spec.probe:
        probe_random_init(spec, out, log)
    return write_results(spec, out, failures)


def _random_init_file(out: Path, seed: int) -> Path:
    return out / f"random_init,seed={seed}.json"


def probe_random_init(spec: SweepSpec, out: Path, log: Callable[[str], None] = print) -> None:
    """The floor of a probed sweep: ``simlab probe --random-init SEED`` on the first finished point's
    architecture, for every seed, at the sweep's probe sizes; each cached in its own JSON file."""
    first = next((run_dir_of(out, p, spec.via) for p in points(spec)
                  if (run_dir_of(out, p, spec.via) / "COMPLETE").exists()), None)
    for seed in spec.seeds:
        path = _random_init_file(out, seed)
        if first is None or path.exists():
            continue
        log(f"probing a random-init encoder, seed {seed}")
        done = subprocess.run(_probe_command(spec, first, path, "--random-init", str(seed)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:  # the trained points' table is still written; a rerun tries again
            tail = done.stderr.strip().splitlines()[-1:] or [""]
            log(f"FAILED the random-init probe of seed {seed}: exit code {done.returncode}: {tail[0][:200]}")


def collect(spec: SweepSpec, out: Path, failures: Optional[dict] = None) -> list[dict]:
    """One row per point: its grid values, seed, registry record and probe numbers."""
    from .dense import CONTENT_BLIND, CONTENT_BLIND_SHRUNK, READOUT
    from .registry import PROBE_KEYS, run_record
    rows = []
    for p in points(spec):
        run = run_dir_of(out, p, spec.via)
        row = {"point": p.name, "seed": p.seed, **dict(o.split("=", 1) for o in p.overrides)}
        if (run / "config.json").exists():
            rec = run_record(run)
            row.update(status=rec["status"], step=rec["step"], loss=rec.get("loss"))
        else:
            row.update(status="not started", step=0)
        if failures and p.name in failures:
            row["status"] = f"failed: {failures[p.name]}"
        probe = run / "probe.json"
        if probe.exists():
            data = json.loads(probe.read_text())
            row.update({k: data[k] for k in PROBE_KEYS if k in data})
            if "dense_evidence" in data:  # SiM's decoder on held-out pairs beside the content-blind rule
                scores = data["dense_evidence"]["predictions"]
                row.update(decoder_loss=scores["decoder"]["all"]["loss"],
                           blind_loss=scores[CONTENT_BLIND]["all"]["loss"])
                if CONTENT_BLIND_SHRUNK in scores:
                    row["blind_opt_loss"] = scores[CONTENT_BLIND_SHRUNK]["all"]["loss"]
                if READOUT in scores:  # the content a linear read of the visible view-1 token recovers
                    row["readout_loss"] = scores[READOUT]["all"]["loss"]
        rows.append(row)
    return rows


def summarise(spec: SweepSpec, rows: list[dict], metrics: Sequence[str]) -> list[dict]:
    """Mean ± std over seeds of each metric, per grid combination."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in spec.grid), []).append(r)
    return [{**dict(zip(spec.grid, key)), "seeds": len(rs), **_mean_std(rs, metrics)} for key, rs in groups.items()]


def _mean_std(rows: Sequence[dict], metrics: Sequence[str]) -> dict:
    """``metric`` and ``metric_std`` over the rows that hold a number for it (std 0 for one row)."""
    import statistics
    out = {}
    for m in metrics:
        vals = [r[m] for r in rows if isinstance(r.get(m), (int, float))]
        if vals:
            out[m] = statistics.mean(vals)
            out[f"{m}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return out


def random_init_summary(spec: SweepSpec, floors: dict[int, dict]) -> dict:
    """Mean ± std over seeds of the random-init probes (``floors``: seed -> its ``simlab probe`` JSON)."""
    from .registry import PROBE_KEYS
    return {"command": f"simlab probe --checkpoint RUN --random-init SEED --train-size {spec.probe_train} "
                       f"--test-size {spec.probe_test}", "seeds": list(floors),
            "per_seed": [{"seed": seed, **{k: f[k] for k in PROBE_KEYS if k in f}}  # for paired comparisons
                         for seed, f in floors.items()],
            **_mean_std(list(floors.values()), PROBE_KEYS)}


def write_results(spec: SweepSpec, out: Path, failures: Optional[dict] = None) -> dict:
    """``sweep.json`` (spec, rows, summary), ``sweep.csv`` and ``sweep.png``."""
    import csv
    from .registry import PROBE_KEYS
    rows = collect(spec, out, failures)
    metrics = [m for m in (*PROBE_KEYS, "loss", "decoder_loss", "blind_loss", "blind_opt_loss", "readout_loss")
               if any(isinstance(r.get(m), (int, float)) for r in rows)]
    report = {"spec": asdict(spec), "rows": rows, "summary": summarise(spec, rows, metrics),
              "done": sum(r["status"] == "complete" for r in rows), "points": len(rows)}
    floors = {s: json.loads(_random_init_file(out, s).read_text()) for s in spec.seeds
              if _random_init_file(out, s).exists()}
    if floors:
        report["random_init"] = random_init_summary(spec, floors)
    (out / "sweep.json").write_text(json.dumps(report, indent=2) + "\n")
    cols = ["point", *spec.grid, "seed", "status", "step", *metrics]
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(cols)
        writer.writerows([[r.get(c, "") for c in cols] for r in rows])
    if metrics and spec.grid:
        from . import viz
        fig = viz.plot_sweep(report["summary"], list(spec.grid), metrics)
        fig.savefig(out / "sweep.png", dpi=100, bbox_inches="tight")
        viz._pyplot().close(fig)
    return report
