"""Time to quality on a CPU (``python -m simlab.bench speedrun``), in the spirit of the CIFAR-10 speedruns.

Each objective (SiM, MAE, ID) pretrains a preset once, saving a checkpoint every ``every`` steps;
each checkpoint is then probed (probing does not count as training time) and placed at the training
wall time it took to reach it, summed from the run's metrics log. For every (objective, probe) the
report gives the first training time at which the probe crosses a fixed threshold, the whole curve,
and the same probes of a random-init encoder (the floor to beat). For SiM it also scores the decoder
on held-out view pairs against the content-blind rule (``simlab.dense``): the margin
``blind_loss - decoder_loss`` must become positive for the decoder to predict more than position.

Resumable: the runs resume and every probe is cached as JSON beside its checkpoint. Results go to
``bench/speedrun.json`` and ``bench/speedrun.png`` with ``--save``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

# fixed thresholds, each above the random-init encoder of the demo architecture on shapes at 32 px
# (16.0 % linear, 12.8 % k-NN, 0.709 fg/bg mIoU, 0.117 class mIoU over 3 seeds, README) by a margin
# no seed of it reached
THRESHOLDS = {"linear": 0.20, "knn": 0.14, "fg_bg_miou": 0.80, "class_miou": 0.13}


def _probe(path: Path, data: dict, grid: int, dense_pairs: int) -> dict:
    from ..checkpoint import load_encoder
    from ..probes import probe_encoder
    encoder = load_encoder(path)
    res = probe_encoder(encoder, data["train"], data["test"], grid)
    if dense_pairs and encoder.config.train.objective == "sim":
        import torch

        from ..dense import CONTENT_BLIND, dense_evidence, load_sim_model
        model = load_sim_model(path)
        n = dense_pairs
        _, ev = dense_evidence(model, data["test"]["images"][:n], torch.arange(n), data["train"]["images"][:n],
                               torch.arange(n), model.preprocess["mean"], model.preprocess["std"])
        res["decoder_loss"] = ev["predictions"]["decoder"]["all"]["loss"]
        res["blind_loss"] = ev["predictions"][CONTENT_BLIND]["all"]["loss"]
    return res


def run_speedrun(out="runs/speedrun", objectives: Sequence[str] = ("sim", "mae", "id"), preset_name: str = "demo-500",
                 steps: int = 0, every: int = 50, overrides: Sequence[str] = (), probe_sizes=(5000, 1000),
                 dense_pairs: int = 256, seed: int = 0, log=print) -> dict:
    """Train each objective, probe its checkpoints, and report times to threshold (see the module)."""
    from ..checkpoint import list_checkpoints, load_encoder
    from ..claim import train_seconds_by_step
    from ..presets import run_config
    from ..probes import labelled_split, probe_encoder, random_init_like
    from ..train import pretrain

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"preset": preset_name, "every": every, "overrides": list(overrides), "seed": seed,
              "probe_sizes": list(probe_sizes), "thresholds": THRESHOLDS, "objectives": {}}
    data = None
    for objective in objectives:
        sets = [f"objective={objective}", f"checkpoint_every={every}", "keep_checkpoints=1000", "progress=false",
                *overrides]
        cfg = run_config(preset_name, sets, steps=steps or None, seed=seed)
        if every % cfg.train.log_every:  # every checkpoint needs its own point on the time line
            cfg.train.log_every = math.gcd(every, cfg.train.log_every)
        run_dir = out / objective
        log(f"{objective}: training {cfg.train.steps or cfg.train.epochs} into {run_dir}")
        pretrain(cfg, run_dir, log=lambda *_: None)
        if data is None:
            d = cfg.data
            data = {s: labelled_split(d.dataset, s, n, d.data_root, d.image_size)
                    for s, n in zip(("train", "test"), probe_sizes)}
        timeline = dict(train_seconds_by_step(run_dir / "metrics.jsonl", cfg.train.batch_size))
        curve = []
        for ckpt in sorted(list_checkpoints(run_dir), key=lambda p: p.stat().st_mtime):
            step = int(ckpt.stem.split("_")[-1])
            cache = run_dir / f"speedrun_probe_{step:08d}.json"
            if not cache.exists():
                log(f"{objective}: probing step {step}")
                cache.write_text(json.dumps(_probe(ckpt, data, cfg.grid, dense_pairs), indent=2) + "\n")
            seconds = timeline.get(step) or max((s for k, s in timeline.items() if k <= step), default=0.0)
            curve.append({"step": step, "train_seconds": seconds, **json.loads(cache.read_text())})
        curve.sort(key=lambda c: c["step"])
        crossed = {}
        for key, threshold in THRESHOLDS.items():
            hits = [c["train_seconds"] for c in curve if c.get(key, -1) >= threshold]
            crossed[key] = hits[0] if hits else None
        if objective == "sim":
            hits = [c["train_seconds"] for c in curve if c.get("blind_loss", 0) > c.get("decoder_loss", 1e9)]
            crossed["decoder_beats_content_blind"] = hits[0] if hits else None
        report["objectives"][objective] = {"time_to_threshold_s": crossed, "curve": curve,
                                           "images_per_s": cfg.train.batch_size * curve[-1]["step"] /
                                           max(curve[-1]["train_seconds"], 1e-9) if curve else None}
    floor = out / "random_init.json"
    if not floor.exists():
        encoder = load_encoder(list_checkpoints(out / objectives[0])[0])
        floor.write_text(json.dumps(probe_encoder(random_init_like(encoder, seed), data["train"], data["test"],
                                                  encoder.config.grid), indent=2) + "\n")
    report["random_init"] = json.loads(floor.read_text())
    return report


def plot_speedrun(report: dict):
    """One panel per probe: each objective's curve against training seconds, the threshold dashed and
    the random-init level dotted."""
    from .. import viz
    plt = viz._pyplot()
    keys = list(THRESHOLDS)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.8 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for objective, res in report["objectives"].items():
            pts = [(c["train_seconds"], c[key]) for c in res["curve"] if key in c]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=objective)
        ax.axhline(report["thresholds"][key], ls="--", c="black", lw=0.8, label="threshold")
        if key in report["random_init"]:
            ax.axhline(report["random_init"][key], ls=":", c="grey", lw=1.0, label="random init")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("training seconds", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
