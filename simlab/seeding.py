"""Keyed randomness: every sample's random draws are a pure function of its key.

DESIGN.md "Randomness and determinism": a sample's augmentation, mask and (for
the procedural dataset) content come from a generator seeded by
``(seed, epoch, sample index)``. Here that generator is counter-based
(splitmix64, as in Java's SplittableRandom and numpy's seeding), so the draws of
a whole batch are computed at once, and they are identical whether a sample is
processed alone, in any batch, in any data worker or on any rank.

``stream`` separates independent uses of the same sample key (view 1, view 2,
mask, ...) so that changing one never shifts the draws of another.
"""

from __future__ import annotations

import numpy as np
import torch

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

# Named streams, one per independent use of a sample key.
STREAM_CONTENT = 0  # procedural images
STREAM_VIEW1 = 1
STREAM_VIEW2 = 2
STREAM_MASK = 3


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective avalanche on uint64."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _as_u64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64).astype(np.uint64)


def sample_keys(seed: int, epoch: int, index, stream: int) -> np.ndarray:
    """Keys (uint64, shape of ``index``) for ``(seed, epoch, index, stream)``."""
    with np.errstate(over="ignore"):
        k = _mix(_as_u64(seed) + _GAMMA)
        k = _mix(k ^ (_as_u64(epoch) + _GAMMA))
        k = _mix(k ^ (_as_u64(stream) + _GAMMA))
        k = _mix(k ^ (_as_u64(index) * _GAMMA + _GAMMA))
    return k


def keyed_uniform(keys: np.ndarray, n: int) -> torch.Tensor:
    """``n`` uniforms in [0, 1) per key: float64 tensor of shape ``keys.shape + (n,)``."""
    counters = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = _mix(keys[..., None] + counters * _GAMMA)
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) * 2.0**-53)


def keyed_normal(keys: np.ndarray, n: int) -> torch.Tensor:
    """``n`` standard normals per key (Box-Muller), float64, shape ``keys.shape + (n,)``."""
    u = keyed_uniform(keys, 2 * ((n + 1) // 2))
    u1, u2 = u[..., 0::2], u[..., 1::2]
    r = torch.sqrt(-2.0 * torch.log1p(-u1))  # log1p(-u): u < 1 so never log(0)
    z = torch.cat([r * torch.cos(2 * torch.pi * u2), r * torch.sin(2 * torch.pi * u2)], dim=-1)
    return z[..., :n]


def key_generator(key: np.uint64 | int) -> torch.Generator:
    """A torch CPU generator seeded from one key, for sequential algorithms (block masks)."""
    return torch.Generator().manual_seed(int(np.uint64(key) >> np.uint64(1)))
