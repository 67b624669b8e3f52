"""Benchmarks: ``python -m simlab.bench NAME [--json] [--save]``.

Each benchmark prints a small table and, with ``--json``, one JSON object as its
last line; ``--save`` also writes it to ``bench/NAME.json``. Speed is measured
here, never asserted in tests (DESIGN.md "Measuring"). Every result carries the
hardware and thread count it was measured with.

- ``views``: SiM two-view pairs per second per core at 32 px (``shapes``) and at
  224 px (from a synthetic 500x375 JPEG; decoding is timed separately), and
  ``shapes`` generation in images per second per core.
- ``dataset``: raw-pixel k-NN and logistic-regression accuracy on ``shapes``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch


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
    from .config import AugConfig
    from .data import build_dataset
    from .shapes import render
    from .views import TwoViewTransform

    torch.set_num_threads(1)  # per core
    repeats = 3 if quick else 5
    n_small, n_large, n_shapes = (256, 16, 1024) if quick else (1024, 64, 4096)
    results: dict = {"hardware": hardware()}

    chunks = [torch.arange(s, s + 128) for s in range(0, n_shapes, 128)]
    t = timed(lambda: [render(c, 32) for c in chunks], repeats)
    results["shapes_images_per_s"] = n_shapes / t

    ds = build_dataset("shapes", size=n_small)
    images = ds.tensors()["images"]
    tf = TwoViewTransform(AugConfig(), 32, ds.mean, ds.std)
    batches = [(images[s:s + 256], torch.arange(s, s + 256)) for s in range(0, n_small, 256)]
    t = timed(lambda: [tf(x, i) for x, i in batches], repeats)
    results["pairs_per_s_32px"] = n_small / t

    jpeg = synthetic_photo()
    t = timed(lambda: decode(jpeg), repeats * 4)
    results["decode_per_s_500x375"] = 1.0 / t
    big = decode(jpeg)[None].expand(n_large, -1, -1, -1).contiguous()
    tf224 = TwoViewTransform(AugConfig(), 224, ds.mean, ds.std)
    batches = [(big[s:s + 16], torch.arange(s, s + 16)) for s in range(0, n_large, 16)]
    t = timed(lambda: [tf224(x, i) for x, i in batches], repeats)
    results["pairs_per_s_224px"] = n_large / t
    results["pairs_per_s_224px_with_decode"] = 1.0 / (1.0 / results["pairs_per_s_224px"]
                                                      + 1.0 / results["decode_per_s_500x375"])
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
    from .data import build_dataset

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


BENCHMARKS = {"views": bench_views, "dataset": bench_dataset}


def _table(name: str, res: dict) -> str:
    lines = [f"{name} on {res['hardware']['cpu']} ({res['hardware']['threads']} thread(s), "
             f"torch {res['hardware']['torch']})"]
    for k, v in res.items():
        if k != "hardware":
            lines.append(f"  {k:<34} {v:>12.4g}" if isinstance(v, float) else f"  {k:<34} {v}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simlab.bench", description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--save", action="store_true", help="also write bench/NAME.json")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for smoke tests")
    args = parser.parse_args(argv)
    res = BENCHMARKS[args.name](quick=args.quick)
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
