"""Segmentation sets for the dense probe (Pascal VOC 2012, ADE20K): image/mask pairs read from disk,
their masks in simlab's convention (0 = background, class + 1 = object, ``IGNORE_LABEL`` = not scored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .dataset_base import DatasetNotFound, ImageDataset
from .image_files import BadImageError, FileImages, decode_image

IGNORE_LABEL = 255  # mask value of pixels no probe scores (VOC's object borders, ADE20K's "other")


class SegmentationDataset(FileImages, ImageDataset):
    """Images with per-pixel class masks (Pascal VOC 2012, ADE20K), in simlab's mask convention:
    0 = background, class + 1 = object, :data:`IGNORE_LABEL` = not scored. Each image's ``label`` is
    its dominant class (the most frequent object class of its mask; 0 when it has none), so the
    global probes run too; the dense probe is what these sets are for."""

    def __init__(self, name: str, pairs: list[tuple[Path, Path]], class_names: list[str], remap):
        if not pairs:
            raise DatasetNotFound(f"{name}: no image/mask pairs found")
        self.name, self.pairs, self.class_names, self._remap = name, pairs, class_names, remap
        self.num_classes, self.has_masks = len(class_names), True

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image
        image_path, mask_path = self.pairs[i]
        image = decode_image(image_path)
        try:
            with Image.open(mask_path) as m:
                raw = np.asarray(m if m.mode in ("P", "L") else m.convert("L"), dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as e:
            raise BadImageError(mask_path, f"{type(e).__name__}: {e}") from None
        mask = torch.from_numpy(self._remap(raw).astype(np.uint8))
        if tuple(mask.shape) != tuple(image.shape[-2:]):
            raise BadImageError(mask_path, f"mask {tuple(mask.shape)} does not match its image "
                                           f"{tuple(image.shape[-2:])}")
        objects = mask[(mask > 0) & (mask != IGNORE_LABEL)].long()
        label = int(torch.bincount(objects).argmax()) - 1 if objects.numel() else 0
        return {"image": image, "label": max(label, 0), "mask": mask, "index": i}


VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]


def voc(split: str, data_root: Optional[str]) -> SegmentationDataset:
    """Pascal VOC 2012 segmentation (``train`` -> its train list, ``test`` -> val) through torchvision's
    loader, from ``data_root`` holding ``VOCdevkit/VOC2012``. VOC's values already follow simlab's
    convention (0 background, 1..20 objects, 255 borders)."""
    from torchvision.datasets import VOCSegmentation
    if data_root is None:
        raise DatasetNotFound("voc: pass --data-root with the folder that holds VOCdevkit/VOC2012")
    image_set = "train" if split == "train" else "val"
    try:
        tv = VOCSegmentation(data_root, year="2012", image_set=image_set, download=False)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        raise DatasetNotFound(f"voc: not found under {data_root} (expected VOCdevkit/VOC2012 with "
                              f"ImageSets/Segmentation/{image_set}.txt; {e})") from None
    return SegmentationDataset("voc", [(Path(a), Path(b)) for a, b in zip(tv.images, tv.masks)], VOC_CLASSES,
                               lambda raw: raw)


def ade20k(split: str, data_root: Optional[str]) -> SegmentationDataset:
    """ADE20K scene parsing (``ADEChallengeData2016``: ``images/{training,validation}/*.jpg`` and
    ``annotations/{...}/*.png``; ``train`` -> training, ``test`` -> validation). Its 150 classes are
    1..150 as in simlab's convention; its 0 ("other") is not scored. It has no background class."""
    if data_root is None:
        raise DatasetNotFound("ade20k: pass --data-root with ADEChallengeData2016 (or its parent folder)")
    root = Path(data_root)
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    sub = "training" if split == "train" else "validation"
    images, annotations = root / "images" / sub, root / "annotations" / sub
    if not images.is_dir() or not annotations.is_dir():
        raise DatasetNotFound(f"ade20k: expected {images} and {annotations}")
    pairs = [(p, annotations / (p.stem + ".png")) for p in sorted(images.glob("*.jpg"))
             if (annotations / (p.stem + ".png")).is_file()]
    names = [f"class_{k}" for k in range(1, 151)]
    objects_info = root / "objectInfo150.csv"
    if objects_info.is_file():  # the release's class names, where present
        rows = objects_info.read_text().splitlines()[1:]
        names = [row.split(",")[-1].split(";")[0].strip() for row in rows][:150] or names
    return SegmentationDataset("ade20k", pairs, names, lambda raw: np.where(raw == 0, IGNORE_LABEL, raw))
