"""The dense probe: per-patch labels from masks, per-patch linear classifiers on frozen patch tokens
scored by IoU (class-agnostic foreground/background and class-aware), its raw-pixel input, and the
constant-label rule scored the same way (a floor, DESIGN.md convention 13).
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .global_probes import _fit_logistic

def patch_labels(masks: torch.Tensor, grid: int) -> torch.Tensor:
    """Majority mask label of each patch: masks (B, H, W) -> (B, grid*grid) int64. Pixels marked
    ``IGNORE_LABEL`` do not vote; a patch of ignored pixels only is ``IGNORE_LABEL`` itself."""
    from .segmentation import IGNORE_LABEL
    B, H, W = masks.shape
    ph, pw = H // grid, W // grid
    m = masks[:, :grid * ph, :grid * pw].long().reshape(B, grid, ph, grid, pw).permute(0, 1, 3, 2, 4)
    m = m.reshape(B, grid * grid, ph * pw)
    ignored = m == IGNORE_LABEL
    scored = m.masked_fill(ignored, 0)
    top = int(scored.max()) + 1 if scored.numel() else 1
    counts = (F.one_hot(scored, top) * (~ignored)[..., None]).sum(2)  # (B, N, K)
    labels = counts.argmax(-1)  # ties go to the lower label (background)
    return labels.masked_fill(ignored.all(-1), IGNORE_LABEL)


def dense_patch_labels(split: dict, size: int, grid: int, n: Optional[int] = None) -> torch.Tensor:
    """Per-patch majority labels (B, grid*grid) of a split's first ``n`` masks, seen at input ``size``."""
    return patch_labels(_mask_at(split["masks"][:n], size), grid)


def _mask_at(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Masks resized (nearest) to the encoder's input size, so patches cover what the encoder saw."""
    if masks.shape[-1] == size and masks.shape[-2] == size:
        return masks
    return F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()


def iou_scores(pred: np.ndarray, true: np.ndarray, classes: Iterable[int]) -> dict:
    """Per-class IoU over the given classes (those absent from both sides are skipped)."""
    out = {}
    for c in classes:
        inter = np.sum((pred == c) & (true == c))
        union = np.sum((pred == c) | (true == c))
        if union > 0:
            out[int(c)] = inter / union
    return out


def dense_probe(train_tokens: torch.Tensor, train_labels: torch.Tensor, test_tokens: torch.Tensor,
                test_labels: torch.Tensor, C: float = 1.0, max_iter: int = 300,
                predictions: Optional[dict] = None) -> dict:
    """Per-patch linear classifiers on frozen patch tokens (B, N, D) for per-patch labels (B, N).

    Reports the class-agnostic foreground/background mIoU (a binary classifier,
    where spatial sensitivity shows), its foreground IoU, and the class-aware
    mIoU (a classifier over background + classes); ``dense_converged`` says whether both fits converged.
    A ``predictions`` dict receives both classifiers' test predictions as (B, N) arrays
    (``fg_bg``, 1 for foreground, and ``class``), ``IGNORE_LABEL`` where a patch is not scored.
    """
    from sklearn.preprocessing import StandardScaler

    from .segmentation import IGNORE_LABEL
    D = train_tokens.shape[-1]
    ytr, yte = train_labels.reshape(-1).numpy(), test_labels.reshape(-1).numpy()
    keep_tr, keep_te = ytr != IGNORE_LABEL, yte != IGNORE_LABEL  # patches no label covers are not scored
    shape = test_labels.shape
    xtr = train_tokens.reshape(-1, D).numpy()[keep_tr]
    xte = test_tokens.reshape(-1, D).numpy()[keep_te]
    ytr, yte = ytr[keep_tr], yte[keep_te]
    scaler = StandardScaler().fit(xtr)
    xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    out = {}
    ok_fg = True
    if len(np.unique(ytr > 0)) == 2:  # a set without background (ADE20K) has no fg/bg split to learn
        fg_clf, ok_fg = _fit_logistic(xtr, ytr > 0, C, max_iter)
        fg_pred = fg_clf.predict(xte).astype(int)
        binary = iou_scores(fg_pred, (yte > 0).astype(int), (0, 1))
        out.update(fg_bg_miou=float(np.mean(list(binary.values()))), fg_iou=float(binary.get(1, 0.0)))
    cls_clf, ok_cls = _fit_logistic(xtr, ytr, C, max_iter)
    cls_pred = cls_clf.predict(xte)
    per_class = iou_scores(cls_pred, yte, np.unique(np.concatenate([ytr, yte])))
    out.update(class_miou=float(np.mean(list(per_class.values()))), dense_converged=ok_fg and ok_cls)
    if predictions is not None:
        def full(pred):  # back onto the (B, N) grid, unscored patches marked
            grid = np.full(keep_te.shape, IGNORE_LABEL, dtype=np.int64)
            grid[keep_te] = pred
            return grid.reshape(shape)
        predictions["class"] = full(cls_pred)
        if "fg_iou" in out:
            predictions["fg_bg"] = full(fg_pred)
    return out


def constant_label_scores(train_labels: torch.Tensor, test_labels: torch.Tensor) -> dict:
    """The dense probe's numbers for a rule predicting the train set's most frequent patch label
    everywhere, scored exactly as :func:`dense_probe` scores (same classes, ignored patches left out)."""
    from .segmentation import IGNORE_LABEL
    ytr, yte = train_labels.reshape(-1).numpy(), test_labels.reshape(-1).numpy()
    ytr, yte = ytr[ytr != IGNORE_LABEL], yte[yte != IGNORE_LABEL]
    label = int(np.bincount(ytr).argmax())
    pred = np.full_like(yte, label)
    out = {"label": label}
    if len(np.unique(ytr > 0)) == 2:
        binary = iou_scores((pred > 0).astype(int), (yte > 0).astype(int), (0, 1))
        out.update(fg_bg_miou=float(np.mean(list(binary.values()))), fg_iou=float(binary.get(1, 0.0)))
    per_class = iou_scores(pred, yte, np.unique(np.concatenate([ytr, yte])))
    out["class_miou"] = float(np.mean(list(per_class.values())))
    return out


def raw_pixel_tokens(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Raw-pixel baseline for the dense probe: (B, C, H, W) -> per-patch pixels (B, N, C*p*p) in [0, 1]."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    B, C, H, W = x.shape
    g = H // patch
    x = x[:, :, :g * patch, :g * patch].reshape(B, C, g, patch, g, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, g * g, C * patch * patch)
