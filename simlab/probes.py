"""Probing a frozen encoder or a checkpoint end to end: its labelled data, every probe, their floors
and the rounded, JSON-ready result (``simlab probe``, notebooks/04_probes).

The probes themselves live in modules named for each: :mod:`simlab.features` (extraction and the
shared head's normalisation), :mod:`simlab.global_probes` (k-NN, linear, few-shot) and
:mod:`simlab.dense_probe`. This module stays the public place for all their names (DESIGN.md's
``simlab.probes.knn_accuracy`` and ``simlab.probes.extract_features`` among them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .dense_probe import (_mask_at, constant_label_scores, dense_patch_labels, dense_probe, iou_scores, patch_labels,
                          raw_pixel_tokens)
from .features import extract_features, extract_tokens, normalise, prepare
from .global_probes import _quiet, few_shot, global_probes, knn_accuracy, knn_predict, linear_probe, torch_linear_probe

# the public place for every probe name, those defined in the modules above included
__all__ = ["prepare", "extract_tokens", "extract_features", "normalise", "knn_accuracy", "knn_predict",
           "linear_probe", "few_shot", "global_probes", "torch_linear_probe", "patch_labels", "dense_patch_labels", "iou_scores", "dense_probe",
           "constant_label_scores", "raw_pixel_tokens", "probe_encoder", "probe_floors", "random_init_like",
           "labelled_split", "probe_checkpoint", "rounded"]

def probe_encoder(encoder, train: dict, test: dict, grid: int, dense_train: int = 1000,
                  pool: str = "mean", seed: int = 0, log: Callable[[str], None] = _quiet,
                  predictions: Optional[dict] = None) -> dict:
    """k-NN, linear and (where masks exist) dense probes of one frozen encoder.

    train/test: ``images`` (uint8), ``labels`` and optionally ``masks`` tensors.
    The dense probe trains on the first ``dense_train`` train images. ``log`` hears
    each stage as it starts (the whole takes from seconds to minutes). A ``predictions`` dict
    receives every probe's test predictions (:func:`global_probes`, :func:`dense_probe`).
    """
    log(f"features of {len(train['images'])} train and {len(test['images'])} test images")
    ftr = normalise(extract_features(encoder, train["images"], pool))
    fte = normalise(extract_features(encoder, test["images"], pool))
    out = global_probes(ftr, fte, train["labels"], test["labels"], seed, log=log, predictions=predictions)
    if "masks" in train and "masks" in test:
        log(f"dense probe: per-patch logistic regression on {min(dense_train, len(train['images']))} images' tokens")
        ttr = normalise(extract_tokens(encoder, train["images"][:dense_train]))
        tte = normalise(extract_tokens(encoder, test["images"]))
        size = encoder.preprocess["input_size"]
        out.update(dense_probe(ttr, dense_patch_labels(train, size, grid, dense_train), tte,
                               dense_patch_labels(test, size, grid), predictions=predictions))
    return out


def probe_floors(train: dict, test: dict, grid: int, size: int, dense_train: int = 1000) -> dict:
    """What the probes score without any image content (DESIGN.md convention 13).

    ``chance``: the share of the test set's most frequent class (what every global probe scores
    when it learns nothing). Where masks exist: ``position only``, the dense probe on a one-hot
    code of each patch's grid position (it can learn where objects usually are, nothing else),
    and the constant rule, ``all background`` (or ``majority class`` where a set has no
    background), which predicts the train set's most frequent patch label everywhere.
    """
    labels = test["labels"].long()
    out = {"chance": {"accuracy": float(torch.bincount(labels).max() / len(labels))}}
    if "masks" in train and "masks" in test:
        ytr = dense_patch_labels(train, size, grid, dense_train)
        yte = dense_patch_labels(test, size, grid)
        n = grid * grid
        onehot = lambda b: torch.eye(n)[None].expand(b, n, n).contiguous()  # noqa: E731
        out["position only"] = dense_probe(onehot(len(ytr)), ytr, onehot(len(yte)), yte)
        constant = constant_label_scores(ytr, yte)
        out["all background" if constant.pop("label") == 0 else "majority class"] = constant
    return out


def random_init_like(encoder, seed: int):
    """A freshly initialised encoder of the same architecture and preprocessing (the random-init baseline)."""
    from .checkpoint import build_encoder
    torch.manual_seed(seed)
    return build_encoder(encoder.config, encoder.preprocess)


def labelled_split(name: str, split: str, n: int, data_root=None, image_size: int = 32, seed: int = 0,
                   download: bool = False, field: str = "dataset", require_labels: bool = True) -> dict:
    """The first ``n`` images (uint8; resized to ``image_size`` where they differ in size), labels
    and, where the dataset has them, masks of a labelled dataset's split; an unlabeled one is a
    configuration error of ``field`` (unless ``require_labels`` is false: images only are needed)."""
    from .config import ConfigError
    from .data import build_dataset
    ds = build_dataset(name, split, data_root, image_size=image_size, size=n if name == "shapes" else None,
                       seed=seed, download=download)
    try:
        out = {k: v[:n] for k, v in ds.tensors().items() if k in ("images", "labels", "masks")}
    except NotImplementedError:  # images of different sizes: load and resize one by one
        items = [ds[i] for i in range(min(n, len(ds)))]
        out = {"labels": torch.as_tensor([int(it["label"]) for it in items]),
               "images": torch.stack([F.interpolate(it["image"][None].float(), size=(image_size, image_size),
                                                    mode="bilinear", antialias=True)[0] for it in items])
               .round().clamp(0, 255).to(torch.uint8)}
        if items and "mask" in items[0]:  # masks follow their images (nearest: labels stay labels)
            out["masks"] = torch.cat([_mask_at(it["mask"][None], image_size) for it in items]).to(torch.uint8)
    if require_labels and (out["labels"] < 0).any():
        raise ConfigError(f"{field}: {name!r} has unlabeled images; name a labelled dataset")
    return out


def probe_checkpoint(path, train_size: int = 10_000, test_size: int = 2_000, data_root=None,
                     random_init: Optional[int] = None, data_seed: int = 0, seed: int = 0,
                     dataset: Optional[str] = None, pool: str = "mean", log: Callable[[str], None] = _quiet,
                     dense_pairs: int = 512, floors: bool = True, dense_evidence_cache=None) -> dict:
    """Probe a checkpoint's encoder (or, with ``random_init=SEED``, a fresh one of its architecture)
    on the first ``train_size`` / ``test_size`` images of a dataset's train and test splits (by
    default its pretraining dataset), pooling patch tokens by ``pool`` ("mean" or "cls"); returns every
    number with the settings, the checkpoint's sha256 and the floors (:func:`probe_floors`). For a
    SiM checkpoint it adds ``dense_evidence``: its decoder's predictions on ``dense_pairs`` held-out
    view pairs and its learned correspondences, each beside its floors (:func:`simlab.dense.dense_evidence`);
    ``dense_evidence_cache``: a ``dense_evidence.json`` of ``03_dense_features``, used instead where it
    scored this checkpoint on the same data, pairs and seed. ``floors=False`` leaves the floors out
    (they need no encoder: one row of several serves). Numbers are rounded to 6 decimals. ``path``: a
    checkpoint file or a run folder."""
    import time

    from .checkpoint import load_encoder, resolve_checkpoint, sha256_of

    start = time.perf_counter()
    path = resolve_checkpoint(path)
    log(f"loading {path}")
    encoder = load_encoder(path)
    if random_init is not None:
        encoder = random_init_like(encoder, random_init)
    cfg = encoder.config
    size = encoder.preprocess["input_size"]
    dataset = dataset or cfg.data.dataset
    if dataset == cfg.data.dataset:  # the recorded data_root belongs to the pretraining dataset only
        data_root = data_root or cfg.data.data_root
    log(f"loading {train_size} train and {test_size} test images of {dataset}")
    splits = {split: labelled_split(dataset, split, n, data_root, size, data_seed)
              for split, n in (("train", train_size), ("test", test_size))}
    res = probe_encoder(encoder, splits["train"], splits["test"], cfg.grid, pool=pool, seed=seed, log=log)
    if floors:
        log("floors: chance, position-only dense probe, constant label")
        res["floors"] = probe_floors(splits["train"], splits["test"], cfg.grid, size)
    sha = sha256_of(path)
    if random_init is None and dense_pairs > 0 and cfg.train.objective == "sim":
        n = min(dense_pairs, len(splits["test"]["images"]), len(splits["train"]["images"]))
        cached = _cached_evidence(dense_evidence_cache, sha, dataset, data_seed, n)
        if cached is not None:
            log(f"dense evidence: the decoder and its floors on {n} held-out view pairs, from {dense_evidence_cache}")
            res["dense_evidence"] = cached
        else:
            from .dense import dense_evidence, load_sim_model
            log(f"dense evidence: the decoder and its floors on {n} held-out view pairs")
            model = load_sim_model(path)
            mean, std = model.preprocess["mean"], model.preprocess["std"]
            _, res["dense_evidence"] = dense_evidence(model, splits["test"]["images"][:n], torch.arange(n),
                                                      splits["train"]["images"][:n], torch.arange(n), mean, std)
    return rounded({"checkpoint": str(path), "sha256": sha,
                    "encoder": "random-init" if random_init is not None else "pretrained",
                    "random_init_seed": random_init, "dataset": dataset, "pool": pool,
                    "train_size": len(splits["train"]["labels"]), "test_size": len(splits["test"]["labels"]),
                    "data_seed": data_seed, "probe_seed": seed, **res, "seconds": time.perf_counter() - start})


def _cached_evidence(cache, sha: str, dataset: str, data_seed: int, n: int) -> Optional[dict]:
    """``03_dense_features``' ``dense_evidence.json`` where it scored the checkpoint ``sha`` exactly as
    :func:`probe_checkpoint` would (the first ``n`` test and train images of ``dataset``, views and masks
    of seed 0), without its record of what it scored; else None."""
    import json

    from .dense import EVIDENCE_SOURCE_KEYS
    if cache is None or not Path(cache).is_file() or data_seed != 0:
        return None
    rec = json.loads(Path(cache).read_text())
    scored = tuple(rec.get(k) for k in (*EVIDENCE_SOURCE_KEYS, "pairs", "fit_pairs"))
    if scored != (sha, dataset, 0, n, n):
        return None
    return {k: v for k, v in rec.items() if k not in EVIDENCE_SOURCE_KEYS}


def rounded(obj, digits: int = 6):
    """Floats rounded to ``digits`` decimals throughout a JSON-ready structure (0.1076, not
    0.10759999999999999); booleans, ints and strings unchanged."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj
