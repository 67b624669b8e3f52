"""Benchmarks: ``python -m simlab.bench NAME [--json] [--save]``.

Each benchmark prints a small table and, with ``--json``, one JSON object as its
last line; ``--save`` also writes it to ``bench/NAME.json``. Speed is measured
here, never asserted in tests (DESIGN.md "Measuring"). Every result carries the
hardware and thread count it was measured with.

- ``views``: SiM two-view pairs per second per core at 32 px (``shapes``) and at
  224 px (from synthetic 500x375 JPEGs; decoding is timed separately), beside a
  plain per-sample PIL implementation of the recipe (``simlab.bench.reference``)
  on the same images, and ``shapes`` generation in images per second per core.
- ``dataset``: raw-pixel k-NN and logistic-regression accuracy on ``shapes``.
- ``train``: training-step images/s, FLOP per image and utilisation of the matmul
  peak for presets (FlopCounterMode counts matmuls, convolutions and attention
  through scaled_dot_product_attention; it misses elementwise ops, norms and
  the optimizer, so utilisation is of *useful* matmul FLOPs).
- ``demo``: ``make demo``'s wall time per part and its encoder's probes beside the random-init one,
  from the finished ``runs/demo`` (``simlab.bench.demo_record``).
- ``levers``: each candidate speed-up of the ``demo`` step (``torch.compile``, tanh GELU, explicit
  attention, AdamW's paths) timed beside the path simlab uses (``simlab.bench.levers``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..flops import count_flops, flop_per_image, synthetic_batch  # noqa: F401 (benchmarks' names)
from .data import bench_dataset, bench_views, decode, synthetic_photo  # noqa: F401
from .measure import bench_train, hardware, matmul_peak, timed, train_step_stats  # noqa: F401


def bench_claim(quick: bool = False, out: str = "runs/claim", seeds=None, steps=None, arms=None,
                overrides=(), datasets=None, save: bool = False, name: str = "claim", fractions=None) -> dict:
    """The paper's claim at small scale, v2 (simlab.claim): opt-in, about 2 hours per dataset on a 2-core
    CPU. Each dataset (default: shapes) pretrains and probes in its own folder ``out/DATASET``; with
    ``save``, its figures go to bench/NAME_DATASET.png, NAME_DATASET_curves.png and
    NAME_DATASET_differences.png. ``name`` "ablations": SiM with target centering beside its one-switch
    ablations, each probed at its last checkpoint only, in the same folders (the base's runs and probes
    are shared with the claim).
    ``fractions``: the points of each run that are probed (default 0.2 0.5 1: the learning curves)."""
    import shutil

    from ..claim import ABLATION_ORDER, ARM_ORDER, markdown_table, run_claim
    ablations = name == "ablations"
    if quick:  # a smoke test of the harness: tiny models and sets, one seed
        kwargs = dict(preset_name="tiny", steps=steps or 4, seeds=seeds or (0,), train_size=200, test_size=100,
                      fractions=(0.5, 1.0), draws=50)
    else:
        kwargs = dict(preset_name="demo-500", steps=steps or 500, seeds=seeds or (0, 1, 2))
    if ablations:
        kwargs["fractions"] = (1.0,)
    if fractions:
        kwargs["fractions"] = tuple(fractions)
    reports, machine = {}, hardware()
    for dataset in datasets or ("shapes",):
        folder = Path(out) / dataset
        report = run_claim(folder, arms=arms or (ABLATION_ORDER if ablations else ARM_ORDER), name=name,
                           overrides=[f"dataset={dataset}", *overrides], **kwargs)
        print(f"{dataset}:\n" + markdown_table(report["summary"], intervals=report["intervals"],
                                               no_signal=report["no_signal"]))
        if save:
            curves = [f"{name}_curves.png"] if len(report["fractions"]) > 1 else []  # one point: no curve
            for figure in (f"{name}.png", *curves, f"{name}_differences.png"):
                shutil.copy(folder / figure, Path("bench") / figure.replace(name, f"{name}_{dataset}"))
        reports[dataset] = {**report, "hardware": machine}  # kept with its dataset when --save merges files
    return {"hardware": machine, "datasets": reports}


def bench_ablations(quick: bool = False, **kwargs) -> dict:
    """The paper's ablations at small scale (simlab.claim.ABLATIONS): ``claim`` with name "ablations"."""
    return bench_claim(quick=quick, name="ablations", **kwargs)


def bench_probes(quick: bool = False) -> dict:
    from .probes import bench_probes as run
    return run(quick=quick)


def bench_scaling(quick: bool = False, device=None) -> dict:
    from .scaling import bench_scaling as run
    return run(quick=quick, device=device, plot="bench/scaling.png" if not quick else None)


def bench_gpu(quick: bool = False, dry_run: bool = False) -> dict:
    from .gpu import bench_gpu as run
    return run(quick=quick, dry_run=dry_run)


def bench_evidence(quick: bool = False, checkpoint=None) -> dict:
    """Every dense number of a SiM checkpoint (default: the shipped one) beside its floors:
    ``simlab probe`` at 10k / 2k images, its figure in bench/evidence.png (README "Every number
    beside its floor" is generated from the saved JSON)."""
    from ..checkpoint import SHIPPED_CHECKPOINT
    from ..probes import probe_checkpoint
    sizes = (200, 100) if quick else (10_000, 2_000)
    res = probe_checkpoint(checkpoint or SHIPPED_CHECKPOINT, *sizes, dense_pairs=64 if quick else 512,
                           log=lambda stage: print(stage, file=sys.stderr, flush=True))
    if not quick:
        from .. import viz
        from ..dense_viz import plot_dense_evidence
        fig = plot_dense_evidence(res["dense_evidence"])
        fig.savefig("bench/evidence.png", dpi=100, bbox_inches="tight")
        viz._pyplot().close(fig)
    res["checkpoint"] = os.path.relpath(res["checkpoint"])  # the file records no machine's paths
    res["hardware"] = hardware()
    return res


def bench_speedrun(quick: bool = False, out: str = "runs/speedrun", steps=None, objectives=None,
                   overrides=(), seeds=None) -> dict:
    """Time to quality (simlab.bench.speedrun): each objective's probes against training seconds,
    the time each first crosses a fixed threshold, and the figure bench/speedrun.png."""
    from .speedrun import plot_speedrun, run_speedrun
    kwargs = dict(preset_name="tiny", steps=steps or 6, every=3, probe_sizes=(200, 100), dense_pairs=32) if quick \
        else dict(preset_name="demo-500", steps=steps or 0, every=100)
    report = run_speedrun(out, objectives=objectives or ("sim", "mae", "id"), overrides=overrides,
                          seed=(seeds or [0])[0], **kwargs)
    if not quick:
        from .. import viz
        fig = plot_speedrun(report)
        fig.savefig("bench/speedrun.png", dpi=100, bbox_inches="tight")
        viz._pyplot().close(fig)
    return {"hardware": hardware(), **report}


def bench_demo(quick: bool = False, out: str = "runs/demo") -> dict:
    """make demo's wall time per part and its probes beside random init (simlab.bench.demo_record), read
    from the finished demo folder ``out`` (run to the end first where it is not finished)."""
    from .demo_record import record_demo
    return {"hardware": hardware(), **record_demo(out)}


def bench_levers(quick: bool = False) -> dict:
    from .levers import bench_levers as run
    return run(quick=quick)


def bench_tour(quick: bool = False) -> dict:
    from .notebook_times import bench_tour as run
    return run(quick=quick)


BENCHMARKS = {"demo": bench_demo, "evidence": bench_evidence, "speedrun": bench_speedrun, "tour": bench_tour, "views": bench_views, "dataset": bench_dataset, "train": bench_train, "claim": bench_claim,
              "ablations": bench_ablations, "levers": bench_levers,
              "probes": bench_probes, "scaling": bench_scaling, "gpu": bench_gpu}


def _table(name: str, res: dict, indent: str = "  ") -> str:
    lines = [f"{name} on {res['hardware']['cpu']} ({res['hardware']['threads']} thread(s), "
             f"torch {res['hardware']['torch']})"] if "hardware" in res else []
    for k, v in res.items():
        if k == "hardware":
            continue
        if isinstance(v, dict):
            lines.append(f"{indent}{k}:")
            lines.append(_table(k, v, indent + "  "))
        elif isinstance(v, list) and v and isinstance(v[0], dict):  # rows of a sweep
            lines.append(f"{indent}{k}:")
            lines.extend(f"{indent}  " + "  ".join(f"{a}={b:.4g}" if isinstance(b, float) else f"{a}={b}"
                                                    for a, b in row.items()) for row in v)
        else:
            lines.append(f"{indent}{k:<34} {v:>12.4g}" if isinstance(v, float) else f"{indent}{k:<34} {v}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simlab.bench", description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--save", action="store_true", help="also write bench/NAME.json")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for smoke tests")
    parser.add_argument("--dry-run", action="store_true", help="gpu: the same check on the CPU at toy sizes")
    parser.add_argument("--preset", action="append", help="train: preset(s) to measure (default: all)")
    parser.add_argument("--batch-size", type=int, help="train: batch size (default: per preset)")
    parser.add_argument("--device", help="train, scaling: cpu or cuda (default: cuda when available)")
    parser.add_argument("--checkpoint", help="evidence: checkpoint or run folder (default: the shipped one)")
    parser.add_argument("--out", default="runs/claim", help="claim, speedrun: folder of its runs (rerun to resume; "
                        "speedrun's default: runs/speedrun); demo: the demo's folder (default: runs/demo)")
    parser.add_argument("--seeds", type=int, nargs="+", help="claim: pretraining seeds (default: 0 1 2)")
    parser.add_argument("--steps", type=int, help="claim: the equal-steps budget (default: 500; the FLOPs rows scale it)")
    parser.add_argument("--objective", action="append", help="speedrun: objective(s) (default: sim mae id)")
    parser.add_argument("--arm", action="append", help="claim, ablations: row(s) to pretrain (default: simlab.claim.ARM_ORDER, "
                        "or ABLATION_ORDER)")
    parser.add_argument("--set", action="append", default=[], help="claim: key=value for every run")
    parser.add_argument("--datasets", nargs="+", help="claim: labelled datasets to pretrain and probe on, "
                        "each in OUT/DATASET (default: shapes; add fashion-mnist for the real set); with --save, "
                        "the other datasets already in bench/NAME.json stay")
    parser.add_argument("--fractions", type=float, nargs="+", help="claim: the points of each run to probe, as "
                        "fractions of its length (default: 0.2 0.5 1; ablations: 1)")
    args = parser.parse_args(argv)
    kwargs = {}
    if args.name == "train":
        kwargs = {"presets": args.preset, "batch_size": args.batch_size, "device": args.device}
    if args.name == "scaling":
        kwargs = {"device": args.device}
    if args.name == "gpu":
        kwargs = {"dry_run": args.dry_run}
    if args.name == "evidence":
        kwargs = {"checkpoint": args.checkpoint}
    if args.name == "speedrun":
        kwargs = {"out": args.out if args.out != "runs/claim" else "runs/speedrun", "steps": args.steps,
                  "objectives": args.objective, "overrides": args.set, "seeds": args.seeds}
    if args.name == "demo":
        kwargs = {"out": args.out if args.out != "runs/claim" else "runs/demo"}
    if args.name in ("claim", "ablations"):
        kwargs = {"out": args.out, "seeds": args.seeds, "steps": args.steps, "arms": args.arm,
                  "overrides": args.set, "datasets": args.datasets, "save": args.save, "fractions": args.fractions}
    res = BENCHMARKS[args.name](quick=args.quick, **kwargs)
    res["benchmark"] = args.name
    print(_table(args.name, res))
    if args.save:
        Path("bench").mkdir(exist_ok=True)
        path = Path("bench", f"{args.name}.json")
        if args.name in ("claim", "ablations") and path.exists():  # one dataset rerun keeps the others
            res = {**res, "datasets": {**json.loads(path.read_text()).get("datasets", {}), **res["datasets"]}}
        path.write_text(json.dumps(res, indent=2) + "\n")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
