"""The data sections of a run's config: which images, at which size, from where (:class:`DataConfig`),
and SiM's asymmetric two-view augmentation (:class:`AugConfig`, SIM_SPEC.md section 4), each with
its validation. :mod:`simlab.config` assembles them into a run's :class:`~simlab.config.Config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .validation import ConfigError, _check, _check_prob, _check_range

# The datasets simlab.data can build (DESIGN.md "Datasets").
DATASET_NAMES = ("shapes", "fashion-mnist", "cifar10", "cifar100", "stl10", "imagefolder", "voc", "ade20k")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataConfig:
    """Which images, at which size, from where."""

    dataset: str = "shapes"              # shapes | fashion-mnist | cifar10 | cifar100 | stl10 | imagefolder | voc | ade20k
    data_root: Optional[str] = None      # folder of the data (None: the dataset's default place)
    image_size: int = 32                 # side of each view in pixels (views are square)
    train_size: Optional[int] = None     # shapes: images in the pool; others: a subsample (None: all)
    download: bool = False               # let torchvision download cifar/stl/fashion-mnist into data_root
    num_workers: int = 0                 # data-loader processes (execution only)
    distractors: int = 0                 # shapes: up to this many small extra objects per image (0..4)
    on_bad_image: str = "skip"           # imagefolder files that do not decode: skip and list them | fail
    # where the two views are cropped and coloured: the loader's CPU workers, or the training device
    # (the loader then only reads uint8 images and samples boxes); auto: device on CUDA, loader on CPU
    augment_on: str = "auto"

    def validate(self) -> None:
        _check(self.dataset in DATASET_NAMES, "dataset",
               f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASET_NAMES)}")
        _check(self.image_size >= 4, "image_size", f"must be >= 4 pixels, got {self.image_size}")
        _check(self.train_size is None or self.train_size > 0, "train_size",
               f"must be positive, got {self.train_size}")
        _check(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        _check(0 <= self.distractors <= 4, "distractors", f"must be in 0..4, got {self.distractors}")
        _check(self.augment_on in ("auto", "loader", "device"), "augment_on",
               f"must be auto, loader or device, got {self.augment_on!r}")
        _check(self.on_bad_image in ("skip", "fail"), "on_bad_image",
               f"must be 'skip' or 'fail', got {self.on_bad_image!r}")


@dataclass
class AugConfig:
    """SiM's asymmetric two-view augmentation (SIM_SPEC.md section 4).

    Pairs ``(view1, view2)`` give per-view probabilities: the masked online view
    is always blurred and never solarised, the target view the reverse (BYOL).
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)   # SiM's pretrain config (its argparse default is 0.2)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5                  # per view, independent
    jitter_p: float = 0.8                # ColorJitter(0.4, 0.4, 0.2, 0.1) applied with this probability
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: tuple[float, float] = (1.0, 0.1)
    # Gaussian blur sigma range in pixels of the view. None scales SiM's [0.1, 2.0]
    # at 224 px to image_size, so the blur removes the same fraction of the
    # spectrum. Below ~64 px the upper end is under half a pixel, so the
    # asymmetry between the views (blur vs solarise) weakens there.
    blur_sigma: Optional[tuple[float, float]] = None
    solarize_p: tuple[float, float] = (0.0, 0.2)
    mean: Optional[tuple[float, ...]] = None  # normalisation (None: the dataset's, ImageNet's for RGB)
    std: Optional[tuple[float, ...]] = None

    def validate(self) -> None:
        _check_range(self.crop_scale, "crop_scale", 1e-4, 1.0)
        _check_range(self.crop_ratio, "crop_ratio", 1e-2, 1e2)
        for name in ("flip_p", "jitter_p", "grayscale_p"):
            _check_prob(getattr(self, name), name)
        for name in ("blur_p", "solarize_p"):
            pair = getattr(self, name)
            _check(len(pair) == 2, name, f"must be a pair (view1, view2), got {pair!r}")
            for p in pair:
                _check_prob(p, name)
        for name in ("brightness", "contrast", "saturation"):
            _check(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        _check(0 <= self.hue <= 0.5, "hue", f"must be in [0, 0.5], got {self.hue}")
        if self.blur_sigma is not None:
            _check_range(self.blur_sigma, "blur_sigma", 1e-6, 1e3)
        if (self.mean is None) != (self.std is None):
            raise ConfigError("mean/std: give both or neither")
        if self.std is not None:
            _check(len(self.mean) == len(self.std), "std", "must have as many values as mean")
            _check(all(s > 0 for s in self.std), "std", f"must be positive, got {self.std}")

    def sigma_range(self, image_size: int) -> tuple[float, float]:
        """Blur sigma range in pixels for views of side ``image_size``."""
        if self.blur_sigma is not None:
            return tuple(self.blur_sigma)
        return (0.1 * image_size / 224, 2.0 * image_size / 224)
