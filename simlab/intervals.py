"""Intervals that cover both sources of spread in a probe's number: the pretraining seed and the
finite test split (claim v2, README "The paper's claim at small scale").

A probe's test predictions become per-image scores (correct or not; per-class intersection and union
of patches), so that a resample of the test images is a weight vector over them and every metric a
weighted sum: ``metrics(scores, ones)`` reproduces the probe's own numbers exactly (tested against
:mod:`simlab.dense_probe`). :func:`bootstrap` resamples seeds and test images together (a two-level
bootstrap: seeds with replacement, then one shared draw of test images, since every seed is probed on
the same split) and reports the percentile interval of the mean over seeds.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

GLOBAL = ("knn", "linear", "few_shot_5")
DENSE = {"fg_bg_miou": "fg_bg", "fg_iou": "fg_bg", "class_miou": "class"}


def example_scores(predictions: dict, labels: np.ndarray, dense_labels: Optional[np.ndarray] = None) -> dict:
    """Per-test-image scores of one probed encoder.

    predictions: what :func:`simlab.probes.probe_encoder` put in its ``predictions`` dict.
    labels: (M,) test labels; dense_labels: (M, N) per-patch labels (``IGNORE_LABEL`` unscored).
    Returns ``{probe: (M,) share correct}`` for the global probes (few-shot averaged over its draws)
    and ``{"fg_bg" | "class": (inter (M, K), union (M, K))}`` for the dense ones.
    """
    from .segmentation import IGNORE_LABEL
    out = {}
    for key in GLOBAL:
        if key in predictions:
            pred = np.asarray(predictions[key])
            out[key] = (pred == labels).astype(np.float64).reshape(-1, len(labels)).mean(0)
    if dense_labels is not None:
        scored = dense_labels != IGNORE_LABEL
        for key, truth in (("fg_bg", (dense_labels > 0).astype(np.int64)), ("class", dense_labels)):
            if key not in predictions:
                continue
            pred = np.asarray(predictions[key])
            k = int(max(truth[scored].max(initial=0), pred[scored].max(initial=0))) + 1
            classes = np.arange(k)[None, None, :]
            p = (pred[..., None] == classes) & scored[..., None]
            t = (truth[..., None] == classes) & scored[..., None]
            out[key] = ((p & t).sum(1).astype(np.float64), (p | t).sum(1).astype(np.float64))
    return out


def metrics(scores: dict, weights: Optional[np.ndarray] = None) -> dict:
    """Every metric of per-image ``scores`` under test-image ``weights`` (M,) (all ones: the probe's
    own numbers). IoU skips classes absent from both prediction and truth, as the probe does."""
    out = {}
    for key in GLOBAL:
        if key in scores:
            w = np.ones(len(scores[key])) if weights is None else weights
            out[key] = float(w @ scores[key] / w.sum())
    for metric, key in DENSE.items():
        if key not in scores:
            continue
        inter, union = scores[key]
        w = np.ones(len(inter)) if weights is None else weights
        i, u = w @ inter, w @ union
        iou = np.divide(i, u, out=np.zeros_like(i), where=u > 0)
        if metric == "fg_iou":
            out[metric] = float(iou[1]) if len(iou) > 1 else 0.0
        else:
            out[metric] = float(iou[u > 0].mean())
    return out


def _resampled_means(groups: Sequence[Sequence[dict]], draws: int, seed: int):
    """Per draw: each group's mean metrics over its seeds resampled with replacement, all groups under
    one shared draw of test images (every group was probed on the same split)."""
    rng = np.random.default_rng(seed)
    first = next(iter(groups[0][0].values()))
    m = len(first[0] if isinstance(first, tuple) else first)  # test images
    for _ in range(draws):
        picks = [rng.integers(0, len(g), len(g)) if len(g) > 1 else np.zeros(1, dtype=int) for g in groups]
        weights = np.bincount(rng.integers(0, m, m), minlength=m).astype(np.float64)
        means = []
        for group, picked in zip(groups, picks):
            values = [metrics(group[s], weights) for s in picked]
            means.append({key: float(np.mean([v[key] for v in values])) for key in values[0]})
        yield means


def _percentiles(samples: dict, level: float) -> dict:
    tail = (1 - level) / 2 * 100
    return {key: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) for key, v in samples.items()}


def bootstrap(per_seed: Sequence[dict], draws: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """``{metric: (low, high)}``: the percentile interval of the seeds' mean metric when seeds and
    test images are resampled together. ``per_seed``: one :func:`example_scores` per pretraining seed,
    all on the same test split. One seed: the test split's spread only."""
    samples: dict[str, list] = {}
    for (means,) in _resampled_means([per_seed], draws, seed):
        for key, value in means.items():
            samples.setdefault(key, []).append(value)
    return _percentiles(samples, level)


def difference(a: Sequence[dict], b: Sequence[dict], draws: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """``{metric: (a - b, low, high)}``: the difference of two rows' seed means and its percentile
    interval, each row's seeds resampled on its own and both under the same draw of test images (so
    the split's shared difficulty cancels). An interval that excludes 0 is a difference these seeds
    and this split can tell."""
    samples: dict[str, list] = {}
    for mean_a, mean_b in _resampled_means([a, b], draws, seed):
        for key in mean_a.keys() & mean_b.keys():
            samples.setdefault(key, []).append(mean_a[key] - mean_b[key])
    point_a = {k: np.mean([metrics(s)[k] for s in a]) for k in samples}
    point_b = {k: np.mean([metrics(s)[k] for s in b]) for k in samples}
    return {key: (float(point_a[key] - point_b[key]), *iv) for key, iv in _percentiles(samples, level).items()}
