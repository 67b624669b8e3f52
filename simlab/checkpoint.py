"""Checkpoints: schema, atomic writes with a sha256, verified safe loads, and ``load_encoder``.

A checkpoint holds only tensors and primitives, so ``torch.load(...,
weights_only=True)`` loads it and no file can run code (DESIGN.md
"Checkpoints"). It is written to a temporary file in the same folder,
fsynced, renamed into place with ``os.replace`` (a reader sees the old file or
the new one, never a partial one), and then its sha256 is written beside it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import __version__
from .config import Config

FORMAT = "simlab-checkpoint"
SCHEMA = 1
_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, unsafe, or of another schema."""


def code_version() -> str:
    """simlab's version, plus the git commit when running from a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def rng_state() -> dict:
    """Every RNG's state as tensors and primitives."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def preprocess_of(cfg: Config, in_chans: int, mean, std) -> dict:
    """How images must be prepared for the encoder."""
    return {"input_size": cfg.data.image_size, "in_chans": in_chans, "mean": list(mean), "std": list(std),
            "interpolation": "bilinear"}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Test hook: fail a checkpoint write after this many bytes, as a full disk would (None: never).
_FAIL_AFTER_BYTES: Optional[int] = None


class _LimitedFile:
    """A binary file whose writes fail with ENOSPC once ``_FAIL_AFTER_BYTES`` have been written."""

    def __init__(self, f, limit: int):
        self.f, self.left = f, limit

    def write(self, data) -> int:
        n = len(memoryview(data).cast("B"))
        if n > self.left:
            self.f.write(bytes(memoryview(data).cast("B")[:self.left]))
            self.left = 0
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        self.left -= n
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def _open_tmp(path: Path):
    f = open(path, "wb")
    return (f, _LimitedFile(f, _FAIL_AFTER_BYTES)) if _FAIL_AFTER_BYTES is not None else (f, f)


def save_atomic(obj: dict, path: Path) -> str:
    """Write ``obj`` to ``path`` atomically, then ``path.sha256``; returns the digest.

    The bytes go to a hidden temporary file that is fsynced and then renamed over ``path``, so a file
    under a final name is always complete; a failed write (full disk, read-only folder) removes the
    temporary file, leaves every earlier checkpoint as it was, and raises CheckpointError."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        f, out = _open_tmp(tmp)
        with f:
            torch.save(obj, out)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch's zip writer turns a failed write into a RuntimeError
        cause = e.__context__ if isinstance(e, RuntimeError) and isinstance(e.__context__, OSError) else e
        raise CheckpointError(f"{path}: could not write the checkpoint ({cause}); earlier checkpoints are "
                              f"untouched") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    digest = sha256_of(path)
    side = path.with_name(path.name + ".sha256")
    side_tmp = side.with_name(f".{side.name}.tmp-{os.getpid()}")
    try:
        side_tmp.write_text(f"{digest}  {path.name}\n")
        os.replace(side_tmp, side)
    except OSError as e:  # the checkpoint is whole; without its digest it is still loadable
        side_tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{side}: could not write the digest ({e})") from e
    _fsync_dir(path.parent)
    return digest


def load_checkpoint(path, map_location="cpu", verify: bool = True) -> dict:
    """Load a simlab checkpoint safely (``weights_only=True``), checking its sha256 when recorded."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    side = path.with_name(path.name + ".sha256")
    if verify and side.exists():
        expected = side.read_text().split()[0] if side.read_text().strip() else ""
        if sha256_of(path) != expected:
            raise CheckpointError(f"{path}: sha256 does not match {side.name}; the file is corrupt or was changed")
    try:
        with warnings.catch_warnings():  # an older pickle protocol is not this file's problem
            warnings.filterwarnings("ignore", message=".*pickle protocol.*", category=UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zips, pickles of arbitrary objects, non-checkpoints
        raise CheckpointError(f"{path}: not a loadable checkpoint: {why_unloadable(path, e)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a simlab checkpoint")
    if ckpt.get("schema") != SCHEMA:
        raise CheckpointError(f"{path}: checkpoint schema {ckpt.get('schema')} but this simlab reads {SCHEMA}")
    return ckpt


def why_unloadable(path: Path, error: Exception) -> str:
    """What is wrong with a file ``torch.load`` refused, said plainly from its bytes (torch's own
    messages name a miniz internal, or a pickle opcode as a KeyError)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip format
        try:
            with zipfile.ZipFile(path) as z:
                z.namelist()
        except (zipfile.BadZipFile, OSError):
            return "truncated or corrupt: the zip archive is incomplete (its end record is missing)"
    elif head[:1] == b"\x80":  # a plain pickle (torch's legacy format)
        if isinstance(error, EOFError):
            return "truncated or corrupt: the pickle ends early"
    else:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and sum(c.isprintable() or c.isspace() for c in text) >= 0.95 * len(text):
            return "not a PyTorch checkpoint file (it looks like text)"
        return "not a PyTorch checkpoint file (neither a zip archive nor a pickle)"
    message = str(error)
    if "Weights only load failed" in message:  # the safe loader met something that is not data
        detail = next((line.strip() for line in message.splitlines()
                       if "nsupported" in line and "documentation" not in line), "")
        return (f"it holds Python objects the safe loader refuses{f' ({detail})' if detail else ''}; a simlab "
                f"checkpoint holds only tensors and primitives")
    if isinstance(error, EOFError):
        return "truncated or corrupt: the data ends early"
    first = message.splitlines()[0] if message else ""
    return f"truncated or corrupt ({type(error).__name__}{': ' + first[:160] if first else ''})"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt_{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, newest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)


def save_step(run_dir: Path, step: int, ckpt: dict, keep: int) -> Path:
    """Write a run's checkpoint of ``step`` atomically, then keep only the newest ``keep``."""
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(exist_ok=True)
    save_atomic(ckpt, path)
    prune_checkpoints(run_dir, keep)
    return path


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    for old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)


def newest_valid(run_dir: Path, log=print) -> Optional[tuple[Path, dict]]:
    """The newest checkpoint that loads and verifies; says so when it skips a bad one."""
    for path in list_checkpoints(run_dir):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            log(f"skipping checkpoint: {e}")
    return None


def check_run_folder(run_dir) -> Path:
    """``run_dir`` as a Path, refused with a clear error when something other than a folder has its name."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: exists and is not a folder; --out takes a run folder")
    return run_dir


class CleanFailedStart:
    """A run that fails before it records anything leaves nothing behind.

    Used as ``with CleanFailedStart(run_dir):`` around a whole run. On an
    exception (a missing dataset, a bad image under ``on_bad_image=fail``,
    Ctrl-C during set-up), if the folder holds no checkpoint, no ``COMPLETE``
    and no metrics line, it removes what this command added: the entries that
    were not there before, and the folder itself if this command created it.
    A folder that held anything before keeps it. ``active=False`` (ranks other
    than 0, which write nothing) makes it a no-op.
    """

    def __init__(self, run_dir, active: bool = True):
        self.run_dir, self.active = Path(run_dir), active
        self.existed = self.run_dir.is_dir()
        self.before = set(self.run_dir.iterdir()) if self.existed else set()

    def __enter__(self) -> "CleanFailedStart":
        return self

    def recorded(self) -> bool:
        """Whether the run folder holds anything a run made: a checkpoint, COMPLETE or a metrics line."""
        metrics = self.run_dir / "metrics.jsonl"
        return bool(list_checkpoints(self.run_dir) or (self.run_dir / "COMPLETE").exists()
                    or (metrics.exists() and metrics.read_text().strip()))

    def __exit__(self, etype, exc, tb) -> bool:
        if etype is None or not self.active or not self.run_dir.is_dir() or self.recorded():
            return False
        for entry in set(self.run_dir.iterdir()) - self.before:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        if not self.existed:
            try:
                self.run_dir.rmdir()
            except OSError:  # something else wrote there meanwhile: keep it
                pass
        return False


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
