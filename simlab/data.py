"""Datasets by name: the embedded ``shapes`` set, Fashion-MNIST, CIFAR, STL-10, image folders and
segmentation sets, built by :func:`build_dataset`.

Every dataset follows :class:`simlab.dataset_base.ImageDataset` (items as dicts, ``tensors()``
for small sets). A missing dataset raises :class:`DatasetNotFound` naming the place looked at and
how to get the data; nothing is downloaded unless the user asks (``download=True``). Image files
and their bad-image policy live in :mod:`simlab.image_files`, VOC and ADE20K in
:mod:`simlab.segmentation`; this module stays the public place for all their names.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .data_config import DATASET_NAMES
from . import shapes
from .dataset_base import DatasetNotFound, ImageDataset, TensorImageDataset
from .image_files import (BAD_IMAGE_POLICIES, IMAGE_SUFFIXES, BadImageError, FileImages, ImageFolderDataset,
                          decode_image)
from .segmentation import IGNORE_LABEL, VOC_CLASSES, SegmentationDataset, ade20k, voc

# the public place for every dataset name, those defined in the modules above included
__all__ = ["FASHION_MNIST_DIR", "FASHION_MNIST_THRESHOLD", "DatasetNotFound", "ImageDataset", "TensorImageDataset",
           "ShapesDataset", "fashion_mnist", "BAD_IMAGE_POLICIES", "IMAGE_SUFFIXES", "BadImageError", "FileImages",
           "ImageFolderDataset", "decode_image", "IGNORE_LABEL", "VOC_CLASSES", "SegmentationDataset", "voc",
           "ade20k", "DATASETS", "build_dataset"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_MNIST_THRESHOLD = 25  # grey level (of 255) above which a pixel counts as garment


class ShapesDataset(ImageDataset):
    """The embedded procedural dataset (``simlab.shapes``), generated on the fly.

    ``train`` and ``test`` are disjoint streams: same generator, different seeds.
    """

    name = "shapes"
    has_masks = True
    class_names = list(shapes.CLASSES)
    _CHUNK = 128  # images rendered per call: fastest on a CPU core

    def __init__(self, split: str = "train", size: int = 50_000, image_size: int = 32,
                 seed: int = 0, num_classes: int = 10, distractors: int = 0):
        if split not in ("train", "test"):
            raise ValueError(f"shapes: split must be 'train' or 'test', got {split!r}")
        self.split, self.size, self.image_size = split, size, image_size
        self.seed = 2 * seed + (split == "test")
        self.num_classes, self.distractors = num_classes, distractors
        self._cache: Optional[dict] = None

    def __len__(self) -> int:
        return self.size

    def render(self, indices) -> shapes.ShapesBatch:
        return shapes.render(indices, self.image_size, self.seed, self.num_classes, self.distractors)

    def __getitem__(self, i: int) -> dict:
        if self._cache is not None:
            return {"image": self._cache["images"][i], "label": int(self._cache["labels"][i]),
                    "mask": self._cache["masks"][i], "index": i}
        b = self.render(torch.tensor([i]))
        return {"image": b.images[0], "label": int(b.labels[0]), "mask": b.masks[0], "index": i}

    def tensors(self) -> dict[str, torch.Tensor]:
        if self._cache is None:
            parts = [self.render(torch.arange(s, min(s + self._CHUNK, self.size)))
                     for s in range(0, self.size, self._CHUNK)]
            self._cache = {"images": torch.cat([p.images for p in parts]),
                           "labels": torch.cat([p.labels for p in parts]),
                           "masks": torch.cat([p.masks for p in parts])}
        return self._cache


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not): the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_fashion_mnist(data_root: Optional[str], download: bool) -> Path:
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    candidates = [Path(data_root)] if data_root else [FASHION_MNIST_DIR]
    if data_root:  # torchvision's layout under a root
        candidates.append(Path(data_root) / "FashionMNIST" / "raw")
    for folder in candidates:
        if all((folder / s).exists() or (folder / f"{s}.gz").exists() for s in stems):
            return folder
    if download:
        import torchvision
        root = data_root or os.path.join(os.path.expanduser("~"), ".cache", "simlab")
        torchvision.datasets.FashionMNIST(root, train=True, download=True)
        torchvision.datasets.FashionMNIST(root, train=False, download=True)
        return Path(root) / "FashionMNIST" / "raw"
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetNotFound(
        f"fashion-mnist: no IDX files found in {looked}. Install them with "
        f"'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), pass --data-root to a folder "
        f"holding train-images-idx3-ubyte.gz etc., or add --set download=true to fetch them with torchvision.")


def fashion_mnist(split: str, data_root: Optional[str] = None, download: bool = False) -> TensorImageDataset:
    """Fashion-MNIST (28x28 grey, 10 classes). Masks: label + 1 where the pixel > 25/255, else 0."""
    folder = _find_fashion_mnist(data_root, download)
    prefix = "train" if split == "train" else "t10k"

    def load(stem: str) -> np.ndarray:
        path = folder / f"{stem}.gz" if (folder / f"{stem}.gz").exists() else folder / stem
        return _read_idx(path)

    images = torch.from_numpy(load(f"{prefix}-images-idx3-ubyte").copy())[:, None]  # (N, 1, 28, 28)
    labels = torch.from_numpy(load(f"{prefix}-labels-idx1-ubyte").astype(np.int64))
    masks = torch.where(images[:, 0] > FASHION_MNIST_THRESHOLD, (labels + 1)[:, None, None], 0).to(torch.uint8)
    ds = TensorImageDataset(images, labels, masks)
    ds.name, ds.num_classes = "fashion-mnist", 10
    ds.mean, ds.std = (0.2860,), (0.3530,)
    ds.class_names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    return ds


def _torchvision(name: str, split: str, data_root: Optional[str], download: bool) -> TensorImageDataset:
    import torchvision
    if data_root is None:
        raise DatasetNotFound(f"{name}: pass --data-root with the torchvision folder of {name} "
                              f"(add --set download=true to let torchvision download it there)")
    try:
        if name in ("cifar10", "cifar100"):
            cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
            tv = cls(data_root, train=(split == "train"), download=download)
            images = torch.from_numpy(tv.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
            labels, classes = torch.tensor(tv.targets), tv.classes
        else:  # stl10: 'train' is labelled, 'unlabeled' has label -1
            tv = torchvision.datasets.STL10(data_root, split=split, download=download)
            images, labels, classes = torch.from_numpy(tv.data), torch.from_numpy(tv.labels.astype(np.int64)), tv.classes
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise DatasetNotFound(f"{name}: not found under {data_root} ({e}); add --set download=true "
                              f"to let torchvision download it there") from None
    ds = TensorImageDataset(images, labels)
    ds.name, ds.num_classes, ds.class_names = name, len(classes), list(classes)
    return ds


DATASETS = DATASET_NAMES


def build_dataset(name: str, split: str = "train", data_root: Optional[str] = None, *,
                  image_size: int = 32, size: Optional[int] = None, seed: int = 0,
                  download: bool = False, distractors: int = 0, on_bad_image: str = "skip") -> ImageDataset:
    """Build a dataset by name. ``split`` is 'train' or 'test' ('unlabeled' for stl10).

    ``size`` sets the number of ``shapes`` images (default 50k train, 10k test);
    ``image_size`` is the side at which ``shapes`` renders (other datasets keep
    their native size: views are resampled from it). ``on_bad_image`` is the
    image folder's policy for files that do not decode ("skip" or "fail").
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "shapes":
        default = 50_000 if split == "train" else 10_000
        return ShapesDataset(split, size or default, image_size, seed, distractors=distractors)
    if name == "fashion-mnist":
        return fashion_mnist(split, data_root, download)
    if name in ("cifar10", "cifar100", "stl10"):
        return _torchvision(name, split, data_root, download)
    if name == "voc":
        return voc(split, data_root)
    if name == "ade20k":
        return ade20k(split, data_root)
    if data_root is None:
        raise DatasetNotFound("imagefolder: pass --data-root with the folder of images")
    # ImageNet-style roots hold one folder per split
    for sub in (("train",) if split == "train" else ("val", "test")):
        if (Path(data_root) / sub).is_dir():
            return ImageFolderDataset(str(Path(data_root) / sub), on_bad_image)
    return ImageFolderDataset(data_root, on_bad_image)
