"""The paper's claim at small scale: SiM, MAE and ID with equal epochs, probed alike, several seeds.

``python -m simlab.bench claim`` runs it (opt-in: about 1.5 hours on a 2-core CPU
at the default size). Every pretraining run lives in its own folder under
``--out`` and every probe result is cached beside it, so an interrupted claim
run resumes where it stopped. Rows: each objective's mean ± std over seeds, a
random-init encoder of the same architecture per seed, raw pixels, and the floors
that need no image content (chance; a position-only and a constant-label dense probe).
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from pathlib import Path
from typing import Optional, Sequence

from .config import apply_overrides
from .presets import preset

METRICS = ("linear", "knn", "few_shot_5", "fg_bg_miou", "fg_iou", "class_miou")
LABELS = {"linear": "linear", "knn": "k-NN", "few_shot_5": "5-shot", "fg_bg_miou": "fg/bg mIoU", "fg_iou": "fg IoU",
          "class_miou": "class mIoU"}


# Claim v2's rows that pretrain (README "The paper's claim at small scale"): each is an objective with
# its labelled settings and a budget. "steps" arms run the claim's step count; "flops" arms run as many
# steps as spend SiM's training FLOPs of that step count (FlopCounterMode, simlab.flops), so MAE, which
# encodes one view's visible quarter, runs about twice as long, and symmetric InfoNCE ID fewer steps.
ARMS = {
    "sim": {"objective": "sim", "sets": ["target_centering=false"], "budget": "steps",
            "label": "SiM as published (no target centering)"},
    "sim centred": {"objective": "sim", "sets": ["target_centering=true"], "budget": "steps",
                    "label": "SiM with the CPU presets' target centering (a labelled deviation)"},
    "mae": {"objective": "mae", "sets": ["target_centering=false"], "budget": "steps", "label": "MAE, equal steps"},
    "id": {"objective": "id", "sets": ["target_centering=false", "id_loss=infonce"], "budget": "steps",
           "label": "ID (MoCo v3's InfoNCE), equal steps"},
    "mae flops": {"objective": "mae", "sets": ["target_centering=false"], "budget": "flops",
                  "label": "MAE given SiM's FLOPs"},
    "id flops": {"objective": "id", "sets": ["target_centering=false", "id_loss=infonce"], "budget": "flops",
                 "label": "ID (InfoNCE) given SiM's FLOPs"},
}
ARM_ORDER = tuple(ARMS)

# The paper's ablations at small scale (README "Ablations at small scale"): each is the "sim centred" arm
# with one switch changed, at equal steps, probed at its last checkpoint beside "sim centred" itself.
# Their base is the centred variant because faithful SiM collapses at this budget (the claim's "sim" row
# ends below random init on the dense probes), and an ablation of a model that learns nothing shows nothing.
ABLATION_BASE = "sim centred"
ABLATIONS = {
    "absolute queries": {"objective": "sim", "sets": ["target_centering=true", "query_pos=absolute"],
                         "budget": "steps", "label": "decoder queries on view 2's own grid: no relative geometry"},
    "no scale terms": {"objective": "sim", "sets": ["target_centering=true", "scale_terms=false"],
                       "budget": "steps", "label": "the query embedding without its scale-ratio terms"},
    "neg weight 0": {"objective": "sim", "sets": ["target_centering=true", "neg_weight=0"],
                     "budget": "steps", "label": "λ = 0: the positive term alone"},
    "neg weight 0.1": {"objective": "sim", "sets": ["target_centering=true", "neg_weight=0.1"],
                       "budget": "steps", "label": "λ = 0.1, five times SiM's"},
    # the demo's 8x8 grid: SiM's 0.6 masks 39 patches, MAE's 0.75 masks 48
    "mask 0.75": {"objective": "sim", "sets": ["target_centering=true", "num_masked=48"],
                  "budget": "steps", "label": "48 of 64 patches masked (MAE's ratio) instead of SiM's 39"},
    "decoder 2+4": {"objective": "sim", "sets": ["target_centering=true", "projector_depth=2", "predictor_depth=4"],
                    "budget": "steps", "label": "2 projector + 4 predictor blocks (the paper's), not the demo's 1 + 2"},
    "EMA from 0.995": {"objective": "sim", "sets": ["target_centering=true", "ema_start=0.995"],
                       "budget": "steps", "label": "the paper's target momentum start, not the demo's 0.99"},
    # at 32 px the blur's sigma is under 0.3 px, so this mostly moves solarisation onto the masked view
    "swapped augmentations": {"objective": "sim", "sets": ["target_centering=true", "blur_p=0.1,1.0",
                                                           "solarize_p=0.2,0.0"],
                              "budget": "steps",
                              "label": "view 1 solarised (p 0.2), view 2 blurred: BYOL's asymmetry reversed"},
}
ABLATION_ORDER = (ABLATION_BASE, *ABLATIONS)
ARMS.update(ABLATIONS)


def claim_base(preset_name: str, steps: int, overrides: Sequence[str] = ()):
    """Every claim run's shared config: the preset at ``steps``, quiet, with the claim's overrides."""
    return apply_overrides(preset(preset_name), [f"steps={steps}", "progress=false", *overrides]).validate()


def arm_dir(out: Path, arm: str, seed: int) -> Path:
    return Path(out) / f"{arm.replace(' ', '_')}_seed{seed}"


_FLOPS: dict[str, float] = {}


def _flop_per_image(cfg) -> float:
    """:func:`simlab.flops.flop_per_image`, counted once per architecture and objective: the claim asks
    for it for every (arm, seed), and a count on the demo model takes seconds. Seed, length and the
    run's bookkeeping do not change it, so the key leaves them out (the objective, in ``train``, stays)."""
    from .flops import flop_per_image
    config = cfg.to_dict()
    config["train"] = {k: v for k, v in config["train"].items()
                       if k not in ("seed", "steps", "checkpoint_every", "keep_checkpoints", "log_every", "progress")}
    key = json.dumps(config, sort_keys=True, default=str)
    if key not in _FLOPS:
        _FLOPS[key] = flop_per_image(cfg)
    return _FLOPS[key]


def arm_config(arm: str, base, steps: int, seed: int):
    """The validated config of one (arm, seed): the claim's base config with the arm's objective and
    settings, its budget in steps, a checkpoint every tenth of the SiM step count, all kept (the
    learning curves probe them), and the seed."""
    spec = ARMS[arm]
    sets = [f"objective={spec['objective']}", *spec["sets"]]
    cfg = apply_overrides(copy.deepcopy(base), sets).validate()
    if spec["budget"] == "flops":
        sim = apply_overrides(copy.deepcopy(base), ["objective=sim"]).validate()
        steps = max(1, round(steps * _flop_per_image(sim) / _flop_per_image(cfg)))
    if spec["budget"] == "flops" and steps >= 100:
        steps = round(steps / 10) * 10  # on the log's 10-step grid: within 1 % of SiM's FLOPs
    # about ten checkpoints per run, on the metrics log's grid so each has its training time
    every = max(10, round(steps / 100) * 10) if steps >= 100 else max(1, steps // 4)
    cfg = apply_overrides(cfg, [f"steps={steps}", f"checkpoint_every={every}", "keep_checkpoints=1000",
                                f"seed={seed}"])
    if every % cfg.train.log_every:
        cfg.train.log_every = math.gcd(every, cfg.train.log_every)
    return cfg.validate()


def probe_raw_pixels(train: dict, test: dict, patch: int, dense_train: int = 1000, seed: int = 0,
                     predictions: Optional[dict] = None, image_size: Optional[int] = None) -> dict:
    """The raw-pixel row: flattened pixels through the shared head (LayerNorm without affine), and
    per-patch pixels for the dense probe (``predictions``: as :func:`simlab.probes.probe_encoder`).
    ``image_size``: the encoders' input size; images of another size (Fashion-MNIST's 28 px under a
    32 px model) are resized to it as the encoders' own input is, so the pixels' patches and labels
    are the encoders' (default: the images' own size)."""
    from .features import resized
    from .probes import dense_patch_labels, dense_probe, global_probes, normalise, raw_pixel_tokens
    size = image_size or train["images"].shape[-1]
    pixels = lambda images: resized(images.float() / 255, size)  # noqa: E731  [0, 1], as the encoders see them
    flat = lambda x: normalise(pixels(x).flatten(1))  # noqa: E731
    out = global_probes(flat(train["images"]), flat(test["images"]), train["labels"], test["labels"], seed,
                        predictions=predictions)
    if "masks" in train:
        grid = size // patch
        out.update(dense_probe(raw_pixel_tokens(pixels(train["images"][:dense_train]), patch),
                               dense_patch_labels(train, size, grid, dense_train),
                               raw_pixel_tokens(pixels(test["images"]), patch), dense_patch_labels(test, size, grid),
                               predictions=predictions))
    return out


def floor_rows(floors: dict) -> list[dict]:
    """The rules that need no learning as claim-table rows: chance on the global probes, and the
    position-only and constant-label dense probes (:func:`simlab.probes.probe_floors`)."""
    acc = floors["chance"]["accuracy"]
    rows = [{"row": "chance", "seed": None, "linear": acc, "knn": acc, "few_shot_5": acc}]
    rows += [{"row": name, "seed": None, **scores} for name, scores in floors.items() if name != "chance"]
    return rows


def train_seconds_by_step(metrics_path: Path, batch_size: int) -> list[tuple[int, float]]:
    """(step, training seconds up to that step) at every logged step, from the metrics log's windows
    (images / images_per_s); a resumed run re-logs the steps it replays, and each step counts once."""
    out, seconds, prev, high = [], 0.0, 0, 0
    for line in metrics_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if "images_per_s" not in record:
            continue
        step = record["step"]
        if step > high:
            seconds += (step - max(prev, high)) * batch_size / record["images_per_s"]
            high = step
            out.append((step, seconds))
        prev = step
    return out


def logged_train_seconds(metrics_path: Path, batch_size: int) -> float:
    """Training wall time summed over the metrics log's windows, so that a run resumed after an
    interruption still reports the time of all its steps, and only those."""
    timeline = train_seconds_by_step(metrics_path, batch_size)
    return timeline[-1][1] if timeline else 0.0


def _cached(path: Path, compute) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    result = compute()
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _probed(stem: Path, probe) -> tuple[dict, dict]:
    """(numbers, test predictions) of one probe, cached as STEM.json beside STEM.npz; ``probe(preds)``
    computes the numbers and fills ``preds``. The JSON is written last, so it marks a whole cache."""
    import numpy as np
    numbers, arrays = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".npz")
    if numbers.exists() and arrays.exists():
        with np.load(arrays) as saved:
            return json.loads(numbers.read_text()), dict(saved)
    preds: dict = {}
    result = probe(preds)
    np.savez_compressed(arrays, **preds)
    numbers.write_text(json.dumps(result, indent=2) + "\n")
    return result, preds


def probe_steps(cfg, fractions: Sequence[float]) -> list[int]:
    """The saved checkpoints' steps nearest to each fraction of the run (1.0: its last step)."""
    steps, every = cfg.train.steps, cfg.train.checkpoint_every
    saved = sorted(set(range(every, steps, every)) | {steps})
    return sorted({min(saved, key=lambda s: abs(s - f * steps)) for f in fractions})


def run_claim(out: Path, arms: Sequence[str] = ARM_ORDER, seeds: Sequence[int] = (0, 1, 2),
              preset_name: str = "demo-500", steps: int = 500, train_size: int = 5_000, test_size: int = 1_000,
              fractions: Sequence[float] = (0.2, 0.5, 1.0), overrides: Sequence[str] = (), draws: int = 1000,
              name: str = "claim", log=print) -> dict:
    """Pretrain every (seed, arm), probe it along training, probe random-init encoders (each curve's
    step 0), raw pixels and the floors; summarise the final checkpoints with mean ± std over seeds and a
    bootstrap interval over seeds and test images (:mod:`simlab.intervals`). Seed-major, so an
    interrupted run has its first seeds whole; every run and probe is cached under ``out``. Writes
    NAME.json, NAME.png, NAME_curves.png and NAME_differences.png there (the ablations share the runs
    and use another name)."""
    from .checkpoint import load_encoder
    from .intervals import bootstrap, difference, example_scores
    from .probes import dense_patch_labels, labelled_split, probe_encoder, probe_floors, random_init_like
    from .train import pretrain

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"claim: unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
    base = claim_base(preset_name, steps, overrides)
    data = {split: labelled_split(base.data.dataset, split, n, base.data.data_root, base.data.image_size)
            for split, n in (("train", train_size), ("test", test_size))}
    labels = data["test"]["labels"].numpy()
    dense_labels = dense_patch_labels(data["test"], base.data.image_size, base.grid).numpy() \
        if "masks" in data["test"] else None
    probe = lambda encoder, grid: lambda preds: probe_encoder(  # noqa: E731
        encoder(), data["train"], data["test"], grid, predictions=preds)
    runs, curves, scores = [], [], {}
    for seed in seeds:
        for i, arm in enumerate(arms):
            cfg = arm_config(arm, base, steps, seed)
            run_dir = arm_dir(out, arm, seed)
            log(f"{arm} seed {seed}: {cfg.train.steps} steps into {run_dir}")
            pretrain(cfg, run_dir, log=lambda *_: None)
            gflop = _flop_per_image(cfg) / 1e9
            timeline = dict(train_seconds_by_step(run_dir / "metrics.jsonl", cfg.train.batch_size))
            if i == 0:  # every curve's step 0: a random-init encoder of this architecture and seed
                ckpt = run_dir / "checkpoints" / f"ckpt_{cfg.train.steps:08d}.pt"
                result, preds = _probed(out / f"random_init_seed{seed}",
                                        probe(lambda: random_init_like(load_encoder(ckpt), seed), cfg.grid))
                runs.append({"row": "random init", "seed": seed, **_numbers(result)})
                curves.append({"row": "random init", "seed": seed, "step": 0, "train_gflop": 0.0,
                               "train_seconds": 0.0, **_numbers(result)})
                scores.setdefault("random init", []).append(example_scores(preds, labels, dense_labels))
            for step in probe_steps(cfg, fractions):
                ckpt = run_dir / "checkpoints" / f"ckpt_{step:08d}.pt"
                log(f"  probing step {step}")
                result, preds = _probed(run_dir / f"claim_probe_{step:08d}",
                                        probe(lambda: load_encoder(ckpt), cfg.grid))
                seconds = max((t for k, t in timeline.items() if k <= step), default=0.0)  # last logged
                point = {"row": arm, "seed": seed, "step": step, "train_gflop": gflop * step * cfg.train.batch_size,
                         "train_seconds": seconds, **_numbers(result)}
                curves.append(point)
            runs.append({**point, "gflop_per_image": gflop})
            scores.setdefault(arm, []).append(example_scores(preds, labels, dense_labels))
            log(f"{arm} seed {seed}: " + ", ".join(f"{k} {point[k]:.4f}" for k in METRICS if k in point))
    raw, raw_preds = _probed(out / "raw_pixels", lambda preds: probe_raw_pixels(
        data["train"], data["test"], base.model.patch_size, predictions=preds, image_size=base.data.image_size))
    runs.append({"row": "raw pixels", "seed": None, **_numbers(raw)})
    scores["raw pixels"] = [example_scores(raw_preds, labels, dense_labels)]
    floors = _cached(out / "floors.json", lambda: probe_floors(data["train"], data["test"], base.grid,
                                                               base.data.image_size))
    runs += floor_rows(floors)
    summary = summarise(runs)
    intervals = {row: bootstrap(per_seed, draws) for row, per_seed in scores.items()}
    differences = [{"a": a, "b": b, **difference(scores[a], scores[b], draws)} for a, b in compared(arms)]
    report = {"preset": preset_name, "steps": steps, "batch_size": base.train.batch_size, "seeds": list(seeds),
              "train_size": train_size, "test_size": test_size, "overrides": list(overrides),
              "arms": {a: ARMS[a] for a in arms}, "fractions": list(fractions), "bootstrap_draws": draws,
              "runs": runs, "curves": curve_summary(curves), "summary": summary, "intervals": intervals,
              "differences": differences,
              "no_signal": no_signal(intervals, floors)}
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    save_plot(summary, out / f"{name}.png")
    save_curves(report["curves"], out / f"{name}_curves.png")
    save_differences(differences, out / f"{name}_differences.png")
    return report


def compared(arms: Sequence[str]) -> list[tuple[str, str]]:
    """The differences a claim report carries: each ablation against its base, faithful SiM against
    every other trained row, centred SiM against the other objectives (the variant the CPU presets
    train), then every trained row against random init."""
    pairs = [(a, ABLATION_BASE) for a in arms if a in ABLATIONS and ABLATION_BASE in arms]
    others = [a for a in arms if ARMS[a]["objective"] != "sim"]
    if "sim" in arms:
        pairs += [("sim", a) for a in arms if a != "sim" and a not in ABLATIONS]
    if "sim centred" in arms:
        pairs += [("sim centred", a) for a in others]
    return pairs + [(a, "random init") for a in arms]


def differences_markdown(report: dict) -> str:
    """A claim report's differences as a markdown table: each row's seed mean minus the other's, with
    its 95 % bootstrap interval (seeds resampled per row, test images shared); bold where the interval
    excludes 0."""
    lines = ["| difference | " + " | ".join(LABELS[k] for k in METRICS) + " |", "|" + " --- |" * (len(METRICS) + 1)]
    for d in report["differences"]:
        cells = []
        for key in METRICS:
            if key not in d:
                cells.append("–")
                continue
            diff, low, high = d[key]
            cell = f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]"
            cells.append(f"**{cell}**" if low > 0 or high < 0 else cell)
        lines.append(f"| {d['a']} − {d['b']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _numbers(result: dict) -> dict:
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def curve_summary(points: list[dict]) -> dict:
    """``{row: [{"step", "train_gflop", "train_seconds", metric: [mean, std]}]}``, over seeds per step."""
    grouped: dict = {}
    for p in points:
        grouped.setdefault(p["row"], {}).setdefault(p["step"], []).append(p)
    out = {}
    for row, by_step in grouped.items():
        out[row] = []
        for step in sorted(by_step):
            ps = by_step[step]
            entry = {"step": step, "seeds": len(ps), "train_gflop": statistics.mean(p["train_gflop"] for p in ps)}
            entry["train_seconds"] = statistics.mean(p["train_seconds"] for p in ps)
            for key in METRICS:
                values = [p[key] for p in ps if key in p]
                if values:
                    entry[key] = [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0]
            out[row].append(entry)
    return out


def no_signal(intervals: dict, floors: dict) -> list[str]:
    """The metrics no encoder row lifts above the rule without image content: chance for the global
    probes, the constant label for the dense ones; a metric is carrying signal when some row's whole
    interval lies above that floor."""
    chance = floors["chance"]["accuracy"]
    constant = next((v for k, v in floors.items() if k in ("all background", "majority class")), {})
    out = []
    for key in METRICS:
        floor = chance if key in ("linear", "knn", "few_shot_5") else constant.get(key)
        lows = [iv[key][0] for iv in intervals.values() if key in iv]
        if floor is not None and lows and max(lows) <= floor:
            out.append(key)
    return out


def _save_figure(plot: str, data, path: Path) -> None:
    """Draw ``data`` with :mod:`simlab.viz`'s ``plot`` function and write it to ``path``."""
    from . import viz
    plt = viz._pyplot()
    fig = getattr(viz, plot)(data)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_plot(summary: dict, path: Path) -> None:
    _save_figure("plot_claim", summary, path)


def save_differences(differences: list, path: Path) -> None:
    _save_figure("plot_differences", differences, path)


def save_curves(curves: dict, path: Path) -> None:
    _save_figure("plot_claim_curves", curves, path)


def summarise(runs: list[dict]) -> dict:
    """``{row: {metric: (mean, std)}}`` over seeds (std 0 for a single value)."""
    rows: dict[str, dict] = {}
    for r in runs:
        rows.setdefault(r["row"], []).append(r)
    out = {}
    for name, rs in rows.items():
        out[name] = {}
        for key in (*METRICS, "train_seconds", "train_gflop"):
            values = [r[key] for r in rs if key in r]
            if values:
                out[name][key] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
        seconds = [r["train_seconds"] for r in rs if "train_seconds" in r]
        if seconds:  # the table's training time: one run that shared the cores must not set it
            out[name]["train_seconds_median"] = statistics.median(seconds)
    return out


def _cell(mean: float, std: float, interval=None) -> str:
    """A table cell: the mean, its spread over seeds where there is one (a single run has none to
    show), and the bootstrap interval over seeds and test images where one was computed."""
    cell = f"{mean:.3f} ± {std:.3f}" if std > 0 else f"{mean:.3f}"
    return cell + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


# The README's two claim tables: each budget's trained rows, then the rows that need no pretraining.
BUDGET_ROWS = {"steps": ("sim", "sim centred", "mae", "id"), "flops": ("sim", "sim centred", "mae flops", "id flops")}
REFERENCE_ROWS = ("random init", "raw pixels", "chance", "position only", "all background")


def claim_markdown(report: dict, budget: str) -> str:
    """One budget's claim table from a ``claim.json`` report (``"ablations"``: an ``ablations.json``
    report): its trained rows at their last checkpoint, then random init, raw pixels and the floors;
    intervals and "no signal" marks as the report has them."""
    rows = [*(ABLATION_ORDER if budget == "ablations" else BUDGET_ROWS[budget]), *REFERENCE_ROWS]
    summary = summarise(report["runs"])  # the summary is a function of the runs: recomputed, it cannot drift
    return markdown_table(summary, rows, report.get("intervals"), report.get("no_signal", ()))


def markdown_table(summary: dict, rows: Optional[Sequence[str]] = None, intervals: Optional[dict] = None,
                   no_signal: Sequence[str] = ()) -> str:
    """The summary (those ``rows``, in that order; default all) as a markdown table, with each row's
    bootstrap interval where ``intervals`` has one and "no signal" on the metrics ``no_signal`` names;
    the training columns only where some row trained."""
    rows = [r for r in (rows or summary) if r in summary]
    intervals = intervals or {}
    trained = any("train_seconds" in summary[r] for r in rows)
    extra = " train min (median) | train TFLOP |" if trained else ""
    names = [f"{LABELS[k]} (no signal)" if k in no_signal else LABELS[k] for k in METRICS]
    lines = ["| encoder | " + " | ".join(names) + " |" + extra, "|" + " --- |" * (len(METRICS) + 1 + 2 * trained)]
    for name in rows:
        stats = summary[name]
        cells = [_cell(*stats[k], intervals.get(name, {}).get(k)) if k in stats else "–" for k in METRICS]
        line = f"| {name} | " + " | ".join(cells) + " |"
        if trained:
            t = f"{stats['train_seconds_median'] / 60:.1f}" if "train_seconds_median" in stats else "–"
            f = f"{stats['train_gflop'][0] / 1e3:.1f}" if "train_gflop" in stats else "–"
            line += f" {t} | {f} |"
        lines.append(line)
    return "\n".join(lines)
