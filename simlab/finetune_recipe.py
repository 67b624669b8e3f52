"""The fine-tuning recipe: :class:`FinetuneConfig`, its validation, and the named presets.

``paper`` is the protocol of SIM_SPEC.md section 5 (MAE's ``main_finetune.py``): AdamW with
layer-wise lr decay 0.65, weight decay 0.05, linear warmup then cosine to ``min_lr``, drop path
0.1, RandAugment ``rand-m9-mstd0.5-inc1``, random erasing 0.25, mixup 0.8 and cutmix 1.0 with
label smoothing 0.1; ``demo`` and ``tiny`` scale it down for CPUs and tests.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Callable, Optional

from .config import ConfigError, apply_overrides
from .validation import _check, _check_prob

@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run is defined by (and a few execution-only fields)."""

    dataset: Optional[str] = None        # labelled dataset (None: the checkpoint's pretraining dataset)
    data_root: Optional[str] = None
    train_size: Optional[int] = None     # first N train images (None: all; shapes: its pool size)
    val_size: Optional[int] = None       # first N validation (test split) images (None: all)
    batch_size: int = 1024
    epochs: float = 100
    steps: Optional[int] = None          # overrides epochs when set
    blr: float = 2.5e-4                  # lr = blr * batch_size / 256 unless lr is set
    lr: Optional[float] = None
    min_lr: float = 1e-6
    warmup_epochs: float = 5
    weight_decay: float = 0.05
    layer_decay: float = 0.65
    drop_path: float = 0.1
    label_smoothing: float = 0.1
    mixup: float = 0.8                   # mixup alpha (0: off)
    cutmix: float = 1.0                  # cutmix alpha (0: off)
    randaug: str = "rand-m9-mstd0.5-inc1"  # timm auto-augment policy ('' : none)
    reprob: float = 0.25                 # random erasing probability
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_pct: float = 0.875              # evaluation: resize to size / crop_pct, centre-crop
    clip_grad: Optional[float] = None
    seed: int = 0
    random_init: Optional[int] = None    # fine-tune a fresh encoder of the checkpoint's architecture (baseline)
    # execution only
    device: str = "auto"
    precision: str = "auto"
    num_workers: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    progress: bool = True
    # micro-batches per optimizer step on each rank: batch_size = ranks x accum_steps x micro-batch.
    # The classifier has no batch statistics, so this changes memory, not the maths (up to rounding)
    accum_steps: int = 1
    dist_timeout: float = 60.0           # seconds a collective may wait on a peer before failing

    EXECUTION_FIELDS = ("data_root", "device", "precision", "num_workers", "log_every", "checkpoint_every",
                        "keep_checkpoints", "progress", "accum_steps", "dist_timeout")

    def validate(self) -> "FinetuneConfig":
        for name in ("batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "accum_steps"):
            _check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _check(self.batch_size % self.accum_steps == 0, "accum_steps",
               f"must divide batch_size={self.batch_size}, got {self.accum_steps}")
        _check(self.dist_timeout > 0, "dist_timeout", f"must be positive, got {self.dist_timeout}")
        _check(self.steps is None or self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        _check(self.epochs > 0, "epochs", f"must be positive, got {self.epochs}")
        _check(self.blr > 0, "blr", f"must be positive, got {self.blr}")
        _check(self.lr is None or self.lr > 0, "lr", f"must be positive, got {self.lr}")
        _check(0 <= self.min_lr, "min_lr", f"must be >= 0, got {self.min_lr}")
        _check(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(0 < self.layer_decay <= 1, "layer_decay", f"must be in (0, 1], got {self.layer_decay}")
        _check(0 <= self.drop_path < 1, "drop_path", f"must be in [0, 1), got {self.drop_path}")
        _check(0 <= self.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        _check(self.mixup >= 0 and self.cutmix >= 0, "mixup", "mixup and cutmix alphas must be >= 0")
        _check_prob(self.reprob, "reprob")
        _check(0 < self.crop_pct <= 1, "crop_pct", f"must be in (0, 1], got {self.crop_pct}")
        _check(len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1, "crop_scale",
               f"must be 0 < low <= high <= 1, got {self.crop_scale}")
        _check(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        _check(self.precision in ("auto", "fp32", "bf16", "fp16"), "precision",
               f"must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        return self

    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else self.blr * self.batch_size / 256

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def defining_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
                if k not in self.EXECUTION_FIELDS}


def _paper() -> FinetuneConfig:
    return FinetuneConfig()


def _demo() -> FinetuneConfig:
    """A few CPU minutes on ``shapes``: the paper's recipe with a lighter RandAugment and shorter schedule."""
    return FinetuneConfig(train_size=10_000, val_size=2_000, batch_size=128, steps=300, lr=1e-3, warmup_epochs=0.5,
                          randaug="rand-m5-mstd0.5-inc1", mixup=0.2, cutmix=0.0, reprob=0.1, crop_scale=(0.35, 1.0),
                          drop_path=0.05, log_every=10, checkpoint_every=100)


def _tiny() -> FinetuneConfig:
    """For tests: no mixup, RandAugment or erasing; tens of steps."""
    return FinetuneConfig(train_size=2_000, val_size=500, batch_size=64, steps=80, lr=1e-3, warmup_epochs=0.2,
                          randaug="", mixup=0.0, cutmix=0.0, reprob=0.0, crop_scale=(0.5, 1.0), drop_path=0.0,
                          label_smoothing=0.1, log_every=5, checkpoint_every=20, progress=False)


FINETUNE_PRESETS: dict[str, Callable[[], FinetuneConfig]] = {"paper": _paper, "demo": _demo, "tiny": _tiny}


def finetune_config(preset: str = "paper", overrides=(), **named) -> FinetuneConfig:
    """A preset, then named values that are not None, then ``key=value`` overrides, validated."""
    if preset not in FINETUNE_PRESETS:
        raise ConfigError(f"preset: unknown fine-tuning preset {preset!r}; choose one of {', '.join(FINETUNE_PRESETS)}")
    cfg = FINETUNE_PRESETS[preset]()
    apply_overrides(cfg, {k: v for k, v in named.items() if v is not None})
    if named.get("epochs") is not None and named.get("steps") is None:
        cfg.steps = None
    apply_overrides(cfg, list(overrides))
    return cfg.validate()
