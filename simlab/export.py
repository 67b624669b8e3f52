"""A checkpoint's weights for sharing and for other toolkits (``simlab export``): a slim copy without
optimizer state, the encoder as safetensors under simlab's key names, or under timm's
``VisionTransformer`` names. An export never replaces a file silently and is written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .checkpoint_io import CheckpointError, _fsync_dir, save_atomic
from .pretrained import _resolve_and_load, load_encoder

def _check_export_target(dst, overwrite: bool) -> Path:
    """An export never replaces a file silently: refuse an existing ``dst`` unless ``overwrite``."""
    dst = Path(dst)
    if dst.is_dir():
        raise CheckpointError(f"{dst}: is a folder; give the file to write")
    if dst.exists() and not overwrite:
        raise CheckpointError(f"{dst}: exists; pass --force (overwrite=True) to replace it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    return dst


def _write_file_atomic(data: bytes, dst: Path) -> None:
    """``data`` into ``dst`` through a temporary file and ``os.replace``, with the permissions of
    any file this process creates (0666 less the umask; safetensors' own writer makes 0600 files)."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(dst.parent)


def slim_copy(src, dst, overwrite: bool = False) -> str:
    """A checkpoint for sharing: everything but the optimizer and scaler state (it cannot be
    resumed, but ``load_encoder``, the probes and the notebooks use it). ``src`` is a checkpoint
    or a run folder. Returns its sha256."""
    dst = _check_export_target(dst, overwrite)
    _, ckpt = _resolve_and_load(src)
    ckpt["optimizer"], ckpt["scaler"] = None, None
    return save_atomic(ckpt, dst)


def export_encoder_safetensors(src, dst, overwrite: bool = False) -> None:
    """The online encoder's weights as safetensors (simlab key names), preprocessing in the metadata.
    ``src`` is a checkpoint or a run folder."""
    from safetensors.torch import save
    dst = _check_export_target(dst, overwrite)
    _, ckpt = _resolve_and_load(src)
    state = {k[len("encoder."):]: v.contiguous() for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    meta = {"format": "simlab-encoder", "preprocess": json.dumps(ckpt["preprocess"]), "config": ckpt["config"]}
    _write_file_atomic(save(state, metadata=meta), dst)


def timm_state(encoder: torch.nn.Module) -> dict:
    """An encoder's weights under timm ``VisionTransformer`` names, for a model built with
    ``global_pool="avg"`` (timm then has no final ``norm`` and a fresh ``fc_norm``, as MAE's
    fine-tuning): simlab's block names are timm's; the sin-cos table becomes the ``pos_embed``
    parameter; ``fc_norm`` is written at its identity initialisation."""
    if not isinstance(encoder.norm, torch.nn.Identity):
        raise CheckpointError("this encoder ends with a norm (an MAE baseline); the timm export is for SiM encoders")
    state = {k: v.detach().clone().contiguous() for k, v in encoder.state_dict().items()}
    dim = encoder.embed_dim
    state["fc_norm.weight"], state["fc_norm.bias"] = torch.ones(dim), torch.zeros(dim)
    return state


def export_encoder_timm(src, dst, overwrite: bool = False) -> dict:
    """The online encoder as safetensors with timm ``VisionTransformer`` key names (what detectron2's
    ViTDet and mmsegmentation configs load for MAE-style backbones); returns the timm model kwargs,
    which are also in the file's metadata. ``src`` is a checkpoint or a run folder."""
    from safetensors.torch import save
    dst = _check_export_target(dst, overwrite)
    encoder = load_encoder(src)
    m = encoder.config.model
    kwargs = {"img_size": encoder.preprocess["input_size"], "patch_size": m.patch_size,
              "in_chans": encoder.preprocess["in_chans"], "embed_dim": m.embed_dim, "depth": m.depth,
              "num_heads": m.num_heads, "mlp_ratio": m.mlp_ratio, "qkv_bias": True, "global_pool": "avg",
              "num_classes": 0}
    meta = {"format": "timm-vision-transformer", "timm_kwargs": json.dumps(kwargs),
            "preprocess": json.dumps(encoder.preprocess), "source": "simlab"}
    _write_file_atomic(save(timm_state(encoder), metadata=meta), dst)
    return kwargs
