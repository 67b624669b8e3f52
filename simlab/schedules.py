"""Per-step schedules, computed once as arrays (DINO's ``cosine_scheduler``; MAE's per-iteration lr).

The learning rate warms up linearly, then follows half a cosine down to ``min_lr``; SiM's target
momentum follows a cosine from ``ema_start`` to ``ema_end`` over the whole run
(``engine_pretrain.py``, SIM_SPEC.md section 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Config, ConfigError


def warmup_cosine(step, warmup: float, total: int, peak: float, min_lr: float):
    """MAE's per-iteration lr at ``step`` (a number or an array): linear warmup over ``warmup``
    steps (at most ``total - 1``), then half a cosine from ``peak`` down to ``min_lr``."""
    s = np.asarray(step, dtype=np.float64)
    warmup = min(warmup, total - 1)
    progress = np.clip((s - warmup) / max(total - warmup, 1), 0, 1)
    cosine = min_lr + (peak - min_lr) * 0.5 * (1 + np.cos(np.pi * progress))
    return np.where(s < warmup, peak * s / max(warmup, 1e-12), cosine)


@dataclass
class Schedule:
    """Per-step learning rate and target momentum for ``total`` steps."""

    lr: np.ndarray
    momentum: np.ndarray

    @classmethod
    def build(cls, cfg: Config, steps_per_epoch: int, total: int) -> "Schedule":
        t = cfg.train
        s = np.arange(total, dtype=np.float64)
        if t.warmup_epochs is not None:
            warmup = t.warmup_epochs * steps_per_epoch
        else:
            warmup = t.warmup_frac * total
        lr = warmup_cosine(s, warmup, total, t.peak_lr(), t.min_lr)
        # SiM's EMA: cosine from ema_start to ema_end over training
        momentum = t.ema_end - (t.ema_end - t.ema_start) * 0.5 * (1 + np.cos(np.pi * s / total))
        return cls(lr, momentum)


def run_length(cfg: Config, num_samples: int) -> tuple[int, int]:
    """(steps per epoch, total steps)."""
    spe = num_samples // cfg.train.batch_size
    if spe < 1:
        raise ConfigError(f"batch_size: {cfg.train.batch_size} exceeds the {num_samples} training samples")
    total = cfg.train.steps if cfg.train.steps is not None else max(1, int(round(cfg.train.epochs * spe)))
    return spe, total
