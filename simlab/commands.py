"""What each ``simlab`` command does: one function per command, taking the parsed arguments and
returning the exit code (:mod:`simlab.cli` holds the parser and the error handling around them).

Each command imports what it needs when it runs, so the parser and ``--help`` load no training,
plotting or notebook package.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import ConfigError

def demo_command(args: argparse.Namespace) -> int:
    from . import demo
    demo.run(args.out, data_root=args.data_root, pretrain_steps=args.steps, notebooks=not args.figures_only)
    return 0


def config_from_args(args: argparse.Namespace):
    """The preset (or a run's saved ``config.json``), then the named options, then ``--set``
    overrides, validated."""
    from .presets import run_config
    if getattr(args, "config", None):
        from .presets import saved_config
        return run_config(saved_config(args.config), args.set or [], args.dataset, args.data_root, args.epochs,
                          args.steps, args.seed)
    if not args.preset:
        raise ConfigError("preset: give --preset NAME, or --config RUN/config.json to relaunch a saved run")
    return run_config(args.preset, args.set or [], args.dataset, args.data_root, args.epochs, args.steps, args.seed)


def runs_command(args: argparse.Namespace) -> int:
    from . import registry
    records = registry.list_runs(args.paths or ["runs"])
    if args.json:
        import json
        print(json.dumps(records, indent=2))
    elif args.csv:
        print(registry.csv_text(records), end="")
    else:
        print(registry.text_table(records) if records else f"no run folders under {' '.join(args.paths or ['runs'])}")
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from . import registry, viz
    records = [registry.run_record(r) for r in registry.find_runs(args.runs)]
    if not records:
        raise ConfigError(f"runs: no run folder (with config.json) in {' '.join(args.runs)}")
    fig = viz.plot_compare({r["run"]: registry.curves(r["run"]) for r in records},
                           keys=args.keys.split(",") if args.keys else registry.METRIC_KEYS + ("pos", "neg"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100, bbox_inches="tight")
    print(registry.final_probes(records))
    print(f"wrote {args.out}")
    return 0


def sweep_command(args: argparse.Namespace) -> int:
    from .sweep import SweepSpec, parse_grid, run_sweep
    if args.spec:
        spec = SweepSpec.from_file(args.spec)
    elif args.preset:
        spec = SweepSpec(preset=args.preset, grid=parse_grid(args.grid or []), seeds=args.seeds or [0],
                         steps=args.steps, overrides=args.set or [], probe=args.probe,
                         probe_train=args.probe_train, probe_test=args.probe_test, via=args.via)
    else:
        raise ConfigError("sweep: give --preset with --grid/--seeds, or --spec FILE")
    report = run_sweep(spec, args.out, workers=args.workers)
    print(f"{report['done']}/{report['points']} points complete; table in {Path(args.out) / 'sweep.csv'}")
    return 0 if report["done"] == report["points"] else 1


def pretrain_command(args: argparse.Namespace) -> int:
    from . import distributed
    from .train import NonFiniteError, pretrain
    cfg = config_from_args(args)
    try:
        pretrain(cfg, args.out)
    except NonFiniteError as e:
        where = f" (rank {distributed.info().rank})" if distributed.active() else ""
        print(f"simlab pretrain{where}: stopped: {e}", file=sys.stderr)
        return 3
    finally:
        distributed.shutdown()
    return 0


def export_command(args: argparse.Namespace) -> int:
    from .export import export_encoder_safetensors, export_encoder_timm, slim_copy
    from .pretrained import resolve_checkpoint
    source = resolve_checkpoint(args.checkpoint)  # a file, or a run folder's newest valid checkpoint
    if args.format == "checkpoint":
        digest = slim_copy(source, args.out, overwrite=args.force)
        print(f"wrote {args.out} from {source} (sha256 {digest[:16]}...)")
    elif args.format == "timm":
        kwargs = export_encoder_timm(source, args.out, overwrite=args.force)
        print(f"wrote {args.out} from {source}; load it into "
              f"timm.models.vision_transformer.VisionTransformer(**{kwargs})")
    else:
        export_encoder_safetensors(source, args.out, overwrite=args.force)
        print(f"wrote {args.out} from {source}")
    return 0


def finetune_command(args: argparse.Namespace) -> int:
    import json

    from .finetune import finetune, finetune_config
    from .train import NonFiniteError
    cfg = finetune_config(args.preset, args.set or [], dataset=args.dataset, data_root=args.data_root,
                          epochs=args.epochs, steps=args.steps, seed=args.seed, random_init=args.random_init)
    try:
        results = finetune(args.checkpoint, cfg, args.out)
    except NonFiniteError as e:
        print(f"simlab finetune: stopped: {e}", file=sys.stderr)
        return 3
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank returns the results: one prints them
        print(json.dumps(results, indent=2))
    return 0


def import_official_command(args: argparse.Namespace) -> int:
    from .official import import_official
    import_official(args.checkpoint, args.out, args.num_heads, args.decoder_heads)
    return 0


def probe_command(args: argparse.Namespace) -> int:
    import json
    import time

    from .probes import probe_checkpoint
    from .report import probe_text
    start = time.perf_counter()

    def progress(stage: str) -> None:  # probing takes from seconds to minutes: say what runs
        print(f"[{time.perf_counter() - start:5.0f} s] {stage}", file=sys.stderr, flush=True)

    from .pretrained import resolve_checkpoint
    checkpoint = resolve_checkpoint(args.checkpoint)  # a file, or a run folder's newest valid checkpoint
    res = probe_checkpoint(checkpoint, args.train_size, args.test_size, args.data_root, args.random_init,
                           dataset=args.dataset, pool=args.pool, log=progress,
                           dense_pairs=args.dense_pairs)
    text = json.dumps(res, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text if args.json else probe_text(res))
    return 0


def notebook_command(args: argparse.Namespace) -> int:
    from papermill.exceptions import PapermillExecutionError

    from .notebooks import KernelDied, parse_value, run_notebook
    params = {key: parse_value(value) for key, value in args.p or []}
    written = Path(args.out) / f"{Path(args.name).stem}.ipynb"
    try:
        # the cells' output streams here and to OUT/NAME.log; the per-cell bar would only interleave
        out = run_notebook(args.name, args.out, params, kernel=args.kernel, progress=False, echo=not args.quiet)
    except KernelDied as e:
        print(f"simlab notebook: {e}", file=sys.stderr)
        return 1
    except PapermillExecutionError as e:  # the written notebook holds the failing cell
        print(f"simlab notebook: a cell failed ({e.ename}: {e.evalue}); see {written}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # papermill saved the cells run so far
        kept = f"; the cells run so far are in {written}" if written.exists() else ""
        print(f"simlab notebook: interrupted{kept}", file=sys.stderr)
        return 130
    print(f"wrote {out}")
    return 0


def verify_data_command(args: argparse.Namespace) -> int:
    from .data import build_dataset
    ds = build_dataset(args.dataset, args.split, args.data_root)
    if not hasattr(ds, "verify"):  # generated, or read whole as arrays when the dataset was built
        print(f"{args.dataset} ({args.split}): {len(ds)} images; no per-file images to decode")
        return 0
    bad = ds.verify(progress=not args.quiet)
    for path, reason in bad:
        print(f"bad: {path}\t{reason}")
    print(f"{args.dataset} ({args.split}) under {getattr(ds, 'root', args.data_root)}: {len(ds)} files, {len(bad)} bad")
    return 1 if bad else 0
