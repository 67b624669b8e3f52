"""What a checkpoint records beside the weights so that a run resumes exactly and its encoder is
used as trained: the code version, every RNG's state as tensors and primitives (numpy's as a
tensor, python's as a list: ``weights_only`` loads them), and the encoder's preprocessing.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .config import Config

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
