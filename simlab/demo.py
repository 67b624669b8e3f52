"""The README's main job on the embedded default: view figures, then a short SiM pretraining.

Writes under the output folder: PNGs of ``shapes`` samples with their masks,
SiM view pairs (source with both boxes, masked view 1 with the view-2 patch
centres, view 2) for a few ``shapes`` images and one Fashion-MNIST pair when
that dataset is installed; then ``pretrain/``, a ``demo``-preset SiM run
(resumed if interrupted, skipped if complete), and ``pretrain_metrics.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from . import viz
from .config import AugConfig
from .data import DatasetNotFound, build_dataset
from .masking import keyed_masks
from .views import TwoViewTransform


def view_pair_figures(out_dir: Path, dataset: str = "shapes", indices=(0, 1, 2, 3), image_size: int = 32,
                      patch_size: int = 4, seed: int = 0, data_root=None, prefix: str = "view_pair") -> list[Path]:
    """One view-pair PNG per index; returns the paths written."""
    ds = build_dataset(dataset, "train", data_root, image_size=image_size, size=max(indices) + 1, seed=seed)
    grid = image_size // patch_size
    transform = TwoViewTransform(AugConfig(), image_size, ds.mean, ds.std, seed=seed)
    images = torch.stack([ds[i]["image"] for i in indices])
    views = transform(images, torch.tensor(indices), epoch=0)
    masks = keyed_masks(seed, 0, torch.tensor(indices), grid)
    paths = []
    plt = viz._pyplot()
    for k, index in enumerate(indices):
        fig = viz.plot_view_pair(images[k], views.geom1, views.geom2, views.view1[k], views.view2[k], grid,
                                 masks[k], ds.mean, ds.std, i=k)
        path = out_dir / f"{prefix}_{dataset}_{index}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def pretrain_demo(out: Path, steps: int | None = None) -> list[Path]:
    """The ``demo`` preset into ``out/pretrain`` and a plot of its metrics; returns the paths written."""
    import json

    from .checkpoint import load_encoder
    from .presets import preset
    from .train import pretrain

    cfg = preset("demo")
    if steps is not None:
        cfg.train.steps = steps
    run_dir = out / "pretrain"
    last = pretrain(cfg, run_dir)
    encoder = load_encoder(last)  # the checkpoint must load as users will load it
    print(f"encoder: {sum(p.numel() for p in encoder.parameters()) / 1e6:.2f} M parameters, "
          f"preprocessing {encoder.preprocess}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    plt = viz._pyplot()
    fig = viz.plot_metrics(records)
    fig.savefig(out / "pretrain_metrics.png", dpi=110)
    plt.close(fig)
    return [last, out / "pretrain_metrics.png"]


def run(out: str | Path = "runs/demo", data_root=None, pretrain_steps: int | None = None) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    plt = viz._pyplot()
    ds = build_dataset("shapes", "train", size=40)
    t = ds.tensors()
    fig = viz.plot_samples(t["images"], t["masks"], t["labels"], ds.class_names)
    fig.savefig(out / "shapes_samples.png", dpi=110)
    plt.close(fig)
    paths = [out / "shapes_samples.png"]
    paths += view_pair_figures(out, "shapes")
    try:
        paths += view_pair_figures(out, "fashion-mnist", indices=(0,), image_size=28, data_root=data_root)
    except DatasetNotFound as e:
        print(f"skipping the Fashion-MNIST figure: {e}")
    if pretrain_steps != 0:
        paths += pretrain_demo(out, pretrain_steps)
    for p in paths:
        print(f"wrote {p}")
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return paths
