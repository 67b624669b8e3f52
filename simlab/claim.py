"""The paper's claim at small scale: SiM, MAE and ID with equal epochs, probed alike, several seeds.

``python -m simlab.bench claim`` runs it (opt-in: about 1.5 hours on a 2-core CPU
at the default size). Every pretraining run lives in its own folder under
``--out`` and every probe result is cached beside it, so an interrupted claim
run resumes where it stopped. Rows: each objective's mean ± std over seeds, a
random-init encoder of the same architecture per seed, raw pixels, and the floors
that need no image content (chance; a position-only and a constant-label dense probe).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Sequence


from .config import apply_overrides
from .presets import preset

METRICS = ("linear", "knn", "few_shot_5", "fg_bg_miou", "fg_iou", "class_miou")


def probe_raw_pixels(train: dict, test: dict, patch: int, dense_train: int = 1000, seed: int = 0) -> dict:
    """The raw-pixel row: flattened pixels through the shared head (LayerNorm without affine), and
    per-patch pixels for the dense probe."""
    from .probes import dense_probe, global_probes, normalise, patch_labels, raw_pixel_tokens
    flat = lambda x: normalise(x.float().flatten(1) / 255)  # noqa: E731
    out = global_probes(flat(train["images"]), flat(test["images"]), train["labels"], test["labels"], seed)
    if "masks" in train:
        grid = train["images"].shape[-1] // patch
        out.update(dense_probe(raw_pixel_tokens(train["images"][:dense_train], patch),
                               patch_labels(train["masks"][:dense_train], grid),
                               raw_pixel_tokens(test["images"], patch), patch_labels(test["masks"], grid)))
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


def run_claim(out: Path, objectives: Sequence[str] = ("sim", "mae", "id"), seeds: Sequence[int] = (0, 1, 2),
              preset_name: str = "demo", steps: int = 500, train_size: int = 10_000, test_size: int = 2_000,
              overrides: Sequence[str] = (), log=print) -> dict:
    """Pretrain every (objective, seed), probe it, and probe random-init encoders and raw pixels."""
    from .flops import flop_per_image
    from .checkpoint import list_checkpoints, load_encoder
    from .probes import labelled_split, probe_encoder, probe_floors, random_init_like
    from .train import pretrain

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = apply_overrides(preset(preset_name), [f"steps={steps}", "progress=false", *overrides]).validate()
    data = {split: labelled_split(base.data.dataset, split, n, base.data.data_root, base.data.image_size)
            for split, n in (("train", train_size), ("test", test_size))}
    runs = []
    for objective in objectives:
        cfg = apply_overrides(base, [f"objective={objective}"]).validate()
        gflop = flop_per_image(cfg) / 1e9
        for seed in seeds:
            run_dir = out / f"{objective}_seed{seed}"
            cfg_seed = apply_overrides(cfg, [f"seed={seed}"]).validate()
            last = pretrain(cfg_seed, run_dir, log=lambda *_: None)
            timing = {"train_seconds": logged_train_seconds(run_dir / "metrics.jsonl", cfg.train.batch_size)}
            result = _cached(run_dir / "claim_probe.json",
                             lambda: probe_encoder(load_encoder(last), data["train"], data["test"], cfg.grid))
            runs.append({"row": objective, "seed": seed, "gflop_per_image": gflop,
                         "train_gflop": gflop * steps * cfg.train.batch_size, **timing, **result})
            log(f"{objective} seed {seed}: " + ", ".join(f"{k} {result[k]:.4f}" for k in METRICS if k in result))
    for seed in seeds:  # one random-init encoder per seed, of the first objective's architecture
        newest = list_checkpoints(out / f"{objectives[0]}_seed{seed}")[0]
        result = _cached(out / f"random_init_seed{seed}.json",
                         lambda: probe_encoder(random_init_like(load_encoder(newest), seed), data["train"],
                                               data["test"], base.grid))
        runs.append({"row": "random init", "seed": seed, **result})
    raw = _cached(out / "raw_pixels.json", lambda: probe_raw_pixels(data["train"], data["test"],
                                                                    base.model.patch_size))
    runs.append({"row": "raw pixels", "seed": None, **raw})
    runs += floor_rows(_cached(out / "floors.json", lambda: probe_floors(data["train"], data["test"], base.grid,
                                                                          base.data.image_size)))
    summary = summarise(runs)
    report = {"preset": preset_name, "steps": steps, "batch_size": base.train.batch_size, "seeds": list(seeds),
              "train_size": train_size, "test_size": test_size, "overrides": list(overrides),
              "runs": runs, "summary": summary}
    (out / "claim.json").write_text(json.dumps(report, indent=2) + "\n")
    save_plot(summary, out / "claim.png")
    return report


def save_plot(summary: dict, path: Path) -> None:
    from . import viz
    plt = viz._pyplot()
    fig = viz.plot_claim(summary)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    return out


def _cell(mean: float, std: float) -> str:
    """A table cell: the mean, and its spread where there is one (a single run has none to show)."""
    return f"{mean:.3f} ± {std:.3f}" if std > 0 else f"{mean:.3f}"


def markdown_table(summary: dict) -> str:
    """The summary as a markdown table; the training columns only where some row trained."""
    trained = any("train_seconds" in stats for stats in summary.values())
    extra = " train min | train TFLOP |" if trained else ""
    head = "| encoder | " + " | ".join(METRICS) + " |" + extra
    lines = [head, "|" + " --- |" * (len(METRICS) + 1 + 2 * trained)]
    for name, stats in summary.items():
        cells = [_cell(*stats[k]) if k in stats else "–" for k in METRICS]
        line = f"| {name} | " + " | ".join(cells) + " |"
        if trained:
            t = f"{stats['train_seconds'][0] / 60:.1f}" if "train_seconds" in stats else "–"
            f = f"{stats['train_gflop'][0] / 1e3:.1f}" if "train_gflop" in stats else "–"
            line += f" {t} | {f} |"
        lines.append(line)
    return "\n".join(lines)
