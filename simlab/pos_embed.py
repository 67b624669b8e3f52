"""2-D sin-cos position embeddings, on integer grids and at continuous points.

SiM's convention (``util/pos_embed.py``): the *row* fills the first half of the
channels and the column the second (MAE's helper has them the other way round:
SIM_SPEC.md pitfall 3). With ``omega_k = 10000^(-k / (D/4))``, k < D/4::

    embed(y, x) = [sin(y omega), cos(y omega), sin(x omega), cos(x omega)]    (D)

The relative embedding of a view-2 patch (SIM_SPEC.md section 2) appends the
relative zoom, constant across a view, as ``10 ln`` of the scale ratios::

    [embed(y, x), sin(10 ln sh omega), cos(10 ln sh omega), sin(10 ln sw omega), cos(10 ln sw omega)]   (2D)

which the decoder maps back to D with a learned Linear.
"""

from __future__ import annotations

import torch


def _omega(dim: int, device=None) -> torch.Tensor:
    if dim % 4 != 0:
        raise ValueError(f"sin-cos embedding width must be a multiple of 4, got {dim}")
    k = torch.arange(dim // 4, dtype=torch.float64, device=device)
    return 1.0 / 10000 ** (k / (dim / 4))


def _sincos(t: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    out = t[..., None] * omega  # (..., D/4)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=-1)


def sincos_2d(coords: torch.Tensor, dim: int) -> torch.Tensor:
    """Embed continuous (row, col) points: coords (..., 2) -> (..., dim) float32, row first."""
    omega = _omega(dim, coords.device)
    c = coords.double()
    return torch.cat([_sincos(c[..., 0], omega), _sincos(c[..., 1], omega)], dim=-1).float()


def grid_coords(grid: int, device=None) -> torch.Tensor:
    """(grid*grid, 2) integer (row, col) positions of a patch grid in row-major order."""
    r = torch.arange(grid, dtype=torch.float32, device=device)
    rows, cols = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], dim=-1)


def grid_sincos(grid: int, dim: int, cls_token: bool = False) -> torch.Tensor:
    """Fixed embedding of a grid: (grid*grid, dim), with a leading zero row for the cls token if asked."""
    emb = sincos_2d(grid_coords(grid), dim)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim), emb], dim=0)
    return emb


def relative_embedding(coords: torch.Tensor, log_scales: torch.Tensor, dim: int) -> torch.Tensor:
    """SiM's embedding of view-2 patches seen from view 1.

    coords: (B, N, 2) from ``views.relative_coords``; log_scales: (B, 2) from
    ``views.relative_scales``. Returns (B, N, 2*dim) float32.
    """
    B, N, _ = coords.shape
    omega = _omega(dim, coords.device)
    scale = _sincos(10.0 * log_scales.double(), omega[None])  # (B, 2, D/2): one row per axis
    scale = scale.reshape(B, 1, dim).expand(B, N, dim)
    return torch.cat([sincos_2d(coords, dim), scale.float()], dim=-1)
