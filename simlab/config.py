"""Dataclass configs, their validation and ``key=value`` overrides.

A run is described by one :class:`Config` made of sections (data, augmentation,
...). Every leaf field name is unique across sections, so an override may name a
field plainly (``crop_scale=0.2,1``) or with its section (``aug.crop_scale=...``).
Values are parsed by the field's declared type and checked by the section's
``validate``; every error names the field (nanoGPT's flat config, made typed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


def _check(ok: bool, name: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {msg}")


def _check_prob(value: float, name: str) -> None:
    _check(0.0 <= value <= 1.0, name, f"must be a probability in [0, 1], got {value!r}")


def _check_range(pair: tuple, name: str, lo: float, hi: float) -> None:
    _check(len(pair) == 2, name, f"must be a pair (low, high), got {pair!r}")
    _check(lo <= pair[0] <= pair[1] <= hi, name,
           f"must satisfy {lo} <= low <= high <= {hi}, got {pair!r}")


# The datasets simlab.data can build (DESIGN.md "Datasets").
DATASET_NAMES = ("shapes", "fashion-mnist", "cifar10", "cifar100", "stl10", "imagefolder")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataConfig:
    """Which images, at which size, from where."""

    dataset: str = "shapes"              # shapes | fashion-mnist | cifar10 | cifar100 | stl10 | imagefolder
    data_root: Optional[str] = None      # folder of the data (None: the dataset's default place)
    image_size: int = 32                 # side of each view in pixels (views are square)
    train_size: Optional[int] = None     # shapes: images in the pool; others: a subsample (None: all)
    download: bool = False               # let torchvision download cifar/stl/fashion-mnist into data_root
    num_workers: int = 0                 # data-loader processes (execution only)
    distractors: int = 0                 # shapes: up to this many small extra objects per image (0..4)

    def validate(self) -> None:
        _check(self.dataset in DATASET_NAMES, "dataset",
               f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASET_NAMES)}")
        _check(self.image_size >= 4, "image_size", f"must be >= 4 pixels, got {self.image_size}")
        _check(self.train_size is None or self.train_size > 0, "train_size",
               f"must be positive, got {self.train_size}")
        _check(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        _check(0 <= self.distractors <= 4, "distractors", f"must be in 0..4, got {self.distractors}")


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


@dataclass
class Config:
    """Everything that describes a run."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)

    def validate(self) -> "Config":
        for section in _sections(self):
            getattr(self, section).validate()
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        cfg = cls()
        for key, value in d.items():
            if dataclasses.is_dataclass(getattr(cfg, key, None)):
                for k, v in value.items():
                    set_field(cfg, f"{key}.{k}", v)
            else:
                set_field(cfg, key, value)
        return cfg


def _sections(cfg: Config) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]


def _locate(cfg: Config, key: str) -> tuple[Any, dataclasses.Field]:
    """The dataclass holding ``key`` (``name`` or ``section.name``) and its field."""
    if "." in key:
        section, name = key.split(".", 1)
        owners = [getattr(cfg, section)] if section in _sections(cfg) else []
    else:
        name = key
        owners = [cfg] + [getattr(cfg, s) for s in _sections(cfg)]
    for owner in owners:
        for f in dataclasses.fields(owner):
            if f.name == name and not dataclasses.is_dataclass(getattr(owner, name)):
                return owner, f
    known = sorted(all_field_names(cfg))
    raise ConfigError(f"{key}: unknown setting; known settings are: {', '.join(known)}")


def all_field_names(cfg: Config) -> list[str]:
    names = [f.name for f in dataclasses.fields(cfg) if f.name not in _sections(cfg)]
    for s in _sections(cfg):
        names += [f.name for f in dataclasses.fields(getattr(cfg, s))]
    return names


def _parse(tp: Any, raw: Any, name: str) -> Any:
    """Convert ``raw`` (a string from the command line, or a JSON/Python value) to type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _parse(inner[0], raw, name)
    if origin is tuple:
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        inner = args[0]
        return tuple(_parse(inner, x.strip() if isinstance(x, str) else x, name) for x in items)
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(raw, str) and raw.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true or false, got {raw!r}")
    if tp is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}")
        try:
            return int(raw) if not isinstance(raw, str) else int(raw.replace("_", ""))
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if tp is float:
        if isinstance(raw, bool):
            raise ConfigError(f"{name}: expected a number, got {raw!r}")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{name}: must be a finite number, got {raw!r}")
        return value
    if tp is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{name}: expected a string, got {raw!r}")
        return raw
    raise ConfigError(f"{name}: cannot parse values of type {tp}")


def set_field(cfg: Config, key: str, raw: Any) -> None:
    """Set one field from a raw value, parsed by the field's type."""
    owner, f = _locate(cfg, key)
    hints = typing.get_type_hints(type(owner))
    setattr(owner, f.name, _parse(hints[f.name], raw, f.name))


def apply_overrides(cfg: Config, overrides: list[str] | dict[str, Any]) -> Config:
    """Apply ``key=value`` strings (or a mapping) to ``cfg`` in place and return it."""
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    for key, value in items:
        set_field(cfg, key.strip(), value)
    return cfg


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"{item}: an override must look like key=value")
    key, value = item.split("=", 1)
    return key, value
