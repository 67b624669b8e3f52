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
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from ..flops import count_flops, flop_per_image, synthetic_batch  # noqa: F401 (benchmarks' names)


def hardware() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def timed(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic_photo(height: int = 375, width: int = 500, seed: int = 0) -> bytes:
    """A deterministic photo-like RGB image (smooth colour fields plus grain), JPEG-encoded."""
    import numpy as np
    from PIL import Image
    g = torch.Generator().manual_seed(seed)
    field = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=g), size=(height, width),
                                            mode="bicubic", align_corners=False)[0]
    grain = 0.08 * torch.randn(3, height, width, generator=g)
    array = ((field + grain).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def decode(data: bytes) -> torch.Tensor:
    import numpy as np
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def bench_views(quick: bool = False) -> dict:
    """Two-view pairs per second per core: simlab's batched path against the per-sample PIL
    reference (``simlab.bench.reference``) on the same images, at 32 px and 224 px."""
    import numpy as np
    from PIL import Image

    from ..config import AugConfig
    from ..data import build_dataset
    from ..shapes import render
    from ..views import TwoViewTransform
    from .reference import PILTwoViews

    torch.set_num_threads(1)  # per core
    repeats = 3 if quick else 5
    n_small, n_large, n_shapes = (256, 16, 1024) if quick else (1024, 64, 4096)
    results: dict = {"hardware": hardware()}
    aug = AugConfig(crop_scale=(0.2, 1.0))

    chunks = [torch.arange(s, s + 128) for s in range(0, n_shapes, 128)]
    t = timed(lambda: [render(c, 32) for c in chunks], repeats)
    results["shapes_images_per_s"] = n_shapes / t

    def compare(images: torch.Tensor, size: int, batch: int, mean, std) -> tuple[float, float]:
        """(simlab pairs/s, reference pairs/s) on the same uint8 images (N, 3, H, W)."""
        tf = TwoViewTransform(aug, size, mean, std)
        batches = [(images[s:s + batch], torch.arange(s, s + batch)) for s in range(0, len(images), batch)]
        ours = len(images) / timed(lambda: [tf(x, i) for x, i in batches], repeats)
        pil = [Image.fromarray(np.ascontiguousarray(im.permute(1, 2, 0).numpy())) for im in images]
        ref = PILTwoViews(aug, size, mean, std)
        random.seed(0)
        theirs = len(images) / timed(lambda: [ref(im) for im in pil], repeats)
        return ours, theirs

    ds = build_dataset("shapes", size=n_small)
    ours, theirs = compare(ds.tensors()["images"], 32, 256, ds.mean, ds.std)
    results.update(pairs_per_s_32px=ours, reference_pairs_per_s_32px=theirs, ratio_32px=ours / theirs)

    photos = [synthetic_photo(seed=k) for k in range(8)]
    t = timed(lambda: [decode(jpeg) for jpeg in photos], repeats)
    results["decode_per_s_500x375"] = len(photos) / t
    big = torch.stack([decode(photos[k % len(photos)]) for k in range(n_large)])
    ours, theirs = compare(big, 224, 16, ds.mean, ds.std)
    results.update(pairs_per_s_224px=ours, reference_pairs_per_s_224px=theirs, ratio_224px=ours / theirs)
    results["pairs_per_s_224px_with_decode"] = 1.0 / (1.0 / ours + 1.0 / results["decode_per_s_500x375"])
    return results


def bench_dataset(quick: bool = False) -> dict:
    """Raw-pixel baselines on ``shapes``: how much a classifier gets from pixels alone.

    k-NN (k=20, cosine) and multinomial logistic regression on standardised
    pixels, trained on 10k and tested on 2k images, for 3 dataset seeds.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler
    from ..data import build_dataset

    n_train, n_test = (2000, 500) if quick else (10_000, 2000)
    knn, logreg = [], []
    for seed in range(3):
        tr = build_dataset("shapes", "train", size=n_train, seed=seed).tensors()
        te = build_dataset("shapes", "test", size=n_test, seed=seed).tensors()
        xtr, xte = tr["images"].flatten(1).float().numpy(), te["images"].flatten(1).float().numpy()
        ytr, yte = tr["labels"].numpy(), te["labels"].numpy()
        knn.append(KNeighborsClassifier(20, metric="cosine").fit(xtr, ytr).score(xte, yte))
        scaler = StandardScaler().fit(xtr)
        clf = LogisticRegression(max_iter=300 if not quick else 50).fit(scaler.transform(xtr), ytr)
        logreg.append(clf.score(scaler.transform(xte), yte))
    return {"hardware": hardware(), "n_train": n_train, "n_test": n_test, "seeds": [0, 1, 2],
            "raw_knn_acc_mean": float(np.mean(knn)), "raw_knn_acc_std": float(np.std(knn)),
            "raw_logreg_acc_mean": float(np.mean(logreg)), "raw_logreg_acc_std": float(np.std(logreg))}


def matmul_peak(dtype=torch.float32, n: int = 2048, device="cpu") -> float:
    """FLOP/s of an n^3 matmul: the median of 5 timed runs after one untimed (DESIGN.md "Measuring")."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)

    def run():
        a @ b
        sync()
    return 2 * n ** 3 / timed(run, repeats=5)


def train_step_stats(cfg, batch_size: int, device="cpu", repeats: int = 3, flops: bool = True, warmup: int = 2,
                     peak_n: int = 2048) -> dict:
    """images/s of full training steps (forward, EMA, backward, clip, AdamW) on one fixed batch and,
    with ``flops``, FLOP per image of forward + backward (FlopCounterMode) and utilisation against
    the ``peak_n``-cubed matmul peak measured in the same process, dtype and thread count."""
    from ..devices import adamw, autocast_dtype
    from ..train import build_model, param_groups
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(cfg).to(dev).train()
    opt = adamw(param_groups(model, 0.05), 1e-4, (0.9, 0.95))
    amp = autocast_dtype(cfg.train.precision, dev)
    batch = synthetic_batch(cfg, batch_size, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, _ = model(batch, momentum=0.996)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()

    t = timed(step, repeats=repeats, warmup=warmup)
    ips = batch_size / t
    out = {"batch_size": batch_size, "step_s": t, "images_per_s": ips,
           "precision": str(amp or torch.float32).replace("torch.", "")}
    if flops:
        per_image = count_flops(model, batch, amp) / batch_size
        opt.zero_grad(set_to_none=True)
        peak = matmul_peak(amp or torch.float32, n=peak_n, device=dev)
        out.update(flop_per_image=per_image, matmul_peak_flops=peak, utilisation=ips * per_image / peak)
    return out


def bench_train(quick: bool = False, presets=None, batch_size=None, device=None) -> dict:
    """Training-step speed of presets on this machine (small batches for the big ones on a CPU)."""
    from ..presets import preset
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cpu_batches = {"tiny": 64, "demo": 128, "official-a": 128, "cifar-vit-s": 32, "vit-b16-paper": 8}
    names = presets or (["tiny", "demo"] if quick else list(cpu_batches))
    out = {"hardware": hardware(), "device": device, "presets": {}}
    for name in names:
        cfg = preset(name)
        bs = batch_size or (cpu_batches.get(name, 64) if device == "cpu" else cfg.train.batch_size)
        out["presets"][name] = train_step_stats(cfg, min(bs, 16) if quick else bs, device,
                                                repeats=2 if quick else 3)
    return out


def bench_claim(quick: bool = False, out: str = "runs/claim", seeds=None, steps=None, objectives=None,
                overrides=(), datasets=None) -> dict:
    """The paper's claim at small scale (simlab.claim): opt-in, about 1.5 hours per dataset on a 2-core
    CPU. Each dataset (default: shapes) pretrains and probes in its own folder ``out/DATASET``."""
    from ..claim import markdown_table, run_claim
    if quick:  # a smoke test of the harness: tiny models and sets, one seed
        kwargs = dict(preset_name="tiny", steps=steps or 4, seeds=seeds or (0,), train_size=200, test_size=100)
    else:
        kwargs = dict(preset_name="demo", steps=steps or 500, seeds=seeds or (0, 1, 2))
    reports = {}
    for dataset in datasets or ("shapes",):
        report = run_claim(Path(out) / dataset, objectives=objectives or ("sim", "mae", "id"),
                           overrides=[f"dataset={dataset}", *overrides], **kwargs)
        print(f"{dataset}:\n" + markdown_table(report["summary"]))
        reports[dataset] = {k: v for k, v in report.items() if k != "runs"}
    return {"hardware": hardware(), "datasets": reports}


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
        else dict(preset_name="demo", steps=steps or 0, every=100)
    report = run_speedrun(out, objectives=objectives or ("sim", "mae", "id"), overrides=overrides,
                          seed=(seeds or [0])[0], **kwargs)
    if not quick:
        from .. import viz
        fig = plot_speedrun(report)
        fig.savefig("bench/speedrun.png", dpi=100, bbox_inches="tight")
        viz._pyplot().close(fig)
    return {"hardware": hardware(), **report}


BENCHMARKS = {"evidence": bench_evidence, "speedrun": bench_speedrun, "views": bench_views, "dataset": bench_dataset, "train": bench_train, "claim": bench_claim,
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
                        "speedrun's default: runs/speedrun)")
    parser.add_argument("--seeds", type=int, nargs="+", help="claim: pretraining seeds (default: 0 1 2)")
    parser.add_argument("--steps", type=int, help="claim: steps of every run (default: 500, equal for all)")
    parser.add_argument("--objective", action="append", help="claim: objective(s) (default: sim mae id)")
    parser.add_argument("--set", action="append", default=[], help="claim: key=value for every run")
    parser.add_argument("--datasets", nargs="+", help="claim: labelled datasets to pretrain and probe on, "
                        "each in OUT/DATASET (default: shapes; add fashion-mnist for the real set)")
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
    if args.name == "claim":
        kwargs = {"out": args.out, "seeds": args.seeds, "steps": args.steps, "objectives": args.objective,
                  "overrides": args.set, "datasets": args.datasets}
    res = BENCHMARKS[args.name](quick=args.quick, **kwargs)
    res["benchmark"] = args.name
    print(_table(args.name, res))
    if args.save:
        Path("bench").mkdir(exist_ok=True)
        Path("bench", f"{args.name}.json").write_text(json.dumps(res, indent=2) + "\n")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
