"""The README's main job on the embedded default, through the notebooks.

Writes under the output folder: PNGs of ``shapes`` samples with their masks and
SiM view pairs (source with both boxes, masked view 1 with the view-2 patch
centres, view 2), one Fashion-MNIST pair when that dataset is installed; then
the executed notebooks 01_view_geometry, 02_pretrain (a ``demo``-preset SiM
run in ``train/``, resumed if interrupted, skipped if complete),
03_dense_features and 04_probes, each with its figures.
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


def run(out: str | Path = "runs/demo", data_root=None, pretrain_steps: int | None = None,
        probe_sizes: tuple[int, int] = (5000, 1000), kernel: str = "python3",
        notebooks: bool = True, params: dict[str, dict] | None = None) -> list[Path]:
    """The main job: static view figures, then the notebooks 01 -> 02 -> 03 -> 04 executed into ``out``.

    02 pretrains the ``demo`` preset into ``out/train`` (``pretrain_steps`` overrides its length;
    0 skips it, and 03/04 then use the shipped checkpoint; ``notebooks=False`` draws the static figures
    only); 03 looks at that run's dense features and 04 probes it next to a random-init encoder. ``params``
    adds or changes parameters per notebook (e.g. ``{"03_dense_features": {"pairs": 32}}``).
    ``COMPLETE`` is written last; ``demo_times.json`` holds each part's wall time."""
    import json

    from .checkpoint import SHIPPED_CHECKPOINT
    from .notebooks import run_notebook

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "COMPLETE").unlink(missing_ok=True)
    times: dict[str, float] = {}
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
    times["figures"] = time.perf_counter() - start

    trained = pretrain_steps != 0
    checkpoint = str(out / "train") if trained else None
    # the demo run beside random init only: the shipped checkpoint would be one more encoder to probe,
    # about a minute of the 10-minute budget (each row's seconds in bench/demo.json; README "make demo")
    compare = [str(out / "train")] if trained else [str(SHIPPED_CHECKPOINT)]
    chain = [("01_view_geometry", {}),
             ("02_pretrain", {"steps": pretrain_steps}) if trained else None,
             ("03_dense_features", {"checkpoint": checkpoint}),
             ("04_probes", {"checkpoints": compare, "train_size": probe_sizes[0], "test_size": probe_sizes[1],
                           "raw_pixels": False})]  # raw pixels cost 3 CPU minutes; the claim table has them
    for name, values in filter(None, chain if notebooks else []):
        t0 = time.perf_counter()
        print(f"running notebook {name} ...", flush=True)
        values = {**values, **(params or {}).get(name, {})}
        paths.append(run_notebook(name, out, values, kernel=kernel, progress=False, mark_complete=False, echo=True))
        times[name] = time.perf_counter() - t0
        print(f"  {name}: {times[name]:.0f} s", flush=True)
    times["total"] = time.perf_counter() - start
    (out / "demo_times.json").write_text(json.dumps(times, indent=2) + "\n")
    paths += sorted(p for p in out.glob("*.png") if p not in paths)
    (out / "COMPLETE").write_text("demo\n")
    for p in paths:
        print(f"wrote {p}")
    print(f"demo finished in {times['total']:.1f} s")
    return paths
