"""Checkpoint files on disk: the schema, atomic writes with a sha256, verified safe loads, and a
run's numbered series of them (newest valid first, the oldest pruned).

A checkpoint holds only tensors and primitives, so ``torch.load(...,
weights_only=True)`` loads it and no file can run code (DESIGN.md
"Checkpoints"). It is written to a temporary file in the same folder,
fsynced, renamed into place with ``os.replace`` (a reader sees the old file or
the new one, never a partial one), and then its sha256 is written beside it.
The fault-injection hooks (``_FAIL_AFTER_BYTES``, ``_open_tmp``) live here, beside
the writer they break (tests/test_reliability.py).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import torch

FORMAT = "simlab-checkpoint"
SCHEMA = 1
_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, unsafe, or of another schema."""


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
