"""The ``scaling`` benchmark: SiM step time and peak memory against image size, batch size and
mask ratio, around a base preset (``official-a``; ``tiny`` with ``--quick``), and a plot.

Each point is one fresh process (so its peak memory is its own): on a CPU the peak resident set
size of the process minus its size before the first step (the step's working memory: activations,
gradients, optimizer state); on CUDA ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _point(preset_name: str, image_size: int, batch: int, mask_ratio: float, device: str) -> dict:
    """One measurement, run in this process (the benchmark calls it in a child)."""
    import resource

    import torch

    from ..config import apply_overrides
    from ..presets import preset
    from ..train import build_model  # noqa: F401 - every import done before the baseline is read
    from . import synthetic_batch, train_step_stats

    cfg = preset(preset_name)
    grid = image_size // cfg.model.patch_size
    apply_overrides(cfg, {"image_size": image_size, "num_masked": round(mask_ratio * grid * grid)})
    rss_kb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731 - kilobytes on Linux
    synthetic_batch(cfg, 2)  # first-use allocations of the libraries, also before the baseline
    before = rss_kb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    stats = train_step_stats(cfg, batch, device, repeats=2, flops=False)
    # on a CPU the growth can be 0 for toy sizes: the step then fits in memory the process already held
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda" else (rss_kb() - before) / 1024)
    return {"image_size": image_size, "batch_size": batch, "mask_ratio": mask_ratio,
            "num_masked": cfg.model.num_masked, "step_s": stats["step_s"], "images_per_s": stats["images_per_s"],
            "peak_memory_mb": peak, "process_peak_mb": rss_kb() / 1024}


def bench_scaling(quick: bool = False, device=None, plot: str = "bench/scaling.png", only=None) -> dict:
    """Step time and peak memory along three sweeps (image size, batch, mask ratio), each point in
    a fresh process so its memory peak is its own; ``only`` names the sweeps to run (default: all)."""
    import torch

    from . import hardware
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = "tiny" if quick else "official-a"
    size, batch, ratio = (16, 16, 0.6) if quick else (32, 128, 0.6)
    sweeps = {
        "image_size": [(s, batch // 2 if not quick else batch, ratio) for s in ((16, 24, 32) if quick else (32, 48, 64))],
        "batch_size": [(size, b, ratio) for b in ((8, 16, 32) if quick else (32, 64, 128))],
        "mask_ratio": [(size, batch, r) for r in (0.4, 0.6, 0.75)],
    }
    out: dict = {"hardware": hardware(), "device": device, "preset": name, "sweeps": {}}
    for sweep, points in sweeps.items():
        if only is not None and sweep not in only:
            continue
        rows = []
        for s, b, r in points:
            code = (f"import json; from simlab.bench.scaling import _point; "
                    f"print(json.dumps(_point({name!r}, {s}, {b}, {r}, {device!r})))")
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(f"scaling point {sweep}={(s, b, r)} failed:\n{proc.stderr[-2000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        out["sweeps"][sweep] = rows
    if plot:
        save_plot(out, plot)
        out["plot"] = plot
    return out


def save_plot(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    for ax, (sweep, rows) in zip(axes, res["sweeps"].items()):
        x = [r[sweep] for r in rows]
        ax.plot(x, [r["step_s"] for r in rows], "o-", color="tab:blue")
        ax.set_xlabel(sweep.replace("_", " "))
        ax.set_ylabel("step time (s)", color="tab:blue")
        twin = ax.twinx()
        twin.plot(x, [r["peak_memory_mb"] for r in rows], "s--", color="tab:red")
        twin.set_ylabel("peak memory (MB)", color="tab:red")
        fixed = {k: rows[0][k] for k in ("image_size", "batch_size", "mask_ratio") if k != sweep}
        ax.set_title(", ".join(f"{k.split('_')[0]} {v}" for k, v in fixed.items()), fontsize=9)
    fig.suptitle(f"SiM step scaling, {res['preset']} on {res['device']} ({res['hardware']['cpu']}, "
                 f"{res['hardware']['threads']} threads)", fontsize=10)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
