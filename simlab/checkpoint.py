"""Checkpoints, the public place for every checkpoint name (DESIGN.md "Checkpoints" and its
``simlab.checkpoint.*`` contract; ``simlab.load_encoder`` comes from here).

Each job lives in a module named for it: :mod:`simlab.checkpoint_io` (schema, atomic writes with a
sha256, verified safe loads, a run's series of checkpoints), :mod:`simlab.checkpoint_state` (code
version, RNG states, preprocessing), :mod:`simlab.run_start` (the run-folder start rules),
:mod:`simlab.pretrained` (resolving a checkpoint, ``load_encoder``) and :mod:`simlab.export`
(slim copies, safetensors and timm exports).
"""

from __future__ import annotations

from .checkpoint_io import (FORMAT, SCHEMA, CheckpointError, checkpoint_path, list_checkpoints, load_checkpoint,
                            newest_valid, prune_checkpoints, save_atomic, save_step, sha256_of, why_unloadable)
from .checkpoint_state import code_version, preprocess_of, rng_state, set_rng_state
from .export import export_encoder_safetensors, export_encoder_timm, slim_copy, timm_state
from .pretrained import SHIPPED_CHECKPOINT, build_encoder, config_of, load_encoder, resolve_checkpoint
from .run_start import CleanFailedStart, check_run_folder

__all__ = ["FORMAT", "SCHEMA", "CheckpointError", "checkpoint_path", "list_checkpoints", "load_checkpoint",
           "newest_valid", "prune_checkpoints", "save_atomic", "save_step", "sha256_of", "why_unloadable",
           "code_version", "preprocess_of", "rng_state", "set_rng_state", "export_encoder_safetensors",
           "export_encoder_timm", "slim_copy", "timm_state", "SHIPPED_CHECKPOINT", "build_encoder", "config_of",
           "load_encoder", "resolve_checkpoint", "CleanFailedStart", "check_run_folder"]
