"""Masks over a view's patch grid: BEiT block-wise (SiM's) and random (MAE's).

``True`` = masked (DINOv2's convention). Every row has exactly ``num_masked``
masked patches, because the encoder gathers the visible tokens of a batch into
one (B, N_visible, D) tensor (SIM_SPEC.md section 1a, pitfall 7).

The block mask follows BEiT's ``MaskingGenerator`` as SiM uses it
(``util/masking_generator.py``, ``fixed_num_masking_patches=True``): rectangular
blocks of at least ``min_block`` patches with log-uniform aspect ratio in
[0.3, 1/0.3] and sides below the grid are added until no block fits, then the
mask is topped up with random single patches to the exact count.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from .seeding import STREAM_MASK, key_generator, sample_keys

MASK_RATIO = 0.602  # SiM: 118 of 196 patches
_MIN_ASPECT = 0.3
_BLOCK_ATTEMPTS = 10


def default_num_masked(grid: int) -> int:
    """SiM's masked count scaled to the grid: 10, 39 and 118 for grids 4, 8 and 14."""
    return round(MASK_RATIO * grid * grid)


def default_min_block(grid: int) -> int:
    """BEiT's 16-patch minimum block at 14x14, scaled by area: max(1, round(16 grid^2 / 196))."""
    return max(1, round(16 * grid * grid / 196))


class _Draws:
    """Uniforms from a torch generator, fetched in chunks (one call per 256, not per number)."""

    def __init__(self, generator: Optional[torch.Generator]):
        self.g, self.buf, self.pos = generator, [], 0

    def __call__(self) -> float:
        if self.pos == len(self.buf):
            self.buf, self.pos = torch.rand(256, generator=self.g, dtype=torch.float64).tolist(), 0
        self.pos += 1
        return self.buf[self.pos - 1]


def _check(grid: int, num_masked: int) -> None:
    if grid < 2:
        raise ValueError(f"mask: grid must be >= 2, got {grid}")
    if not 0 <= num_masked < grid * grid:
        raise ValueError(f"mask: num_masked must be in [0, {grid * grid - 1}] for a {grid}x{grid} grid "
                         f"(at least one patch stays visible), got {num_masked}")


def _one_block_mask(grid: int, num_masked: int, min_block: int, draw: _Draws
                    ) -> tuple[torch.Tensor, list[tuple[int, int, int, int]]]:
    """One mask (grid*grid,) and the blocks (top, left, h, w) placed before the top-up.

    Works on a numpy grid: per-patch torch ops would dominate at these sizes.
    """
    mask = np.zeros((grid, grid), dtype=bool)
    blocks = []
    count = 0
    log_lo, log_hi = math.log(_MIN_ASPECT), math.log(1 / _MIN_ASPECT)
    while count < num_masked:
        budget = num_masked - count
        added = 0
        for _ in range(_BLOCK_ATTEMPTS):
            area = min_block + (budget - min_block) * draw()
            aspect = math.exp(log_lo + (log_hi - log_lo) * draw())
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if 0 < h < grid and 0 < w < grid:
                top = min(int(draw() * (grid - h + 1)), grid - h)
                left = min(int(draw() * (grid - w + 1)), grid - w)
                block = mask[top:top + h, left:left + w]
                new = h * w - int(block.sum())
                if 0 < new <= budget:
                    block[...] = True
                    blocks.append((top, left, h, w))
                    added = new
                    break
        if added == 0:
            break
        count += added
    flat = mask.reshape(-1)
    if count < num_masked:  # top up with random single patches
        free = np.flatnonzero(~flat)
        order = np.argsort([draw() for _ in range(len(free))], kind="stable")
        flat[free[order[:num_masked - count]]] = True
    return torch.from_numpy(flat.copy()), blocks


def block_mask(batch_size: int, grid: int, num_masked: Optional[int] = None,
               generator: Optional[torch.Generator] = None, min_block: Optional[int] = None) -> torch.Tensor:
    """BEiT block-wise masks: (batch_size, grid*grid) bool, exactly ``num_masked`` True per row.

    Defaults: ``num_masked = round(0.602 grid^2)`` and ``min_block = max(1, round(16 grid^2 / 196))``.
    Raises ValueError for settings that cannot be met.
    """
    num_masked = default_num_masked(grid) if num_masked is None else num_masked
    min_block = default_min_block(grid) if min_block is None else min_block
    _check(grid, num_masked)
    if min_block < 1 or min_block > (grid - 1) ** 2:
        raise ValueError(f"mask: min_block must be in [1, {(grid - 1) ** 2}] (blocks have sides below "
                         f"the grid), got {min_block}")
    if num_masked == 0:
        return torch.zeros(batch_size, grid * grid, dtype=torch.bool)
    min_block = min(min_block, num_masked)
    draw = _Draws(generator)
    return torch.stack([_one_block_mask(grid, num_masked, min_block, draw)[0] for _ in range(batch_size)])


def random_mask(batch_size: int, grid: int, num_masked: int,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Uniformly random masks (MAE): (batch_size, grid*grid) bool, exactly ``num_masked`` per row."""
    _check(grid, num_masked)
    noise = torch.rand(batch_size, grid * grid, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < num_masked


def keyed_masks(seed: int, epoch: int, indices, grid: int, num_masked: Optional[int] = None,
                kind: str = "block") -> torch.Tensor:
    """Per-sample masks (B, grid*grid) from ``(seed, epoch, index)`` keys (DESIGN.md "Randomness").

    ``kind`` is "block" (SiM) or "random" (MAE). A sample's mask does not depend on its batch.
    """
    if kind not in ("block", "random"):
        raise ValueError(f"mask kind must be 'block' or 'random', got {kind!r}")
    num_masked = default_num_masked(grid) if num_masked is None else num_masked
    keys = sample_keys(seed, epoch, torch.as_tensor(indices).reshape(-1), STREAM_MASK)
    make = block_mask if kind == "block" else random_mask
    return torch.cat([make(1, grid, num_masked, generator=key_generator(k)) for k in keys])
