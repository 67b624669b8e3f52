"""A pretrained checkpoint as users name it (a file, a run folder: its newest valid checkpoint, or
nothing: the demo checkpoint shipped in the repository) and the encoder it holds (``load_encoder``,
DESIGN.md's public contract).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from .checkpoint_io import CheckpointError, load_checkpoint, newest_valid
from .config import Config

# The trained demo checkpoint committed with the repository (README "What the demo learns").
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "data" / "checkpoints" / "sim_demo_long.pt"


def resolve_checkpoint(path=None) -> Path:
    """A checkpoint file from a file, a run folder (its newest valid checkpoint) or None (the shipped
    demo checkpoint); a clear error when there is none. The one rule of every place that takes a
    checkpoint (``load_encoder``, ``simlab probe``, ``simlab export``, fine-tuning, the notebooks)."""
    return _resolve_and_load(path, load=False)[0]


def _resolve_and_load(path, load: bool = True) -> tuple[Path, Optional[dict]]:
    """:func:`resolve_checkpoint` and, with ``load``, the loaded checkpoint (a run folder's is loaded
    once, while its newest valid checkpoint is found)."""
    if path is None:
        path = SHIPPED_CHECKPOINT
    path = Path(path)
    if path.is_dir():
        found = newest_valid(path, log=lambda *_: None)
        if found is None:
            raise CheckpointError(f"{path}: no valid checkpoint in {path / 'checkpoints'}")
        return found
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    return path, (load_checkpoint(path) if load else None)


def config_of(ckpt: dict) -> Config:
    return Config.from_dict(json.loads(ckpt["config"]))


def load_encoder(path) -> torch.nn.Module:
    """The pretrained online encoder of a simlab checkpoint (a file, or a run folder: its newest
    valid checkpoint), in eval mode, on CPU.

    It carries ``encoder.preprocess`` (input_size, in_chans, mean, std,
    interpolation); ``encoder.forward_features(x)`` takes a normalised batch at
    ``input_size`` and returns all tokens (B, 1 + N, D) without a final norm.
    """
    if path is None:
        raise CheckpointError("load_encoder: give a checkpoint file or a run folder")
    _, ckpt = _resolve_and_load(path)
    encoder = build_encoder(config_of(ckpt), ckpt["preprocess"])
    prefix = "encoder."
    encoder.load_state_dict({k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)})
    return encoder


def build_encoder(cfg: Config, preprocess: dict) -> torch.nn.Module:
    """A freshly initialised encoder of a run's architecture, in eval mode, carrying
    ``preprocess`` and ``config`` (MAE's keeps its final norm)."""
    from .vit import Encoder
    m = cfg.model
    encoder = Encoder(preprocess["input_size"], m.patch_size, preprocess["in_chans"], m.embed_dim, m.depth,
                      m.num_heads, m.mlp_ratio, final_norm=cfg.train.objective == "mae")
    encoder.preprocess, encoder.config = dict(preprocess), cfg
    return encoder.eval()
