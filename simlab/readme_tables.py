"""Every generated results table in README.md and bench/README.md, rebuilt from its committed result file.

    python -m simlab.readme_tables            # rewrite every generated block in place
    python -m simlab.readme_tables --check    # name each block that differs from its file; exit 1 if any

A generated block sits between ``<!-- generated: NAME (from FILE) -->`` and ``<!-- end generated -->``;
NAME picks its renderer and result file in :data:`TABLES`. tests/test_readme.py runs the check, so a
table cannot drift from the file it quotes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
END = "<!-- end generated -->"


def _claim(budget: str, dataset: str = "shapes") -> Callable[[dict], str]:
    def render(res: dict) -> str:
        from .claim import claim_markdown
        return claim_markdown(res["datasets"][dataset], budget)
    return render


def _differences(dataset: str = "shapes") -> Callable[[dict], str]:
    def render(res: dict) -> str:
        from .claim import differences_markdown
        return differences_markdown(res["datasets"][dataset])
    return render


def _report(name: str) -> Callable[[dict], str]:
    def render(res: dict) -> str:
        from . import report
        return getattr(report, name)(res)
    return render


# name: (document, committed result file(s), renderer of the file's JSON to the block's markdown)
TABLES: dict[str, tuple[str, str, Callable[[dict], str]]] = {
    "dataset": ("README.md", "bench/dataset.json", _report("dataset_markdown")),
    "presets": ("README.md", "bench/train.json", _report("presets_markdown")),
    "sweep_query_pos": ("README.md", "bench/sweep_query_pos.json", _report("sweep_markdown")),
    "demo_run": ("README.md", "bench/demo.json", _report("demo_run_markdown")),
    "demo_lr": ("README.md", "bench/demo_lr.json", _report("sweep_markdown")),
    "demo_batch64": ("README.md", "bench/demo_batch64.json", _report("sweep_markdown")),
    "demo_seeds": ("README.md", "bench/demo_seeds.json", _report("sweep_markdown")),
    "demo_seeds_margins": ("README.md", "bench/demo_seeds.json", _report("seed_margins_markdown")),
    "demo_ema": ("README.md", "bench/demo_ema.json", _report("sweep_markdown")),
    "demo_ema_seeds": ("README.md", "bench/demo_ema_seeds.json", _report("sweep_markdown")),
    "demo_ema_margins": ("README.md", "bench/demo_ema_seeds.json", _report("seed_margins_markdown")),
    "demo_ema700": ("README.md", "bench/demo_ema700.json", _report("sweep_markdown")),
    "demo_ema700_margins": ("README.md", "bench/demo_ema700.json", _report("seed_margins_markdown")),
    "demo_700": ("README.md", "bench/demo_700.json", _report("sweep_markdown")),
    "demo_700_margins": ("README.md", "bench/demo_700.json", _report("seed_margins_markdown")),
    "demo_pos_gain": ("README.md", "bench/demo_pos_gain.json", _report("sweep_markdown")),
    "demo_pos_gain_margins": ("README.md", "bench/demo_pos_gain.json", _report("seed_margins_markdown")),
    "demo_pos_gain10": ("README.md", "bench/demo_pos_gain10.json", _report("sweep_markdown")),
    "demo_pos_gain10_margins": ("README.md", "bench/demo_pos_gain10.json", _report("seed_margins_markdown")),
    "demo_patch_embed": ("README.md", "bench/demo_patch_embed.json", _report("sweep_markdown")),
    "demo_crop": ("README.md", "bench/demo_crop.json", _report("sweep_markdown")),
    "evidence": ("README.md", "bench/evidence.json", _report("evidence_markdown")),
    "claim_steps": ("README.md", "bench/claim.json", _claim("steps")),
    "claim_flops": ("README.md", "bench/claim.json", _claim("flops")),
    "claim_differences": ("README.md", "bench/claim.json", _differences()),
    "claim_fashion": ("README.md", "bench/claim.json", _claim("steps", "fashion-mnist")),
    "claim_fashion_differences": ("README.md", "bench/claim.json", _differences("fashion-mnist")),
    "ablations": ("README.md", "bench/ablations.json", _claim("ablations")),
    "ablation_differences": ("README.md", "bench/ablations.json", _differences()),
    "id_baseline": ("README.md", "bench/id_baseline.json", _report("id_baseline_markdown")),
    "targets": ("bench/README.md", "bench/train.json, bench/official.json, bench/views.json, bench/probes.json",
                _report("targets_markdown")),
    "views": ("bench/README.md", "bench/views.json", _report("views_markdown")),
    "train": ("bench/README.md", "bench/train.json", _report("train_markdown")),
    "official": ("bench/README.md", "bench/official.json", _report("official_markdown")),
    "probes": ("bench/README.md", "bench/probes.json", _report("probes_markdown")),
    "scaling": ("bench/README.md", "bench/scaling.json", _report("scaling_markdown")),
    "speedrun": ("bench/README.md", "bench/speedrun.json", _report("speedrun_markdown")),
    "levers": ("bench/README.md", "bench/levers.json", _report("levers_markdown")),
}

_BLOCK = re.compile(r"<!-- generated: (?P<name>[\w-]+) \(from (?P<file>[^)]+)\) -->\n(?P<body>.*?)" + re.escape(END),
                    re.S)


def _sources(source: str) -> list[str]:
    """A block's result files: one, or several joined by ", " (a table that reads more than one)."""
    return source.split(", ")


def render(name: str, root: Path = ROOT) -> str:
    """The markdown of block ``name`` from its committed result file (several files: their JSON by path)."""
    _, source, fn = TABLES[name]
    files = {path: json.loads((root / path).read_text()) for path in _sources(source)}
    return fn(files if len(files) > 1 else files[source]).rstrip("\n") + "\n"


def regenerate(text: str, doc: str, root: Path = ROOT) -> tuple[str, list[str], list[str]]:
    """(``text`` with every generated block rebuilt, names of the blocks that changed, names of those
    whose result file is missing, left as they were). Raises on a block whose name is unknown,
    belongs to another document, or names another file than its own."""
    changed, absent = [], []

    def block(m: re.Match) -> str:
        name = m["name"]
        if name not in TABLES:
            raise ValueError(f"{doc}: unknown generated block {name!r}; known: {', '.join(TABLES)}")
        owner, source, _ = TABLES[name]
        if owner != doc or m["file"] != source:
            raise ValueError(f"{doc}: block {name!r} belongs to {owner} and is generated from {source}")
        if not all((root / path).exists() for path in _sources(source)):
            absent.append(name)
            return m[0]
        body = render(name, root)
        if body != m["body"]:
            changed.append(name)
        return f"<!-- generated: {name} (from {source}) -->\n{body}{END}"

    return _BLOCK.sub(block, text), changed, absent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simlab.readme_tables", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs from its file")
    ap.add_argument("--root", type=Path, default=ROOT, help="the repository root (default: this checkout)")
    args = ap.parse_args(argv)
    stale, seen, absent = [], set(), []
    for doc in sorted({d for d, _, _ in TABLES.values()}):
        path = args.root / doc
        text = path.read_text()
        new, changed, gone = regenerate(text, doc, args.root)
        absent += [f"{doc}: {name} ({TABLES[name][1]} is missing)" for name in gone]
        seen |= {m["name"] for m in _BLOCK.finditer(text)}
        stale += [f"{doc}: {name}" for name in changed]
        if changed and not args.check:
            path.write_text(new)
    missing = sorted(set(TABLES) - seen)
    for line in stale:
        print(("stale " if args.check else "rewrote ") + line)
    for name in missing:
        print(f"missing: no block {name!r} in {TABLES[name][0]}")
    for line in absent:
        print(f"not generated: {line}")
    return 1 if missing or absent or (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
