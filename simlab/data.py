"""Datasets: the embedded ``shapes`` set, Fashion-MNIST, CIFAR, STL-10 and image folders.

Every dataset yields dicts ``{"image": uint8 (C, H, W), "label": int (-1 when
unlabeled), "index": int}`` plus ``"mask": uint8 (H, W)`` where it has masks
(DESIGN.md "Datasets"). Small datasets also hand out all their images at once
as uint8 tensors (``tensors()``), which training and probes use to skip
per-sample loading. A missing dataset raises :class:`DatasetNotFound` naming
the place looked at and how to get the data; nothing is downloaded unless the
user asks (``download=True``).
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import DATASET_NAMES, IMAGENET_MEAN, IMAGENET_STD
from . import shapes

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_MNIST_THRESHOLD = 25  # grey level (of 255) above which a pixel counts as garment
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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


BAD_IMAGE_POLICIES = ("skip", "fail")


class BadImageError(ValueError):
    """An image file that cannot be decoded (cut, empty, not an image, or a decompression bomb)."""

    def __init__(self, path, reason: Optional[str] = None):
        # one argument: the message as re-raised from a data-loader worker
        super().__init__(f"{path}: {reason}" if reason is not None else str(path))
        self.path, self.reason = str(path), reason


def _to_rgb(im) -> np.ndarray:
    """(H, W, 3) uint8 of a decoded Pillow image of any mode."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale: Pillow's own convert would clip at 255; scale the 0..65535 range instead
        wide = np.asarray(im).astype(np.int64)
        grey = ((wide.clip(0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA")  # palettes with transparency go through RGBA (Pillow warns otherwise)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def decode_image(path) -> torch.Tensor:
    """uint8 (3, H, W) of an image file, upright (EXIF orientation applied); raises :class:`BadImageError`.

    Pillow's decompression-bomb guard stays on: a header that declares more than
    twice ``Image.MAX_IMAGE_PIXELS`` is refused before any pixel is decoded.
    """
    import zlib

    from PIL import Image, ImageOps
    try:
        with Image.open(path) as im:
            im.load()  # a cut file fails here, not later in a worker
            array = _to_rgb(ImageOps.exif_transpose(im))
    except Image.DecompressionBombError as e:
        raise BadImageError(path, f"decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as e:  # UnidentifiedImageError is an OSError
        raise BadImageError(path, f"{type(e).__name__}: {e}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


class FileImages:
    """Mixin of datasets read file by file: ``verify`` decodes every item (``check(i)``, by default
    loading it) and lists the files that fail."""

    def check(self, i: int) -> None:
        self[i]

    def verify(self, progress: bool = False) -> list[tuple[str, str]]:
        """``(path, reason)`` of every file that does not decode, in order."""
        from tqdm.auto import tqdm
        bad = []
        for i in tqdm(range(len(self)), desc="verify", unit="item", disable=not progress):
            try:
                self.check(i)
            except BadImageError as e:
                bad.append((e.path, e.reason))
        return bad


class ImageFolderDataset(FileImages, ImageDataset):
    """A folder of class sub-folders (``root/cls/x.jpg``), or a flat folder of unlabeled images.

    A file that does not decode is skipped under ``on_bad_image="skip"``: the
    sample is replaced by the next one that decodes (so batches keep their size
    and a resumed run sees the same data) and reported in the item's
    ``"skipped"`` list, which training writes to the run folder. Under
    ``"fail"`` it raises :class:`BadImageError` naming the file.
    """

    name = "imagefolder"

    def __init__(self, root: str, on_bad_image: str = "skip"):
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
        self.root, self.on_bad_image = Path(root), on_bad_image
        if not self.root.is_dir():
            raise DatasetNotFound(f"imagefolder: {self.root} is not a folder")
        subdirs = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        if subdirs:
            self.class_names = subdirs
            self.samples = [(p, k) for k, d in enumerate(subdirs) for p in sorted((self.root / d).rglob("*"))
                            if p.suffix.lower() in IMAGE_SUFFIXES]
            self.num_classes = len(subdirs)
        else:
            self.samples = [(p, -1) for p in sorted(self.root.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not self.samples:
            raise DatasetNotFound(f"imagefolder: no images ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        skipped = []
        for k in range(len(self.samples)):
            j = (i + k) % len(self.samples)
            path, label = self.samples[j]
            try:
                image = decode_image(path)
            except BadImageError as e:
                if self.on_bad_image == "fail":
                    raise BadImageError(e.path, f"{e.reason} (add --set on_bad_image=skip to skip bad "
                                                f"images and list them in the run folder)") from None
                skipped.append((e.path, e.reason))
                continue
            return {"image": image, "label": label, "index": i, "skipped": skipped}
        raise DatasetNotFound(f"imagefolder: none of the {len(self.samples)} images under {self.root} decodes")

    def check(self, i: int) -> None:
        decode_image(self.samples[i][0])  # the file itself: no stand-in


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
