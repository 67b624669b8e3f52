"""Import the official SiM release (OpenGVLab/Siamese-Image-Modeling) as a simlab checkpoint.

The official pretraining checkpoint is ``{"model": state_dict, "optimizer", "epoch", "scaler",
"args": argparse.Namespace}`` (MAE's ``save_model``). It is loaded with ``weights_only=True``,
allowing exactly one class beyond tensors and primitives: ``argparse.Namespace``. Its keys
(SIM_SPEC.md section 1) map onto simlab's model one to one, except that the official
``PermuteBN`` nests its BatchNorm one level deeper (``.bn.``) and counts batches, and that
``mm_mask_token`` is never used by the official forward pass. The architecture is read from the
weights' shapes, the head counts (not visible in the weights) from ``args.model``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import torch

from .checkpoint import FORMAT, SCHEMA, CheckpointError, code_version, preprocess_of, save_atomic, sha256_of
from .config import IMAGENET_MEAN, IMAGENET_STD, Config

# official prefix (or whole key) -> simlab prefixes; a key may feed several simlab keys
KEY_MAP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cls_token", ("encoder.cls_token",)),
    ("pos_embed", ("encoder.pos_embed", "target_encoder.pos_embed")),  # the target adds the same table
    ("patch_embed.", ("encoder.patch_embed.",)),
    ("blocks.", ("encoder.blocks.",)),
    ("decoder_embed.", ("projector.embed.",)),
    ("projector_decoder_blocks.", ("projector.blocks.",)),
    ("mask_token", ("decoder.mask_token",)),
    ("decoder_pos_embed", ("decoder.pos_embed",)),
    ("decoder_pos_mlp.", ("decoder.pos_mlp.",)),
    ("predictor_decoder_blocks.", ("decoder.blocks.",)),
    ("decoder_pred.", ("decoder.pred.",)),
    ("mm_cls_token", ("target_encoder.cls_token",)),
    ("mm_patch_embed.", ("target_encoder.patch_embed.",)),
    ("mm_blocks.", ("target_encoder.blocks.",)),
    ("mm_decoder_embed.", ("target_projector.embed.",)),
    ("mm_projector_decoder_blocks.", ("target_projector.blocks.",)),
)
UNUSED = ("mm_mask_token",)  # built by the official model, never read by its forward pass

# (encoder heads, decoder heads) of the official model names (models_sim.py)
HEADS = {"base": (12, 16), "large": (16, 16), "huge": (16, 16)}


def load_official(path) -> dict:
    """The official file's dict, loaded with ``weights_only=True`` and ``argparse.Namespace`` allowed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle needing any other class, or not a torch file
        raise CheckpointError(f"{path}: not a loadable official checkpoint ({type(e).__name__}: "
                              f"{str(e)[:300]})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: not an official SiM checkpoint (a {type(raw).__name__})")
    if "model" not in raw and any(k.startswith("blocks.") for k in raw):
        raw = {"model": raw}  # a bare state dict
    if not isinstance(raw.get("model"), dict):
        raise CheckpointError(f"{path}: not an official SiM checkpoint (no 'model' state dict)")
    # a state dict saved from the DDP wrapper carries its prefix
    raw["model"] = {k[len("module."):] if k.startswith("module.") else k: v for k, v in raw["model"].items()}
    return raw


def _simlab_names(key: str) -> Optional[list[str]]:
    for official, targets in KEY_MAP:
        whole = not official.endswith(".")
        if (whole and key == official) or (not whole and key.startswith(official)):
            rest = key[len(official):]
            return [t + rest.replace(".bn.", ".") for t in targets]
    return None


def map_state(state: dict) -> dict:
    """Official state dict -> simlab SiM state dict (names only; shapes are checked on load)."""
    out, unknown = {}, []
    for key, value in state.items():
        if key in UNUSED or key.endswith("num_batches_tracked"):
            continue
        names = _simlab_names(key)
        if names is None:
            unknown.append(key)
            continue
        for name in names:
            out[name] = value
    if unknown:
        raise CheckpointError(f"official keys simlab does not know: {', '.join(unknown[:10])}"
                              + (" ..." if len(unknown) > 10 else ""))
    return out


def _count(state: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def official_config(state: dict, args: Optional[argparse.Namespace], num_heads: Optional[int] = None,
                    decoder_heads: Optional[int] = None) -> Config:
    """simlab's configuration of the official model: sizes from the weights, the rest from ``args``."""
    from .presets import preset
    get = (lambda name, default: getattr(args, name, default)) if args is not None else (lambda _, d: d)
    if get("init_values", None) is not None:
        raise CheckpointError("the official model was trained with LayerScale (init_values); simlab has none")
    if bool(get("use_proj_ln", False)) != bool(get("use_pred_ln", False)):
        raise CheckpointError("the official model mixes LayerNorm and BatchNorm blocks in its decoder; "
                              "simlab uses one kind for both")
    patch = state["patch_embed.proj.weight"]
    dim, p = patch.shape[0], patch.shape[-1]
    grid = round((state["pos_embed"].shape[1] - 1) ** 0.5)
    decoder_dim = state["decoder_embed.weight"].shape[0]
    size = next((s for s in HEADS if s in str(get("model", ""))), None)
    heads, dec_heads = HEADS[size] if size else (dim // 64, 16 if decoder_dim % 16 == 0 else decoder_dim // 64)
    cfg = preset("vit-b16-paper")
    m = cfg.model
    m.patch_size, m.embed_dim, m.depth = p, dim, _count(state, "blocks.")
    m.num_heads, m.decoder_heads = num_heads or heads, decoder_heads or dec_heads
    m.mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / dim
    m.decoder_dim = decoder_dim
    m.projector_depth = _count(state, "projector_decoder_blocks.")
    m.predictor_depth = _count(state, "predictor_decoder_blocks.")
    m.decoder_norm = "ln" if get("use_pred_ln", False) else "bn"
    m.drop_path = float(get("drop_path_rate", m.drop_path))
    m.neg_weight = float(get("neg_weight", m.neg_weight))
    m.train_patch_embed = bool(get("train_patch_embed", m.train_patch_embed))
    if get("with_blockwise_mask", True):
        m.mask_kind, m.num_masked = "block", int(get("blockwise_num_masking_patches", round(0.602 * grid * grid)))
    cfg.data.image_size = grid * p
    cfg.data.dataset = "imagefolder"
    return cfg.validate()


def import_official(src, dst, num_heads: Optional[int] = None, decoder_heads: Optional[int] = None,
                    log=print) -> Path:
    """Write the official checkpoint ``src`` as a simlab checkpoint ``dst`` (model weights, no
    optimizer state); returns ``dst``. Every simlab key must be filled with the right shape."""
    from .model import SiM
    src, dst = Path(src), Path(dst)
    raw = load_official(src)
    state = raw["model"]
    in_chans = state["patch_embed.proj.weight"].shape[1]
    args = raw.get("args")
    cfg = official_config(state, args if isinstance(args, argparse.Namespace) else None, num_heads, decoder_heads)
    mapped = map_state(state)
    model = SiM(cfg, in_chans=in_chans)
    expected = model.state_dict()
    own = {"running_correlation"}  # simlab's EMA-F ablation buffer: not in SiM
    missing = sorted(set(expected) - set(mapped) - own)
    if missing:
        raise CheckpointError(f"{src}: the official weights leave simlab keys unset: {', '.join(missing[:10])}")
    extra = sorted(set(mapped) - set(expected))
    if extra:
        raise CheckpointError(f"{src}: official weights with no place in simlab's model: {', '.join(extra[:10])}")
    for k, v in mapped.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(f"{src}: {k} has shape {tuple(v.shape)} but simlab's model expects "
                                  f"{tuple(expected[k].shape)}")
    model.load_state_dict({**expected, **mapped})
    preprocess = preprocess_of(cfg, in_chans, IMAGENET_MEAN, IMAGENET_STD)
    preprocess["interpolation"] = "bicubic"  # the official evaluation resizes with bicubic
    ckpt = {"format": FORMAT, "schema": SCHEMA, "model": model.state_dict(), "optimizer": None, "scaler": None,
            "step": 0, "epoch": float(raw.get("epoch", -1)) + 1 if isinstance(raw.get("epoch"), int) else 0.0,
            "rng": None, "config": cfg.to_json(), "code_version": code_version(), "preprocess": preprocess,
            "source": {"kind": "official-sim", "file": src.name, "sha256": sha256_of(src)}}
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(ckpt, dst)
    log(f"imported {src.name} ({cfg.model.embed_dim} x {cfg.model.depth}, {cfg.data.image_size} px, "
        f"epoch {ckpt['epoch']:g}) -> {dst}")
    return dst
