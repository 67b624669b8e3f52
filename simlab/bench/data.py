"""Data-path benchmarks: two-view pairs per second against a per-sample PIL reference (``views``)
and raw-pixel baselines on ``shapes`` (``dataset``)."""

from __future__ import annotations

import io
import random

import torch

from .measure import hardware, timed


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
