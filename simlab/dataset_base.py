"""The interface every simlab dataset follows, and the error for one that is not on disk.

Every dataset yields dicts ``{"image": uint8 (C, H, W), "label": int (-1 when
unlabeled), "index": int}`` plus ``"mask": uint8 (H, W)`` where it has masks
(DESIGN.md "Datasets"). Small datasets also hand out all their images at once
as uint8 tensors (``tensors()``), which training and probes use to skip
per-sample loading.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import Dataset

from .data_config import IMAGENET_MEAN, IMAGENET_STD

class DatasetNotFound(FileNotFoundError):
    """The dataset's files are not where simlab looked."""


class ImageDataset(Dataset):
    """Common interface of simlab's datasets."""

    name: str = ""
    in_chans: int = 3
    num_classes: Optional[int] = None
    has_masks: bool = False
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    class_names: Optional[list[str]] = None

    def tensors(self) -> dict[str, torch.Tensor]:
        """All samples at once: ``images`` (N, C, H, W) uint8, ``labels`` (N,) and ``masks`` if any."""
        raise NotImplementedError(f"{self.name}: images differ in size; load them one by one")


class TensorImageDataset(ImageDataset):
    """A dataset held in memory as uint8 tensors (every small dataset ends up as one)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, masks: Optional[torch.Tensor] = None):
        self.images, self.labels, self.masks = images, labels.long(), masks
        self.has_masks = masks is not None
        self.in_chans = images.shape[1]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        item = {"image": self.images[i], "label": int(self.labels[i]), "index": i}
        if self.masks is not None:
            item["mask"] = self.masks[i]
        return item

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"images": self.images, "labels": self.labels}
        if self.masks is not None:
            out["masks"] = self.masks
        return out
